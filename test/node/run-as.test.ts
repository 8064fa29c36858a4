// A job's runAs: the uid its tasks run as, instead of a uid of their own from
// the node's range. Real tasks through the real executor and spawner: on this
// machine's root node they run as the uid named (root included) with an alloc
// dir of that uid's, and no uid of the range is claimed for them; a node that
// is not root (a real one: a child process of the test as nobody) runs a task
// whose runAs is its own uid and refuses any other, as a refusal the cluster
// answers by placing the task elsewhere, not as a failed run.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { InputError, MurmurError } from '../../node/errors.ts'
import { Executor, taskUserOf } from '../../node/executor/executor.ts'
import type { AttemptInfo, AttemptSpec } from '../../node/executor/types.ts'
import { DEFAULT_TASK_UIDS, primaryGid } from '../../node/executor/uids.ts'
import { waitUntil } from '../helpers/wait.ts'

const ROOT = process.getuid?.() === 0
const WHY = 'skipped: only root can run tasks as another user'
const MiB = 1024 ** 2
const log = pino({ level: 'silent' })
const EXECUTOR = fileURLToPath(new URL('../../node/executor/executor.ts', import.meta.url))
/** An unprivileged uid of the machine to be the node that is not root: nobody. */
const NOBODY = 65_534
/** A uid no account of the machine has, outside the task range: its gid is the same number. */
const LOOSE_UID = 1234

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function tempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  // Tasks reach their alloc dirs by absolute path: the dirs above must be open to them.
  chmodSync(dir, 0o755)
  cleanups.push(async () => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** A root node's executor with a task range of one uid, claimed in a claims dir of the test's own. */
function node (): { executor: Executor, first: number, claims: string } {
  const base = tempDir('murmur-run-as-')
  const claims = join(base, 'claims')
  const first = DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count - 10
  const executor = Executor.open({
    nodeId: `test-${randomBytes(4).toString('hex')}`,
    dir: join(base, 'tasks'),
    capacity: { cpuMillis: 8_000, memoryBytes: 8 * 1024 * MiB },
    log,
    sampleMs: 100,
    graceMs: 1_000,
    taskUids: { first, count: 1 },
    uidClaimsDir: claims,
  })
  cleanups.push(async () => {
    await executor.stopAll(500)
    await executor.close()
  })
  return { executor, first, claims }
}

function sh (id: string, script: string, more: Partial<AttemptSpec> = {}): AttemptSpec {
  return { id, job: 'run-as', command: '/bin/sh', args: ['-c', script], env: {}, cpuMillis: 200, memoryBytes: 64 * MiB, ...more }
}

async function ended (executor: Executor, id: string): Promise<AttemptInfo> {
  return (await waitUntil(`task ${id} to end`, async () => executor.inspect(id), (info) => info?.phase === 'ended', 20_000, 20))!
}

async function stdout (executor: Executor, id: string): Promise<string> {
  return (await executor.readLogs(id, 'stdout')).data.toString('utf8')
}

async function refusal (promise: Promise<unknown>): Promise<MurmurError> {
  const err = await promise.then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(MurmurError)
  return err as MurmurError
}

/** The ids a task sees: uid, gid, every group, and the owner of its HOME (its alloc dir). */
const IDS = 'id -u; id -g; id -G; stat -c %u:%g "$HOME"'

describe(ROOT ? 'a job\'s runAs on a root node' : `a job's runAs on a root node (${WHY})`, () => {
  it.skipIf(!ROOT)('runs the task as that uid (gid the same, no other groups), with an alloc dir of that uid\'s, and claims no uid of the range for it', async () => {
    const { executor, first, claims } = node()
    const info = await executor.start(sh('as-1234', `${IDS}; exec sleep 1000`, { runAs: LOOSE_UID }))
    expect(info).toMatchObject({ phase: 'running', exit: null, user: { uid: LOOSE_UID, gid: LOOSE_UID } })
    const out = await waitUntil('the task to print its ids', async () => await stdout(executor, 'as-1234'), (text) => text.split('\n').length > 4, 20_000, 20)
    expect(out).toBe(`${LOOSE_UID}\n${LOOSE_UID}\n${LOOSE_UID}\n${LOOSE_UID}:${LOOSE_UID}\n`)
    expect(readFileSync(`/proc/${info.pid!}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${LOOSE_UID}\\s+${LOOSE_UID}\\s+${LOOSE_UID}\\s+${LOOSE_UID}$`, 'm'))
    expect(statSync(info.alloc!)).toMatchObject({ uid: LOOSE_UID, gid: LOOSE_UID })
    expect(statSync(info.alloc!).mode & 0o777).toBe(0o700)
    // What `murmur ps` and GET /v1/node/tasks show, and what the node's next life reads.
    expect(executor.inspect('as-1234')).toMatchObject({ user: { uid: LOOSE_UID, gid: LOOSE_UID }, spec: { runAs: LOOSE_UID } })
    expect(JSON.parse(readFileSync(join(info.dir, 'task.json'), 'utf8'))).toMatchObject({ user: { uid: LOOSE_UID, gid: LOOSE_UID }, spec: { runAs: LOOSE_UID } })

    // The range's one uid is still free, on this node and on the machine: the next task without runAs gets it.
    expect(readdirSync(claims)).toEqual([])
    const pooled = await executor.start(sh('pooled', 'exec sleep 1000'))
    expect(pooled).toMatchObject({ phase: 'running', user: { uid: first, gid: first } })
    expect(readdirSync(claims)).toEqual([String(first)])
    // And with the range spent, runAs tasks are still admitted: they need none of it.
    const more = await executor.start(sh('as-1234-again', 'id -u', { runAs: LOOSE_UID }))
    expect(more.exit).toBeNull()
    expect((await ended(executor, 'as-1234-again')).exit).toMatchObject({ reason: 'exited', code: 0 })
    expect(await stdout(executor, 'as-1234-again')).toBe(`${LOOSE_UID}\n`)

    // Its end gives nothing back to the range and kills nothing by uid (the uid may be a person's): its dir stays its own.
    const stopped = await executor.stop('as-1234', { graceMs: 1_000 })
    expect(stopped.exit).toMatchObject({ reason: 'killed' })
    expect(statSync(info.alloc!).uid).toBe(LOOSE_UID)
    expect(executor.inspect('pooled')!.phase).toBe('running')
    expect(readdirSync(claims)).toEqual([String(first)])
  })

  it.skipIf(!ROOT)('runs runAs 0 as root, with root\'s alloc dir and no groups beyond 0, on a node that gives other tasks a uid each', async () => {
    const { executor, claims } = node()
    expect(executor.taskUser).toMatchObject({ uids: { count: 1 }, separate: true, runAs: 'any' })
    const info = await executor.start(sh('as-root', IDS, { runAs: 0 }))
    expect(info.user).toEqual({ uid: 0, gid: 0 })
    expect((await ended(executor, 'as-root')).exit).toMatchObject({ reason: 'exited', code: 0 })
    expect(await stdout(executor, 'as-root')).toBe('0\n0\n0\n0:0\n')
    expect(statSync(info.alloc!).uid).toBe(0)
    expect(readdirSync(claims)).toEqual([])
  })

  it.skipIf(!ROOT)('takes the gid from /etc/passwd for a uid that has an entry there', async () => {
    const entry = readFileSync('/etc/passwd', 'utf8').split('\n').map((line) => line.split(':')).find((f) => f.length > 3 && Number(f[2]) > 0 && f[2] !== f[3])
    if (entry === undefined) return
    const [uid, gid] = [Number(entry[2]), Number(entry[3])]
    const { executor } = node()
    const info = await executor.start(sh('as-account', IDS, { runAs: uid }))
    expect(info.user).toEqual({ uid, gid })
    expect((await ended(executor, 'as-account')).exit).toMatchObject({ reason: 'exited', code: 0 })
    // `id -G` lists the primary group alone: the account's supplementary groups are not given either.
    expect(await stdout(executor, 'as-account')).toBe(`${uid}\n${gid}\n${gid}\n${uid}:${gid}\n`)
  })

  it.skipIf(!ROOT)('refuses a runAs in the node\'s task range (it would share a task\'s uid) as a refusal, not a failed run; and runAs with user', async () => {
    const { executor, first } = node()
    const err = await refusal(executor.start(sh('in-range', 'id -u', { runAs: first })))
    expect(err.code).toBe('RUN_AS_REFUSED')
    expect(err.httpStatus).toBe(409)
    expect(err.message).toBe(`task in-range runs as uid ${first} (its job's runAs), which is in the range this node gives each task a uid of its own from (${first}–${first}): it would share another task's uid; choose a uid outside the range`)
    expect(executor.inspect('in-range')).toBeUndefined()
    const both = await refusal(executor.start(sh('both', 'id -u', { runAs: LOOSE_UID, user: { uid: LOOSE_UID, gid: LOOSE_UID } })))
    expect(both).toBeInstanceOf(InputError)
    expect(both.message).toBe('task spec: runAs: give user or runAs, not both')
    expect(executor.committed().tasks).toBe(0)
  })
})

/**
 * A node that is not root, for real: a child process running as nobody opens an executor on a dir of its own,
 * starts each spec, and prints one JSON line of what became of each (the attempt, or the refusal).
 */
const NOT_ROOT_NODE = `
const { Executor } = await import(${JSON.stringify(EXECUTOR)})
const [dir, specs] = [process.argv[1], JSON.parse(process.argv[2])]
const silent = { level: 'silent', fatal () {}, error () {}, warn () {}, info () {}, debug () {}, trace () {}, child () { return silent } }
const executor = Executor.open({ nodeId: 'not-root', dir, capacity: { cpuMillis: 1000, memoryBytes: 1024 ** 3 }, isolation: 'none', log: silent, sampleMs: 50 })
const results = {}
for (const spec of specs) {
  try {
    const info = await executor.start(spec)
    let end = info
    for (let i = 0; i < 1000 && end.phase !== 'ended'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      end = executor.inspect(spec.id)
    }
    results[spec.id] = { user: end.user, exit: end.exit, stdout: (await executor.readLogs(spec.id, 'stdout')).data.toString('utf8') }
  } catch (err) {
    results[spec.id] = { refused: { name: err.name, code: err.code, status: err.httpStatus, message: err.message }, known: executor.inspect(spec.id) !== undefined }
  }
}
await executor.stopAll(500)
await executor.close()
console.log(JSON.stringify({ uid: process.getuid(), taskUser: executor.taskUser, committed: executor.committed(), results }))
`

interface NotRootReport {
  uid: number
  taskUser: Record<string, unknown>
  committed: { tasks: number }
  results: Record<string, { user?: unknown, exit?: { reason: string, code: number | null }, stdout?: string, refused?: { name: string, code: string, status: number, message: string }, known?: boolean }>
}

async function asNobody (specs: AttemptSpec[]): Promise<NotRootReport> {
  const base = tempDir('murmur-run-as-user-')
  chownSync(base, NOBODY, NOBODY)
  const child = spawn(process.execPath, ['--input-type=module', '-e', NOT_ROOT_NODE, join(base, 'tasks'), JSON.stringify(specs)], {
    uid: NOBODY,
    gid: NOBODY,
    cwd: base,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  cleanups.push(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString('utf8') })
  child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString('utf8') })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  expect(code, err).toBe(0)
  return JSON.parse(out.trim().split('\n').pop()!) as NotRootReport
}

describe(ROOT ? 'a job\'s runAs on a node that is not root' : `a job's runAs on a node that is not root (${WHY}: the test runs one as nobody)`, () => {
  it.skipIf(!ROOT || !existsSync('/usr/bin/id'))('runs a task whose runAs is the node\'s own uid, and refuses any other with the reason, before it is admitted', async () => {
    const report = await asNobody([
      sh('own', 'id -u', { runAs: NOBODY }),
      sh('other', 'id -u', { runAs: LOOSE_UID }),
      sh('root', 'id -u', { runAs: 0 }),
      sh('plain', 'id -u'),
    ])
    expect(report.uid).toBe(NOBODY)
    expect(report.taskUser).toMatchObject({ uid: NOBODY, uids: null, separate: false, runAs: NOBODY })
    expect(report.results.own).toMatchObject({ user: { uid: NOBODY, gid: NOBODY }, exit: { reason: 'exited', code: 0 }, stdout: `${NOBODY}\n` })
    for (const uid of [LOOSE_UID, 0]) {
      const id = uid === 0 ? 'root' : 'other'
      // A MurmurError from start(), not a start-failed attempt: the reconcile loop records it declined and the backups take it.
      expect(report.results[id], id).toEqual({
        refused: {
          name: 'MurmurError',
          code: 'RUN_AS_UNAVAILABLE',
          status: 409,
          message: `task ${id} runs as uid ${uid} (its job's runAs), and this node cannot switch users: it runs as uid ${NOBODY}, not root, so it runs only tasks with no runAs or with runAs ${NOBODY}; a node that runs as root can take it`,
        },
        known: false,
      })
    }
    // Without runAs: the node's own user, as before (null: the node's).
    expect(report.results.plain).toMatchObject({ user: null, exit: { reason: 'exited', code: 0 }, stdout: `${NOBODY}\n` })
    expect(report.committed.tasks).toBe(0)
  })
})

describe('runAs, worked out without running anything', () => {
  it('takes a uid\'s gid from the first passwd entry of that uid, else the uid\'s own number', () => {
    const dir = tempDir('murmur-passwd-')
    const passwd = join(dir, 'passwd')
    writeFileSync(passwd, ['root:x:0:0::/root:/bin/sh', 'games:x:5:60::/:/bin/false', 'broken:x:7', 'odd:x:8:nope::/:/bin/false', 'again:x:5:99::/:/bin/false', ''].join('\n'))
    expect(primaryGid(0, passwd)).toBe(0)
    expect(primaryGid(5, passwd)).toBe(60)
    expect(primaryGid(7, passwd)).toBe(7)
    expect(primaryGid(8, passwd)).toBe(8)
    expect(primaryGid(LOOSE_UID, passwd)).toBe(LOOSE_UID)
    expect(primaryGid(5, join(dir, 'no-such-file'))).toBe(5)
  })

  it('is honoured for any uid by a root node, for its own uid alone by another, as the node\'s task user says', () => {
    expect(taskUserOf({}, { uid: 0, gid: 0 }).runAs).toBe('any')
    expect(taskUserOf({ runAs: { uid: 2000, gid: 2000 } }, { uid: 0, gid: 0 }).runAs).toBe('any')
    expect(taskUserOf({}, { uid: 1000, gid: 1000 })).toMatchObject({ runAs: 1000, detail: expect.stringMatching(/a job's runAs other than 1000 is refused here$/) })
  })
})
