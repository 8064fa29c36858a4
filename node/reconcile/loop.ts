// The reconcile loop of one node: runs `decide` on every change of the shared
// state or of membership (and on a short timer, for cron ticks, backoffs and
// claim timeouts), and carries out what it says: claim and start, stop, record
// the exits, restart with backoff, ask other nodes whether they run an instance
// (for backups) and answer them. It writes only this node's claims. No node is
// in charge: every node runs the same loop over its own view.

import type { Logger } from 'pino'
import type { JobRecord, ClaimRecord, ClaimState } from '../../crdt/schema.ts'
import type { StateChange } from '../../crdt/state.ts'
import type { Member } from '../../membership/types.ts'
import type { NodeView } from '../../placement/types.ts'
import { type Clock, type Timer, systemClock } from '../clock.ts'
import { MurmurError } from '../errors.ts'
import type { TaskExit, AttemptInfo, TaskRunner, AttemptSpec } from '../executor/types.ts'
import { finishedJob } from '../jobs/records.ts'
import { type Gift, type Limit, type ShareRow, ZERO, handOver, isZero, withGift } from '../../placement/escrow.ts'
import { attemptId, instanceId, jobOfInstance, parseAttempt } from '../jobs/instances.ts'
import { type JobSpec, readSpec, restartDelay } from '../jobs/spec.ts'
import type { StateService } from '../state.ts'
import { RECONCILE_CONFIG, type ReconcileConfig } from './config.ts'
import { type Action, CLAIM_STATUS, type ClaimAnswer, type Decisions, type JobEntry, answerFor, decide, describeAnswer, isActiveState, majority } from './decide.ts'

type Phase = 'starting' | 'running' | 'backoff' | 'stopping'

/** An instance this node holds: what runs (or is about to) and under which attempt. */
interface Local {
  instance: string
  job: string
  generation: number
  /** Restarts in place so far: the attempt is `attemptId(instance, restarts)`. */
  restarts: number
  /** Failures in a row, for the backoff; reset by a long run. */
  streak: number
  phase: Phase
  timer: Timer | null
  startedAt: number | null
  /** Resolves when a stop under way is done. */
  stopped: Promise<void> | null
  /** Claimed, but the claim is not recorded yet (it goes with the start, or after CLAIM_WRITE_DELAY_MS). */
  unwritten: boolean
}

/**
 * A claim is recorded together with its task's start when the start is this quick:
 * one update instead of two. The other nodes computed the same placement, so they
 * do not take the instance meanwhile; a backup needs evidence against this node.
 */
const CLAIM_WRITE_DELAY_MS = 250

/** A suspicion this old is taken for a cut, not a moment of load (see view). */
const LONG_SUSPECT_MS = 5_000

/** Instances in one question to one node (node/rpc.ts splits it further to fit its frames). */
const ASK_INSTANCES_MAX = 500

/**
 * Asks `node` whether it will run each of `instances` (node/rpc.ts, op `will-run`):
 * its answers by instance. Rejects if the node cannot be reached or does not
 * answer; `signal` aborts it once the loop stops waiting.
 */
export type AskFn = (node: string, instances: string[], signal: AbortSignal) => Promise<Record<string, ClaimAnswer>>

/** What the loop needs of the state service: the document, and writes that resolve once on disk. */
export type StateWriter = Pick<StateService, 'records' | 'write'>

export interface ReconcilerInit {
  self: string
  state: StateWriter
  /** The task runner: the executor in a node, a simulated one in testnet/sim. */
  executor: TaskRunner
  members: () => Member[]
  log: Logger
  config?: Partial<ReconcileConfig>
  /** The system's by default; testnet/sim gives each node a virtual one. */
  clock?: Clock
  /**
   * How this node asks another whether it runs an instance (TaskRpc.willRun, answered
   * by the other node's `answer`). Without it a backup claims on long suspicions and
   * recorded refusals only, and on the long bound (`claimBoundMs`).
   */
  ask?: AskFn
  /**
   * Namespace quotas from the state (node/access.ts): each namespace's limit and
   * ledger. Without it nothing is held to a quota.
   */
  quota?: QuotaBooks
}

/** What the loop reads of the quotas: limits and every node's latest ledger row, and the namespaces that have any. */
export interface QuotaBooks {
  limit: (namespace: string) => Limit | null
  rows: (namespace: string) => readonly ShareRow[]
  namespaces: () => readonly string[]
}

export class Reconciler {
  readonly config: ReconcileConfig
  private readonly self: string
  private readonly state: StateWriter
  private readonly executor: TaskRunner
  private readonly members: () => Member[]
  private readonly log: Logger
  private readonly clock: Clock
  private readonly local = new Map<string, Local>()
  private readonly openSince = new Map<string, number>()
  private readonly holdOff = new Map<string, number>()
  private readonly ask: AskFn | undefined
  /** The answers of the nodes asked, by node and instance, with when they came. */
  private readonly answers = new Map<string, Map<string, { answer: ClaimAnswer, at: number }>>()
  /** Instances to ask each node about, in its next question. */
  private readonly askQueue = new Map<string, Set<string>>()
  /** The nodes with a question under way, and when the last one went out. */
  private readonly asking = new Set<string>()
  private readonly lastAsked = new Map<string, number>()
  /** Own claim records waiting to be written, in one transaction per flush. */
  private readonly outbox = new Map<string, ClaimRecord>()
  /** Batch jobs to mark finished, written with the claims. */
  private readonly jobOutbox = new Map<string, JobRecord>()
  /** This node's ledger rows changed by its gifts and not yet stored, by namespace: they count at once. */
  private readonly shareOutbox = new Map<string, ShareRow>()
  private readonly quota: QuotaBooks | undefined
  private outboxTimer: Timer | null = null
  private last: Decisions = { actions: [], open: [], pending: new Map(), errors: [], roles: new Map() }
  /** When this node first saw itself a duplicate of each instance: it stops its copy only if that lasts. */
  private readonly duplicateSince = new Map<string, number>()
  /** Jobs whose records a pass could not decide on, already logged. */
  private readonly reported = new Set<string>()
  private lastMajority = true
  private scheduled = false
  /** Jobs skipped by passes until a change of their records (see isInert). */
  private readonly inert = new Set<string>()
  private lastPassEnd = 0
  /** When this node's loop started (constructed, until start()). */
  private startedAt: number
  private timer: Timer | null = null
  private closed = false
  private readonly unsubscribe: Array<() => void> = []
  readonly stats = { passes: 0, claims: 0, backupClaims: 0, starts: 0, stops: 0, restarts: 0, questions: 0, unanswered: 0, lastPassMs: 0 }

  constructor (init: ReconcilerInit) {
    this.self = init.self
    this.state = init.state
    this.executor = init.executor
    this.members = init.members
    this.log = init.log
    this.clock = init.clock ?? systemClock
    this.ask = init.ask
    this.quota = init.quota
    this.startedAt = this.clock.now()
    this.config = { ...RECONCILE_CONFIG, ...init.config }
  }

  /**
   * Takes over what the executor adopted from the node's previous life, then
   * starts the loop. Call after the first sync and the executor's recovery.
   */
  start (onChange: (listener: (change?: StateChange) => void) => () => void): void {
    this.startedAt = this.clock.now()
    for (const info of this.executor.list()) {
      if (info.phase === 'ended') continue
      const { instance, restarts } = parseAttempt(info.id)
      const claim = this.ownClaim(instance)
      if (claim === undefined || !isActiveState(claim.state)) continue
      this.local.set(instance, { instance, job: claim.job, generation: claim.generation, restarts, streak: 0, phase: info.phase === 'running' ? 'running' : 'stopping', timer: null, startedAt: info.startedAt, stopped: null, unwritten: false })
    }
    this.executor.on('exit', this.onExit)
    this.unsubscribe.push(() => { this.executor.off('exit', this.onExit) })
    this.unsubscribe.push(onChange((change) => {
      if (change?.kind === 'jobs') for (const id of change.ids) this.inert.delete(id)
      if (change?.kind === 'tasks') for (const id of change.ids) this.inert.delete(jobOfInstance(id))
      this.schedule()
    }))
    this.timer = this.clock.setInterval(() => { this.schedule() }, this.config.intervalMs)
    this.schedule()
  }

  /** Stops the loop (not the tasks: the node's shutdown decides about those). Writes what is still queued. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.clock.clearInterval(this.timer)
    for (const u of this.unsubscribe) u()
    for (const l of this.local.values()) this.clock.clearTimeout(l.timer)
    await Promise.allSettled([...this.local.values()].map(async (l) => await l.stopped))
    await this.flush()
  }

  /**
   * The node leaves: no more passes; every local instance is stopped (within
   * `graceMs`) and its claim recorded `killed`, so the others take it at once.
   */
  async releaseAll (why: string, graceMs: number): Promise<void> {
    this.closed = true
    this.clock.clearInterval(this.timer)
    for (const u of this.unsubscribe) u()
    await Promise.allSettled([...this.local.keys()].map(async (id) => { await this.stop(id, why, 'killed', graceMs) }))
    // Only once nothing runs here any more: what runs holds its rights.
    if (this.local.size === 0) this.handOver()
    await this.flush()
  }

  /** Why an instance is pending, as the last pass saw it. */
  pending (instance: string): { job: string, message: string } | undefined {
    return this.last.pending.get(instance)
  }

  pendingAll (): ReadonlyMap<string, { job: string, message: string }> { return this.last.pending }
  get majority (): boolean { return this.lastMajority }

  /** Whether this node runs (or is starting, or backing off) an instance; its current attempt id. */
  attempt (instance: string): string | undefined {
    const l = this.local.get(instance)
    return l === undefined ? undefined : attemptId(instance, l.restarts)
  }

  /**
   * What this node answers another that asks whether it will run these instances
   * (node/rpc.ts, op `will-run`): from what it runs, what it holds off, and its last pass.
   */
  answer (instances: readonly string[]): Record<string, ClaimAnswer> {
    const out: Record<string, ClaimAnswer> = {}
    const view = {
      self: this.self,
      local: (id: string) => this.local.get(id)?.phase,
      heldOff: (id: string) => (this.holdOff.get(id) ?? 0) > this.clock.now(),
      claims: (id: string) => this.claimsOf(id),
      last: this.last,
    }
    for (const id of instances) if (!Object.hasOwn(out, id)) out[id] = answerFor(id, view)
    return out
  }

  /**
   * Stops an instance this node holds, on a user's request: a service instance
   * is given up here (another claim replaces it), a batch or cron run counts as
   * failed, so it is not run again.
   */
  kill (instance: string): void {
    const l = this.local.get(instance)
    if (l === undefined) throw new MurmurError('NOT_HERE', `task ${instance} does not run on this node`, 1, 404)
    const job = this.state.records.job(l.job)
    const service = job?.type === 'service'
    // Answered once the stop has begun: it may take the task's grace period. The replacement should come
    // from elsewhere (a backup claims on the declined record): this node holds off from the moment the kill is recorded.
    this.stop(instance, 'killed on request', service ? 'killed' : 'failed', undefined, true)
      .catch((err: Error) => { this.log.warn({ task: instance, err: err.message }, 'could not kill a task') })
  }

  /** The view a pass decides on: the nodes with records, alive as membership sees them. */
  view (): { nodes: NodeView[], majority: boolean, memberState: Map<string, string>, longSuspects: Set<string>, joining: Set<string> } {
    const all = this.members()
    const now = this.clock.now()
    const memberState = new Map(all.map((m) => [m.id, m.state]))
    // Suspect for longer than a suspicion lasts on a working network: a node cut off keeps the others
    // suspect for the whole cut; under load, suspicions come and go within a second or two, and must
    // not change the placement only some nodes compute.
    const longSuspects = new Set(all.filter((m) => m.state === 'suspect' && now - m.stateSinceMs >= LONG_SUSPECT_MS).map((m) => m.id))
    // Only cluster nodes count in the majority: members with a record in the shared state. Anyone
    // can make SWIM hear of members that do not exist, and those would die and count against every
    // side (found by the reliability suite's forged claims).
    const state = this.state.records
    const members: Array<Pick<Member, 'id' | 'state' | 'stateSinceMs'>> = all.filter((m) => m.id === this.self || state.node(m.id) !== undefined)
    const nodes: NodeView[] = this.state.records.nodes().map((n) => {
      const s = n.id === this.self ? 'alive' : memberState.get(n.id)
      // A node the state knows and membership does not (a node restarted during a partition learns
      // only its own side's members: SWIM takes no news of members it never knew) counts in the
      // majority as dead since this node started (found by testnet/sim).
      if (s === undefined) members.push({ id: n.id, state: 'dead', stateSinceMs: this.startedAt })
      return { id: n.id, live: s === 'alive' || s === 'suspect', cpuMillis: n.cpuMillis, memoryBytes: n.memoryBytes, labels: n.labels }
    })
    // Alive, no record yet, and seen for a moment only: a node that joined and has not written its record.
    const joining = new Set(all.filter((m) => m.id !== this.self && m.state === 'alive' && state.node(m.id) === undefined && now - m.stateSinceMs < this.config.recordWaitMs).map((m) => m.id))
    return { nodes, majority: majority(members, now, this.config.stableWindowMs), memberState, longSuspects, joining }
  }

  /**
   * A pass soon: at once if the last one ended long enough ago, else after a gap
   * of twice its duration (at least 2 ms), so that a burst of changes (hundreds of
   * gossip updates a second) costs a bounded share of the event loop.
   */
  schedule (): void {
    // Before start the node has not judged its previous life's tasks, nor does it hear their exits:
    // a pass then (a job submitted while the node boots) would start what nobody records.
    if (this.scheduled || this.closed || this.timer === null) return
    this.scheduled = true
    const wait = this.lastPassEnd + Math.max(2, 2 * this.stats.lastPassMs) - this.clock.monotonic()
    const run = (): void => {
      this.scheduled = false
      if (this.closed) return
      try {
        this.pass()
      } catch (err) {
        this.log.error({ err }, 'reconcile pass failed')
      }
      this.lastPassEnd = this.clock.monotonic()
    }
    if (wait <= 0) this.clock.setImmediate(run)
    else this.clock.setTimeout(run, wait, true)
  }

  private pass (): void {
    const started = this.clock.monotonic()
    const now = this.clock.now()
    const s = this.state.records
    // Jobs that can do nothing more (finished or stopped, nothing live) are skipped until a change touches them.
    const jobs: JobEntry[] = []
    for (const id of s.jobIds()) {
      if (this.inert.has(id)) continue
      const record = s.job(id)
      if (record !== undefined) jobs.push({ record, spec: readSpec(record.spec) })
    }
    // What this node holds or queued and the state does not show yet counts too.
    const extra = new Map<string, Set<string>>()
    const add = (job: string, id: string): void => {
      let set = extra.get(job)
      if (set === undefined) extra.set(job, set = new Set())
      set.add(id)
    }
    for (const l of this.local.values()) add(l.job, l.instance)
    for (const r of this.outbox.values()) add(r.job, r.id)
    const claimedInstances = (job: string): Iterable<string> => {
      const ids = s.taskIdsOf(job)
      const more = extra.get(job)
      return more === undefined ? ids : new Set([...ids, ...more])
    }
    for (const [id, until] of this.holdOff) if (until <= now) this.holdOff.delete(id)
    const { nodes, majority: side, longSuspects, joining } = this.view()
    this.expireAnswers(now)
    // Every pass asks afresh what it still needs to know: what a node's question did not carry is asked again.
    this.askQueue.clear()
    if (side !== this.lastMajority) {
      this.log.warn({ majority: side }, side ? 'this side of the cluster holds the majority again: it takes over tasks of unreachable nodes' : 'this node reaches only a minority of the cluster: it keeps its tasks and places new jobs, but takes over no others')
    }
    this.lastMajority = side
    const decisions = decide({
      self: this.self,
      now,
      jobs,
      claims: (id) => this.claimsOf(id),
      claimedInstances,
      nodes,
      majority: side,
      suspect: longSuspects,
      joining,
      local: new Set(this.local.keys()),
      openSince: (id) => this.openSince.get(id),
      holdOff: new Set(this.holdOff.keys()),
      canAsk: this.ask !== undefined,
      answers: (node, id) => this.answers.get(node)?.get(id)?.answer,
      claimTimeoutMs: this.config.claimTimeoutMs,
      claimBoundMs: this.config.claimBoundMs,
      cronDeadlineMs: this.config.cronDeadlineMs,
      cronCatchUpMs: this.config.cronCatchUpMs,
      ...(this.quota === undefined ? {} : { quota: { limit: this.quota.limit, rows: (ns: string) => this.rows(ns), namespaces: this.quota.namespaces } }),
    })
    for (const e of decisions.errors) {
      if (this.reported.has(e.job)) continue
      this.reported.add(e.job)
      this.log.error({ job: e.job, err: e.message }, 'cannot decide on a job: its records break a rule of placement; it is left as it is')
    }
    // A duplicate is stopped only once it has been one for duplicateGraceMs.
    const duplicates = new Set<string>()
    for (const a of decisions.actions) if (a.kind === 'stop' && a.duplicate === true) duplicates.add(a.instance)
    for (const id of this.duplicateSince.keys()) if (!duplicates.has(id)) this.duplicateSince.delete(id)
    for (const id of duplicates) if (!this.duplicateSince.has(id)) this.duplicateSince.set(id, now)
    const open = new Set(decisions.open)
    for (const id of this.openSince.keys()) if (!open.has(id)) this.openSince.delete(id)
    for (const id of open) if (!this.openSince.has(id)) this.openSince.set(id, now)
    this.last = decisions
    const byId = new Map(jobs.map((j) => [j.record.id, j]))
    for (const action of decisions.actions) this.act(action, byId)
    this.sendQuestions(now)
    for (const { record } of jobs) if (this.isInert(record, claimedInstances)) this.inert.add(record.id)
    this.stats.passes++
    this.stats.lastPassMs = Math.round((this.clock.monotonic() - started) * 100) / 100
  }

  /** A job that no pass can act on: it can run no more, and no instance of it is live or held here. */
  private isInert (record: JobRecord, claimedInstances: (job: string) => Iterable<string>): boolean {
    if (record.finishedAt === undefined || this.jobOutbox.has(record.id)) return false
    for (const id of claimedInstances(record.id)) {
      if (this.local.has(id) || this.claimsOf(id).some((c) => isActiveState(c.state))) return false
    }
    return true
  }

  /**
   * Claims of an instance as this node knows them: its own as queued (not yet in
   * the state), or as held (claimed, not yet recorded), in place of its stored one.
   */
  private claimsOf (id: string): ClaimRecord[] {
    const claims = this.state.records.taskClaims(id)
    const l = this.local.get(id)
    const own = l?.unwritten === true ? unwrittenClaim(l, this.self, this.clock.now()) : this.outbox.get(id)
    if (own === undefined) return claims
    return [...claims.filter((c) => c.node !== this.self), own]
  }

  private act (action: Action, jobs: ReadonlyMap<string, JobEntry>): void {
    switch (action.kind) {
      case 'claim': {
        const job = jobs.get(action.job)
        if (job?.spec == null) return
        if (action.backup !== undefined) {
          this.stats.backupClaims++
          this.log.info({ task: action.instance, why: action.backup }, 'claiming a task as a backup')
        }
        this.claim(action.instance, job.record, job.spec, action.generation)
        return
      }
      case 'ask': {
        let queue = this.askQueue.get(action.node)
        if (queue === undefined) this.askQueue.set(action.node, queue = new Set())
        queue.add(action.instance)
        return
      }
      case 'stop':
        // Every pass says so again until the stop is done: once is enough.
        if (this.local.get(action.instance)?.stopped != null) return
        if (action.duplicate === true && this.clock.now() - (this.duplicateSince.get(action.instance) ?? this.clock.now()) < this.config.duplicateGraceMs) return
        this.log.info({ task: action.instance, why: action.why }, 'stopping a task')
        void this.stop(action.instance, action.why, 'killed')
        return
      case 'lost':
        this.log.warn({ task: action.instance }, 'a task this node claims is not running here (lost with an earlier life); giving it up')
        this.record(action.instance, { state: 'lost', finishedAt: this.clock.now(), exit: { code: null, signal: null, reason: 'its process was lost with an earlier life of the node' } })
        return
      case 'finish-job': {
        const record = this.state.records.job(action.job)
        if (record !== undefined) this.markFinished(record)
        return
      }
      case 'share':
        this.log.info({ namespace: action.namespace, to: action.to, ...action.amount }, 'giving quota rights to a node that needs them')
        this.give(action.namespace, { to: action.to, amount: action.amount })
    }
  }

  /** A namespace's ledger with this node's own row as it is now: what it gave counts before it is stored. */
  private rows (namespace: string): readonly ShareRow[] {
    const rows = this.quota?.rows(namespace) ?? []
    const own = this.shareOutbox.get(namespace)
    return own === undefined ? rows : [...rows.filter((r) => r.node !== this.self), own]
  }

  private give (namespace: string, gift: Gift): void {
    const own = this.rows(namespace).find((r) => r.node === this.self)
    this.shareOutbox.set(namespace, withGift(this.self, own, gift))
    this.outboxTimer ??= this.clock.setTimeout(() => { void this.flush() }, 0)
  }

  /**
   * A node that leaves hands all its quota rights to a live node once its tasks have
   * stopped: they would otherwise be out of use until it comes back (placement/escrow.ts).
   */
  private handOver (): void {
    if (this.quota === undefined) return
    const to = this.members().filter((m) => m.id !== this.self && m.state === 'alive').map((m) => m.id).sort()[0]
    if (to === undefined) return
    for (const ns of this.quota.namespaces()) {
      const gift = handOver(this.self, this.rows(ns), ZERO, to)
      if (isZero(gift.amount)) continue
      this.log.info({ namespace: ns, to, ...gift.amount }, 'leaving: handing quota rights over')
      this.give(ns, gift)
    }
  }

  /** Answers past their time are dropped: the instance is asked about again if it is still open. */
  private expireAnswers (now: number): void {
    for (const [node, answers] of this.answers) {
      for (const [id, { at }] of answers) if (now - at >= this.config.answerTtlMs) answers.delete(id)
      if (answers.size === 0) this.answers.delete(node)
    }
  }

  /**
   * Sends the queued questions: one at a time per node, at most one per askIntervalMs,
   * each bounded by askTimeoutMs; silence, an unreachable node or an error counts as
   * `no-answer`, which is evidence. The answers start a pass.
   */
  private sendQuestions (now: number): void {
    const ask = this.ask
    if (ask === undefined) { this.askQueue.clear(); return }
    for (const [node, queue] of this.askQueue) {
      if (this.asking.has(node) || now - (this.lastAsked.get(node) ?? -Infinity) < this.config.askIntervalMs) continue
      // An instance answered meanwhile is not asked again.
      const fresh = this.answers.get(node)
      const instances = [...queue].filter((id) => fresh?.has(id) !== true).slice(0, ASK_INSTANCES_MAX)
      this.askQueue.delete(node)
      if (instances.length === 0) continue
      this.asking.add(node)
      this.lastAsked.set(node, now)
      this.stats.questions++
      const controller = new AbortController()
      let timer: Timer | null = null
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = this.clock.setTimeout(() => {
          const err = new Error(`no answer within ${this.config.askTimeoutMs} ms`)
          controller.abort(err)
          reject(err)
        }, this.config.askTimeoutMs, true)
      })
      Promise.race([ask(node, instances, controller.signal), timeout]).then((answers) => {
        this.store(node, instances, (id) => Object.hasOwn(answers, id) ? answers[id]! : { kind: 'unknown' })
      }, (err: Error) => {
        this.stats.unanswered++
        this.log.debug({ node, instances: instances.length, err: err.message }, 'a node did not answer whether it runs tasks')
        const answer: ClaimAnswer = { kind: 'no-answer', reason: err.message }
        this.store(node, instances, () => answer)
      }).finally(() => {
        this.clock.clearTimeout(timer)
        this.asking.delete(node)
        this.schedule()
      })
    }
  }

  private store (node: string, instances: readonly string[], answerOf: (id: string) => ClaimAnswer): void {
    if (this.closed) return
    const now = this.clock.now()
    let answers = this.answers.get(node)
    if (answers === undefined) this.answers.set(node, answers = new Map())
    for (const id of instances) {
      const answer = answerOf(id)
      answers.set(id, { answer, at: now })
      if (answer.kind !== 'mine' && answer.kind !== 'unknown') this.log.debug({ node, task: id, answer: describeAnswer(answer) }, 'asked whether a node runs a task')
    }
  }

  private claim (instance: string, job: JobRecord, spec: JobSpec, generation: number): void {
    const now = this.clock.now()
    const l: Local = { instance, job: job.id, generation, restarts: 0, streak: 0, phase: 'starting', timer: null, startedAt: null, stopped: null, unwritten: true }
    this.local.set(instance, l)
    this.openSince.delete(instance)
    this.stats.claims++
    this.clock.setTimeout(() => { if (l.unwritten && this.local.get(instance) === l) this.record(instance, { state: 'starting', since: now }) }, CLAIM_WRITE_DELAY_MS, true)
    this.launch(l, spec)
  }

  private launch (l: Local, spec: JobSpec): void {
    const id = attemptId(l.instance, l.restarts)
    const task: AttemptSpec = {
      id,
      job: l.job,
      command: spec.command,
      args: spec.args,
      env: spec.env,
      workdir: spec.workdir,
      cpuMillis: spec.cpuMillis,
      memoryBytes: spec.memoryBytes,
      ...(spec.runAs === undefined ? {} : { runAs: spec.runAs }),
    }
    l.phase = 'starting'
    this.stats.starts++
    this.executor.start(task).then((info) => {
      if (this.local.get(l.instance) !== l || attemptId(l.instance, l.restarts) !== id) return
      if (info.phase === 'ended') { this.onExit(info); return }
      if (l.phase !== 'starting') return
      l.phase = 'running'
      l.startedAt = info.startedAt
      this.record(l.instance, { state: 'running', since: this.clock.now(), startedAt: info.startedAt ?? this.clock.now() })
    }, (err: MurmurError) => {
      if (this.local.get(l.instance) !== l) return
      // Left to the other candidates for a while, so that a refusal does not become a claim-and-give-up loop here.
      this.holdOff.set(l.instance, this.clock.now() + this.config.holdOffMs)
      this.log.warn({ task: id, err: err.message }, 'could not start a task; giving it up here')
      // Recorded as declined, with this claim's generation even if the claim itself was not written yet
      // (record() takes it from the local entry, so before that goes): the backups read it as evidence.
      this.record(l.instance, { state: 'killed', finishedAt: this.clock.now(), exit: { code: null, signal: null, reason: `not started here: ${err.message}`.slice(0, 1_000) }, declined: true })
      this.local.delete(l.instance)
    })
  }

  private readonly onExit = (info: AttemptInfo): void => {
    const { instance } = parseAttempt(info.id)
    const l = this.local.get(instance)
    if (l === undefined || attemptId(instance, l.restarts) !== info.id || l.phase === 'stopping' || l.phase === 'backoff') return
    const exit = info.exit!
    const job = this.state.records.job(l.job)
    const spec = job === undefined ? null : readSpec(job.spec)
    const now = this.clock.now()
    const recorded = recordedExit(exit)
    if (job === undefined || spec === null || job.desired !== 'running') {
      this.record(instance, { state: 'killed', finishedAt: now, exit: recorded })
      this.local.delete(instance)
      this.schedule()
      return
    }
    const succeeded = exit.reason === 'exited' && exit.code === 0
    const service = job.type === 'service'
    if (!service && succeeded) {
      this.record(instance, { state: 'exited', finishedAt: now, exit: recorded })
      this.local.delete(instance)
      this.finishJobIfDone(job)
      this.schedule()
      return
    }
    if (!service && l.restarts >= spec.restart.attempts) {
      this.log.warn({ task: instance, exit: exit.message, attempts: l.restarts + 1 }, 'a task failed for the last time')
      this.record(instance, { state: 'failed', finishedAt: now, exit: recorded })
      this.local.delete(instance)
      this.finishJobIfDone(job)
      this.schedule()
      return
    }
    // Restart in place, after the backoff: the claim stays, so the instance does not move.
    if (info.startedAt !== null && (info.finishedAt ?? now) - info.startedAt >= this.config.backoffResetMs) l.streak = 0
    const delay = restartDelay(spec, l.streak)
    l.streak++
    l.restarts++
    l.phase = 'backoff'
    this.stats.restarts++
    this.log.info({ task: instance, exit: exit.message, restarts: l.restarts, delayMs: delay }, 'restarting a task after its backoff')
    this.record(instance, { state: 'restarting', since: now, restarts: l.restarts, exit: recorded })
    l.timer = this.clock.setTimeout(() => {
      l.timer = null
      if (this.local.get(instance) !== l || l.phase !== 'backoff' || this.closed) return
      const current = this.state.records.job(l.job)
      const currentSpec = current === undefined ? null : readSpec(current.spec)
      if (current?.desired !== 'running' || currentSpec === null) { void this.stop(instance, 'its job was stopped', 'killed'); return }
      this.launch(l, currentSpec)
    }, delay)
  }

  /** Stops a local instance (or gives up a claim with nothing local) and records the final state. */
  private async stop (instance: string, why: string, final: ClaimState, graceMaxMs?: number, holdOff = false): Promise<void> {
    const l = this.local.get(instance)
    if (l === undefined) {
      const claim = this.ownClaim(instance)
      if (claim !== undefined && isActiveState(claim.state)) this.record(instance, { state: final, finishedAt: this.clock.now(), exit: { code: null, signal: null, reason: why } })
      return
    }
    if (l.stopped !== null) return await l.stopped
    const specGrace = readSpec(this.state.records.job(l.job)?.spec)?.graceMs
    const graceMs = graceMaxMs === undefined ? specGrace : Math.min(graceMaxMs, specGrace ?? graceMaxMs)
    const done = (async () => {
      const wasBackoff = l.phase === 'backoff'
      l.phase = 'stopping'
      this.clock.clearTimeout(l.timer)
      l.timer = null
      this.stats.stops++
      let exit: NonNullable<ClaimRecord['exit']> = { code: null, signal: null, reason: why }
      if (!wasBackoff) {
        try {
          const info = await this.executor.stop(attemptId(instance, l.restarts), graceMs === undefined ? {} : { graceMs })
          if (info.exit !== null) exit = { ...recordedExit(info.exit), reason: `${why}: ${info.exit.message}`.slice(0, 1_000) }
        } catch (err) {
          if ((err as MurmurError).code !== 'NO_SUCH_TASK') this.log.warn({ task: instance, err: (err as Error).message }, 'could not stop a task')
        }
      }
      // Killed on request here: recorded as declined, so that a backup takes the instance over at once.
      this.record(instance, { state: final, finishedAt: this.clock.now(), exit, ...(holdOff && final === 'killed' ? { declined: true as const } : {}) })
      this.local.delete(instance)
      if (holdOff) this.holdOff.set(instance, this.clock.now() + this.config.holdOffMs)
      this.schedule()
    })()
    l.stopped = done
    return await done
  }

  private ownClaim (instance: string): ClaimRecord | undefined {
    return this.outbox.get(instance) ?? this.state.records.taskClaims(instance).find((c) => c.node === this.self)
  }

  /**
   * A batch job whose last instance this node just finished is marked finished in
   * the same transaction as that instance's record (decide's `finish-job` covers
   * the rest: a finisher that died, a race between two last instances).
   */
  private finishJobIfDone (job: JobRecord): void {
    if (job.type !== 'batch' || job.finishedAt !== undefined) return
    const spec = readSpec(job.spec)
    if (spec === null) return
    for (let i = 0; i < spec.count; i++) {
      if (!this.claimsOf(instanceId(job.id, i)).some((c) => CLAIM_STATUS[c.state] === 'finished')) return
    }
    this.markFinished(job)
  }

  private markFinished (job: JobRecord): void {
    if (job.finishedAt !== undefined || this.jobOutbox.has(job.id)) return
    this.jobOutbox.set(job.id, finishedJob(job, this.clock.now()))
    this.outboxTimer ??= this.clock.setTimeout(() => { void this.flush() }, 0)
  }

  /**
   * Queues a change of this node's claim of an instance. All changes of one turn
   * go to the state in one transaction (one update, one fsync, one gossip).
   */
  private record (instance: string, patch: Partial<ClaimRecord>): void {
    const l = this.local.get(instance)
    let base: ClaimRecord | undefined
    if (l?.unwritten === true) {
      // The first record of a claim: nothing of an earlier claim of ours (its exit, its end) carries over.
      base = unwrittenClaim(l, this.self, this.clock.now())
      l.unwritten = false
    } else {
      base = this.ownClaim(instance)
    }
    if (base === undefined) return
    const now = this.clock.now()
    const next = { ...base, ...patch, since: patch.since ?? now } as ClaimRecord
    this.outbox.set(instance, next)
    this.outboxTimer ??= this.clock.setTimeout(() => { void this.flush() }, 0)
  }

  private async flush (): Promise<void> {
    this.outboxTimer = null
    if (this.outbox.size === 0 && this.jobOutbox.size === 0 && this.shareOutbox.size === 0) return
    const records = [...this.outbox.values()]
    const jobs = [...this.jobOutbox.values()]
    const shares = [...this.shareOutbox.entries()]
    // Taken out before the write: a job record written is not written again.
    this.jobOutbox.clear()
    try {
      await this.state.write((s) => {
        for (const r of records) s.putTask(r)
        for (const j of jobs) s.putJob(j)
        for (const [ns, row] of shares) s.putAccess({ id: `share-${ns}`, kind: 'share', namespace: ns, minted: row.minted, given: row.given })
      })
      // A row stored is what the state shows from now on; a gift made meanwhile stays queued.
      for (const [ns, row] of shares) if (this.shareOutbox.get(ns) === row) this.shareOutbox.delete(ns)
      // Whatever a later change queued for the same instance stays queued.
      for (const r of records) if (this.outbox.get(r.id) === r) this.outbox.delete(r.id)
    } catch (err) {
      const e = err as MurmurError
      if (e.code === 'STOPPING') return
      // The document holds what was written even if the disk did not take it; a refused write is retried.
      for (const r of records) if (this.outbox.get(r.id) === r && this.state.records.taskClaims(r.id).some((c) => c.node === this.self && JSON.stringify(c) === JSON.stringify(r))) this.outbox.delete(r.id)
      for (const j of jobs) if (this.state.records.job(j.id)?.finishedAt === undefined) this.jobOutbox.set(j.id, j)
      this.log.warn({ err: e.message, records: records.length }, 'could not store task records; retrying')
      this.outboxTimer ??= this.clock.setTimeout(() => { void this.flush() }, 100)
    }
  }
}

function unwrittenClaim (l: Local, self: string, now: number): ClaimRecord {
  return { id: l.instance, job: l.job, node: self, generation: l.generation, state: 'claimed', since: now, restarts: l.restarts }
}

function recordedExit (exit: TaskExit): NonNullable<ClaimRecord['exit']> {
  return { code: exit.code, signal: exit.signal, reason: exit.message.slice(0, 1_000) }
}
