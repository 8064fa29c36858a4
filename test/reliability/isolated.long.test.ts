// Reliability: one node of five cut off alone for 20 s. It keeps running its own
// instances and starts none of the others' (alone, it is a minority), though it
// still places a job submitted to it; the other four re-place its instances.
// After the heal there is one copy of each instance: the older claim, the lone
// node's, stays.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { type Ack, Cluster, describeDeaths, markedTasks, resultRow, sleep } from './harness.ts'

const LONE = 4
const REST = [0, 1, 2, 3]
const CUT_MS = 20_000

let cluster: Cluster
let started = 0

beforeAll(async () => {
  cluster = await Cluster.start('isolated', 5)
  started = Date.now()
}, 120_000)
afterAll(async () => {
  await testnet.heal(cluster.dir).catch(() => {})
  await cluster?.stop()
}, 60_000)

const instances = (ack: Ack): string[] => Array.from({ length: ack.count }, (_, k) => `${ack.id}.${k}`)

describe('reliability', () => {
  it('one node cut off alone for 20 s, then the heal', async ({ task }) => {
    const row = resultRow(task, 'one node cut off alone for 20 s')
    const { net } = cluster
    const svc = await cluster.submit(0, { name: 'svc', type: 'service', count: 10, spread: [{ label: 'testnet.index', maxSkew: 1 }] })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])
    await cluster.pastNewcomerGrace()
    const before = cluster.where(svc)
    const mine = instances(svc).filter((id) => before.get(id)![0]!.node === LONE)
    const originals = [...before.values()].flat()
    expect(mine.length, 'the lone node holds instances').toBeGreaterThan(0)

    const cutAt = Date.now()
    const cut = cluster.faults.partition('node 4 alone', [[LONE], REST])
    await testnet.partition(cluster.dir, [[LONE]])
    let healAt = 0
    let during: { problems: string[], at: number } | undefined
    try {
      const own = await cluster.submit(LONE, { name: 'lone-svc', type: 'service', count: 1 })
      const theirs = await cluster.submit(0, { name: 'rest-svc', type: 'service', count: 2 })
      const check = async (): Promise<{ problems: string[], at: number }> => {
        const problems: string[] = []
        const running = new Set(cluster.marks.flatMap((m) => markedTasks(m).map((p) => p.pid)))
        for (const p of originals) if (!running.has(p.pid)) problems.push(`pid ${p.pid} on node ${p.node}, running before the cut, stopped`)
        const now = cluster.where(svc)
        for (const id of instances(svc)) {
          const lone = (now.get(id) ?? []).filter((p) => p.node === LONE).length
          const rest = (now.get(id) ?? []).filter((p) => REST.includes(p.node)).length
          if (lone !== (mine.includes(id) ? 1 : 0)) problems.push(`${id} runs ${lone}× on the lone node`)
          if (rest !== 1) problems.push(`${id} runs ${rest}× on the other four`)
        }
        const ownNow = cluster.where(own)
        if ((ownNow.get(`${own.id}.0`) ?? []).filter((p) => p.node === LONE).length !== 1) problems.push('the job submitted to the lone node does not run there')
        const theirsNow = cluster.where(theirs)
        for (const id of instances(theirs)) if ((theirsNow.get(id) ?? []).map((p) => p.node).join() === '' || (theirsNow.get(id) ?? []).some((p) => p.node === LONE)) problems.push(`${id} (submitted to the others) runs on ${(theirsNow.get(id) ?? []).map((p) => p.node).join(', ') || 'no node'}`)
        const majority = await Promise.all(cluster.all().map(async (i) => (await net.client(i).node()).reconcile.majority))
        if (majority.some((m, i) => m !== (i !== LONE))) problems.push(`the nodes' majority flags are ${majority.join(', ')}`)
        return { problems, at: Date.now() }
      }
      during = await waitUntil('the lone node and the rest to do their parts', check, (r) => r.problems.length === 0, CUT_MS - 2_000, 250).catch(async () => await check())
      row.notes.push(`cut → each side done ${during.problems.length === 0 ? `in ${((during.at - cutAt) / 1000).toFixed(1)} s` : 'never'}`)
      while (Date.now() < cutAt + CUT_MS) {
        if (during.problems.length === 0) during = await check()
        await sleep(500)
      }
    } finally {
      healAt = Date.now()
      await testnet.heal(cluster.dir)
      cut()
    }
    expect(during!.problems, 'during the cut').toEqual([])

    const end = await cluster.waitClean(cluster.all(), healAt, 90_000)
    row.recoverMs = end.ms
    const falseDeaths = cluster.score(row, end.census)
    expect(end.census.problems, 'after the heal: one copy of each').toEqual([])
    expect(end.census.lost).toEqual([])
    expect(end.census.duplicates).toEqual([])
    const running = new Set(cluster.marks.flatMap((m) => markedTasks(m).map((p) => p.pid)))
    expect(originals.filter((p) => !running.has(p.pid)).map((p) => `pid ${p.pid} on node ${p.node}`), 'processes from before the cut that stopped').toEqual([])
    expect(falseDeaths, describeDeaths(falseDeaths, started)).toEqual([])
  })
})
