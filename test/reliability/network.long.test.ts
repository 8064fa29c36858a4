// Reliability: faults that must not cost a live node its membership. A one-way
// cut (node 1's messages no longer reach node 3) for 20 s, and 20 % loss of what
// one node receives for 30 s: SWIM's indirect probes and refutations keep every
// node alive, so no death at all is allowed, and nothing moves. A node frozen
// (SIGSTOP) for 10 s is declared dead and its instances re-placed: allowed; it
// must not declare others dead when it wakes, and after it refutes, one copy of
// each instance is left. Every part ends with a clean cluster.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { type Ack, Cluster, describeDeaths, markedTasks, resultRow, type ResultRow, sleep } from './harness.ts'

let cluster: Cluster
let started = 0
let svc: Ack

beforeAll(async () => {
  cluster = await Cluster.start('network', 5)
  started = Date.now()
  svc = await cluster.submit(0, { name: 'svc', type: 'service', count: 10, spread: [{ label: 'testnet.index', maxSkew: 1 }] })
  await cluster.waitClean(cluster.all(), Date.now(), 60_000)
  await cluster.pastNewcomerGrace()
}, 120_000)
afterAll(async () => {
  await testnet.heal(cluster.dir).catch(() => {})
  await cluster?.stop()
}, 60_000)

/** The pids of every instance's process now. */
const pids = (): number[] => cluster.marks.flatMap((m) => markedTasks(m).map((p) => p.pid))

/** Waits for a clean cluster after a fault ended at `since`, fills the row and checks the outcome. */
async function settle (row: ResultRow, since: number, from: number): Promise<void> {
  const end = await cluster.waitClean(cluster.all(), since, 60_000)
  row.recoverMs = end.ms
  cluster.score(row, end.census)
  const falseDeaths = cluster.faults.falseDeaths(cluster.watch.deaths).filter((d) => d.at >= from)
  row.falseDeaths = falseDeaths.length
  expect(end.census.problems).toEqual([])
  expect(end.census.lost).toEqual([])
  expect(end.census.duplicates).toEqual([])
  expect(falseDeaths, describeDeaths(falseDeaths, started)).toEqual([])
}

describe('reliability', () => {
  it('a one-way cut for 20 s', async ({ task }) => {
    const row = resultRow(task, 'one-way cut 1 → 3 for 20 s')
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const before = pids()
    const from = Date.now()
    await testnet.cut(cluster.dir, 1, 3)
    try {
      await sleep(20_000)
    } finally {
      await testnet.heal(cluster.dir)
    }
    const healAt = Date.now()
    // Nothing moved: every process of before still runs.
    const now = new Set(pids())
    expect(before.filter((p) => !now.has(p)), 'processes stopped by the cut').toEqual([])
    await settle(row, healAt, from)
  })

  it('a node frozen (SIGSTOP) for 10 s, then resumed', async ({ task }) => {
    const row = resultRow(task, 'SIGSTOP a node for 10 s')
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const frozen = 2
    const held = cluster.where(svc)
    const from = Date.now()
    const thaw = cluster.faults.open('SIGSTOP', [frozen])
    await testnet.pause(cluster.dir, frozen)
    try {
      // The others declare it dead and run its instances.
      const { ms } = await cluster.waitClean(cluster.except(frozen), from, 9_000)
      row.notes.push(`the others clean without it ${ms === null ? 'never' : `after ${(ms / 1000).toFixed(1)} s`}`)
      await sleep(Math.max(0, from + 10_000 - Date.now()))
    } finally {
      await testnet.resume(cluster.dir, frozen)
    }
    const resumedAt = Date.now()
    thaw()
    await settle(row, resumedAt, from)
    // Its instances were held longest there: the older claims stay.
    const kept = [...held.values()].flat().filter((p) => p.node === frozen)
    const now = new Set(pids())
    row.notes.push(`${kept.filter((p) => now.has(p.pid)).length}/${kept.length} of the frozen node's processes kept after the resume`)
  })

  it('20 % loss of what one node receives, for 30 s', async ({ task }) => {
    const row = resultRow(task, '20 % message loss on one node for 30 s')
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const lossy = 0
    const before = pids()
    const from = Date.now()
    await testnet.loss(cluster.dir, lossy, 0.2)
    let worst = 0
    try {
      // The cluster keeps working meanwhile: a job submitted through the lossy node runs.
      const during = await cluster.submit(lossy, { name: 'during-loss', type: 'service', count: 2 })
      const deadline = from + 30_000
      while (Date.now() < deadline) {
        const suspects = await Promise.all(cluster.except(lossy).map(async (i) => (await cluster.net.client(i).members()).members.filter((m) => m.state !== 'alive').length))
        worst = Math.max(worst, ...suspects)
        await sleep(500)
      }
      expect(cluster.where(during).size).toBe(2)
    } finally {
      await testnet.heal(cluster.dir)
    }
    const healAt = Date.now()
    row.notes.push(`at most ${worst} member(s) seen not alive at once by a node without loss`)
    const now = new Set(pids())
    expect(before.filter((p) => !now.has(p)), 'processes stopped by the loss').toEqual([])
    await settle(row, healAt, from)
  })
})
