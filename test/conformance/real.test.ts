// The conformance suite on real node processes: 5-node testnets on loopback,
// Swim over libp2p, every view read through a node's HTTP API. The hostile peer
// of the state scenarios is a libp2p host of its own, no member: it dials the sync
// protocol and publishes on the state's gossip topic.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { connect } from '../../cli/client.ts'
import { type Host, STATE_TOPIC, createHost } from '../../node/host.ts'
import { SYNC_PROTOCOL } from '../../node/state-transport.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { testnetKey } from '../helpers/cluster-key.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { type ClusterHarness, membershipConformance, type StateHarness, stateConformance } from './scenarios.ts'

function realHarness (): ClusterHarness {
  let dir = ''
  let state: TestnetState
  return {
    start: async (n) => { ({ dir, state } = await startTestnet('conformance', n)) },
    crash: async (i) => { await testnet.kill(dir, i) },
    pause: async (i) => { await testnet.pause(dir, i) },
    resume: async (i) => { await testnet.resume(dir, i) },
    leave: async (i) => { await testnet.stop(dir, i) },
    restart: async (i) => { state.nodes[i] = await testnet.restart(dir, i) },
    view: async (observer, subject) => {
      const { members } = await connect(state.nodes[observer]!.apiUrl, { timeoutMs: 2_000 }).members()
      const member = members.find((m) => m.id === state.nodes[subject]!.peerId)
      return member === undefined ? undefined : { state: member.state, incarnation: member.incarnation }
    },
    // A liveness limit far above any expected time, not a performance assertion.
    waitFor: async (what, check) => { await waitUntil(what, check, (done) => done, 30_000) },
    stop: async () => { await stopTestnet(dir) },
    describe: () => `testnet in ${dir}`,
  }
}

membershipConformance('real processes on loopback', realHarness, 90_000)

function realStateHarness (): StateHarness {
  let dir = ''
  let state: TestnetState
  let host: Host | undefined
  const client = (i: number): ReturnType<typeof connect> => connect(state.nodes[i]!.apiUrl, { timeoutMs: 5_000 })
  const addr = (i: number): ReturnType<typeof multiaddr> => multiaddr(state.nodes[i]!.addrs[0]!)
  return {
    start: async (n) => {
      ({ dir, state } = await startTestnet('conformance-state', n))
      host = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, clusterKey: testnetKey(dir) })
      await host.start()
    },
    crash: async (i) => { await testnet.kill(dir, i) },
    restart: async (i) => { state.nodes[i] = await testnet.restart(dir, i) },
    join: async () => {
      const node = await testnet.add(dir)
      state.nodes[node.index] = node
      return node.index
    },
    submit: async (i, job) => (await client(i).submitJob(job)).id,
    state: async (i) => {
      const [info, { jobs }] = await Promise.all([client(i).state(), client(i).jobs({ all: true })])
      return { digest: info.digest, jobs: jobs.map((j) => j.id), stats: info.stats }
    },
    gossip: async (i, data) => {
      const pubsub = host!.services.pubsub
      await host!.dial(addr(i), { signal: AbortSignal.timeout(5_000) })
      pubsub.subscribe(STATE_TOPIC)
      // Node i must list us on the topic, or the message goes nowhere.
      await waitUntil(`node ${i} to list the hostile peer on the state topic`, async () => pubsub.getSubscribers(STATE_TOPIC).map(String), (peers) => peers.includes(state.nodes[i]!.peerId!), 15_000)
      await pubsub.publish(STATE_TOPIC, data)
    },
    sync: async (i, frames) => {
      const stream = await host!.dialProtocol(addr(i), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
      const lp = lpStream(stream)
      try {
        for (const frame of frames) await lp.write(frame, { signal: AbortSignal.timeout(10_000) })
        for (;;) await lp.read({ signal: AbortSignal.timeout(10_000) })
      } catch {
        // The node hung up on us: expected.
      }
    },
    // A liveness limit far above any expected time, not a performance assertion.
    waitFor: async (what, check) => { await waitUntil(what, check, (done) => done, 30_000) },
    stop: async () => {
      await host?.stop()
      await stopTestnet(dir)
    },
    describe: () => `testnet in ${dir}`,
  }
}

stateConformance('real processes on loopback', realStateHarness, 90_000)
