// Whole simulated clusters (testnet/sim): real membership, state and reconcile
// code on a virtual clock and network, through random requests and faults drawn
// from a seed; murmur's invariants checked after the heal. A short sweep here;
// `npm run sim -- --seeds 1000 --nodes 50` is the long one. A failure names its
// seed: SEED=<n> npm run sim replays it and prints the shortest trace.

import { describe, expect, it } from 'vitest'
import { describeStep, generate, type Scenario } from '../../testnet/sim/scenario.ts'
import { shrink, sweep } from '../../testnet/sim/sweep.ts'
import { type RunResult, runScenario } from '../../testnet/sim/world.ts'

function explain (r: RunResult): string {
  return `seed ${r.seed}, ${r.nodes} nodes (replay: SEED=${r.seed} npm run sim -- --nodes ${r.nodes} --chaos 30s):\n` +
    r.violations.map((v) => `  ${v.invariant} at ${v.atMs} ms: ${v.detail}`).join('\n')
}

const service = (name: string, count: number): Extract<Scenario['steps'][number], { kind: 'submit' }>['job'] =>
  ({ name, type: 'service', command: 'sim', args: ['serve'], cpu: '250m', memory: '128Mi', count })

describe('the cluster simulator', () => {
  it('keeps every invariant through 16 seeds of random requests and faults on 5 nodes', async () => {
    const results = await sweep({ from: 1, seeds: 16, scenario: { nodes: 5, chaosMs: 30_000 }, world: {} })
    const failed = results.filter((r) => r.violations.length > 0)
    expect(failed.map(explain)).toEqual([])
    // The sweep did inject faults and run work, or it proves nothing.
    const faults = results.reduce((n, r) => n + Object.values(r.faults).reduce((a, b) => a + b, 0), 0)
    expect(faults).toBeGreaterThan(100)
    expect(results.reduce((n, r) => n + r.acknowledged, 0)).toBeGreaterThan(50)
    expect(results.reduce((n, r) => n + r.runs, 0)).toBeGreaterThan(200)
  }, 120_000)

  it('keeps every invariant on 20 nodes', async () => {
    const result = await runScenario(generate(7, { nodes: 20, chaosMs: 40_000 }))
    expect(result.violations, explain(result)).toEqual([])
  }, 120_000)

  it('replays a seed exactly', async () => {
    const scenario = generate(3, { nodes: 5, chaosMs: 20_000 })
    const a = await runScenario(scenario)
    const b = await runScenario(scenario)
    expect(b).toEqual(a)
    expect(a.digest).not.toBe('')
  }, 60_000)

  it('times a crash on a quiet network to its detection by every live member, within the bound', async () => {
    const scenario: Scenario = { seed: 11, nodes: 5, skewsMs: [0, 0, 0, 0, 0], steps: [
      { atMs: 0, kind: 'submit', node: 0, job: service('web', 4) },
      { atMs: 3_000, kind: 'crash', node: 2 },
      { atMs: 30_000, kind: 'restart', node: 2, skewMs: 0 },
    ] }
    const result = await runScenario(scenario)
    expect(result.violations, explain(result)).toEqual([])
    expect(result.crashChecks).toBe(1)
    expect(result.slowestDetectionMs).toBeGreaterThan(0)
  }, 60_000)

  it('keeps a stop written on one side of a partition over a scale written on the other (a bug it found)', async () => {
    const scenario: Scenario = { seed: 5, nodes: 5, skewsMs: [0, 0, 0, 0, 0], steps: [
      { atMs: 0, kind: 'submit', node: 0, job: service('web', 2) },
      { atMs: 3_000, kind: 'partition', groups: [[0, 1], [2, 3, 4]] },
      { atMs: 5_000, kind: 'stop', node: 0, job: 'web' },
      { atMs: 6_000, kind: 'scale', node: 3, job: 'web', count: 3 },
      { atMs: 12_000, kind: 'heal' },
    ] }
    const result = await runScenario(scenario)
    expect(result.violations, explain(result)).toEqual([])
    expect(result.acknowledged).toBe(1)
  }, 60_000)

  it('holds a 3/2 partition to the partition rule, and catches a minority that forgets its dead (planted)', async () => {
    const scenario: Scenario = { seed: 21, nodes: 5, skewsMs: [0, 0, 0, 0, 0], steps: [
      { atMs: 0, kind: 'submit', node: 0, job: service('web', 10) },
      { atMs: 5_000, kind: 'partition', groups: [[0, 1], [2, 3, 4]] },
      { atMs: 45_000, kind: 'heal' },
    ] }
    const result = await runScenario(scenario)
    expect(result.violations, explain(result)).toEqual([])
    // The majority side re-placed what the minority ran: those ran twice until the heal.
    expect(result.duplicateRuns).toBeGreaterThan(0)
    // A dead member that stops counting at once leaves the minority believing it is the whole cluster.
    const planted = await runScenario(scenario, { reconcile: { stableWindowMs: 0 } })
    expect(planted.violations.map((v) => v.invariant)).toContain('partition')
  }, 60_000)

  it('catches a planted bug (duplicates never stopped) and shrinks it to a short trace that replays', async () => {
    const world = { reconcile: { duplicateGraceMs: Number.MAX_SAFE_INTEGER } }
    // A cluster without users: the seed's steps found this bug before users existed (with users and quotas, seed 1 places less).
    const scenario = generate(1, { nodes: 5, chaosMs: 30_000, users: false })
    const found = await runScenario(scenario, world)
    expect(found.violations.map((v) => v.invariant)).toContain('placement')
    const shrunk = await shrink(scenario, 'placement', world, 60)
    expect(shrunk).not.toBeNull()
    const steps = shrunk!.scenario.steps
    expect(steps.length, steps.map(describeStep).join('\n')).toBeLessThanOrEqual(4)
    expect(steps.length).toBeLessThan(scenario.steps.length)
    const replay = await runScenario(shrunk!.scenario, world)
    expect(replay).toEqual(shrunk!.result)
    // Without the planted bug, the same trace is fine.
    expect((await runScenario(shrunk!.scenario)).violations).toEqual([])
  }, 120_000)

  it('runs every batch instance exactly once in seeds with no fault, and catches backups that claim on time alone (planted)', async () => {
    const quiet = [8, 16, 24, 32].map((seed) => generate(seed, { nodes: 5, chaosMs: 30_000 }))
    const results = await Promise.all(quiet.map(async (scenario) => await runScenario(scenario)))
    for (const r of results) {
      expect(r.quiet).toBe(true)
      expect(r.violations, explain(r)).toEqual([])
      expect(r.batchRunTwice).toBe(0)
    }
    expect(results.reduce((n, r) => n + r.runs, 0)).toBeGreaterThan(50)
    // The bug the rule replaced: a backup that claims once an instance has been open a while, whatever the chosen node does.
    const planted = await runScenario(quiet[0]!, { reconcile: { claimTimeoutMs: 0, claimBoundMs: 0 } })
    expect(planted.violations.map((v) => v.invariant)).toContain('exactly-once')
  }, 120_000)
})
