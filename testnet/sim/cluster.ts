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
//
// A member may run an app beside its membership (testnet/sim/node.ts: the state,
// the reconcile loop and a task runner). Each life of a member gets a fresh app
// and its own SimClock: its timers run on the cluster's queue, are dropped when
// that life crashes, and wait while the process is frozen. Apps talk through the
// same network, with the same faults, as membership.

import { type MembershipConfig, type MembershipInit, SIM, membershipConfig } from '../../membership/config.ts'
import type { Clock } from '../../node/clock.ts'
import { Swim } from '../../membership/swim.ts'
import type { MemberEvent, MemberMeta, MemberState, Message } from '../../membership/types.ts'
import { SimClock } from './clock.ts'
import { type NetworkConfig, type NetworkHost, SimNetwork, type Wire } from './network.ts'
import { Rng } from './rng.ts'
import { TimeQueue } from './time-queue.ts'

export type NodeStatus = 'up' | 'crashed' | 'paused' | 'left'

/** What a member's app is given for one life. */
export interface AppContext {
  readonly id: string
  readonly life: number
  /** This life's clock: the cluster's time plus the member's skew. */
  readonly clock: Clock
  /** This life's own random stream. */
  readonly rng: Rng
  readonly swim: Swim
  /** Sends app bytes to another member, through the network and its faults. */
  send (to: string, bytes: Uint8Array): void
  /** Reports an exception the app caught in its own asynchronous code. */
  report (error: Error): void
}

/** What runs beside membership on a member, for one life. */
export interface SimApp {
  receive (from: string, bytes: Uint8Array): void
  /** A membership event this member reported. */
  onMemberEvent? (event: MemberEvent): void
  /** The process ends (a crash, or after a leave): its timers are dropped by the cluster. */
  close (): void
}

/** An exception thrown by a member's app code: a bug the simulation found. */
export interface AppError {
  atMs: number
  id: string
  error: Error
}

/** The cluster's record of one member: its membership state machine, its current life and that life's app (for a complete node, node.ts's SimNode). */
interface SimMember {
  readonly id: string
  readonly addr: string
  status: NodeStatus
  swim: Swim
  /** How many times this member was started: each life has its own random stream. */
  life: number
  meta: MemberMeta
  clock: SimClock
  app: SimApp | null
  /** Timer callbacks that fell due while the process was frozen: they run on resume. */
  frozen: Array<() => void>
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
  /** Starts what runs beside membership on each life of each member. */
  app?: (context: AppContext) => SimApp
  /** What the members' wall clocks read at virtual time 0 (default 0). */
  epochMs?: number
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
  private readonly nodes = new Map<string, SimMember>()
  /** Hosts that talk the apps' protocols without being members, and where what reaches them goes. */
  private readonly outsiders = new Map<string, (from: string, bytes: Uint8Array) => void>()
  /** Each member's view, kept from its events so that checks are cheap. */
  private readonly views = new Map<string, Map<string, MemberState>>()
  private readonly aliveCounts = new Map<string, number>()
  private readonly actions = new TimeQueue<() => void>()
  private readonly listeners: ((event: SimEvent) => void)[] = []
  private readonly appOf: ((context: AppContext) => SimApp) | undefined
  readonly appErrors: AppError[] = []
  private readonly epochMs: number
  private nextIndex = 0

  constructor (init: SimClusterInit) {
    this.seed = init.seed
    this.rng = new Rng(init.seed)
    this.config = membershipConfig(init.config ?? {}, init.preset ?? SIM)
    this.tickMs = init.tickMs ?? 10
    this.metaOf = init.meta ?? randomMeta
    this.appOf = init.app
    this.epochMs = init.epochMs ?? 0
    this.network = new SimNetwork(init.network ?? {}, this.rng.fork('network'))
  }

  /** For assertion messages: how to replay this run. */
  describe (): string {
    return `seed ${this.seed} (replay: SEED=${this.seed}), t=${this.nowMs} ms`
  }

  // ---- building the cluster -------------------------------------------------

  /** Starts one member that knows only itself; its clock is off by `skewMs`. */
  add (id: string = `n${this.nextIndex++}`, skewMs = 0): string {
    if (this.nodes.has(id)) throw new Error(`member ${id} exists`)
    const addr = `sim://${id}`
    const meta = this.makeMeta(id)
    const node: SimMember = { id, addr, status: 'up', swim: null as unknown as Swim, life: 0, meta, clock: null as unknown as SimClock, app: null, frozen: [], joinAddrs: [], nextJoinMs: 0 }
    this.nodes.set(id, node)
    this.network.register(id, addr)
    this.startLife(node, 0, skewMs)
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

  /**
   * A host on the network that is no member: nobody's membership knows it, but it
   * can send app bytes to members and hears their answers, through the network
   * and its faults, like a peer that connects without joining (a hostile one, in
   * tests). Returns how it sends.
   */
  outsider (id: string, receive: (from: string, bytes: Uint8Array) => void): (to: string, bytes: Uint8Array) => void {
    if (this.nodes.has(id) || this.outsiders.has(id)) throw new Error(`host ${id} exists`)
    this.outsiders.set(id, receive)
    this.network.register(id, `sim://${id}`)
    return (to, bytes) => { this.network.send(id, { to, addrs: [], message: { type: 'app', bytes } }, this.nowMs) }
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
    const node = this.node(id)
    this.setStatus(node, 'crashed')
    this.endLife(node)
  }

  /**
   * A new process under the same id: fresh state, incarnation 0, joining through
   * `seeds`. `skewMs`: this life's clock is off by that much (default: as before).
   */
  restart (id: string, seeds: string[], skewMs?: number): void {
    const node = this.node(id)
    if (node.status === 'up' || node.status === 'paused') throw new Error(`member ${id} is running`)
    this.setStatus(node, 'up')
    this.startLife(node, node.life + 1, skewMs)
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
    // What fell due while frozen runs now, late, in the order it fell due.
    const due = node.frozen
    node.frozen = []
    for (const fn of due) this.guarded(node, node.life, fn)
  }

  /** Leaves gracefully, then the process exits. */
  leave (id: string): void {
    const node = this.node(id)
    node.swim.leave(this.nowOf(node))
    this.flush(node, this.nowMs)
    this.setStatus(node, 'left')
    this.endLife(node)
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
      node.swim.tick(this.nowOf(node))
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

  deliver (to: string, from: string, message: Wire, nowMs: number): void {
    const outsider = this.outsiders.get(to)
    if (outsider !== undefined) {
      this.nowMs = nowMs
      if (message.type === 'app') outsider(from, message.bytes)
      return
    }
    const node = this.node(to)
    this.nowMs = nowMs
    if (message.type === 'app') {
      const app = node.app
      if (app !== null) this.guarded(node, node.life, () => { app.receive(from, message.bytes) })
      return
    }
    node.swim.receive(from, message, this.nowOf(node))
    this.flush(node, nowMs)
  }

  undeliverable (from: string, message: Wire, nowMs: number): void {
    if (message.type === 'app') return
    const node = this.node(from)
    this.nowMs = nowMs
    node.swim.undeliverable(message, this.nowOf(node))
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

  /** The member's app in its current life (null without one, or while crashed). */
  appOfNode (id: string): SimApp | null {
    return this.node(id).app
  }

  lifeOf (id: string): number {
    return this.node(id).life
  }

  /** The member's clock skew in its current life. */
  skewOf (id: string): number {
    return this.node(id).clock.skewMs
  }

  /** Members whose process runs and has not left: those that must agree. */
  liveIds (): string[] {
    return [...this.nodes.values()].filter((n) => n.status === 'up').map((n) => n.id)
  }

  /** What member `observer` thinks of everyone, read from its state machine. */
  viewOf (observer: string): Map<string, MemberState> {
    return new Map(this.node(observer).swim.list().map((m) => [m.id, m.state]))
  }

  /** What `observer` thinks of every member it has heard of, from its events. */
  memberView (observer: string): ReadonlyMap<string, MemberState> {
    return this.views.get(observer) ?? new Map()
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

  private node (id: string): SimMember {
    const node = this.nodes.get(id)
    if (node === undefined) throw new Error(`no member ${id}`)
    return node
  }

  private setStatus (node: SimMember, status: NodeStatus): void {
    node.status = status
    this.network.setStatus(node.id, status === 'left' ? 'crashed' : status)
  }

  /** A new process for the member: membership from scratch, a new clock, a new app. */
  private startLife (node: SimMember, life: number, skewMs?: number): void {
    node.life = life
    node.frozen = []
    node.clock = new SimClock(this, (fn) => { this.guarded(node, life, fn) }, skewMs ?? node.clock?.skewMs ?? 0, this.epochMs)
    const random = this.rng.fork(`swim/${node.id}/${life}`)
    node.swim = new Swim({ self: { id: node.id, addrs: [node.addr], meta: node.meta }, config: this.config, random: () => random.next(), nowMs: this.nowOf(node) })
    this.resetView(node)
    if (this.appOf === undefined) return
    const context: AppContext = {
      id: node.id,
      life,
      clock: node.clock,
      rng: this.rng.fork(`app/${node.id}/${life}`),
      swim: node.swim,
      send: (to, bytes) => {
        if (node.life === life && node.status === 'up') this.network.send(node.id, { to, addrs: [], message: { type: 'app', bytes } }, this.nowMs)
      },
      report: (error) => {
        if (node.life === life) this.appErrors.push({ atMs: this.nowMs, id: node.id, error })
      },
    }
    this.guarded(node, life, () => { node.app = this.appOf!(context) })
  }

  private endLife (node: SimMember): void {
    const app = node.app
    node.app = null
    node.frozen = []
    if (app !== null) {
      try {
        app.close()
      } catch (err) {
        this.appErrors.push({ atMs: this.nowMs, id: node.id, error: err as Error })
      }
    }
  }

  /** Runs app code of one life: dropped once that life ended, deferred while frozen, its exceptions kept. */
  private guarded (node: SimMember, life: number, fn: () => void): void {
    if (node.life !== life || node.status === 'crashed' || node.status === 'left') return
    if (node.status === 'paused') {
      node.frozen.push(fn)
      return
    }
    try {
      fn()
    } catch (err) {
      this.appErrors.push({ atMs: this.nowMs, id: node.id, error: err as Error })
    }
  }

  /** The member's own wall clock: the cluster's time plus its skew. */
  private nowOf (node: SimMember): number {
    return node.clock.now()
  }

  private makeMeta (id: string): MemberMeta {
    return this.metaOf(id, this.rng.fork(`meta/${id}`))
  }

  private retryJoin (node: SimMember): void {
    if (node.joinAddrs.length === 0 || this.nowMs < node.nextJoinMs) return
    if (this.views.get(node.id)!.size > 1) {
      node.joinAddrs = []
      return
    }
    node.nextJoinMs = this.nowMs + JOIN_RETRY_MS
    node.swim.join(node.joinAddrs)
  }

  private flush (node: SimMember, nowMs: number): void {
    const { messages, events } = node.swim.drain()
    for (const outbound of messages) this.network.send(node.id, outbound, nowMs)
    for (const event of events) {
      this.record(node.id, event, nowMs)
      const app = node.app
      if (app?.onMemberEvent !== undefined) this.guarded(node, node.life, () => { app.onMemberEvent!(event) })
    }
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

  private resetView (node: SimMember): void {
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
