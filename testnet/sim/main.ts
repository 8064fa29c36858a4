// npm run sim -- [--seeds N] [--from S] [--nodes N] [--chaos 60s] [--preset lan|local]
//                [--workers K] [--shrink N] [--json] [--trace file.json]
//
// Runs whole simulated clusters through random requests and faults, one seed
// each, and checks murmur's invariants after every heal. SEED=n runs (replays)
// that one seed and prints its steps. A failure prints the seed, what broke,
// and the shortest list of steps found that still breaks it, saved as a trace
// that `--trace` replays exactly.

import { writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseDuration } from '../../node/units.ts'
import { seedFromEnv } from './rng.ts'
import { describeStep, generate, type Scenario } from './scenario.ts'
import { shrink, sweep } from './sweep.ts'
import { type RunResult, runScenario } from './world.ts'

const USAGE = 'usage: npm run sim -- [--seeds N] [--from S] [--nodes N] [--chaos 60s] [--preset lan|local] [--workers K] [--shrink N] [--json] [--trace file.json]   (SEED=n replays one seed)'

function fail (message: string): never {
  process.stderr.write(`sim: ${message} (npm run sim -- --help)\n`)
  process.exit(2)
}

function positive (name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < min) fail(`--${name} must be a whole number ≥ ${min}, got '${raw}'`)
  return n
}

async function main (): Promise<void> {
  let args
  try {
    args = parseArgs({
      options: {
        seeds: { type: 'string' },
        from: { type: 'string' },
        nodes: { type: 'string' },
        chaos: { type: 'string' },
        preset: { type: 'string' },
        workers: { type: 'string' },
        shrink: { type: 'string' },
        json: { type: 'boolean' },
        trace: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values
  } catch (err) {
    fail((err as Error).message)
  }
  if (args.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return
  }
  const nodes = positive('nodes', args.nodes, 5, 2)
  if (nodes > 500) fail(`--nodes ${nodes} is more than this simulator runs (500)`)
  let chaosMs = 60_000
  if (args.chaos !== undefined) {
    try {
      chaosMs = parseDuration(args.chaos)
    } catch (err) {
      fail(`--chaos: ${(err as Error).message}`)
    }
  }
  const preset = args.preset ?? 'lan'
  if (preset !== 'lan' && preset !== 'local') fail(`--preset must be lan or local, got '${preset}'`)
  const world = { preset: preset as 'lan' | 'local', logLevel: process.env.SIM_LOG }
  const shrinkMax = positive('shrink', args.shrink, 150, 0)
  const json = args.json === true

  if (args.trace !== undefined) {
    let scenario: Scenario
    try {
      scenario = JSON.parse(readFileSync(args.trace, 'utf8')) as Scenario
    } catch (err) {
      fail(`cannot read the trace ${args.trace}: ${(err as Error).message}`)
    }
    printSteps(scenario)
    const result = await runScenario(scenario, world)
    report([result], 0, json)
    process.exitCode = result.violations.length > 0 ? 1 : 0
    return
  }

  const one = process.env.SEED !== undefined && process.env.SEED !== ''
  const from = one ? seedFromEnv(0) : positive('from', args.from, 1, 0)
  const seeds = one ? 1 : positive('seeds', args.seeds, 20)
  const scenarioOptions = { nodes, chaosMs }
  if (one) printSteps(generate(from, scenarioOptions))
  const started = performance.now()
  let done = 0
  const results = await sweep({
    from,
    seeds,
    scenario: scenarioOptions,
    world,
    workers: args.workers === undefined ? undefined : positive('workers', args.workers, 1),
    onResult: (r) => {
      done++
      if (json) return
      const status = r.violations.length === 0 ? 'ok' : `FAILED (${[...new Set(r.violations.map((v) => v.invariant))].join(', ')})`
      process.stderr.write(`[${done}/${seeds}] seed ${r.seed}: ${status}, ${(r.simulatedMs / 1000).toFixed(0)} s simulated, ${Object.values(r.faults).reduce((a, b) => a + b, 0)} faults, clean ${r.cleanAfterMs === undefined ? 'never' : `${(r.cleanAfterMs / 1000).toFixed(1)} s`} after the heal\n`)
    },
  })
  report(results, performance.now() - started, json)
  const failed = results.filter((r) => r.violations.length > 0)
  for (const r of failed.slice(0, 3)) {
    if (shrinkMax === 0) break
    const invariant = r.violations[0]!.invariant
    process.stderr.write(`\nshrinking seed ${r.seed} (${invariant}): `)
    const shrunk = await shrink(generate(r.seed, scenarioOptions), invariant, world, shrinkMax, (steps) => { process.stderr.write(`${steps} `) })
    process.stderr.write('\n')
    if (shrunk === null) {
      process.stdout.write(`seed ${r.seed}: the failure did not repeat when run alone (a bug in the simulator's determinism)\n`)
      continue
    }
    const file = join(tmpdir(), `murmur-sim-seed-${r.seed}.json`)
    writeFileSync(file, JSON.stringify(shrunk.scenario, null, 1))
    process.stdout.write(`\nseed ${r.seed}: ${invariant} breaks with these ${shrunk.scenario.steps.length} of ${r.steps} steps (${shrunk.attempts} runs to find them):\n`)
    printSteps(shrunk.scenario)
    for (const v of shrunk.result.violations.slice(0, 5)) process.stdout.write(`  ${v.invariant} at ${(v.atMs / 1000).toFixed(2)} s: ${v.detail}\n`)
    process.stdout.write(`replay: SEED=${r.seed} npm run sim -- --nodes ${nodes}${chaosMs !== 60_000 ? ` --chaos ${chaosMs}ms` : ''}${preset !== 'lan' ? ` --preset ${preset}` : ''}   shortest: npm run sim -- --trace ${file}\n`)
  }
  process.exitCode = failed.length > 0 ? 1 : 0
}

function printSteps (scenario: Scenario): void {
  process.stdout.write(`seed ${scenario.seed}, ${scenario.nodes} nodes${scenario.skewsMs.some((s) => s !== 0) ? `, clocks off by ${scenario.skewsMs.map((s, i) => s !== 0 ? `n${i} ${s} ms` : '').filter(Boolean).join(', ')}` : ''}:\n`)
  scenario.steps.forEach((step, i) => { process.stdout.write(`  ${describeStep(step, i)}\n`) })
}

function report (results: RunResult[], wallMs: number, json: boolean): void {
  const faults: Record<string, number> = {}
  for (const r of results) for (const [k, n] of Object.entries(r.faults)) faults[k] = (faults[k] ?? 0) + n
  const simulatedMs = results.reduce((a, r) => a + r.simulatedMs, 0)
  const failed = results.filter((r) => r.violations.length > 0)
  const clean = results.flatMap((r) => r.cleanAfterMs === undefined ? [] : [r.cleanAfterMs]).sort((a, b) => a - b)
  const summary = {
    seeds: results.length,
    failed: failed.map((r) => r.seed),
    simulatedHours: Math.round(simulatedMs / 36_000) / 100,
    wallSeconds: Math.round(wallMs / 100) / 10,
    faultsInjected: Object.values(faults).reduce((a, b) => a + b, 0),
    faults,
    acknowledgedJobs: results.reduce((a, r) => a + r.acknowledged, 0),
    taskRuns: results.reduce((a, r) => a + r.runs, 0),
    duplicateRuns: results.reduce((a, r) => a + r.duplicateRuns, 0),
    batchRunTwice: results.reduce((a, r) => a + r.batchRunTwice, 0),
    quietSeeds: results.filter((r) => r.quiet).length,
    batchRunTwiceInQuietSeeds: results.filter((r) => r.quiet).reduce((a, r) => a + r.batchRunTwice, 0),
    crashDetections: results.reduce((a, r) => a + r.crashChecks, 0),
    slowestDetectionMs: Math.max(0, ...results.map((r) => r.slowestDetectionMs)),
    cleanAfterHealMs: clean.length === 0 ? null : { median: clean[Math.floor(clean.length / 2)], max: clean[clean.length - 1] },
    quota: {
      seedsWithUsers: results.filter((r) => r.quota.starts > 0 || r.quota.changes > 0 || r.quota.forged > 0).length,
      startsChecked: results.reduce((a, r) => a + r.quota.starts, 0),
      startsAtFull: results.reduce((a, r) => a + r.quota.full, 0),
      peak: Math.round(Math.max(0, ...results.map((r) => r.quota.peak)) * 1000) / 1000,
      overshoots: results.reduce((a, r) => a + r.violations.filter((v) => v.invariant === 'quota').length, 0),
      changes: results.reduce((a, r) => a + r.quota.changes, 0),
      changesSkipped: results.reduce((a, r) => a + r.quota.skipped, 0),
      overAfterLowering: results.reduce((a, r) => a + r.quota.overAfterLowering, 0),
      waitingAtEnd: results.reduce((a, r) => a + r.quota.waiting, 0),
      forgedJobs: results.reduce((a, r) => a + r.quota.forged, 0),
      forgedRuns: results.reduce((a, r) => a + r.violations.filter((v) => v.invariant === 'forged').length, 0),
    },
  }
  if (json) {
    process.stdout.write(JSON.stringify({ summary, results }, null, 1) + '\n')
    return
  }
  process.stdout.write(`\n${summary.seeds} seed(s), ${failed.length} failed${failed.length > 0 ? ` (${summary.failed.slice(0, 20).join(', ')})` : ''}; ${summary.simulatedHours} simulated hours in ${summary.wallSeconds} s\n`)
  process.stdout.write(`faults injected: ${summary.faultsInjected} (${Object.entries(faults).sort().map(([k, n]) => `${k} ${n}`).join(', ')})\n`)
  process.stdout.write(`jobs acknowledged ${summary.acknowledgedJobs}, task runs ${summary.taskRuns}, runs while another copy ran ${summary.duplicateRuns}, batch instances run twice ${summary.batchRunTwice} (${summary.batchRunTwiceInQuietSeeds} in the ${summary.quietSeeds} seeds with no fault); crashes timed ${summary.crashDetections}, slowest detection ${summary.slowestDetectionMs} ms; clean after the heal: ${summary.cleanAfterHealMs === null ? '-' : `median ${summary.cleanAfterHealMs.median} ms, max ${summary.cleanAfterHealMs.max} ms`}\n`)
  const q = summary.quota
  process.stdout.write(`quotas: ${q.startsChecked} starts checked in ${q.seedsWithUsers} seeds with users (${q.startsAtFull} at a full quota, peak use ${q.peak} of the bound), ${q.overshoots} overshoots; ${q.changes} quota changes mid-run (${q.changesSkipped} not made: the node had not seen the one before), ${q.overAfterLowering} starts above a lowered quota before it settled; ${q.waitingAtEnd} instances waiting on a full quota at the end; ${q.forgedJobs} forged jobs, ${q.forgedRuns} of their tasks run\n`)
  for (const r of failed.slice(0, 5)) {
    for (const v of r.violations.slice(0, 3)) process.stdout.write(`  seed ${r.seed}: ${v.invariant} at ${(v.atMs / 1000).toFixed(2)} s: ${v.detail}\n`)
  }
}

main().catch((err: Error) => {
  process.stderr.write(`sim: ${err.stack ?? err.message}\n`)
  process.exit(1)
})
