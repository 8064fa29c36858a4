// The conformance suite on the simulator: 5 real Swim cores, LAN timing, virtual
// clock; every wait is bounded by the crash-detection bound derived from the config.

import { SIM, crashDetectionBoundMs } from '../../membership/config.ts'
import { SimCluster } from '../../testnet/sim/cluster.ts'
import { seedFromEnv } from '../../testnet/sim/rng.ts'
import { type ClusterHarness, membershipConformance } from './scenarios.ts'

const seed = seedFromEnv(7)
const TICK_MS = 10

function simHarness (): ClusterHarness {
  const cluster = new SimCluster({ seed, preset: SIM, tickMs: TICK_MS })
  let ids: string[] = []
  const bound = (): number => crashDetectionBoundMs(cluster.config, ids.length, TICK_MS)
  return {
    start: async (n) => {
      ids = cluster.grow(n, { joinEveryMs: 10 })
      if (cluster.runUntil(() => cluster.allAgree(), 30_000) === undefined) throw new Error(`no agreement, ${cluster.describe()}`)
    },
    crash: async (i) => { cluster.crash(ids[i]!) },
    pause: async (i) => { cluster.pause(ids[i]!) },
    resume: async (i) => { cluster.resume(ids[i]!) },
    leave: async (i) => { cluster.leave(ids[i]!) },
    restart: async (i) => { cluster.restart(ids[i]!, [ids.find((_id, j) => j !== i && cluster.status(ids[j]!) === 'up')!]) },
    view: async (observer, subject) => {
      const member = cluster.swimOf(ids[observer]!).member(ids[subject]!)
      return member === undefined ? undefined : { state: member.state, incarnation: member.incarnation }
    },
    waitFor: async (what, check) => {
      const limit = cluster.nowMs + bound()
      while (!(await check())) {
        if (cluster.nowMs > limit) throw new Error(`${what} did not happen within ${bound()} ms of virtual time, ${cluster.describe()}`)
        cluster.runFor(100)
      }
    },
    stop: async () => {},
    describe: () => cluster.describe(),
  }
}

membershipConformance(`simulator (seed ${seed}; replay with SEED=${seed})`, simHarness, 30_000)
