// One complete simulated node, for one life of its process: the real membership
// state machine (driven by the cluster), the real ClusterState with the real sync
// steps (state.ts), the real reconcile loop with its pure `decide` and placement,
// and the machine's simulated task runner, whose tasks outlive a crash of the
// node process (as a node's do). It starts as node/node.ts does: join, sync with
// a member, write its record, judge what its previous life left running
// (node/recovery.ts), then reconcile. Users' requests go through the same record
// builders as the API's (node/jobs/records.ts).

import pino, { type Logger } from 'pino'
import type { JobRecord } from '../../crdt/schema.ts'
import type { MemberEvent, MemberMeta } from '../../membership/types.ts'
import { newJobRecord, scaledJob, stoppedJob } from '../../node/jobs/records.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'
import { RECONCILE_DEFAULTS } from '../../node/reconcile/decide.ts'
import { keepOnRestart } from '../../node/recovery.ts'
import { type ReconcileConfig, Reconciler } from '../../node/reconcile/loop.ts'
import type { AppContext, SimApp } from './cluster.ts'
import type { SimRunner } from './runner.ts'
import { type SimDisk, SIM_STATE_CONFIG, SimState, type SimStateConfig } from './state.ts'

/** What outlives the node process: its disk, and the tasks running on the machine. */
export interface SimMachine {
  disk: SimDisk
  runner: SimRunner
}

/** How long a node that has joined waits for its first sync before it goes on (node.ts tries each member once). */
const START_SYNC_MS = 10_000

export interface SimNodeInit {
  context: AppContext
  meta: MemberMeta
  machine: SimMachine
  /** How long dead members count in the majority (a node uses membership's deadRetentionMs). */
  stableWindowMs: number
  state?: Partial<SimStateConfig>
  reconcile?: Partial<ReconcileConfig>
  /** pino's level for the node's logs (default silent; SIM_LOG=info shows them). */
  logLevel?: string
}

export class SimNode implements SimApp {
  readonly id: string
  readonly state: SimState
  readonly runner: SimRunner
  readonly reconciler: Reconciler
  private readonly context: AppContext
  private readonly log: Logger
  private readonly meta: MemberMeta
  /** The loop's listener, also told of membership events (as node.ts does). */
  private listener: (() => void) | null = null
  private closed = false

  constructor (init: SimNodeInit) {
    const { context, meta } = init
    this.id = context.id
    this.context = context
    this.meta = meta
    const reachable = (): string[] => context.swim.list().filter((m) => m.id !== context.id && (m.state === 'alive' || m.state === 'suspect')).map((m) => m.id)
    this.log = pino({ level: init.logLevel ?? 'silent', base: { node: context.id, life: context.life } })
    this.state = new SimState({
      self: context.id,
      life: 'disk0',
      disk: init.machine.disk,
      clock: context.clock,
      rng: context.rng.fork('state'),
      send: context.send,
      peers: reachable,
      memberState: (id) => context.swim.member(id)?.state,
      config: init.state,
    })
    this.runner = init.machine.runner
    this.reconciler = new Reconciler({
      self: context.id,
      state: this.state,
      executor: this.runner,
      members: () => context.swim.list(),
      log: this.log,
      clock: context.clock,
      config: {
        stableWindowMs: init.stableWindowMs,
        cronCatchUpMs: Math.min(RECONCILE_DEFAULTS.cronCatchUpMs, (init.state?.taskRetentionMs ?? SIM_STATE_CONFIG.taskRetentionMs) / 2),
        ...init.reconcile,
      },
    })
    this.boot().catch((err: Error) => { if (!this.closed) context.report(err) })
  }

  private async boot (): Promise<void> {
    const { clock, id } = this.context
    await this.initialSync()
    const now = clock.now()
    const meta = this.meta
    await this.state.write((s) => {
      s.setNode({ id, addrs: [`sim://${id}`], apiUrl: `sim://${id}`, cpuMillis: meta.cpuMillis, memoryBytes: meta.memoryBytes, labels: meta.labels, startedAt: now, updatedAt: now })
    })
    if (this.closed) return
    // Only now, with the cluster's view of what this node should run, is the previous life judged.
    await this.runner.recover((task) => keepOnRestart(this.state.state, id, task))
    if (this.closed) return
    this.reconciler.start((listener) => {
      const off = this.state.onChange(listener)
      this.listener = listener
      return () => { off(); this.listener = null }
    })
  }

  /**
   * Waits until the node has joined (it sees another member alive), then until a
   * member answered a sync (asking one every half second, at most START_SYNC_MS).
   * A node cannot join in a simulated cluster that has only ever had one member:
   * `alone` lets the first one go on.
   */
  private async initialSync (): Promise<void> {
    const { clock, swim, id, rng } = this.context
    const sleep = async (ms: number): Promise<void> => { await new Promise<void>((resolve) => { clock.setTimeout(resolve, ms) }) }
    const alive = (): string[] => swim.list().filter((m) => m.id !== id && m.state === 'alive').map((m) => m.id)
    // A node that cannot join does not start (node.ts: JOIN_FAILED; its supervisor starts it again): it
    // must not act on what its disk says with a membership that knows nobody else.
    while (!this.closed && alive().length === 0) await sleep(100)
    const deadline = clock.monotonic() + START_SYNC_MS
    while (!this.closed && this.state.stats.diffsApplied === 0 && clock.monotonic() < deadline) {
      const members = alive()
      if (members.length > 0) this.state.syncWith(rng.pick(members))
      await sleep(500)
    }
  }

  /** Submits a job as `murmur run` would: its record at once, and `stored` once it is on this node's disk (the API's answer). */
  submit (input: unknown): { record: JobRecord, stored: Promise<void> } {
    const record = newJobRecord(normalizeJob(input), this.id, this.context.clock.now(), this.context.rng.uint32().toString(16).padStart(8, '0'))
    return { record, stored: this.state.write((s) => { s.putJob(record) }) }
  }

  async stopJob (id: string): Promise<JobRecord | undefined> {
    const record = this.state.state.job(id)
    if (record === undefined || record.desired === 'stopped') return record
    const stopped = stoppedJob(record, this.context.clock.now())
    await this.state.write((s) => { s.putJob(stopped) })
    return stopped
  }

  async scaleJob (id: string, count: number): Promise<JobRecord | undefined> {
    const record = this.state.state.job(id)
    if (record === undefined || record.type !== 'service' || record.desired !== 'running') return undefined
    const scaled = scaledJob(record, count, this.context.clock.now())
    await this.state.write((s) => { s.putJob(scaled) })
    return scaled
  }

  receive (from: string, bytes: Uint8Array): void {
    this.state.receive(from, bytes)
  }

  onMemberEvent (event: MemberEvent): void {
    this.state.onMemberEvent(event)
    this.listener?.()
  }

  /** The process ends: nothing more is written; the machine's tasks go on without it. */
  close (): void {
    this.closed = true
    this.state.close()
    this.runner.detach()
  }
}
