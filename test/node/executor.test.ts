// The task runner on the real machine: limits enforced by the kernel and read
// back from the cgroup's own accounting, stops that leave nothing behind
// (children, grandchildren, a new session, a process that ignores SIGTERM),
// exits with their reasons, logs complete and in order, admission, and a
// restart that adopts, stops, ends and sweeps what the previous life left.
//
// Every wait is a liveness bound far above the expected time, never a
// performance assertion; CPU is judged by the cgroup's CPU time over a window.
// Each test gets its own node id and temp dir, and ends by checking that no
// `murmur-<nodeId>` group of it is left in any hierarchy.
//
// Without usable cgroups (isolation 'auto' finds none) the tests of limits,
// accounting and cgroup clean-up are skipped: there is nothing to measure them
// by. The tests of isolation 'none' always run.

import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { InputError, MurmurError } from '../../node/errors.ts'
import { Executor, type IsolationWanted } from '../../node/executor/executor.ts'
import type { AttemptInfo, AttemptSpec } from '../../node/executor/types.ts'
import { firstLine } from '../helpers/child.ts'
import { waitUntil } from '../helpers/wait.ts'

const MiB = 1024 ** 2
const GiB = 1024 ** 3
const CHILD_PATH = fileURLToPath(new URL('../helpers/executor-child.ts', import.meta.url))
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const log = pino({ level: 'silent' })
/** Plenty, for tests that are not about admission. */
const CAPACITY = { cpuMillis: 64_000, memoryBytes: 64 * GiB }

// ---------------------------------------------------------------------------
// The machine's hierarchies, read independently of the executor's own code

interface Hierarchy { mountPoint: string, controllers: string[], selfPath: string }

function hierarchies (): Hierarchy[] {
  const self = new Map<string, string>()
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line)
    if (match === null) continue
    if (match[2] === '') self.set('', match[3]!)
    for (const c of match[2]!.split(',')) if (c !== '') self.set(c, match[3]!)
  }
  const found: Hierarchy[] = []
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountPoint, fsType, options] = line.split(' ')
    if (mountPoint === undefined || options === undefined) continue
    if (fsType === 'cgroup2' && self.has('')) found.push({ mountPoint, controllers: [], selfPath: self.get('')! })
    if (fsType !== 'cgroup') continue
    const controllers = options.split(',').filter((o) => self.has(o))
    if (controllers.length > 0) found.push({ mountPoint, controllers, selfPath: self.get(controllers[0]!)! })
  }
  return found
}

/** The node's root group in every hierarchy this process belongs to. */
function rootDirs (nodeId: string): string[] {
  return hierarchies().map((h) => join(h.mountPoint, h.selfPath, `murmur-${nodeId}`))
}

/** A task's group in one controller's hierarchy (v1). */
function taskDir (nodeId: string, controller: string, name: string): string {
  const all = hierarchies()
  const h = all.find((x) => x.controllers.includes(controller)) ?? all.find((x) => x.controllers.length === 0)
  if (h === undefined) throw new Error(`no ${controller} hierarchy`)
  return join(h.mountPoint, h.selfPath, `murmur-${nodeId}`, name)
}

function taskDirs (nodeId: string, name: string): string[] {
  return rootDirs(nodeId).map((root) => join(root, name))
}

/** Every pid in a group, in any hierarchy. */
function groupPids (dirs: string[]): number[] {
  const pids = new Set<number>()
  for (const dir of dirs) {
    try {
      for (const line of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (line !== '') pids.add(Number(line))
    } catch {}
  }
  return [...pids]
}

/** The group of `name` is gone from every hierarchy. */
function expectNoGroup (nodeId: string, name: string): void {
  expect(taskDirs(nodeId, name).filter((dir) => existsSync(dir))).toEqual([])
}

/**
 * Removes whatever is left of a node's groups, killing their processes first,
 * and returns the dirs it found: a passing test leaves none, a failing one
 * leaves no processes behind for the next.
 */
async function sweep (nodeId: string): Promise<string[]> {
  const left: string[] = []
  for (const root of rootDirs(nodeId)) {
    if (!existsSync(root)) continue
    left.push(root)
    for (const entry of readdirSync(root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue
      const dir = join(root, entry.name)
      left.push(dir)
      for (let round = 0; round < 50 && groupPids([dir]).length > 0; round++) {
        for (const pid of groupPids([dir])) try { process.kill(pid, 'SIGKILL') } catch {}
        await sleep(20)
      }
      try { rmdirSync(dir) } catch {}
    }
    try { rmdirSync(root) } catch {}
  }
  return left
}

// ---------------------------------------------------------------------------
// Processes

/** /proc/<pid>/stat: state, pgrp, session (the command name may hold spaces and parentheses). */
function procStat (pid: number): { state: string, pgrp: number, session: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: fields[0]!, pgrp: Number(fields[2]), session: Number(fields[3]) }
  } catch {
    return null
  }
}

/** Dead: no /proc entry, or a zombie (this machine's init does not reap orphans). */
function gone (pid: number): boolean {
  const stat = procStat(pid)
  return stat === null || stat.state === 'Z' || stat.state === 'X'
}

function running (pid: number): boolean {
  return !gone(pid)
}

/**
 * Waits until none of the pids runs. A process leaves its cgroup a moment
 * before it becomes a zombie, so even after its group is removed this may
 * take a few scheduler ticks; the bound is liveness only.
 */
async function allGone (pids: number[]): Promise<void> {
  await waitUntil(`pids ${pids.join(', ')} to end`, async () => pids.filter(running), (left) => left.length === 0, 10_000, 10)
}

/** CPU time the whole machine spent on anything but idling, from /proc/stat (in USER_HZ, 100 a second). */
function machineBusySeconds (): number {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / 100
}

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** A pid a task wrote to a file in its alloc dir, once the whole line is there. */
async function pidFile (path: string): Promise<number> {
  const text = await waitUntil(`a pid in ${path}`, async () => readFileSync(path, 'utf8'), (t) => /^\d+\n$/.test(t), 20_000, 20)
  return Number(text.trim())
}

// ---------------------------------------------------------------------------
// Executors, cleaned up after every test

interface Node { dir: string, tasksDir: string, nodeId: string, executor: Executor }

const cleanups: Array<() => Promise<void>> = []

afterEach(async () => {
  const errors: unknown[] = []
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup()
    } catch (err) {
      errors.push(err)
    }
  }
  if (errors.length > 0) throw errors[0]
})

function newNode (): { dir: string, tasksDir: string, nodeId: string } {
  const dir = mkdtempSync(join(tmpdir(), 'murmur-executor-'))
  const nodeId = `test-${randomBytes(4).toString('hex')}`
  cleanups.push(async () => {
    rmSync(dir, { recursive: true, force: true })
    const left = await sweep(nodeId)
    expect(left, `cgroups of node ${nodeId} left behind`).toEqual([])
  })
  return { dir, tasksDir: join(dir, 'tasks'), nodeId }
}

/**
 * Tasks here run as the node's own user, root where the tests run as root (allowed explicitly): these tests
 * are about groups, limits, stops and logs, and their scripts use absolute paths into the tasks dir, which
 * the default task user cannot reach (test/node/sandbox.test.ts tests that user). `user: true` keeps the default.
 */
function openExecutor (node: { tasksDir: string, nodeId: string }, opts: { isolation?: IsolationWanted, capacity?: { cpuMillis: number, memoryBytes: number }, sampleMs?: number, user?: boolean } = {}): Executor {
  const self = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
  const executor = Executor.open({
    nodeId: node.nodeId,
    dir: node.tasksDir,
    capacity: opts.capacity ?? CAPACITY,
    isolation: opts.isolation ?? 'auto',
    log,
    sampleMs: opts.sampleMs ?? 100,
    graceMs: 2_000,
    ...(opts.user === true ? {} : { runAs: self, allowPrivilegedTasks: true }),
  })
  cleanups.push(async () => {
    await executor.stopAll(500)
    await executor.close()
  })
  return executor
}

function open (opts: Parameters<typeof openExecutor>[1] = {}): Node {
  const node = newNode()
  return { ...node, executor: openExecutor(node, opts) }
}

function spec (id: string, command: string, args: string[], more: Partial<AttemptSpec> = {}): AttemptSpec {
  return { id, job: 'test-job', command, args, env: {}, cpuMillis: 500, memoryBytes: 128 * MiB, ...more }
}

function sh (id: string, script: string, more: Partial<AttemptSpec> = {}): AttemptSpec {
  return spec(id, '/bin/sh', ['-c', script], more)
}

async function ended (executor: Executor, id: string, timeoutMs = 20_000): Promise<AttemptInfo> {
  return (await waitUntil(`task ${id} to end`, async () => executor.inspect(id), (info) => info?.phase === 'ended', timeoutMs, 20))!
}

async function started (executor: Executor, s: AttemptSpec): Promise<AttemptInfo> {
  const info = await executor.start(s)
  expect(info.exit, `task ${s.id} did not start`).toBeNull()
  expect(info.phase).toBe('running')
  return info
}

function alloc (info: AttemptInfo): string {
  return info.alloc!
}

/** Touches a file once the command itself runs (a signal before that meets the launch shim, not the command). */
const SLEEPER = ': > "$MURMUR_ALLOC_DIR/ready"; exec sleep 1000'

async function ready (info: AttemptInfo): Promise<void> {
  await waitUntil(`task ${info.id} to be ready`, async () => existsSync(join(alloc(info), 'ready')), (x) => x, 20_000, 20)
}

/** A stream's whole log, in steps of what one read returns. */
async function readAll (executor: Executor, id: string, stream: 'stdout' | 'stderr'): Promise<string> {
  const parts: Buffer[] = []
  let offset = 0
  for (;;) {
    const chunk = await executor.readLogs(id, stream, { offset })
    expect(chunk.start).toBe(offset)
    if (chunk.data.length === 0) break
    parts.push(chunk.data)
    offset = chunk.end
  }
  return Buffer.concat(parts).toString('utf8')
}

async function expectError (promise: Promise<unknown>, type: typeof MurmurError, code: string): Promise<MurmurError> {
  const err = await promise.then(() => null, (e: unknown) => e)
  expect(err, `expected ${code}`).toBeInstanceOf(type)
  expect((err as MurmurError).code).toBe(code)
  return err as MurmurError
}

// ---------------------------------------------------------------------------
// What this machine offers

const probeNode = { tasksDir: mkdtempSync(join(tmpdir(), 'murmur-executor-probe-')), nodeId: `test-probe-${randomBytes(4).toString('hex')}` }
const probe = Executor.open({ nodeId: probeNode.nodeId, dir: probeNode.tasksDir, capacity: CAPACITY, isolation: 'auto', log })
const ISOLATION = probe.isolation
await probe.close()
rmSync(probeNode.tasksDir, { recursive: true, force: true })
const CGROUPS = ISOLATION.kind !== 'none'
const V1 = ISOLATION.kind === 'cgroup-v1'

// Limits, accounting and group clean-up can only be checked where there are groups.
describe(CGROUPS ? `on ${ISOLATION.kind}` : `on cgroups (skipped: ${ISOLATION.detail})`, () => {
  it.skipIf(!CGROUPS)('kills a task over its memory limit and reports it as an OOM kill, by the group\'s counter', async () => {
    const { executor, nodeId } = open()
    await started(executor, spec('hog', PYTHON, ['-c', 'x = b"\\x01" * (200 << 20)\nprint(len(x))'], { memoryBytes: 64 * MiB }))
    const info = await ended(executor, 'hog')
    expect(info.exit).toMatchObject({ reason: 'oom', signal: 'SIGKILL' })
    expect(info.exit!.oomKills).toBeGreaterThanOrEqual(1)
    expect(info.exit!.message).toContain('64 MiB')
    // The kernel never let it hold more than the limit.
    expect(info.usage!.memoryPeakBytes).toBeLessThanOrEqual(64 * MiB)
    expect(info.usage!.memoryPeakBytes).toBeGreaterThan(32 * MiB)
    expectNoGroup(nodeId, 'hog')

    // A process of the task killed while the main one goes on: an exit, with the kill said.
    await started(executor, sh('parent', `${PYTHON} -c 'x = b"\\x01" * (200 << 20)'; exit 7`, { memoryBytes: 64 * MiB }))
    const parent = await ended(executor, 'parent')
    expect(parent.exit).toMatchObject({ reason: 'exited', code: 7 })
    expect(parent.exit!.oomKills).toBeGreaterThanOrEqual(1)
    expect(parent.exit!.message).toMatch(/OOM/)
  })

  it.skipIf(!CGROUPS)('holds a fork bomb at its pid limit, and stop() ends it with nothing left', async () => {
    const { executor, nodeId } = open()
    // Every process forks for ever and shrugs off EAGAIN, so the main one never dies of the limit.
    const bomb = 'import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n'
    await started(executor, spec('bomb', PYTHON, ['-c', bomb], { pidsMax: 50, memoryBytes: GiB, cpuMillis: 1000 }))
    const dirs = taskDirs(nodeId, 'bomb')
    const pids = new Set<number>()
    let peak = 0
    // Sample for 2 s once the bomb has filled its group.
    await waitUntil('the bomb to reach its limit', async () => executor.inspect('bomb')!.usage?.pids ?? 0, (n) => n >= 45, 20_000, 20)
    const until = Date.now() + 2_000
    while (Date.now() < until) {
      const usage = executor.inspect('bomb')!.usage!
      peak = Math.max(peak, usage.pids)
      expect(usage.pids).toBeLessThanOrEqual(50)
      for (const pid of groupPids(dirs)) pids.add(pid)
      await sleep(50)
    }
    expect(peak).toBeGreaterThanOrEqual(45)
    expect(pids.size).toBeLessThanOrEqual(50)
    // The kernel refused forks at the limit (pids.events, in v1 and v2 alike).
    const events = readFileSync(join(taskDir(nodeId, 'pids', 'bomb'), 'pids.events'), 'utf8')
    expect(Number(/max (\d+)/.exec(events)?.[1])).toBeGreaterThan(0)
    // The node itself can still start processes.
    expect(spawnSync('/bin/true').status).toBe(0)

    const info = await executor.stop('bomb', { graceMs: 3_000 })
    expect(info.exit!.reason).toBe('killed')
    await allGone([...pids])
    expectNoGroup(nodeId, 'bomb')
  })

  it.skipIf(!CGROUPS)('holds a busy task to its CPU quota, by the group\'s CPU time', async () => {
    const { executor, nodeId } = open({ sampleMs: 100 })
    /**
     * The task's CPU seconds per second over at least 2 s of its life, from two
     * samples of its accounting; and what the rest of the machine used meanwhile.
     */
    const rate = async (id: string): Promise<{ task: number, others: number }> => {
      const first = await waitUntil(`a sample of ${id}`, async () => executor.inspect(id)!.usage, (u) => u !== null && u.cpuSeconds > 0, 20_000, 20)
      const busyBefore = machineBusySeconds()
      const second = await waitUntil(`a sample of ${id} 2 s later`, async () => executor.inspect(id)!.usage, (u) => u!.sampledAt >= first!.sampledAt + 2_000, 20_000, 50)
      const busy = machineBusySeconds() - busyBefore
      const seconds = (second!.sampledAt - first!.sampledAt) / 1000
      const task = second!.cpuSeconds - first!.cpuSeconds
      return { task: task / seconds, others: Math.max(0, busy - task) / seconds }
    }

    await started(executor, sh('half', 'while :; do :; done', { cpuMillis: 500 }))
    const half = await rate('half')
    // The quota, not the machine, is what held it back (cpu.stat, in v1 and v2 alike).
    const stat = readFileSync(join(taskDir(nodeId, 'cpu', 'half'), 'cpu.stat'), 'utf8')
    expect(Number(/nr_throttled (\d+)/.exec(stat)?.[1])).toBeGreaterThan(0)
    await executor.stop('half', { graceMs: 2_000 })
    expect(half.task, `500m used ${half.task.toFixed(2)} of a core`).toBeGreaterThanOrEqual(0.3)
    expect(half.task, `500m used ${half.task.toFixed(2)} of a core`).toBeLessThanOrEqual(0.6)

    // Two busy loops under 1500m: never more than the quota, and on two idle cores more than one.
    await started(executor, sh('more', 'while :; do :; done & while :; do :; done', { cpuMillis: 1500 }))
    const more = await rate('more')
    await executor.stop('more', { graceMs: 2_000 })
    expect(more.task, `1500m used ${more.task.toFixed(2)} cores`).toBeLessThanOrEqual(1.65)
    if (cpus().length >= 2 && more.others < 0.3) {
      expect(more.task, `1500m used ${more.task.toFixed(2)} cores while the rest of the machine used ${more.others.toFixed(2)}`).toBeGreaterThan(0.9)
    } else {
      // Another process's busy core takes the task's share, not its quota: nothing to judge the quota by.
      console.warn(`not judging the 1500m task's use of more than one core: the rest of the machine used ${more.others.toFixed(2)} cores meanwhile (${cpus().length} cores)`)
    }
  })

  /**
   * A tree: a child, a grandchild, a grandchild in a session of its own (out of
   * the process group, so SIGTERM to the group misses it), and a child that
   * ignores SIGTERM. Writes each pid to a file in the alloc dir.
   */
  function tree (scripts: string): void {
    writeFileSync(join(scripts, 'grand.sh'), 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/grandchild"\nwait\n')
    writeFileSync(join(scripts, 'session.sh'), 'setsid sh -c \'echo $$ > "$MURMUR_ALLOC_DIR/setsid"; exec sleep 1000\' &\nwait\n')
    writeFileSync(join(scripts, 'stubborn.sh'), 'trap "" TERM\necho $$ > "$MURMUR_ALLOC_DIR/stubborn"\nwhile :; do sleep 1; done\n')
  }
  const TREE = 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/child"\nsh "$SCRIPTS/grand.sh" &\nsh "$SCRIPTS/session.sh" &\nsh "$SCRIPTS/stubborn.sh" &\n'
  const TREE_FILES = ['child', 'grandchild', 'setsid', 'stubborn']

  async function treePids (info: AttemptInfo): Promise<number[]> {
    const pids: number[] = []
    for (const file of TREE_FILES) pids.push(await pidFile(join(alloc(info), file)))
    // The setsid one really left the task's process group.
    const setsid = procStat(pids[2]!)!
    expect(setsid.session).toBe(pids[2])
    expect(setsid.pgrp).not.toBe(info.pid)
    return pids
  }

  it.skipIf(!CGROUPS)('stop(): SIGTERM ends the main process within the grace, and the whole group goes, a new session included', async () => {
    const { executor, nodeId, dir } = open()
    tree(dir)
    const info = await started(executor, sh('tree', TREE + 'wait\n', { env: { SCRIPTS: dir } }))
    const pids = [info.pid!, ...await treePids(info)]
    expect(pids.every(running)).toBe(true)

    const stopped = await executor.stop('tree', { graceMs: 10_000 })
    expect(stopped.exit).toMatchObject({ reason: 'killed', signal: 'SIGTERM' })
    expect(stopped.exit!.message).toMatch(/SIGTERM/)
    expect(stopped.exit!.message).not.toMatch(/SIGKILL/)
    await allGone(pids)
    expectNoGroup(nodeId, 'tree')
  })

  it.skipIf(!CGROUPS)('stop(): a task that ignores SIGTERM is SIGKILLed after the grace, with everything it started', async () => {
    const { executor, nodeId, dir } = open()
    tree(dir)
    const info = await started(executor, sh('deaf', 'trap "" TERM\n' + TREE + 'wait\n', { env: { SCRIPTS: dir } }))
    const pids = [info.pid!, ...await treePids(info)]

    const stopped = await executor.stop('deaf', { graceMs: 500 })
    expect(stopped.exit).toMatchObject({ reason: 'killed', signal: 'SIGKILL' })
    expect(stopped.exit!.message).toMatch(/SIGKILL after its grace period/)
    await allGone(pids)
    expectNoGroup(nodeId, 'deaf')
  })

  it.skipIf(!CGROUPS)('when the main process exits, what it left in its group is killed and the exit is its code', async () => {
    const { executor, nodeId, dir } = open()
    tree(dir)
    // Exits once everything it started has written its pid.
    const wait = TREE_FILES.map((f) => `while [ ! -s "$MURMUR_ALLOC_DIR/${f}" ]; do sleep 0.02; done\n`).join('')
    const info = await started(executor, sh('leaver', TREE + wait + 'exit 3\n', { env: { SCRIPTS: dir } }))
    const exit = await ended(executor, 'leaver')
    const pids = TREE_FILES.map((f) => Number(readFileSync(join(alloc(info), f), 'utf8')))
    expect(exit.exit).toMatchObject({ reason: 'exited', code: 3, signal: null, message: 'exited with code 3' })
    await allGone(pids)
    expectNoGroup(nodeId, 'leaver')
  })

  it.skipIf(!CGROUPS)('runs the task in its own process group, in its groups, with its env, in its alloc dir', async () => {
    const { executor, nodeId } = open()
    const script = [
      'd="$MURMUR_ALLOC_DIR"',
      'printf "%s\\n" "task=$MURMUR_TASK_ID" "job=$MURMUR_JOB_ID" "node=$MURMUR_NODE_ID" "alloc=$MURMUR_ALLOC_DIR" "greeting=$GREETING" "pwd=$(pwd)" > "$d/env.tmp"',
      'mv "$d/env.tmp" "$d/env"',
      'cat /proc/$$/cgroup > "$d/cgroup.tmp"; mv "$d/cgroup.tmp" "$d/cgroup"',
      'exec sleep 1000',
    ].join('\n')
    const info = await started(executor, sh('envy', script, { job: 'the-job', env: { GREETING: 'hello, world', MURMUR_TASK_ID: 'spoofed' } }))
    await waitUntil('the task\'s report', async () => existsSync(join(alloc(info), 'cgroup')), (x) => x, 20_000, 20)
    const env = Object.fromEntries(readFileSync(join(alloc(info), 'env'), 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    expect(env).toEqual({ task: 'envy', job: 'the-job', node: nodeId, alloc: alloc(info), greeting: 'hello, world', pwd: alloc(info) })

    const stat = procStat(info.pid!)!
    expect(stat.pgrp).toBe(info.pid)
    expect(stat.session).toBe(info.pid)

    const groups = new Map(readFileSync(join(alloc(info), 'cgroup'), 'utf8').trim().split('\n').map((l) => {
      const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(l)!
      return [controllers!, path!] as const
    }))
    const self = new Map(readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((l) => {
      const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(l)!
      return [controllers!, path!] as const
    }))
    for (const [controllers, path] of groups) {
      const wanted = controllers.split(',').some((c) => ['cpu', 'memory', 'pids'].includes(c)) || (controllers === '' && !V1)
      if (wanted) expect(path, controllers).toBe(join(self.get(controllers)!, `murmur-${nodeId}`, 'envy'))
    }
    expect(info.cgroup).toMatch(new RegExp(`/murmur-${nodeId}/envy$`))

    await executor.stop('envy', { graceMs: 2_000 })
    expectNoGroup(nodeId, 'envy')
  })

  it.skipIf(!CGROUPS)('restart: adopts, stops, ends and sweeps what the previous life left', async () => {
    const node = newNode()
    const waitFor = (file: string): string => `while [ ! -e "$MURMUR_ALLOC_DIR/${file}" ]; do sleep 0.05; done`
    const specs = [
      sh('A', 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/child"; wait', { cpuMillis: 100, memoryBytes: 64 * MiB }),
      sh('B', 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/child"; wait', { cpuMillis: 100, memoryBytes: 64 * MiB }),
      sh('C', 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/child"; wait', { cpuMillis: 100, memoryBytes: 64 * MiB }),
      // D ends once the previous life is dead, E once the next one has adopted it.
      sh('D', waitFor('go'), { cpuMillis: 100, memoryBytes: 64 * MiB }),
      sh('E', waitFor('go'), { cpuMillis: 100, memoryBytes: 64 * MiB }),
    ]
    const child = spawn(process.execPath, [CHILD_PATH, node.tasksDir, node.nodeId, JSON.stringify(specs), 'self'], { stdio: ['ignore', 'pipe', 'inherit'] })
    cleanups.push(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    const line = await firstLine(child)
    expect(line).toMatch(/^running /)
    const report = JSON.parse(line.slice('running '.length)) as { isolation: string, tasks: Array<{ id: string, pid: number, phase: string }> }
    expect(report.isolation).toBe(ISOLATION.kind)
    expect(report.tasks.map((t) => t.phase)).toEqual(['running', 'running', 'running', 'running', 'running'])
    const pid = Object.fromEntries(report.tasks.map((t) => [t.id, t.pid]))
    const dirOf = (id: string): string => join(node.tasksDir, '_alloc', id)
    const childOf = Object.fromEntries(await Promise.all(['A', 'B', 'C'].map(async (id) => [id, await pidFile(join(dirOf(id), 'child'))])))

    // The node dies; its tasks do not.
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))
    expect(Object.values(pid).every(running)).toBe(true)
    // C's record is lost (its group is not); D ends while no node watches it.
    rmSync(join(node.tasksDir, 'C'), { recursive: true, force: true })
    writeFileSync(join(dirOf('D'), 'go'), '')
    await waitUntil('D to end', async () => gone(pid.D!) && groupPids(taskDirs(node.nodeId, 'D')).length === 0, (x) => x, 20_000, 20)

    const executor = openExecutor(node)
    const asked: string[] = []
    const recovered = await executor.recover((task) => {
      asked.push(task.id)
      expect(task.alive).toBe(true)
      expect(task.spec).toEqual(specs.find((s) => s.id === task.id))
      return task.id === 'B' ? 'stop' : 'adopt'
    }, { graceMs: 5_000 })
    expect(asked.sort()).toEqual(['A', 'B', 'E'])
    expect({ ...recovered, adopted: recovered.adopted.sort() }).toEqual({ adopted: ['A', 'E'], stopped: ['B'], ended: ['D'], strays: ['C'] })

    // B was stopped, C swept, each with its children and its group.
    expect(executor.inspect('B')).toMatchObject({ phase: 'ended', exit: { reason: 'killed' } })
    expect(executor.inspect('C')).toBeUndefined()
    await allGone([pid.B!, childOf.B!, pid.C!, childOf.C!])
    expectNoGroup(node.nodeId, 'B')
    expectNoGroup(node.nodeId, 'C')
    // D ended while the node was down: its code is unknown.
    expect(executor.inspect('D')).toMatchObject({ phase: 'ended', exit: { reason: 'lost' } })
    expectNoGroup(node.nodeId, 'D')

    // A runs on, adopted, its usage sampled from its group.
    expect(executor.inspect('A')).toMatchObject({ phase: 'running', adopted: true, pid: pid.A })
    expect(running(pid.A!) && running(childOf.A!)).toBe(true)
    await waitUntil('a sample of A', async () => executor.inspect('A')!.usage, (u) => u !== null && u.pids === 2, 20_000, 20)

    // E exits on its own while adopted: the sampler notices.
    writeFileSync(join(dirOf('E'), 'go'), '')
    const e = await ended(executor, 'E')
    expect(e.exit).toMatchObject({ reason: 'lost', code: null })
    expectNoGroup(node.nodeId, 'E')

    const a = await executor.stop('A', { graceMs: 5_000 })
    expect(a.exit!.reason).toBe('killed')
    await allGone([pid.A!, childOf.A!])
    expectNoGroup(node.nodeId, 'A')
  })
})

describe('with or without cgroups', () => {
  it('reads back everything a task wrote, complete and in order, on both streams', async () => {
    const { executor } = open()
    await started(executor, sh('chatty', 'i=1; while [ $i -le 10000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done'))
    const info = await ended(executor, 'chatty')
    expect(info.exit).toMatchObject({ reason: 'exited', code: 0 })
    const numbered = (prefix: string): string => Array.from({ length: 10_000 }, (_, i) => `${prefix} ${i + 1}\n`).join('')
    expect(await readAll(executor, 'chatty', 'stdout')).toBe(numbered('out'))
    expect(await readAll(executor, 'chatty', 'stderr')).toBe(numbered('err'))
  })

  it('follows a task\'s output from offset 0 to its end', async () => {
    const { executor } = open()
    // About a second of output, in 50 writes.
    await started(executor, sh('ticker', 'i=1; while [ $i -le 50 ]; do echo "tick $i"; sleep 0.02; i=$((i+1)); done'))
    const parts: Buffer[] = []
    const following = (async () => { for await (const data of executor.followLogs('ticker', 'stdout', { offset: 0 })) parts.push(data) })()
    const timeout = sleep(30_000).then(() => 'timeout')
    expect(await Promise.race([following.then(() => 'ended'), timeout])).toBe('ended')
    expect(executor.inspect('ticker')!.phase).toBe('ended')
    expect(Buffer.concat(parts).toString('utf8')).toBe(Array.from({ length: 50 }, (_, i) => `tick ${i + 1}\n`).join(''))
  })

  it('reports what never ran as start-failed, and leaves no group for it', async () => {
    const { executor, nodeId, dir } = open()
    const notFound = await executor.start(spec('ghost', 'no-such-command-murmur', []))
    expect(notFound).toMatchObject({ phase: 'ended', pid: null, cgroup: null, exit: { reason: 'start-failed' } })
    expect(notFound.exit!.message).toMatch(/not found/)

    const plain = join(dir, 'plain.sh')
    writeFileSync(plain, '#!/bin/sh\necho hi\n', { mode: 0o644 })
    const denied = await executor.start(spec('denied', plain, []))
    expect(denied.exit).toMatchObject({ reason: 'start-failed' })
    expect(denied.exit!.message).toMatch(/permission denied/)

    const nowhere = await executor.start(spec('nowhere', '/bin/true', [], { workdir: join(dir, 'no', 'such', 'dir') }))
    expect(nowhere.exit).toMatchObject({ reason: 'start-failed' })
    expect(nowhere.exit!.message).toMatch(/working dir/)

    // Executable, but its interpreter is missing: only exec itself can tell.
    const orphan = join(dir, 'orphan.sh')
    writeFileSync(orphan, '#!/no/such/interpreter\n', { mode: 0o755 })
    await executor.start(spec('orphan', orphan, []))
    const late = await ended(executor, 'orphan')
    expect(late.exit).toMatchObject({ reason: 'start-failed' })
    expect(late.exit!.message).toMatch(/not found|No such file/)

    expect(executor.committed().tasks).toBe(0)
    if (CGROUPS) for (const id of ['ghost', 'denied', 'nowhere', 'orphan']) expectNoGroup(nodeId, id)
  })

  it.skipIf(process.getuid?.() !== 0)('runs a task as a uid of its own, who can write in its alloc dir by its absolute path', async () => {
    const { executor, dir } = open({ user: true })
    // mkdtemp's 0700 would stop the task's uid above the data dir.
    chmodSync(dir, 0o755)
    const info = await started(executor, sh('nobody', 'cd /; id -u > "$HOME/uid"; id -G > "$MURMUR_ALLOC_DIR/groups"; echo written > "$HOME/file"'))
    const done = await ended(executor, 'nobody')
    expect(done.exit).toMatchObject({ reason: 'exited', code: 0 })
    const uid = info.user!.uid
    expect(uid).toBeGreaterThanOrEqual(70_000)
    expect(info.user).toEqual({ uid, gid: uid })
    expect(readFileSync(join(alloc(info), 'uid'), 'utf8').trim()).toBe(String(uid))
    // None of the node's groups either.
    expect(readFileSync(join(alloc(info), 'groups'), 'utf8').trim().split(' ')).toEqual([String(uid)])
    expect(readFileSync(join(alloc(info), 'file'), 'utf8')).toBe('written\n')
    expect(statSync(join(alloc(info), 'file')).uid).toBe(uid)
    // Ended: its alloc dir is root's again, for whoever holds the uid next.
    expect(statSync(alloc(info)).uid).toBe(0)
  })

  it('admits only what fits the node\'s capacity, refuses bad specs and a second start of a running id', async () => {
    const { executor } = open({ capacity: { cpuMillis: 1000, memoryBytes: GiB } })
    await ready(await started(executor, sh('first', SLEEPER, { cpuMillis: 600, memoryBytes: 512 * MiB })))
    expect(executor.committed()).toEqual({ cpuMillis: 600, memoryBytes: 512 * MiB, tasks: 1 })

    const cpu = await expectError(executor.start(sh('second', 'exec sleep 1000', { cpuMillis: 600, memoryBytes: 256 * MiB })), MurmurError, 'ADMISSION_REFUSED')
    expect(cpu.message).toMatch(/CPU/)
    expect(cpu.message).not.toMatch(/memory/)
    const memory = await expectError(executor.start(sh('third', 'exec sleep 1000', { cpuMillis: 100, memoryBytes: 768 * MiB })), MurmurError, 'ADMISSION_REFUSED')
    expect(memory.message).toMatch(/memory/)
    expect(memory.message).not.toMatch(/CPU/)
    expect(executor.inspect('second')).toBeUndefined()

    await expectError(executor.start(sh('first', 'exec sleep 1000', { cpuMillis: 100, memoryBytes: 64 * MiB })), MurmurError, 'TASK_EXISTS')

    await expectError(executor.start(sh('bad', 'true', { memoryBytes: 0 })), InputError, 'BAD_TASK_SPEC')
    await expectError(executor.start(spec('bad', '', [])), InputError, 'BAD_TASK_SPEC')
    await expectError(executor.start({ ...sh('bad', 'true'), colour: 'red' } as AttemptSpec), InputError, 'BAD_TASK_SPEC')
    expect(executor.inspect('bad')).toBeUndefined()

    await executor.stop('first', { graceMs: 2_000 })
    expect(executor.committed()).toEqual({ cpuMillis: 0, memoryBytes: 0, tasks: 0 })
    await ready(await started(executor, sh('second', SLEEPER, { cpuMillis: 600, memoryBytes: 256 * MiB })))
  })

  it('start() with an aborted signal rejects and leaves nothing; stop() with one returns early and the task still stops', async () => {
    const { executor, nodeId, tasksDir } = open()
    const aborted = AbortSignal.abort()
    await expect(executor.start(sh('never', SLEEPER), { signal: aborted })).rejects.toThrow(/abort/i)
    expect(executor.inspect('never')).toBeUndefined()
    expect(existsSync(join(tasksDir, 'never'))).toBe(false)
    if (CGROUPS) expectNoGroup(nodeId, 'never')

    const info = await started(executor, sh('deaf', 'trap "" TERM; ' + SLEEPER))
    await ready(info)
    const controller = new AbortController()
    const stopping = executor.stop('deaf', { graceMs: 1_000, signal: controller.signal })
    controller.abort(new Error('caller went away'))
    await expect(stopping).rejects.toThrow('caller went away')
    // The stop goes on without the caller.
    expect(executor.inspect('deaf')!.phase).toBe('stopping')
    const done = await ended(executor, 'deaf')
    expect(done.exit).toMatchObject({ reason: 'killed', signal: 'SIGKILL' })
    await allGone([info.pid!])
  })
})

describe('starts and stops that overlap', () => {
  it('stop() right after start(), before the command runs, stops the task without an error escaping', async () => {
    const { executor } = open()
    // The launch gate's socket errors (ECONNRESET) when the shim dies before reading its byte.
    const escaped: unknown[] = []
    const onError = (err: unknown): void => { escaped.push(err) }
    process.on('uncaughtException', onError)
    try {
      for (let i = 0; i < 3; i++) {
        const info = await started(executor, sh(`early-${i}`, SLEEPER))
        const stopped = await executor.stop(info.id, { graceMs: 2_000 })
        expect(stopped.exit!.reason).toBe('killed')
        await allGone([info.pid!])
      }
      await sleep(200)
    } finally {
      process.off('uncaughtException', onError)
    }
    expect(escaped.map((err) => String(err))).toEqual([])
  })

  it('admits concurrent starts as if one after the other: never over capacity, one task per id', async () => {
    const { executor } = open({ capacity: { cpuMillis: 1000, memoryBytes: GiB } })
    const both = await Promise.allSettled([
      executor.start(sh('left', SLEEPER, { cpuMillis: 600, memoryBytes: 64 * MiB })),
      executor.start(sh('right', SLEEPER, { cpuMillis: 600, memoryBytes: 64 * MiB })),
    ])
    // Whatever started runs its command before anything stops it (see the test above).
    for (const info of executor.list()) if (info.phase === 'running') await ready(info)
    expect(both.filter((r) => r.status === 'fulfilled' && r.value.phase === 'running')).toHaveLength(1)
    const refused = both.find((r) => r.status === 'rejected')
    expect((refused as PromiseRejectedResult | undefined)?.reason).toMatchObject({ code: 'ADMISSION_REFUSED' })
    expect(executor.committed().cpuMillis).toBeLessThanOrEqual(1000)

    const twice = await Promise.allSettled([
      executor.start(sh('twin', SLEEPER, { cpuMillis: 100, memoryBytes: 64 * MiB })),
      executor.start(sh('twin', SLEEPER, { cpuMillis: 100, memoryBytes: 64 * MiB })),
    ])
    for (const info of executor.list()) if (info.phase === 'running') await ready(info)
    expect(twice.filter((r) => r.status === 'fulfilled' && r.value.phase === 'running')).toHaveLength(1)
    expect((twice.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined)?.reason).toMatchObject({ code: 'TASK_EXISTS' })
  })

  it('starting an ended id again lets go of the previous life\'s log files', async () => {
    const { executor, tasksDir } = open()
    for (let i = 0; i < 3; i++) {
      await started(executor, sh('again', `echo life ${i}`))
      expect((await ended(executor, 'again')).exit).toMatchObject({ reason: 'exited', code: 0 })
    }
    expect(await readAll(executor, 'again', 'stdout')).toBe('life 2\n')
    // This process's open files in the task's dir: at most the live logs' own two, not two more per earlier life.
    const fds = readdirSync('/proc/self/fd').map((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) } catch { return '' } })
    expect(fds.filter((path) => path.startsWith(join(tasksDir, 'again') + '/')).length).toBeLessThanOrEqual(2)
  })
})

describe('isolation none', () => {
  it('runs tasks without a group, usage from /proc, and stop() kills the process group', async () => {
    const { executor } = open({ isolation: 'none', sampleMs: 100 })
    expect(executor.isolation.kind).toBe('none')
    // A child that ignores SIGTERM: only the SIGKILL to the group after the main process ended takes it.
    const info = await started(executor, sh('bare', 'sh -c \'trap "" TERM; echo $$ > "$MURMUR_ALLOC_DIR/child"; exec sleep 1000\' &\nwhile :; do :; done'))
    expect(info.cgroup).toBeNull()
    const child = await pidFile(join(alloc(info), 'child'))
    expect(procStat(child)!.pgrp).toBe(info.pid)
    // Still in this process's own groups.
    expect(readFileSync(`/proc/${info.pid}/cgroup`, 'utf8')).toBe(readFileSync('/proc/self/cgroup', 'utf8'))
    const usage = await waitUntil('CPU time from /proc', async () => executor.inspect('bare')!.usage, (u) => u !== null && u.cpuSeconds >= 0.2, 20_000, 20)
    expect(usage!.memoryBytes).toBeGreaterThan(0)
    expect(usage!.pids).toBeGreaterThanOrEqual(1)

    const stopped = await executor.stop('bare', { graceMs: 5_000 })
    expect(stopped.exit).toMatchObject({ reason: 'killed', signal: 'SIGTERM' })
    await allGone([child, info.pid!])
  })

  it('when the main process exits, its process group is killed and the exit is its code', async () => {
    const { executor } = open({ isolation: 'none' })
    const info = await started(executor, sh('leaver', 'sleep 1000 & echo $! > "$MURMUR_ALLOC_DIR/child"; exit 4'))
    const done = await ended(executor, 'leaver')
    expect(done.exit).toMatchObject({ reason: 'exited', code: 4 })
    const child = Number(readFileSync(join(alloc(info), 'child'), 'utf8'))
    await allGone([child])
  })
})
