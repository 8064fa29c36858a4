// Executor benchmark: the task runner of node/executor/ in this process, with real
// processes in this machine's cgroups. Prints figures, each next to its target with
// "met" or "missed" where it has one; never fails on time. Usage:
//   npm run bench:executor -- [--only start,throughput,stop,memory] [--quick] [--json]
//                             [--inflight 16,64] [--seconds 10] [--dir /tmp]
//
//   start       start() → resolved, which is when the process runs in its cgroup:
//               300 sequential starts of /bin/true, each one's exit awaited before
//               the next (an idle runner each time); then 50 of `sleep 60` left
//               running, each checked in /proc/<pid>/cgroup right after start()
//               resolved (a sanity line, not a timing), then stopped together
//   throughput  N starts of /bin/true kept in flight for --seconds, for each N of
//               --inflight: launches/s completed (start → exit → cgroup removed →
//               exit recorded) and starts/s, after a warm-up of 1 s; ended tasks are
//               pruned every second. CPU per launch: this process's, the tasks' own
//               (the root cgroup's accounting) and the machine's busy share
//   stop        stop() of `sleep 60` (ends on SIGTERM), and of a task that ignores
//               SIGTERM, with a grace of 50 ms: the SIGKILL path (freeze, kill, wait
//               for the group to empty, thaw, rmdir)
//   memory      RSS and heap of this process per running task, with 200 `sleep 600`
//               running (after gc()); this process's CPU while they run (the
//               sampler); then the time to stop all 200 (stopAll, as a leaving node).
//               It runs first, when RSS has not yet grown to the high-water mark the
//               other parts leave (growth below that mark would not show)
//
// Throughput is bound by this process's one thread (the table shows its event loop
// utilization): spawn() forks the whole node, so its cost grows with the node's RSS,
// and each start creates a few files and dirs. The file system of the tasks dir
// matters: on ext4 without a journal every create scans the recently deleted inodes
// (the ones pruning leaves) while their inode table is not yet written back, which
// cost up to 2.5 ms of this process's CPU per launch on the development VM (155/s
// there against 225/s with --dir /dev/shm); the header says what the tasks dir is on.
//
// The full run takes about 45 s on 2 cores; --quick about 10 s (fewer starts,
// one in-flight level for 2 s; the targets are for the full run). --json: one JSON
// document on stdout instead of the tables (progress still goes to stderr).
// Needs root for cgroups (without, tasks run unconfined and the isolation line says
// so). The tasks dir goes below --dir (default the OS temp dir): every start writes
// and fsyncs there, so put it on the disk a node's data dir would be on. Run it
// alone: the figures are CPU- and fork-bound, and a shared VM moves them by tens of
// per cent between runs. Ctrl-C stops the tasks and removes what the run made.

import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, loadavg, release, tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { pino } from 'pino'
import { table } from '../cli/table.ts'
import { type HierarchyPlan, detectHierarchies, parseSelfCgroup } from '../node/executor/cgroups.ts'
import { Executor, RUNNER_DEFAULTS, dirName, purgeTasks } from '../node/executor/executor.ts'
import type { AttemptInfo, AttemptSpec } from '../node/executor/types.ts'
import { COMMON_OPTIONS, Report, log, machineTimes, ownCpuMs, percentile, rootCpuMs, selectParts } from './report.ts'

const PARTS = ['start', 'throughput', 'stop', 'memory'] as const
type Part = typeof PARTS[number]

const TARGETS = Object.freeze({
  startP50MsMax: 10,
  startP99MsMax: 50,
  launchesPerSecondMin: 200,
})

const MIB = 1024 ** 2
/** What every task asks for: small, so that admission never refuses with the capacity below. */
const TASK_CPU_MILLIS = 100
const TASK_MEMORY_BYTES = 64 * MIB
const CAPACITY = Object.freeze({ cpuMillis: 100_000_000, memoryBytes: 2 ** 50 })
const IGNORE_TERM_GRACE_MS = 50

// ---- figures and the summary ---------------------------------------------------------

const summary = new Report()

const max = (xs: readonly number[]): number => xs.length === 0 ? NaN : Math.max(...xs)
const mean = (xs: readonly number[]): number => xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length
const ms = (x: number): string => Number.isNaN(x) ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x)} ms`
const count = (x: number): string => Math.round(x).toLocaleString('en-US')
const perSecond = (x: number): string => Number.isNaN(x) ? '-' : `${count(x)}/s`
const pct = (x: number): string => Number.isNaN(x) ? '-' : `${x.toFixed(1)} %`
const kib = (bytes: number): string => Number.isNaN(bytes) ? '-' : `${(bytes / 1024).toFixed(1)} KiB`
const mib = (bytes: number): string => `${(bytes / MIB).toFixed(1)} MiB`
/** Rounded for the JSON document. */
const r2 = (x: number): number => Math.round(x * 100) / 100

interface Spread { n: number, p50: number, p99: number, max: number, mean: number }
function spread (xs: readonly number[]): Spread {
  return { n: xs.length, p50: r2(percentile(xs, 0.5)), p99: r2(percentile(xs, 0.99)), max: r2(max(xs)), mean: r2(mean(xs)) }
}

// ---- this machine ----------------------------------------------------------------------

/** gc() without --expose-gc on the command line: the flag set at run time, the function taken from a fresh context. */
function gcFunction (): () => void {
  const existing = (globalThis as { gc?: () => void }).gc
  if (existing !== undefined) return existing
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

function openFds (): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return NaN
  }
}

/** The file system a path is on (the longest mount point above it), and for ext4 whether it has a journal. */
function fileSystemOf (path: string): { type: string, device: string, mountPoint: string, journal: boolean | null } {
  let best = { type: 'unknown', device: 'unknown', mountPoint: '', journal: null as boolean | null }
  try {
    const real = realpathSync(path)
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [device, rawMount, type] = line.split(' ')
      if (device === undefined || rawMount === undefined || type === undefined) continue
      const mountPoint = rawMount.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)))
      const under = mountPoint === '/' || real === mountPoint || real.startsWith(`${mountPoint}/`)
      if (under && mountPoint.length >= best.mountPoint.length) best = { type, device, mountPoint, journal: null }
    }
    if (best.type === 'ext4') {
      // jbd2 lists each journal as <device>-<journal inode>.
      const journals = existsSync('/proc/fs/jbd2') ? readdirSync('/proc/fs/jbd2') : []
      best.journal = journals.some((j) => j.startsWith(`${basename(best.device)}-`))
    }
  } catch {}
  return best
}

function comm (pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return null
  }
}

/** Waits until the task's process is `name` (the shim has exec'd the command). */
async function untilExecd (pid: number, name: string, timeoutMs = 2_000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (comm(pid) === name) return true
    if (performance.now() >= deadline) return false
    await sleep(1)
  }
}

// ---- the runner under test, and cleanup (also on Ctrl-C) ------------------------------

interface Run {
  executor: Executor
  nodeId: string
  rootName: string
  /** The parent of the tasks dir, removed at the end. */
  base: string
  tasksDir: string
  plan: HierarchyPlan
  /** Where the node's cgroup root would be, in every hierarchy: none of them may be left at the end. */
  rootDirs: string[]
}

let run: Run | null = null
let interrupted = false
/** start() calls not yet resolved, so that cleanup stops only once none can add a task. */
let starting = 0
const waiters = new Map<string, (info: AttemptInfo) => void>()

function onExit (info: AttemptInfo): void {
  const waiter = waiters.get(info.id)
  if (waiter === undefined) return
  waiters.delete(info.id)
  waiter(info)
}

/** Resolves with the task's exit event; register before start(), which emits it itself for a start that failed. */
async function exitOf (id: string): Promise<AttemptInfo> {
  return await new Promise<AttemptInfo>((resolve) => { waiters.set(id, resolve) })
}

async function start (spec: AttemptSpec): Promise<AttemptInfo> {
  if (interrupted) throw new Error('interrupted')
  starting++
  try {
    return await run!.executor.start(spec)
  } finally {
    starting--
  }
}

function spec (id: string, command: string, args: string[] = []): AttemptSpec {
  return { id, job: 'bench', command, args, env: {}, cpuMillis: TASK_CPU_MILLIS, memoryBytes: TASK_MEMORY_BYTES }
}

async function open (parent: string): Promise<Run> {
  const base = await mkdtemp(join(parent, 'murmur-bench-executor-'))
  const nodeId = `bench-${process.pid}`
  const rootName = `murmur-${nodeId}`
  const plan = detectHierarchies('auto')
  const rootDirs = plan.version === 2 ? [join(plan.dir, rootName)] : plan.version === 1 ? [...new Set(Object.values(plan.dirs))].map((d) => join(d, rootName)) : []
  const tasksDir = join(base, 'tasks')
  run = { executor: null as unknown as Executor, nodeId, rootName, base, tasksDir, plan, rootDirs }
  run.executor = Executor.open({
    nodeId,
    dir: tasksDir,
    capacity: CAPACITY,
    isolation: 'auto',
    log: pino({ level: 'silent' }),
    sampleMs: RUNNER_DEFAULTS.sampleMs,
    graceMs: RUNNER_DEFAULTS.graceMs,
  })
  run.executor.on('exit', onExit)
  return run
}

/** CPU time of every task that ever ran below the root. */
function tasksCpuMs (): number {
  if (run === null || run.executor.isolation.kind === 'none') return NaN
  return rootCpuMs(run.plan, run.rootName)
}

/** Stops every task not yet ended (SIGKILL after `graceMs`), as often as new ones appear. */
async function stopEverything (graceMs: number): Promise<void> {
  const executor = run!.executor
  for (let round = 0; round < 5; round++) {
    const deadline = performance.now() + 5_000
    while (starting > 0 && performance.now() < deadline) await sleep(5)
    if (executor.list().every((t) => t.phase === 'ended')) return
    await executor.stopAll(graceMs)
  }
}

interface Cleanup { tasksLeft: number, rootsLeft: string[], purged: boolean, dirRemoved: boolean }
let cleaning: Promise<Cleanup> | null = null

async function cleanupOnce (): Promise<Cleanup> {
  interrupted = true
  const report: Cleanup = { tasksLeft: 0, rootsLeft: [], purged: false, dirRemoved: false }
  if (run === null) return report
  const { executor, rootDirs, tasksDir, base } = run
  try {
    await stopEverything(1_000)
    report.tasksLeft = executor.list().filter((t) => t.phase !== 'ended').length
    await executor.prune(Date.now() + 1)
  } catch (err) {
    log(`cleanup: stopping the tasks failed: ${(err as Error).message}`)
  }
  await executor.close().catch((err: Error) => { log(`cleanup: close failed: ${err.message}`) })
  report.rootsLeft = rootDirs.filter((d) => existsSync(d))
  if (report.rootsLeft.length > 0) {
    // The runner left its root behind: kill and remove what is below it as a dead node's leftovers are.
    log(`cleanup: the cgroup root is still there after close() (${report.rootsLeft.join(', ')}); purging it`)
    report.purged = true
    await purgeTasks(tasksDir).catch((err: Error) => { log(`cleanup: purge failed: ${err.message}`) })
    report.rootsLeft = rootDirs.filter((d) => existsSync(d))
  }
  await rm(base, { recursive: true, force: true }).catch(() => {})
  report.dirRemoved = !existsSync(base)
  return report
}

async function cleanup (): Promise<Cleanup> {
  cleaning ??= cleanupOnce()
  return await cleaning
}

function cleanupLine (c: Cleanup): string {
  const root = run === null ? '' : c.rootsLeft.length === 0
    ? `no ${run.rootName} cgroup left in ${run.rootDirs.length} hierarch${run.rootDirs.length === 1 ? 'y' : 'ies'}`
    : `${run.rootName} LEFT in ${c.rootsLeft.join(', ')}`
  return `cleanup: ${c.tasksLeft === 0 ? 'all tasks stopped' : `${c.tasksLeft} tasks NOT stopped`}, executor closed, ${root}${c.purged ? ' (after purgeTasks: close() had left it)' : ''}, temp dir ${c.dirRemoved ? 'removed' : 'NOT removed'}`
}

// ---- 1. start latency ----------------------------------------------------------------

/** Whether /proc/<pid>/cgroup puts the process in the task's group in every hierarchy the root spans. */
function inItsGroup (pid: number, name: string): { ok: boolean, wrong: string[] } {
  const plan = run!.plan
  const suffix = `/${run!.rootName}/${name}`
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
  } catch (err) {
    return { ok: false, wrong: [`cannot read /proc/${pid}/cgroup: ${(err as Error).message}`] }
  }
  const self = parseSelfCgroup(text)
  const wrong: string[] = []
  if (plan.version === 2) {
    if (!(self.unified ?? '').endsWith(suffix)) wrong.push(`unified: ${self.unified}`)
  } else if (plan.version === 1) {
    for (const controller of Object.keys(plan.dirs)) {
      const path = self.v1.get(controller)
      if (path === undefined || !path.endsWith(suffix)) wrong.push(`${controller}: ${path}`)
    }
  }
  return { ok: wrong.length === 0, wrong }
}

async function startLatency (trueStarts: number, sleepStarts: number): Promise<void> {
  const executor = run!.executor
  log(`start: ${trueStarts} sequential starts of /bin/true, each exit awaited`)
  const latencies: number[] = []
  const cycles: number[] = []
  let cold = NaN
  let failed = 0
  let badExits = 0
  for (let i = -1; i < trueStarts && !interrupted; i++) {
    const id = `start-true-${i < 0 ? 'cold' : i}`
    const exited = exitOf(id)
    const t0 = performance.now()
    const info = await start(spec(id, '/bin/true'))
    const t1 = performance.now()
    const exit = await exited
    const t2 = performance.now()
    if (info.phase === 'ended') failed++
    else if (exit.exit?.reason !== 'exited' || exit.exit.code !== 0) badExits++
    if (i < 0) { cold = t1 - t0; continue }
    latencies.push(t1 - t0)
    cycles.push(t2 - t0)
    if ((i + 1) % 100 === 0) {
      await executor.prune(Date.now() + 1)
      log(`start: ${i + 1}/${trueStarts}, p50 so far ${ms(percentile(latencies, 0.5))}`)
    }
  }
  await executor.prune(Date.now() + 1)

  log(`start: ${sleepStarts} sequential starts of sleep 60, left running, each checked in /proc/<pid>/cgroup`)
  const sleepLatencies: number[] = []
  let inGroup = 0
  let execd = 0
  let sleepFailed = 0
  const wrong: string[] = []
  for (let i = 0; i < sleepStarts && !interrupted; i++) {
    const id = `start-sleep-${i}`
    const t0 = performance.now()
    const info = await start(spec(id, '/bin/sleep', ['60']))
    sleepLatencies.push(performance.now() - t0)
    if (info.phase === 'ended' || info.pid === null) { sleepFailed++; continue }
    // At once, before anything else runs: where is the process now?
    const name = comm(info.pid)
    const check = run!.executor.isolation.kind === 'none' ? { ok: false, wrong: ['no isolation'] } : inItsGroup(info.pid, dirName(id))
    if (name === 'sleep') execd++
    if (check.ok) inGroup++
    else if (wrong.length < 3) wrong.push(`${id} (pid ${info.pid}): ${check.wrong.join('; ')}`)
  }
  // Stop them only once each runs its command: a shim stopped before it read its gate byte
  // resets the gate pipe, which node/executor/launch.ts does not handle (the process dies).
  for (const t of executor.list()) if (t.phase === 'running' && t.pid !== null) await untilExecd(t.pid, 'sleep')
  const stopping = performance.now()
  await executor.stopAll(10_000)
  const stopAllMs = performance.now() - stopping
  await executor.prune(Date.now() + 1)

  if (interrupted) return
  const sane = `${inGroup}/${sleepLatencies.length} in their task's group in every hierarchy right after start()`
  log(`start: ${sane}; ${execd} of them had already exec'd sleep (the others were still the shim, which execs once start() has let it go); stopping all took ${ms(stopAllMs)}`)
  for (const w of wrong) log(`start: NOT in its group: ${w}`)

  const t = spread(latencies)
  const s = spread(sleepLatencies)
  const c = spread(cycles)
  summary.results.start = { true: t, trueCycle: c, coldMs: r2(cold), sleep: s, failed: failed + sleepFailed, badExits, inGroup, checked: sleepLatencies.length, execdAtResolve: execd, stopAllSleepMs: r2(stopAllMs), wrong }
  summary.print(`\nstart: start() → resolved (the process runs in its cgroup); ${trueStarts} of /bin/true one at a time, each exit awaited; ${sleepStarts} of sleep 60 left running\n`)
  summary.print(table(['COMMAND', 'STARTS', 'P50', 'P99', 'MAX', 'MEAN'], [
    ['/bin/true', String(t.n), ms(t.p50), ms(t.p99), ms(t.max), ms(t.mean)],
    ['  start → exit recorded', String(c.n), ms(c.p50), ms(c.p99), ms(c.max), ms(c.mean)],
    ['sleep 60 (kept running)', String(s.n), ms(s.p50), ms(s.p99), ms(s.max), ms(s.mean)],
  ]) + '\n')
  summary.print(`first start (cold, not counted): ${ms(cold)}; ${failed + sleepFailed} failed to start, ${badExits} exits not "exited 0"\n`)
  summary.print(`sanity: ${sane}; ${execd} had exec'd already; stopping the ${sleepLatencies.length} together took ${ms(stopAllMs)}\n`)
  summary.figure('start', `start → in its cgroup, /bin/true ×${t.n}: p50`, ms(t.p50), `≤ ${TARGETS.startP50MsMax} ms`, t.p50 <= TARGETS.startP50MsMax)
  summary.figure('start', `start → in its cgroup, /bin/true ×${t.n}: p99`, ms(t.p99), `≤ ${TARGETS.startP99MsMax} ms`, t.p99 <= TARGETS.startP99MsMax)
  summary.figure('start', `start → in its cgroup, /bin/true ×${t.n}: max`, ms(t.max))
  summary.figure('start', `start → in its cgroup, sleep 60 ×${s.n} kept running: p50 / p99`, `${ms(s.p50)} / ${ms(s.p99)}`)
  summary.figure('start', 'in its cgroup right after start() (sanity)', `${inGroup}/${sleepLatencies.length}`, 'all', inGroup === sleepLatencies.length && sleepLatencies.length > 0)
  if (failed + sleepFailed + badExits > 0) summary.figure('start', 'failed starts or bad exits', String(failed + sleepFailed + badExits), '0', false)
}

// ---- 2. sustained launches -------------------------------------------------------------

interface Throughput {
  inflight: number
  seconds: number
  launchesPerSecond: number
  startsPerSecond: number
  completed: number
  failed: number
  badExits: number
  start: Spread
  cycle: Spread
  nodeCpuMsPerLaunch: number
  tasksCpuMsPerLaunch: number
  machineBusyPct: number
  /** The share of the time this process's event loop was busy: near 100 %, its one thread is the bound. */
  loopBusyPct: number
  pruned: number
  errors: string[]
}

async function throughputAt (inflight: number, seconds: number): Promise<Throughput> {
  const executor = run!.executor
  const warmMs = Math.min(1_000, seconds * 200)
  const t0 = performance.now()
  const from = t0 + warmMs
  const end = t0 + seconds * 1_000
  let seq = 0
  let startedInWindow = 0
  let completedInWindow = 0
  let completed = 0
  let failed = 0
  let badExits = 0
  let pruned = 0
  const starts: number[] = []
  const cycles: number[] = []
  const errors = new Set<string>()
  const cpu0 = ownCpuMs()
  const tasks0 = tasksCpuMs()
  const machine0 = machineTimes()
  const loop0 = performance.eventLoopUtilization()

  let pruning = false
  const pruner = setInterval(() => {
    if (pruning) return
    pruning = true
    void executor.prune(Date.now()).then((p) => { pruned += p.length }, (err: Error) => { errors.add(`prune: ${err.message}`) }).finally(() => { pruning = false })
  }, 1_000)
  const progress = setInterval(() => {
    const elapsed = (performance.now() - t0) / 1000
    log(`throughput ${inflight} in flight: ${elapsed.toFixed(0)} s, ${count(completed)} launches completed (${perSecond(completed / elapsed)} so far), ${executor.committed().tasks} running`)
  }, 2_000)

  const worker = async (): Promise<void> => {
    while (!interrupted && performance.now() < end) {
      const id = `tp${inflight}-${seq++}`
      const exited = exitOf(id)
      const a = performance.now()
      let info: AttemptInfo
      try {
        info = await start(spec(id, '/bin/true'))
      } catch (err) {
        waiters.delete(id)
        failed++
        errors.add((err as Error).message)
        if (failed > 100) return
        await sleep(10)
        continue
      }
      const b = performance.now()
      if (b >= from && b <= end) startedInWindow++
      starts.push(b - a)
      const exit = await exited
      const c = performance.now()
      if (info.phase === 'ended') { failed++; errors.add(exit.exit?.message ?? 'start failed'); continue }
      if (exit.exit?.reason !== 'exited' || exit.exit.code !== 0) { badExits++; errors.add(exit.exit?.message ?? 'no exit') }
      completed++
      if (c >= from && c <= end) completedInWindow++
      cycles.push(c - a)
    }
  }
  try {
    await Promise.all(Array.from({ length: inflight }, worker))
  } finally {
    clearInterval(pruner)
    clearInterval(progress)
  }
  const cpu = ownCpuMs() - cpu0
  const tasks = tasksCpuMs() - tasks0
  const machine1 = machineTimes()
  const loop = performance.eventLoopUtilization(loop0)
  while (pruning) await sleep(5)
  pruned += (await executor.prune(Date.now() + 1)).length
  const windowS = (end - from) / 1000
  return {
    inflight,
    seconds,
    launchesPerSecond: r2(completedInWindow / windowS),
    startsPerSecond: r2(startedInWindow / windowS),
    completed,
    failed,
    badExits,
    start: spread(starts),
    cycle: spread(cycles),
    nodeCpuMsPerLaunch: r2(cpu / Math.max(1, completed)),
    tasksCpuMsPerLaunch: r2(tasks / Math.max(1, completed)),
    machineBusyPct: r2(100 * (machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total)),
    loopBusyPct: r2(100 * loop.utilization),
    pruned,
    errors: [...errors].slice(0, 5),
  }
}

async function throughput (levels: number[], seconds: number): Promise<void> {
  const rows: Throughput[] = []
  for (const inflight of levels) {
    if (interrupted) break
    log(`throughput: ${inflight} starts of /bin/true in flight for ${seconds} s`)
    const r = await throughputAt(inflight, seconds)
    rows.push(r)
    log(`throughput ${inflight} in flight: ${perSecond(r.launchesPerSecond)} launches completed, ${perSecond(r.startsPerSecond)} starts; ${r.failed} failed, ${r.badExits} bad exits; machine ${pct(r.machineBusyPct)} busy, event loop ${pct(r.loopBusyPct)}`)
    for (const e of r.errors) log(`throughput ${inflight} in flight: error: ${e}`)
  }
  if (interrupted) return
  const leftover = run!.executor.list().length
  summary.results.throughput = { levels: rows, entriesAfterPrune: leftover }
  summary.print(`\nthroughput: /bin/true with N starts in flight for ${seconds} s (rates after a warm-up of ${ms(Math.min(1_000, seconds * 200))}); a launch = start → exit → cgroup removed → exit recorded\n`)
  summary.print(table(['IN FLIGHT', 'LAUNCHES/S', 'STARTS/S', 'LAUNCHES', 'FAILED', 'START P50', 'START P99', 'LAUNCH P50', 'LAUNCH P99', 'NODE CPU/LAUNCH', 'TASK CPU/LAUNCH', 'MACHINE BUSY', 'LOOP BUSY'],
    rows.map((r) => [String(r.inflight), perSecond(r.launchesPerSecond), perSecond(r.startsPerSecond), count(r.completed), String(r.failed + r.badExits),
      ms(r.start.p50), ms(r.start.p99), ms(r.cycle.p50), ms(r.cycle.p99), ms(r.nodeCpuMsPerLaunch), ms(r.tasksCpuMsPerLaunch), pct(r.machineBusyPct), pct(r.loopBusyPct)])) + '\n')
  summary.print(`node CPU = this process (user + system, spawn's fork included); task CPU = the root cgroup's accounting (the shim and /bin/true once moved into their group); machine busy = all ${cpus().length} cores; loop busy = this process's event loop utilization; entries left after the last prune: ${leftover}\n`)
  for (const r of rows) {
    summary.figure('throughput', `launches/s, ${r.inflight} in flight`, perSecond(r.launchesPerSecond), `≥ ${TARGETS.launchesPerSecondMin}/s`, r.launchesPerSecond >= TARGETS.launchesPerSecondMin)
    summary.figure('throughput', `starts/s, ${r.inflight} in flight`, perSecond(r.startsPerSecond))
    summary.figure('throughput', `event loop busy / machine busy, ${r.inflight} in flight`, `${pct(r.loopBusyPct)} / ${pct(r.machineBusyPct)}`)
    summary.figure('throughput', `start p50 / p99 under load, ${r.inflight} in flight`, `${ms(r.start.p50)} / ${ms(r.start.p99)}`)
    if (r.failed + r.badExits > 0) summary.figure('throughput', `failed starts or bad exits, ${r.inflight} in flight`, String(r.failed + r.badExits), '0', false)
  }
}

// ---- 3. stop latency -------------------------------------------------------------------

async function stopLatency (plain: number, stubborn: number): Promise<void> {
  const executor = run!.executor
  const measure = async (label: string, n: number, make: (id: string) => AttemptSpec, graceMs: number): Promise<{ times: number[], notExecd: number, bad: string[] }> => {
    log(`stop: ${n} × ${label}`)
    const times: number[] = []
    const bad: string[] = []
    let notExecd = 0
    for (let i = 0; i < n && !interrupted; i++) {
      const s = make(`stop-${graceMs}-${i}`)
      const info = await start(s)
      if (info.pid === null || info.phase === 'ended') { bad.push(`${s.id} did not start: ${info.exit?.message}`); continue }
      // Stop the command itself, not the shim before its exec.
      if (!await untilExecd(info.pid, 'sleep')) notExecd++
      const t0 = performance.now()
      const stopped = await executor.stop(s.id, { graceMs })
      times.push(performance.now() - t0)
      if (stopped.exit?.reason !== 'killed') bad.push(`${s.id}: ${stopped.exit?.reason}: ${stopped.exit?.message}`)
      else if (graceMs === IGNORE_TERM_GRACE_MS && !stopped.exit.message.includes('SIGKILL')) bad.push(`${s.id}: not killed by SIGKILL: ${stopped.exit.message}`)
      if ((i + 1) % 50 === 0) await executor.prune(Date.now() + 1)
    }
    await executor.prune(Date.now() + 1)
    return { times, notExecd, bad }
  }
  const term = await measure('sleep 60, ends on SIGTERM', plain, (id) => spec(id, '/bin/sleep', ['60']), 10_000)
  const kill = await measure(`sh -c 'trap "" TERM; exec sleep 60' (ignores SIGTERM), grace ${IGNORE_TERM_GRACE_MS} ms`, stubborn,
    (id) => spec(id, '/bin/sh', ['-c', 'trap "" TERM; exec /bin/sleep 60']), IGNORE_TERM_GRACE_MS)
  if (interrupted) return
  const beyond = kill.times.map((t) => t - IGNORE_TERM_GRACE_MS)
  const a = spread(term.times)
  const b = spread(kill.times)
  const c = spread(beyond)
  for (const x of [...term.bad, ...kill.bad].slice(0, 5)) log(`stop: unexpected: ${x}`)
  summary.results.stop = { sigterm: a, sigkill: b, sigkillBeyondGrace: c, graceMs: IGNORE_TERM_GRACE_MS, notExecd: term.notExecd + kill.notExecd, unexpected: [...term.bad, ...kill.bad].slice(0, 10) }
  summary.print('\nstop: stop() → resolved (the task ended, its cgroup removed, its exit recorded), one at a time, each task stopped once its command runs\n')
  summary.print(table(['TASK', 'STOPS', 'P50', 'P99', 'MAX', 'MEAN'], [
    ['sleep 60 (SIGTERM)', String(a.n), ms(a.p50), ms(a.p99), ms(a.max), ms(a.mean)],
    [`ignores SIGTERM, grace ${IGNORE_TERM_GRACE_MS} ms`, String(b.n), ms(b.p50), ms(b.p99), ms(b.max), ms(b.mean)],
    ['  beyond the grace (SIGKILL path)', String(c.n), ms(c.p50), ms(c.p99), ms(c.max), ms(c.mean)],
  ]) + '\n')
  if (term.bad.length + kill.bad.length + term.notExecd + kill.notExecd > 0) summary.print(`${term.bad.length + kill.bad.length} unexpected ends; ${term.notExecd + kill.notExecd} not exec'd within 2 s\n`)
  summary.figure('stop', 'stop, SIGTERM: p50 / p99', `${ms(a.p50)} / ${ms(a.p99)}`)
  summary.figure('stop', `stop, SIGKILL after ${IGNORE_TERM_GRACE_MS} ms: p50 / p99 beyond the grace`, `${ms(c.p50)} / ${ms(c.p99)}`)
  if (term.bad.length + kill.bad.length > 0) summary.figure('stop', 'ends not "killed" as asked', String(term.bad.length + kill.bad.length), '0', false)
}

// ---- 4. memory per task, and stopping them all -------------------------------------------

async function memory (n: number, idleS: number): Promise<void> {
  const executor = run!.executor
  const gc = gcFunction()
  const settle = (): NodeJS.MemoryUsage => {
    for (let i = 0; i < 3; i++) gc()
    return process.memoryUsage()
  }
  // Warm the code paths (and the runner's lazy parts) so that their one-time cost is not counted per task.
  log('memory: warming up with 20 starts and stops')
  for (let i = 0; i < 20 && !interrupted; i++) await start(spec(`mem-warm-${i}`, '/bin/sleep', ['600']))
  await executor.stopAll(10_000)
  await executor.prune(Date.now() + 1)
  await sleep(RUNNER_DEFAULTS.sampleMs * 1.5)

  const before = settle()
  const fds0 = openFds()
  log(`memory: starting ${n} × sleep 600`)
  const startedAt = performance.now()
  const startMs: number[] = []
  for (let i = 0; i < n && !interrupted; i++) {
    const t0 = performance.now()
    const info = await start(spec(`mem-${i}`, '/bin/sleep', ['600']))
    startMs.push(performance.now() - t0)
    if (info.phase === 'ended') log(`memory: mem-${i} failed to start: ${info.exit?.message}`)
    if ((i + 1) % 50 === 0) log(`memory: ${i + 1}/${n} running`)
  }
  const startAllMs = performance.now() - startedAt
  const running = executor.committed().tasks
  // One sample of usage for every task is part of what a task costs.
  await sleep(RUNNER_DEFAULTS.sampleMs * 1.5)
  const during = settle()
  const fds1 = openFds()
  log(`memory: ${running} running; ${idleS} s idle to see this process's CPU (the sampler every ${RUNNER_DEFAULTS.sampleMs} ms)`)
  const cpu0 = ownCpuMs()
  const idleStart = performance.now()
  await sleep(idleS * 1_000)
  const idleCpuPct = 100 * (ownCpuMs() - cpu0) / (performance.now() - idleStart)

  log(`memory: stopping all ${running} (stopAll)`)
  const stopping = performance.now()
  await executor.stopAll(10_000)
  const stopAllMs = performance.now() - stopping
  const notKilled = executor.list().filter((t) => t.id.startsWith('mem-') && !t.id.startsWith('mem-warm') && t.exit?.reason !== 'killed').length
  await executor.prune(Date.now() + 1)
  const after = settle()
  const fds2 = openFds()

  if (interrupted) return
  const per = (x: number): number => x / Math.max(1, running)
  const rss = per(during.rss - before.rss)
  const heap = per(during.heapUsed - before.heapUsed)
  const external = per(during.external + during.arrayBuffers - before.external - before.arrayBuffers)
  const fds = per(fds1 - fds0)
  const quarter = Math.max(1, Math.floor(startMs.length / 4))
  const firstStarts = spread(startMs.slice(0, quarter))
  const lastStarts = spread(startMs.slice(-quarter))
  summary.results.memory = {
    tasks: running, rssBytesPerTask: Math.round(rss), heapBytesPerTask: Math.round(heap), externalBytesPerTask: Math.round(external), fdsPerTask: r2(fds),
    rssBefore: before.rss, rssDuring: during.rss, rssAfter: after.rss, heapBefore: before.heapUsed, heapDuring: during.heapUsed, heapAfter: after.heapUsed,
    fdsBefore: fds0, fdsDuring: fds1, fdsAfter: fds2, startAllMs: r2(startAllMs), startsFirstQuarter: firstStarts, startsLastQuarter: lastStarts, stopAllMs: r2(stopAllMs), idleCpuPct: r2(idleCpuPct), notKilled,
  }
  summary.print(`\nmemory: this process with ${running} × sleep 600 running (after gc()), against before they started and after they were stopped and pruned\n`)
  summary.print(table(['', 'BEFORE', `${running} RUNNING`, 'AFTER STOP + PRUNE', 'PER TASK'], [
    ['RSS', mib(before.rss), mib(during.rss), mib(after.rss), kib(rss)],
    ['heap used', mib(before.heapUsed), mib(during.heapUsed), mib(after.heapUsed), kib(heap)],
    ['external + array buffers', mib(before.external + before.arrayBuffers), mib(during.external + during.arrayBuffers), mib(after.external + after.arrayBuffers), kib(external)],
    ['open fds', String(fds0), String(fds1), String(fds2), fds.toFixed(2)],
  ]) + '\n')
  summary.print(`starting ${running} one at a time: ${ms(startAllMs)}; start p50 / p99 with 0–${quarter} running ${ms(firstStarts.p50)} / ${ms(firstStarts.p99)}, with ${startMs.length - quarter}–${startMs.length} running ${ms(lastStarts.p50)} / ${ms(lastStarts.p99)}\n`)
  summary.print(`this process's CPU with them running: ${pct(idleCpuPct)} of a core; stopAll of ${running}: ${ms(stopAllMs)}${notKilled > 0 ? ` (${notKilled} did not end as "killed")` : ''}\n`)
  summary.figure('memory', `RSS per running task (${running})`, kib(rss))
  summary.figure('memory', `heap per running task (${running})`, kib(heap))
  summary.figure('memory', 'open fds per running task', fds.toFixed(2))
  summary.figure('memory', `start p50, 0–${quarter} running → ${startMs.length - quarter}–${startMs.length} running`, `${ms(firstStarts.p50)} → ${ms(lastStarts.p50)}`)
  summary.figure('memory', `this process's CPU with ${running} running`, `${pct(idleCpuPct)} of a core`)
  summary.figure('memory', `stopAll of ${running} sleep 600`, ms(stopAllMs))
}

// ---- main --------------------------------------------------------------------------

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...COMMON_OPTIONS,
      inflight: { type: 'string' },
      seconds: { type: 'string' },
      dir: { type: 'string' },
    },
  })
  const quick = values.quick
  summary.json = values.json
  const { selected: parts, unknown } = selectParts(values.only, PARTS)
  const levels = (values.inflight ?? (quick ? '16' : '16,64')).split(',').map(Number)
  const seconds = Number(values.seconds ?? (quick ? 2 : 10))
  if (unknown.length > 0 || levels.some((n) => !Number.isInteger(n) || n < 1 || n > 1_000) || !Number.isFinite(seconds) || seconds < 1) {
    process.stderr.write(`bench: --only takes parts from ${PARTS.join(',')}; --inflight counts from 1 to 1000 (e.g. 16,64); --seconds a number ≥ 1\n`)
    process.exit(2)
  }
  const started = performance.now()
  const machine = { node: process.version, cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release(), loadavg: loadavg().map(r2) }
  log(`Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}`)

  let interruptedBySignal = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interruptedBySignal) return
    interruptedBySignal = true
    log(`${signal === 'SIGINT' ? 'interrupted' : signal}; stopping the tasks and cleaning up`)
    void cleanup().then((c) => { log(cleanupLine(c)) }, (err: Error) => { log(`cleanup failed: ${err.message}`) }).finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  // An error nothing handles (in the runner, say) would end the process with tasks and cgroups left behind.
  process.on('uncaughtException', (err) => {
    log(`uncaught exception: ${err.stack ?? err.message}`)
    interruptedBySignal = true
    if (cleaning !== null) return
    log('stopping the tasks and cleaning up after it')
    void cleanup().then((c) => { log(cleanupLine(c)) }, (e: Error) => { log(`cleanup failed: ${e.message}`) }).finally(() => process.exit(1))
  })

  // The runner unref()s its children (they outlive a node) and its sampler: without this, the
  // process would exit while it awaits a task's exit.
  const keepAlive = setInterval(() => {}, 60_000)
  let report: Cleanup
  let isolation = { kind: 'none', detail: 'not opened' }
  let tasksFs = ''
  try {
    const r = await open(values.dir ?? tmpdir())
    isolation = { ...r.executor.isolation }
    const fs = fileSystemOf(r.tasksDir)
    tasksFs = `${r.tasksDir} on ${fs.type} (${fs.device} at ${fs.mountPoint})${fs.journal === false ? ', WITHOUT a journal: each create scans recently deleted inodes' : fs.journal === true ? ', journaled' : ''}`
    log(`isolation: ${isolation.kind}, ${isolation.detail}; tasks dir ${tasksFs}`)
    summary.print(`executor on Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}\n`)
    summary.print(`isolation: ${isolation.kind}: ${isolation.detail}\n`)
    summary.print(`tasks dir: ${tasksFs}\n`)
    if (isolation.kind === 'none') summary.print('WARNING: no cgroups: the figures are of unconfined processes, not of the runner as deployed\n')
    // Memory first: see its description above.
    if (parts.has('memory')) await memory(quick ? 50 : 200, quick ? 1 : 3)
    if (parts.has('start') && !interrupted) await startLatency(quick ? 50 : 300, quick ? 10 : 50)
    if (parts.has('throughput') && !interrupted) await throughput(levels, seconds)
    if (parts.has('stop') && !interrupted) await stopLatency(quick ? 20 : 100, quick ? 10 : 50)
  } catch (err) {
    // After Ctrl-C the parts fail on purpose (no more starts); the signal's handler ends the process.
    if (!interruptedBySignal) throw err
  } finally {
    report = await cleanup()
    clearInterval(keepAlive)
  }
  if (interruptedBySignal) return
  const elapsed = performance.now() - started
  log(cleanupLine(report))
  if (summary.json) {
    process.stdout.write(JSON.stringify({
      bench: 'executor', ...machine, quick, isolation, tasksDir: tasksFs, elapsedMs: Math.round(elapsed), targets: TARGETS, results: summary.results, summary: summary.figures, cleanup: report,
    }, null, 2) + '\n')
    return
  }
  summary.print(`\nsummary${quick ? ' (--quick: smaller runs, the targets are for the full run)' : ''}, Node ${machine.node}, ${machine.cores} cores, isolation ${isolation.kind}, ${ms(elapsed)} in all\n`)
  summary.print(table(['PART', 'FIGURE', 'MEASURED', 'TARGET', ''], summary.rows()) + '\n')
  summary.print(`${cleanupLine(report)}\n`)
}

await main()
