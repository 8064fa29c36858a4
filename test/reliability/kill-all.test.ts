// Reliability: SIGKILL every node at once, right after the API acknowledged a
// burst of jobs, then start them all again. Every acknowledged job comes back
// (it was on its submitter's disk), runs, and runs once; the processes the nodes
// left running are adopted or stopped.

import { describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { type Ack, resultRow, SCENARIO_MS, useCluster } from './harness.ts'

const t = useCluster('kill-all', 5)

describe('reliability', () => {
  it('SIGKILL of every node at once, then all started again', async ({ task }) => {
    const row = resultRow(task, 'SIGKILL every node, start them again')
    const { cluster } = t
    await cluster.submit(0, { name: 'steady-a', type: 'service', count: 4 })
    await cluster.submit(1, { name: 'steady-b', type: 'service', count: 3 })
    await cluster.submit(2, { name: 'done', type: 'batch', count: 2 })
    const before = await cluster.waitClean(cluster.all(), Date.now(), 60_000)
    expect(before.census.problems, 'the cluster is clean before the crash').toEqual([])

    // A burst through every node; the moment the last one is acknowledged, every node dies.
    const burst: Ack[] = await Promise.all(Array.from({ length: 10 }, async (_, k) => await cluster.submit(k % 5, k % 2 === 0
      ? { name: `late-svc-${k}`, type: 'service', count: 2 }
      : { name: `late-batch-${k}`, type: 'batch', count: 2, script: 'sleep 1' })))
    cluster.step('burst acknowledged')
    const crash = cluster.faults.open('SIGKILL of every node', cluster.all())
    await Promise.all(cluster.all().map(async (i) => { await testnet.kill(cluster.dir, i) }))

    // One after another (the testnet restarts one node at a time): the first joins
    // nobody, the rest join through those already up. Recovery counts from the last one up.
    const restarting = Date.now()
    cluster.step('all killed')
    for (const i of cluster.all()) await cluster.restart(i)
    crash()
    cluster.step('all restarted')
    const allUp = Date.now()
    row.notes.push(`${burst.length} jobs acknowledged just before the crash; the 5 restarts took ${((allUp - restarting) / 1000).toFixed(1)} s`)
    const end = await cluster.finish(row, allUp, { timeoutMs: 90_000 })
    expect(end.orphans).toBe(0)
  }, SCENARIO_MS)
})
