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
// Everything is drawn from the scenario's seed, and the node code runs on the
// cluster's virtual clock, so a run replays exactly.

import { createHash } from 'node:crypto'
import { stateFingerprint, stateVectorOf } from '../../crdt/sync.ts'
import { crashDetectionBoundMs, LAN, LOCAL, type MembershipConfig } from '../../membership/config.ts'
import type { MemberMeta } from '../../membership/types.ts'
import { jobOfInstance, parseAttempt } from '../../node/jobs/instances.ts'
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
import { FAULT_KINDS, type Scenario, type Step, type StepKind } from './scenario.ts'
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
  }
}

function digestOf (node: SimNode | null | undefined): string {
  if (!booted(node)) return ''
  return createHash('sha256').update(stateFingerprint(node.state.records.doc)).digest('hex').slice(0, 16)
}

/** The simulated clocks start at 2026-01-01T00:00:00Z (cron and records need a real date). */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1)

export interface Violation {
  invariant: 'capacity' | 'crash-detection' | 'exception' | 'partition' | 'setup' | 'membership' | 'documents' | 'placement' | 'batch' | 'acknowledged' | 'exactly-once'
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
  const drain = async (): Promise<void> => { await new Promise<void>((resolve) => { setImmediate(resolve) }) }
  const run = async (ms: number): Promise<void> => {
    const end = cluster.nowMs + ms
    while (cluster.nowMs < end) {
      cluster.step()
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
        node.submit(step.job).then((view) => { ack(view.id, view.version, false) }, () => {})
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
        const write = step.kind === 'stop' ? node.stopJob(step.job) : node.scaleJob(step.job, step.count)
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
    return checkCluster(facts(), { quick }).problems.map((p) => ({ invariant: p.kind, atMs: cluster.nowMs, detail: p.detail }))
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
  }
}
