// Many seeds, on every core: each worker thread runs its share of the seeds and
// reports each result; a failing scenario is then shrunk to the shortest list
// of steps that still breaks the same invariant (delta debugging), for a trace a
// person can read.

import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { generate, type Scenario, type ScenarioOptions } from './scenario.ts'
import { crashedRun, type RunResult, runScenario, type WorldOptions } from './world.ts'

export interface SweepOptions {
  from: number
  seeds: number
  scenario: Partial<ScenarioOptions> & { nodes: number }
  world: Partial<WorldOptions>
  /** Worker threads (default: one per core, at most the seeds). */
  workers?: number
  onResult?: (result: RunResult) => void
}

/** Runs seeds from..from+seeds-1; results in seed order. */
export async function sweep (options: SweepOptions): Promise<RunResult[]> {
  const seeds = Array.from({ length: options.seeds }, (_, i) => options.from + i)
  const workers = Math.max(1, Math.min(options.workers ?? availableParallelism(), seeds.length))
  const results: RunResult[] = []
  if (workers === 1) {
    for (const seed of seeds) {
      const scenario = generate(seed, options.scenario)
      const result = await runScenario(scenario, options.world).catch((err: unknown) => crashedRun(scenario, err))
      options.onResult?.(result)
      results.push(result)
    }
    return results
  }
  let next = 0
  await Promise.all(Array.from({ length: workers }, async () => {
    const worker = new Worker(new URL('./sweep-worker.ts', import.meta.url), { workerData: { scenario: options.scenario, world: options.world } })
    try {
      while (next < seeds.length) {
        const seed = seeds[next++]!
        const result = await new Promise<RunResult>((resolve, reject) => {
          const onMessage = (r: RunResult): void => { cleanup(); resolve(r) }
          const onError = (err: Error): void => { cleanup(); reject(err) }
          const cleanup = (): void => { worker.off('message', onMessage); worker.off('error', onError) }
          worker.on('message', onMessage)
          worker.on('error', onError)
          worker.postMessage(seed)
        })
        options.onResult?.(result)
        results.push(result)
      }
    } finally {
      await worker.terminate()
    }
  }))
  return results.sort((a, b) => a.seed - b.seed)
}

export interface ShrinkReport {
  scenario: Scenario
  result: RunResult
  /** Runs it took. */
  attempts: number
}

/**
 * The shortest scenario found (by removing steps) whose run still breaks
 * `invariant`. Each attempt is a whole run, so it stops after `maxAttempts`.
 */
export async function shrink (scenario: Scenario, invariant: string, world: Partial<WorldOptions>, maxAttempts = 150, onAttempt?: (steps: number) => void): Promise<ShrinkReport | null> {
  let attempts = 0
  const breaks = async (candidate: Scenario): Promise<RunResult | null> => {
    attempts++
    onAttempt?.(candidate.steps.length)
    const result = await runScenario(candidate, world).catch((err: unknown) => crashedRun(candidate, err))
    return result.violations.some((v) => v.invariant === invariant) ? result : null
  }
  let best = scenario
  let bestResult = await breaks(scenario)
  if (bestResult === null) return null
  let parts = 2
  while (best.steps.length > 0 && attempts < maxAttempts) {
    const size = Math.ceil(best.steps.length / parts)
    let reduced = false
    for (let start = 0; start < best.steps.length && attempts < maxAttempts; start += size) {
      const candidate = { ...best, steps: [...best.steps.slice(0, start), ...best.steps.slice(start + size)] }
      const result = await breaks(candidate)
      if (result !== null) {
        best = candidate
        bestResult = result
        parts = Math.max(parts - 1, 2)
        reduced = true
        break
      }
    }
    if (!reduced) {
      if (size === 1) break
      parts = Math.min(parts * 2, best.steps.length)
    }
  }
  return { scenario: best, result: bestResult, attempts }
}
