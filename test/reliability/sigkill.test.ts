// Reliability: SIGKILL a node that runs 20 service instances. The survivors run
// all 20 again, each once; when the node comes back, it adopts or stops what its
// previous life left running, and every instance still runs exactly once.

import { describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { resultRow, SCENARIO_MS, useCluster } from './harness.ts'

const VICTIM = 2
const POOL = { label: 'rel.pool', op: 'eq', value: 'a' } as const

const t = useCluster('sigkill', 5)

describe('reliability', () => {
  it('SIGKILL of a node running 20 service instances', async ({ task }) => {
    const row = resultRow(task, 'SIGKILL a node running 20 services')
    const { cluster } = t
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
    const held = (await net.client(VICTIM).nodeTasks()).tasks.filter((task) => task.phase !== 'ended')
    expect(held.map((task) => task.job).sort()).toEqual([...Array(8).fill(api.id), ...Array(12).fill(web.id)].sort())

    // Now every node may run them: the instances stay where they are (no claim moves while its holder lives).
    await Promise.all(cluster.except(VICTIM).map(async (i) => await net.client(i).updateLabels({ 'rel.pool': 'a' }, [])))
    await waitUntil('every node to see every pool label', async () => await Promise.all(cluster.all().map(async (i) => (await net.client(i).stateNodes()).nodes.filter((n) => n.labels['rel.pool'] === 'a').length)),
      (counts) => counts.every((c) => c === 5))

    await cluster.pastNewcomerGrace()
    const back = cluster.faults.open('SIGKILL', [VICTIM])
    const killedAt = Date.now()
    await testnet.kill(cluster.dir, VICTIM)
    const failover = await cluster.finish(row, killedAt, { live: cluster.except(VICTIM) })
    expect(failover.orphans, 'the killed node\'s processes run on (a crash leaves them)').toBe(20)

    // The node comes back: what its previous life left is adopted or stopped.
    const restartedAt = Date.now()
    await cluster.restart(VICTIM)
    back()
    await cluster.finish(row, restartedAt, { recover: false, note: 'victim restarted' })
  }, SCENARIO_MS)
})
