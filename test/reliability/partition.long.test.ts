// Reliability: a 5-node cluster split 3/2 for 20 s while jobs are submitted on
// both sides, then healed (README.md, "Partitions"). During the split each side
// keeps running what it had and places its own new jobs; the majority re-places
// the minority's instances, the minority adopts none of the majority's; a
// `partition: both` service runs on both sides. After the heal the documents are
// equal, every instance runs exactly once (the older claim stays: what ran before
// the split still runs), and nothing acknowledged on either side is lost.

import { describe, expect, it } from 'vitest'
import { type Ack, resultRow, SCENARIO_MS, useCluster } from './harness.ts'

const MAJORITY = [0, 1, 2]
const MINORITY = [3, 4]
const SPLIT_MS = 20_000
/** One or two instances of each service per node: the minority side surely holds some. */
const SPREAD = [{ label: 'testnet.index', maxSkew: 1 }]

const t = useCluster('partition', 5)

type Where = Map<string, Array<{ pid: number, node: number }>>
const on = (where: Where, id: string, side: number[]): number => (where.get(id) ?? []).filter((p) => side.includes(p.node)).length
const instances = (ack: Ack): string[] => Array.from({ length: ack.count }, (_, k) => `${ack.id}.${k}`)

describe('reliability', () => {
  it('a 3/2 partition for 20 s with jobs submitted on both sides, then the heal', async ({ task }) => {
    const row = resultRow(task, 'partition 3/2 for 20 s, jobs on both sides')
    const { cluster } = t
    const { net } = cluster
    const svc = await cluster.submit(0, { name: 'svc', type: 'service', count: 10, spread: SPREAD })
    const both = await cluster.submit(1, { name: 'both', type: 'service', count: 5, spread: SPREAD, partition: 'both' })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])
    await cluster.pastNewcomerGrace()
    const before = { svc: cluster.where(svc), both: cluster.where(both) }
    const originals = [...before.svc.values(), ...before.both.values()].flat()
    expect(originals.filter((p) => MINORITY.includes(p.node)).length, 'the minority side holds instances').toBeGreaterThan(0)

    const { problems, healAt } = await cluster.split(row, [MAJORITY, MINORITY], SPLIT_MS, async () => {
      // New jobs on both sides, acknowledged while they cannot hear each other.
      const majSvc = await cluster.submit(0, { name: 'maj-svc', type: 'service', count: 3 })
      const majBatch = await cluster.submit(1, { name: 'maj-batch', type: 'batch', count: 2 })
      const minSvc = await cluster.submit(3, { name: 'min-svc', type: 'service', count: 2 })
      const minBatch = await cluster.submit(4, { name: 'min-batch', type: 'batch', count: 2 })
      return async () => {
        const problems = cluster.stopped(originals).map((p) => `${p}, running before the split, stopped`)
        const now = { svc: cluster.where(svc), both: cluster.where(both), majSvc: cluster.where(majSvc), minSvc: cluster.where(minSvc) }
        for (const id of instances(svc)) {
          const home = before.svc.get(id)![0]!.node
          // The majority runs every instance (re-placing the minority's); the minority only its own.
          if (on(now.svc, id, MAJORITY) !== 1) problems.push(`${id} runs ${on(now.svc, id, MAJORITY)}× on the majority side`)
          if (on(now.svc, id, MINORITY) !== (MINORITY.includes(home) ? 1 : 0)) problems.push(`${id} (of node ${home}) runs ${on(now.svc, id, MINORITY)}× on the minority side`)
        }
        for (const id of instances(both)) {
          if (on(now.both, id, MAJORITY) !== 1 || on(now.both, id, MINORITY) !== 1) problems.push(`${id} (partition: both) runs ${on(now.both, id, MAJORITY)}× / ${on(now.both, id, MINORITY)}× on the two sides`)
        }
        for (const id of instances(majSvc)) if (on(now.majSvc, id, MAJORITY) !== 1 || on(now.majSvc, id, MINORITY) !== 0) problems.push(`${id}, new on the majority, runs ${on(now.majSvc, id, MAJORITY)}× / ${on(now.majSvc, id, MINORITY)}×`)
        for (const id of instances(minSvc)) if (on(now.minSvc, id, MINORITY) !== 1 || on(now.minSvc, id, MAJORITY) !== 0) problems.push(`${id}, new on the minority, runs ${on(now.minSvc, id, MINORITY)}× / ${on(now.minSvc, id, MAJORITY)}×`)
        const [maj, min] = await Promise.all([net.client(0).job(majBatch.id), net.client(3).job(minBatch.id)])
        if (maj.status !== 'completed') problems.push(`the majority's new batch is ${maj.status}`)
        if (min.status !== 'completed') problems.push(`the minority's new batch is ${min.status}`)
        return [...problems, ...await cluster.majorityProblems((i) => MAJORITY.includes(i))]
      }
    })
    // Soft: the heal and what follows are measured and checked too.
    expect.soft(problems, 'during the split').toEqual([])

    await cluster.finish(row, healAt, { timeoutMs: 90_000 })
    // The older claim stays: what ran before the split still runs, where it ran.
    expect(cluster.stopped(originals), 'processes from before the split that stopped').toEqual([])
  }, SCENARIO_MS)
})
