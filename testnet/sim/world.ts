// Runs a scenario (scenario.ts) on a cluster of complete simulated nodes
// (node.ts) and holds it to murmur's promises to its users:
//
//   form the cluster ─▶ the scenario's steps (requests, faults) ─▶ heal everything
//   ─▶ settle until the cluster is clean ─▶ hold a while ─▶ check every invariant
//
// Checked all along: no node over its capacity; a crash on a healthy network is
// detected within membership's bound; a node on a minority side takes over
// nothing it knows to be held on the other side, and knows it is a minority once
// the sides have stood that bound; no exception in any node's code.
// Checked at the end, by the definition of a clean cluster that the reliability
// suite on real processes uses too (../cluster-check.ts): membership agrees among
// the live nodes; all documents are equal; every job's desired instances run,
// each on exactly one live node, and nothing else runs; every batch job finished,
// every instance run at least once; nothing acknowledged is lost (every
// acknowledged job, stop and scale is in every document).
//
// With users (scenario.users, the default): the nodes run with a root key, every
// request is signed by a user into a namespace (users.ts), and the admin sets
// quotas before the first step. Checked on every task start: no namespace's
// running tasks exceed its quota (`quota`, see checkQuota), and no task of a job
// that a member wrote without a user's signed request ever starts (`forged`).
//
// Everything is drawn from the scenario's seed, and the node code runs on the
// cluster's virtual clock, so a run replays exactly.

import { createHash } from 'node:crypto'
import { stateFingerprint, stateVectorOf } from '../../crdt/sync.ts'
import { crashDetectionBoundMs, LAN, LOCAL, type MembershipConfig } from '../../membership/config.ts'
import type { MemberMeta } from '../../membership/types.ts'
import { parseAuthorization } from '../../access/request.ts'
import { instanceId, jobOfInstance, parseAttempt } from '../../node/jobs/instances.ts'
import { jobIdOf, namespaceOf, newJobRecord } from '../../node/jobs/records.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'
import { type Amount, type Dim, DIMS, ZERO, mintedOf, rightsOf } from '../../placement/escrow.ts'
import type { JobService } from '../../node/jobs/service.ts'
import { readSpec } from '../../node/jobs/spec.ts'
import type { JobView } from '../../node/jobs/types.ts'
import { isActiveState } from '../../node/reconcile/decide.ts'
import type { ReconcileConfig } from '../../node/reconcile/config.ts'
import type { Reconciler } from '../../node/reconcile/loop.ts'
import type { StateService } from '../../node/state.ts'
import { type ClusterFacts, type NodeFacts, type Workload, checkCluster } from '../cluster-check.ts'
import { SimCluster } from './cluster.ts'
import { SimClock } from './clock.ts'
import { type SimMachine, SimNode } from './node.ts'
import { Rng } from './rng.ts'
import { type RunnerBreach, SimRunner, behaviourOf } from './runner.ts'
import { FAULT_KINDS, type QuotaLimit, type Scenario, type Step, type StepKind, limitText } from './scenario.ts'
import { SimUsers, type SimUserSpec } from './users.ts'
import type { SimDisk } from './transport.ts'

export interface WorldOptions {
  preset: 'lan' | 'local'
  tickMs: number
  /** How long the cluster may take, once healed, to be clean. */
  settleMs: number
  /** How long it must then stay clean. */
  holdMs: number
  /** What each machine offers. */
  meta: MemberMeta
  /** pino level for the nodes' logs (silent unless asked). */
  logLevel?: string
  /** Overrides of the reconcile loop's settings (a test may plant a bug this way). */
  reconcile?: Partial<ReconcileConfig>
  /**
   * A planted bug, for the test that shows the quota invariant can fail: once the
   * quotas are set, `node` writes into its row of `namespace`'s ledger that it
   * minted `amount` more: rights that no quota created.
   */
  plantRights?: { node: string, namespace: string, amount: Amount }
}

export const WORLD_DEFAULTS: Readonly<WorldOptions> = Object.freeze({
  preset: 'lan',
  tickMs: 10,
  settleMs: 90_000,
  holdMs: 5_000,
  meta: Object.freeze({ cpuMillis: 8_000, memoryBytes: 16 * 1024 ** 3, labels: Object.freeze({ zone: 'sim' }) }) as MemberMeta,
})

/** A node that has built its parts (a process just restarted may not have yet). */
type Booted = SimNode & { readonly state: StateService, readonly reconciler: Reconciler, readonly jobs: JobService }

function booted (node: SimNode | null | undefined): node is Booted {
  return node != null && node.state !== undefined && node.reconciler !== undefined && node.jobs !== undefined
}

/** What a simulated job's command does (runner.ts), which says what clean is for it. */
function workloadOf (job: JobView): Workload {
  const behaviour = job.spec === null ? null : behaviourOf(job.spec)
  if (job.type === 'service') return behaviour?.kind === 'crash' ? 'crashes' : 'serves'
  return behaviour?.kind === 'run' && behaviour.code === 0 ? 'succeeds' : 'may-fail'
}

/** The result of a run that threw: the simulator's own bug, or one in node code it called outside a guard. */
export function crashedRun (scenario: Scenario, err: unknown): RunResult {
  const e = err as Error
  return {
    seed: scenario.seed, nodes: scenario.nodes, steps: scenario.steps.length, simulatedMs: 0, faults: {},
    violations: [{ invariant: 'exception', atMs: 0, detail: `the run threw: ${e.stack ?? String(e)}` }],
    cleanAfterMs: undefined, acknowledged: 0, runs: 0, duplicateRuns: 0, batchRunTwice: 0, quiet: false, crashChecks: 0, slowestDetectionMs: 0, digest: '',
    quota: { ...NO_QUOTA_STATS },
  }
}

/** The simulated users besides the admin: each submits into its namespaces (scenario.ts SIM_NAMESPACES). */
export const SIM_USERS: readonly SimUserSpec[] = Object.freeze([
  { name: 'ann', role: 'submit', namespaces: ['default', 'alpha'] },
  { name: 'bo', role: 'submit', namespaces: ['beta', 'default'] },
])

/** What a run did with quotas: enough to tell a sweep that tested them from one that did not. */
export interface QuotaStats {
  /** Task starts in a namespace with a quota, each checked against it. */
  starts: number
  /** The highest use seen at a start, as a fraction of the bound (1: the quota was full). */
  peak: number
  /** Starts at which a namespace was full (use = bound in some dimension). */
  full: number
  /** Quota changes made mid-run, and those not made (the node had not seen the one before: see apply). */
  changes: number
  skipped: number
  /**
   * Starts after a lowering, once use had fallen to the new quota, at which use was
   * above it again while some node still held a debt: the literal reading of the
   * rule ("until use fell below the new one") would call these overshoots; they are
   * within the rule checkQuota applies, and counted to show the difference matters.
   */
  overAfterLowering: number
  /** Instances the final check excused for waiting on a full quota. */
  waiting: number
  /** Jobs forged by a member (none may run). */
  forged: number
}

const NO_QUOTA_STATS: QuotaStats = Object.freeze({ starts: 0, peak: 0, full: 0, changes: 0, skipped: 0, overAfterLowering: 0, waiting: 0, forged: 0 })

/** One namespace's quota as the world holds the cluster to it (see checkQuota). */
interface QuotaTrack {
  namespace: string
  /** The dimensions its quotas bound (a scenario keeps them for the run). */
  dims: Dim[]
  /** The latest quota set, and when (its setAt). */
  limit: QuotaLimit
  setAt: number
  /** What use is checked against, per dimension. */
  bound: Record<Dim, number>
  /** A lowered quota not yet in force for the check (see settleLowering). */
  lowered: Partial<Record<Dim, number>>
  /** Use fell to the lowered quota since it was set (for overAfterLowering). */
  fellBelow: Partial<Record<Dim, boolean>>
}

function digestOf (node: SimNode | null | undefined): string {
  if (!booted(node)) return ''
  return createHash('sha256').update(stateFingerprint(node.state.records.doc)).digest('hex').slice(0, 16)
}

/** The simulated clocks start at 2026-01-01T00:00:00Z (cron and records need a real date). */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1)

export interface Violation {
  invariant: 'capacity' | 'crash-detection' | 'exception' | 'partition' | 'setup' | 'membership' | 'documents' | 'placement' | 'batch' | 'acknowledged' | 'exactly-once' | 'quota' | 'forged'
  atMs: number
  detail: string
}

export interface RunResult {
  seed: number
  nodes: number
  steps: number
  /** Virtual time from the first member's start to the last check. */
  simulatedMs: number
  faults: Partial<Record<StepKind, number>>
  violations: Violation[]
  /** From the heal until the cluster was first clean (undefined: never within settleMs). */
  cleanAfterMs: number | undefined
  acknowledged: number
  /** Task starts in all, and starts of an instance while another copy of it ran elsewhere. */
  runs: number
  duplicateRuns: number
  /** Batch instances claimed and run more than once (by two nodes, or twice by one): allowed under faults only. */
  batchRunTwice: number
  /** The scenario injected no fault: every batch instance must run exactly once. */
  quiet: boolean
  /** Crashes on a quiet network whose detection was timed to the end. */
  crashChecks: number
  /** Longest time a crash took to be seen dead by every live member (checked crashes). */
  slowestDetectionMs: number
  /** A hash of the first node's final document: two runs of one scenario end with the same. */
  digest: string
  quota: QuotaStats
}

interface Acked { job: string, version: number, stopped: boolean }

export async function runScenario (scenario: Scenario, options: Partial<WorldOptions> = {}): Promise<RunResult> {
  const o = { ...WORLD_DEFAULTS, ...options }
  const preset: MembershipConfig = o.preset === 'local' ? LOCAL : LAN
  const ids = Array.from({ length: scenario.nodes }, (_, i) => `n${i}`)
  /** What outlives a node's process: its disk, and its machine's tasks (until the machine goes down: `epoch`). */
  const machines = new Map<string, { disk: SimDisk, runner: SimRunner | null, epoch: number }>(ids.map((id) => [id, { disk: { updates: [] }, runner: null, epoch: 0 }]))
  const violations: Violation[] = []
  const violate = (invariant: Violation['invariant'], detail: string): void => {
    if (violations.filter((v) => v.invariant === invariant).length < 10) violations.push({ invariant, atMs: cluster.nowMs, detail })
  }
  /** instance → nodes where a copy runs now (started and not ended), kept from the runners' reports. */
  const live = new Map<string, Map<string, number>>()
  const started = new Set<string>()
  /** Batch instance → the nodes that started a first attempt of it (a claim's run; later attempts are its retries in place). */
  const batchRuns = new Map<string, string[]>()
  let runs = 0
  let duplicateRuns = 0
  /** The cluster's users: the root key every node is started with, the admin, the users who sign requests. */
  const users = scenario.users === undefined ? null : new SimUsers(scenario.seed, SIM_USERS, SIM_EPOCH_MS - 86_400_000)
  /** Every job submitted (by id, as its signed submission gives it) and by name: its namespace. */
  const jobNamespace = new Map<string, string>()
  const nameNamespace = new Map<string, string>()
  /** Jobs a member wrote that no user signed. */
  const forged = new Set<string>()
  /** Namespaces with a quota, as the world holds the cluster to them. */
  const tracks = new Map<string, QuotaTrack>()
  const quotaStats: QuotaStats = { ...NO_QUOTA_STATS }
  const cluster: SimCluster = new SimCluster({
    seed: scenario.seed,
    preset,
    tickMs: o.tickMs,
    epochMs: SIM_EPOCH_MS,
    meta: () => o.meta,
    app: (context) => new SimNode({
      context,
      meta: o.meta,
      machine: machineOf(context.id),
      profile: o.preset,
      stableWindowMs: preset.deadRetentionMs,
      logLevel: o.logLevel,
      reconcile: o.reconcile,
      ...(users === null ? {} : { rootKey: users.rootKey }),
    }),
  })
  /** The node's machine, with a runner whose timers run while the node process is frozen or dead, until the machine goes down. */
  function machineOf (id: string): SimMachine {
    const m = machines.get(id)!
    if (m.runner === null) {
      const epoch = m.epoch
      const clock = new SimClock(cluster, (fn) => {
        if (m.epoch !== epoch) return
        try {
          fn()
        } catch (err) {
          cluster.appErrors.push({ atMs: cluster.nowMs, id, error: err as Error })
        }
      }, cluster.skewOf(id), SIM_EPOCH_MS)
      m.runner = new SimRunner({
        node: id,
        clock,
        rng: new Rng(scenario.seed).fork(`machine/${id}/${epoch}`),
        capacity: { cpuMillis: o.meta.cpuMillis, memoryBytes: o.meta.memoryBytes },
        onBreach: (b: RunnerBreach) => { violate('capacity', `${b.node}: ${b.task} ${b.message}`) },
        onRun,
      })
    }
    return { disk: m.disk, runner: m.runner }
  }
  function onRun ({ node, task, kind }: { node: string, task: string, kind: 'begin' | 'start' | 'end' }): void {
    const { instance, restarts } = parseAttempt(task)
    let copies = live.get(instance)
    if (kind === 'begin') {
      if (forged.has(jobOfInstance(instance))) violate('forged', `${node} started ${task}, of job ${jobOfInstance(instance)}, which a member wrote and no user signed`)
      checkQuota(node, task)
      // Checked as the node claims it (its first attempt; later ones restart its own claim in place),
      // with what it knew and believed then.
      if (copies !== undefined && restarts === 0) checkMinority(node, instance, copies)
      return
    }
    if (kind === 'start') {
      runs++
      started.add(instance)
      if (restarts === 0 && batchJobs.has(jobOfInstance(instance))) {
        const by = batchRuns.get(instance)
        if (by === undefined) batchRuns.set(instance, [node])
        else by.push(node)
      }
      if (copies === undefined) live.set(instance, copies = new Map())
      if ([...copies.keys()].some((n) => n !== node)) duplicateRuns++
      copies.set(node, (copies.get(node) ?? 0) + 1)
    } else if (copies !== undefined) {
      const left = (copies.get(node) ?? 1) - 1
      if (left > 0) copies.set(node, left)
      else copies.delete(node)
      if (copies.size === 0) live.delete(instance)
    }
  }
  const app = (id: string): SimNode | null => cluster.appOfNode(id) as SimNode | null
  /** Membership's bound on detecting a crash (and so a cut) on a quiet network. */
  const bound = crashDetectionBoundMs(cluster.config, scenario.nodes, o.tickMs)

  /**
   * The partition rule (node/README.md, "Partitions"): a node cut off with less than
   * half of the cluster never takes over an instance it knows to be held on the
   * other side, unless its job runs on every side (`partition: both`): not while
   * it believes its side a minority, and not once it has had the time to see the
   * cut (membership's detection bound; checkBelief holds it to that). Before,
   * it cannot tell a cut from a crash of the nodes it no longer hears; and a claim
   * that had not reached it before the cut is not known to it at all: it places
   * the instance as new work. Both give a duplicate that the heal resolves.
   */
  function checkMinority (node: string, instance: string, copies: ReadonlyMap<string, number>): void {
    const net = cluster.network
    const linked = (a: string, b: string): boolean => net.reachable(a, b) && net.reachable(b, a)
    const across = [...copies.keys()].filter((m) => m !== node && cluster.status(m) !== 'crashed' && !linked(node, m))
    if (across.length === 0) return
    const side = ids.filter((id) => cluster.status(id) === 'up' && linked(node, id)).length
    const believesMajority = app(node)?.reconciler?.majority ?? true
    if (2 * side >= ids.length || (believesMajority && cluster.nowMs - lastFaultAt < bound)) return
    const state = app(node)?.state?.records
    const record = state?.job(jobOfInstance(instance))
    if (state === undefined || record === undefined || readSpec(record.spec)?.partition === 'both') return
    const known = across.filter((m) => state.taskClaims(instance).some((c) => c.node === m && isActiveState(c.state)))
    if (known.length === 0) return
    violate('partition', `${node}, on a side of ${side} of ${ids.length} nodes (it believes ${believesMajority ? 'the majority' : 'a minority'}), started ${instance}, which it knew ${known.join(', ')} held on the other side`)
  }

  /**
   * Once the sides have stood for the detection bound (a freeze or a restart
   * changes them: a frozen process sees nothing meanwhile), every node on a side
   * of less than half the cluster knows it is a minority.
   */
  function checkBelief (): void {
    // The sides as they are now have stood the bound: no fault step since (a freeze, a crash, a new cut…).
    if (cutSince !== Infinity && cluster.nowMs - lastFaultAt >= bound + 1_000) {
      const net = cluster.network
      for (const node of ids) {
        if (cluster.status(node) !== 'up') continue
        const side = ids.filter((id) => cluster.status(id) === 'up' && net.reachable(node, id) && net.reachable(id, node)).length
        if (2 * side < ids.length && app(node)?.reconciler?.majority === true) {
          violate('partition', `${node} is on a side of ${side} of ${ids.length} nodes, cut ${cluster.nowMs - cutSince} ms ago (bound ${bound} ms), but believes it holds the majority`)
        }
      }
    }
    cluster.at(cluster.nowMs + 500, checkBelief)
  }
  /** What the tasks of a namespace hold now, from what the machines run (started or starting, not yet ended): the real thing, not the records. */
  function quotaUse (namespace: string): { use: Record<Dim, number>, by: Map<string, number> } {
    const use: Record<Dim, number> = { cpuMillis: 0, memoryBytes: 0, instances: 0 }
    const by = new Map<string, number>()
    for (const [id, m] of machines) {
      for (const t of m.runner?.live() ?? []) {
        if (jobNamespace.get(t.job) !== namespace) continue
        use.cpuMillis += t.spec.cpuMillis
        use.memoryBytes += t.spec.memoryBytes
        use.instances++
        by.set(id, (by.get(id) ?? 0) + 1)
      }
    }
    return { use, by }
  }

  /**
   * The quota invariant, checked at every task start (the runner's `begin`, with the
   * new task counted): for every namespace with a quota, the sum over all machines of
   * what its running tasks demand (CPU, memory, 1 instance each; a task counts from
   * the moment its start is asked until it has exited, as the escrow rule counts a
   * local task) is at most the quota, in every dimension the quota bounds.
   *
   * "The quota" is the latest one the admin set, except after a lowering (a first
   * quota is set before any work, so it is no lowering). Lowering kills nothing: work
   * above the new quota runs on, and a side that has not seen the change, or cannot
   * reach the node that stored it, spends its rights under the old one
   * (placement/README.md, "Quotas: escrow"). So after a lowering the bound stays at
   * the highest quota in force since the last raise until the lowering has settled
   * (settleLowering): use is at most the new quota and no node holds a debt. A raise
   * (or the same quota again) is the bound from the moment it is stored.
   */
  function checkQuota (node: string, task: string): void {
    const namespace = jobNamespace.get(jobOfInstance(parseAttempt(task).instance))
    const track = namespace === undefined ? undefined : tracks.get(namespace)
    if (track === undefined) return
    settleLowering(track)
    const { use, by } = quotaUse(track.namespace)
    quotaStats.starts++
    let full = false
    for (const d of track.dims) {
      const bound = track.bound[d]
      quotaStats.peak = Math.max(quotaStats.peak, use[d] / bound)
      if (use[d] === bound) full = true
      if (track.fellBelow[d] === true && track.lowered[d] !== undefined && use[d] > track.lowered[d]) quotaStats.overAfterLowering++
      if (use[d] <= bound) continue
      const lowered = track.lowered[d] === undefined ? '' : ` (the quota is ${dimText(d, track.lowered[d])}, lowered from this bound; the lowering has not settled)`
      violate('quota', `namespace ${track.namespace}: ${dimText(d, use[d])} in use, over the quota's ${dimText(d, bound)}${lowered}, once ${node} started ${task}; its tasks run on ${[...by].sort().map(([n, k]) => `${n} (${k})`).join(', ')}`)
    }
    if (full) quotaStats.full++
  }

  function dimText (d: Dim, v: number): string {
    return d === 'cpuMillis' ? `cpu ${v}m` : d === 'memoryBytes' ? `memory ${Math.round(v / 1024 ** 2)}Mi` : `${v} instances`
  }

  /** The admin set `limit` (stored on a node at `setAt`): a raise is the bound at once, a lowering once settled. */
  function applyLimit (track: QuotaTrack, limit: QuotaLimit, setAt: number): void {
    track.limit = limit
    track.setAt = setAt
    for (const d of track.dims) {
      const value = limit[d]!
      if (value >= track.bound[d]) {
        track.bound[d] = value
        delete track.lowered[d]
        delete track.fellBelow[d]
      } else {
        track.lowered[d] = value
        track.fellBelow[d] = false
      }
    }
  }

  /**
   * A lowering has settled, and the bound becomes the new quota, once use is at most
   * the new quota while every node is up and holds, as its own view counts them, at
   * least the rights it uses (no debt anywhere). From then on each node's use stays
   * within its rights, whose sum is the new quota. Use falling below the new quota is
   * not enough by itself: a node in debt whose work has ended still holds the debt
   * (negative rights), and a node that cannot reach it (a cut, or the debtor is down)
   * does not repay it and spends its own rights meanwhile, by design.
   */
  function settleLowering (track: QuotaTrack): void {
    const dims = track.dims.filter((d) => track.lowered[d] !== undefined)
    if (dims.length === 0) return
    const { use } = quotaUse(track.namespace)
    const below = dims.filter((d) => use[d] <= track.lowered[d]!)
    for (const d of below) track.fellBelow[d] = true
    if (below.length === 0) return
    const debtFree = new Set<Dim>(below)
    for (const id of ids) {
      const node = app(id)
      const status = cluster.status(id)
      if ((status !== 'up' && status !== 'paused') || !booted(node) || node.access == null) return
      const rights = rightsOf(node.access.rows(track.namespace)).get(id) ?? ZERO
      const used = ownUse(node, track.namespace)
      for (const d of below) if (used[d] > rights[d]) debtFree.delete(d)
    }
    for (const d of debtFree) {
      track.bound[d] = track.lowered[d]!
      delete track.lowered[d]
      delete track.fellBelow[d]
    }
  }

  /** What a node uses of a namespace's quota as its escrow rule counts it: its live claims in its own document, and its local tasks. */
  function ownUse (node: Booted, namespace: string): Amount {
    const held = new Map<string, { cpuMillis: number, memoryBytes: number }>()
    const records = node.state.records
    for (const c of records.tasks()) {
      if (c.node !== node.id || !isActiveState(c.state)) continue
      const job = records.job(c.job)
      const spec = job === undefined ? null : readSpec(job.spec)
      if (job !== undefined && spec !== null && namespaceOf(job) === namespace) held.set(c.id, spec)
    }
    for (const t of node.runner.live()) if (jobNamespace.get(t.job) === namespace) held.set(parseAttempt(t.id).instance, t.spec)
    let out: Amount = ZERO
    for (const h of held.values()) out = { cpuMillis: out.cpuMillis + h.cpuMillis, memoryBytes: out.memoryBytes + h.memoryBytes, instances: out.instances + 1 }
    return out
  }

  /** Runs a request on a node until it is answered (simulated time passes meanwhile); its error, if any. */
  async function call (what: string, fn: () => Promise<unknown>): Promise<string | null> {
    let result: string | null | undefined
    fn().then(() => { result = null }, (err: Error) => { result = err.message })
    await runUntil(() => result !== undefined, 20_000, o.tickMs)
    if (result === undefined) return `${what}: no answer within 20 s`
    return result
  }

  /** The admin's clock for quotas: each change later than the last (a node refuses an older one). */
  let adminSetAt = 0
  const nextSetAt = (): number => (adminSetAt = Math.max(adminSetAt + 1, SIM_EPOCH_MS + cluster.nowMs))

  /** Before the first step: the users' grants and the first quotas, stored through n0, seen by every node. */
  async function setupUsers (): Promise<void> {
    if (users === null || scenario.users === undefined) return
    const n0 = app('n0')
    if (!booted(n0)) { violate('setup', 'n0 has not built its parts: no users or quotas'); return }
    for (const grant of users.grants()) {
      const err = await call(`grant of ${grant.name}`, async () => { await n0.addUser(grant) })
      if (err !== null) violate('setup', `the grant of ${grant.name} was refused: ${err}`)
    }
    for (const [namespace, limit] of Object.entries(scenario.users.quotas)) {
      const setAt = nextSetAt()
      const err = await call(`quota of ${namespace}`, async () => { await n0.setQuota(namespace, users.quota(namespace, limit, setAt)) })
      if (err !== null) { violate('setup', `the quota of ${namespace} was refused: ${err}`); continue }
      const dims = DIMS.filter((d) => limit[d] !== null)
      const track: QuotaTrack = { namespace, dims, limit, setAt, bound: { cpuMillis: Infinity, memoryBytes: Infinity, instances: Infinity }, lowered: {}, fellBelow: {} }
      for (const d of dims) track.bound[d] = limit[d]!
      tracks.set(namespace, track)
    }
    // Every node holds the quotas and their rights before any work: a node that has not seen a quota yet runs its namespace unbounded.
    const seen = await runUntil(() => ids.every((id) => {
      const book = app(id)?.access
      return book != null && [...tracks.values()].every((t) => book.quota(t.namespace)?.setAt === t.setAt && t.dims.every((d) => mintedOf(book.rows(t.namespace))[d] === t.limit[d]))
    }), 30_000, 100)
    if (seen === undefined) violate('setup', 'the quotas did not reach every node within 30 s')
    const plant = o.plantRights
    if (plant !== undefined) {
      const node = app(plant.node)
      if (!booted(node) || node.access == null) { violate('setup', `cannot plant rights on ${plant.node}`); return }
      const own = node.access.rows(plant.namespace).find((r) => r.node === plant.node)
      const minted = own?.minted ?? ZERO
      const err = await call('planted rights', async () => {
        await node.state.write((s) => {
          s.putAccess({ id: `share-${plant.namespace}`, kind: 'share', namespace: plant.namespace, minted: { cpuMillis: minted.cpuMillis + plant.amount.cpuMillis, memoryBytes: minted.memoryBytes + plant.amount.memoryBytes, instances: minted.instances + plant.amount.instances }, given: own?.given ?? {} })
        })
      })
      if (err !== null) violate('setup', `planting rights: ${err}`)
    }
  }

  /** A request signed by a user, at the clock of the node it goes to. */
  function signed (node: string, namespace: string, method: string, path: string, body: string): ReturnType<SimUsers['sign']> {
    const user = users!.userFor(namespace)
    return users!.sign(user, method, path, body, SIM_EPOCH_MS + cluster.nowMs + cluster.skewOf(node))
  }

  /**
   * Instances the end check excuses for not running: waiting on their namespace's
   * quota, which is full. Work in a namespace with a quota may wait for good: the
   * jobs wanted more than the quota holds, and nothing of it runs until other work of
   * the namespace ends (a service's never does). Such an instance is held by no node
   * and no machine runs it; a live node's last pass left it pending for the quota
   * (its message names the namespace); and it does not fit beside what the
   * namespace holds now (live claims and running tasks) within the quota or within
   * the rights that exist (the mints in the ledger), in some dimension. One that
   * would fit is not excused: once everything has healed and every node is back,
   * rights move to where the work is, and an instance that still waits is a bug.
   * A batch with such an instance is excused from finishing.
   */
  function quotaWaiting (): { instances: Set<string>, jobs: Set<string> } {
    const out = { instances: new Set<string>(), jobs: new Set<string>() }
    if (users === null) return out
    const first = ids.filter((id) => cluster.status(id) === 'up').map((id) => app(id)).find(booted)
    const book = first?.access
    if (first === undefined || book == null) return out
    const records = first.state.records
    const byNs = new Map<string, Array<{ id: string, spec: NonNullable<ReturnType<typeof readSpec>> }>>()
    for (const record of records.jobs()) {
      const spec = readSpec(record.spec)
      if (record.desired !== 'running' || spec === null || book.limit(namespaceOf(record)) === null) continue
      for (let i = 0; i < spec.count; i++) {
        const id = instanceId(record.id, i)
        let list = byNs.get(namespaceOf(record))
        if (list === undefined) byNs.set(namespaceOf(record), list = [])
        list.push({ id, spec })
      }
    }
    for (const [ns, instances] of byNs) {
      const limit = book.limit(ns)!
      const minted = mintedOf(book.rows(ns))
      // What the namespace holds: live claims (a crash loop's instance between two attempts holds its share) and running tasks.
      const held = new Map<string, { cpuMillis: number, memoryBytes: number }>()
      for (const c of records.tasks()) {
        const job = records.job(c.job)
        const spec = job === undefined ? null : readSpec(job.spec)
        if (isActiveState(c.state) && job !== undefined && spec !== null && namespaceOf(job) === ns) held.set(c.id, spec)
      }
      for (const m of machines.values()) for (const t of m.runner?.live() ?? []) if (jobNamespace.get(t.job) === ns) held.set(parseAttempt(t.id).instance, t.spec)
      const use: Record<Dim, number> = { cpuMillis: 0, memoryBytes: 0, instances: 0 }
      for (const h of held.values()) { use.cpuMillis += h.cpuMillis; use.memoryBytes += h.memoryBytes; use.instances++ }
      for (const { id, spec } of instances) {
        if (held.has(id) || ids.some((n) => app(n)?.reconciler?.attempt(id) !== undefined)) continue
        const waits = ids.some((n) => app(n)?.reconciler?.pending(id)?.message.startsWith(`namespace ${ns}:`) === true)
        const demand: Record<Dim, number> = { cpuMillis: spec.cpuMillis, memoryBytes: spec.memoryBytes, instances: 1 }
        const full = DIMS.some((d) => limit[d] !== null && use[d] + demand[d] > Math.min(limit[d]!, minted[d]))
        if (waits && full) {
          out.instances.add(id)
          out.jobs.add(jobOfInstance(id))
        }
      }
    }
    return out
  }

  /** Whether an end-check problem is only that an instance excused by quotaWaiting (or its batch) is not running or not done. */
  function excused (p: Violation, waiting: { instances: Set<string>, jobs: Set<string> }): boolean {
    if (p.invariant !== 'placement' && p.invariant !== 'batch') return false
    const instance = /^(\S+) is held by no node;/.exec(p.detail)?.[1] ?? /^(\S+) has no process on a live node$/.exec(p.detail)?.[1] ??
      /^(\S+) never ran$/.exec(p.detail)?.[1] ?? (/^\S+ sees batch /.test(p.detail) ? undefined : /^\S+ sees (\S+) (?!held by )/.exec(p.detail)?.[1])
    if (instance !== undefined) return waiting.instances.has(instance)
    const job = /^batch job (\S+) has not finished$/.exec(p.detail)?.[1] ?? /^\S+ sees batch (\S+) /.exec(p.detail)?.[1]
    // A batch whose instance waited on a full quota until shortly before the check (got its share late) may
    // still be running at the end: it started late by design, not stalled. Only within QUOTA_LATE_MS of its last
    // wait (a batch run and its retries); an instance that never ran is judged above.
    const waitedAt = job === undefined ? undefined : quotaWaitedAt.get(job)
    return job !== undefined && (waiting.jobs.has(job) || (waitedAt !== undefined && cluster.nowMs - waitedAt <= QUOTA_LATE_MS))
  }

  /** When some instance of a job was last seen waiting on its namespace's quota (sampled every second). */
  const quotaWaitedAt = new Map<string, number>()
  const QUOTA_LATE_MS = 30_000
  let lastQuotaSample = -Infinity
  const sampleQuotaWaits = (): void => {
    if (users === null || cluster.nowMs - lastQuotaSample < 1_000) return
    lastQuotaSample = cluster.nowMs
    for (const id of ids) {
      for (const [instance, p] of app(id)?.reconciler?.pendingAll() ?? []) if (p.message.startsWith('namespace ')) quotaWaitedAt.set(jobOfInstance(instance), cluster.nowMs)
    }
  }

  const drain = async (): Promise<void> => { await new Promise<void>((resolve) => { setImmediate(resolve) }) }
  const run = async (ms: number): Promise<void> => {
    const end = cluster.nowMs + ms
    while (cluster.nowMs < end) {
      cluster.step()
      sampleQuotaWaits()
      await drain()
    }
  }
  const runUntil = async (done: () => boolean, maxMs: number, everyMs = 250): Promise<number | undefined> => {
    const start = cluster.nowMs
    while (cluster.nowMs - start <= maxMs) {
      if (done()) return cluster.nowMs - start
      await run(everyMs)
    }
    return undefined
  }

  // ---- form the cluster ----
  ids.forEach((id, i) => { cluster.add(id, scenario.skewsMs[i] ?? 0) })
  ids.slice(1).forEach((id, i) => { cluster.at((i + 1) * 20, () => { cluster.join(id, ['n0']) }) })
  const formed = await runUntil(() => cluster.allAgree(), 60_000)
  if (formed === undefined) violate('setup', `the cluster did not form within 60 s: ${cluster.disagreements(3).join('; ')}`)
  await run(1_000)
  await setupUsers()
  const t0 = cluster.nowMs

  // ---- the scenario ----
  /** The names of the jobs submitted: a stop or scale names one (a job is found by its name, as `murmur job stop web`). */
  const submitted = new Set<string>()
  /** The ids of the batch jobs submitted. */
  const batchJobs = new Set<string>()
  const acked = new Map<string, Acked>()
  const faults: Partial<Record<StepKind, number>> = {}
  let lastFaultAt = -Infinity
  /** Since when the network has had a partition or a cut (Infinity: it has none). */
  let cutSince = Infinity

  let crashChecks = 0
  let slowestDetectionMs = 0
  const ack = (job: string, version: number, stopped: boolean): void => {
    const before = acked.get(job)
    if (before === undefined || before.version < version) acked.set(job, { job, version, stopped: stopped || (before?.stopped ?? false) })
    else if (stopped) before.stopped = true
  }
  const quiet = (): boolean => !cluster.network.faulty && cluster.network.settings.lossRate === 0 && ids.every((id) => cluster.status(id) !== 'paused')

  const apply = (step: Step): void => {
    if (FAULT_KINDS.has(step.kind)) {
      faults[step.kind] = (faults[step.kind] ?? 0) + 1
      lastFaultAt = cluster.nowMs
    }
    switch (step.kind) {
      case 'submit': {
        const node = app(`n${step.node}`)
        if (node === null || cluster.status(`n${step.node}`) !== 'up') return
        submitted.add(step.job.name)
        if (users !== null) {
          // A user who may submit in the namespace signs the request; the node checks it as its API does.
          const namespace = step.namespace ?? 'default'
          const req = signed(node.id, namespace, 'POST', `/v1/jobs?namespace=${namespace}`, JSON.stringify(step.job))
          const header = parseAuthorization(req.authorization)
          if (typeof header !== 'string') jobNamespace.set(jobIdOf(step.job.name, header), namespace)
          nameNamespace.set(step.job.name, namespace)
          node.submitSigned(req, namespace).then((view) => { ack(view.id, view.version, false) }, () => {})
        } else {
          node.submit(step.job).then((view) => { ack(view.id, view.version, false) }, () => {})
        }
        // The record is in the node's document at once, and may run before the answer.
        // A refused submission (a bad spec, no node could hold it) wrote nothing: there is no id to note.
        if (step.job.type === 'batch') { const id = node.state?.records.jobs().find((j) => j.name === step.job.name)?.id; if (id !== undefined) batchJobs.add(id) }
        return
      }
      case 'stop':
      case 'scale': {
        const node = app(`n${step.node}`)
        if (!submitted.has(step.job) || node === null || cluster.status(`n${step.node}`) !== 'up') return
        // Refused (the node does not know the job yet, or it cannot be scaled): nothing is acknowledged.
        const namespace = nameNamespace.get(step.job) ?? 'default'
        const path = `/v1/jobs/${encodeURIComponent(step.job)}/${step.kind}?namespace=${namespace}`
        const write = users === null
          ? step.kind === 'stop' ? node.stopJob(step.job) : node.scaleJob(step.job, step.count)
          : step.kind === 'stop'
            ? node.stopSigned(signed(node.id, namespace, 'POST', path, ''), step.job, namespace)
            : node.scaleSigned(signed(node.id, namespace, 'POST', path, JSON.stringify({ count: step.count })), step.job, step.count, namespace)
        write.then((view) => { ack(view.id, view.version, view.desired === 'stopped') }, () => {})
        return
      }
      case 'crash': {
        const id = `n${step.node}`
        if (cluster.status(id) !== 'up' && cluster.status(id) !== 'paused') return
        const wasQuiet = quiet()
        cluster.crash(id)
        if (step.machine === true) {
          // The machine goes down with it: its tasks end.
          const m = machines.get(id)!
          void m.runner?.close()
          m.runner = null
          m.epoch++
        }
        if (wasQuiet) checkDetection(id, cluster.nowMs, cluster.lifeOf(id))
        return
      }
      case 'restart': {
        const id = `n${step.node}`
        if (cluster.status(id) !== 'crashed') return
        cluster.restart(id, ids.filter((x) => x !== id), step.skewMs)
        return
      }
      case 'pause':
        if (cluster.status(`n${step.node}`) === 'up') cluster.pause(`n${step.node}`)
        return
      case 'resume':
        if (cluster.status(`n${step.node}`) === 'paused') cluster.resume(`n${step.node}`)
        return
      case 'partition':
        cluster.partition(step.groups.map((g) => g.map((i) => `n${i}`)))
        cutSince = cluster.nowMs
        return
      case 'cut':
        cluster.network.cut(`n${step.from}`, `n${step.to}`)
        cutSince = cluster.nowMs
        return
      case 'heal':
        cluster.heal()
        cutSince = Infinity
        return
      case 'link':
        cluster.network.setLink(`n${step.node}`, { delayMs: step.delayMs, jitterMs: step.jitterMs, lossRate: step.lossRate })
        return
      case 'unlink':
        cluster.network.setLink(`n${step.node}`, undefined)
        return
      case 'network':
        cluster.network.configure({ lossRate: step.lossRate, duplicateRate: step.duplicateRate })
        return
      case 'quota': {
        const id = `n${step.node}`
        const node = app(id)
        const track = tracks.get(step.namespace)
        if (users === null || track === undefined || cluster.status(id) !== 'up' || !booted(node) || node.access == null) return
        // Only through a node that holds the quota before and every mint: two changes stored without seeing each
        // other both mint, and the rights that exist are then more than either quota until the next change
        // (placement/README.md, "Limits, plainly": 10 → 20 and 10 → 15 make 25). That limit is known; the scenario does not make it.
        const minted = mintedOf(node.access.rows(step.namespace))
        if (node.access.quota(step.namespace)?.setAt !== track.setAt || track.dims.some((d) => minted[d] !== track.limit[d])) {
          quotaStats.skipped++
          return
        }
        faults.quota = (faults.quota ?? 0) + 1
        const setAt = nextSetAt()
        node.setQuota(step.namespace, users.quota(step.namespace, step.limit, setAt)).catch(() => {})
        // The change and its mint are in the node's document at once (then on its disk): from now on they count.
        if (node.access.quota(step.namespace)?.setAt !== setAt) { quotaStats.skipped++; return }
        quotaStats.changes++
        applyLimit(track, step.limit, setAt)
        return
      }
      case 'forge': {
        const id = `n${step.node}`
        const node = app(id)
        if (users === null || cluster.status(id) !== 'up' || !booted(node)) return
        // A record as a member without users would write it: no signed request behind it.
        const record = newJobRecord(normalizeJob(step.job), id, SIM_EPOCH_MS + cluster.nowMs, createHash('sha256').update(`${scenario.seed}/${step.job.name}`).digest('hex').slice(0, 8))
        forged.add(record.id)
        jobNamespace.set(record.id, 'default')
        quotaStats.forged++
        node.forge(record).catch(() => {})
      }
    }
  }

  /** A crash on a quiet network: every live member must see it dead within the bound, unless another fault came meanwhile. */
  function checkDetection (id: string, at: number, life: number): void {
    const seen = new Map<string, number>()
    const watch = (): void => {
      if (cluster.lifeOf(id) !== life || cluster.status(id) !== 'crashed' || lastFaultAt > at) return
      const observers = cluster.liveIds()
      for (const observer of observers) {
        const s = cluster.stateOf(observer, id)
        if (!seen.has(observer) && (s === 'dead' || s === 'left' || s === undefined)) seen.set(observer, cluster.nowMs - at)
      }
      if (observers.every((obs) => seen.has(obs))) {
        crashChecks++
        slowestDetectionMs = Math.max(slowestDetectionMs, ...seen.values())
        return
      }
      if (cluster.nowMs - at > bound) {
        const late = observers.filter((obs) => !seen.has(obs))
        crashChecks++
        violate('crash-detection', `${id} crashed at ${at} ms on a quiet network; after ${cluster.nowMs - at} ms (bound ${bound} ms) ${late.join(', ')} still see it ${late.map((obs) => cluster.stateOf(obs, id)).join(', ')}`)
        return
      }
      cluster.at(cluster.nowMs + 100, watch)
    }
    cluster.at(cluster.nowMs + 100, watch)
  }

  for (const step of scenario.steps) cluster.at(t0 + step.atMs, () => { apply(step) })
  checkBelief()
  // A lowering may settle between two starts: looked at twice a second as well.
  const settleAll = (): void => {
    for (const track of tracks.values()) settleLowering(track)
    cluster.at(cluster.nowMs + 500, settleAll)
  }
  if (tracks.size > 0) settleAll()
  const lastStep = scenario.steps.reduce((m, s) => Math.max(m, s.atMs), 0)
  await run(lastStep + o.tickMs)

  // ---- heal everything ----
  cluster.heal()
  for (const id of ids) cluster.network.setLink(id, undefined)
  cluster.network.configure({ lossRate: 0, duplicateRate: 0 })
  for (const id of ids) {
    if (cluster.status(id) === 'paused') cluster.resume(id)
    if (cluster.status(id) === 'crashed') cluster.restart(id, ids.filter((x) => x !== id))
  }

  // ---- settle, hold, check ----
  const cleanAfterMs = await runUntil(() => problems(true).length === 0, o.settleMs, 500)
  await run(o.holdMs)
  // Still clean after the hold: give what is in flight (a crash-looping service's latest record) a moment to land.
  await runUntil(() => problems(true).length === 0, 5_000, o.tickMs)
  for (const p of problems(false)) violations.push(p)
  const runTwice = [...batchRuns].filter(([, by]) => by.length > 1)
  const faultFree = scenario.steps.every((s) => !FAULT_KINDS.has(s.kind))
  // Exactly once when nothing fails: no node suspected, cut off, paused or lost, so no claim is ever made twice.
  if (faultFree) for (const [id, by] of runTwice.slice(0, 10)) violate('exactly-once', `batch instance ${id} ran ${by.length} times (on ${by.join(', ')}) in a run with no fault`)
  for (const e of cluster.appErrors) violate('exception', `${e.id} at ${e.atMs} ms: ${e.error.stack ?? e.error.message}`)
  if (cleanAfterMs === undefined && violations.length === 0) violate('setup', `the cluster was not clean within ${o.settleMs} ms of the heal`)

  /** What is wrong now (cluster-check.ts); `quick` stops at the first kind of problem (for the settle loop). */
  function problems (quick: boolean): Violation[] {
    const found = checkCluster(facts(), { quick }).problems.map((p): Violation => ({ invariant: p.kind, atMs: cluster.nowMs, detail: p.detail }))
    if (found.length === 0 || users === null) return found
    const waiting = quotaWaiting()
    const left = found.filter((p) => !excused(p, waiting))
    if (!quick) quotaStats.waiting = waiting.instances.size
    // Quick stops at the first kind of problem: if all it found is excused, the kinds after it must be looked at too.
    return quick && left.length === 0 ? problems(false) : left
  }

  /** The cluster as the check sees it: each node's parts in memory, and what the machines run. */
  function facts (): ClusterFacts {
    const read = new Map<string, NodeFacts | string>()
    for (const id of cluster.liveIds()) {
      const node = app(id)
      read.set(id, booted(node) ? nodeFacts(node) : 'has not built its parts yet (its process is starting)')
    }
    // Every job of the first node's document, and every one acknowledged.
    const first = ids.map((id) => app(id)).find(booted)
    const jobs = new Map<string, ClusterFacts['jobs'][number]>()
    for (const record of first?.state.records.jobs() ?? []) jobs.set(record.id, { id: record.id })
    for (const a of acked.values()) jobs.set(a.job, { id: a.job, acknowledged: { version: a.version, stopped: a.stopped } })
    const processes: Array<{ instance: string, node: string }> = []
    for (const [instance, copies] of live) for (const [node, n] of copies) for (let k = 0; k < n; k++) processes.push({ instance, node })
    return {
      nodes: ids.map((id) => ({ id, live: cluster.status(id) === 'up', status: cluster.status(id) })),
      name: (id) => id,
      read,
      jobs: [...jobs.values()],
      everyJob: true,
      workload: workloadOf,
      processes,
      started,
    }
  }

  function nodeFacts (node: Booted): NodeFacts {
    const doc = node.state.records.doc
    const views = new Map<string, ReturnType<NodeFacts['job']>>()
    let running: string[] | undefined
    return {
      members: cluster.memberView(node.id),
      vector: stateVectorOf(doc),
      digest: () => Buffer.from(stateFingerprint(doc)).toString('base64'),
      job: (id) => {
        if (!views.has(id)) views.set(id, node.state.records.job(id) === undefined ? null : node.jobs.history(id))
        return views.get(id)!
      },
      get running () { return (running ??= node.runner.list().filter((t) => t.phase !== 'ended').map((t) => t.id)) },
      holds: (instance) => node.reconciler.attempt(instance) !== undefined,
    }
  }

  return {
    seed: scenario.seed,
    nodes: scenario.nodes,
    steps: scenario.steps.length,
    simulatedMs: cluster.nowMs,
    faults,
    violations,
    cleanAfterMs: cleanAfterMs === undefined ? undefined : cleanAfterMs,
    acknowledged: acked.size,
    runs,
    duplicateRuns,
    batchRunTwice: runTwice.length,
    quiet: faultFree,
    crashChecks,
    slowestDetectionMs,
    digest: digestOf(ids.map((id) => app(id)).find((n) => n !== null)),
    quota: quotaStats,
  }
}
