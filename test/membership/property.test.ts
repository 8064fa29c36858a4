// Random small clusters (5–30 members), random loss up to 5 %, one random crash:
// once enough virtual time has passed, every live member sees exactly the live
// members alive and the crashed one dead. fast-check draws the cluster's seed, so
// a counterexample names the seed to replay; SEED=<n> replays fast-check's own run.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { crashDetectionBoundMs } from '../../membership/config.ts'
import { SimCluster } from '../../testnet/sim/cluster.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'

const runSeed = seedFromEnv(2024)

describe(`membership converges in random small clusters (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('after a crash, all live members agree on the live set', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 5, max: 30 }),
        fc.integer({ min: 0, max: 50 }),
        fc.boolean(),
        (seed, size, lossPermille, refused) => {
          const cluster = new SimCluster({
            seed,
            network: { lossRate: lossPermille / 1000, delayMaxMs: 15, duplicateRate: 0.01, whenCrashed: refused ? 'refuse' : 'drop' },
          })
          const where = (): string => `size ${size}, loss ${lossPermille}‰, crash ${refused ? 'refused' : 'silent'}, ${cluster.describe()}`
          const ids = cluster.grow(size, { joinEveryMs: 20 })
          const joined = cluster.runUntil(() => cluster.allAgree(), 60_000)
          expect(joined, `joined: ${where()}: ${cluster.disagreements(3).join('; ')}`).toBeDefined()
          const victim = new Rng(seed).fork('victim').pick(ids)
          cluster.crash(victim)
          // The bound holds without loss; loss delays gossip, so allow it a few times over.
          const enoughMs = 3 * crashDetectionBoundMs(cluster.config, size, cluster.tickMs)
          const settled = cluster.runUntil(
            () => cluster.allAgree() && cluster.liveIds().every((id) => cluster.stateOf(id, victim) === 'dead'),
            enoughMs,
          )
          expect(settled, `agreement after crashing ${victim}: ${where()}: ${cluster.disagreements(3).join('; ')}`).toBeDefined()
        },
      ),
      { numRuns: 40, seed: runSeed },
    )
  })

  it('after random faults are healed, all live members agree on the live set', () => {
    const fault = fc.record({
      kind: fc.constantFrom('pause', 'mute', 'partition', 'crash'),
      atMs: fc.integer({ min: 0, max: 20_000 }),
      forMs: fc.integer({ min: 100, max: 25_000 }),
    })
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 5, max: 20 }),
        fc.integer({ min: 0, max: 50 }),
        fc.array(fault, { minLength: 1, maxLength: 4 }),
        (seed, size, lossPermille, faults) => {
          const cluster = new SimCluster({ seed, network: { lossRate: lossPermille / 1000, delayMaxMs: 15, duplicateRate: 0.01 } })
          const where = (): string => `size ${size}, loss ${lossPermille}‰, faults ${JSON.stringify(faults)}, ${cluster.describe()}`
          const ids = cluster.grow(size, { joinEveryMs: 20 })
          expect(cluster.runUntil(() => cluster.allAgree(), 60_000), `joined: ${where()}`).toBeDefined()
          const rng = new Rng(seed).fork('faults')
          const start = cluster.nowMs
          // Faults start and end at their times; at most one crash, so that someone is always left.
          let crashes = 0
          for (const f of faults) {
            const id = rng.pick(ids)
            cluster.at(start + f.atMs, () => {
              if (cluster.status(id) !== 'up') return
              if (f.kind === 'pause') {
                cluster.pause(id)
                cluster.at(cluster.nowMs + f.forMs, () => cluster.resume(id))
              } else if (f.kind === 'mute') {
                cluster.mute(id)
                cluster.at(cluster.nowMs + f.forMs, () => cluster.unmute(id))
              } else if (f.kind === 'partition') {
                cluster.partition([ids.filter(() => rng.chance(0.5))])
                cluster.at(cluster.nowMs + f.forMs, () => cluster.heal())
              } else if (crashes++ === 0) {
                cluster.crash(id)
              }
            })
          }
          cluster.runFor(50_000)
          // Everything has healed by now (faults end by 45 s); give gossip, reconnects and push-pulls time.
          const settled = cluster.runUntil(() => cluster.allAgree(), 120_000)
          expect(settled, `agreement after the faults: ${where()}: ${cluster.disagreements(3).join('; ')}`).toBeDefined()
        },
      ),
      { numRuns: 25, seed: runSeed },
    )
  })
})
