// Reliability: a rolling restart of every node, one by one (SIGTERM: the node
// leaves gracefully, hands its tasks back, and starts again), while batch jobs
// keep coming in through the nodes that are up. No acknowledged job is lost, and
// no service ever has fewer than count − 1 instances running: each service is
// spread one instance a node (perNodeMax 1), so a node's leave costs it one at most.

import { describe, expect, it } from 'vitest'
import { type Ack, markedTasks, resultRow, SCENARIO_MS, sleep, useCluster } from './harness.ts'

const t = useCluster('rolling', 5)

/** Samples how many instances of each service have a process, every 100 ms, until stopped; keeps the lowest. */
class Floor {
  readonly lowest = new Map<string, { running: number, at: number }>()
  private stopped = false
  private readonly done: Promise<void>

  constructor (services: readonly Ack[]) {
    this.done = (async () => {
      while (!this.stopped) {
        for (const s of services) {
          const running = new Set(markedTasks(s.mark).map((p) => p.instance)).size
          const seen = this.lowest.get(s.id)
          if (seen === undefined || running < seen.running) this.lowest.set(s.id, { running, at: Date.now() })
        }
        await sleep(100)
      }
    })()
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.done
  }
}

describe('reliability', () => {
  it('rolling restart of every node under load', async ({ task }) => {
    const row = resultRow(task, 'rolling restart under load')
    const { cluster } = t
    const services = [
      await cluster.submit(0, { name: 'web', type: 'service', count: 4, perNodeMax: 1 }),
      await cluster.submit(1, { name: 'api', type: 'service', count: 3, perNodeMax: 1 }),
      await cluster.submit(2, { name: 'one', type: 'service', count: 1 }),
    ]
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])
    await cluster.pastNewcomerGrace()

    // The load: a batch job every 500 ms through a node that is up; only acknowledged ones count.
    let restarting = -1
    let loading = true
    let refused = 0
    const load = (async () => {
      for (let k = 0; loading; k++) {
        const on = [0, 1, 2, 3, 4].filter((i) => i !== restarting)[k % 4]!
        await cluster.submit(on, { name: `load-${k}`, type: 'batch', count: 2, script: 'sleep 0.2' }, 5_000).catch(() => { refused++ })
        await sleep(500)
      }
    })()
    const floor = new Floor(services)

    let worst = 0
    try {
      for (const i of cluster.all()) {
        restarting = i
        const away = cluster.faults.open(`rolling restart of node ${i}`, [i])
        await cluster.restart(i)
        const up = Date.now()
        away()
        restarting = -1
        // An operator waits for the cluster to be whole again before the next node.
        const { ms, census } = await cluster.waitClean(cluster.all(), up, 60_000, services)
        expect(census.problems, `after the restart of node ${i}`).toEqual([])
        worst = Math.max(worst, ms!)
      }
    } finally {
      loading = false
      await load
      await floor.stop()
    }
    row.recoverMs = worst

    const floors = services.map((s) => `${s.id.split('-')[0]} ${floor.lowest.get(s.id)?.running}/${s.count}`)
    row.notes.push(`${cluster.acks.length - services.length} batch jobs acknowledged during the restarts (${refused} refused or timed out); lowest running: ${floors.join(', ')}; recovery is the worst node back → clean`)
    await cluster.finish(row, Date.now(), { recover: false, timeoutMs: 120_000 })
    for (const s of services) expect(floor.lowest.get(s.id)!.running, `${s.id} never below count − 1`).toBeGreaterThanOrEqual(s.count - 1)
  }, SCENARIO_MS)
})
