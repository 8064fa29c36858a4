// Reliability: a 5-node cluster split 3/2 for 20 s while jobs are submitted on
// both sides, then healed (DESIGN.md, "Partitions"). During the split each side
// keeps running what it had and places its own new jobs; the majority re-places
// the minority's instances, the minority adopts none of the majority's; a
// `partition: both` service runs on both sides. After the heal the documents are
// equal, every instance runs exactly once (the older claim stays: what ran before
// the split still runs), and nothing acknowledged on either side is lost.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { type Ack, Cluster, describeDeaths, markedTasks, resultRow, sleep } from './harness.ts'

const MAJORITY = [0, 1, 2]
const MINORITY = [3, 4]
const SPLIT_MS = 20_000
/** One instance of each service per node, or two: the minority side surely holds some. */
const SPREAD = [{ label: 'testnet.index', maxSkew: 1 }]

let cluster: Cluster
let started = 0

beforeAll(async () => {
  cluster = await Cluster.start('partition', 5)
  started = Date.now()
}, 120_000)
afterAll(async () => {
  await testnet.heal(cluster.dir).catch(() => {})
  await cluster?.stop()
}, 60_000)

type Where = Map<string, Array<{ pid: number, node: number }>>
const on = (where: Where, id: string, side: number[]): number => (where.get(id) ?? []).filter((p) => side.includes(p.node)).length
const instances = (ack: Ack): string[] => Array.from({ length: ack.count }, (_, k) => `${ack.id}.${k}`)

describe('reliability', () => {
  it('a 3/2 partition for 20 s with jobs submitted on both sides, then the heal', async ({ task }) => {
    const row = resultRow(task, 'partition 3/2 for 20 s, jobs on both sides')
    const { net } = cluster
    const svc = await cluster.submit(0, { name: 'svc', type: 'service', count: 10, spread: SPREAD })
    const both = await cluster.submit(1, { name: 'both', type: 'service', count: 5, spread: SPREAD, partition: 'both' })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])
    await cluster.pastNewcomerGrace()
    const before = { svc: cluster.where(svc), both: cluster.where(both) }
    const originals = [...before.svc.values(), ...before.both.values()].flat()
    expect(originals.filter((p) => MINORITY.includes(p.node)).length, 'the minority side holds instances').toBeGreaterThan(0)

    const splitAt = Date.now()
    const split = cluster.faults.partition('partition 3/2', [MAJORITY, MINORITY])
    await testnet.partition(cluster.dir, [MAJORITY, MINORITY])
    let healAt = 0
    let sides: { problems: string[], at: number } | undefined
    try {
      // New jobs on both sides, acknowledged while they cannot hear each other.
      const fresh = {
        majSvc: await cluster.submit(0, { name: 'maj-svc', type: 'service', count: 3 }),
        majBatch: await cluster.submit(1, { name: 'maj-batch', type: 'batch', count: 2 }),
        minSvc: await cluster.submit(3, { name: 'min-svc', type: 'service', count: 2 }),
        minBatch: await cluster.submit(4, { name: 'min-batch', type: 'batch', count: 2 }),
      }

      /** What should hold during the split; the list of what does not. */
      async function checkSides (): Promise<{ problems: string[], at: number }> {
        const problems: string[] = []
        const running = new Set(cluster.marks.flatMap((m) => markedTasks(m).map((p) => p.pid)))
        for (const p of originals) if (!running.has(p.pid)) problems.push(`pid ${p.pid} on node ${p.node}, running before the split, stopped`)
        const now = { svc: cluster.where(svc), both: cluster.where(both), majSvc: cluster.where(fresh.majSvc), minSvc: cluster.where(fresh.minSvc) }
        for (const id of instances(svc)) {
          const home = before.svc.get(id)![0]!.node
          // The majority runs every instance (re-placing the minority's); the minority only its own.
          if (on(now.svc, id, MAJORITY) !== 1) problems.push(`${id} runs ${on(now.svc, id, MAJORITY)}× on the majority side`)
          if (on(now.svc, id, MINORITY) !== (MINORITY.includes(home) ? 1 : 0)) problems.push(`${id} (of node ${home}) runs ${on(now.svc, id, MINORITY)}× on the minority side`)
        }
        for (const id of instances(both)) {
          if (on(now.both, id, MAJORITY) !== 1 || on(now.both, id, MINORITY) !== 1) problems.push(`${id} (partition: both) runs ${on(now.both, id, MAJORITY)}× / ${on(now.both, id, MINORITY)}× on the two sides`)
        }
        for (const id of instances(fresh.majSvc)) if (on(now.majSvc, id, MAJORITY) !== 1 || on(now.majSvc, id, MINORITY) !== 0) problems.push(`${id}, new on the majority, runs ${on(now.majSvc, id, MAJORITY)}× / ${on(now.majSvc, id, MINORITY)}×`)
        for (const id of instances(fresh.minSvc)) if (on(now.minSvc, id, MINORITY) !== 1 || on(now.minSvc, id, MAJORITY) !== 0) problems.push(`${id}, new on the minority, runs ${on(now.minSvc, id, MINORITY)}× / ${on(now.minSvc, id, MAJORITY)}×`)
        const majBatch = await net.client(0).job(fresh.majBatch.id)
        const minBatch = await net.client(3).job(fresh.minBatch.id)
        if (majBatch.status !== 'completed') problems.push(`the majority's new batch is ${majBatch.status}`)
        if (minBatch.status !== 'completed') problems.push(`the minority's new batch is ${minBatch.status}`)
        const majority = await Promise.all(cluster.all().map(async (i) => (await net.client(i).node()).reconcile.majority))
        if (majority.some((m, i) => m !== MAJORITY.includes(i))) problems.push(`the nodes' majority flags are ${majority.join(', ')}`)
        return { problems, at: Date.now() }
      }

      sides = await waitUntil('each side to do its part', checkSides, (r) => r.problems.length === 0, SPLIT_MS - 2_000, 250).catch(async () => await checkSides())
      row.notes.push(`split → each side done ${sides.problems.length === 0 ? `in ${((sides.at - splitAt) / 1000).toFixed(1)} s` : 'never'}`)
      // Stays so until the heal.
      while (Date.now() < splitAt + SPLIT_MS) {
        if (sides.problems.length === 0) sides = await checkSides()
        await sleep(500)
      }
    } finally {
      healAt = Date.now()
      await testnet.heal(cluster.dir)
      split()
    }
    expect(sides!.problems, 'during the split').toEqual([])

    const end = await cluster.waitClean(cluster.all(), healAt, 90_000)
    row.recoverMs = end.ms
    const falseDeaths = cluster.score(row, end.census)
    expect(end.census.problems, 'after the heal: equal documents, every instance once, nothing lost').toEqual([])
    expect(end.census.lost).toEqual([])
    expect(end.census.duplicates).toEqual([])
    // The older claim stays: what ran before the split still runs, where it ran.
    const running = new Set(cluster.marks.flatMap((m) => markedTasks(m).map((p) => p.pid)))
    expect(originals.filter((p) => !running.has(p.pid)).map((p) => `pid ${p.pid} on node ${p.node}`), 'processes from before the split that stopped').toEqual([])
    expect(falseDeaths, describeDeaths(falseDeaths, started)).toEqual([])
  })
})
