// The conformance suite on the simulator, from one seed (replay with SEED=<n>):
// - membership: 5 real Swim cores, virtual clock; every wait is bounded by the
//   crash-detection bound derived from the config;
// - the shared state: complete simulated nodes (testnet/sim/node.ts: the node's
//   own StateService, reconcile loop and jobs service) on profile lan, and a
//   hostile peer that is no member, talking the simulated transport's format.

import { SIM, LAN, crashDetectionBoundMs } from '../../membership/config.ts'
import type { MemberMeta } from '../../membership/types.ts'
import { SimCluster } from '../../testnet/sim/cluster.ts'
import { SimClock } from '../../testnet/sim/clock.ts'
import { CHANNEL, type SimMachine, SimNode } from '../../testnet/sim/node.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'
import { SimRunner } from '../../testnet/sim/runner.ts'
import { SimStateTransport } from '../../testnet/sim/transport.ts'
import { SIM_EPOCH_MS } from '../../testnet/sim/world.ts'
import { type ClusterHarness, membershipConformance, type StateHarness, stateConformance } from './scenarios.ts'

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

/** What each simulated machine offers. */
const META: MemberMeta = { cpuMillis: 4_000, memoryBytes: 8 * 1024 ** 3, labels: { zone: 'sim' } }
const STATE_CHANNEL = CHANNEL.state
/** How long, in virtual time, the state scenarios wait for what they expect: a liveness limit, far above what they take. */
const WAIT_MS = 60_000
const HOSTILE = 'mallory'

function simStateHarness (): StateHarness {
  const machines = new Map<string, SimMachine>()
  const cluster: SimCluster = new SimCluster({
    seed,
    preset: LAN,
    tickMs: TICK_MS,
    epochMs: SIM_EPOCH_MS,
    meta: () => META,
    app: (context) => new SimNode({ context, meta: META, machine: machineOf(context.id), profile: 'lan', stableWindowMs: LAN.deadRetentionMs }),
  })
  /** A node's disk and its machine's tasks outlive its process. */
  function machineOf (id: string): SimMachine {
    let machine = machines.get(id)
    if (machine === undefined) {
      const clock = new SimClock(cluster, (fn) => { fn() }, cluster.skewOf(id), SIM_EPOCH_MS)
      const runner = new SimRunner({ node: id, clock, rng: new Rng(seed).fork(`machine/${id}`), capacity: META, onBreach: () => {} })
      machines.set(id, machine = { disk: { updates: [] }, runner })
    }
    return machine
  }
  const ids: string[] = []
  const node = (i: number): SimNode => {
    const app = cluster.appOfNode(ids[i]!) as SimNode | null
    if (app?.state === undefined || app.jobs === undefined) throw new Error(`node ${i} (${ids[i]}) does not run its parts, ${cluster.describe()}`)
    return app
  }
  /** The node code runs on promises: each step of the clock lets them run before the next. */
  const run = async (ms: number): Promise<void> => {
    const end = cluster.nowMs + ms
    while (cluster.nowMs < end) {
      cluster.step()
      await new Promise<void>((resolve) => { setImmediate(resolve) })
    }
  }
  const waitFor = async (what: string, check: () => Promise<boolean>): Promise<void> => {
    const limit = cluster.nowMs + WAIT_MS
    for (;;) {
      if (await check().catch(() => false)) return
      if (cluster.nowMs > limit) throw new Error(`${what} did not happen within ${WAIT_MS} ms of virtual time, ${cluster.describe()}`)
      await run(100)
    }
  }
  /** Runs the clock until `promise` settles: what a node resolves after its (simulated) fsync. */
  const settle = async <T>(what: string, promise: Promise<T>): Promise<T> => {
    let done = false
    const watched = promise.finally(() => { done = true })
    watched.catch(() => {})
    const limit = cluster.nowMs + WAIT_MS
    while (!done) {
      if (cluster.nowMs > limit) throw new Error(`${what} did not finish within ${WAIT_MS} ms of virtual time, ${cluster.describe()}`)
      await run(TICK_MS)
    }
    return await watched
  }
  const up = (): string[] => ids.filter((id) => cluster.status(id) === 'up')

  // The hostile peer: the simulated transport itself, on a host that is no member.
  let target = ''
  const send = cluster.outsider(HOSTILE, (from, bytes) => { if (bytes[0] === STATE_CHANNEL) hostile.receive(from, bytes.subarray(1)) })
  const hostile = new SimStateTransport({ self: HOSTILE, send: (to, bytes) => { send(to, Uint8Array.of(STATE_CHANNEL, ...bytes)) }, reachable: () => [target] })
  void hostile.start({ validate: () => null, gossip: () => {}, channel: (channel) => { channel.abort(new Error('not listening')) }, connected: () => {} })

  return {
    start: async (n) => {
      ids.push(...cluster.grow(n, { joinEveryMs: 20 }))
      await waitFor(`${n} nodes to form a cluster and run their parts`, async () => cluster.allAgree() && ids.every((_, i) => node(i).state !== undefined))
    },
    crash: async (i) => { cluster.crash(ids[i]!) },
    restart: async (i) => {
      cluster.restart(ids[i]!, up())
      await waitFor(`node ${i} to run its parts again`, async () => node(i).state !== undefined)
    },
    join: async () => {
      const [id] = cluster.grow(1, { seeds: up() })
      ids.push(id!)
      await waitFor(`${id} to join and run its parts`, async () => node(ids.length - 1).state !== undefined)
      return ids.length - 1
    },
    submit: async (i, job) => (await settle(`a submit on node ${i}`, node(i).submit(job))).id,
    state: async (i) => {
      const { state, jobs } = node(i)
      return { digest: state!.info().digest, jobs: jobs!.jobs(true).map((j) => j.id), stats: structuredClone(state!.stats) }
    },
    gossip: async (i, data) => {
      target = ids[i]!
      await hostile.publish(data)
      await run(100)
    },
    sync: async (i, frames) => {
      const aborter = new AbortController()
      const channel = await hostile.open(ids[i]!, aborter.signal)
      try {
        // One frame per network delay and more: the simulated network reorders what is sent in
        // the same moment, and a stream (as over libp2p) keeps the frames in order.
        for (const frame of frames) {
          await channel.write(frame, aborter.signal)
          await run(20)
        }
      } catch {
        // The node hung up before the last frame.
      }
      const reading = (async () => {
        try {
          for (;;) await channel.read(aborter.signal)
        } catch {
          // The node hung up on us: expected.
        }
      })()
      // A node that never hangs up fails the scenario on its counts, not here.
      cluster.at(cluster.nowMs + 20_000, () => { aborter.abort(new Error('the node did not hang up')) })
      await settle(`a sync exchange with node ${i}`, reading)
    },
    waitFor,
    stop: async () => {
      // An exception in node code is a bug the simulation found.
      if (cluster.appErrors.length > 0) throw new Error(`node code threw: ${cluster.appErrors.map((e) => `${e.id} at ${e.atMs} ms: ${e.error.stack ?? e.error.message}`).join('\n')}`)
    },
    describe: () => cluster.describe(),
  }
}

stateConformance(`simulator (seed ${seed}; replay with SEED=${seed})`, simStateHarness, 60_000)
