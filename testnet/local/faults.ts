// The network faults of a testnet, by node index, as testnet.json keeps them, and
// what they mean for each node: the rules (by peer id) it is given. Pure: no
// processes, files or clock, so it is tested on its own.
//
//   partition  groups that cannot reach each other; the nodes no group names form
//              one more group (so `partition 2` cuts node 2 off from the rest)
//   cuts       one-way: from's messages no longer reach to (set on `to`)
//   shaping    per node: delay ± jitter and loss on what the node receives

import { z } from 'zod'
import { type FaultRules, FAULT_LIMITS } from '../../node/faults.ts'
import { TestnetError } from './errors.ts'

const index = z.number().int().nonnegative()
export const testnetFaultsSchema = z.object({
  partition: z.array(z.array(index).min(1)),
  cuts: z.array(z.object({ from: index, to: index })),
  shaping: z.array(z.object({ index, delayMs: z.number().int().nonnegative(), jitterMs: z.number().int().nonnegative(), lossRate: z.number().min(0).lt(1) })),
})
export type TestnetFaults = z.infer<typeof testnetFaultsSchema>
export type Shaping = TestnetFaults['shaping'][number]

export const NO_NETWORK_FAULTS: Readonly<TestnetFaults> = Object.freeze({ partition: [], cuts: [], shaping: [] })

/** One node's faults by index, as `faults()` and `murmur testnet faults` show them. */
export interface NodeFaults {
  index: number
  peerId: string | null
  /** Nodes it cannot reach nor be reached by (the other groups of the partition). */
  blocked: number[]
  /** Nodes whose messages no longer reach it. */
  cutFrom: number[]
  delayMs: number
  jitterMs: number
  lossRate: number
}

export function hasFaults (faults: TestnetFaults): boolean {
  return faults.partition.length > 0 || faults.cuts.length > 0 || faults.shaping.length > 0
}

/** A new partition (it replaces the one before; cuts, delay and loss stay). */
export function withPartition (faults: TestnetFaults, groups: number[][], nodeCount: number): TestnetFaults {
  if (groups.length === 0 || groups.some((g) => g.length === 0)) throw new TestnetError('a partition needs at least one group of nodes, e.g. 0,1 2,3,4', 2)
  const seen = new Set<number>()
  for (const i of groups.flat()) {
    checkIndex(i, nodeCount)
    if (seen.has(i)) throw new TestnetError(`node ${i} is named in two groups; each node belongs to one side of a partition`, 2)
    seen.add(i)
  }
  const sides = groups.length + (seen.size < nodeCount ? 1 : 0)
  if (sides < 2) throw new TestnetError(`the groups name all ${nodeCount} nodes as one side: that is no partition; give two or more groups`, 2)
  return { ...faults, partition: groups.map((g) => [...g].sort((a, b) => a - b)) }
}

/** One more one-way cut: from's messages no longer reach to. */
export function withCut (faults: TestnetFaults, from: number, to: number, nodeCount: number): TestnetFaults {
  checkIndex(from, nodeCount)
  checkIndex(to, nodeCount)
  if (from === to) throw new TestnetError('--from and --to name the same node; a cut is between two nodes', 2)
  if (faults.cuts.some((c) => c.from === from && c.to === to)) return faults
  return { ...faults, cuts: [...faults.cuts, { from, to }] }
}

/** Node `i` receives everything delayMs ± jitterMs late; 0 removes the delay. */
export function withDelay (faults: TestnetFaults, i: number, delayMs: number, jitterMs: number, nodeCount: number): TestnetFaults {
  checkIndex(i, nodeCount)
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > FAULT_LIMITS.delayMsMax) throw new TestnetError(`the delay must be from 0 to ${FAULT_LIMITS.delayMsMax / 1000}s, got ${delayMs} ms`, 2)
  if (!Number.isInteger(jitterMs) || jitterMs < 0 || jitterMs > delayMs) throw new TestnetError(`the jitter must be from 0 to the delay (${delayMs} ms): the delay is delay ± jitter; got ${jitterMs} ms`, 2)
  return { ...faults, shaping: shaped(faults, i, { delayMs, jitterMs }) }
}

/** Node `i` loses this share of what it receives, in [0, 1); 0 removes the loss. */
export function withLoss (faults: TestnetFaults, i: number, rate: number, nodeCount: number): TestnetFaults {
  checkIndex(i, nodeCount)
  if (!Number.isFinite(rate) || rate < 0 || rate >= 1) {
    throw new TestnetError(`the loss must be from 0% to below 100%, got ${rate * 100}%; a node that hears nothing is partitioned: 'murmur testnet partition ${i}'`, 2)
  }
  return { ...faults, shaping: shaped(faults, i, { lossRate: rate }) }
}

function shaped (faults: TestnetFaults, i: number, change: Partial<Shaping>): Shaping[] {
  const before = faults.shaping.find((s) => s.index === i) ?? { index: i, delayMs: 0, jitterMs: 0, lossRate: 0 }
  const after = { ...before, ...change }
  const rest = faults.shaping.filter((s) => s.index !== i)
  const none = after.delayMs === 0 && after.jitterMs === 0 && after.lossRate === 0
  return none ? rest : [...rest, after].sort((a, b) => a.index - b.index)
}

/** The side of the partition node `i` is on: its group's position, or -1 for the nodes no group names. */
export function sideOf (faults: TestnetFaults, i: number): number {
  return faults.partition.findIndex((g) => g.includes(i))
}

/** The nodes `i` may not exchange anything with. */
export function blockedOf (faults: TestnetFaults, i: number, nodeCount: number): number[] {
  if (faults.partition.length === 0) return []
  const side = sideOf(faults, i)
  return range(nodeCount).filter((j) => j !== i && sideOf(faults, j) !== side)
}

/** True when what `from` sends reaches `to`. */
export function reaches (faults: TestnetFaults, from: number, to: number, nodeCount: number): boolean {
  return !blockedOf(faults, to, nodeCount).includes(from) && !faults.cuts.some((c) => c.from === from && c.to === to)
}

export function describeNode (faults: TestnetFaults, i: number, peerId: string | null, nodeCount: number): NodeFaults {
  const shaping = faults.shaping.find((s) => s.index === i)
  return {
    index: i,
    peerId,
    blocked: blockedOf(faults, i, nodeCount),
    cutFrom: faults.cuts.filter((c) => c.to === i).map((c) => c.from).sort((a, b) => a - b),
    delayMs: shaping?.delayMs ?? 0,
    jitterMs: shaping?.jitterMs ?? 0,
    lossRate: shaping?.lossRate ?? 0,
  }
}

/**
 * The rules node `i` gets, by peer id. A node whose peer id is not known yet (it
 * never started) cannot be named: it gets its rules when it starts, and the others
 * theirs once its id is known.
 */
export function rulesFor (faults: TestnetFaults, i: number, peerIds: ReadonlyArray<string | null>): FaultRules {
  const node = describeNode(faults, i, peerIds[i] ?? null, peerIds.length)
  const ids = (indexes: number[]): string[] => indexes.map((j) => peerIds[j]).filter((id): id is string => id !== null && id !== undefined)
  return { blocked: ids(node.blocked), cutFrom: ids(node.cutFrom), delayMs: node.delayMs, jitterMs: node.jitterMs, lossRate: node.lossRate }
}

/** "{0,1} | {2,3,4}", the rest included, for messages. */
export function describePartition (faults: TestnetFaults, nodeCount: number): string {
  if (faults.partition.length === 0) return 'no partition'
  const named = new Set(faults.partition.flat())
  const rest = range(nodeCount).filter((i) => !named.has(i))
  return [...faults.partition, ...(rest.length > 0 ? [rest] : [])].map((g) => `{${g.join(',')}}`).join(' | ')
}

function checkIndex (i: number, nodeCount: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= nodeCount) throw new TestnetError(`no node ${i} in the testnet: it has nodes 0–${nodeCount - 1}`, 2)
}

function range (n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}
