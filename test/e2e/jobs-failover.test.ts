// Jobs when nodes go away, on a real 5-node testnet: a service returns to its
// count after SIGKILL of a node that held an instance (and stays at it once that
// node comes back), and a job stopped while nodes were away (one SIGSTOPped,
// one SIGKILLed) does not come back when they return.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobView, ClaimRecord } from '../../cli/client.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { byInstance, isLive, marker, markedPids, Net, settled, sh } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 5
const MARK = marker('failover')
const marks: string[] = []
const mark = (tag: string): string => { const m = `${MARK}-${tag}`; marks.push(m); return m }
const SMALL = { cpu: '10m', memory: '16M' } as const
const LOOP = 'while :; do sleep 1; done'

let dir = ''
let net: Net

beforeAll(async () => {
  const started = await startTestnet('jobs-failover', N)
  dir = started.dir
  net = new Net(started.state.nodes)
}, 90_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

const peers = (indexes: number[]): Set<string> => new Set(indexes.map((i) => net.peer(i)))
const others = (...away: number[]): number[] => net.nodes.map((n) => n.index).filter((i) => !away.includes(i))

/** The job and its claims as node `i` sees them, once `done` holds. */
async function waitJob (i: number, job: string, what: string, done: (view: JobView, claims: ClaimRecord[]) => boolean, timeoutMs = 30_000): Promise<{ view: JobView, claims: ClaimRecord[] }> {
  return await waitUntil(`${what} (node ${i})`, async () => {
    const view = await net.client(i).job(job)
    return { view, claims: await net.claims(i, job) }
  }, ({ view, claims }) => done(view, claims), timeoutMs, 100)
}

/** Node `i` sees each member of `indexes` alive. */
async function waitAlive (i: number, indexes: number[]): Promise<void> {
  const wanted = peers(indexes)
  await waitUntil(`node ${i} to see ${indexes.join(', ')} alive`, async () => (await net.client(i).members()).members,
    (members) => members.filter((m) => wanted.has(m.id) && m.state === 'alive').length === wanted.size)
}

describe('jobs when nodes go away, on a 5-node testnet', () => {
  it('a service with count 3 returns to 3 running after SIGKILL of a node that held one', async () => {
    const m = mark('failover')
    const submitted = await net.client(0).submitJob({ name: 'web', type: 'service', ...sh(LOOP, m), count: 3, ...SMALL, grace: '1s' })
    const everyone = peers(others())
    const { view } = await waitJob(0, submitted.id, 'the service to run 3 instances, each held once', (v, c) => settled(v, c, everyone, 3))
    // The victim holds an instance; the observer is a node that stays.
    const victim = net.index(view.instances.find((i) => net.index(i.node) !== 0)?.node ?? view.instances[0]!.node)
    const observer = victim === 0 ? 1 : 0
    const lost = view.instances.filter((i) => i.node === net.peer(victim))
    expect(lost.length).toBeGreaterThan(0)

    await testnet.kill(dir, victim)
    const live = peers(others(victim))
    const after = await waitJob(observer, submitted.id, `the service back at 3 without node ${victim}`, (v, c) => settled(v, c, live, 3))
    for (const was of lost) {
      const now = after.view.instances.find((i) => i.id === was.id)!
      expect(now.node).not.toBe(net.peer(victim))
      const holder = after.claims.find((c) => c.id === was.id && c.node === now.node)!
      const old = after.claims.find((c) => c.id === was.id && c.node === net.peer(victim))!
      expect(holder.generation, `${was.id} is held with a generation above the dead node's`).toBeGreaterThan(old.generation)
    }
    // Every live node agrees, and none holds an instance twice.
    for (const i of others(victim)) {
      const seen = await waitJob(i, submitted.id, 'the service settled', (v, c) => settled(v, c, live, 3))
      const grouped = byInstance(seen.claims)
      for (const [id, claims] of grouped) {
        expect(claims.filter((c) => isLive(c) && live.has(c.node)).map((c) => c.node), id).toHaveLength(1)
      }
      expect(seen.view.status).toBe('running')
    }

    // The node comes back: the service settles at 3 again, each instance held once, whoever holds it.
    net.nodes[victim] = await testnet.restart(dir, victim)
    for (const i of others()) await waitAlive(i, others())
    await waitJob(victim, submitted.id, 'the service settled after the restart', (v, c) => settled(v, c, everyone, 3))
    await waitJob(observer, submitted.id, 'the service settled after the restart', (v, c) => settled(v, c, everyone, 3))
    await waitUntil('3 task processes', async () => markedPids(m), (p) => p.length === 3, 20_000)

    await net.client(observer).stopJob(submitted.id)
    await waitUntil('the service\'s processes to end', async () => markedPids(m), (p) => p.length === 0, 20_000)
  }, 120_000)

  it('a job stopped while one node is paused and another is killed does not come back when they return', async () => {
    const m = mark('away')
    // One instance on each node, so that the paused and the killed node each hold one.
    const submitted = await net.client(0).submitJob({ name: 'away', type: 'service', ...sh(LOOP, m), count: N, perNodeMax: 1, ...SMALL, grace: '1s' })
    const everyone = peers(others())
    const { view } = await waitJob(0, submitted.id, 'the service to run 5 instances, one on each node', (v, c) => settled(v, c, everyone, N))
    expect(new Set(view.instances.map((i) => i.node)), `one instance on each node (perNodeMax 1): ${view.instances.map((i) => `${i.id}@${net.index(i.node)}`).join(' ')}`).toEqual(everyone)
    await waitUntil('5 task processes', async () => markedPids(m), (p) => p.length === N, 20_000)
    const paused = 3
    const killed = 4
    const pausedPids = (await net.client(paused).nodeTasks()).tasks.filter((t) => t.job === submitted.id && t.phase !== 'ended').map((t) => t.pid!)
    const killedPids = (await net.client(killed).nodeTasks()).tasks.filter((t) => t.job === submitted.id && t.phase !== 'ended').map((t) => t.pid!)
    expect(pausedPids).toHaveLength(1)
    expect(killedPids).toHaveLength(1)

    await testnet.pause(dir, paused)
    await testnet.kill(dir, killed)
    try {
      const stopped = await net.client(1).stopJob(submitted.id)
      expect(stopped.desired).toBe('stopped')
      // The nodes that stayed stop their instances at once.
      for (const i of others(paused, killed)) {
        await waitJob(i, submitted.id, 'the instances of the nodes that stayed to end', (_v, claims) =>
          claims.filter((c) => isLive(c) && c.node === net.peer(i)).length === 0)
      }
      // The processes of the away nodes still run: nothing could stop them yet.
      expect([...pausedPids, ...killedPids].filter((pid) => markedPids(m).includes(pid))).toHaveLength(2)
    } finally {
      await testnet.resume(dir, paused)
    }
    net.nodes[killed] = await testnet.restart(dir, killed)
    for (const i of others()) await waitAlive(i, others())

    // Both stop what they ran, and record it.
    for (const i of others()) {
      await waitJob(i, submitted.id, 'the job stopped everywhere, no claim live', (v, claims) => v.status === 'stopped' && claims.filter(isLive).length === 0)
    }
    await waitUntil('every process of the job to end', async () => markedPids(m), (p) => p.length === 0, 20_000)

    // And for several seconds nothing of the job runs again, on any node.
    const baseline = new Map<string, number>()
    for (const c of await net.claims(0, submitted.id)) baseline.set(`${c.id} ${c.node}`, c.generation)
    const deadline = Date.now() + 5_000
    while (Date.now() < deadline) {
      expect(markedPids(m), 'a process of the stopped job runs again').toEqual([])
      for (const i of others()) {
        const claims = await net.claims(i, submitted.id)
        expect(claims.filter(isLive).map((c) => `${c.id} on node ${net.index(c.node)}: ${c.state}`), `node ${i} sees a live claim of the stopped job`).toEqual([])
        for (const c of claims) expect(c.generation, `${c.id} on node ${net.index(c.node)} was claimed again`).toBe(baseline.get(`${c.id} ${c.node}`))
        expect((await net.client(i).nodeTasks()).tasks.filter((t) => t.job === submitted.id && t.phase !== 'ended')).toEqual([])
      }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    // The restarted node stopped its previous life's process; the paused one stopped its own.
    const restartedLog = (await net.client(killed).nodeTasks()).tasks.filter((t) => t.job === submitted.id)
    expect(restartedLog.every((t) => t.phase === 'ended')).toBe(true)
    expect([...pausedPids, ...killedPids].filter((pid) => markedPids(m).includes(pid))).toEqual([])
  }, 120_000)

  it('the testnet stops with no task process left', async () => {
    await stopTestnet(dir)
    dir = ''
    await waitUntil('every task process to end', async () => marks.flatMap(markedPids), (p) => p.length === 0, 15_000)
  })
})
