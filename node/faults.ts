// Network faults a testnet injects into one node. Only a node started with
// --fault-injection has them (testnet/local sets it; nothing else should). The
// rules name peers by peer id:
//
//   blocked   no connection either way: dials and inbound connections are denied,
//             open ones are closed when the rule is set, any message is dropped
//   cutFrom   one-way: everything that arrives from the peer is dropped; this node
//             still sends to it (a cut from→to is set on `to`)
//   delayMs   every message this node RECEIVES waits delayMs ± jitterMs (uniform)
//   lossRate  every message this node receives is lost with this probability
//
// Delay and loss act on what arrives, at the one place every inbound path of ours
// passes (membership frames, gossip RPCs, sync and task-stream frames): a round trip
// through a delayed node is delayMs longer, as with netem on one direction of its
// link. Membership frames and gossip RPCs are datagrams here: each is delayed on its
// own (jitter may reorder them) and lost on its own. On a stream (anti-entropy, task
// requests and log follows) a delayed frame holds up the frames behind it, so the
// stream keeps its order as TCP does, and a lost frame resets the stream: the
// exchange fails and its caller tries again later, which is what a reliable stream
// that gives up looks like to the program above it.
//
// The rule logic is pure (compile, judge, blockedAdded); FaultInjector holds the
// current rules, counts what it did, and is what the node's components ask.

import { setTimeout as sleep } from 'node:timers/promises'
import type { ConnectionGater, PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import { z } from 'zod'
import { InputError } from './errors.ts'

export type FaultPath = 'membership' | 'gossip' | 'sync' | 'rpc'
export type DropReason = 'blocked' | 'cut' | 'loss'

export interface FaultRules {
  blocked: string[]
  cutFrom: string[]
  delayMs: number
  jitterMs: number
  lossRate: number
}

export const NO_FAULTS: Readonly<FaultRules> = Object.freeze({ blocked: [], cutFrom: [], delayMs: 0, jitterMs: 0, lossRate: 0 })

export const FAULT_LIMITS = Object.freeze({
  /** Peers one rule may name: far above any testnet (64 nodes). */
  peersMax: 1_024,
  /** A delay beyond a minute is a partition; say so with one. */
  delayMsMax: 60_000,
})

const peerId = z.string().regex(/^[1-9A-HJ-NP-Za-km-z]{40,128}$/, 'must be a peer id (base58, as `murmur members` shows)')

/** The body of PUT /v1/admin/faults and of --fault-rules: every field optional, the whole rule set replaced. */
const faultRulesSchema = z.object({
  blocked: z.array(peerId).max(FAULT_LIMITS.peersMax).default([]),
  cutFrom: z.array(peerId).max(FAULT_LIMITS.peersMax).default([]),
  delayMs: z.number().int().min(0).max(FAULT_LIMITS.delayMsMax).default(0),
  jitterMs: z.number().int().min(0).max(FAULT_LIMITS.delayMsMax).default(0),
  lossRate: z.number().min(0).lt(1, 'must be below 1: a node that hears nothing is partitioned; block its peers instead').default(0),
}).strict().refine((r) => r.jitterMs <= r.delayMs, { message: 'must be at most delayMs (the delay is delayMs ± jitterMs)', path: ['jitterMs'] })

const FAULT_RULES_USAGE = '{ "blocked": [peer ids], "cutFrom": [peer ids], "delayMs": 200, "jitterMs": 50, "lossRate": 0.2 }'

/** Rules from untrusted input (a request body, a flag), or a one-line InputError that names the field. */
export function parseFaultRules (input: unknown, what: string): FaultRules {
  const parsed = faultRulesSchema.safeParse(input ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new InputError('BAD_FAULTS', `${what}: ${issue.path.join('.') || 'body'}: ${issue.message}; send ${FAULT_RULES_USAGE}`)
  }
  return parsed.data
}

export interface CompiledRules {
  rules: FaultRules
  blocked: ReadonlySet<string>
  cutFrom: ReadonlySet<string>
}

export function compile (rules: FaultRules): CompiledRules {
  return { rules, blocked: new Set(rules.blocked), cutFrom: new Set(rules.cutFrom) }
}

export type Verdict = { pass: true, delayMs: number } | { pass: false, reason: DropReason }

/**
 * What happens to one message arriving from `peer`. `random` gives uniform draws
 * in [0, 1): at most one for loss, then one for jitter.
 */
export function judge (rules: CompiledRules, peer: string, random: () => number): Verdict {
  if (rules.blocked.has(peer)) return { pass: false, reason: 'blocked' }
  if (rules.cutFrom.has(peer)) return { pass: false, reason: 'cut' }
  const { lossRate, delayMs, jitterMs } = rules.rules
  if (lossRate > 0 && random() < lossRate) return { pass: false, reason: 'loss' }
  if (jitterMs === 0) return { pass: true, delayMs }
  return { pass: true, delayMs: Math.max(0, Math.round(delayMs - jitterMs + random() * 2 * jitterMs)) }
}

/** The peers blocked by `after` and not by `before`: their open connections must be closed. */
export function blockedAdded (before: FaultRules, after: FaultRules): string[] {
  const had = new Set(before.blocked)
  return after.blocked.filter((p) => !had.has(p))
}

export interface FaultStats {
  /** Rule sets taken since the start (the --fault-rules one included). */
  changes: number
  changedAt: string | null
  /** Messages (frames, RPCs) let through, delayed or not, by path. */
  passed: Record<FaultPath, number>
  /** Messages dropped, by path and reason. */
  dropped: Record<FaultPath, Record<DropReason, number>>
  /** Messages held back by a delay, by path. */
  delayed: Record<FaultPath, number>
  /** Connections refused (dials and inbound) to and from blocked peers. */
  refusedConnections: number
}

export interface FaultsView {
  rules: FaultRules
  stats: FaultStats
}

/** Thrown where a stream frame is dropped: the stream is reset, as a transport that gave up would. */
export class FaultDropped extends Error {
  override name = 'FaultDropped'
  readonly reason: DropReason
  constructor (peer: string, path: FaultPath, reason: DropReason) {
    super(`a ${path} frame from ${peer} was dropped by fault injection (${reason})`)
    this.reason = reason
  }
}

export interface FaultInjectorInit {
  self: string
  log: Logger
  rules?: FaultRules
  /** Uniform in [0, 1); seeded in tests. */
  random?: () => number
}

export class FaultInjector {
  readonly stats: FaultStats
  private readonly self: string
  private readonly log: Logger
  private readonly random: () => number
  private compiled: CompiledRules

  constructor (init: FaultInjectorInit) {
    this.self = init.self
    this.log = init.log
    this.random = init.random ?? Math.random
    this.compiled = compile({ ...NO_FAULTS })
    const zero = (): Record<DropReason, number> => ({ blocked: 0, cut: 0, loss: 0 })
    this.stats = {
      changes: 0,
      changedAt: null,
      passed: { membership: 0, gossip: 0, sync: 0, rpc: 0 },
      dropped: { membership: zero(), gossip: zero(), sync: zero(), rpc: zero() },
      delayed: { membership: 0, gossip: 0, sync: 0, rpc: 0 },
      refusedConnections: 0,
    }
    this.log.warn('fault injection is on: this node takes network fault rules on /v1/admin/faults (for testnets only)')
    if (init.rules !== undefined) this.set(init.rules)
  }

  get rules (): FaultRules {
    return this.compiled.rules
  }

  view (): FaultsView {
    return { rules: this.rules, stats: this.stats }
  }

  /** Replaces every rule; returns the peers newly blocked, whose connections the caller closes. */
  set (rules: FaultRules): string[] {
    if (rules.blocked.includes(this.self) || rules.cutFrom.includes(this.self)) {
      throw new InputError('BAD_FAULTS', 'faults: a node cannot block or cut itself; name other peers')
    }
    const before = this.compiled.rules
    const next = { blocked: [...new Set(rules.blocked)], cutFrom: [...new Set(rules.cutFrom)], delayMs: rules.delayMs, jitterMs: rules.jitterMs, lossRate: rules.lossRate }
    this.compiled = compile(next)
    this.stats.changes++
    this.stats.changedAt = new Date().toISOString()
    const added = blockedAdded(before, next)
    this.log.info({ rules: next, before, newlyBlocked: added.length }, 'fault rules changed')
    return added
  }

  /** True if no connection may exist with `peer`. */
  denies (peer: string): boolean {
    return this.compiled.blocked.has(peer)
  }

  /** Judges one message from `peer` and counts it (no waiting: see arrive()). */
  inbound (peer: string, path: FaultPath): Verdict {
    const verdict = judge(this.compiled, peer, this.random)
    if (!verdict.pass) {
      this.stats.dropped[path][verdict.reason]++
      return verdict
    }
    this.stats.passed[path]++
    if (verdict.delayMs > 0) this.stats.delayed[path]++
    return verdict
  }

  /**
   * One message from `peer` on `path`: resolves null after its delay if it is
   * delivered, or at once with why it is dropped. The wait keeps no process alive.
   */
  async arrive (peer: string, path: FaultPath, signal?: AbortSignal): Promise<DropReason | null> {
    const verdict = this.inbound(peer, path)
    if (!verdict.pass) return verdict.reason
    if (verdict.delayMs > 0) await sleep(verdict.delayMs, undefined, { ref: false, ...(signal === undefined ? {} : { signal }) })
    return null
  }

  /** For libp2p: no dial to, and no connection from, a blocked peer. */
  gater (): ConnectionGater {
    const deny = (peer: PeerId): boolean => {
      const denied = this.denies(peer.toString())
      if (denied) this.stats.refusedConnections++
      return denied
    }
    return {
      denyDialPeer: deny,
      denyInboundEncryptedConnection: deny,
      denyOutboundEncryptedConnection: deny,
    }
  }
}

/**
 * For the stream protocols (sync, task requests): waits out the frame's delay, or
 * throws FaultDropped so that the caller resets the stream. Free without faults.
 */
export async function admitFrame (faults: FaultInjector | undefined, peer: string, path: FaultPath, signal?: AbortSignal): Promise<void> {
  if (faults === undefined) return
  const dropped = await faults.arrive(peer, path, signal)
  if (dropped !== null) throw new FaultDropped(peer, path, dropped)
}
