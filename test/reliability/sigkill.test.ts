// Reliability: SIGKILL a node that runs 20 service instances. The survivors run
// all 20 again, each once; when the node comes back, it adopts or stops what its
// previous life left running, and every instance still runs exactly once.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { Cluster, describeDeaths, resultRow } from './harness.ts'

const VICTIM = 2
const POOL = { label: 'rel.pool', op: 'eq', value: 'a' } as const

let cluster: Cluster
let started = 0

beforeAll(async () => {
  cluster = await Cluster.start('sigkill', 5)
  started = Date.now()
}, 120_000)
afterAll(async () => { await cluster?.stop() }, 60_000)

describe('reliability', () => {
  it('SIGKILL of a node running 20 service instances', async ({ task }) => {
    const row = resultRow(task, 'SIGKILL a node running 20 services')
    const { net } = cluster
    // Only the victim has the pool label at first, so it takes all 20; a background service stays off it.
    await net.client(VICTIM).updateLabels({ 'rel.pool': 'a' }, [])
    await waitUntil('every node to see the victim\'s label', async () => await Promise.all(cluster.all().map(async (i) => (await net.client(i).stateNodes()).nodes.find((n) => n.id === net.peer(VICTIM))?.labels['rel.pool'])),
      (labels) => labels.every((l) => l === 'a'))
    const web = await cluster.submit(0, { name: 'web', type: 'service', count: 12, constraints: [POOL] })
    const api = await cluster.submit(3, { name: 'api', type: 'service', count: 8, constraints: [POOL] })
    await cluster.submit(4, { name: 'bg', type: 'service', count: 4, constraints: [{ label: 'testnet.index', op: 'ne', value: String(VICTIM) }] })
    const before = await cluster.waitClean(cluster.all(), Date.now(), 60_000)
    expect(before.census.problems, 'the services run, each once, before the kill').toEqual([])
    const held = (await net.client(VICTIM).nodeTasks()).tasks.filter((t) => t.phase !== 'ended')
    expect(held.map((t) => t.job).sort()).toEqual([...Array(8).fill(api.id), ...Array(12).fill(web.id)].sort())

    // Now every node may run them: the instances stay where they are (no claim moves while its holder lives).
    await Promise.all(cluster.except(VICTIM).map(async (i) => await net.client(i).updateLabels({ 'rel.pool': 'a' }, [])))
    await waitUntil('every node to see every pool label', async () => await Promise.all(cluster.all().map(async (i) => (await net.client(i).stateNodes()).nodes.filter((n) => n.labels['rel.pool'] === 'a').length)),
      (counts) => counts.every((c) => c === 5))

    await cluster.pastNewcomerGrace()
    const back = cluster.faults.open('SIGKILL', [VICTIM])
    const killedAt = Date.now()
    await testnet.kill(cluster.dir, VICTIM)
    const survivors = cluster.except(VICTIM)
    const failover = await cluster.waitClean(survivors, killedAt, 60_000)
    row.recoverMs = failover.ms
    expect(failover.census.problems, 'the survivors run every instance, each once').toEqual([])
    expect(failover.census.orphans, 'the killed node\'s processes run on (a crash leaves them)').toBe(20)

    // The node comes back: what its previous life left is adopted or stopped.
    const restartedAt = Date.now()
    await cluster.restart(VICTIM)
    back()
    const end = await cluster.waitClean(cluster.all(), restartedAt, 60_000)
    row.notes.push(`victim restarted → clean in ${end.ms === null ? 'never' : `${(end.ms / 1000).toFixed(1)} s`}`)
    const falseDeaths = cluster.score(row, end.census)
    expect(end.census.problems, 'after the restart every instance runs once').toEqual([])
    expect(end.census.orphans).toBe(0)
    expect(end.census.lost).toEqual([])
    expect(end.census.duplicates).toEqual([])
    expect(falseDeaths, describeDeaths(falseDeaths, started)).toEqual([])
  })
})
