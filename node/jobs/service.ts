// What the jobs API does on a node: submit and stop jobs (written to the shared
// state, on disk before the answer), and read jobs and tasks out of the state
// for people, asking the nodes that run the tasks for their use and their logs.

import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { JobRecord, ClaimRecord } from '../../crdt/schema.ts'
import type { AttemptInfo } from '../executor/types.ts'
import { explain } from '../../placement/explain.ts'
import { resolveClaims } from '../../placement/claims.ts'
import { type Clock, systemClock } from '../clock.ts'
import { InputError, MurmurError } from '../errors.ts'
import type { Reconciler } from '../reconcile/loop.ts'
import { CLAIM_STATUS, claimOf, demandOf, isActiveState } from '../reconcile/decide.ts'
import type { LogsAnswer, LogsRequest, TaskRpc } from '../rpc.ts'
import type { StateService } from '../state.ts'
import { attemptId, instanceId, jobOfInstance, latestTick, tickOf } from './instances.ts'
import { type LocalTasks, noTask } from './local.ts'
import { newJobRecord, scaledJob, stoppedJob } from './records.ts'
import { JobSpecError, type JobSpec, normalizeJob, readSpec } from './spec.ts'
import type { ExplainView, HistoryView, InstanceView, JobStatus, JobSummary, JobView, PoolStatus, TaskDetail, TaskView } from './types.ts'

/** What the service asks of the nodes that run tasks: the task RPC on a node, the simulated network in testnet/sim. */
export type TaskPeers = Pick<TaskRpc, 'usage' | 'kill' | 'logs'>

export interface JobServiceInit {
  self: string
  state: StateService
  reconciler: Reconciler
  /** This node's own tasks (what the task RPC answers for them too). */
  local: LocalTasks
  peers: TaskPeers
  log: Logger
  clock?: Clock
  /** A fresh job id suffix (8 hex digits). */
  newId?: () => string
}

const RUNNING_LIKE = new Set(['claimed', 'starting', 'running'])

export class JobService {
  private readonly self: string
  private readonly state: StateService
  private readonly reconciler: Reconciler
  private readonly local: LocalTasks
  private readonly peers: TaskPeers
  private readonly log: Logger
  private readonly clock: Clock
  private readonly newId: () => string

  constructor (init: JobServiceInit) {
    this.self = init.self
    this.state = init.state
    this.reconciler = init.reconciler
    this.local = init.local
    this.peers = init.peers
    this.log = init.log
    this.clock = init.clock ?? systemClock
    this.newId = init.newId ?? (() => randomBytes(4).toString('hex'))
  }

  // --- jobs ------------------------------------------------------------------

  /** Validates and stores a job; resolves once it is on this node's disk. */
  async submit (input: unknown): Promise<JobView> {
    let job
    try {
      job = normalizeJob(input)
    } catch (err) {
      if (err instanceof JobSpecError) throw new InputError('BAD_JOB_SPEC', err.message)
      throw err
    }
    this.checkFits(job.spec)
    const record = newJobRecord(job, this.self, this.clock.now(), this.newId())
    await this.state.write((s) => { s.putJob(record) })
    this.reconciler.schedule()
    this.log.info({ job: record.id, type: record.type, count: job.spec.count }, 'job submitted')
    return this.view(record)
  }

  /** A request no node could ever hold is refused now, with the reason, instead of pending for ever. */
  private checkFits (spec: JobSpec): void {
    const nodes = this.reconciler.view().nodes.filter((n) => n.live)
    if (nodes.length === 0) return
    const fit = nodes.filter((n) => n.cpuMillis >= spec.cpuMillis && n.memoryBytes >= spec.memoryBytes)
    if (fit.length > 0) return
    const cpu = Math.max(...nodes.map((n) => n.cpuMillis))
    const mem = Math.max(...nodes.map((n) => n.memoryBytes))
    const asks: string[] = []
    if (spec.cpuMillis > cpu) asks.push(`cpu ${spec.cpuMillis}m (the largest node offers ${cpu}m)`)
    if (spec.memoryBytes > mem) asks.push(`memory ${mib(spec.memoryBytes)} (the largest node offers ${mib(mem)})`)
    if (asks.length === 0) asks.push(`cpu ${spec.cpuMillis}m and memory ${mib(spec.memoryBytes)} together (no node offers both)`)
    throw new InputError('UNSCHEDULABLE', `no node could ever run this job: it asks for ${asks.join(' and ')}; ask for less`)
  }

  jobs (all: boolean): JobSummary[] {
    const out: JobSummary[] = []
    for (const record of this.state.records.jobs()) {
      const view = this.view(record)
      if (!all && (view.status === 'stopped' || view.status === 'completed' || view.status === 'failed')) continue
      out.push({ id: view.id, name: view.name, type: view.type, desired: view.desired, status: view.status, submittedAt: view.submittedAt, counts: view.counts, count: view.spec?.count ?? 0 })
    }
    return out.sort((a, b) => b.submittedAt - a.submittedAt || a.id.localeCompare(b.id))
  }

  /** A job by id, or by name: the latest job of that name still wanted running, else the latest. */
  find (ref: string): JobRecord {
    const byId = this.state.records.job(ref)
    if (byId !== undefined) return byId
    const named = this.state.records.jobs().filter((j) => j.name === ref)
      .sort((a, b) => Number(b.desired === 'running') - Number(a.desired === 'running') || b.submittedAt - a.submittedAt)
    if (named[0] !== undefined) return named[0]
    throw new MurmurError('NO_SUCH_JOB', `no job '${ref}'; 'murmur job list --all' lists the jobs`, 2, 404)
  }

  job (ref: string): JobView { return this.view(this.find(ref)) }

  /** Stops a job everywhere: a higher version with desired 'stopped', which no older record can undo. */
  async stop (ref: string): Promise<JobView> {
    const record = this.find(ref)
    if (record.desired === 'stopped') return this.view(record)
    const stopped = stoppedJob(record, this.clock.now())
    await this.state.write((s) => { s.putJob(stopped) })
    this.reconciler.schedule()
    this.log.info({ job: record.id }, 'job stopped')
    return this.view(stopped)
  }

  /** A service with a new instance count: new instances are placed, those past the count stopped, everywhere. */
  async scale (ref: string, count: unknown): Promise<JobView> {
    const record = this.find(ref)
    let scaled: JobRecord
    try {
      if (typeof count !== 'number') throw new JobSpecError(`count must be a number, got ${count === undefined ? 'nothing' : JSON.stringify(count)}; send {"count": 3}`)
      scaled = scaledJob(record, count, this.clock.now())
    } catch (err) {
      if (err instanceof JobSpecError) throw new InputError('BAD_SCALE', err.message)
      throw err
    }
    const spec = readSpec(scaled.spec)!
    this.checkFits(spec)
    await this.state.write((s) => { s.putJob(scaled) })
    this.reconciler.schedule()
    this.log.info({ job: record.id, from: readSpec(record.spec)?.count, to: spec.count }, 'job scaled')
    return this.view(scaled)
  }

  history (ref: string): HistoryView {
    const record = this.find(ref)
    const tasks = this.state.records.taskIdsOf(record.id).flatMap((id) => this.state.records.taskClaims(id))
      .sort((a, b) => (a.startedAt ?? a.since) - (b.startedAt ?? b.since) || a.id.localeCompare(b.id) || a.generation - b.generation)
    return { job: this.view(record), tasks }
  }

  /** A job with the state of each of its instances, as this node sees the cluster. */
  view (record: JobRecord): JobView {
    const spec = readSpec(record.spec)
    const live = this.liveness()
    const ids = new Set<string>(this.state.records.taskIdsOf(record.id))
    if (spec !== null && spec.cron === undefined) {
      const current = new Set(Array.from({ length: spec.count }, (_, i) => instanceId(record.id, i)))
      // Instances past the count of a scaled-down service belong to the job only while some still run.
      for (const id of ids) if (!current.has(id) && !this.state.records.taskClaims(id).some((c) => isActiveState(c.state))) ids.delete(id)
      for (const id of current) ids.add(id)
    }
    const instances: InstanceView[] = []
    for (const id of [...ids].sort(compareInstances)) instances.push(this.instance(id, live, record.desired === 'stopped'))
    const counts: Record<string, number> = {}
    for (const i of instances) counts[i.state] = (counts[i.state] ?? 0) + 1
    const status = jobStatus(record, spec, instances)
    let nextRun: number | null = null
    if (spec?.cron !== undefined && record.desired === 'running') {
      const now = this.clock.now()
      // The next tick after now: the latest tick of a moment far enough ahead is found by stepping.
      for (let probe = now + 1000; probe < now + 366 * 86_400_000 && nextRun === null; probe += Math.max(1000, probe - now)) {
        const t = latestTick(spec.cron, probe)
        if (t !== null && t > now) nextRun = t
      }
    }
    const failedExit = instances.find((i) => i.state === 'failed')?.exit
    return {
      id: record.id,
      name: record.name,
      type: record.type,
      desired: record.desired,
      status,
      version: record.version,
      submittedAt: record.submittedAt,
      submittedBy: record.submittedBy,
      finishedAt: record.finishedAt ?? null,
      spec: spec === null ? null : { ...spec, env: redactEnv(spec.env) },
      counts,
      instances,
      nextRun,
      exitCode: status === 'completed' ? 0 : status === 'failed' ? (failedExit?.code != null && failedExit.code !== 0 ? failedExit.code : 1) : null,
    }
  }

  private instance (id: string, live: (node: string) => boolean, stopped = false): InstanceView {
    const claims = this.state.records.taskClaims(id)
    const outcome = resolveClaims(id, claims.map(claimOf), live)
    const tick = tickOf(id)
    const holder = outcome.kind === 'held' ? outcome.holder : outcome.kind === 'finished' ? outcome.by : undefined
    const record = holder === undefined ? latest(claims) : claims.find((c) => c.node === holder.node)
    if (holder === undefined && stopped) {
      // A stopped job's instance is where it ended, not pending.
      if (record === undefined) return { id, node: null, state: 'pending', since: null, startedAt: null, finishedAt: null, restarts: 0, exit: null, pending: 'the job was stopped before this instance ran', tick }
      return { id, node: record.node, state: record.state, since: record.since, startedAt: record.startedAt ?? null, finishedAt: record.finishedAt ?? null, restarts: record.restarts, exit: record.exit ?? null, pending: null, tick }
    }
    if (holder === undefined) {
      const pending = this.reconciler.pending(id)?.message ?? (record !== undefined ? `given up on ${record.node} (${record.state}); waiting to be placed again` : 'waiting to be placed')
      return { id, node: null, state: 'pending', since: record?.since ?? null, startedAt: null, finishedAt: null, restarts: record?.restarts ?? 0, exit: record?.exit ?? null, pending, tick }
    }
    return { id, node: record!.node, state: record!.state, since: record!.since, startedAt: record!.startedAt ?? null, finishedAt: record!.finishedAt ?? null, restarts: record!.restarts, exit: record!.exit ?? null, pending: null, tick }
  }

  private liveness (): (node: string) => boolean {
    const alive = new Set(this.reconciler.view().nodes.filter((n) => n.live).map((n) => n.id))
    return (node) => alive.has(node)
  }

  // --- tasks -----------------------------------------------------------------

  /** The holder's claim of every instance (live ones, or all with `all`), with use from the nodes that run them. */
  async tasks (filter: { job?: string | undefined, node?: string | undefined, all?: boolean }): Promise<TaskView[]> {
    const jobId = filter.job === undefined ? undefined : this.find(filter.job).id
    const live = this.liveness()
    const ids = jobId !== undefined ? this.state.records.taskIdsOf(jobId) : new Set(this.state.records.tasks().map((t) => t.id))
    const out: TaskView[] = []
    for (const id of ids) {
      const claims = this.state.records.taskClaims(id)
      const outcome = resolveClaims(id, claims.map(claimOf), live)
      const shown = filter.all === true ? claims : claims.filter((c) => outcome.kind === 'held' && c.node === outcome.holder.node)
      for (const c of shown) {
        if (filter.node !== undefined && !c.node.endsWith(filter.node)) continue
        out.push(this.taskView(c))
      }
    }
    out.sort((a, b) => a.jobName.localeCompare(b.jobName) || compareInstances(a.id, b.id) || a.since - b.since)
    await this.addUsage(out)
    return out
  }

  private taskView (c: ClaimRecord): TaskView {
    return {
      id: c.id, job: c.job, jobName: this.state.records.job(c.job)?.name ?? c.job, node: c.node, state: c.state, since: c.since,
      startedAt: c.startedAt ?? null, finishedAt: c.finishedAt ?? null, restarts: c.restarts, generation: c.generation, exit: c.exit ?? null, usage: null,
    }
  }

  /** Asks each node for the use of its running tasks, at once and bounded; a node that does not answer leaves `usage` null. */
  private async addUsage (tasks: TaskView[]): Promise<void> {
    const byNode = new Map<string, TaskView[]>()
    for (const t of tasks) {
      if (t.state !== 'running') continue
      let list = byNode.get(t.node)
      if (list === undefined) byNode.set(t.node, list = [])
      list.push(t)
    }
    await Promise.all([...byNode].map(async ([node, list]) => {
      const ids = list.map((t) => t.id)
      try {
        const usage = node === this.self ? this.local.usage(ids) : await this.peers.usage(node, ids, AbortSignal.timeout(1_500))
        for (const t of list) t.usage = usage[t.id] ?? null
      } catch (err) {
        this.log.debug({ node, err: (err as Error).message }, 'no task usage from a node')
      }
    }))
  }

  task (id: string): TaskDetail {
    const claims = this.state.records.taskClaims(id)
    if (claims.length === 0) throw noTask(id)
    const outcome = resolveClaims(id, claims.map(claimOf), this.liveness())
    const holder = outcome.kind === 'held' ? outcome.holder.node : outcome.kind === 'finished' ? outcome.by.node : latest(claims)!.node
    const record = claims.find((c) => c.node === holder)!
    return { ...this.taskView(record), claims, attempt: attemptId(id, record.restarts) }
  }

  async kill (id: string): Promise<{ task: string, node: string }> {
    const task = this.task(id)
    if (!isActiveState(task.state)) throw new MurmurError('TASK_NOT_RUNNING', `task ${id} is not running (it is ${task.state} on ${task.node})`, 2, 409)
    if (task.node === this.self) this.reconciler.kill(id)
    else await this.peers.kill(task.node, id)
    this.log.info({ task: id, node: task.node }, 'task killed on request')
    return { task: id, node: task.node }
  }

  async explain (id: string): Promise<ExplainView> {
    const claims = this.state.records.taskClaims(id)
    const record = this.state.records.job(claims[0]?.job ?? jobOfInstance(id))
    const spec = record === undefined ? null : readSpec(record.spec)
    if (record === undefined || spec === null) throw noTask(id)
    const { nodes, majority } = this.reconciler.view()
    const allocations = []
    for (const t of this.state.records.tasks()) {
      if (!isActiveState(t.state)) continue
      const job = t.job === record.id ? record : this.state.records.job(t.job)
      const s = job === undefined ? null : job === record ? spec : readSpec(job.spec)
      if (s !== null) allocations.push({ task: demandOf(t.id, t.job, s), node: t.node })
    }
    const view = this.instance(id, this.liveness())
    return {
      task: id,
      job: record.id,
      state: view.state,
      holders: claims.filter((c) => CLAIM_STATUS[c.state] === 'active').map((c) => c.node),
      pending: view.pending,
      majority,
      explanation: explain({ nodes, allocations }, demandOf(id, record.id, spec)),
    }
  }

  // --- logs ------------------------------------------------------------------

  /** A task's logs from the node that runs it (or ran it last). */
  async logs (id: string, req: Omit<LogsRequest, 'op' | 'task'>, signal: AbortSignal): Promise<LogsAnswer> {
    const task = this.task(id)
    if (task.node === this.self) return await this.local.logs({ op: 'logs', task: id, ...req }, signal)
    return await this.peers.logs(task.node, { task: id, ...req }, signal)
  }

  // --- the pool ----------------------------------------------------------------

  async status (members: Array<{ id: string, state: string }>, isolationNone: string[]): Promise<PoolStatus> {
    const { nodes, majority } = this.reconciler.view()
    const memberState = new Map(members.map((m) => [m.id, m.state]))
    const count = { total: nodes.length, alive: 0, suspect: 0, dead: 0, left: 0 }
    for (const n of nodes) {
      const s = n.id === this.self ? 'alive' : memberState.get(n.id) ?? 'dead'
      if (s === 'alive' || s === 'suspect' || s === 'dead' || s === 'left') count[s]++
    }
    const alive = nodes.filter((n) => n.live)
    const tasks = await this.tasks({})
    const byState: Record<string, number> = {}
    let claimedMillis = 0
    let claimedBytes = 0
    let usedMillis: number | null = null
    let usedBytes: number | null = null
    for (const t of tasks) {
      byState[t.state] = (byState[t.state] ?? 0) + 1
      const spec = readSpec(this.state.records.job(t.job)?.spec)
      if (spec !== null) { claimedMillis += spec.cpuMillis; claimedBytes += spec.memoryBytes }
      if (t.usage !== null) {
        usedBytes = (usedBytes ?? 0) + t.usage.memoryBytes
        // CPU in use: the average since the task started, in millicores.
        const seconds = Math.max(1, (t.usage.sampledAt - (t.startedAt ?? t.usage.sampledAt)) / 1000)
        usedMillis = (usedMillis ?? 0) + Math.round(t.usage.cpuSeconds * 1000 / seconds)
      }
    }
    const jobs: Record<string, number> = {}
    const degraded: string[] = []
    for (const j of this.jobs(true)) {
      jobs[j.status] = (jobs[j.status] ?? 0) + 1
      if (j.status !== 'degraded') continue
      degraded.push(`job ${j.id}: ${j.counts.running ?? 0} of ${j.count} instances running`)
      for (const i of this.job(j.id).instances) {
        if (i.state === 'restarting' && i.restarts >= 3) degraded.push(`task ${i.id} is in a crash loop on ${i.node}: ${i.restarts} restarts, last ${i.exit?.reason ?? 'exit unknown'}`)
      }
    }
    for (const [id, p] of this.reconciler.pendingAll()) if (degraded.length < 20) degraded.push(`task ${id} is pending: ${p.message}`)
    if (count.dead > 0) degraded.push(`${count.dead} node(s) dead`)
    if (!majority) degraded.push('this node reaches only a minority of the cluster: it takes over no tasks of unreachable nodes')
    if (isolationNone.length > 0) degraded.push(`${isolationNone.length} node(s) run tasks without isolation (no cgroups): no CPU or memory limits`)
    return {
      self: this.self,
      majority,
      nodes: count,
      cpu: { totalMillis: sum(alive.map((n) => n.cpuMillis)), claimedMillis, usedMillis },
      memory: { totalBytes: sum(alive.map((n) => n.memoryBytes)), claimedBytes, usedBytes },
      tasks: byState,
      jobs,
      degraded,
    }
  }
}

// --- what the API shows of a job's environment ------------------------------------

/**
 * What every env value reads as in whatever the API shows (job views, job
 * records in the event stream, the executor's tasks): people put passwords
 * there, and the API has no users yet to show them to. The keys are shown;
 * the executor gets the real values from the shared state, never from these
 * views. A later issue shows the values to the job's owner.
 */
export const REDACTED = '(redacted)'

/** The keys of an environment, every value replaced by REDACTED. */
export function redactEnv (env: Readonly<Record<string, unknown>>): Record<string, string> {
  return Object.fromEntries(Object.keys(env).map((key) => [key, REDACTED]))
}

/** A job record as the event stream sends it: its raw spec's env redacted (an env of another shape becomes REDACTED whole). */
export function redactJobRecord (record: JobRecord): JobRecord {
  if (!('env' in record.spec)) return record
  const env = record.spec.env
  const redacted = env !== null && typeof env === 'object' && !Array.isArray(env) ? redactEnv(env) : REDACTED
  return { ...record, spec: { ...record.spec, env: redacted } }
}

/** An attempt as the executor's view in the API shows it: its env redacted. */
export function redactAttempt (attempt: AttemptInfo): AttemptInfo {
  return { ...attempt, spec: { ...attempt.spec, env: redactEnv(attempt.spec.env) } }
}

function jobStatus (record: JobRecord, spec: JobSpec | null, instances: InstanceView[]): JobStatus {
  const live = instances.filter((i) => i.state !== 'pending' && CLAIM_STATUS[i.state] === 'active')
  if (record.desired === 'stopped') return live.length > 0 ? 'stopping' : 'stopped'
  if (spec === null) return 'pending'
  if (spec.cron !== undefined) {
    if (instances.some((i) => i.state === 'restarting' && i.restarts >= 3)) return 'degraded'
    return live.some((i) => RUNNING_LIKE.has(i.state)) ? 'running' : 'scheduled'
  }
  const current = instances.filter((i) => !/@/.test(i.id))
  if (record.type === 'batch' && current.length > 0 && current.every((i) => i.state === 'exited' || i.state === 'failed')) {
    return current.some((i) => i.state === 'failed') ? 'failed' : 'completed'
  }
  const running = current.filter((i) => i.state === 'running').length
  const crashLoop = current.some((i) => i.state === 'restarting' && i.restarts >= 3)
  if (current.some((i) => i.state === 'pending')) return running > 0 && record.type === 'service' ? 'degraded' : 'pending'
  if (crashLoop) return 'degraded'
  if (record.type === 'service' && running < spec.count) return current.some((i) => i.state === 'restarting') ? 'degraded' : 'pending'
  return 'running'
}

function latest (claims: readonly ClaimRecord[]): ClaimRecord | undefined {
  let best: ClaimRecord | undefined
  for (const c of claims) if (best === undefined || c.generation > best.generation || (c.generation === best.generation && c.since > best.since)) best = c
  return best
}

/** Instances in index order: web.2 before web.10; cron runs by tick. */
function compareInstances (a: string, b: string): number {
  const ma = /^(.*)\.(\d+)$/.exec(a)
  const mb = /^(.*)\.(\d+)$/.exec(b)
  if (ma !== null && mb !== null && ma[1] === mb[1]) return Number(ma[2]) - Number(mb[2])
  return a < b ? -1 : a > b ? 1 : 0
}

function mib (bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`
}

function sum (values: number[]): number {
  return values.reduce((a, b) => a + b, 0)
}

