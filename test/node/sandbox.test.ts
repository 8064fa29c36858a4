// What a task can reach of the node that runs it: nothing. Real tasks through
// the real executor and spawner, in real cgroups, below a real data dir (its
// identity key, a LevelDB state database, other tasks' dirs and logs), probed
// from inside by a task that tries to read, move itself out of its cgroup and
// signal the node. Each attempt must fail with the kernel's EACCES or EPERM.
//
// Only root can switch a task to another user: elsewhere the tests say why
// they are skipped. The parent of the data dir is opened (0755) on purpose, so
// that the data dir's own modes are what is tested.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { openDataDir } from '../../node/datadir.ts'
import { InputError, MurmurError } from '../../node/errors.ts'
import { ALLOC_DIR, Executor, closedAncestor, taskUserOf, workdirOf } from '../../node/executor/executor.ts'
import type { AttemptInfo, AttemptSpec } from '../../node/executor/types.ts'
import { DEFAULT_TASK_UIDS, UidClaims, UidPool, accountIds, parseUidRange } from '../../node/executor/uids.ts'
import { StateStore } from '../../node/state-store.ts'
import { firstLine } from '../helpers/child.ts'
import { PY_ATTEMPT } from '../helpers/sandbox-probe.ts'
import { waitUntil } from '../helpers/wait.ts'

const ROOT = process.getuid?.() === 0
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : null
const SKIP = !ROOT || PYTHON === null
const WHY = !ROOT ? 'skipped: only root can run tasks as another user' : PYTHON === null ? 'skipped: the probe needs /usr/bin/python3' : ''
const MiB = 1024 ** 2
const log = pino({ level: 'silent' })
const CHILD_PATH = fileURLToPath(new URL('../helpers/executor-child.ts', import.meta.url))
const peerIdOf = (key: Parameters<typeof peerIdFromPrivateKey>[0]): string => peerIdFromPrivateKey(key).toString()

/**
 * The probe: tries each thing it is given and prints, as one JSON document, the errno name of each
 * attempt ('ok' if it worked), its own ids and groups, and its cgroups after trying to leave them.
 */
const PROBE = String.raw`
import errno, json, os, sys
req = json.loads(os.environ['PROBE'])
out = {'read': {}, 'list': {}, 'write': {}, 'signal': {}}
${PY_ATTEMPT}
for p in req['read']:
    out['read'][p] = attempt(lambda: open(p, 'rb').read(1))
for p in req['list']:
    out['list'][p] = attempt(lambda: os.listdir(p))
def own_groups():
    return sorted(l.strip() for l in open('/proc/self/cgroup'))
before = own_groups()
mounts = {}
for line in open('/proc/self/mounts'):
    f = line.split(' ')
    if f[2] == 'cgroup':
        for c in f[3].split(','):
            mounts[c] = f[1]
    elif f[2] == 'cgroup2':
        mounts[''] = f[1]
targets = list(req['write'])
for line in before:
    _, ctrls, path = line.split(':', 2)
    for c in (ctrls.split(',') if ctrls else ['']):
        if c in ('memory', 'pids', 'cpu', '') and c in mounts:
            base = mounts[c]
            parent = os.path.dirname(path.rstrip('/'))
            targets.append(os.path.join(base + parent, 'cgroup.procs'))
            targets.append(os.path.join(base, 'cgroup.procs'))
            targets.append(os.path.join(base + path, 'cgroup.procs'))
def write(p):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, (str(os.getpid()) + '\n').encode())
    finally:
        os.close(fd)
for p in targets:
    out['write'][p] = attempt(lambda: write(p))
out['cgroupsKept'] = own_groups() == before
for pid in req['signal']:
    out['signal'][str(pid)] = attempt(lambda: os.kill(pid, 0))
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
out['uid'] = status['Uid'].split()
out['gid'] = status['Gid'].split()
out['groups'] = status['Groups'].split()
# By absolute path, from elsewhere: HOME is the task's own alloc dir.
os.chdir('/')
out['mine'] = attempt(lambda: open(os.environ['HOME'] + '/mine', 'w').write('x'))
out['mineBack'] = open(os.environ['MURMUR_ALLOC_DIR'] + '/mine').read()
print(json.dumps(out))
`

interface ProbeReport {
  read: Record<string, string>
  list: Record<string, string>
  write: Record<string, string>
  signal: Record<string, string>
  cgroupsKept: boolean
  uid: string[]
  gid: string[]
  groups: string[]
  mine: string
  mineBack: string
}

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A node's data dir as node.ts lays it out: identity, lock, a state database, the tasks dir; and its executor. */
async function node (more: Partial<Parameters<typeof Executor.open>[0]> = {}): Promise<{ data: string, executor: Executor }> {
  const base = mkdtempSync(join(tmpdir(), 'murmur-sandbox-'))
  chmodSync(base, 0o755)
  cleanups.push(async () => { rmSync(base, { recursive: true, force: true }) })
  const dataDir = await openDataDir(join(base, 'data'), peerIdOf)
  cleanups.push(async () => { await dataDir.release() })
  const store = await StateStore.open(join(dataDir.path, 'state'), { log })
  await store.close()
  const executor = Executor.open({
    nodeId: `test-${randomBytes(4).toString('hex')}`,
    dir: join(dataDir.path, 'tasks'),
    capacity: { cpuMillis: 8_000, memoryBytes: 8 * 1024 * MiB },
    log,
    sampleMs: 100,
    graceMs: 1_000,
    ...more,
  })
  cleanups.push(async () => {
    await executor.stopAll(500)
    await executor.close()
  })
  return { data: dataDir.path, executor }
}

function sh (id: string, script: string, more: Partial<AttemptSpec> = {}): AttemptSpec {
  return { id, job: 'sandbox', command: '/bin/sh', args: ['-c', script], env: {}, cpuMillis: 200, memoryBytes: 64 * MiB, ...more }
}

async function ended (executor: Executor, id: string): Promise<AttemptInfo> {
  return (await waitUntil(`task ${id} to end`, async () => executor.inspect(id), (info) => info?.phase === 'ended', 20_000, 20))!
}

function mode (path: string): number {
  return statSync(path).mode & 0o777
}

function safeRead (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

describe(SKIP ? `a task's sandbox (${WHY})` : 'a task\'s sandbox', () => {
  it.skipIf(SKIP)('keeps a task from the node\'s key, its state database, other tasks (their files, /proc and processes), other cgroups and the node itself', async () => {
    const { data, executor } = await node()
    expect(executor.taskUser).toMatchObject({ uid: null, uids: DEFAULT_TASK_UIDS, separate: true })

    // Another task, with a file in its alloc dir (written by absolute path), its logs and its record.
    const victim = await executor.start(sh('victim', 'cd /; echo secret > "$HOME/secret"; echo logged; cd "$HOME"; exec sleep 1000'))
    expect(victim.exit).toBeNull()
    const alloc = victim.alloc!
    expect(alloc).toBe(join(data, 'tasks', ALLOC_DIR, 'victim'))
    await waitUntil('the victim to write', async () => existsSync(join(alloc, 'secret')), (x) => x, 20_000, 20)
    // Its main process is sleep, in its alloc dir: what /proc/<pid>/cwd would open.
    await waitUntil('the victim to sleep', async () => safeRead(`/proc/${victim.pid!}/comm`), (comm) => comm.trim() === 'sleep', 20_000, 20)
    const state = join(data, 'state')
    const stateFiles = readdirSync(state).map((f) => join(state, f))
    expect(stateFiles.length).toBeGreaterThan(0)
    const victimProc = `/proc/${victim.pid!}`
    const secrets = [
      join(data, 'identity.key'), join(data, 'murmur.json'), join(data, 'node.lock'), ...stateFiles,
      join(victim.dir, 'task.json'), join(victim.dir, 'logs', 'stdout.log'), join(alloc, 'secret'),
      join(data, 'tasks', 'cgroups.json'),
      // The other task's files through its process: a uid of its own closes /proc to others.
      `${victimProc}/cwd/secret`, `${victimProc}/environ`, `${victimProc}/root${alloc}/secret`,
    ].filter((p) => existsSync(p))
    // The node's own process too: /proc's links to its files and dirs bypass the data dir's mode, but not the
    // check that the caller is the process's own user.
    const nodeProc = `/proc/${process.pid}`
    secrets.push(`${nodeProc}/environ`, `${nodeProc}/root${data}/identity.key`, `${nodeProc}/cwd/package.json`)
    const dirs = [
      data, state, join(data, 'tasks'), join(data, 'tasks', ALLOC_DIR), victim.dir, alloc, join(victim.dir, 'logs'),
      `${nodeProc}/fd`, `${nodeProc}/cwd`, `${victimProc}/cwd`, `${victimProc}/fd`,
    ]
    // The victim's group in the memory hierarchy (v1), or its only group (v2).
    const victimProcs = victim.cgroup === null ? [] : [join(victim.cgroup, 'cgroup.procs')]
    const request = { read: secrets, list: dirs, write: victimProcs, signal: [process.pid, executor.spawnerInfo().pid ?? process.pid, victim.pid!] }

    const probe = await executor.start({ ...sh('probe', ''), command: PYTHON!, args: ['-c', PROBE], env: { PROBE: JSON.stringify(request) } })
    const done = await ended(executor, 'probe')
    const stderr = (await executor.readLogs('probe', 'stderr')).data.toString('utf8')
    expect(done.exit, stderr).toMatchObject({ reason: 'exited', code: 0 })
    const report = JSON.parse((await executor.readLogs('probe', 'stdout')).data.toString('utf8')) as ProbeReport

    // Each its own uid from the range, gid the same, without the node's groups.
    const uid = probe.user!.uid
    expect(victim.user!.uid).not.toBe(uid)
    for (const u of [uid, victim.user!.uid]) expect(u >= DEFAULT_TASK_UIDS.first && u < DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count, String(u)).toBe(true)
    expect(report.uid).toEqual(Array(4).fill(String(uid)))
    expect(report.gid).toEqual(Array(4).fill(String(uid)))
    expect(report.groups.filter((g) => g !== String(uid))).toEqual([])
    expect(readFileSync(`${victimProc}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${victim.user!.uid}\\s`, 'm'))
    // It works in its own dir, by the absolute path HOME and MURMUR_ALLOC_DIR give.
    expect(report.mine).toBe('ok')
    expect(report.mineBack).toBe('x')
    expect(readFileSync(join(probe.alloc!, 'mine'), 'utf8')).toBe('x')
    for (const path of secrets) expect(report.read[path], `reading ${path}`).toBe('EACCES')
    for (const path of dirs) expect(report.list[path], `listing ${path}`).toBe('EACCES')
    // Its own group's parent, the hierarchy's root, its own group (root's files all), another task's group.
    expect(Object.keys(report.write).length).toBeGreaterThanOrEqual(victim.cgroup === null ? 0 : 4)
    // Each one there (the probe's own groups went with it), so that no ENOENT passes for a refusal.
    for (const path of Object.keys(report.write)) if (!path.includes(`/${probe.id}/`)) expect(existsSync(path), path).toBe(true)
    for (const [path, result] of Object.entries(report.write)) expect(['EACCES', 'EPERM'], `writing ${path}`).toContain(result)
    expect(report.cgroupsKept).toBe(true)
    // The node, its spawner and the other task: other users' processes.
    expect(Object.keys(report.signal)).toHaveLength(3)
    for (const [pid, result] of Object.entries(report.signal)) expect(result, `signalling ${pid}`).toBe('EPERM')
    expect(executor.inspect('victim')!.phase).toBe('running')

    // And on disk, without relying on the data dir's mode alone.
    expect(mode(data)).toBe(0o711)
    expect(mode(join(data, 'identity.key'))).toBe(0o600)
    expect(mode(join(data, 'murmur.json'))).toBe(0o600)
    expect(mode(state)).toBe(0o700)
    expect(mode(join(data, 'tasks'))).toBe(0o711)
    expect(mode(join(data, 'tasks', ALLOC_DIR))).toBe(0o711)
    expect(mode(victim.dir)).toBe(0o700)
    expect(mode(join(victim.dir, 'task.json'))).toBe(0o600)
    expect(mode(join(victim.dir, 'logs'))).toBe(0o700)
    expect(mode(join(victim.dir, 'logs', 'stdout.log'))).toBe(0o600)
    expect(mode(alloc)).toBe(0o700)
    expect(statSync(alloc).uid).toBe(victim.user!.uid)
    // The uid is in the task's record, for the node's next life.
    expect(JSON.parse(readFileSync(join(victim.dir, 'task.json'), 'utf8')).user).toEqual(victim.user)
    // The ended probe's alloc dir is root's again: whoever holds its uid next finds nothing there.
    expect(statSync(probe.alloc!).uid).toBe(0)
    expect(mode(probe.alloc!)).toBe(0o700)
    // The cgroups stay root's: a task's own group is not handed to it.
    if (victim.cgroup !== null) for (const procs of victimProcs) expect(statSync(procs).uid).toBe(0)
    // The task still wrote its own logs (the spawner opened them for it).
    expect((await executor.readLogs('victim', 'stdout')).data.toString('utf8')).toBe('logged\n')
    // Removed with its task: the alloc dir and whatever the uid left in it.
    await executor.stop('victim', { graceMs: 1_000 })
    expect(await executor.prune(Date.now() + 1)).toEqual(expect.arrayContaining(['victim', 'probe']))
    expect(existsSync(alloc)).toBe(false)
    expect(existsSync(victim.dir)).toBe(false)
  })

  it.skipIf(SKIP)('gives each running task its own uid until the range is spent, then refuses starts saying so; an end frees its uid', async () => {
    const first = DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count - 3
    const { executor } = await node({ taskUids: { first, count: 2 } })
    const a = await executor.start(sh('a', 'exec sleep 1000'))
    const b = await executor.start(sh('b', 'exec sleep 1000'))
    expect([a.user!.uid, b.user!.uid].sort()).toEqual([first, first + 1])
    // Refused, not failed: the cluster places it elsewhere rather than count a failed run.
    const refused = await executor.start(sh('c', 'exec sleep 1000')).then(() => null, (e: unknown) => e)
    expect(refused).toBeInstanceOf(MurmurError)
    expect((refused as MurmurError).code).toBe('ADMISSION_REFUSED')
    expect((refused as MurmurError).message).toBe(`task c does not fit on this node: all its 2 task uids (${first}–${first + 1}) are held by its running tasks; stop some, or give the node a larger range (taskUids)`)
    expect(executor.inspect('c')).toBeUndefined()
    expect(executor.committed().tasks).toBe(2)
    // A spec cannot ask for a uid of the range (it would share a running task's).
    const err = await executor.start(sh('d', 'id', { user: { uid: first, gid: first } })).then(() => null, (e: unknown) => e)
    expect((err as InputError).code).toBe('TASK_USER_REFUSED')
    await executor.stop('a', { graceMs: 1_000 })
    const e = await executor.start(sh('e', 'exec sleep 1000'))
    expect(e.exit).toBeNull()
    expect(e.user!.uid).toBe(a.user!.uid)
    // The uid's new holder does not get the old one's dir: a's alloc dir is root's now.
    expect(statSync(a.alloc!).uid).toBe(0)
    expect(statSync(e.alloc!).uid).toBe(a.user!.uid)
  })

  it.skipIf(SKIP)('never gives one uid to tasks of two nodes of the machine that share a range', async () => {
    const first = DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count - 6
    const one = await node({ taskUids: { first, count: 2 } })
    const two = await node({ taskUids: { first, count: 2 } })
    const a = await one.executor.start(sh('a', 'exec sleep 1000'))
    const b = await two.executor.start(sh('b', 'exec sleep 1000'))
    expect([a.user!.uid, b.user!.uid].sort()).toEqual([first, first + 1])
    // Node two holds one uid, so it admits a second task; the machine has none left for it.
    const c = await two.executor.start(sh('c', 'exec sleep 1000'))
    expect(c).toMatchObject({ phase: 'ended', pid: null, exit: { reason: 'start-failed' } })
    expect(c.exit!.message).toBe(`cannot start /bin/sh: no task uid is free: the 2 task uids (${first}–${first + 1}) are all held by tasks of this node or of other nodes on this machine; stop some, or give each node a range of its own (taskUids)`)
    await one.executor.stop('a', { graceMs: 1_000 })
    const d = await two.executor.start(sh('d', 'exec sleep 1000'))
    expect(d.user!.uid).toBe(a.user!.uid)
  })

  it.skipIf(SKIP)('holds a task\'s uid across a restart of the node that adopts it', async () => {
    const base = mkdtempSync(join(tmpdir(), 'murmur-sandbox-'))
    cleanups.push(async () => { rmSync(base, { recursive: true, force: true }) })
    const tasksDir = join(base, 'tasks')
    const nodeId = `test-${randomBytes(4).toString('hex')}`
    const specs = [sh('kept', 'exec sleep 1000'), sh('dropped', 'exec sleep 1000')]
    const child = spawn(process.execPath, [CHILD_PATH, tasksDir, nodeId, JSON.stringify(specs)], { stdio: ['ignore', 'pipe', 'inherit'] })
    cleanups.push(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    const line = await firstLine(child)
    expect(line).toMatch(/^running /)
    const before = (JSON.parse(line.slice('running '.length)) as { tasks: Array<{ id: string, pid: number, user: { uid: number, gid: number } }> }).tasks
    const userOf = Object.fromEntries(before.map((t) => [t.id, t.user]))
    expect(userOf.kept!.uid).not.toBe(userOf.dropped!.uid)
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))

    const executor = Executor.open({ nodeId, dir: tasksDir, capacity: { cpuMillis: 8_000, memoryBytes: 8 * 1024 * MiB }, log, sampleMs: 100, graceMs: 1_000 })
    cleanups.push(async () => {
      await executor.stopAll(500)
      await executor.close()
    })
    // A start before the recovery already steers clear of the uids the previous life's tasks hold.
    const early = await executor.start(sh('early', 'exec sleep 1000'))
    expect(early.exit).toBeNull()
    expect([userOf.kept!.uid, userOf.dropped!.uid]).not.toContain(early.user!.uid)
    const report = await executor.recover((task) => task.id === 'kept' ? 'adopt' : 'stop', { graceMs: 1_000 })
    expect(report).toMatchObject({ adopted: ['kept'], stopped: ['dropped'] })
    const kept = executor.inspect('kept')!
    expect(kept).toMatchObject({ phase: 'running', adopted: true, user: userOf.kept })
    expect(readFileSync(`/proc/${kept.pid!}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${userOf.kept!.uid}\\s`, 'm'))
    // The stopped one's uid is free again, the adopted one's is not: the next starts take the first but never the second.
    const next = []
    for (let i = 0; i < 3; i++) next.push((await executor.start(sh(`next-${i}`, 'exec sleep 1000'))).user!.uid)
    expect(next).not.toContain(userOf.kept!.uid)
    expect(next).not.toContain(early.user!.uid)
  })

  it.skipIf(SKIP)('refuses a working dir outside the task\'s own dir at start, and root as a task\'s user', async () => {
    const { executor } = await node()
    for (const workdir of ['/', '..', '../..', 'a/../../..']) {
      const info = await executor.start(sh(`out-${workdir.length}`, 'pwd', { workdir }))
      expect(info.exit, workdir).toMatchObject({ reason: 'start-failed' })
      expect(info.exit!.message).toMatch(/working dir .*(is absolute|leaves the task's own dir)/)
    }
    const missing = await executor.start(sh('missing', 'pwd', { workdir: 'sub' }))
    expect(missing.exit!.message).toMatch(/working dir sub: does not exist in the task's own dir/)
    for (const user of [{ uid: 0, gid: 0 }, { uid: 1000, gid: 0 }, { uid: 0, gid: 1000 }]) {
      const err = await executor.start(sh('root', 'id', { user })).then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(InputError)
      expect((err as InputError).code).toBe('TASK_USER_REFUSED')
    }
    expect(executor.committed().tasks).toBe(0)
  })

  it.skipIf(SKIP)('closes the node and other tasks to a task run as its job\'s runAs uid as to one with a uid of the range', async () => {
    const { data, executor } = await node()
    const victim = await executor.start(sh('victim', 'echo secret > "$HOME/secret"; exec sleep 1000'))
    await waitUntil('the victim to write', async () => existsSync(join(victim.alloc!, 'secret')), (x) => x, 20_000, 20)
    const script = [
      `cat ${join(data, 'identity.key')} >/dev/null 2>&1 && echo key-read || echo key-closed`,
      `ls ${victim.alloc!} >/dev/null 2>&1 && echo victim-listed || echo victim-closed`,
      `kill -0 ${victim.pid!} 2>/dev/null && echo victim-signalled || echo victim-unsignalled`,
      `kill -0 ${process.pid} 2>/dev/null && echo node-signalled || echo node-unsignalled`,
      'echo x > "$HOME/mine" && echo home-ok',
    ].join('; ')
    const probe = await executor.start(sh('run-as', script, { runAs: 4321 }))
    expect(probe.user).toEqual({ uid: 4321, gid: 4321 })
    expect((await ended(executor, 'run-as')).exit).toMatchObject({ reason: 'exited', code: 0 })
    expect((await executor.readLogs('run-as', 'stdout')).data.toString('utf8')).toBe('key-closed\nvictim-closed\nvictim-unsignalled\nnode-unsignalled\nhome-ok\n')
    expect(statSync(probe.alloc!).uid).toBe(4321)
    expect(victim.user!.uid).not.toBe(4321)
  })

  it.skipIf(SKIP)('refuses root as the task user unless the node allows it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'murmur-sandbox-'))
    cleanups.push(async () => { rmSync(dir, { recursive: true, force: true }) })
    const opts = { nodeId: `test-${randomBytes(4).toString('hex')}`, dir: join(dir, 'tasks'), capacity: { cpuMillis: 1_000, memoryBytes: 1024 * MiB }, isolation: 'none' as const, log }
    expect(() => Executor.open({ ...opts, runAs: { uid: 0, gid: 0 } })).toThrow(/which is root: they could read the node's key/)
    const custom = Executor.open({ ...opts, runAs: { uid: 4242, gid: 4343 } })
    expect(custom.taskUser).toMatchObject({ uid: 4242, gid: 4343, separate: true })
    await custom.close()
    const root = Executor.open({ ...opts, runAs: { uid: 0, gid: 0 }, allowPrivilegedTasks: true })
    expect(root.taskUser).toMatchObject({ uid: 0, separate: false })
    await root.close()
  })
})

describe('the task user', () => {
  it('is a uid per task for a root node, runAs if given, the node itself for another (which cannot switch), and never root unless allowed', () => {
    const root = { uid: 0, gid: 0 }
    expect(taskUserOf({}, root)).toMatchObject({ uid: null, gid: null, uids: { first: 70_000, count: 10_000 }, separate: true })
    expect(taskUserOf({ taskUids: { first: 200_000, count: 5 } }, root)).toMatchObject({ uids: { first: 200_000, count: 5 }, separate: true })
    for (const taskUids of [{ first: 0, count: 5 }, { first: 5, count: 0 }, { first: 1.5, count: 5 }, { first: 2 ** 32 - 3, count: 5 }]) {
      expect(() => taskUserOf({ taskUids }, root)).toThrow(/^task uids .*: give a first uid from 1 and a count from 1, ending at most at 4294967294 \(default 70000\+10000\)$/)
    }
    expect(taskUserOf({ runAs: { uid: 2000, gid: 3000 } }, root)).toMatchObject({ uid: 2000, gid: 3000, uids: null, separate: true })
    for (const runAs of [{ uid: 0, gid: 0 }, { uid: 0, gid: 5 }, { uid: 5, gid: 0 }]) {
      expect(() => taskUserOf({ runAs }, root)).toThrow(/which is root: they could read the node's key and leave their cgroups; choose an unprivileged uid and gid/)
    }
    expect(() => taskUserOf({ runAs: { uid: -1, gid: 5 } }, root)).toThrow(/task uid -1 is not a uid/)
    expect(taskUserOf({ runAs: { uid: 0, gid: 0 }, allowPrivilegedTasks: true }, root)).toMatchObject({ uid: 0, separate: false })

    const user = { uid: 1000, gid: 1000 }
    const self = taskUserOf({}, user)
    expect(self).toMatchObject({ uid: 1000, gid: 1000, uids: null, separate: false })
    // The range means nothing to a node that cannot switch users.
    expect(taskUserOf({ taskUids: { first: 200_000, count: 5 } }, user)).toMatchObject({ uid: 1000, uids: null, separate: false })
    expect(self.detail).toMatch(/not root and cannot switch users\): a task can read the node's data dir and signal it/)
    expect(taskUserOf({ runAs: user }, user)).toMatchObject({ separate: false })
    expect(() => taskUserOf({ runAs: { uid: 65534, gid: 65534 } }, user)).toThrow(/^tasks cannot run as 65534:65534: the node runs as uid 1000, not root, and cannot switch users; start the node as root, or leave the task user out$/)
  })
})

describe('the task uids', () => {
  it('are handed out once each, round the range, skipping accounts of the machine; held again and given back by task', () => {
    const pool = new UidPool({ first: 100, count: 4 }, new Set([0, 65534, 102]))
    expect(pool.skipped).toEqual([102])
    expect(pool.free).toBe(3)
    expect([pool.take('a'), pool.take('b'), pool.take('c')]).toEqual([100, 101, 103])
    expect(pool.take('d')).toBeNull()
    pool.release(101, 'not-b')
    expect(pool.take('d')).toBeNull()
    pool.release(101, 'b')
    pool.release(100, 'a')
    // The one let go first comes back first: the round goes on from where it was.
    expect(pool.take('d')).toBe(100)
    expect(pool.take('e')).toBe(101)
    // A recorded uid, held again after a restart: only by its own task.
    const next = new UidPool({ first: 100, count: 4 })
    expect(next.hold(102, 'x')).toBe(true)
    expect(next.hold(102, 'x')).toBe(true)
    expect(next.hold(102, 'y')).toBe(false)
    expect(next.hold(5, 'outside')).toBe(true)
    expect(next.holder(102)).toBe('x')
    expect([next.take('p'), next.take('q'), next.take('r'), next.take('s')]).toEqual([100, 101, 103, null])
  })

  it('are useless by absolute path below a dir others cannot search: the node finds the first such dir to warn of', () => {
    const base = mkdtempSync(join(tmpdir(), 'murmur-closed-'))
    cleanups.push(async () => { rmSync(base, { recursive: true, force: true }) })
    mkdirSync(join(base, 'data', 'tasks'), { recursive: true, mode: 0o711 })
    chmodSync(join(base, 'data'), 0o711)
    // mkdtemp's 0700.
    expect(closedAncestor(join(base, 'data', 'tasks'))).toBe(base)
    chmodSync(base, 0o755)
    expect(closedAncestor(join(base, 'data', 'tasks'))).toBeNull()
  })

  it('are claimed on the machine once each: a claim stands while its task\'s record says the task runs with it, or while it is fresh', () => {
    const dir = mkdtempSync(join(tmpdir(), 'murmur-claims-'))
    cleanups.push(async () => { rmSync(dir, { recursive: true, force: true }) })
    const claims = new UidClaims(join(dir, 'claims'), 0)
    const record = join(dir, 'task.json')
    writeFileSync(record, JSON.stringify({ exit: null, user: { uid: 6, gid: 6 } }))
    expect(claims.claim(6, 't', record)).toBe(true)
    // Claimed again by its own task (a restarted node): still its own.
    expect(claims.claim(6, 't', record)).toBe(true)
    expect(claims.claim(6, 'u', join(dir, 'other.json'))).toBe(false)
    // Only its holder lets it go.
    claims.release(6, join(dir, 'other.json'))
    expect(claims.claim(6, 'u', join(dir, 'other.json'))).toBe(false)
    // Its task ended (or names another uid, or its record is gone): stale, and taken over.
    writeFileSync(record, JSON.stringify({ exit: { reason: 'exited' }, user: { uid: 6, gid: 6 } }))
    expect(claims.claim(6, 'u', join(dir, 'other.json'))).toBe(true)
    expect(claims.claim(7, 'gone', join(dir, 'no-such-record.json'))).toBe(true)
    expect(claims.claim(7, 'u', join(dir, 'other.json'))).toBe(true)
    claims.release(7, join(dir, 'other.json'))
    expect(readdirSync(join(dir, 'claims'))).toEqual(['6'])
    // A fresh claim stands before its record exists (a start writes it once the process runs).
    const patient = new UidClaims(join(dir, 'claims'), 60_000)
    expect(patient.claim(8, 'new', join(dir, 'not-yet.json'))).toBe(true)
    expect(patient.claim(8, 'u', join(dir, 'other.json'))).toBe(false)
  })

  it('are given on the command line as first-last', () => {
    expect(parseUidRange('70000-79999')).toEqual({ first: 70_000, count: 10_000 })
    expect(parseUidRange(' 200000-200000 ')).toEqual({ first: 200_000, count: 1 })
    for (const bad of ['', '70000', '70000-', '-5', '9-5', 'a-b', '70000:79999']) {
      expect(() => parseUidRange(bad), bad).toThrow(/^--task-uids must be a range of uids such as 70000-79999 \(first-last\), got '/)
    }
    expect(() => parseUidRange('0-10')).toThrow(/^--task-uids 0-10: task uids 0\+11: give a first uid from 1/)
  })

  it('default to a range no account of this machine uses', () => {
    const accounts = accountIds()
    expect(accounts.has(0)).toBe(true)
    const inRange = [...accounts].filter((id) => id >= DEFAULT_TASK_UIDS.first && id < DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count)
    expect(inRange).toEqual([])
  })
})

describe('a task\'s working dir', () => {
  it('is inside its alloc dir by its real path: a symlink that points out is refused like ..', () => {
    const alloc = realpathSync(mkdtempSync(join(tmpdir(), 'murmur-workdir-')))
    cleanups.push(async () => { rmSync(alloc, { recursive: true, force: true }) })
    mkdirSync(join(alloc, 'data', 'deep'), { recursive: true })
    symlinkSync('/etc', join(alloc, 'out'))
    symlinkSync('data/deep', join(alloc, 'in'))
    writeFileSync(join(alloc, 'file'), '')
    const at = (workdir?: string): string => workdirOf({ command: 'sh', workdir }, alloc)
    expect(at()).toBe(alloc)
    expect(at('data')).toBe(join(alloc, 'data'))
    expect(at('in')).toBe(join(alloc, 'data', 'deep'))
    expect(at('data/deep/../..')).toBe(alloc)
    expect(() => at('out')).toThrow(/^cannot start sh: working dir out: leaves the task's own dir; give a path inside it$/)
    expect(() => at('data/../../')).toThrow(/leaves the task's own dir/)
    expect(() => at('/etc')).toThrow(/working dir \/etc: is absolute/)
    expect(() => at('file')).toThrow(/is not a directory/)
    expect(() => at('nope')).toThrow(/does not exist in the task's own dir/)
  })
})

describe('a node\'s data dir', () => {
  it('is made private, and an existing one is closed up when it opens', async () => {
    const base = mkdtempSync(join(tmpdir(), 'murmur-datadir-'))
    cleanups.push(async () => { rmSync(base, { recursive: true, force: true }) })
    const path = join(base, 'data')
    const first = await openDataDir(path, peerIdOf)
    expect(mode(path)).toBe(0o711)
    for (const file of ['identity.key', 'murmur.json', 'node.lock']) expect(mode(join(path, file)), file).toBe(0o600)
    await first.release()
    // As an older version, or a loose umask, left it.
    chmodSync(path, 0o755)
    chmodSync(join(path, 'murmur.json'), 0o644)
    const state = join(path, 'state')
    const store = await StateStore.open(state, { log })
    await store.close()
    chmodSync(state, 0o755)
    for (const f of readdirSync(state)) chmodSync(join(state, f), 0o644)
    writeFileSync(join(path, 'node.json'), '{}', { mode: 0o644 })
    const again = await openDataDir(path, peerIdOf)
    cleanups.push(async () => { await again.release() })
    expect(mode(path)).toBe(0o711)
    expect(mode(join(path, 'murmur.json'))).toBe(0o600)
    expect(mode(join(path, 'node.json'))).toBe(0o600)
    expect(mode(state)).toBe(0o700)
    for (const f of readdirSync(state)) expect(mode(join(state, f)) & 0o077, f).toBe(0)
    expect(again.peerId).toBe(first.peerId)
  })
})
