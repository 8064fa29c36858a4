// The spawner process (node/executor/spawner.ts): the executor's starts fork
// there, not in the node, and everything a start promised before still holds
// (the process runs in its groups, in its own process group, exits reported
// with their codes). When the spawner dies, the starts it had not answered fail
// without running their command, the tasks it had started go on and are watched
// by their pids like adopted ones, and the next start gets a new spawner. Closing
// the executor lets the spawner go and leaves the tasks running.

import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Executor, purgeTasks } from '../../node/executor/executor.ts'
import { Spawner } from '../../node/executor/spawner.ts'
import type { AttemptInfo, AttemptSpec } from '../../node/executor/types.ts'
import { waitUntil } from '../helpers/wait.ts'

const log = pino({ level: 'silent' })
const MiB = 1024 ** 2

const cleanups: Array<() => Promise<void> | void> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

function tempDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'murmur-spawner-'))
  cleanups.push(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

function open (): { executor: Executor, dir: string } {
  const dir = tempDir()
  const executor = Executor.open({ nodeId: `test-${randomBytes(4).toString('hex')}`, dir: join(dir, 'tasks'), capacity: { cpuMillis: 8_000, memoryBytes: 8 * 1024 * MiB }, log, sampleMs: 50, graceMs: 2_000 })
  cleanups.push(async () => {
    await executor.stopAll(500)
    await executor.close()
  })
  return { executor, dir }
}

function sh (id: string, script: string): AttemptSpec {
  return { id, job: 'j', command: '/bin/sh', args: ['-c', script], env: {}, cpuMillis: 100, memoryBytes: 64 * MiB }
}

/** Touches a file once the command itself runs, then sleeps. */
/** Paths relative to the working dir, the alloc dir: the default task user cannot reach it through the node's tasks dir. */
const SLEEPER = ': > ready; exec sleep 1000'

function stat (pid: number): { ppid: number, pgrp: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return { ppid: Number(fields[1]), pgrp: Number(fields[2]) }
  } catch {
    return null
  }
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')
  } catch {
    return false
  }
}

async function spawnerPid (executor: Executor): Promise<number> {
  return (await waitUntil('the spawner to be ready', async () => executor.spawnerInfo().pid, (pid) => pid !== null, 20_000, 10))!
}

async function ended (executor: Executor, id: string): Promise<AttemptInfo> {
  return (await waitUntil(`task ${id} to end`, async () => executor.inspect(id), (info) => info?.phase === 'ended', 20_000, 20))!
}

async function ready (info: AttemptInfo): Promise<void> {
  await waitUntil(`task ${info.id} to run its command`, async () => existsSync(join(info.alloc!, 'ready')), (x) => x, 20_000, 20)
}

describe('starts through the spawner', () => {
  it('forks in the spawner, not in the node: the task is the spawner\'s child, in a process group of its own, and its exit code comes back', async () => {
    const { executor } = open()
    const spawner = await spawnerPid(executor)
    expect(stat(spawner)!.ppid).toBe(process.pid)

    const info = await executor.start(sh('child', SLEEPER))
    expect(info.phase).toBe('running')
    await ready(info)
    expect(stat(info.pid!)).toEqual({ ppid: spawner, pgrp: info.pid })
    await executor.stop('child', { graceMs: 2_000 })

    await executor.start(sh('coded', 'exit 7'))
    expect((await ended(executor, 'coded')).exit).toMatchObject({ reason: 'exited', code: 7 })
    const killed = await executor.start(sh('signalled', 'kill -SEGV $$'))
    expect((await ended(executor, killed.id)).exit).toMatchObject({ reason: 'signaled', signal: 'SIGSEGV' })
    expect(executor.spawnerInfo()).toMatchObject({ spawners: 1, spawned: 3, died: 0 })
  })

  it('when the spawner dies, its running task goes on and is watched by its pid; the next start gets a new spawner', async () => {
    const { executor } = open()
    const first = await spawnerPid(executor)
    const info = await executor.start(sh('survivor', ': > ready; while [ ! -e go ]; do sleep 0.05; done'))
    await ready(info)

    process.kill(first, 'SIGKILL')
    await waitUntil('the spawner to be gone', async () => executor.spawnerInfo().died, (n) => n === 1, 20_000, 10)
    expect(alive(info.pid!)).toBe(true)
    expect(executor.inspect('survivor')!.phase).toBe('running')

    // Its end is seen by the sampler, as for a task adopted after a restart: the exit code is unknown.
    const { writeFileSync } = await import('node:fs')
    writeFileSync(join(info.alloc!, 'go'), '')
    expect((await ended(executor, 'survivor')).exit).toMatchObject({ reason: 'lost', code: null })

    const next = await executor.start(sh('after', 'exit 3'))
    expect(next.phase).toBe('running')
    expect((await ended(executor, 'after')).exit).toMatchObject({ reason: 'exited', code: 3 })
    const second = await spawnerPid(executor)
    expect(second).not.toBe(first)
    expect(executor.spawnerInfo()).toMatchObject({ spawners: 2, died: 1 })
  })

  it('a start the spawner dies before answering fails as start-failed, and its command never runs', async () => {
    const { executor, dir } = open()
    const pid = await spawnerPid(executor)
    // Held where it cannot answer: the request waits in the channel.
    process.kill(pid, 'SIGSTOP')
    const marker = join(dir, 'tasks', '_alloc', 'orphan', 'ran')
    const starting = executor.start(sh('orphan', ': > ran; exec sleep 1000'))
    await new Promise((resolve) => setTimeout(resolve, 200))
    process.kill(pid, 'SIGKILL')
    const info = await starting
    expect(info).toMatchObject({ phase: 'ended', pid: null, exit: { reason: 'start-failed' } })
    expect(info.exit!.message).toMatch(/spawner process was killed by SIGKILL/)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(existsSync(marker)).toBe(false)
    expect(executor.committed().tasks).toBe(0)
  })

  it('close() lets the spawner go and leaves the tasks running, for the next life to adopt', async () => {
    const { executor, dir } = open()
    const pid = await spawnerPid(executor)
    const info = await executor.start(sh('kept', SLEEPER))
    await ready(info)
    await executor.close()
    await waitUntil('the spawner to exit', async () => alive(pid), (x) => !x, 20_000, 10)
    expect(alive(info.pid!)).toBe(true)
    // What the testnet does for a node that will not come back: its task and groups go.
    expect(await purgeTasks(join(dir, 'tasks'))).toBe(1)
    await waitUntil('the task to be gone', async () => alive(info.pid!), (x) => !x, 20_000, 10)
  })
})

describe('Spawner', () => {
  it('reports a failure to open the task\'s log files as a start failure, without running anything', async () => {
    const spawner = new Spawner(log)
    cleanups.push(async () => { await spawner.close() })
    const dir = tempDir()
    const marker = join(dir, 'ran')
    const exits: unknown[] = []
    const failed = spawner.spawn({ file: '/bin/sh', args: ['-c', `: > ${marker}`], env: {}, cwd: dir, stdout: join(dir, 'no', 'such', 'stdout.log'), stderr: join(dir, 'stderr.log'), procs: [] }, (exit) => { exits.push(exit) })
    await expect(failed).rejects.toThrow(/ENOENT/)
    const ok = await spawner.spawn({ file: '/bin/sh', args: ['-c', 'exit 5'], env: {}, cwd: dir, stdout: join(dir, 'stdout.log'), stderr: join(dir, 'stderr.log'), procs: [] }, (exit) => { exits.push(exit) })
    expect(ok.pid).toBeGreaterThan(0)
    await waitUntil('the exit', async () => exits.length, (n) => n === 1, 20_000, 10)
    expect(exits).toEqual([{ code: 5, signal: null }])
    expect(existsSync(marker)).toBe(false)
    expect(readdirSync(dir).sort()).toEqual(['stderr.log', 'stdout.log'])
  })
})
