// A task runner for simulated nodes: the TaskRunner interface of node/executor,
// with tasks that are timers instead of processes. What a task does is in its
// command line, so the simulator's workloads are ordinary job specs:
//
//   sim run <ms> [code]    runs ms, then exits with code (default 0)
//   sim serve              runs until stopped
//   sim crash <ms>         runs ms, then exits with code 1 (a crash loop as a service)
//
// Starting takes a few simulated milliseconds, stopping up to the grace period.
// It admits every start (as an executor without admission would), and reports
// any start that takes the node past its capacity: placement must never ask that.

import { EventEmitter } from 'node:events'
import type { Clock } from '../../node/clock.ts'
import { MurmurError } from '../../node/errors.ts'
import type { LogChunk } from '../../node/executor/logs.ts'
import type { FoundAttempt, Isolation, RecoverReport, TaskExit, AttemptInfo, TaskRunner, AttemptSpec } from '../../node/executor/types.ts'
import type { Rng } from './rng.ts'

/** How a simulated task behaves, read from its command line. */
export type Behaviour =
  | { kind: 'run', ms: number, code: number }
  | { kind: 'serve' }
  | { kind: 'crash', ms: number }

export function behaviourOf (spec: Pick<AttemptSpec, 'command' | 'args'>): Behaviour | null {
  if (spec.command !== 'sim') return null
  const [kind, a, b] = spec.args
  const ms = Number(a)
  if (kind === 'serve') return { kind }
  if (kind === 'run' && Number.isInteger(ms) && ms >= 0) return { kind, ms, code: b === undefined ? 0 : Number(b) }
  if (kind === 'crash' && Number.isInteger(ms) && ms >= 0) return { kind, ms }
  return null
}

/** A start that took a node past its capacity, or any other breach the runner can see. */
export interface RunnerBreach {
  node: string
  task: string
  message: string
}

export interface SimRunnerInit {
  node: string
  clock: Clock
  rng: Rng
  capacity: { cpuMillis: number, memoryBytes: number }
  onBreach: (breach: RunnerBreach) => void
  /** Every start asked for (`begin`), every start done and every end, for the simulator's count of runs. */
  onRun?: (event: { node: string, task: string, kind: 'begin' | 'start' | 'end', exit?: TaskExit }) => void
}

const START_MS = [2, 30] as const
const STOP_MS = [1, 20] as const

export class SimRunner extends EventEmitter<{ exit: [AttemptInfo] }> implements TaskRunner {
  readonly isolation: Isolation = { kind: 'none', detail: 'simulated tasks' }
  private readonly init: SimRunnerInit
  private readonly tasks = new Map<string, AttemptInfo>()
  /** Tasks whose start was reported to onRun and whose end not yet. */
  private readonly reported = new Set<string>()
  private closed = false

  constructor (init: SimRunnerInit) {
    super()
    this.init = init
  }

  async start (spec: AttemptSpec): Promise<AttemptInfo> {
    const existing = this.tasks.get(spec.id)
    if (existing !== undefined && existing.phase !== 'ended') throw new MurmurError('TASK_EXISTS', `task ${spec.id} is already running`, 1, 409)
    const behaviour = behaviourOf(spec)
    const { clock, rng } = this.init
    const info: AttemptInfo = {
      id: spec.id, job: spec.job, phase: 'running', pid: null, startedAt: clock.now(), finishedAt: null, exit: null, usage: null, cgroup: null, dir: '', adopted: false, spec,
    }
    this.tasks.set(spec.id, info)
    this.init.onRun?.({ node: this.init.node, task: spec.id, kind: 'begin' })
    const committed = this.committed()
    if (committed.cpuMillis > this.init.capacity.cpuMillis || committed.memoryBytes > this.init.capacity.memoryBytes) {
      this.init.onBreach({ node: this.init.node, task: spec.id, message: `over capacity: ${committed.cpuMillis}m of ${this.init.capacity.cpuMillis}m cpu, ${committed.memoryBytes} of ${this.init.capacity.memoryBytes} bytes` })
    }
    await new Promise<void>((resolve) => { clock.setTimeout(resolve, rng.between(...START_MS)) })
    if (behaviour === null) {
      this.end(info, { reason: 'start-failed', code: null, signal: null, message: `not a simulated command: ${spec.command}`, oomKills: 0 })
      return { ...info }
    }
    if (info.phase !== 'running') return { ...info }
    info.startedAt = clock.now()
    this.reported.add(spec.id)
    this.init.onRun?.({ node: this.init.node, task: spec.id, kind: 'start' })
    if (behaviour.kind !== 'serve') {
      const code = behaviour.kind === 'run' ? behaviour.code : 1
      clock.setTimeout(() => {
        if (info.phase === 'running') this.end(info, { reason: 'exited', code, signal: null, message: `exited with code ${code}`, oomKills: 0 })
      }, behaviour.ms)
    }
    return { ...info }
  }

  async stop (id: string, opts: { graceMs?: number | undefined } = {}): Promise<AttemptInfo> {
    const info = this.tasks.get(id)
    if (info === undefined) throw new MurmurError('NO_SUCH_TASK', `no task ${id} on this node`, 1, 404)
    if (info.phase === 'ended') return { ...info }
    info.phase = 'stopping'
    const [min, max] = STOP_MS
    await new Promise<void>((resolve) => { this.init.clock.setTimeout(resolve, Math.min(opts.graceMs ?? max, this.init.rng.between(min, max))) })
    if (info.phase === 'stopping') this.end(info, { reason: 'killed', code: null, signal: 'SIGTERM', message: 'killed by SIGTERM on request', oomKills: 0 })
    return { ...info }
  }

  inspect (id: string): AttemptInfo | undefined {
    const info = this.tasks.get(id)
    return info === undefined ? undefined : { ...info }
  }

  list (): AttemptInfo[] {
    return [...this.tasks.values()].map((t) => ({ ...t }))
  }

  /** The tasks not ended (starting, running or stopping), as they are: for the simulator's checks, not to be changed. */
  * live (): Iterable<Readonly<AttemptInfo>> {
    for (const t of this.tasks.values()) if (t.phase !== 'ended') yield t
  }

  /** Tasks whose process runs now (started, not yet ended), by id. */
  running (): string[] {
    const out: string[] = []
    for (const t of this.tasks.values()) if (t.phase !== 'ended') out.push(t.id)
    return out
  }

  /**
   * A new life of the node judges what its previous life left running: `decide`
   * (node/recovery.ts in a node) keeps a task or stops it. Tasks that ended
   * meanwhile are reported as ended; their exits went to nobody.
   */
  async recover (decide: (task: FoundAttempt) => 'adopt' | 'stop'): Promise<RecoverReport> {
    const report: RecoverReport = { adopted: [], stopped: [], ended: [], strays: [] }
    const stops: Array<Promise<AttemptInfo>> = []
    for (const t of this.tasks.values()) {
      if (t.phase === 'ended') {
        report.ended.push(t.id)
        continue
      }
      if (decide({ id: t.id, job: t.job, spec: t.spec, startedAt: t.startedAt, alive: true }) === 'adopt') {
        t.adopted = true
        report.adopted.push(t.id)
      } else {
        report.stopped.push(t.id)
        stops.push(this.stop(t.id))
      }
    }
    await Promise.all(stops)
    return report
  }

  /** The node process that listened died: its tasks go on, their exits reach nobody until a new life listens. */
  detach (): void {
    this.removeAllListeners('exit')
    for (const t of this.tasks.values()) t.adopted = false
  }

  async readLogs (): Promise<LogChunk> {
    throw new MurmurError('NO_LOGS', 'simulated tasks write no logs', 1, 404)
  }

  // eslint-disable-next-line require-yield
  async * followLogs (): AsyncIterable<Buffer> {
    throw new MurmurError('NO_LOGS', 'simulated tasks write no logs', 1, 404)
  }

  async prune (before: number): Promise<string[]> {
    const pruned: string[] = []
    for (const [id, t] of this.tasks) {
      if (t.phase === 'ended' && (t.finishedAt ?? 0) < before) {
        this.tasks.delete(id)
        pruned.push(id)
      }
    }
    return pruned
  }

  committed (): { cpuMillis: number, memoryBytes: number, tasks: number } {
    let cpuMillis = 0
    let memoryBytes = 0
    let tasks = 0
    for (const t of this.tasks.values()) {
      if (t.phase === 'ended') continue
      cpuMillis += t.spec.cpuMillis
      memoryBytes += t.spec.memoryBytes
      tasks++
    }
    return { cpuMillis, memoryBytes, tasks }
  }

  /** The machine goes down: every task ends with it, unannounced. */
  async close (): Promise<void> {
    this.closed = true
    for (const t of this.tasks.values()) if (t.phase !== 'ended') this.end(t, { reason: 'lost', code: null, signal: null, message: 'the machine went down', oomKills: 0 }, false)
  }

  private end (info: AttemptInfo, exit: TaskExit, announce = true): void {
    info.phase = 'ended'
    info.finishedAt = this.init.clock.now()
    info.exit = exit
    if (this.reported.delete(info.id)) this.init.onRun?.({ node: this.init.node, task: info.id, kind: 'end', exit })
    if (announce && !this.closed) this.emit('exit', { ...info })
  }
}
