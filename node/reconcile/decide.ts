// One pass of the reconcile loop as a pure function: desired state (jobs), actual
// state (every node's claims) and this node's view of who is reachable in;
// what this node must do out. No I/O and no clock of its own, so the simulator
// runs the very same decisions (README.md, "Reconcile").

import type { JobRecord, ClaimRecord, ClaimState } from '../../crdt/schema.ts'
import { type Claim, type ClaimStatus, nextGeneration, resolveClaims } from '../../placement/claims.ts'
import { plan, type PendingSummary } from '../../placement/place.ts'
import { type Amount, type Limit, type ShareRow, type Want, ESCROW_DEFAULTS, ZERO, add, debtsBeyond, demandOf as quotaDemand, fits, giftsOf, quotaMessage, rightsOf, sub, transfers } from '../../placement/escrow.ts'
import type { Allocation, NodeView, InstanceDemand } from '../../placement/types.ts'
import { instanceId, jobOfInstance, latestTick } from '../jobs/instances.ts'
import { namespaceOf } from '../jobs/records.ts'
import { RECONCILE_CONFIG } from './config.ts'
import type { JobSpec } from '../jobs/spec.ts'

/** What a claim in each task state means to the claim rule. */
export const CLAIM_STATUS: Readonly<Record<ClaimState, ClaimStatus>> = {
  claimed: 'active',
  starting: 'active',
  running: 'active',
  restarting: 'active',
  exited: 'finished',
  failed: 'finished',
  killed: 'ended',
  lost: 'ended',
}

export function isActiveState (state: ClaimState): boolean {
  return CLAIM_STATUS[state] === 'active'
}

export interface JobEntry {
  record: JobRecord
  /** The stored spec in normal form; null if a peer wrote something unreadable. */
  spec: JobSpec | null
}

export interface ReconcileInput {
  self: string
  now: number
  jobs: readonly JobEntry[]
  /** Every node's claim of an instance. */
  claims: (instance: string) => readonly ClaimRecord[]
  /** Every instance of a job that has at least one claim. */
  claimedInstances: (job: string) => Iterable<string>
  /** The nodes with a record in the state; `alive` means reachable in this node's membership view. */
  nodes: readonly NodeView[]
  /**
   * Nodes this node sees suspect: their claims still hold. On a minority side no new
   * work is placed on them (a node cut off keeps the others suspect for the whole cut,
   * and work placed on them would never start). On a majority side they stay
   * candidates: suspicions come and go under load, and every node must compute the same
   * placement, or two chosen nodes both claim. A candidate in it is one a backup may
   * take an instance from: shorter suspicions (under load they last up to 3 s and are
   * refuted) are no evidence, and a suspicion confirmed ends in a death, which places
   * the instance again anyway.
   */
  suspect?: ReadonlySet<string>
  /** Whether this node's side holds a majority of the recently stable membership (see `majority`). */
  majority: boolean
  /** Instances this node runs or is about to run, or is stopping. */
  local: ReadonlySet<string>
  /** When this node first saw an instance open, for backup claims. */
  openSince: (instance: string) => number | undefined
  /** Instances this node does not claim for now (it just refused one). */
  holdOff?: ReadonlySet<string>
  /**
   * Members this node sees alive whose record has not reached its state yet (they joined a
   * moment ago). Placement cannot choose them, so this node's choices may differ from those of
   * nodes that have their records: it does not claim as the chosen node until they arrive.
   */
  joining?: ReadonlySet<string>
  /** Whether the loop can ask other nodes (node/rpc.ts): only then does a pass emit `ask` actions. */
  canAsk?: boolean
  /** The answers still fresh of the nodes this one asked whether they run an instance; the loop fills them. */
  answers?: (node: string, instance: string) => ClaimAnswer | undefined
  claimTimeoutMs?: number
  claimBoundMs?: number
  cronDeadlineMs?: number
  cronCatchUpMs?: number
  /**
   * Namespace quotas (placement/README.md, "Quotas: escrow"). Absent: no quota anywhere, and
   * a pass is what it was before quotas. Present: in a namespace with a limit this node
   * claims (as the chosen node or a backup) only within the rights it holds, and emits
   * `share` actions that move its spare rights to the nodes that need them.
   */
  quota?: QuotaInput
}

export interface QuotaInput {
  /** The namespace's quota as this node's state holds it; null: none (nothing is checked). */
  limit: (namespace: string) => Limit | null
  /**
   * The namespace's ledger, each node's latest row once. This node's own row must be
   * current: every `share` it emitted before applied, as its claims are (the loop's outbox).
   */
  rows: (namespace: string) => readonly ShareRow[]
  /** How long an instance waits for a share before any node with spare gives it (`ESCROW_DEFAULTS.stuckMs`). */
  stuckMs?: number
  /** Namespaces with a ledger: their debts are planned for even when no job of theirs is in this pass. */
  namespaces?: () => readonly string[]
}

/**
 * What a node answers when another asks whether it will run an open instance
 * (node/rpc.ts, op `will-run`), as its reconcile loop sees it (`answerFor`).
 */
export type ClaimAnswer =
  /** It holds the instance (claimed, starting, running, backing off), has finished it, or claims it in this pass: leave it. */
  | { kind: 'mine', state: string }
  /** It will not run it: its executor refused the start, a user killed it there, or it has no room for it. */
  | { kind: 'declined', reason: string }
  /** It sees the instance open and, in its view, is neither its chosen node nor a backup: it will not claim it. */
  | { kind: 'not-mine', chosen?: string }
  /** In its view it is a backup itself, waiting for evidence against the nodes before it. */
  | { kind: 'backup', chosen?: string }
  /** In its view another node holds or has finished the instance: that claim has not reached the asker yet. */
  | { kind: 'elsewhere', holder: string }
  /** It has not seen the instance open (the job has not reached it, or no pass has looked at it yet). */
  | { kind: 'unknown' }
  /** Never sent by a node: the loop's record that the node did not answer in time (unreachable, timed out, an error). */
  | { kind: 'no-answer', reason: string }

/** The answers that say a node will not run the instance: evidence for a backup. */
export function refuses (answer: ClaimAnswer): boolean {
  return answer.kind === 'declined' || answer.kind === 'not-mine' || answer.kind === 'no-answer'
}

export type Action =
  /** `backup`: this node is not the chosen one; the evidence it claims on, for the log. */
  | { kind: 'claim', instance: string, job: string, generation: number, backup?: string }
  /** Ask `node` whether it runs `instance` (the loop batches these per node). */
  | { kind: 'ask', node: string, instance: string }
  /** `duplicate`: another node holds it; the loop waits a moment before it acts (the holder may be about to give it up). */
  | { kind: 'stop', instance: string, job: string, why: string, duplicate?: true }
  /** Our claim is live in the state but nothing runs here: the node lost it (a crash between claim and start, a restart). */
  | { kind: 'lost', instance: string, job: string }
  | { kind: 'finish-job', job: string }
  /** Give `amount` of this node's rights in `namespace` to `to`: add it to `given[to]` of this node's row, before the next pass. */
  | { kind: 'share', namespace: string, to: string, amount: Amount }

export interface Decisions {
  actions: Action[]
  /** Instances that are open now (none of their claims holds), for `openSince`. */
  open: string[]
  /** Why each open instance is not running: placement's summary, or the partition rule. */
  pending: Map<string, { job: string, message: string, why?: PendingSummary }>
  /** Jobs this pass could not decide on (records that break a rule of placement): left as they are. */
  errors: Array<{ job: string, message: string }>
  /** Every open instance placement placed, with this node's place in it: what this node answers when asked about it. */
  roles: Map<string, Role>
}

export interface Role {
  chosen: string
  /** 0: this node is the chosen one; k: its backup k; -1: neither. */
  rank: number
  /** For a backup: whether it has room for the instance now. */
  room: boolean
}

export function claimOf (record: ClaimRecord): Claim {
  return { node: record.node, generation: record.generation, status: CLAIM_STATUS[record.state] }
}

export function demandOf (instance: string, job: string, spec: JobSpec): InstanceDemand {
  return {
    id: instance,
    job,
    cpuMillis: spec.cpuMillis,
    memoryBytes: spec.memoryBytes,
    ...(spec.constraints.length > 0 ? { constraints: spec.constraints } : {}),
    ...(spec.spread.length > 0 ? { spread: spec.spread } : {}),
    ...(spec.perNodeMax !== undefined ? { perNodeMax: spec.perNodeMax } : {}),
  }
}

/** The instances a running job wants now: every index, and for cron the due tick plus earlier ticks still unfinished. */
export function desiredInstances (job: JobEntry, input: Pick<ReconcileInput, 'now' | 'claims' | 'claimedInstances' | 'nodes' | 'cronDeadlineMs' | 'cronCatchUpMs'>, isLive: (node: string) => boolean): string[] {
  const { record, spec } = job
  if (spec === null) return []
  const out: string[] = []
  if (spec.cron === undefined) {
    for (let i = 0; i < spec.count; i++) out.push(instanceId(record.id, i))
    return out
  }
  // Earlier runs stay wanted until they finish: a run whose node died is placed again.
  let running = false
  for (const id of input.claimedInstances(record.id)) {
    const outcome = resolveClaims(id, input.claims(id).map(claimOf), isLive)
    if (outcome.kind === 'finished') continue
    out.push(id)
    if (outcome.kind === 'held') running = true
  }
  const tick = latestTick(spec.cron, input.now)
  if (tick === null || tick < Math.floor(record.submittedAt / 1000) * 1000) return out
  const age = input.now - tick
  const late = age > (input.cronDeadlineMs ?? RECONCILE_CONFIG.cronDeadlineMs)
  // A missed tick is caught up only while its run's records would still be in the state: past that,
  // "not fired" cannot be told from "fired, and its records expired", and it would run again.
  const tooOld = age > (input.cronCatchUpMs ?? RECONCILE_CONFIG.cronCatchUpMs)
  const fresh = instanceId(record.id, 0, tick)
  const fired = out.includes(fresh) || input.claims(fresh).length > 0
  if (fired || tooOld || (late && spec.cron.missed === 'skip') || (running && spec.cron.overlap === 'skip')) return out
  for (let i = 0; i < spec.count; i++) out.push(instanceId(record.id, i, tick))
  return out
}

export function decide (input: ReconcileInput): Decisions {
  const { self, now } = input
  const alive = new Set(input.nodes.filter((n) => n.live).map((n) => n.id))
  const isLive = (node: string): boolean => alive.has(node)
  const lowestAlive = [...alive].sort()[0]
  const actions: Action[] = []
  const open: string[] = []
  const pending: Decisions['pending'] = new Map()
  const errors: Decisions['errors'] = []
  const roles: Decisions['roles'] = new Map()
  const allocations: Allocation[] = []
  const wanted = new Map<string, string>()
  const toPlace: InstanceDemand[] = []
  const demands = new Map<string, InstanceDemand>()
  const claimsOf = new Map<string, Claim[]>()
  /** This node's live claims and local tasks, by instance: each must be wanted, or it stops. */
  const mine = new Map<string, string>()
  const books = new Books(self, input.quota)
  const byId = new Map(input.jobs.map((j) => [j.record.id, j]))

  for (const job of input.jobs) {
    const { record, spec } = job
    try {
      books.watch(record)
      // Every live claim holds its demand on its node, whatever the job's state, until its node stops it.
      for (const id of input.claimedInstances(record.id)) {
        const records = input.claims(id)
        for (const r of records) {
          if (!isActiveState(r.state)) continue
          if (spec !== null) {
            allocations.push({ task: demandOf(id, record.id, spec), node: r.node })
            books.charge(record, spec, r.node, id)
          }
          if (r.node === self) mine.set(id, record.id)
        }
      }
      // A signed batch marked finished is still looked at: no user signs that mark, so a member could
      // write it to end a batch early; its instances go on until each has finished (jobs/records.ts).
      const over = record.finishedAt !== undefined && (record.type !== 'batch' || record.proof === undefined)
      if (record.desired !== 'running' || spec === null || over) continue
      const desired = desiredInstances(job, input, isLive)
      let finished = 0
      let finisher: string | undefined
      for (const id of desired) {
        wanted.set(id, record.id)
        const claims = input.claims(id).map(claimOf)
        claimsOf.set(id, claims)
        const outcome = resolveClaims(id, claims, isLive)
        if (outcome.kind === 'finished') {
          finished++
          if (id === instanceId(record.id, 0)) finisher = outcome.by.node
          if (input.local.has(id)) actions.push({ kind: 'stop', instance: id, job: record.id, why: `it already finished on ${outcome.by.node}` })
          continue
        }
        if (outcome.kind === 'held') {
          if (outcome.holder.node === self && !input.local.has(id)) actions.push({ kind: 'lost', instance: id, job: record.id })
          if (outcome.duplicates.some((c) => c.node === self)) {
            actions.push({ kind: 'stop', instance: id, job: record.id, why: `a duplicate: ${outcome.holder.node} holds it (generation ${outcome.holder.generation})`, duplicate: true })
          }
          continue
        }
        open.push(id)
        // Held only by nodes this side cannot reach: only the majority side takes it over, unless the job runs on every side.
        const across = claims.filter((c) => c.status === 'active' && !isLive(c.node)).map((c) => c.node)
        if (!input.majority && spec.partition !== 'both') {
          if (across.length > 0) {
            pending.set(id, { job: record.id, message: `held by ${across.join(', ')}, which this node cannot reach; this side of the cluster is a minority, so it does not take the task over (partition: majority)` })
            continue
          }
          // New work (a new job, a cron tick, an instance given up) is placed on a minority side only for jobs submitted on this side.
          if (!isLive(record.submittedBy)) {
            pending.set(id, { job: record.id, message: `this side of the cluster is a minority and the job was submitted on the other side (by ${record.submittedBy}), which places it (partition: majority)` })
            continue
          }
        }
        const demand = demandOf(id, record.id, spec)
        toPlace.push(demand)
        demands.set(id, demand)
      }
      // One node marks the batch finished: the one that finished instance 0, or if it is gone, the lowest live node.
      const marker = finisher !== undefined && isLive(finisher) ? finisher : lowestAlive
      if (record.type === 'batch' && desired.length > 0 && finished === desired.length && marker === self) {
        actions.push({ kind: 'finish-job', job: record.id })
      }
    } catch (err) {
      // Records that passed their schemas but break a rule of placement (a peer's): this job waits, the others go on.
      errors.push({ job: record.id, message: (err as Error).message })
    }
  }

  for (const id of input.local) if (!mine.has(id)) mine.set(id, wanted.get(id) ?? jobOfInstance(id))
  // A local task counts against its namespace's quota until it has stopped, whatever its claim says.
  // One whose job this node does not know (gone, or not admitted) could be any namespace's, of any size:
  // until it has stopped, nothing of a namespace with a quota starts here.
  for (const id of input.local) {
    const entry = byId.get(wanted.get(id) ?? jobOfInstance(id))
    if (entry?.spec != null) books.charge(entry.record, entry.spec, self, id)
    else books.unknown(id)
  }
  for (const [id, job] of mine) {
    if (wanted.has(id)) continue
    const record = input.jobs.find((j) => j.record.id === job)?.record
    const why = record === undefined
      ? 'its job is gone'
      : record.desired === 'stopped' ? 'its job was stopped' : record.finishedAt !== undefined ? 'its job has finished' : 'its job no longer wants it'
    actions.push({ kind: 'stop', instance: id, job, why })
  }

  let placed: ReturnType<typeof plan> = { placements: [], pending: [] }
  try {
    const suspect = input.suspect
    const placeable = input.majority || suspect === undefined || suspect.size === 0 ? input.nodes : input.nodes.map((n) => suspect.has(n.id) ? { ...n, live: false } : n)
    if (toPlace.length > 0) placed = plan({ nodes: placeable, allocations }, toPlace)
  } catch (err) {
    errors.push({ job: '', message: `placement: ${(err as Error).message}` })
  }
  /** Why `node` cannot or will not run `instance`, if this node has evidence of it. */
  const evidence = (node: string, instance: string): string | undefined => {
    if (!isLive(node)) return `${node} is dead or left in this view`
    const answer = input.answers?.(node, instance)
    // It says it holds the instance: whatever else this node sees, a claim now would be a second copy.
    if (answer?.kind === 'mine') return undefined
    if (answer !== undefined && refuses(answer)) return `${node} answered ${describeAnswer(answer)}`
    if (declinedBy(node, input.claims(instance))) return `${node} recorded that it declined it`
    if (input.suspect?.has(node) === true) return `${node} has been suspect for long`
    return undefined
  }
  if (input.quota !== undefined) {
    // Who is to claim each open instance next, in this view: the first node placement ranks that
    // this node has no evidence against (the backups' rule). Their needs decide where spare rights go.
    const wants: Array<{ record: JobRecord, want: Want }> = []
    const stuckMs = input.quota.stuckMs ?? ESCROW_DEFAULTS.stuckMs
    for (const p of placed.placements) {
      const claimant = [p.node, ...p.candidates].find((n) => evidence(n, p.task) === undefined)
      if (claimant === undefined || (claimant === self && (input.holdOff?.has(p.task) === true || input.local.has(p.task)))) continue
      const record = byId.get(wanted.get(p.task)!)!.record
      const d = demands.get(p.task)!
      wants.push({ record, want: { node: claimant, demand: quotaDemand(d.cpuMillis, d.memoryBytes), stuck: now - (input.openSince(p.task) ?? now) >= stuckMs } })
    }
    const reachable = [...alive].filter((n) => input.suspect?.has(n) !== true)
    for (const a of books.settle(wants, reachable)) actions.push(a)
    for (const e of books.errors) errors.push(e)
  }
  if (placed.placements.length + placed.pending.length > 0) {
    const timeout = input.claimTimeoutMs ?? RECONCILE_CONFIG.claimTimeoutMs
    const bound = input.claimBoundMs ?? RECONCILE_CONFIG.claimBoundMs
    const joining = [...(input.joining ?? [])].sort()
    // What this node may still take on as a backup: placement counted those instances against their chosen node, not this one.
    const me = input.nodes.find((n) => n.id === self)
    let freeCpu = (me?.cpuMillis ?? 0) - sumOn(allocations, self, 'cpuMillis')
    let freeMem = (me?.memoryBytes ?? 0) - sumOn(allocations, self, 'memoryBytes')
    for (const p of placed.placements) if (p.node === self) { const d = demands.get(p.task)!; freeCpu -= d.cpuMillis; freeMem -= d.memoryBytes }
    for (const p of placed.placements) {
      const job = wanted.get(p.task)!
      const at = p.candidates.indexOf(self)
      // 0: the chosen node; k: backup k; -1: neither, never claims.
      const k = p.node === self ? 0 : at >= 0 ? at + 1 : -1
      const since = input.openSince(p.task) ?? now
      const d = demands.get(p.task)!
      const room = d.cpuMillis <= freeCpu && d.memoryBytes <= freeMem
      roles.set(p.task, { chosen: p.node, rank: k, room })
      // Backup k claims only on evidence against every node ranked before it (the chosen node and
      // backups 1 … k−1): each is gone or suspect for 5 s or more, recorded that it declined, or answered
      // that it will not run it or not at all. Never on the clock alone: a late claim is no evidence.
      let backup: string | undefined
      if (k > 0 && room) {
        const before = [p.node, ...p.candidates.slice(0, k - 1)]
        const reasons: string[] = []
        const without: string[] = []
        for (const n of before) {
          const why = evidence(n, p.task)
          if (why === undefined) without.push(n)
          else reasons.push(why)
        }
        const open = now - since
        const answers = without.map((n) => input.answers?.(n, p.task))
        if (without.length === 0) {
          backup = `backup ${k}: ${reasons.join('; ')}`
        } else if (open >= k * bound && (input.canAsk !== true || answers.every((a) => a !== undefined && a.kind !== 'mine'))) {
          // The last resort, so that a node that is alive and never claims cannot hold the instance forever;
          // where nodes can be asked, only once each has just answered, and none that it holds the instance.
          backup = `backup ${k}: open for ${open} ms, no claim from ${without.join(', ')}${input.canAsk === true ? `, which answered ${answers.map((a) => describeAnswer(a!)).join('; ')}` : ''}`
        } else if (input.canAsk === true && open >= k * timeout) {
          without.forEach((n, i) => { if (answers[i] === undefined) actions.push({ kind: 'ask', node: n, instance: p.task }) })
        }
      }
      const due = (k === 0 && joining.length === 0) || backup !== undefined
      // A local copy means this node holds it already (its claim may not be recorded yet): never a second start.
      const may = due && input.holdOff?.has(p.task) !== true && !input.local.has(p.task)
      // Within this node's rights in the job's namespace, or not at all: it waits for a share.
      const short = may ? books.admit(byId.get(job)!.record, d) : undefined
      if (short !== undefined) {
        pending.set(p.task, { job, message: short })
      } else if (may) {
        if (k > 0) { freeCpu -= d.cpuMillis; freeMem -= d.memoryBytes }
        actions.push({ kind: 'claim', instance: p.task, job, generation: nextGeneration(claimsOf.get(p.task)!), ...(backup === undefined ? {} : { backup }) })
      } else if (k === 0 && joining.length > 0) {
        pending.set(p.task, { job, message: `placed on this node; waiting for the records of ${joining.join(', ')}, which just joined and which placement may choose instead` })
      } else {
        pending.set(p.task, { job, message: `placed on ${p.node}; waiting for it to claim` })
      }
    }
    for (const p of placed.pending) pending.set(p.task, { job: wanted.get(p.task)!, message: p.why.message, why: p.why })
  }
  return { actions, open, pending, errors, roles }
}

/**
 * The quota books of one pass (placement/README.md, "Quotas: escrow"): for every
 * namespace with a limit, what each node runs of it, from its live claims (this
 * node's local tasks too: they hold their share until they have stopped, whatever
 * their claims say), and, once settled, the rights this node has left after the
 * gifts it makes in this pass. The claims it makes are charged as they are admitted,
 * so one pass never spends a right twice. Without quota input it admits everything.
 */
class Books {
  readonly errors: Array<{ job: string, message: string }> = []
  private readonly self: string
  private readonly quota: QuotaInput | undefined
  private readonly limits = new Map<string, Limit | null>()
  /** Namespace → node → what the node runs of it. */
  private readonly usage = new Map<string, Map<string, Amount>>()
  /** Instances charged to this node already: a live claim and a local task of one instance count once. */
  private readonly charged = new Set<string>()
  /** Namespace → this node's rights after its gifts, less what it holds against others' debts; or why nothing of it may start here. */
  private readonly rights = new Map<string, Amount | string>()
  /** Local tasks of jobs this node does not know: their use cannot be charged to a namespace. */
  private readonly unknowns: string[] = []

  constructor (self: string, quota: QuotaInput | undefined) {
    this.self = self
    this.quota = quota
  }

  /** The namespace's quota, looked up once a pass; null: none, or no quota input at all. */
  watch (record: JobRecord): Limit | null {
    if (this.quota === undefined) return null
    const ns = namespaceOf(record)
    let limit = this.limits.get(ns)
    if (limit === undefined) this.limits.set(ns, limit = this.quota.limit(ns))
    return limit
  }

  /** `node` runs `instance` of this job (a live claim; for this node, a local task too). */
  charge (record: JobRecord, spec: JobSpec, node: string, instance: string): void {
    if (this.watch(record) === null) return
    if (node === this.self) {
      if (this.charged.has(instance)) return
      this.charged.add(instance)
    }
    this.add(namespaceOf(record), node, quotaDemand(spec.cpuMillis, spec.memoryBytes))
  }

  /**
   * Plans the moves of rights in every namespace with a limit, from this node's view,
   * and returns this node's part of them; what it gives is no longer its own to spend.
   */
  settle (wants: ReadonlyArray<{ record: JobRecord, want: Want }>, reachable: readonly string[]): Action[] {
    const actions: Action[] = []
    if (this.quota === undefined) return actions
    // Namespaces without a job in this pass too: a debt there is repaid all the same.
    for (const ns of this.quota.namespaces?.() ?? []) if (!this.limits.has(ns)) this.limits.set(ns, this.quota.limit(ns))
    for (const [ns, limit] of [...this.limits].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (limit === null) continue
      try {
        const all = rightsOf(this.quota.rows(ns))
        const plan = transfers({
          limit, rights: all, usage: this.usage.get(ns) ?? new Map(), reachable, self: this.self,
          wants: wants.filter((w) => namespaceOf(w.record) === ns).map((w) => w.want),
        })
        let mine = all.get(this.self) ?? ZERO
        const after = new Map(all)
        for (const gift of giftsOf(this.self, plan)) {
          mine = sub(mine, gift.amount)
          after.set(gift.to, add(after.get(gift.to) ?? ZERO, gift.amount))
          actions.push({ kind: 'share', namespace: ns, to: gift.to, amount: gift.amount })
        }
        // What others owe stays unspent here until it is repaid (gifts others plan are not counted: they may not come).
        after.set(this.self, mine)
        this.rights.set(ns, sub(mine, debtsBeyond(this.self, after, this.usage.get(ns) ?? new Map())))
      } catch (err) {
        // Rows that break the ledger's rules (a peer's bug): nothing of the namespace starts here until they are fixed.
        const message = `namespace ${ns}: its quota ledger cannot be read (${(err as Error).message}); nothing of it starts on this node`
        this.rights.set(ns, message)
        this.errors.push({ job: '', message })
      }
    }
    return actions
  }

  /** A local task whose job this node does not know: it may hold any namespace's rights until it stops. */
  unknown (instance: string): void {
    this.unknowns.push(instance)
  }

  /** Charges this node with an instance of the job if its rights allow it; otherwise says why it waits. */
  admit (record: JobRecord, demand: InstanceDemand): string | undefined {
    const limit = this.watch(record)
    if (limit === null) return undefined
    const ns = namespaceOf(record)
    if (this.unknowns.length > 0) return `namespace ${ns}: this node still stops ${this.unknowns.length} task(s) of jobs it does not know (${this.unknowns.slice(0, 3).join(', ')}), whose use could be this namespace's; it waits until they have stopped`
    const rights = this.rights.get(ns)
    // Not settled (no quota pass ran): a right not counted is not spent.
    if (rights === undefined) return `namespace ${ns}: this node's share of the quota is not known yet`
    if (typeof rights === 'string') return rights
    const usage = this.usage.get(ns)?.get(this.self) ?? ZERO
    const d = quotaDemand(demand.cpuMillis, demand.memoryBytes)
    if (!fits(limit, rights, usage, d)) return quotaMessage(ns, limit, rights, usage, d)
    this.add(ns, this.self, d)
    return undefined
  }

  private add (ns: string, node: string, a: Amount): void {
    let byNode = this.usage.get(ns)
    if (byNode === undefined) this.usage.set(ns, byNode = new Map())
    byNode.set(node, add(byNode.get(node) ?? ZERO, a))
  }
}

/**
 * Whether `node`'s claim of an instance says that it declined it, and the refusal
 * still stands: it is the node's latest claim, and every claim made since (a higher
 * generation) was declined as well. A claim made after it that was not declined (it
 * ran somewhere, then ended) means the instance has moved on, and the node may have
 * room again.
 */
export function declinedBy (node: string, records: readonly ClaimRecord[]): boolean {
  let own: ClaimRecord | undefined
  for (const r of records) {
    if (r.node !== node) continue
    if (own === undefined || r.generation > own.generation || (r.generation === own.generation && isActiveState(own.state) && !isActiveState(r.state))) own = r
  }
  if (own?.declined !== true || isActiveState(own.state)) return false
  const g = own.generation
  return records.every((r) => r.generation <= g || r.declined === true)
}

export function describeAnswer (answer: ClaimAnswer): string {
  switch (answer.kind) {
    case 'mine': return `that it holds it (${answer.state})`
    case 'declined': return `that it declines it: ${answer.reason}`
    case 'not-mine': return `that it is not its to run${answer.chosen === undefined ? '' : ` (it places it on ${answer.chosen})`}`
    case 'backup': return `that it is a backup itself${answer.chosen === undefined ? '' : ` (it places it on ${answer.chosen})`}`
    case 'elsewhere': return `that ${answer.holder} holds it`
    case 'unknown': return 'that it has not seen it open'
    case 'no-answer': return `nothing: ${answer.reason}`
  }
}

/** What the answering node knows of an instance, for `answerFor`. */
export interface AnswerView {
  self: string
  /** The phase of this node's local copy of the instance, if it has one. */
  local: (instance: string) => string | undefined
  /** Whether this node holds off the instance (its executor refused it, or a user killed it here). */
  heldOff: (instance: string) => boolean
  /** Every node's claim of the instance, this node's as it knows them. */
  claims: (instance: string) => readonly ClaimRecord[]
  /** This node's last pass. */
  last: Pick<Decisions, 'roles' | 'pending'>
}

/**
 * This node's answer to "will you run this instance?", from what it runs and its
 * last pass; the asker takes declined and not-mine as evidence to claim it itself,
 * and everything else as a reason to wait (node/README.md, "Backups").
 */
export function answerFor (instance: string, view: AnswerView): ClaimAnswer {
  const phase = view.local(instance)
  if (phase !== undefined) return { kind: 'mine', state: phase }
  if (view.heldOff(instance)) return { kind: 'declined', reason: `${view.self} refused it or gave it up a moment ago` }
  const claims = view.claims(instance)
  const own = claims.filter((c) => c.node === view.self).sort((a, b) => b.generation - a.generation)[0]
  if (own !== undefined && (isActiveState(own.state) || CLAIM_STATUS[own.state] === 'finished')) return { kind: 'mine', state: own.state }
  const role = view.last.roles.get(instance)
  if (role !== undefined) {
    if (role.rank === 0) return { kind: 'mine', state: 'claiming' }
    if (role.rank > 0) return role.room ? { kind: 'backup', chosen: role.chosen } : { kind: 'declined', reason: `no room on ${view.self}` }
    return { kind: 'not-mine', chosen: role.chosen }
  }
  const pending = view.last.pending.get(instance)
  // Open, and placement put it nowhere (no node has room in this node's view), or the partition rule holds it back here.
  if (pending !== undefined) return pending.why !== undefined ? { kind: 'declined', reason: pending.why.message.slice(0, 1_000) } : { kind: 'not-mine' }
  const other = claims.find((c) => c.node !== view.self && CLAIM_STATUS[c.state] !== 'ended')
  if (other !== undefined) return { kind: 'elsewhere', holder: other.node }
  return { kind: 'unknown' }
}

function sumOn (allocations: readonly Allocation[], node: string, key: 'cpuMillis' | 'memoryBytes'): number {
  let total = 0
  for (const a of allocations) if (a.node === node) total += a.task[key]
  return total
}

/**
 * Whether the side of a partition this node is on may take over the tasks of
 * nodes it cannot reach (README.md, "Partitions"; the whole rule: node/README.md, "Partitions").
 *
 * The recently stable membership is every member that is alive or suspect, or
 * that became dead less than `windowMs` ago; members that left, and the dead
 * beyond the window, are not in it. This side is what this node reaches: the
 * members it sees alive, itself included. A suspect is not reached: a node cut
 * off sees every other member suspect long before it sees them dead (an isolated
 * node's suspicions are never confirmed, and Lifeguard slows its probes), and
 * counting suspects made it a majority while the first of them was dead and the
 * rest still suspect (found by testnet/sim). It holds the majority when it has
 * more than half of the stable membership, or exactly half and the stable
 * member with the lowest id. A node cut off alone in a cluster of three or more
 * is never a majority; the side that lost nodes for good becomes one again once
 * they are older than the window.
 */
export function majority (members: ReadonlyArray<{ id: string, state: string, stateSinceMs: number }>, now: number, windowMs: number): boolean {
  let stable = 0
  let reached = 0
  let lowest: string | undefined
  let lowestReached = false
  for (const m of members) {
    const reachable = m.state === 'alive'
    if (!reachable && m.state !== 'suspect' && !(m.state === 'dead' && now - m.stateSinceMs < windowMs)) continue
    stable++
    if (reachable) reached++
    if (lowest === undefined || m.id < lowest) { lowest = m.id; lowestReached = reachable }
  }
  return 2 * reached > stable || (2 * reached === stable && lowestReached)
}
