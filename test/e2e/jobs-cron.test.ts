// A cron job on a real 3-node testnet: a per-second schedule fires once per tick
// across the cluster, whichever node fires it, and stops when stopped.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ClaimRecord } from '../../cli/client.ts'
import { byInstance, isLive, marker, markedPids, Net, sh } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 3
const MARK = marker('cron')

let dir = ''
let net: Net

beforeAll(async () => {
  const started = await startTestnet('jobs-cron', N)
  dir = started.dir
  net = new Net(started.state.nodes)
}, 90_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

/** The scheduled time of a cron run's instance id (`<job>@20261126T013230Z.0`). */
function tickOf (id: string): number {
  const t = /@(\d{8}T\d{6}Z)\.\d+$/.exec(id)?.[1]
  if (t === undefined) throw new Error(`${id} is not a cron run`)
  return Date.UTC(Number(t.slice(0, 4)), Number(t.slice(4, 6)) - 1, Number(t.slice(6, 8)), Number(t.slice(9, 11)), Number(t.slice(11, 13)), Number(t.slice(13, 15)))
}

describe('a cron job on a 3-node testnet', () => {
  it('a schedule of every 2 s fires once per tick across the cluster, with consecutive ticks', async () => {
    const m = `${MARK}-tick`
    const submitted = await net.client(0).submitJob({ name: 'tick', type: 'cron', schedule: '*/2 * * * * *', ...sh('echo "tick $1"', m, 'run'), cpu: '10m', memory: '16M' })
    expect(submitted).toMatchObject({ type: 'cron', spec: { cron: { schedule: '*/2 * * * * *', timezone: 'UTC', missed: 'skip', overlap: 'skip' } } })
    const exitedTicks = async (i: number): Promise<number> => (await net.claims(i, submitted.id)).filter((c) => c.state === 'exited').length
    // About 10 s of ticks: 5 finished runs, as each node sees them.
    for (let i = 0; i < N; i++) await waitUntil(`node ${i} to see 5 finished runs`, async () => await exitedTicks(i), (n) => n >= 5, 40_000, 250)
    const running = await net.client(1).job(submitted.id)
    expect(['scheduled', 'running']).toContain(running.status)
    expect(running.nextRun).toBeGreaterThan(Date.now() - 2_000)
    expect(running.nextRun! % 2_000).toBe(0)

    await net.client(2).stopJob(submitted.id)
    let history: ClaimRecord[] = []
    for (let i = 0; i < N; i++) {
      const seen = await waitUntil(`node ${i} to see the job stopped, nothing live`, async () => {
        const view = await net.client(i).job(submitted.id)
        return { view, claims: await net.claims(i, submitted.id) }
      }, ({ view, claims }) => view.status === 'stopped' && !claims.some(isLive))
      if (i === 0) history = seen.claims
    }

    const runs = byInstance(history)
    const ticks = [...runs.keys()].map((id) => ({ id, tick: tickOf(id), claims: runs.get(id)! })).sort((a, b) => a.tick - b.tick)
    for (const t of ticks) {
      expect(t.id).toBe(`${submitted.id}@${new Date(t.tick).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.0`)
      expect(t.tick % 2_000, `${t.id} is on the schedule`).toBe(0)
      expect(t.tick).toBeGreaterThanOrEqual(Math.floor(submitted.submittedAt / 1000) * 1000)
    }
    const finished = ticks.filter((t) => t.claims.some((c) => c.state === 'exited'))
    const summary = ticks.map((t) => `${new Date(t.tick).toISOString().slice(17, 19)}s: ${t.claims.map((c) => `${net.index(c.node)}:${c.state}:g${c.generation}`).join(' ')}`)
    expect(finished.length, summary.join('\n')).toBeGreaterThanOrEqual(5)
    // Each tick that ran, ran once: one exited claim, no other finished one.
    for (const t of finished) {
      expect(t.claims.filter((c) => c.state === 'exited' || c.state === 'failed'), `${t.id}\n${summary.join('\n')}`).toHaveLength(1)
    }
    // Consecutive every 2 s; only the last tick, cut short by the stop, may have no finished run.
    for (let k = 1; k < ticks.length; k++) expect(ticks[k]!.tick - ticks[k - 1]!.tick, summary.join('\n')).toBe(2_000)
    const unfinished = ticks.filter((t) => !finished.includes(t))
    expect(unfinished.every((t) => t === ticks[ticks.length - 1]), summary.join('\n')).toBe(true)
    // Every run's output is readable from any node.
    const out = await net.client(1).logs(finished[0]!.id)
    expect(out.data.toString()).toBe('tick run\n')

    // Stopped: no new tick for a while.
    const last = ticks[ticks.length - 1]!.tick
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    const later = await net.claims(1, submitted.id)
    expect(later.filter((c) => tickOf(c.id) > last)).toEqual([])
    expect(markedPids(m)).toEqual([])
  }, 90_000)

  it('the testnet stops with no task process left', async () => {
    await stopTestnet(dir)
    dir = ''
    await waitUntil('every task process to end', async () => markedPids(`${MARK}-tick`), (p) => p.length === 0, 15_000)
  })
})
