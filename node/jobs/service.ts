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
import { DEFAULT_NAMESPACE, jobProblem, namespaceOf, newJobRecord, scaledJob, stoppedJob } from './records.ts'
import { mayRunAs, permits } from '../../access/verify.ts'
import type { AccessBook } from '../access.ts'
import { type Caller, RequestAuth } from '../auth.ts'
import { type Amount, amountText, limitText } from '../../placement/escrow.ts'
import { bytesText, cpuText } from '../../placement/reasons.ts'
import { JobSpecError, type JobSpec, normalizeJob, readSpec } from './spec.ts'
import type { ExplainView, HistoryView, InstanceView, JobStatus, JobSummary, JobView, PoolStatus, TaskDetail, TaskView } from './types.ts'

/** What the service asks of the nodes that run tasks: the task RPC on a node, the simulated network in testnet/sim. */
export type TaskPeers = Pick<TaskRpc, 'usage' | 'kill' | 'logs'>

/** What a caller names a namespace with: absent is the default one, '*' every one the caller may read. */
export type NamespaceRef = string | undefined

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
  /** The users, grants and quotas; null on a node without users (no root key). */
  access?: AccessBook | null
  /** Asks the node that runs a task to kill it, with the caller's signed request (node/rpc.ts). */
  killOn?: (node: string, task: string, caller: Caller | null) => Promise<void>
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
  private readonly access: AccessBook | null
  private readonly killOn: (node: string, task: string, caller: Caller | null) => Promise<void>

  constructor (init: JobServiceInit) {
    this.access = init.access ?? null
    this.killOn = init.killOn ?? (async (node, task) => { await init.peers.kill(node, task) })
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

  /**
   * Validates and stores a job; resolves once it is on this node's disk. With a
   * caller (a node with users), the record carries the caller's signed request,
   * which every node checks before it runs the job.
   */
  async submit (input: unknown, caller: Caller | null = null, namespaceRef?: NamespaceRef): Promise<JobView> {
    const namespace = this.namespace(namespaceRef)
    RequestAuth.need(caller, 'submit', namespace)
    let job
    try {
      job = normalizeJob(input)
    } catch (err) {
      if (err instanceof JobSpecError) throw new InputError('BAD_JOB_SPEC', err.message)
      throw err
    }
    if (caller !== null && job.spec.runAs !== undefined && !mayRunAs(caller.grant, job.spec.runAs)) {
      throw new MurmurError('FORBIDDEN', `user ${caller.name} may not run tasks as uid ${job.spec.runAs}${caller.grant.runAs.length > 0 ? ` (only as ${caller.grant.runAs.join(', ')})` : ''}; leave runAs out to run as an unprivileged uid of the node's own, or an admin grants it: murmur user add ${caller.name} --run-as ${job.spec.runAs} …`, 1, 403)
    }
    this.checkFits(job.spec)
    this.checkQuota(namespace, job.spec, job.spec.count)
    const taken = this.state.records.jobs().find((j) => j.name === job.name && namespaceOf(j) === namespace && j.desired === 'running' && j.finishedAt === undefined)
    if (taken !== undefined) {
      throw new MurmurError('NAME_TAKEN', `job ${job.name} already runs in namespace ${namespace} (${taken.id}); stop it first ('murmur job stop ${job.name}') or give the new one another name`, 2, 409)
    }
    const signed = caller?.proof == null ? undefined : { namespace, proof: { ...caller.proof, body: caller.body } }
    const record = newJobRecord(job, this.self, this.clock.now(), this.newId(), signed)
    if (signed === undefined && namespace !== DEFAULT_NAMESPACE) record.namespace = namespace
    this.checkSigned(record)
    await this.state.write((s) => { s.putJob(record) })
    this.reconciler.schedule()
    this.log.info({ job: record.id, type: record.type, count: job.spec.count, namespace, user: caller?.name }, 'job submitted')
    return this.view(record, caller)
  }

  /** A namespace a caller named, or the default one. */
  private namespace (ref: NamespaceRef): string {
    if (ref === undefined || ref === '') return DEFAULT_NAMESPACE
    if (ref === '*') throw new InputError('BAD_NAMESPACE', "'*' names every namespace, and a job lives in one; give --namespace <name>")
    return ref
  }

  /** A record this node is about to write passes the checks every node will make (a mismatch here is a bug, not the caller's). */
  private checkSigned (record: JobRecord): void {
    const problem = jobProblem(record, this.access?.trust ?? null)
    if (problem !== null) throw new MurmurError('UNSIGNABLE', `the job record would be refused by the other nodes: ${problem}`, 1, 500)
  }

  /**
   * A job that could never run within its namespace's quota, even alone, is refused
   * now, naming the quota and the use; one that fits the quota but not what the
   * namespace runs now waits (placement holds it: node/reconcile/decide.ts).
   */
  private checkQuota (namespace: string, spec: JobSpec, count: number): void {
    const limit = this.access?.limit(namespace) ?? null
    if (limit === null) return
    const ask: Amount = { cpuMillis: spec.cpuMillis * count, memoryBytes: spec.memoryBytes * count, instances: count }
    const over: string[] = []
    if (limit.cpuMillis !== null && ask.cpuMillis > limit.cpuMillis) over.push(`cpu ${cpuText(ask.cpuMillis)} (${count} × ${cpuText(spec.cpuMillis)}) of ${cpuText(limit.cpuMillis)}`)
    if (limit.memoryBytes !== null && ask.memoryBytes > limit.memoryBytes) over.push(`memory ${bytesText(ask.memoryBytes)} (${count} × ${bytesText(spec.memoryBytes)}) of ${bytesText(limit.memoryBytes)}`)
    if (limit.instances !== null && ask.instances > limit.instances) over.push(`${count} instances of ${limit.instances}`)
    if (over.length === 0) return
    const use = this.usage().get(namespace)?.use ?? { cpuMillis: 0, memoryBytes: 0, instances: 0 }
    throw new MurmurError('OVER_QUOTA', `namespace ${namespace} could never run this job: it asks for ${over.join(', ')} (quota ${limitText(limit)}; in use now ${amountText(use)}); ask for less, or an admin raises the quota: murmur namespace quota ${namespace} …`, 2, 403)
  }

  /** Every namespace with jobs: how many, and what their active instances hold, cluster-wide as this node sees it. */
  usage (): Map<string, { jobs: number, use: Amount }> {
    const out = new Map<string, { jobs: number, use: Amount }>()
    const jobs = new Map<string, JobRecord>()
    for (const j of this.state.records.jobs()) {
      jobs.set(j.id, j)
      const ns = namespaceOf(j)
      let entry = out.get(ns)
      if (entry === undefined) out.set(ns, entry = { jobs: 0, use: { cpuMillis: 0, memoryBytes: 0, instances: 0 } })
      entry.jobs++
    }
    for (const t of this.state.records.tasks()) {
      if (!isActiveState(t.state)) continue
      const job = jobs.get(t.job)
      const spec = job === undefined ? null : readSpec(job.spec)
      if (job === undefined || spec === null) continue
      const entry = out.get(namespaceOf(job))!
      const use = entry.use
      entry.use = { cpuMillis: use.cpuMillis + spec.cpuMillis, memoryBytes: use.memoryBytes + spec.memoryBytes, instances: use.instances + 1 }
    }
    return out
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

  /** The jobs of a namespace (the default one unless named; '*': every one the caller may read). */
  jobs (all: boolean, caller: Caller | null = null, namespaceRef?: NamespaceRef): JobSummary[] {
    const every = namespaceRef === '*'
    const namespace = every ? undefined : this.namespace(namespaceRef)
    if (namespace !== undefined) RequestAuth.need(caller, 'read', namespace)
    const out: JobSummary[] = []
    for (const record of this.state.records.jobs()) {
      const ns = namespaceOf(record)
      if (namespace !== undefined ? ns !== namespace : !this.mayRead(caller, ns)) continue
      const view = this.view(record)
      if (!all && (view.status === 'stopped' || view.status === 'completed' || view.status === 'failed')) continue
      out.push({ id: view.id, name: view.name, namespace: ns, type: view.type, desired: view.desired, status: view.status, submittedAt: view.submittedAt, counts: view.counts, count: view.spec?.count ?? 0 })
    }
    return out.sort((a, b) => b.submittedAt - a.submittedAt || a.id.localeCompare(b.id))
  }

  /**
   * A job by id, or by name within a namespace: the latest job of that name still
   * wanted running, else the latest. With a caller, only a job it may read.
   */
  find (ref: string, caller: Caller | null = null, namespaceRef?: NamespaceRef): JobRecord {
    const found = this.lookup(ref, namespaceRef)
    if (found !== undefined && this.mayRead(caller, namespaceOf(found))) return found
    throw new MurmurError('NO_SUCH_JOB', `no job '${ref}'${namespaceRef === undefined || namespaceRef === '*' ? '' : ` in namespace ${namespaceRef}`} that you may see; 'murmur job list --all' lists the jobs`, 2, 404)
  }

  private lookup (ref: string, namespaceRef: NamespaceRef): JobRecord | undefined {
    const byId = this.state.records.job(ref)
    if (byId !== undefined) return byId
    const namespace = namespaceRef === '*' ? undefined : this.namespace(namespaceRef)
    const named = this.state.records.jobs().filter((j) => j.name === ref && (namespace === undefined || namespaceOf(j) === namespace))
      .sort((a, b) => Number(b.desired === 'running') - Number(a.desired === 'running') || b.submittedAt - a.submittedAt)
    return named[0]
  }

  /** Whether a caller may read a namespace's jobs (every caller on a node without users). */
  private mayRead (caller: Caller | null, namespace: string): boolean {
    return caller === null || permits(caller.grant, 'read', namespace) === null
  }

  job (ref: string, caller: Caller | null = null, namespaceRef?: NamespaceRef): JobView { return this.view(this.find(ref, caller, namespaceRef), caller) }

  /** Stops a job everywhere: a higher version with desired 'stopped', which no older record can undo. */
  async stop (ref: string, caller: Caller | null = null, namespaceRef?: NamespaceRef): Promise<JobView> {
    const record = this.find(ref, caller, namespaceRef)
    RequestAuth.need(caller, 'submit', namespaceOf(record))
    if (record.desired === 'stopped') return this.view(record, caller)
    const stopped = stoppedJob(record, this.clock.now(), caller?.proof ?? undefined)
    this.checkSigned(stopped)
    await this.state.write((s) => { s.putJob(stopped) })
    this.reconciler.schedule()
    this.log.info({ job: record.id, user: caller?.name }, 'job stopped')
    return this.view(stopped, caller)
  }

  /** A service with a new instance count: new instances are placed, those past the count stopped, everywhere. */
  async scale (ref: string, count: unknown, caller: Caller | null = null, namespaceRef?: NamespaceRef): Promise<JobView> {
    const record = this.find(ref, caller, namespaceRef)
    RequestAuth.need(caller, 'submit', namespaceOf(record))
    let scaled: JobRecord
    try {
      if (typeof count !== 'number') throw new JobSpecError(`count must be a number, got ${count === undefined ? 'nothing' : JSON.stringify(count)}; send {"count": 3}`)
      scaled = scaledJob(record, count, this.clock.now(), caller?.proof == null ? undefined : { ...caller.proof, body: caller.body })
    } catch (err) {
      if (err instanceof JobSpecError) throw new InputError('BAD_SCALE', err.message)
      throw err
    }
    const spec = readSpec(scaled.spec)!
    this.checkFits(spec)
    this.checkQuota(namespaceOf(record), spec, spec.count)
    this.checkSigned(scaled)
    await this.state.write((s) => { s.putJob(scaled) })
    this.reconciler.schedule()
    this.log.info({ job: record.id, from: readSpec(record.spec)?.count, to: spec.count, user: caller?.name }, 'job scaled')
    return this.view(scaled, caller)
  }

  history (ref: string, caller: Caller | null = null, namespaceRef?: NamespaceRef): HistoryView {
    const record = this.find(ref, caller, namespaceRef)
    const tasks = this.state.records.taskIdsOf(record.id).flatMap((id) => this.state.records.taskClaims(id))
      .sort((a, b) => (a.startedAt ?? a.since) - (b.startedAt ?? b.since) || a.id.localeCompare(b.id) || a.generation - b.generation)
    return { job: this.view(record, caller), tasks }
  }

  /**
   * A job with the state of each of its instances, as this node sees the cluster.
   * Env values are shown to the user who submitted the job and to admins only.
   */
  view (record: JobRecord, caller: Caller | null = null): JobView {
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
      namespace: namespaceOf(record),
      submittedByUser: record.proof?.grant.name ?? null,
      spec: spec === null ? null : { ...spec, env: this.mayReadEnv(caller, record) ? spec.env : redactEnv(spec.env) },
      counts,
      instances,
      nextRun,
      exitCode: status === 'completed' ? 0 : status === 'failed' ? (failedExit?.code != null && failedExit.code !== 0 ? failedExit.code : 1) : null,
    }
  }

  /** The job's own user and admins see its env values; nobody on a node without users (it cannot tell who asks). */
  private mayReadEnv (caller: Caller | null, record: JobRecord): boolean {
    if (caller === null) return false
    return caller.grant.role === 'admin' || (record.proof !== undefined && record.proof.grant.name === caller.name && record.proof.grant.key === caller.grant.key)
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
  async tasks (filter: { job?: string | undefined, node?: string | undefined, all?: boolean, namespace?: NamespaceRef }, caller: Caller | null = null): Promise<TaskView[]> {
    const jobId = filter.job === undefined ? undefined : this.find(filter.job, caller, filter.namespace).id
    const namespace = filter.namespace === undefined || filter.namespace === '*' ? undefined : filter.namespace
    if (namespace !== undefined) RequestAuth.need(caller, 'read', namespace)
    const live = this.liveness()
    const ids = jobId !== undefined ? this.state.records.taskIdsOf(jobId) : new Set(this.state.records.tasks().map((t) => t.id))
    const out: TaskView[] = []
    const readable = new Map<string, boolean>()
    for (const id of ids) {
      const claims = this.state.records.taskClaims(id)
      const job = claims[0]?.job
      if (job !== undefined && jobId === undefined) {
        let ok = readable.get(job)
        if (ok === undefined) {
          const record = this.state.records.job(job)
          const ns = record === undefined ? DEFAULT_NAMESPACE : namespaceOf(record)
          readable.set(job, ok = (namespace === undefined || ns === namespace) && this.mayRead(caller, ns))
        }
        if (!ok) continue
      }
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

  task (id: string, caller: Caller | null = null): TaskDetail {
    const claims = this.state.records.taskClaims(id)
    if (claims.length === 0) throw noTask(id)
    if (!this.mayRead(caller, this.namespaceOfTask(id))) throw noTask(id)
    const outcome = resolveClaims(id, claims.map(claimOf), this.liveness())
    const holder = outcome.kind === 'held' ? outcome.holder.node : outcome.kind === 'finished' ? outcome.by.node : latest(claims)!.node
    const record = claims.find((c) => c.node === holder)!
    return { ...this.taskView(record), claims, attempt: attemptId(id, record.restarts) }
  }

  /** The namespace of the job an instance belongs to, as this node knows the job (the default one if not). */
  namespaceOfTask (id: string): string {
    const job = this.state.records.taskClaims(id)[0]?.job ?? jobOfInstance(id)
    const record = this.state.records.job(job)
    return record === undefined ? DEFAULT_NAMESPACE : namespaceOf(record)
  }

  /**
   * Kills an instance where it runs. The node that runs it checks the caller's
   * signed request itself (node/rpc.ts) before it stops anything.
   */
  async kill (id: string, caller: Caller | null = null): Promise<{ task: string, node: string }> {
    const task = this.task(id, caller)
    RequestAuth.need(caller, 'submit', this.namespaceOfTask(id))
    if (!isActiveState(task.state)) throw new MurmurError('TASK_NOT_RUNNING', `task ${id} is not running (it is ${task.state} on ${task.node})`, 2, 409)
    if (task.node === this.self) this.reconciler.kill(id)
    else await this.killOn(task.node, id, caller)
    this.log.info({ task: id, node: task.node, user: caller?.name }, 'task killed on request')
    return { task: id, node: task.node }
  }

  async explain (id: string, caller: Caller | null = null): Promise<ExplainView> {
    if (caller !== null) this.task(id, caller)
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
    for (const j of this.jobs(true, null, '*')) {
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
 * What every env value reads as where the API shows it to someone other than the
 * job's own user or an admin (job views), and everywhere in the event stream's job
 * records and the executor's tasks: people put passwords there. The keys are shown;
 * the executor gets the real values from the shared state, never from these views.
 */
export const REDACTED = '(redacted)'

/** The keys of an environment, every value replaced by REDACTED. */
export function redactEnv (env: Readonly<Record<string, unknown>>): Record<string, string> {
  return Object.fromEntries(Object.keys(env).map((key) => [key, REDACTED]))
}

/** A job record as the event stream sends it: its raw spec's env redacted (an env of another shape becomes REDACTED whole), and the spec as submitted. */
export function redactJobRecord (record: JobRecord): JobRecord {
  // The submission's proof holds the spec as its user sent it, env and all: its body goes too.
  const proof = record.proof?.body === undefined ? record.proof : { ...record.proof, body: REDACTED }
  const base = proof === undefined ? record : { ...record, proof }
  if (!('env' in record.spec)) return base
  const env = record.spec.env
  const redacted = env !== null && typeof env === 'object' && !Array.isArray(env) ? redactEnv(env) : REDACTED
  return { ...base, spec: { ...record.spec, env: redacted } }
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


