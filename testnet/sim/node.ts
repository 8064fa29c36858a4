// One complete simulated node, for one life: the real membership state machine
// (driven by the cluster), the real ClusterState with the real sync steps
// (state.ts), the real reconcile loop with its pure `decide` and placement, and a
// simulated task runner. Users' requests go through the same record builders as
// the API's (node/jobs/records.ts), so what the simulator submits is what a user
// would.

import pino, { type Logger } from 'pino'
import type { JobRecord } from '../../crdt/schema.ts'
import type { MemberEvent, MemberMeta } from '../../membership/types.ts'
import { newJobRecord, scaledJob, stoppedJob } from '../../node/jobs/records.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'
import { RECONCILE_DEFAULTS } from '../../node/reconcile/decide.ts'
import { type ReconcileConfig, Reconciler } from '../../node/reconcile/loop.ts'
import type { AppContext, SimApp } from './cluster.ts'
import { type RunnerBreach, SimRunner } from './runner.ts'
import { type SimDisk, SIM_STATE_CONFIG, SimState, type SimStateConfig } from './state.ts'

export interface SimNodeInit {
  context: AppContext
  meta: MemberMeta
  disk: SimDisk
  /** How long dead members count in the majority (a node uses membership's deadRetentionMs). */
  stableWindowMs: number
  onBreach: (breach: RunnerBreach) => void
  onRun: ConstructorParameters<typeof SimRunner>[0]['onRun']
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
  private closed = false

  constructor (init: SimNodeInit) {
    const { context, meta } = init
    this.id = context.id
    this.context = context
    const reachable = (): string[] => context.swim.list().filter((m) => m.id !== context.id && (m.state === 'alive' || m.state === 'suspect')).map((m) => m.id)
    this.log = pino({ level: init.logLevel ?? 'silent', base: { node: context.id, life: context.life } })
    this.state = new SimState({
      self: context.id,
      life: 'disk0',
      disk: init.disk,
      clock: context.clock,
      rng: context.rng.fork('state'),
      send: context.send,
      peers: reachable,
      memberState: (id) => context.swim.member(id)?.state,
      config: init.state,
    })
    this.runner = new SimRunner({
      node: context.id,
      clock: context.clock,
      rng: context.rng.fork('runner'),
      capacity: { cpuMillis: meta.cpuMillis, memoryBytes: meta.memoryBytes },
      onBreach: init.onBreach,
      onRun: init.onRun,
    })
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
    // As a node starts: its own record first, then the loop (over what its disk and its peers hold).
    const now = context.clock.now()
    void this.state.write((s) => {
      s.setNode({ id: context.id, addrs: [`sim://${context.id}`], apiUrl: `sim://${context.id}`, cpuMillis: meta.cpuMillis, memoryBytes: meta.memoryBytes, labels: meta.labels, startedAt: now, updatedAt: now })
    }).then(() => {
      if (!this.closed) this.reconciler.start((listener) => this.state.onChange(listener))
    }, (err: Error) => { if (!this.closed) context.report(err) })
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
  }

  /** The machine goes down: nothing more is written, and its tasks end with it. */
  close (): void {
    this.closed = true
    this.state.close()
    void this.runner.close()
  }
}
