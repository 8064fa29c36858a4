// Reliability: SIGKILL every node at once, right after the API acknowledged a
// burst of jobs, then start them all again. Every acknowledged job comes back
// (it was on its submitter's disk), runs, and runs once; the processes the nodes
// left running are adopted or stopped.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { type Ack, Cluster, describeDeaths, resultRow } from './harness.ts'

let cluster: Cluster
let started = 0

beforeAll(async () => {
  cluster = await Cluster.start('kill-all', 5)
  started = Date.now()
}, 120_000)
afterAll(async () => { await cluster?.stop() }, 60_000)

describe('reliability', () => {
  it('SIGKILL of every node at once, then all started again', async ({ task }) => {
    const row = resultRow(task, 'SIGKILL every node, start them again')
    await cluster.submit(0, { name: 'steady-a', type: 'service', count: 4 })
    await cluster.submit(1, { name: 'steady-b', type: 'service', count: 3 })
    await cluster.submit(2, { name: 'done', type: 'batch', count: 2 })
    const before = await cluster.waitClean(cluster.all(), Date.now(), 60_000)
    expect(before.census.problems, 'the cluster is clean before the crash').toEqual([])
    await cluster.pastNewcomerGrace()

    // A burst through every node; the moment the last one is acknowledged, every node dies.
    const burst: Ack[] = await Promise.all(Array.from({ length: 10 }, async (_, k) => await cluster.submit(k % 5, k % 2 === 0
      ? { name: `late-svc-${k}`, type: 'service', count: 2 }
      : { name: `late-batch-${k}`, type: 'batch', count: 2, script: 'sleep 1' })))
    const crash = cluster.faults.open('SIGKILL of every node', cluster.all())
    await Promise.all(cluster.all().map(async (i) => { await testnet.kill(cluster.dir, i) }))

    // One after another (the testnet restarts one node at a time): the first joins
    // nobody, the rest join through those already up. Recovery counts from the last one up.
    const restarting = Date.now()
    for (const i of cluster.all()) await cluster.restart(i)
    crash()
    const allUp = Date.now()
    const end = await cluster.waitClean(cluster.all(), allUp, 90_000)
    row.recoverMs = end.ms
    row.notes.push(`${burst.length} jobs acknowledged just before the crash; the 5 restarts took ${((allUp - restarting) / 1000).toFixed(1)} s`)
    const falseDeaths = cluster.score(row, end.census)
    expect(end.census.problems, 'every acknowledged job runs again, each instance once').toEqual([])
    expect(end.census.lost).toEqual([])
    expect(end.census.duplicates).toEqual([])
    expect(end.census.orphans).toBe(0)
    expect(falseDeaths, describeDeaths(falseDeaths, started)).toEqual([])
  })
})
