// The executor inside real node processes: the node says how it isolates tasks,
// judges on restart what a previous life left running (the cluster state assigns
// nothing here, so it is all stopped), and `testnet down` ends the tasks of a
// node that died.

import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Client, connect } from '../../cli/client.ts'
import type { AttemptSpec } from '../../node/executor/types.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { murmur } from '../helpers/cli.ts'
import { adminKey, signedFetch } from '../helpers/signed.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const CHILD_PATH = fileURLToPath(new URL('../helpers/executor-child.ts', import.meta.url))

let dir = ''
let net: { nodes: TestnetNode[] }
const children: ChildProcess[] = []

beforeAll(async () => { ({ dir, state: net } = await startTestnet('executor', 2)) }, 60_000)
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  await stopTestnet(dir)
}, 60_000)

const client = (i: number): Client => connect(net.nodes[i]!.apiUrl)

function spec (id: string): AttemptSpec {
  // A parent and a child that ignores SIGTERM: both must go.
  return { id, job: 'leftover', command: 'sh', args: ['-c', '(trap "" TERM; exec sleep 600) & exec sleep 600'], env: {}, cpuMillis: 100, memoryBytes: 64 * 1024 ** 2 }
}

/** Starts tasks as a previous life of node `i` would have, in its tasks dir under its peer id, then SIGKILLs that life. */
async function leaveTasksBehind (i: number, ids: string[]): Promise<number[]> {
  const node = net.nodes[i]!
  const child = spawn(process.execPath, [CHILD_PATH, join(node.dataDir, 'tasks'), node.peerId!, JSON.stringify(ids.map(spec))], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) resolve(out.split('\n')[0]!)
    })
    child.once('exit', (code) => { reject(new Error(`executor child exited with ${code}: ${out}`)) })
  })
  expect(line).toMatch(/^running /)
  const pids = (JSON.parse(line.slice('running '.length)) as { tasks: Array<{ pid: number }> }).tasks.map((t) => t.pid)
  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('exit', resolve))
  for (const pid of pids) expect(alive(pid)).toBe(true)
  return pids
}

/** A pid runs (a zombie no longer counts: PID 1 here may be slow to reap). */
function alive (pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

function descendants (pid: number): number[] {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((s) => s !== '').map(Number)
    return kids.flatMap((kid) => [kid, ...descendants(kid)])
  } catch {
    return []
  }
}

describe('the executor in a node', () => {
  it('says how it isolates tasks, in the node info and in murmur members', async () => {
    const info = await client(0).node()
    expect(['cgroup-v2', 'cgroup-v1', 'none']).toContain(info.isolation.kind)
    expect(info.isolation.detail.length).toBeGreaterThan(0)
    expect(info.tasks).toEqual({ cpuMillis: 0, memoryBytes: 0, tasks: 0 })
    const members = await client(1).members()
    for (const m of members.members) expect(m.meta.isolation).toBe(info.isolation.kind)
    const table = await murmur(['members', '--api', net.nodes[0]!.apiUrl])
    expect(table.code).toBe(0)
    expect(table.stdout).toContain('ISOLATION')
    expect(table.stdout).toContain(info.isolation.kind === 'none' ? 'NONE' : info.isolation.kind)
    if (info.isolation.kind === 'none') expect(table.stdout).toMatch(/warning: 2 nodes run tasks without isolation/)
    else expect(table.stdout).not.toMatch(/without isolation/)
  })

  it('a restarted node stops what its previous life ran that the cluster does not assign to it', async () => {
    await testnet.stop(dir, 1)
    const pids = await leaveTasksBehind(1, ['left-1', 'left-2'])
    // Each task's shell forks its child when it gets to run, which on a busy machine is after 'running'.
    const all = await waitUntil('each task and its child', async () => pids.flatMap((pid) => [pid, ...descendants(pid)]), (found) => found.length === 4, 10_000)
    net = (await testnet.status(dir))! as unknown as { nodes: TestnetNode[] }
    const restarted = await testnet.restart(dir, 1)
    net.nodes[1] = restarted
    const { tasks } = await waitUntil('the leftovers stopped', async () => await client(1).nodeTasks(),
      (r) => r.tasks.length === 2 && r.tasks.every((t) => t.phase === 'ended'))
    for (const task of tasks) {
      expect(task.adopted).toBe(true)
      expect(task.exit?.reason).toBe('killed')
      expect(task.exit?.message).toMatch(/stopped on request/)
    }
    await waitUntil('every leftover process gone', async () => all.filter(alive), (left) => left.length === 0, 15_000)
    const info = await client(1).node()
    if (info.isolation.kind !== 'none') {
      const root = info.isolation.detail.replace(/^.* at /, '')
      for (const id of ['left-1', 'left-2']) expect(existsSync(join(root, id))).toBe(false)
    }
    // Their logs, through the API: a range, a follow that ends with the task, and bad queries refused.
    const range = await client(1).taskLogs('left-1', { stream: 'stdout', offset: 0 })
    expect(range).toMatchObject({ start: 0, end: 0, first: 0, last: 0 })
    const follow = await signedFetch(adminKey(dir), `${net.nodes[1]!.apiUrl}/v1/node/tasks/left-1/logs?follow=1`, { signal: AbortSignal.timeout(10_000) })
    expect(follow.status).toBe(200)
    expect((await follow.arrayBuffer()).byteLength).toBe(0)
    for (const [query, status, message] of [
      ['stream=stdin', 400, /stream/],
      ['offset=1&tail=5', 400, /offset or tail, not both/],
      ['offset=-1', 400, /offset/],
    ] as const) {
      const response = await signedFetch(adminKey(dir), `${net.nodes[1]!.apiUrl}/v1/node/tasks/left-1/logs?${query}`)
      expect(response.status).toBe(status)
      expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(message)
    }
    await expect(client(1).taskLogs('no-such-task')).rejects.toMatchObject({ code: 'NO_SUCH_TASK', status: 404 })
    const log = readFileSync(restarted.logFile, 'utf8')
    expect(log).toMatch(/previous life: 0 tasks adopted, 2 stopped/)
  }, 60_000)

  it('testnet down ends the tasks of a node that died, and removes its cgroups', async () => {
    await testnet.kill(dir, 0)
    const pids = await leaveTasksBehind(0, ['orphan-1'])
    const all = pids.flatMap((pid) => [pid, ...descendants(pid)])
    const root = (JSON.parse(readFileSync(join(net.nodes[0]!.dataDir, 'tasks', 'cgroups.json'), 'utf8')) as { dirs: Record<string, string> } | null)?.dirs ?? {}
    await stopTestnet(dir)
    dir = ''
    await waitUntil('the orphan gone', async () => all.filter(alive), (left) => left.length === 0, 15_000)
    for (const d of Object.values(root)) expect(existsSync(d)).toBe(false)
  }, 60_000)
})
