// Reliability: one node of five cut off alone for 20 s. It keeps running its own
// instances and starts none of the others' (alone, it is a minority), though it
// places the instances of a job submitted to it on itself, the one node it
// reaches (README.md, "Partitions"); the other four re-place its instances.
// After the heal there is one copy of each instance: the older claim, the lone
// node's, stays.

import { describe, expect, it } from 'vitest'
import { type Ack, resultRow, SCENARIO_MS, useCluster } from './harness.ts'

const LONE = 4
const CUT_MS = 20_000

const t = useCluster('isolated', 5)

const instances = (ack: Ack): string[] => Array.from({ length: ack.count }, (_, k) => `${ack.id}.${k}`)

describe('reliability', () => {
  it('one node cut off alone for 20 s, then the heal', async ({ task }) => {
    const row = resultRow(task, 'one node cut off alone for 20 s')
    const { cluster } = t
    const { net } = cluster
    const svc = await cluster.submit(0, { name: 'svc', type: 'service', count: 10, spread: [{ label: 'testnet.index', maxSkew: 1 }] })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])
    await cluster.pastNewcomerGrace()
    const before = cluster.where(svc)
    const mine = instances(svc).filter((id) => before.get(id)![0]!.node === LONE)
    const originals = [...before.values()].flat()
    expect(mine.length, 'the lone node holds instances').toBeGreaterThan(0)

    const { problems, healAt } = await cluster.split(row, [[LONE]], CUT_MS, async () => {
      // Ten instances: for some of them the lone node is neither the first choice nor a backup.
      const own = await cluster.submit(LONE, { name: 'lone-svc', type: 'service', count: 10 })
      const theirs = await cluster.submit(0, { name: 'rest-svc', type: 'service', count: 2 })
      return async () => {
        const problems = cluster.stopped(originals).map((p) => `${p}, running before the cut, stopped`)
        const now = cluster.where(svc)
        for (const id of instances(svc)) {
          const lone = (now.get(id) ?? []).filter((p) => p.node === LONE).length
          const rest = (now.get(id) ?? []).filter((p) => p.node !== LONE).length
          if (lone !== (mine.includes(id) ? 1 : 0)) problems.push(`${id} runs ${lone}× on the lone node`)
          if (rest !== 1) problems.push(`${id} runs ${rest}× on the other four`)
        }
        const ownNow = cluster.where(own)
        const away = instances(own).filter((id) => (ownNow.get(id) ?? []).filter((p) => p.node === LONE).length !== 1)
        if (away.length > 0) {
          const why = (await net.client(LONE).job(own.id)).instances.find((x) => x.id === away[0])?.pending
          problems.push(`${away.length} of the 10 instances of the job submitted to the lone node do not run there (${away[0]}: ${why})`)
        }
        const theirsNow = cluster.where(theirs)
        for (const id of instances(theirs)) {
          const nodes = (theirsNow.get(id) ?? []).map((p) => p.node)
          if (nodes.length !== 1 || nodes.includes(LONE)) problems.push(`${id} (submitted to the others) runs on ${nodes.join(', ') || 'no node'}`)
        }
        return [...problems, ...await cluster.majorityProblems((i) => i !== LONE)]
      }
    })
    // Soft: the heal and what follows are measured and checked too.
    expect.soft(problems, 'during the cut').toEqual([])

    await cluster.finish(row, healAt, { timeoutMs: 90_000 })
    expect(cluster.stopped(originals), 'processes from before the cut that stopped').toEqual([])
  }, SCENARIO_MS)
})
