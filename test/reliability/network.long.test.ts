// Reliability: faults that must not cost a live node its membership. A one-way
// cut (node 1's messages no longer reach node 3) for 20 s, and 20 % loss of what
// one node receives for 30 s: SWIM's indirect probes and refutations keep every
// node alive, so no death at all is allowed, and nothing moves. A node frozen
// (SIGSTOP) for 10 s is declared dead and its instances re-placed: allowed; it
// must not declare others dead when it wakes, and after it refutes, one copy of
// each instance is left. Every part ends with a clean cluster.

import { describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { resultRow, SCENARIO_MS, seconds, sleep, steadyService, useCluster } from './harness.ts'

const t = useCluster('network', 5, steadyService(10, { spread: [{ label: 'testnet.index', maxSkew: 1 }] }))

/** Every task process now, by pid and node. */
const processes = (): Array<{ pid: number, node: number }> => t.cluster.acks.flatMap((a) => [...t.cluster.where(a).values()].flat())

describe('reliability', () => {
  it('a one-way cut for 20 s', async ({ task }) => {
    const row = resultRow(task, 'one-way cut 1 → 3 for 20 s')
    const { cluster } = t
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const before = processes()
    const from = Date.now()
    await testnet.cut(cluster.dir, 1, 3)
    try {
      await sleep(20_000)
    } finally {
      await testnet.heal(cluster.dir)
    }
    const healAt = Date.now()
    // Nothing moved: every process of before still runs.
    expect(cluster.stopped(before), 'processes stopped by the cut').toEqual([])
    await cluster.finish(row, healAt, { deathsSince: from })
  }, SCENARIO_MS)

  it('a node frozen (SIGSTOP) for 10 s, then resumed', async ({ task }) => {
    const row = resultRow(task, 'SIGSTOP a node for 10 s')
    const { cluster } = t
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const frozen = 2
    const held = cluster.where(cluster.acks[0]!)
    const from = Date.now()
    const thaw = cluster.faults.open('SIGSTOP', [frozen])
    await testnet.pause(cluster.dir, frozen)
    try {
      // The others declare it dead and run its instances.
      const { ms } = await cluster.waitClean(cluster.except(frozen), from, 9_000)
      row.notes.push(`the others, without it, clean ${seconds(ms)}`)
      await sleep(Math.max(0, from + 10_000 - Date.now()))
    } finally {
      await testnet.resume(cluster.dir, frozen)
    }
    const resumedAt = Date.now()
    thaw()
    // Its instances were held longest there: the older claims stay.
    const kept = [...held.values()].flat().filter((p) => p.node === frozen)
    await cluster.finish(row, resumedAt, { deathsSince: from })
    row.notes.push(`${kept.length - cluster.stopped(kept).length}/${kept.length} of the frozen node's processes kept after the resume`)
  }, SCENARIO_MS)

  it('20 % loss of what one node receives, for 30 s', async ({ task }) => {
    const row = resultRow(task, '20 % message loss on one node for 30 s')
    const { cluster } = t
    expect((await cluster.census(cluster.all())).problems).toEqual([])
    const lossy = 0
    const before = processes()
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
    expect(cluster.stopped(before), 'processes stopped by the loss').toEqual([])
    await cluster.finish(row, healAt, { deathsSince: from })
  }, SCENARIO_MS)
})
