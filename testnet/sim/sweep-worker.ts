// A worker thread of sweep.ts: runs each seed it is sent and posts the result.

import { parentPort, workerData } from 'node:worker_threads'
import { generate } from './scenario.ts'
import { crashedRun, runScenario } from './world.ts'

const { scenario, world } = workerData as { scenario: Parameters<typeof generate>[1], world: Parameters<typeof runScenario>[1] }

parentPort!.on('message', (seed: number) => {
  const s = generate(seed, scenario)
  void runScenario(s, world).catch((err: unknown) => crashedRun(s, err)).then((result) => { parentPort!.postMessage(result) })
})
