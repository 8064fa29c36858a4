// Jobs benchmark: a 5-node testnet on loopback (real node processes, real libp2p,
// real cgroups), driven through the HTTP API with murmur/client and watched
// through every node's event stream. Prints figures, each next to its target
// with "met" or "missed"; never fails on time. Usage:
//   npm run bench:jobs -- [--only latency,throughput,sigkill,sigstop] [--quick] [--json]
//                         [--submissions 200] [--seconds 20] [--inflight 10] [--trials 3]
//   npm run bench:jobs -- --compare-users [--variants users,open] [--rounds 1]
//                         [--only latency,throughput] [the sizes above]
//
//   --compare-users  what users cost: the parts (latency and throughput) on a closed
//               testnet with users, as `murmur testnet up` starts it (every request
//               signed by its admin key, every job record carrying the signed
//               submission every node checks), then, with the same sizes, on an
//               otherwise identical testnet without users (`open`: the same node
//               processes and flags but --insecure-open-cluster and no --root-key,
//               requests unsigned; it has no cluster key either); each testnet taken
//               down before the next. Prints each run's tables, then the figures side
//               by side with their ratio. --variants adds `open-users`
//               (--insecure-open-cluster with --root-key: users without the cluster
//               key, to tell the two apart); --rounds repeats the whole in the order
//               A B, B A, … (a round of users and open: about 2 minutes)
//   latency     submit → running: a service `sleep 30` (cpu 10m, memory 16M) submitted
//               on a random node, timed from just before submitJob until that node's
//               event stream shows a claim of it `running`; one job at a time, each
//               stopped (all its claims ended) before the next, after 5 warm-up jobs.
//               The records' own times (one machine, one clock) split it into
//               phases: request in, claimed and task entry made, running recorded, seen
//   throughput  batch jobs of `true` submitted by --inflight workers spread over the
//               nodes, as fast as the nodes accept, for a warm-up second and then
//               --seconds: instances first seen running or exited (on any stream)
//               per second in that window; then the backlog is drained. Refusals
//               (503 OVERLOADED) are counted and retried after 50 ms. Beside it,
//               the nodes' own counters per start (GET /v1/node, /v1/state: state
//               updates gossiped, received, applied; reconcile passes) and their
//               CPU, their spawners' (node/executor/spawner.ts) included
//   both        duplicate runs: instances that ran on more than one node, or more
//               than once on one node, by the event streams (claims with a start
//               time) and by the nodes' logs (each "task started" line is a process)
//   sigkill     a service of 20 `sleep 600`; once all run, SIGKILL of the node that
//               holds the most, once every node's stream has shown each instance's
//               claim (a claim only its writer has shown may not have left it, and
//               would die with it: the others then run the instance as new, at the
//               same generation); per instance it held: the kill → a running claim
//               of a higher generation from another node (first seen on any
//               stream). --trials times, a new job each, the node restarted between
//   sigstop     the same with SIGSTOP; the node is resumed once its instances run
//               elsewhere (or after 30 s). Its tasks kept running while it was
//               paused, and its claims (the lower generation) meet the replacements:
//               the time from SIGCONT until every instance has one live claim
//               again, and which side kept them, are extra figures
//
// The parts run in the order latency, sigkill, sigstop, throughput on one testnet:
// throughput last, because the thousands of finished jobs it leaves stay in the
// state (for the job retention) and every later reconcile pass reads them all.
// A victim is never a node that (re)joined less than 15 s ago: SWIM gives a
// newcomer's suspicion its ceiling (membership/swim.ts, newcomerGraceMs), so the
// first failover waits until the testnet is 15 s old.
//
// The full run takes about 1.5 minutes on 2 cores; --quick about 40 s (40
// submissions, 5 s of throughput, one trial each; the targets are for the full
// run). --json: one JSON document on stdout instead of the tables (progress still
// goes to stderr). Needs root for cgroups. Everything runs on one machine, so the
// nodes, their tasks and this process share its cores: run it alone. Ctrl-C takes
// the testnet down and removes its temp dir (BENCH_KEEP_DIR=1 keeps it, with the
// nodes' data dirs and logs, to look into a figure).

import { closeSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { cpus, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { ApiError, type Client, type ClientOptions, type ClusterEvent, type JobView, type MemberEvent, type ClaimRecord, connect } from '../cli/client.ts'
import { writeClusterFiles } from '../cli/cluster-files.ts'
import { table } from '../cli/table.ts'
import { PRESETS } from '../membership/config.ts'
import { detectHierarchies } from '../node/executor/cgroups.ts'
import { parseAttempt } from '../node/jobs/instances.ts'
import { isActiveState } from '../node/reconcile/decide.ts'
import { NO_NETWORK_FAULTS } from '../testnet/local/faults.ts'
import { cpuTicks, freePorts, spawnNode } from '../testnet/local/process.ts'
import { type TestnetNode, type TestnetState, writeState } from '../testnet/local/state.ts'
import * as testnet from '../testnet/local/testnet.ts'
import { COMMON_OPTIONS, Report, log, machineTimes, ownCpuMs, percentile, rootCpuMs, selectParts } from './report.ts'

// testnet.up writes a CLI context (cli/context.ts) into the user's config, and makes it current: this run's
// contexts go to a config of its own, removed when the process exits, so ~/.config is never touched.
const configDir = mkdtempSync(join(tmpdir(), 'murmur-bench-config-'))
process.env.MURMUR_CONFIG = join(configDir, 'config.json')
process.on('exit', () => { rmSync(configDir, { recursive: true, force: true }) })

const PARTS = ['latency', 'throughput', 'sigkill', 'sigstop'] as const
type Part = typeof PARTS[number]
const RUN_ORDER: readonly Part[] = ['latency', 'sigkill', 'sigstop', 'throughput']

const TARGETS = Object.freeze({
  submitToRunningP50MsMax: 50,
  submitToRunningP99MsMax: 250,
  tasksPerSecondMin: 100,
  sigkillMedianMsMax: 2_000,
  sigstopMedianMsMax: 4_000,
})

const NODES = 5
/** What every task asks for: small, so that capacity never limits a part (a node of 2 cores offers 1900m). */
const TASK = Object.freeze({ cpu: '10m', memory: '16M' })
const SERVICE_COUNT = 20
const WARMUP_JOBS = 5
const NEWCOMER_GRACE_MS = PRESETS.local.newcomerGraceMs
const LIMITS = Object.freeze({
  /** One latency job not running by then is counted as timed out. */
  runningWaitMs: 15_000,
  /** All instances of a failover service running, a stopped job's claims ended, every node alive everywhere. */
  settleMs: 60_000,
  /** A victim's instances not running elsewhere by then are reported as not replaced. */
  failoverWaitMs: 30_000,
  /** After the throughput window: how long the backlog may take to start. */
  drainMs: 30_000,
  /** Pause after submit refused (503 OVERLOADED, a timeout) before the worker tries again. */
  refusedBackoffMs: 50,
})
/** Within one generation a node's claim only moves forward; a record of the same millisecond is ordered by this. */
const STATE_ORDER: Readonly<Record<string, number>> = { claimed: 0, starting: 1, running: 2, restarting: 2, exited: 3, failed: 3, killed: 3, lost: 3 }

// ---- figures ---------------------------------------------------------------------------

const summary = new Report()

const median = (xs: readonly number[]): number => percentile(xs, 0.5)
const max = (xs: readonly number[]): number => xs.length === 0 ? NaN : Math.max(...xs)
const ms = (x: number): string => Number.isNaN(x) ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`
const count = (x: number): string => Math.round(x).toLocaleString('en-US')
const perSecond = (x: number): string => Number.isNaN(x) ? '-' : `${count(x)}/s`
const pct = (x: number): string => Number.isNaN(x) ? '-' : `${x.toFixed(0)} %`
const r1 = (x: number): number => Math.round(x * 10) / 10
const defined = (xs: ReadonlyArray<number | undefined>): number[] => xs.filter((x): x is number => x !== undefined && !Number.isNaN(x))
/** The machine's clock with sub-millisecond resolution, comparable with the records' Date.now() times. */
const wall = (perfMs: number): number => performance.timeOrigin + perfMs

interface Spread { n: number, p50: number, p99: number, max: number }
function spread (xs: readonly number[]): Spread {
  return { n: xs.length, p50: r1(percentile(xs, 0.5)), p99: r1(percentile(xs, 0.99)), max: r1(max(xs)) }
}

// ---- the event streams -----------------------------------------------------------------

type TaskListener = (record: ClaimRecord, observer: number, atMs: number) => void
type MemberListener = (event: MemberEvent, observer: number, atMs: number) => void

/** Follows the event stream of every node; each part listens for what it measures. */
class Streams {
  /** Streams that ended while followed (the node cut off a slow reader, or went): events in the gap were missed. */
  reconnects = 0
  /** How the streams' requests are made: signed with the cluster's admin key, or unsigned. */
  private readonly client: ClientOptions
  private readonly followed = new Map<number, AbortController>()
  private readonly taskListeners = new Set<TaskListener>()
  private readonly memberListeners = new Set<MemberListener>()

  constructor (client: ClientOptions) {
    this.client = client
  }

  follow (node: TestnetNode): void {
    this.unfollow(node.index)
    const controller = new AbortController()
    this.followed.set(node.index, controller)
    void this.run(connect(node.apiUrl, this.client), node.index, controller.signal)
  }

  unfollow (index: number): void {
    this.followed.get(index)?.abort()
    this.followed.delete(index)
  }

  stop (): void {
    for (const c of this.followed.values()) c.abort()
    this.followed.clear()
  }

  onTask (listener: TaskListener): () => void {
    this.taskListeners.add(listener)
    return () => { this.taskListeners.delete(listener) }
  }

  onMember (listener: MemberListener): () => void {
    this.memberListeners.add(listener)
    return () => { this.memberListeners.delete(listener) }
  }

  private async run (client: Client, observer: number, signal: AbortSignal): Promise<void> {
    const dispatch = (event: ClusterEvent): void => {
      const at = performance.now()
      if (event.type === 'task') for (const l of this.taskListeners) l(event.data, observer, at)
      else if (event.type === 'member') for (const l of this.memberListeners) l(event.data, observer, at)
    }
    while (!signal.aborted) {
      await client.events(dispatch, signal).catch(() => {})
      if (signal.aborted) return
      this.reconnects++
      log(`events: the stream of node ${observer} ended; following it again`)
      await sleep(200)
    }
  }
}

/** The latest record of each node's claim of each instance, whichever stream brought it. */
class ClaimBook {
  private readonly byInstance = new Map<string, Map<string, ClaimRecord>>()
  /** Which observers' streams have shown each record (by node, generation and state). */
  private readonly observers = new Map<string, Set<number>>()

  put (r: ClaimRecord, observer?: number): void {
    let nodes = this.byInstance.get(r.id)
    if (nodes === undefined) this.byInstance.set(r.id, nodes = new Map())
    const seen = nodes.get(r.node)
    if (seen === undefined || later(r, seen)) nodes.set(r.node, r)
    if (observer === undefined) return
    const key = `${r.id} ${r.node} ${r.generation} ${r.state}`
    let by = this.observers.get(key)
    if (by === undefined) this.observers.set(key, by = new Set())
    by.add(observer)
  }

  /** How many nodes' streams have shown this record: a record seen only by its writer may die with it. */
  seenBy (r: ClaimRecord): number {
    return this.observers.get(`${r.id} ${r.node} ${r.generation} ${r.state}`)?.size ?? 0
  }

  live (instance: string): ClaimRecord[] {
    return [...this.byInstance.get(instance)?.values() ?? []].filter((r) => isActiveState(r.state))
  }

  /** How many nodes have claimed the instance (in any generation). */
  claimers (instance: string): number {
    return this.byInstance.get(instance)?.size ?? 0
  }

  has (instance: string): boolean {
    return this.byInstance.has(instance)
  }

  /** Every node's latest claim of an instance, in a few words, for a log line. */
  describe (instance: string): string {
    return [...this.byInstance.get(instance)?.values() ?? []].map((r) => `${r.node.slice(-8)} ${r.state} g${r.generation}`).join(', ') || 'no claims seen'
  }
}

function later (a: ClaimRecord, b: ClaimRecord): boolean {
  if (a.generation !== b.generation) return a.generation > b.generation
  if (a.since !== b.since) return a.since > b.since
  return (STATE_ORDER[a.state] ?? 0) > (STATE_ORDER[b.state] ?? 0)
}

// ---- the cluster -------------------------------------------------------------------------

interface Cluster {
  dir: string
  variant: Variant
  nodes: TestnetNode[]
  /** How every request to this cluster is made: `key` the admin's (signed), or null (unsigned). */
  client: ClientOptions
  clients: Client[]
  streams: Streams
  /** performance.now() from which no other node counts a node as a newcomer. */
  settledAt: number[]
}

let cluster: Cluster | null = null
let interrupted = false

const indexOf = (c: Cluster, peerId: string): number => c.nodes.findIndex((n) => n.peerId === peerId)
const randomNode = (): number => Math.floor(Math.random() * NODES)

/** Polls `check` every 5 ms; false if it did not hold within the time (times come from the listeners, not from here). */
async function until (check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (!interrupted) {
    if (check()) return true
    if (performance.now() >= deadline) return false
    await sleep(5)
  }
  return false
}

async function allAlive (c: Cluster): Promise<void> {
  const deadline = performance.now() + LIMITS.settleMs
  while (!interrupted && performance.now() < deadline) {
    if ((await testnet.aliveCounts(c.nodes.map((n) => n.apiUrl))).every((n) => n === NODES)) return
    await sleep(100)
  }
  if (!interrupted) throw new Error(`the nodes did not all see each other alive within ${LIMITS.settleMs} ms`)
}

/** Counts the suspicions and deaths of members that the streams report while it listens: in a part without faults, each is a false alarm. */
function alarms (c: Cluster): { stop: () => { suspect: number, dead: number } } {
  let suspect = 0
  let dead = 0
  const off = c.streams.onMember((e) => {
    if (e.member.state === 'suspect') suspect++
    else if (e.member.state === 'dead') dead++
  })
  return { stop: () => { off(); return { suspect, dead } } }
}

function serviceSpec (name: string, count: number, seconds: number): Record<string, unknown> {
  return { name, type: 'service', command: 'sleep', args: [String(seconds)], count, ...TASK }
}

interface NodeLogs {
  byMessage: Record<string, number>
  /** Tasks stopped as duplicates (each once: a node logs the stop on every pass until it is done). */
  duplicateStops: number
  duplicateStopLines: number
  refusedStarts: number
  /** The executor's start() as the nodes log it ("task started", ms). */
  taskStart: Spread
}

interface LogEntry { level?: number, msg?: string, why?: string, task?: string, ms?: number }

/** Every JSON line of every node's log, with the node's index. */
function eachLogEntry (c: Cluster, visit: (entry: LogEntry & { msg: string }, node: number) => void): void {
  for (const node of c.nodes) {
    let text = ''
    try {
      text = readFileSync(node.logFile, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      if (line === '') continue
      let entry: LogEntry
      try {
        entry = JSON.parse(line) as LogEntry
      } catch {
        continue
      }
      if (entry.msg !== undefined) visit(entry as LogEntry & { msg: string }, node.index)
    }
  }
}

/** What the nodes' logs say: messages by level and text, duplicates stopped, the executor's start times. */
function nodeLogs (c: Cluster): NodeLogs {
  const byMessage: Record<string, number> = {}
  const duplicates = new Set<string>()
  let duplicateStopLines = 0
  let refusedStarts = 0
  const starts: number[] = []
  eachLogEntry(c, (entry, node) => {
    const level = (entry.level ?? 30) >= 50 ? 'error' : (entry.level ?? 30) >= 40 ? 'warn' : 'info'
    const key = `${level}: ${entry.msg}`
    byMessage[key] = (byMessage[key] ?? 0) + 1
    if (entry.msg === 'stopping a task' && entry.why?.startsWith('a duplicate') === true) { duplicateStopLines++; duplicates.add(`${node} ${entry.task}`) }
    if (entry.msg === 'could not start a task; giving it up here') refusedStarts++
    if (entry.msg === 'task started' && typeof entry.ms === 'number') starts.push(entry.ms)
  })
  return { byMessage, duplicateStops: duplicates.size, duplicateStopLines, refusedStarts, taskStart: spread(starts) }
}

// ---- duplicate runs ------------------------------------------------------------------------

/**
 * Instances that ran more than once: on more than one node, or more than once on one node (another
 * generation, or a restart in place). `runs` per instance: one entry per process started, naming its node.
 */
interface Duplicates { instances: number, onMoreNodes: number, againOnOneNode: number, examples: string[] }

function duplicatesOf (instances: Iterable<string>, runs: (id: string) => readonly string[]): Duplicates {
  let n = 0
  let onMoreNodes = 0
  let againOnOneNode = 0
  const examples: string[] = []
  for (const id of instances) {
    n++
    const nodes = runs(id)
    const distinct = new Set(nodes).size
    if (distinct > 1) onMoreNodes++
    if (nodes.length > distinct) againOnOneNode++
    if (nodes.length > 1 && examples.length < 5) examples.push(`${id} (${nodes.join(', ')})`)
  }
  return { instances: n, onMoreNodes, againOnOneNode, examples }
}

/**
 * Runs as the event streams show them: a claim record with a startedAt is a process that ran, one per
 * node, generation and start time (later records of the same claim carry the same startedAt).
 */
class RunBook {
  private readonly runs = new Map<string, Map<string, string>>()
  /** Per instance, each node's claim (by generation): when a record of it first reached a stream, and its task's start time. */
  private readonly claims = new Map<string, Map<string, { node: string, firstSeen: number, startedAt: number | undefined }>>()

  /** `seenAt`: the machine's clock (ms since the epoch) when a stream brought the record. */
  put (r: ClaimRecord, seenAt: number): void {
    let claims = this.claims.get(r.id)
    if (claims === undefined) this.claims.set(r.id, claims = new Map())
    const key = `${r.node} ${r.generation}`
    const claim = claims.get(key)
    if (claim === undefined) claims.set(key, { node: r.node.slice(-8), firstSeen: seenAt, startedAt: r.startedAt })
    else claim.startedAt ??= r.startedAt
    if (r.startedAt === undefined) return
    let runs = this.runs.get(r.id)
    if (runs === undefined) this.runs.set(r.id, runs = new Map())
    runs.set(`${r.node} ${r.generation} ${r.startedAt}`, r.node.slice(-8))
  }

  of (id: string): string[] {
    return [...this.runs.get(id)?.values() ?? []]
  }

  /**
   * How the claims of an instance came about, from its submission (ms since the epoch): each node's task start
   * (its executor entry, right after the claim) and when its claim first reached a stream. For a duplicate, this
   * says whether the first claim was late to be made or late to be seen when the second node claimed.
   */
  timeline (id: string, submittedAt: number): string {
    const claims = [...this.claims.get(id)?.values() ?? []].sort((a, b) => (a.startedAt ?? a.firstSeen) - (b.startedAt ?? b.firstSeen))
    return claims.map((c) => `${c.node}: started +${c.startedAt === undefined ? '?' : Math.round(c.startedAt - submittedAt)} ms, first seen +${Math.round(c.firstSeen - submittedAt)} ms`).join('; ')
  }
}

/** Runs as the nodes' logs show them: one "task started" line per process the executor started, by instance. */
function logRuns (c: Cluster): (id: string) => string[] {
  const runs = new Map<string, string[]>()
  eachLogEntry(c, (entry, node) => {
    if (entry.msg !== 'task started' || entry.task === undefined) return
    const { instance } = parseAttempt(entry.task)
    let list = runs.get(instance)
    if (list === undefined) runs.set(instance, list = [])
    list.push(`node ${node}`)
  })
  return (id) => runs.get(id) ?? []
}

function duplicatesText (d: Duplicates): string {
  return `${d.onMoreNodes} on more than one node, ${d.againOnOneNode} more than once on one node (of ${count(d.instances)})`
}

// ---- 1. submit → running ------------------------------------------------------------------

interface LatencySample {
  totalMs: number
  /** Request → answered (the job stored and fsynced on the submitting node). */
  answeredMs: number
  local: boolean
  /**
   * Phases by the records' times: request in; job accepted → the executor's entry made on the placed node (the
   * job fsynced and gossiped, a pass there, the claim, the task's dirs and log files), split at the claim when
   * the node recorded one on its own ('starting': only a start slower than the reconcile loop's claim-write
   * delay); → running recorded (cgroup, spawn, the task file); → seen on the submitting node's stream (the
   * record fsynced, gossiped back).
   */
  phases: { accepted: number, entry: number, claimed: number, claimedToEntry: number, running: number, seen: number }
  /** Nodes that claimed the one instance. */
  claimers: number
  instance: string
  /** One entry per process the streams showed started for the instance, naming its node. */
  runs: string[]
  stopMs: number
}

async function latency (c: Cluster, n: number): Promise<void> {
  const fsync = fsyncProbe(c.dir, 50)
  log(`latency: fdatasync of a 1 KiB append in the testnet's dir: p50 ${ms(fsync.p50)}, p99 ${ms(fsync.p99)}`)
  log(`latency: ${WARMUP_JOBS} warm-up jobs, then ${n} one at a time: service sleep 30 (cpu ${TASK.cpu}, memory ${TASK.memory}) submitted on a random node, until that node's stream shows it running`)
  const samples: LatencySample[] = []
  let timedOut = 0
  const alarm = alarms(c)
  for (let i = -WARMUP_JOBS; i < n && !interrupted; i++) {
    const sample = await latencyOnce(c, `lat-${i + WARMUP_JOBS}`, randomNode())
    if (sample === null) { timedOut++; continue }
    if (i >= 0) samples.push(sample)
    if (i >= 0 && (i + 1) % 50 === 0) log(`latency: ${i + 1}/${n}, p50 so far ${ms(median(samples.map((s) => s.totalMs)))}`)
  }
  const falseAlarms = alarm.stop()
  if (interrupted) return
  const total = spread(samples.map((s) => s.totalMs))
  const local = samples.filter((s) => s.local)
  const remote = samples.filter((s) => !s.local)
  const phase = (k: keyof LatencySample['phases'], of = samples): Spread => spread(defined(of.map((s) => s.phases[k])))
  const phases = { accepted: phase('accepted'), entry: phase('entry'), claimed: phase('claimed'), claimedToEntry: phase('claimedToEntry'), running: phase('running'), seen: phase('seen') }
  const answered = spread(samples.map((s) => s.answeredMs))
  const stop = spread(samples.map((s) => s.stopMs))
  const duplicated = samples.filter((s) => s.claimers > 1).length
  const meanClaimers = samples.reduce((a, s) => a + s.claimers, 0) / Math.max(1, samples.length)
  const runsOf = new Map(samples.map((s) => [s.instance, s.runs]))
  const ranTwice = duplicatesOf(runsOf.keys(), (id) => runsOf.get(id) ?? [])
  const ranTwiceLogs = duplicatesOf(runsOf.keys(), logRuns(c))
  summary.results.latency = {
    total, local: spread(local.map((s) => s.totalMs)), remote: spread(remote.map((s) => s.totalMs)), phases,
    localPhases: { entry: phase('entry', local), seen: phase('seen', local) }, remotePhases: { entry: phase('entry', remote), seen: phase('seen', remote) }, answered, stop, timedOut, duplicated, meanClaimers: r1(meanClaimers),
    duplicateRuns: { streams: ranTwice, logs: ranTwiceLogs }, fsync, falseAlarms,
  }
  summary.print(`\nlatency: submit → running seen on the submitting node's stream; ${samples.length} service jobs one at a time (after ${WARMUP_JOBS} warm-up), each stopped before the next\n`)
  summary.print(table(['', 'N', 'P50', 'P99', 'MAX'], [
    ['submit → running seen', String(total.n), ms(total.p50), ms(total.p99), ms(total.max)],
    ['  placed on the submitting node', String(local.length), ms(percentile(local.map((s) => s.totalMs), 0.5)), ms(percentile(local.map((s) => s.totalMs), 0.99)), ms(max(local.map((s) => s.totalMs)))],
    ['  placed on another node', String(remote.length), ms(percentile(remote.map((s) => s.totalMs), 0.5)), ms(percentile(remote.map((s) => s.totalMs), 0.99)), ms(max(remote.map((s) => s.totalMs)))],
    ['submitJob answered (job fsynced)', String(answered.n), ms(answered.p50), ms(answered.p99), ms(answered.max)],
    ['phases by the records\' times:', '', '', '', ''],
    ['  request → job accepted', String(phases.accepted.n), ms(phases.accepted.p50), ms(phases.accepted.p99), ms(phases.accepted.max)],
    ['  accepted → claimed, task dirs and logs made', String(phases.entry.n), ms(phases.entry.p50), ms(phases.entry.p99), ms(phases.entry.max)],
    ...(phases.claimed.n === 0 ? [] : [
      ['    of which accepted → claimed (starting)', String(phases.claimed.n), ms(phases.claimed.p50), ms(phases.claimed.p99), ms(phases.claimed.max)],
      ['    and claimed → task dirs and logs made', String(phases.claimedToEntry.n), ms(phases.claimedToEntry.p50), ms(phases.claimedToEntry.p99), ms(phases.claimedToEntry.max)],
    ]),
    ['  → cgroup, spawn: running recorded', String(phases.running.n), ms(phases.running.p50), ms(phases.running.p99), ms(phases.running.max)],
    ['  recorded → seen on the stream', String(phases.seen.n), ms(phases.seen.p50), ms(phases.seen.p99), ms(phases.seen.max)],
    ['stopJob → every claim ended', String(stop.n), ms(stop.p50), ms(stop.p99), ms(stop.max)],
  ]) + '\n')
  summary.print(`claims per instance: ${meanClaimers.toFixed(2)} on average; ${duplicated} of ${samples.length} instances claimed by more than one node${timedOut > 0 ? `; ${timedOut} jobs not running within ${ms(LIMITS.runningWaitMs)}` : ''}\n`)
  summary.print(`duplicate runs (instances that ran more than once): by the streams ${duplicatesText(ranTwice)}; by the nodes' logs ${duplicatesText(ranTwiceLogs)}${ranTwiceLogs.examples.length > 0 ? `; e.g. ${ranTwiceLogs.examples.join('; ')}` : ''}\n`)
  summary.print(`accepted → task entry made p50 / recorded → seen p50: placed on the submitting node ${ms(phase('entry', local).p50)} / ${ms(phase('seen', local).p50)}, on another node ${ms(phase('entry', remote).p50)} / ${ms(phase('seen', remote).p50)}\n`)
  summary.print(`members reported suspect / dead meanwhile (no node was harmed): ${falseAlarms.suspect} / ${falseAlarms.dead}\n`)
  summary.print(`on the critical path of a remote placement: two gossip hops (a change is gossiped while it is fsynced: fdatasync of 1 KiB here p50 ${ms(fsync.p50)}, p99 ${ms(fsync.p99)}), a reconcile pass, and the runner's start\n`)
  summary.figure('latency', `submit → running, ×${total.n}: p50`, ms(total.p50), `≤ ${TARGETS.submitToRunningP50MsMax} ms`, total.p50 <= TARGETS.submitToRunningP50MsMax)
  summary.figure('latency', `submit → running, ×${total.n}: p99`, ms(total.p99), `≤ ${TARGETS.submitToRunningP99MsMax} ms`, total.p99 <= TARGETS.submitToRunningP99MsMax)
  summary.figure('latency', 'submit → running: max', ms(total.max))
  summary.figure('latency', 'placed locally / on another node: p50', `${ms(percentile(local.map((s) => s.totalMs), 0.5))} / ${ms(percentile(remote.map((s) => s.totalMs), 0.5))}`)
  summary.figure('latency', 'instances claimed by more than one node', `${duplicated}/${samples.length}`)
  summary.figure('latency', 'duplicate runs: on more nodes / again on one (logs)', `${ranTwiceLogs.onMoreNodes} / ${ranTwiceLogs.againOnOneNode} of ${samples.length}`, '0', ranTwiceLogs.onMoreNodes + ranTwiceLogs.againOnOneNode === 0)
  if (timedOut > 0) summary.figure('latency', `jobs not running within ${ms(LIMITS.runningWaitMs)}`, String(timedOut), '0', false)
}

async function latencyOnce (c: Cluster, name: string, index: number): Promise<LatencySample | null> {
  const prefix = `${name}-`
  const book = new ClaimBook()
  const runs = new RunBook()
  const claimedAt = new Map<string, number>()
  /** The first running claim seen on the submitting node's stream (a holder: the listener sets it). */
  const seen: { value: { atMs: number, record: ClaimRecord } | null } = { value: null }
  const off = c.streams.onTask((r, observer, at) => {
    if (!r.job.startsWith(prefix)) return
    book.put(r)
    runs.put(r, wall(at))
    if (r.state === 'starting' && !claimedAt.has(r.node)) claimedAt.set(r.node, r.since)
    if (seen.value === null && observer === index && r.state === 'running') seen.value = { atMs: at, record: r }
  })
  const client = c.clients[index]!
  let job: JobView | null = null
  try {
    const t0 = performance.now()
    job = await client.submitJob(serviceSpec(name, 1, 30))
    const t1 = performance.now()
    if (!await until(() => seen.value !== null, LIMITS.runningWaitMs)) {
      if (!interrupted) log(`latency: ${job.id} submitted on node ${index} not seen running there within ${ms(LIMITS.runningWaitMs)}`)
      return null
    }
    const s = seen.value!
    const claimed = claimedAt.get(s.record.node) ?? NaN
    const startedAt = s.record.startedAt ?? NaN
    const sample: LatencySample = {
      totalMs: s.atMs - t0,
      answeredMs: t1 - t0,
      local: s.record.node === c.nodes[index]!.peerId,
      phases: {
        accepted: job.submittedAt - wall(t0),
        entry: startedAt - job.submittedAt,
        claimed: claimed - job.submittedAt,
        claimedToEntry: startedAt - claimed,
        running: s.record.since - startedAt,
        seen: wall(s.atMs) - s.record.since,
      },
      claimers: 0,
      instance: s.record.id,
      runs: [],
      stopMs: NaN,
    }
    const stopping = performance.now()
    await client.stopJob(job.id)
    const instance = `${job.id}.0`
    if (!await until(() => book.live(instance).length === 0, LIMITS.runningWaitMs) && !interrupted) log(`latency: ${job.id} still has live claims ${ms(LIMITS.runningWaitMs)} after its stop`)
    sample.stopMs = performance.now() - stopping
    sample.claimers = book.claimers(instance)
    sample.runs = runs.of(instance)
    job = null
    return sample
  } finally {
    off()
    if (job !== null && !interrupted) await client.stopJob(job.id).catch(() => {})
  }
}

// ---- 2. tasks started per second ------------------------------------------------------------

async function throughput (c: Cluster, seconds: number, inflight: number): Promise<void> {
  const warmMs = 1_000
  log(`throughput: ${inflight} workers submitting batch jobs of true (cpu ${TASK.cpu}, memory ${TASK.memory}) to nodes 0–${NODES - 1} in turn, as fast as they are accepted: a warm-up of ${ms(warmMs)}, then ${seconds} s counted`)
  const book = new ClaimBook()
  const runs = new RunBook()
  /** Instance → when first seen running or exited; when its submit was answered. */
  const started = new Map<string, number>()
  const answered = new Map<string, number>()
  /** Instance → its job's submittedAt (the submitting node's clock, which is this machine's). */
  const submittedAt = new Map<string, number>()
  const off = c.streams.onTask((r, _observer, at) => {
    if (!r.job.startsWith('tp-')) return
    book.put(r)
    runs.put(r, wall(at))
    if ((r.state === 'running' || r.state === 'exited') && !started.has(r.id)) started.set(r.id, at)
  })
  const refused = new Map<string, number>()
  const alarm = alarms(c)
  const submitMs: number[] = []
  let seq = 0
  const t0 = performance.now()
  const from = t0 + warmMs
  const end = from + seconds * 1_000
  let before: { nodes: number[], spawners: number[], own: number, tasks: number, machine: { busy: number, total: number } } | null = null
  const snapshot = (): NonNullable<typeof before> => ({ nodes: c.nodes.map((n) => cpuTicks(n.pid!)), spawners: c.nodes.map((n) => spawnerTicks(n.pid!)), own: ownCpuMs(), tasks: tasksCpuMs(c), machine: machineTimes() })
  let countersBefore: Promise<Array<NodeCounters | null>> | null = null
  const warmTimer = setTimeout(() => { before = snapshot(); countersBefore = nodeCounters(c) }, warmMs)
  const progress = setInterval(() => {
    const s = (performance.now() - t0) / 1000
    log(`throughput: ${s.toFixed(0)} s, ${count(answered.size)} submitted, ${count(started.size)} started, ${count([...refused.values()].reduce((a, b) => a + b, 0))} refused`)
  }, 2_000)
  const worker = async (w: number): Promise<void> => {
    const client = connect(c.nodes[w % NODES]!.apiUrl, { ...c.client, timeoutMs: 10_000 })
    while (!interrupted && performance.now() < end) {
      const a = performance.now()
      try {
        const job = await client.submitJob({ name: `tp-${seq++}`, type: 'batch', command: 'true', ...TASK })
        const b = performance.now()
        answered.set(`${job.id}.0`, b)
        submittedAt.set(`${job.id}.0`, job.submittedAt)
        if (a >= from && b <= end) submitMs.push(b - a)
      } catch (err) {
        const code = err instanceof ApiError ? err.code : 'ERROR'
        refused.set(code, (refused.get(code) ?? 0) + 1)
        await sleep(LIMITS.refusedBackoffMs)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: inflight }, async (_, w) => { await worker(w) }))
  } finally {
    clearTimeout(warmTimer)
    clearInterval(progress)
  }
  if (interrupted) { off(); return }
  const after = snapshot()
  const countersAfter = nodeCounters(c)
  const elapsedS = (performance.now() - from) / 1000
  const b = before ?? after
  /** The nodes' own processes and their spawners (the processes that fork for their task starts, node/executor/spawner.ts). */
  const spawnerCpuPct = after.spawners.reduce((sum, t, i) => sum + Math.max(0, t - b.spawners[i]!), 0) / elapsedS
  const nodeCpuPct = after.nodes.reduce((sum, t, i) => sum + (t - b.nodes[i]!), 0) / elapsedS + spawnerCpuPct
  const ownCpuPct = (after.own - b.own) / 10 / elapsedS
  const machineBusyPct = 100 * (after.machine.busy - b.machine.busy) / Math.max(1, after.machine.total - b.machine.total)
  const tasksCpuPct = (after.tasks - b.tasks) / 10 / elapsedS
  /** What else ran on the machine meanwhile (other users' processes), in % of one core. */
  const otherCpuPct = machineBusyPct * cpus().length - nodeCpuPct - ownCpuPct - (Number.isNaN(tasksCpuPct) ? 0 : tasksCpuPct)

  log(`throughput: window over; draining the backlog (up to ${ms(LIMITS.drainMs)})`)
  const drainFrom = performance.now()
  const settled = (id: string): boolean => started.has(id) || (book.has(id) && book.live(id).length === 0)
  await until(() => [...answered.keys()].every(settled), LIMITS.drainMs)
  const drainMs = performance.now() - drainFrom
  off()
  const falseAlarms = alarm.stop()

  const inWindow = (t: number): boolean => t >= from && t < end
  const startsInWindow = [...started.values()].filter(inWindow).length
  const submitsInWindow = [...answered.values()].filter(inWindow).length
  const perSecondStarts = Array.from({ length: seconds }, (_, k) => [...started.values()].filter((t) => t >= from + k * 1_000 && t < from + (k + 1) * 1_000).length)
  const neverStarted = [...answered.keys()].filter((id) => !started.has(id)).length
  const toStart = spread(defined([...answered.entries()].filter(([, t]) => inWindow(t)).map(([id, t]) => started.has(id) ? started.get(id)! - t : undefined)))
  const claimers = [...answered.keys()].map((id) => book.claimers(id))
  const duplicated = claimers.filter((n) => n > 1).length
  const meanClaimers = claimers.reduce((a, n) => a + n, 0) / Math.max(1, claimers.length)
  const rate = startsInWindow / seconds
  const refusedTotal = [...refused.values()].reduce((a, n) => a + n, 0)
  const submit = spread(submitMs)
  const jobsInState = (await c.clients[0]!.jobs({ all: true }).catch(() => ({ jobs: [] }))).jobs.length
  const perStart = countersPerStart(await countersBefore ?? [], await countersAfter, startsInWindow, elapsedS)
  const ranTwice = duplicatesOf(answered.keys(), (id) => runs.of(id))
  const logRunsOf = logRuns(c)
  const ranTwiceLogs = duplicatesOf(answered.keys(), logRunsOf)

  summary.results.throughput = {
    seconds, inflight, startsPerSecond: r1(rate), startsInWindow, submitsInWindow, submitsPerSecond: r1(submitsInWindow / seconds), submittedTotal: answered.size,
    startedTotal: started.size, neverStarted, drainMs: Math.round(drainMs), refused: Object.fromEntries(refused), submit, answeredToStarted: toStart,
    perSecondStarts, meanClaimers: r1(meanClaimers), duplicated, nodeCpuPct: r1(nodeCpuPct), tasksCpuPct: r1(tasksCpuPct), ownCpuPct: r1(ownCpuPct), otherCpuPct: r1(otherCpuPct),
    machineBusyPct: r1(machineBusyPct), nodeCpuMsPerStart: r1(nodeCpuPct * 10 / Math.max(rate, 1e-9)), spawnerCpuPct: r1(spawnerCpuPct), jobsInState, falseAlarms,
    duplicateRuns: { streams: ranTwice, logs: ranTwiceLogs }, perStart,
  }
  summary.print(`\nthroughput: batch jobs of true submitted by ${inflight} workers over ${NODES} nodes for ${seconds} s (after ${ms(warmMs)} of warm-up); a start = an instance first seen running or exited\n`)
  summary.print(table(['STARTS/S', 'STARTED', 'SUBMITTED', 'SUBMITS/S', 'REFUSED', 'SUBMIT P50', 'SUBMIT P99', 'ANSWERED → STARTED P50', 'P99', 'NODES CPU', 'BENCH CPU', 'MACHINE BUSY'], [[
    perSecond(rate), count(startsInWindow), count(submitsInWindow), perSecond(submitsInWindow / seconds), count(refusedTotal), ms(submit.p50), ms(submit.p99),
    ms(toStart.p50), ms(toStart.p99), pct(nodeCpuPct), pct(ownCpuPct), pct(machineBusyPct),
  ]]) + '\n')
  summary.print(`starts in each second of the window: ${perSecondStarts.join(' ')}\n`)
  summary.print(`in all: ${count(answered.size)} submitted, ${count(started.size)} started, ${count(neverStarted)} never started (backlog drained in ${ms(drainMs)}); refusals: ${refusedTotal === 0 ? 'none' : [...refused.entries()].map(([k, v]) => `${v} ${k}`).join(', ')}\n`)
  summary.print(`claims per instance: ${meanClaimers.toFixed(2)} on average, ${count(duplicated)} instances claimed by more than one node; jobs in the state afterwards: ${count(jobsInState)}\n`)
  summary.print(`duplicate runs (instances that ran more than once): by the streams ${duplicatesText(ranTwice)}; by the nodes' logs ${duplicatesText(ranTwiceLogs)}\n`)
  for (const id of [...answered.keys()].filter((i) => logRunsOf(i).length > 1).slice(0, 5)) summary.print(`  ${id}, from its submission: ${runs.timeline(id, submittedAt.get(id) ?? NaN)}\n`)
  summary.print(`${perStartText(perStart)}\n`)
  summary.print(`members reported suspect / dead meanwhile (no node was harmed): ${falseAlarms.suspect} / ${falseAlarms.dead}\n`)
  summary.print(`CPU in the window, in % of one core: the ${NODES} nodes ${pct(nodeCpuPct)} (${ms(nodeCpuPct * 10 / rate)} per start; their spawners ${pct(spawnerCpuPct)} of it), their tasks ${pct(tasksCpuPct)}, this process ${pct(ownCpuPct)}, anything else on the machine ${pct(otherCpuPct)}; machine busy ${pct(machineBusyPct)} of ${cpus().length} cores\n`)
  summary.figure('throughput', `tasks started per second, ${seconds} s, ${inflight} in flight`, perSecond(rate), `≥ ${TARGETS.tasksPerSecondMin}/s`, rate >= TARGETS.tasksPerSecondMin)
  summary.figure('throughput', 'duplicate runs: on more nodes / again on one (logs)', `${ranTwiceLogs.onMoreNodes} / ${ranTwiceLogs.againOnOneNode} of ${count(ranTwiceLogs.instances)}`, '0', ranTwiceLogs.onMoreNodes + ranTwiceLogs.againOnOneNode === 0)
  summary.figure('throughput', 'submitted / started in the window', `${count(submitsInWindow)} / ${count(startsInWindow)}`)
  summary.figure('throughput', 'answered → started: p50 / p99', `${ms(toStart.p50)} / ${ms(toStart.p99)}`)
  summary.figure('throughput', 'claims per instance (mean)', meanClaimers.toFixed(2))
  summary.figure('throughput', 'machine busy in the window; node CPU per start', `${pct(machineBusyPct)}; ${ms(nodeCpuPct * 10 / rate)}`)
  summary.figure('throughput', 'false suspicions / deaths of members under this load', `${falseAlarms.suspect} / ${falseAlarms.dead}`)
  if (neverStarted > 0) summary.figure('throughput', `submitted but not started ${ms(LIMITS.drainMs)} after the window`, count(neverStarted), '0', false)
}

const hierarchies = detectHierarchies('auto')

/** CPU ticks of a node's spawner (its child that forks for its task starts; node/executor/spawner.ts), 0 if it has none. */
function spawnerTicks (nodePid: number): number {
  let ticks = 0
  let children: number[] = []
  try {
    children = readFileSync(`/proc/${nodePid}/task/${nodePid}/children`, 'utf8').trim().split(/\s+/).filter((x) => x !== '').map(Number)
  } catch {}
  for (const pid of children) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('spawner-main')) ticks += cpuTicks(pid)
    } catch {}
  }
  return ticks
}

interface NodeCounters { published: number, publishedBytes: number, received: number, applied: number, passes: number, swimSent: number, rssBytes: number, lastPassMs: number }

/** What each node counts of itself (GET /v1/node and /v1/state); null for a node that did not answer. */
async function nodeCounters (c: Cluster): Promise<Array<NodeCounters | null>> {
  return await Promise.all(c.clients.map(async (client) => {
    try {
      const [node, state] = await Promise.all([client.node(), client.state()])
      const g = state.stats?.gossip
      const num = (x: unknown): number => typeof x === 'number' ? x : NaN
      return {
        published: num(g?.published), publishedBytes: num(g?.publishedBytes), received: num(g?.received), applied: num(g?.applied),
        passes: num(node.reconcile?.passes), lastPassMs: num(node.reconcile?.lastPassMs), swimSent: num(node.membership?.sentMessages), rssBytes: num(node.process?.rssBytes),
      }
    } catch {
      return null
    }
  }))
}

interface PerStart {
  /** State updates each node gossiped, summed over the nodes, per start; their bytes; received and applied likewise. */
  published: number, publishedBytes: number, received: number, applied: number
  /** Reconcile passes per node per second, and the last pass's duration on each node. */
  passesPerNodePerS: number, lastPassMs: number[]
  swimSentPerS: number
  rssMb: number[]
}

function countersPerStart (before: ReadonlyArray<NodeCounters | null>, after: ReadonlyArray<NodeCounters | null>, starts: number, seconds: number): PerStart {
  const sum = (k: keyof NodeCounters): number => after.reduce((a, x, i) => { const y = before[i]; return x === null || y == null ? a : a + x[k] - y[k] }, 0)
  const per = (k: keyof NodeCounters): number => r1(sum(k) / Math.max(1, starts))
  return {
    published: per('published'), publishedBytes: Math.round(sum('publishedBytes') / Math.max(1, starts)), received: per('received'), applied: per('applied'),
    passesPerNodePerS: r1(sum('passes') / NODES / seconds), lastPassMs: after.map((x) => x?.lastPassMs ?? NaN),
    swimSentPerS: Math.round(sum('swimSent') / seconds), rssMb: after.map((x) => Math.round((x?.rssBytes ?? NaN) / 1e6)),
  }
}

function perStartText (p: PerStart): string {
  return `the nodes' own counters in the window, per start: ${p.published} state updates gossiped (summed over the nodes; ${count(p.publishedBytes)} bytes), ${p.received} received, ${p.applied} applied; ` +
    `reconcile passes: ${p.passesPerNodePerS} per node per second, the last one ${p.lastPassMs.map((x) => ms(x)).join(' / ')}; SWIM messages sent: ${count(p.swimSentPerS)}/s; node RSS at the end: ${p.rssMb.join(' / ')} MB`
}

/** CPU time of every task the nodes ever ran, from their cgroup roots' accounting (which keeps what removed groups used); NaN without cgroups. */
function tasksCpuMs (c: Cluster): number {
  let sum = 0
  for (const node of c.nodes) sum += rootCpuMs(hierarchies, `murmur-${node.peerId}`)
  return sum
}

/** Append and fdatasync of 1 KiB, as the nodes' state log does for every local change, on the file system of their data dirs. */
function fsyncProbe (dir: string, n: number): Spread {
  const file = join(dir, 'fsync-probe')
  const fd = openSync(file, 'a')
  const times: number[] = []
  const block = Buffer.alloc(1024, 1)
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      writeSync(fd, block)
      fdatasyncSync(fd)
      times.push(performance.now() - t0)
    }
  } finally {
    closeSync(fd)
    rmSync(file, { force: true })
  }
  return spread(times)
}

// ---- 3, 4. failover after SIGKILL and SIGSTOP --------------------------------------------------

type Fault = 'sigkill' | 'sigstop'

interface Trial {
  victim: number
  held: number
  /** Per instance the victim held: the fault → a claim from another node (starting), → running. */
  claimedMs: number[]
  replacedMs: number[]
  notReplaced: number
  /** Claims of the held instances by survivors beyond one each (duplicates the claim rule then stops). */
  extraClaims: number
  /** The fault → the first and the last survivor see the victim dead (NaN if not seen). */
  deadFirstMs: number
  deadLastMs: number
  /** SIGSTOP only: SIGCONT → the first survivor sees it alive; → one live claim per instance again; who kept them. */
  aliveAgainMs?: number
  resolvedMs?: number
  keptByVictim?: number
  keptByReplacement?: number
}

async function failover (c: Cluster, fault: Fault, trials: number): Promise<void> {
  const results: Trial[] = []
  for (let t = 0; t < trials && !interrupted; t++) {
    const trial = await failoverTrial(c, fault, t)
    results.push(trial)
    log(`${fault} trial ${t + 1}/${trials}: node ${trial.victim} held ${trial.held}; running elsewhere after median ${ms(median(trial.replacedMs))}, max ${ms(max(trial.replacedMs))}` +
      (trial.resolvedMs === undefined ? '' : `; duplicates resolved ${ms(trial.resolvedMs)} after SIGCONT (kept: ${trial.keptByVictim} by it, ${trial.keptByReplacement} by the replacements)`))
  }
  if (interrupted) return
  const all = results.flatMap((r) => r.replacedMs)
  const claimed = results.flatMap((r) => r.claimedMs)
  const notReplaced = results.reduce((a, r) => a + r.notReplaced, 0)
  const deadFirst = defined(results.map((r) => r.deadFirstMs))
  const deadLast = defined(results.map((r) => r.deadLastMs))
  const target = fault === 'sigkill' ? TARGETS.sigkillMedianMsMax : TARGETS.sigstopMedianMsMax
  const signal = fault === 'sigkill' ? 'SIGKILL' : 'SIGSTOP'
  summary.results[fault] = { trials: results.map((r) => ({ ...r, claimedMs: r.claimedMs.map(Math.round), replacedMs: r.replacedMs.map(Math.round) })), replaced: spread(all), claimed: spread(claimed), notReplaced }
  summary.print(`\n${fault}: a service of ${SERVICE_COUNT} sleep 600 on ${NODES} nodes; ${signal} of the node holding the most; per instance it held: ${signal} → a running claim from another node (first seen on any stream)\n`)
  const rows = results.map((r, t) => [
    String(t + 1), String(r.victim), String(r.held), `${ms(r.deadFirstMs)} / ${ms(r.deadLastMs)}`, ms(median(r.claimedMs)),
    ms(median(r.replacedMs)), ms(max(r.replacedMs)), String(r.notReplaced), String(r.extraClaims),
    ...(fault === 'sigstop' ? [ms(r.aliveAgainMs ?? NaN), ms(r.resolvedMs ?? NaN), `${r.keptByVictim ?? '-'} / ${r.keptByReplacement ?? '-'}`] : []),
  ])
  summary.print(table(['TRIAL', 'NODE', 'HELD', 'DEAD: FIRST / LAST SURVIVOR', 'CLAIMED P50', 'RUNNING P50', 'RUNNING MAX', 'NOT REPLACED', 'EXTRA CLAIMS',
    ...(fault === 'sigstop' ? ['SIGCONT → ALIVE', 'SIGCONT → ONE CLAIM EACH', 'KEPT: RESUMED / REPLACEMENTS'] : [])], rows) + '\n')
  summary.print(`over all ${all.length} instances: running elsewhere after median ${ms(median(all))}, max ${ms(max(all))}; claimed after median ${ms(median(claimed))}\n`)
  summary.figure(fault, `${signal} → its instances running elsewhere: median`, ms(median(all)), `≤ ${ms(target)}`, median(all) <= target)
  summary.figure(fault, `${signal} → its instances running elsewhere: max`, ms(max(all)))
  summary.figure(fault, `${signal} → dead in a survivor's view: first / last, median`, `${ms(median(deadFirst))} / ${ms(median(deadLast))}`)
  if (notReplaced > 0) summary.figure(fault, `instances not running elsewhere within ${ms(LIMITS.failoverWaitMs)}`, String(notReplaced), '0', false)
  if (fault === 'sigstop') {
    const resolved = defined(results.map((r) => r.resolvedMs))
    const kept = results.reduce((a, r) => [a[0]! + (r.keptByVictim ?? 0), a[1]! + (r.keptByReplacement ?? 0)], [0, 0])
    summary.figure(fault, 'SIGCONT → one live claim per instance again: median / max', `${ms(median(resolved))} / ${ms(max(resolved))}`)
    summary.figure(fault, 'after SIGCONT, kept by the resumed node / by replacements', `${kept[0]} / ${kept[1]}`)
  }
}

async function failoverTrial (c: Cluster, fault: Fault, t: number): Promise<Trial> {
  await allAlive(c)
  const book = new ClaimBook()
  const members: Array<{ event: MemberEvent, observer: number, at: number }> = []
  /** Set once the victim is chosen: the instances it holds, with its generation of each. */
  let watch: { victimId: string, held: Map<string, number>, t0: number } | null = null
  const claimed = new Map<string, number>()
  const replaced = new Map<string, number>()
  const claimants = new Map<string, Set<string>>()
  const prefix = `${fault}-${t}-`
  const offTask = c.streams.onTask((r, observer, at) => {
    if (!r.job.startsWith(prefix)) return
    book.put(r, observer)
    const gen = watch?.held.get(r.id)
    if (watch === null || gen === undefined || r.node === watch.victimId || r.generation <= gen || at < watch.t0) return
    if (!claimants.has(r.id)) claimants.set(r.id, new Set())
    claimants.get(r.id)!.add(r.node)
    if (!claimed.has(r.id) && isActiveState(r.state)) claimed.set(r.id, at - watch.t0)
    if (!replaced.has(r.id) && r.state === 'running') replaced.set(r.id, at - watch.t0)
  })
  const offMember = c.streams.onMember((event, observer, at) => { members.push({ event, observer, at }) })
  const submitter = randomNode()
  let job: JobView | null = null
  /** The victim while it is killed or paused: brought back whatever happens. */
  let broken: number | null = null
  try {
    job = await c.clients[submitter]!.submitJob(serviceSpec(`${fault}-${t}`, SERVICE_COUNT, 600))
    const instances = Array.from({ length: SERVICE_COUNT }, (_, i) => `${job!.id}.${i}`)
    // Settled when every node has seen each instance's one running claim: a claim that only its writer has
    // shown may not have left it yet, and would die with a victim chosen at that moment.
    const oneRunning = (id: string): boolean => { const live = book.live(id); return live.length === 1 && live[0]!.state === 'running' && book.seenBy(live[0]!) === NODES }
    if (!await until(() => instances.every(oneRunning), LIMITS.settleMs)) throw new Error(`${job.id}: not all ${SERVICE_COUNT} instances running with one claim each within ${ms(LIMITS.settleMs)}`)
    const holders = new Map(instances.map((id) => [id, book.live(id)[0]!]))
    const perNode = c.nodes.map((n) => [...holders.values()].filter((r) => r.node === n.peerId).length)
    const victim = await chooseVictim(c, perNode, fault)
    const victimId = c.nodes[victim]!.peerId!
    const held = new Map([...holders].filter(([, r]) => r.node === victimId).map(([id, r]) => [id, r.generation]))
    log(`${fault} trial ${t + 1}: instances per node ${perNode.join(' ')}; ${fault === 'sigkill' ? 'killing' : 'pausing'} node ${victim}, which holds ${held.size}`)
    const t0 = performance.now()
    watch = { victimId, held, t0 }
    broken = victim
    if (fault === 'sigkill') {
      c.streams.unfollow(victim)
      await testnet.kill(c.dir, victim)
    } else {
      await testnet.pause(c.dir, victim)
    }
    await until(() => replaced.size === held.size, LIMITS.failoverWaitMs)
    for (const id of held.keys()) if (!replaced.has(id) && !interrupted) log(`${fault} trial ${t + 1}: ${id} not seen running elsewhere; claims seen: ${book.describe(id)}`)
    const deadTimes = deathTimes(members, victim, victimId, t0, 'dead')
    const trial: Trial = {
      victim, held: held.size, claimedMs: [...claimed.values()], replacedMs: [...replaced.values()], notReplaced: held.size - replaced.size,
      extraClaims: [...claimants.values()].reduce((a, set) => a + set.size - 1, 0),
      deadFirstMs: deadTimes.first, deadLastMs: deadTimes.last,
    }
    if (fault === 'sigstop') {
      await resumeAndResolve(c, victim, victimId, instances, held, book, members, trial)
      broken = null
      c.settledAt[victim] = performance.now() + NEWCOMER_GRACE_MS
    }
    // Stopped before a killed node comes back, so that it stops what it left running instead of adopting it.
    await c.clients[(victim + 1) % NODES]!.stopJob(job.id)
    job = null
    if (fault === 'sigkill') {
      await heal(c, fault, victim)
      broken = null
    }
    if (!await until(() => instances.every((id) => book.live(id).length === 0), LIMITS.settleMs) && !interrupted) log(`${fault} trial ${t + 1}: claims of the stopped job still live after ${ms(LIMITS.settleMs)}`)
    return trial
  } finally {
    offTask()
    offMember()
    if (broken !== null && !interrupted) await heal(c, fault, broken).catch((err: Error) => { log(`${fault}: could not bring node ${broken} back: ${err.message}`) })
    if (job !== null && !interrupted) await c.clients[submitter]!.stopJob(job.id).catch(() => {})
  }
}

/** Brings a victim back: SIGCONT for a paused node, a restart for a killed one (then followed again). */
async function heal (c: Cluster, fault: Fault, victim: number): Promise<void> {
  if (fault === 'sigstop') {
    await testnet.resume(c.dir, victim)
  } else {
    const node = await testnet.restart(c.dir, victim)
    c.nodes[victim] = node
    c.clients[victim] = connect(node.apiUrl, c.client)
    c.streams.follow(node)
  }
  c.settledAt[victim] = performance.now() + NEWCOMER_GRACE_MS
}

/** The node holding the most instances among those no other node counts as a newcomer; waits for one if there is none yet. */
async function chooseVictim (c: Cluster, perNode: readonly number[], fault: Fault): Promise<number> {
  const now = performance.now()
  const settled = c.settledAt.map((at, i) => ({ at, i })).filter((x) => x.at <= now)
  if (settled.length === 0) {
    const wait = Math.min(...c.settledAt) - now
    log(`${fault}: waiting ${ms(wait)} until a node has been known for ${ms(NEWCOMER_GRACE_MS)} (SWIM's newcomer grace stretches a newcomer's suspicion to its ceiling)`)
    await sleep(wait + 10)
    return await chooseVictim(c, perNode, fault)
  }
  const best = settled.reduce((a, b) => perNode[b.i]! > perNode[a.i]! ? b : a)
  const top = perNode.indexOf(Math.max(...perNode))
  if (best.i !== top) log(`${fault}: node ${top} holds the most (${perNode[top]}) but rejoined less than ${ms(NEWCOMER_GRACE_MS)} ago; taking node ${best.i} (${perNode[best.i]})`)
  return best.i
}

function deathTimes (members: ReadonlyArray<{ event: MemberEvent, observer: number, at: number }>, victim: number, victimId: string, t0: number, state: string): { first: number, last: number } {
  const firstBy = new Map<number, number>()
  for (const m of members) {
    if (m.observer === victim || m.event.member.id !== victimId || m.event.member.state !== state || m.at < t0 || firstBy.has(m.observer)) continue
    firstBy.set(m.observer, m.at - t0)
  }
  const times = [...firstBy.values()]
  return { first: times.length === 0 ? NaN : Math.min(...times), last: times.length < NODES - 1 ? NaN : Math.max(...times) }
}

/** SIGCONT, then until every instance has one live claim again (the claim rule keeps the lower generation). */
async function resumeAndResolve (c: Cluster, victim: number, victimId: string, instances: readonly string[], held: ReadonlyMap<string, number>, book: ClaimBook,
  members: ReadonlyArray<{ event: MemberEvent, observer: number, at: number }>, trial: Trial): Promise<void> {
  const t1 = performance.now()
  await testnet.resume(c.dir, victim)
  const resolved = await until(() => instances.every((id) => book.live(id).length === 1), LIMITS.failoverWaitMs)
  trial.resolvedMs = resolved ? performance.now() - t1 : NaN
  trial.aliveAgainMs = deathTimes(members, victim, victimId, t1, 'alive').first
  trial.keptByVictim = [...held.keys()].filter((id) => book.live(id)[0]?.node === victimId).length
  trial.keptByReplacement = [...held.keys()].filter((id) => { const h = book.live(id)[0]; return h !== undefined && h.node !== victimId }).length
  if (!resolved && !interrupted) log(`sigstop: some instances still have several live claims ${ms(LIMITS.failoverWaitMs)} after SIGCONT`)
}

// ---- the clusters: with users, and without ---------------------------------------------------

/**
 * `users`: a closed testnet as `murmur testnet up` starts it (cluster key, root key, an admin whose key
 * signs every request; every job record carries its signed submission, checked by every node). `open`:
 * the same nodes with --insecure-open-cluster and no root key (no users: requests unsigned, records
 * without proofs, and no cluster key). `open-users`: --insecure-open-cluster with --root-key (users
 * without the cluster key), to tell the cost of users from the cost of the cluster key.
 */
const VARIANTS = ['users', 'open', 'open-users'] as const
type Variant = typeof VARIANTS[number]
const VARIANT_TEXT: Readonly<Record<Variant, string>> = {
  users: 'closed, with users: cluster key and root key, requests signed by the admin key, job records carry their signed submissions',
  open: 'open, without users: --insecure-open-cluster, no root key, requests unsigned, job records without proofs',
  'open-users': 'open, with users: --insecure-open-cluster with --root-key (no cluster key), requests signed, proofs checked',
}

interface Started { nodes: TestnetNode[], client: ClientOptions }

async function startCluster (variant: Variant, dir: string): Promise<Started> {
  const progress = (m: string): void => { log(`testnet: ${m}`) }
  if (variant === 'users') {
    const state = await testnet.up({ nodes: NODES, dir, timeoutMs: 120_000, onProgress: progress })
    return { nodes: [...state.nodes], client: { key: testnet.adminKeyFile(dir), namespace: 'default' } }
  }
  return await upOpen(dir, variant === 'open-users', progress)
}

/**
 * An open testnet (testnet.up starts only closed ones): the same node processes, flags and layout
 * (<dir>/node-<i>, testnet.json, so testnet.down takes it down), but --insecure-open-cluster instead of
 * --cluster-key and --root-key; with `users`, --root-key still (the admin key made as testnet.up makes it).
 */
async function upOpen (dir: string, users: boolean, progress: (m: string) => void): Promise<Started> {
  // The cluster key written beside root.pub is given to no node.
  const files = users ? writeClusterFiles(testnet.clusterKeyFile(dir), true) : null
  const extraArgs = files === null ? [] : ['--root-key', files.rootPub]
  const ports = await freePorts(NODES * 2)
  const state: TestnetState = { version: 1, dir, createdAt: new Date().toISOString(), nodes: [], faults: { ...NO_NETWORK_FAULTS }, netns: null }
  for (let i = 0; i < NODES; i++) {
    const [port, apiPort] = [ports[2 * i]!, ports[2 * i + 1]!]
    state.nodes.push({ index: i, pid: null, port, apiPort, dataDir: join(dir, `node-${i}`), logFile: join(dir, `node-${i}.log`), peerId: null, addrs: [], apiUrl: `http://127.0.0.1:${apiPort}`, rulesPending: false, netns: null, address: null })
  }
  await writeState(state)
  const client: ClientOptions = files === null ? { key: null, namespace: 'default' } : { key: files.adminKey, namespace: 'default' }
  progress(`starting node 0 of ${NODES} (open cluster${users ? ' with --root-key' : ', no users'})`)
  await startOpenNode(state, state.nodes[0]!, [], extraArgs)
  progress(`starting nodes 1–${NODES - 1}, joining through node 0`)
  await Promise.all(state.nodes.slice(1).map(async (node) => { await startOpenNode(state, node, state.nodes[0]!.addrs, extraArgs) }))
  const deadline = performance.now() + 120_000
  let last = -1
  while (!interrupted) {
    const views = await Promise.all(state.nodes.map(async (n) => await connect(n.apiUrl, { ...client, timeoutMs: 2_000 }).members()
      .then(({ members }) => members.filter((m) => m.state === 'alive').length, () => -1)))
    const done = views.filter((v) => v === NODES).length
    if (done !== last) progress(`${done}/${NODES} nodes see all ${NODES} alive`)
    last = done
    if (done === NODES) break
    if (performance.now() > deadline) throw new Error(`the open testnet's nodes did not all see each other within 120 s; logs in ${dir}`)
    await sleep(100)
  }
  return { nodes: state.nodes, client }
}

/** As testnet.ts startNode, with clusterKeyFile null (spawnNode's --insecure-open-cluster). */
async function startOpenNode (state: TestnetState, node: TestnetNode, seeds: string[], extraArgs: string[]): Promise<void> {
  await mkdir(node.dataDir, { recursive: true })
  node.pid = spawnNode({
    dataDir: node.dataDir, logFile: node.logFile, port: node.port, apiPort: node.apiPort, join: seeds,
    labels: { 'testnet.index': String(node.index) }, extraArgs, clusterKeyFile: null, faultInjection: true, faultRules: null,
  })
  await testnet.awaitRuntime(state, node)
}

// ---- main ----------------------------------------------------------------------------------

let cleaning: Promise<{ stopped: number, killed: number, dirRemoved: boolean }> | null = null
let dir: string | null = null

/** Takes the current testnet down and removes its dir (BENCH_KEEP_DIR=1 keeps both). */
async function downCurrent (): Promise<{ stopped: number, killed: number, dirRemoved: boolean }> {
  cluster?.streams.stop()
  const d = dir
  if (d === null) return { stopped: 0, killed: 0, dirRemoved: true }
  const keep = process.env.BENCH_KEEP_DIR === '1'
  const down = await testnet.down({ dir: d, keepData: keep }).catch((err: Error) => { log(`cleanup: testnet down failed: ${err.message}`); return { stopped: 0, killed: 0 } })
  const dirRemoved = keep ? false : await rm(d, { recursive: true, force: true }).then(() => true, () => false)
  if (keep) log(`kept ${d}`)
  if (dir === d) dir = null
  return { ...down, dirRemoved }
}

async function cleanup (): Promise<{ stopped: number, killed: number, dirRemoved: boolean }> {
  cleaning ??= (async () => {
    interrupted = true
    return await downCurrent()
  })()
  return await cleaning
}

function cleanupLine (c: { stopped: number, killed: number, dirRemoved: boolean }): string {
  return `cleanup: testnet down (${c.stopped} nodes stopped, ${c.killed} killed after the grace), temp dir ${c.dirRemoved ? 'removed' : 'NOT removed'}`
}

interface Machine { node: string, cores: number, cpu: string, kernel: string, loadavg: number[] }

interface ClusterRun {
  variant: Variant
  round: number
  upMs: number
  loadavg: number[]
  results: Record<string, unknown>
  logs: NodeLogs | null
  reconnects: number
  down: { stopped: number, killed: number, dirRemoved: boolean } | null
}

/** One testnet of `variant`: up, the parts in RUN_ORDER, its logs read, down (unless interrupted: then cleanup() has it). */
async function runCluster (variant: Variant, round: number, parts: ReadonlySet<Part>, opts: { submissions: number, seconds: number, inflight: number, trials: number }, machine: Machine, compare: boolean): Promise<ClusterRun> {
  for (const k of Object.keys(summary.results)) delete summary.results[k]
  const figuresFrom = summary.figures.length
  dir = await mkdtemp(join(tmpdir(), `murmur-bench-jobs-${variant}-`))
  const load = loadavg().map(r1)
  log(`testnet: ${NODES} nodes in ${dir}${compare ? `: ${VARIANT_TEXT[variant]}` : ''}`)
  const upFrom = performance.now()
  const started = await startCluster(variant, dir)
  const upMs = performance.now() - upFrom
  cluster = {
    dir,
    variant,
    nodes: [...started.nodes],
    client: started.client,
    clients: started.nodes.map((n) => connect(n.apiUrl, started.client)),
    streams: new Streams(started.client),
    settledAt: started.nodes.map(() => performance.now() + NEWCOMER_GRACE_MS),
  }
  for (const node of cluster.nodes) cluster.streams.follow(node)
  // The streams' answers have no event of their own: give them a moment to open.
  await sleep(500)
  log(`testnet: up in ${ms(upMs)}`)
  if (compare) summary.print(`\n==== ${variant}${round > 0 ? ` (round ${round + 1})` : ''}: ${VARIANT_TEXT[variant]}; testnet up in ${ms(upMs)}, load average ${load.join(' ')} ====\n`)
  else summary.print(`jobs on a ${NODES}-node loopback testnet, Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}; testnet up in ${ms(upMs)}\n`)
  for (const part of RUN_ORDER) {
    if (!parts.has(part) || interrupted) continue
    try {
      if (part === 'latency') await latency(cluster, opts.submissions)
      else if (part === 'throughput') await throughput(cluster, opts.seconds, opts.inflight)
      else await failover(cluster, part, opts.trials)
    } catch (err) {
      if (interrupted) break
      // One part that could not finish (a node that never came back, a job that never ran) leaves the others their run.
      log(`${part}: failed: ${(err as Error).stack ?? (err as Error).message}`)
      summary.figure(part, 'the part did not complete', (err as Error).message.slice(0, 120), 'completes', false)
    }
  }
  const logs = interrupted ? null : nodeLogs(cluster)
  const reconnects = cluster.streams.reconnects
  if (compare) for (const f of summary.figures.slice(figuresFrom)) f.part = `${variant}${round > 0 ? ` #${round + 1}` : ''}: ${f.part}`
  if (logs !== null) printLogs(logs)
  if (reconnects > 0) summary.print(`event streams followed again after ending: ${reconnects} (events in the gaps were missed)\n`)
  const results = { ...summary.results }
  const down = interrupted ? null : await downCurrent()
  if (down !== null) log(cleanupLine(down))
  return { variant, round, upMs: Math.round(upMs), loadavg: load, results, logs, reconnects, down }
}

function printLogs (logs: NodeLogs): void {
  const top = Object.entries(logs.byMessage).filter(([k]) => !k.startsWith('info: ') || /stopping|restart|could not|duplicate/.test(k)).sort((a, b) => b[1] - a[1]).slice(0, 8)
  summary.print(`\nthe nodes' logs: ${logs.duplicateStops} tasks stopped as duplicates (in ${logs.duplicateStopLines} lines), ${logs.refusedStarts} starts refused; executor start() p50 ${ms(logs.taskStart.p50)}, p99 ${ms(logs.taskStart.p99)} over ${logs.taskStart.n} starts\n`)
  summary.print(`${top.length === 0 ? 'no warnings' : top.map(([k, v]) => `${v} × "${k}"`).join('; ')}\n`)
}

/**
 * The figures the comparison shows, each read from one run's results; a ratio is with ÷ without. Not the
 * latency phases: a signed job's submittedAt is its request's signing time, not when the node took it.
 */
const COMPARED: ReadonlyArray<{ what: string, unit: 'ms' | '/s' | 'ms CPU' | '%', get: (r: Record<string, any>) => number | undefined }> = [
  { what: 'latency: submit → running seen, p50', unit: 'ms', get: (r) => r.latency?.total?.p50 },
  { what: 'latency: submit → running seen, p99', unit: 'ms', get: (r) => r.latency?.total?.p99 },
  { what: 'latency: submitJob answered (one at a time), p50', unit: 'ms', get: (r) => r.latency?.answered?.p50 },
  { what: 'latency: submitJob answered (one at a time), p99', unit: 'ms', get: (r) => r.latency?.answered?.p99 },
  { what: 'throughput: tasks started per second', unit: '/s', get: (r) => r.throughput?.startsPerSecond },
  { what: 'throughput: submissions answered per second', unit: '/s', get: (r) => r.throughput?.submitsPerSecond },
  { what: 'throughput: submitJob under load, p50', unit: 'ms', get: (r) => r.throughput?.submit?.p50 },
  { what: 'throughput: submitJob under load, p99', unit: 'ms', get: (r) => r.throughput?.submit?.p99 },
  { what: 'throughput: answered → started, p50', unit: 'ms', get: (r) => r.throughput?.answeredToStarted?.p50 },
  { what: 'throughput: answered → started, p99', unit: 'ms', get: (r) => r.throughput?.answeredToStarted?.p99 },
  { what: 'throughput: node CPU per start (5 nodes summed)', unit: 'ms CPU', get: (r) => r.throughput?.nodeCpuMsPerStart },
  { what: 'throughput: the bench process\'s CPU (clients, signing)', unit: '%', get: (r) => r.throughput?.ownCpuPct },
  { what: 'throughput: machine busy', unit: '%', get: (r) => r.throughput?.machineBusyPct },
  { what: 'throughput: other processes on the machine (% of a core)', unit: '%', get: (r) => r.throughput?.otherCpuPct },
]

function compareText (runs: readonly ClusterRun[], variants: readonly Variant[]): { text: string, rows: Array<Record<string, unknown>> } {
  const base = variants.includes('open') ? 'open' : variants[variants.length - 1]!
  const fmt = (x: number, unit: string): string => Number.isNaN(x) ? '-' : unit === 'ms' ? ms(x) : unit === '/s' ? perSecond(x) : unit === '%' ? pct(x) : `${x.toFixed(1)} ms`
  const rows: Array<Record<string, unknown>> = []
  const cells = COMPARED.map((f) => {
    const by = variants.map((v) => runs.filter((r) => r.variant === v).map((r) => f.get(r.results)).filter((x): x is number => typeof x === 'number'))
    if (by.every((xs) => xs.length === 0)) return null
    // The middle value, or the mean of the middle two (percentile's nearest rank would take the lower of two runs).
    const mid = (xs: readonly number[]): number => { const s = [...xs].sort((a, b) => a - b); const h = s.length >> 1; return s.length === 0 ? NaN : s.length % 2 === 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2 }
    const medians = by.map((xs) => mid(xs))
    const baseMedian = medians[variants.indexOf(base)]!
    rows.push({ what: f.what, unit: f.unit, ...Object.fromEntries(variants.map((v, i) => [v, by[i]])), base })
    return [f.what, ...by.map((xs, i) => xs.length <= 1 ? fmt(medians[i]!, f.unit) : `${fmt(medians[i]!, f.unit)} (${xs.map((x) => fmt(x, f.unit)).join(', ')})`),
      ...variants.filter((v) => v !== base).map((v) => { const m = medians[variants.indexOf(v)]!; return Number.isNaN(m) || !(baseMedian > 0) ? '-' : `${(m / baseMedian).toFixed(2)}×` })]
  }).filter((c): c is string[] => c !== null)
  const header = ['FIGURE', ...variants.map((v) => v.toUpperCase()), ...variants.filter((v) => v !== base).map((v) => `${v.toUpperCase()} ÷ ${base.toUpperCase()}`)]
  return { text: table(header, cells), rows }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...COMMON_OPTIONS,
      submissions: { type: 'string' },
      seconds: { type: 'string' },
      inflight: { type: 'string' },
      trials: { type: 'string' },
      'compare-users': { type: 'boolean', default: false },
      variants: { type: 'string' },
      rounds: { type: 'string' },
    },
  })
  const quick = values.quick
  const compare = values['compare-users']
  summary.json = values.json
  const { selected: parts, unknown } = selectParts(values.only ?? (compare ? 'latency,throughput' : undefined), PARTS)
  const submissions = Number(values.submissions ?? (quick ? 40 : 200))
  const seconds = Number(values.seconds ?? (quick ? 5 : 20))
  const inflight = Number(values.inflight ?? 10)
  const trials = Number(values.trials ?? (quick ? 1 : 3))
  const rounds = Number(values.rounds ?? 1)
  const variantNames = (values.variants ?? 'users,open').split(',').map((v) => v.trim())
  const variants = variantNames.filter((v): v is Variant => (VARIANTS as readonly string[]).includes(v))
  const whole = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi
  if (unknown.length > 0 || !whole(submissions, 1, 10_000) || !whole(seconds, 1, 600) || !whole(inflight, 1, 200) || !whole(trials, 1, 50) || !whole(rounds, 1, 20)) {
    process.stderr.write(`bench: --only takes parts from ${PARTS.join(',')}; --submissions 1–10000, --seconds 1–600, --inflight 1–200, --trials 1–50, --rounds 1–20 (whole numbers)\n`)
    process.exit(2)
  }
  if (!compare && (values.variants !== undefined || values.rounds !== undefined)) {
    process.stderr.write('bench: --variants and --rounds go with --compare-users\n')
    process.exit(2)
  }
  if (compare && (variants.length !== variantNames.length || variants.length < 2 || new Set(variants).size !== variants.length)) {
    process.stderr.write(`bench: --variants takes two or more of ${VARIANTS.join(',')}, each once (default users,open)\n`)
    process.exit(2)
  }
  if (compare && (parts.has('sigkill') || parts.has('sigstop'))) {
    // A failover part restarts a node through testnet.restart, which starts only closed nodes.
    process.stderr.write('bench: --compare-users runs latency and throughput only\n')
    process.exit(2)
  }
  const started = performance.now()
  const machine: Machine = { node: process.version, cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release(), loadavg: loadavg().map(r1) }
  log(`Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}`)

  let bySignal = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (bySignal) return
    bySignal = true
    log(`${signal === 'SIGINT' ? 'interrupted' : signal}; taking the testnet down`)
    void cleanup().then((c) => { log(cleanupLine(c)) }, (err: Error) => { log(`cleanup failed: ${err.message}`) }).finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  process.on('uncaughtException', (err) => {
    log(`uncaught exception: ${err.stack ?? err.message}`)
    if (bySignal) return
    bySignal = true
    void cleanup().then((c) => { log(cleanupLine(c)) }, (e: Error) => { log(`cleanup failed: ${e.message}`) }).finally(() => process.exit(1))
  })

  // Back to back, and with more rounds in the order ABBA…, so that a slow stretch of the machine hits every variant.
  const order: Array<{ variant: Variant, round: number }> = compare
    ? Array.from({ length: rounds }, (_, r) => (r % 2 === 0 ? variants : [...variants].reverse()).map((variant) => ({ variant, round: r }))).flat()
    : [{ variant: 'users', round: 0 }]
  if (compare) {
    summary.print(`jobs with and without users on ${NODES}-node loopback testnets, one after the other (${order.map((o) => o.variant).join(', ')}), Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}\n`)
    for (const v of variants) summary.print(`  ${v}: ${VARIANT_TEXT[v]}\n`)
  }
  const runs: ClusterRun[] = []
  let report: Awaited<ReturnType<typeof cleanup>> | undefined
  try {
    for (const { variant, round } of order) {
      if (interrupted) break
      runs.push(await runCluster(variant, round, parts, { submissions, seconds, inflight, trials }, machine, compare))
    }
  } catch (err) {
    if (!bySignal) throw err
  } finally {
    if (!bySignal) report = await cleanup()
  }
  if (bySignal) return
  const elapsed = performance.now() - started
  const last = runs[runs.length - 1]
  const final = last?.down ?? report!
  log(cleanupLine(final))
  const comparison = compare ? compareText(runs, variants) : null
  if (summary.json) {
    process.stdout.write(JSON.stringify(compare
      ? { bench: 'jobs', mode: 'compare-users', ...machine, quick, nodes: NODES, elapsedMs: Math.round(elapsed), variants: Object.fromEntries(variants.map((v) => [v, VARIANT_TEXT[v]])), comparison: comparison!.rows, runs, summary: summary.figures }
      : {
          bench: 'jobs', ...machine, quick, nodes: NODES, elapsedMs: Math.round(elapsed), targets: TARGETS, results: last?.results ?? {}, summary: summary.figures,
          streamReconnects: last?.reconnects ?? 0, nodeLogs: last?.logs ?? null, cleanup: final,
        }, null, 2) + '\n')
    return
  }
  summary.print(`\nsummary${quick ? ' (--quick: smaller runs, the targets are for the full run)' : ''}, ${NODES} nodes on Node ${machine.node}, ${machine.cores} cores, ${ms(elapsed)} in all\n`)
  summary.print(table(['PART', 'FIGURE', 'MEASURED', 'TARGET', ''], summary.rows()) + '\n')
  if (comparison !== null) {
    summary.print(`\nwith and without users (${rounds === 1 ? 'one run each' : `median of ${rounds} runs each, the runs in brackets`}; same sizes: ${parts.has('latency') ? `${submissions} latency jobs, ` : ''}${parts.has('throughput') ? `${seconds} s of throughput with ${inflight} in flight` : ''})\n`)
    summary.print(comparison.text + '\n')
  }
  summary.print(`${cleanupLine(final)}\n`)
}

await main()
