// The conformance suite on real node processes: a 5-node testnet on loopback,
// Swim over libp2p, every view read through a node's HTTP API.

import { connect } from '../../cli/client.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { type ClusterHarness, membershipConformance } from './scenarios.ts'

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
