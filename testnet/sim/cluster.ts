// Many members in one process: each a real Swim state machine, all on one
// simulated network and one virtual clock, every random choice drawn from one
// seed. A test builds a cluster, breaks it (crash, pause, leave, partition, loss)
// and checks what every member sees; a failure replays with SEED=<seed>.
//
//   every tickMs:  packets due ──▶ receive(from, message, t) ──▶ drain ──▶ network.send
//                  scheduled actions (joins, faults)
//                  tick(t) on every member that runs ──▶ drain ──▶ network.send
//
// A paused member gets neither ticks nor packets; when it resumes its next tick
// comes late by the whole pause, as for a process that was frozen.

import { type MembershipConfig, type MembershipInit, SIM, membershipConfig } from '../../membership/config.ts'
import { Swim } from '../../membership/swim.ts'
import type { MemberEvent, MemberMeta, MemberState, Message } from '../../membership/types.ts'
import { type NetworkConfig, type NetworkHost, SimNetwork } from './network.ts'
import { Rng } from './rng.ts'
import { TimeQueue } from './time-queue.ts'

export type NodeStatus = 'up' | 'crashed' | 'paused' | 'left'

interface SimNode {
  readonly id: string
  readonly addr: string
  status: NodeStatus
  swim: Swim
  /** How many times this member was started: each life has its own random stream. */
  life: number
  meta: MemberMeta
  /** Seeds to join through again while this member knows nobody (a lost join is retried, as node/ does). */
  joinAddrs: string[]
  nextJoinMs: number
}

/** A membership event as one member reported it, at virtual time `atMs`. */
export interface SimEvent {
  atMs: number
  observer: string
  event: MemberEvent
}

export interface SimClusterInit {
  seed: number
  /** Overrides on the preset. */
  config?: MembershipInit
  preset?: Readonly<MembershipConfig>
  network?: Partial<NetworkConfig>
  /** The virtual clock advances in steps of this many ms; every running member ticks once a step. */
  tickMs?: number
  /** What each member offers (default: a random machine drawn from the seed). */
  meta?: (id: string, rng: Rng) => MemberMeta
}

export interface GrowOptions {
  /** Time between two joins. */
  joinEveryMs?: number
  /** Join through these members (default: the first member of the cluster). */
  seeds?: string[]
}

const JOIN_RETRY_MS = 1_000

export class SimCluster implements NetworkHost {
  readonly seed: number
  readonly config: MembershipConfig
  readonly tickMs: number
  readonly network: SimNetwork
  readonly events: SimEvent[] = []
  nowMs = 0
  private readonly rng: Rng
  private readonly metaOf: (id: string, rng: Rng) => MemberMeta
  private readonly nodes = new Map<string, SimNode>()
  /** Each member's view, kept from its events so that checks are cheap. */
  private readonly views = new Map<string, Map<string, MemberState>>()
  private readonly aliveCounts = new Map<string, number>()
  private readonly actions = new TimeQueue<() => void>()
  private readonly listeners: ((event: SimEvent) => void)[] = []
  private nextIndex = 0

  constructor (init: SimClusterInit) {
    this.seed = init.seed
    this.rng = new Rng(init.seed)
    this.config = membershipConfig(init.config ?? {}, init.preset ?? SIM)
    this.tickMs = init.tickMs ?? 10
    this.metaOf = init.meta ?? randomMeta
    this.network = new SimNetwork(init.network ?? {}, this.rng.fork('network'))
  }

  /** For assertion messages: how to replay this run. */
  describe (): string {
    return `seed ${this.seed} (replay: SEED=${this.seed}), t=${this.nowMs} ms`
  }

  // ---- building the cluster -------------------------------------------------

  /** Starts one member that knows only itself. */
  add (id: string = `n${this.nextIndex++}`): string {
    if (this.nodes.has(id)) throw new Error(`member ${id} exists`)
    const addr = `sim://${id}`
    const meta = this.makeMeta(id)
    const node: SimNode = { id, addr, status: 'up', swim: this.makeSwim(id, addr, meta, 0), life: 0, meta, joinAddrs: [], nextJoinMs: 0 }
    this.nodes.set(id, node)
    this.resetView(node)
    this.network.register(id, addr)
    return id
  }

  /**
   * Starts `count` members at once, knowing only themselves, and has them join one
   * after another, every `joinEveryMs`, each through the seeds (by default the
   * cluster's first member: this call founds the cluster if it is empty). Returns
   * their ids; run the clock to join them.
   */
  grow (count: number, options: GrowOptions = {}): string[] {
    const joinEveryMs = options.joinEveryMs ?? 20
    const founding = this.nodes.size === 0
    const ids: string[] = []
    for (let i = 0; i < count; i++) ids.push(this.add())
    const seeds = options.seeds ?? [[...this.nodes.keys()][0]!]
    const joining = founding ? ids.slice(1) : ids
    joining.forEach((id, i) => {
      this.at(this.nowMs + (i + 1) * joinEveryMs, () => this.join(id, seeds))
    })
    return ids
  }

  /** Asks member `id` to join through the given members' addresses, retrying while it knows nobody. */
  join (id: string, seeds: string[]): void {
    const node = this.node(id)
    node.joinAddrs = seeds.filter((seed) => seed !== id).map((seed) => this.node(seed).addr)
    node.nextJoinMs = this.nowMs + JOIN_RETRY_MS
    node.swim.join(node.joinAddrs)
    this.flush(node, this.nowMs)
  }

  /** Runs `action` at virtual time `atMs` (at the tick that reaches it). */
  at (atMs: number, action: () => void): void {
    this.actions.push(atMs, action)
  }

  onEvent (listener: (event: SimEvent) => void): void {
    this.listeners.push(listener)
  }

  // ---- faults ---------------------------------------------------------------

  /**
   * The process dies. What its peers learn depends on the network's `whenCrashed`:
   * a refusal (the host is up, nothing listens) or nothing (the host is gone too).
   */
  crash (id: string): void {
    this.setStatus(this.node(id), 'crashed')
  }

  /** A new process under the same id: fresh state, incarnation 0, joining through `seeds`. */
  restart (id: string, seeds: string[]): void {
    const node = this.node(id)
    if (node.status === 'up' || node.status === 'paused') throw new Error(`member ${id} is running`)
    node.life++
    node.swim = this.makeSwim(id, node.addr, node.meta, node.life)
    this.setStatus(node, 'up')
    this.resetView(node)
    this.join(id, seeds)
  }

  /** Freezes the process (SIGSTOP): no ticks, nothing read; its connections stay open. */
  pause (id: string): void {
    const node = this.node(id)
    if (node.status !== 'up') throw new Error(`member ${id} is ${node.status}`)
    this.setStatus(node, 'paused')
  }

  resume (id: string): void {
    const node = this.node(id)
    if (node.status !== 'paused') throw new Error(`member ${id} is ${node.status}`)
    this.setStatus(node, 'up')
  }

  /** Leaves gracefully, then the process exits. */
  leave (id: string): void {
    const node = this.node(id)
    node.swim.leave(this.nowMs)
    this.flush(node, this.nowMs)
    this.setStatus(node, 'left')
  }

  partition (groups: readonly (readonly string[])[]): void {
    this.network.partition(groups)
  }

  heal (): void {
    this.network.heal()
  }

  mute (id: string): void {
    this.network.mute(id)
  }

  unmute (id: string): void {
    this.network.unmute(id)
  }

  // ---- running the clock ----------------------------------------------------

  /** One step: deliver what falls due, run scheduled actions, tick every running member. */
  step (): void {
    const end = this.nowMs + this.tickMs
    this.network.deliverDue(end, this)
    this.nowMs = end
    for (let due = this.actions.popDue(end); due !== undefined; due = this.actions.popDue(end)) due.value()
    for (const node of this.nodes.values()) {
      if (node.status !== 'up') continue
      node.swim.tick(end)
      this.retryJoin(node)
      this.flush(node, end)
    }
  }

  runFor (ms: number): void {
    const end = this.nowMs + ms
    while (this.nowMs < end) this.step()
  }

  /**
   * Runs until `done()` holds (checked every `checkEveryMs`) or `maxMs` pass.
   * Returns the virtual time it took, or undefined if it never held.
   */
  runUntil (done: () => boolean, maxMs: number, checkEveryMs = 100): number | undefined {
    const start = this.nowMs
    let nextCheck = start
    while (this.nowMs - start <= maxMs) {
      if (this.nowMs >= nextCheck) {
        if (done()) return this.nowMs - start
        nextCheck += checkEveryMs
      }
      this.step()
    }
    return undefined
  }

  // ---- NetworkHost ----------------------------------------------------------

  deliver (to: string, from: string, message: Message, nowMs: number): void {
    const node = this.node(to)
    this.nowMs = nowMs
    node.swim.receive(from, message, nowMs)
    this.flush(node, nowMs)
  }

  undeliverable (from: string, message: Message, nowMs: number): void {
    const node = this.node(from)
    this.nowMs = nowMs
    node.swim.undeliverable(message, nowMs)
    this.flush(node, nowMs)
  }

  // ---- queries --------------------------------------------------------------

  get size (): number {
    return this.nodes.size
  }

  ids (): string[] {
    return [...this.nodes.keys()]
  }

  status (id: string): NodeStatus {
    return this.node(id).status
  }

  swimOf (id: string): Swim {
    return this.node(id).swim
  }

  /** Members whose process runs and has not left: those that must agree. */
  liveIds (): string[] {
    return [...this.nodes.values()].filter((n) => n.status === 'up').map((n) => n.id)
  }

  /** What member `observer` thinks of everyone, read from its state machine. */
  viewOf (observer: string): Map<string, MemberState> {
    return new Map(this.node(observer).swim.list().map((m) => [m.id, m.state]))
  }

  /** What `observer` thinks of `id` (undefined: never heard of it), from its events. */
  stateOf (observer: string, id: string): MemberState | undefined {
    return this.views.get(observer)?.get(id)
  }

  /** Every running member sees exactly the running members alive. */
  allAgree (): boolean {
    return this.disagreements(1).length === 0
  }

  /** Up to `limit` lines saying who sees what wrongly; empty when everyone agrees. */
  disagreements (limit = 10): string[] {
    const live = this.liveIds()
    const liveSet = new Set(live)
    const lines: string[] = []
    for (const observer of live) {
      const view = this.views.get(observer)!
      for (const id of live) {
        const state = view.get(id)
        if (state !== 'alive') lines.push(`${observer} sees ${id} ${state ?? 'unknown'}`)
        if (lines.length >= limit) return lines
      }
      if (this.aliveCounts.get(observer) !== live.length) {
        for (const [id, state] of view) {
          if (state === 'alive' && !liveSet.has(id)) lines.push(`${observer} sees ${id} alive, but it is ${this.node(id).status}`)
          if (lines.length >= limit) return lines
        }
      }
    }
    return lines
  }

  /** The events reported by members about `id`. */
  eventsAbout (id: string): SimEvent[] {
    return this.events.filter((e) => e.event.member.id === id)
  }

  // ---- internals ------------------------------------------------------------

  private node (id: string): SimNode {
    const node = this.nodes.get(id)
    if (node === undefined) throw new Error(`no member ${id}`)
    return node
  }

  private setStatus (node: SimNode, status: NodeStatus): void {
    node.status = status
    this.network.setStatus(node.id, status === 'left' ? 'crashed' : status)
  }

  private makeSwim (id: string, addr: string, meta: MemberMeta, life: number): Swim {
    const random = this.rng.fork(`swim/${id}/${life}`)
    return new Swim({ self: { id, addrs: [addr], meta }, config: this.config, random: () => random.next(), nowMs: this.nowMs })
  }

  private makeMeta (id: string): MemberMeta {
    return this.metaOf(id, this.rng.fork(`meta/${id}`))
  }

  private retryJoin (node: SimNode): void {
    if (node.joinAddrs.length === 0 || this.nowMs < node.nextJoinMs) return
    if (this.views.get(node.id)!.size > 1) {
      node.joinAddrs = []
      return
    }
    node.nextJoinMs = this.nowMs + JOIN_RETRY_MS
    node.swim.join(node.joinAddrs)
  }

  private flush (node: SimNode, nowMs: number): void {
    const { messages, events } = node.swim.drain()
    for (const outbound of messages) this.network.send(node.id, outbound, nowMs)
    for (const event of events) this.record(node.id, event, nowMs)
  }

  private record (observer: string, event: MemberEvent, atMs: number): void {
    const view = this.views.get(observer)!
    const { id, state } = event.member
    const before = view.get(id)
    view.set(id, state)
    if (before === 'alive') this.aliveCounts.set(observer, this.aliveCounts.get(observer)! - 1)
    if (state === 'alive') this.aliveCounts.set(observer, this.aliveCounts.get(observer)! + 1)
    const simEvent: SimEvent = { atMs, observer, event }
    this.events.push(simEvent)
    for (const listener of this.listeners) listener(simEvent)
  }

  private resetView (node: SimNode): void {
    this.views.set(node.id, new Map([[node.id, 'alive']]))
    this.aliveCounts.set(node.id, 1)
  }
}

/** A machine of the kind a data center has: a few sizes, a zone and a rack. */
export function randomMeta (_id: string, rng: Rng): MemberMeta {
  return {
    cpuMillis: 1000 * rng.pick([2, 4, 8, 16, 32]),
    memoryBytes: 1024 ** 3 * rng.pick([4, 8, 16, 64]),
    labels: { zone: `zone-${rng.int(3)}`, rack: `rack-${rng.int(16)}` },
  }
}
