// Quotas that hold on every side of a partition: escrow (a bounded counter).
//
// A namespace's quota is split into rights, and each node may spend only the
// rights it holds, on its own books, without asking anyone. Rights are created
// only by a quota change (minted by the node that stores it) and afterwards only
// move: a node gives some of its own to another by raising a cumulative counter
// in its own row of the ledger. Since every node starts work only within its own
// rights, the work running anywhere never adds up to more than the rights that
// exist, i.e. the quota, whatever the network does (README.md, "Quotas: escrow").
//
// Pure and deterministic, like the rest of placement/: rows, usage and wants in,
// gifts out. node/ writes the rows and carries the gifts out.

import { z } from 'zod'
import { bytesText, cpuText } from './reasons.ts'
import { PlacementError } from './types.ts'

/** What a quota bounds: CPU, memory and the number of instances running. */
export const DIMS = ['cpuMillis', 'memoryBytes', 'instances'] as const
export type Dim = typeof DIMS[number]

/** An amount of rights (or of use, or of demand) in every dimension. */
export type Amount = Readonly<Record<Dim, number>>
/** A namespace's quota; null: that dimension is unlimited (and its rights are not checked). */
export type Limit = Readonly<Record<Dim, number | null>>

/**
 * One node's row of a namespace's ledger, written by that node alone.
 * `minted`: the sum of the quota changes it stored (negative once it lowered one by more
 * than it raised). `given[n]`: all it ever gave node `n`, cumulative, so it only grows:
 * a row of another node that reaches a viewer late (or not at all) can then only
 * understate what the viewer received, never overstate it.
 */
export interface ShareRow {
  readonly node: string
  readonly minted: Amount
  readonly given: Readonly<Record<string, Amount>>
}

/** One move of rights from this node to `to`. */
export interface Gift { readonly to: string, readonly amount: Amount }

/** A move in the plan of a whole view: what every node would give if it saw what this node sees. */
export interface Transfer extends Gift {
  readonly from: string
  /** `debt`: repays a node that holds more work than rights (a quota lowered under it); `share`: for an open instance. */
  readonly why: 'debt' | 'share'
}

/** An open instance of the namespace that, in this view, `node` is to claim next. */
export interface Want {
  readonly node: string
  readonly demand: Amount
  /** It has been open so long that the node that should have given rights for it seems not to: anyone may now. */
  readonly stuck: boolean
}

export const ZERO: Amount = Object.freeze({ cpuMillis: 0, memoryBytes: 0, instances: 0 })

export const ESCROW_DEFAULTS = Object.freeze({
  /**
   * How long an instance waits for rights before every node with spare gives, not only
   * the one the plan names. The named giver gives on its next pass after it sees the
   * need (a pass every 250 ms, the state spreading in a second or two), so 10 s means
   * that one has a different view or is stuck; giving from several nodes at once only
   * over-gives, which a later move corrects.
   */
  stuckMs: 10_000,
})

export const ESCROW_LIMITS = Object.freeze({
  /** Nodes one row may name in `given`: every node it ever gave to; a cluster has far fewer. */
  givenNodesMax: 4096,
  /**
   * A quota, and a single amount of rights: whole numbers up to 2⁵⁰ like the resources of
   * placement. Cumulative counters and their sums must stay below 2⁵³ (exact in a double);
   * `rightsOf` refuses a ledger whose sums do not.
   */
  amountMax: 2 ** 50,
})

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const signed = z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER)
const node = z.string().min(1).max(128)
const bound = z.number().int().min(0).max(ESCROW_LIMITS.amountMax).nullable()

/** A quota as an admin sets it, for the boundary (API, state). */
export const limitSchema = z.object({ cpuMillis: bound, memoryBytes: bound, instances: bound }).strict()
export const amountSchema = z.object({ cpuMillis: count, memoryBytes: count, instances: count }).strict()
/** A ledger row as a peer wrote it: `given` counters never negative, `minted` of either sign. */
export const shareRowSchema = z.object({
  node,
  minted: z.object({ cpuMillis: signed, memoryBytes: signed, instances: signed }).strict(),
  given: z.record(node, amountSchema).refine((g) => Object.keys(g).length <= ESCROW_LIMITS.givenNodesMax, `at most ${ESCROW_LIMITS.givenNodesMax} nodes`),
}).strict()

export function amount (cpuMillis: number, memoryBytes: number, instances: number): Amount {
  return { cpuMillis, memoryBytes, instances }
}

/** What one instance of a job takes from its namespace's quota while it runs. */
export function demandOf (cpuMillis: number, memoryBytes: number): Amount {
  return { cpuMillis, memoryBytes, instances: 1 }
}

export function add (a: Amount, b: Amount): Amount {
  return { cpuMillis: a.cpuMillis + b.cpuMillis, memoryBytes: a.memoryBytes + b.memoryBytes, instances: a.instances + b.instances }
}

export function sub (a: Amount, b: Amount): Amount {
  return { cpuMillis: a.cpuMillis - b.cpuMillis, memoryBytes: a.memoryBytes - b.memoryBytes, instances: a.instances - b.instances }
}

export function isZero (a: Amount): boolean {
  return a.cpuMillis === 0 && a.memoryBytes === 0 && a.instances === 0
}

/** The dimensions a quota bounds. */
export function limitedDims (limit: Limit): Dim[] {
  return DIMS.filter((d) => limit[d] !== null)
}

/**
 * The rights the node that stores a quota change creates: the new quota minus all the
 * rights minted so far in the rows it sees, per dimension, an unlimited dimension
 * counting as 0. After changes made one after the other, the rights that exist are
 * the last quota (0 → 10 → 4 → null → 6 mints 10, −6, −4, 6). Counting the mints
 * rather than the quota record seen before also mends concurrent changes: two sides of
 * a partition that both change the quota both mint (10 → 20 and 10 → 15 make 25), and
 * the next change stored by a node that sees both rows brings the total back to the
 * quota. A change from unlimited mints the whole quota, whatever already runs: the
 * nodes running that work are then in debt (`transfers`).
 */
export function mint (rows: readonly ShareRow[], after: Limit | null): Amount {
  const so = mintedOf(rows)
  return { cpuMillis: (after?.cpuMillis ?? 0) - so.cpuMillis, memoryBytes: (after?.memoryBytes ?? 0) - so.memoryBytes, instances: (after?.instances ?? 0) - so.instances }
}

/** All rights minted in the rows: the quota, once every change has reached every row. */
export function mintedOf (rows: readonly ShareRow[]): Amount {
  return rows.reduce((sum, r) => add(sum, r.minted), ZERO)
}

/** `self`'s row after it minted `amount` (its row as it last wrote it, or none yet). */
export function withMint (self: string, row: ShareRow | undefined, minted: Amount): ShareRow {
  if (row !== undefined && row.node !== self) throw new PlacementError(`a node writes only its own row: ${self} was given the row of ${row.node}`)
  return { node: self, minted: add(row?.minted ?? ZERO, minted), given: row?.given ?? {} }
}

/** `self`'s row after it gave `gift.amount` to `gift.to`: the cumulative counter grows by it. */
export function withGift (self: string, row: ShareRow | undefined, gift: Gift): ShareRow {
  if (row !== undefined && row.node !== self) throw new PlacementError(`a node writes only its own row: ${self} was given the row of ${row.node}`)
  if (gift.to === self) throw new PlacementError(`${self} cannot give rights to itself`)
  for (const d of DIMS) {
    if (!Number.isSafeInteger(gift.amount[d]) || gift.amount[d] < 0) throw new PlacementError(`a gift is a whole number ≥ 0 in every dimension, got ${d} ${gift.amount[d]}`)
  }
  const given = new Map(Object.entries(row?.given ?? {}))
  given.set(gift.to, add(given.get(gift.to) ?? ZERO, gift.amount))
  // fromEntries defines every key as its own property: a node id such as __proto__ stays a key.
  return { node: self, minted: row?.minted ?? ZERO, given: Object.fromEntries(given) }
}

/**
 * The rights of every node named in the rows: what it minted, plus what every row
 * says it was given, minus what its own row says it gave. Summed over all nodes, the
 * gifts cancel: the rights that exist are what was minted. For the viewer's own
 * rights this is safe on any view: its own row is current (it wrote it), and a stale
 * row of another node shows a smaller, older `given` (the counters only grow), so it
 * can only understate what the viewer holds. Other nodes' rights may be off either way:
 * they only guide gifts.
 */
export function rightsOf (rows: readonly ShareRow[]): Map<string, Amount> {
  const out = new Map<string, Amount>()
  const credit = (n: string, a: Amount, sign: 1 | -1): void => {
    const was = out.get(n) ?? ZERO
    const next = sign === 1 ? add(was, a) : sub(was, a)
    for (const d of DIMS) if (!Number.isSafeInteger(next[d])) throw new PlacementError(`the rights of ${n} in ${d} are past 2^53: the ledger cannot be summed exactly`)
    out.set(n, next)
  }
  const seen = new Set<string>()
  for (const row of rows) {
    if (seen.has(row.node)) throw new PlacementError(`two ledger rows of ${row.node}: the caller must pass each node's latest row once`)
    seen.add(row.node)
    credit(row.node, row.minted, 1)
    for (const [to, a] of Object.entries(row.given)) {
      credit(to, a, 1)
      credit(row.node, a, -1)
    }
  }
  return out
}

/** Whether `demand` fits in `rights` beside `usage`, in every dimension the quota bounds. */
export function fits (limit: Limit, rights: Amount, usage: Amount, demand: Amount): boolean {
  return limitedDims(limit).every((d) => usage[d] + demand[d] <= rights[d])
}

/**
 * What the nodes other than `self` owe the quota, per dimension: each node's use
 * beyond its rights (a quota lowered under its work, or below zero by the lowering
 * itself), whether it can be reached or not. A node spends and gives only beyond
 * it: the rights it holds over its own use are the quota plus these debts, and until
 * they are repaid the quota is what is left. Without this, a debt nobody repays (its
 * node is cut off) would let the others spend the quota and the debt: a raise after a
 * lowering mints the new quota less the minted total, the debt included.
 */
export function debtsBeyond (self: string, rights: ReadonlyMap<string, Amount>, usage: ReadonlyMap<string, Amount>): Amount {
  const out: Record<Dim, number> = { ...ZERO }
  for (const n of new Set([...rights.keys(), ...usage.keys()])) {
    if (n === self) continue
    const r = rights.get(n) ?? ZERO
    const u = usage.get(n) ?? ZERO
    for (const d of DIMS) out[d] += Math.max(0, u[d] - r[d])
  }
  return out
}

/**
 * What a node may hand over when it leaves: all its rights beyond what it still runs (a
 * node leaving gracefully calls it once its tasks have stopped: then all its rights).
 * Every dimension, limited or not: a dimension that is unlimited now may be limited
 * again, and then its rights should be with a live node. What it cannot hand over is
 * its debt: a node whose rights are negative (it lowered a quota) leaves the quota
 * that much larger unless another node repays it first (README.md, "Quotas: escrow").
 */
export function handOver (self: string, rows: readonly ShareRow[], usage: Amount, to: string): Gift {
  if (to === self) throw new PlacementError(`${self} cannot hand its rights over to itself`)
  const rights = rightsOf(rows).get(self) ?? ZERO
  const left = sub(rights, usage)
  return { to, amount: { cpuMillis: Math.max(0, left.cpuMillis), memoryBytes: Math.max(0, left.memoryBytes), instances: Math.max(0, left.instances) } }
}

/** What the plan is made from: one namespace's ledger and work, as one node sees them. */
export interface TransferInput {
  readonly limit: Limit
  /** `rightsOf` the rows this node sees. */
  readonly rights: ReadonlyMap<string, Amount>
  /** What each node runs of the namespace in this view (its live claims; for the viewer, its local tasks too). */
  readonly usage: ReadonlyMap<string, Amount>
  /** The open instances and who is to claim each next, in this view. */
  readonly wants: readonly Want[]
  /** The nodes that can give and receive: reachable in this view (alive, not suspect). Rights sent across a partition are out of use until it heals. */
  readonly reachable: readonly string[]
  /** The viewer: it goes first for a stuck want. */
  readonly self: string
}

/**
 * Who gives what to whom, as this view sees it; each node carries out the moves it
 * makes (`from` is itself). Every node computes the same plan from the same view, so
 * with views that agree exactly one node gives for each need; views that differ may
 * give twice (a node that then has more than it needs gives it on later) or not yet.
 *
 * First debts, per dimension the quota bounds: a node running more than its rights (a
 * quota was lowered or set under its work) is repaid from the others' spare, rights −
 * usage: so a lowered quota stops new starts anywhere until the work fits it again.
 *
 * Then wants, whole instances at a time (`served`): an instance is served only if it can
 * be met in every limited dimension at once, by its node's own rights or by the spare of
 * the others, and only served wants hold rights back or receive any. First every want
 * that fits in its node's own rights beyond its usage (and the debts of the others): a
 * node never gives away what it is about to claim; then the others, in node id order,
 * each served if the spare left can still meet every served want. A served want's node
 * gets what it lacks from the spare beyond each giver's served wants (and debts held),
 * the most spare first (ties to the lower id); a want that is stuck puts the viewer
 * first. Holding rights back per dimension for a want that cannot be met (n1 kept its
 * spare memory for an instance it lacked the instance right for, n3 kept its spare
 * instance right for one it lacked the memory for) left both waiting for good.
 * Only spare is ever given, so rights move and are never created or lost.
 */
export function transfers (input: TransferInput): Transfer[] {
  const reachable = [...new Set(input.reachable)].sort()
  const dims = limitedDims(input.limit)
  const out: Transfer[] = []
  const moved = new Map<string, Record<Dim, number>>()
  const move = (from: string, to: string, d: Dim, n: number, why: Transfer['why']): void => {
    const key = `${from}\u0000${to}\u0000${why}`
    const m = moved.get(key) ?? { ...ZERO }
    m[d] += n
    moved.set(key, m)
  }
  const rights = new Map<string, Record<Dim, number>>(reachable.map((n) => [n, { ...(input.rights.get(n) ?? ZERO) }]))
  const usage = (n: string, d: Dim): number => input.usage.get(n)?.[d] ?? 0
  /** Moves up to `need` of `d` to `to` from the givers with spare, the most first. */
  const fill = (d: Dim, spare: Map<string, number>, to: string, need: number, stuck: boolean, why: Transfer['why']): void => {
    const first = (g: string): number => (stuck && g === input.self ? 0 : 1)
    const givers = reachable.filter((g) => g !== to && spare.get(g)! > 0)
      .sort((a, b) => first(a) - first(b) || spare.get(b)! - spare.get(a)! || (a < b ? -1 : 1))
    for (const g of givers) {
      if (need <= 0) break
      const n = Math.min(need, spare.get(g)!)
      spare.set(g, spare.get(g)! - n)
      rights.get(g)![d] -= n
      rights.get(to)![d] += n
      need -= n
      move(g, to, d, n, why)
    }
  }
  // 1. Debts, from what each giver does not use now.
  for (const d of dims) {
    const spare = new Map(reachable.map((n) => [n, Math.max(0, rights.get(n)![d] - usage(n, d))]))
    for (const n of reachable) {
      const debt = usage(n, d) - rights.get(n)![d]
      if (debt > 0) fill(d, spare, n, debt, false, 'debt')
    }
  }
  // 2. Wants. What each node may spend: its rights beyond its usage and beyond the debts that remain
  // (of nodes cut off too: see debtsBeyond), the rule it claims by.
  const after = new Map(input.rights)
  for (const n of reachable) after.set(n, rights.get(n)!)
  const free = new Map(reachable.map((n) => [n, sub(sub(rights.get(n)!, input.usage.get(n) ?? ZERO), debtsBeyond(n, after, input.usage))]))
  /** The wants served, by node: their demand in all, and whether one of them is stuck. */
  const served = new Map<string, { demand: Amount, stuck: boolean }>()
  /** What node `n` lacks of `d`, and has of it to spare, with `w` of it served (undefined: nothing; then it lacks nothing). */
  const stand = (n: string, d: Dim, w: number | undefined): { short: number, spare: number } =>
    ({ short: w === undefined ? 0 : Math.max(0, w - free.get(n)![d]), spare: Math.max(0, free.get(n)![d] - (w ?? 0)) })
  /** What the served wants lack and what spare is left beside them, in all, per dimension. */
  const totals = new Map(dims.map((d) => [d, { short: 0, spare: reachable.reduce((a, n) => a + stand(n, d, undefined).spare, 0) }]))
  /** The totals if `w` were served too; `serve` keeps them. */
  const withWant = (w: Want): Map<Dim, { short: number, spare: number }> => {
    const was = served.get(w.node)?.demand
    return new Map(dims.map((d) => {
      const t = totals.get(d)!
      const before = stand(w.node, d, was?.[d])
      const next = stand(w.node, d, (was?.[d] ?? 0) + w.demand[d])
      return [d, { short: t.short - before.short + next.short, spare: t.spare - before.spare + next.spare }]
    }))
  }
  const serve = (w: Want, next: Map<Dim, { short: number, spare: number }>): void => {
    const was = served.get(w.node)
    served.set(w.node, { demand: add(was?.demand ?? ZERO, w.demand), stuck: (was?.stuck ?? false) || w.stuck })
    for (const [d, t] of next) totals.set(d, t)
  }
  const order = (a: Want, b: Want): number => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0) || DIMS.reduce((c, d) => c || a.demand[d] - b.demand[d], 0)
  const wants = input.wants.filter((w) => rights.has(w.node)).sort(order)
  // First what fits in its node's own rights (it lacks nothing, so the totals still balance); then, in order,
  // each want whose node the spare left can still make up for, beside every want served before it.
  const later: Want[] = []
  for (const w of wants) {
    const own = served.get(w.node)?.demand ?? ZERO
    if (dims.every((d) => own[d] + w.demand[d] <= free.get(w.node)![d])) serve(w, withWant(w))
    else later.push(w)
  }
  for (const w of later) {
    const next = withWant(w)
    if ([...next.values()].every((t) => t.short <= t.spare)) serve(w, next)
  }
  for (const d of dims) {
    const spare = new Map(reachable.map((n) => [n, stand(n, d, served.get(n)?.demand[d]).spare]))
    for (const [n, s] of [...served].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const short = stand(n, d, s.demand[d]).short
      if (short > 0) fill(d, spare, n, short, s.stuck, 'share')
    }
  }
  for (const [key, a] of moved) {
    const [from, to, why] = key.split('\u0000') as [string, string, Transfer['why']]
    out.push({ from, to, why, amount: a })
  }
  return out.sort((x, y) => (x.why === y.why ? 0 : x.why === 'debt' ? -1 : 1) || (x.from < y.from ? -1 : x.from > y.from ? 1 : 0) || (x.to < y.to ? -1 : x.to > y.to ? 1 : 0))
}

/** The gifts `self` makes in the plan, one per recipient (debts and shares together). */
export function giftsOf (self: string, plan: readonly Transfer[]): Gift[] {
  const by = new Map<string, Amount>()
  for (const t of plan) if (t.from === self) by.set(t.to, add(by.get(t.to) ?? ZERO, t.amount))
  return [...by].sort(([a], [b]) => (a < b ? -1 : 1)).map(([to, a]) => ({ to, amount: a }))
}

function dimText (d: Dim, n: number): string {
  switch (d) {
    case 'cpuMillis': return `cpu ${n}m`
    case 'memoryBytes': return `memory ${bytesText(n)}`
    case 'instances': return `${n} instance${n === 1 ? '' : 's'}`
  }
}

function shareText (d: Dim, share: number, limit: number): string {
  switch (d) {
    case 'cpuMillis': return `cpu ${share}m of ${limit}m`
    case 'memoryBytes': return `memory ${bytesText(share)} of ${bytesText(limit)}`
    case 'instances': return `${share} of ${limit} instances`
  }
}

/** A quota in words, its limited dimensions only: "cpu 2, memory 4 GiB, 10 instances". */
export function limitText (limit: Limit): string {
  const parts: string[] = []
  if (limit.cpuMillis !== null) parts.push(`cpu ${cpuText(limit.cpuMillis)}`)
  if (limit.memoryBytes !== null) parts.push(`memory ${bytesText(limit.memoryBytes)}`)
  if (limit.instances !== null) parts.push(`${limit.instances} instances`)
  return parts.join(', ')
}

/** What a namespace holds, in words, every dimension. */
export function amountText (a: Amount): string {
  return `cpu ${cpuText(a.cpuMillis)}, memory ${bytesText(a.memoryBytes)}, ${a.instances} instances`
}

/**
 * Why an instance of namespace `ns` waits on this node, in one line: its demand is
 * more than the whole quota; or this node runs more than its rights (the quota was
 * lowered or set under its work); or its share is in use.
 */
export function quotaMessage (ns: string, limit: Limit, rights: Amount, usage: Amount, demand: Amount): string {
  const short = limitedDims(limit).filter((d) => usage[d] + demand[d] > rights[d])
  const over = short.filter((d) => demand[d] > limit[d]!)
  if (over.length > 0) {
    return `namespace ${ns}: the task asks for ${over.map((d) => dimText(d, demand[d])).join(', ')}, more than the namespace's whole quota (${over.map((d) => dimText(d, limit[d]!)).join(', ')}); raise the quota or ask for less`
  }
  const shares = short.map((d) => shareText(d, rights[d], limit[d]!)).join(', ')
  if (short.some((d) => usage[d] > rights[d])) {
    return `namespace ${ns}: this node runs more than its share of the quota (${shares}; in use: ${short.map((d) => dimText(d, usage[d])).join(', ')}): the quota is below what runs; waiting for tasks to end or for a share from another node`
  }
  return `namespace ${ns}: this node's share of the quota (${shares}) is in use; waiting for a share from another node`
}
