// More than 11 nodes on one IP: the size at which libp2p's per-host inbound
// connection limit and gossipsub's scoring by IP start to bind (node/README.md,
// "libp2p on one host").
// An in-memory transport would hide both, so this runs on TCP loopback.

import { afterAll, beforeAll, expect, it } from 'vitest'
import { connect } from '../../cli/client.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 12
let dir: string
let state: TestnetState

beforeAll(async () => {
  ({ dir, state } = await startTestnet('e2e12', N, 120_000))
}, 150_000)

afterAll(async () => { await stopTestnet(dir) }, 60_000)

it('12 nodes started at once all see each other, and all see a crash', async () => {
  // up() returned once every node listed all 12 alive. Twelve processes booting on
  // two cores can still draw a passing suspicion (refuted at once), so what must
  // hold at any instant is: everyone known, nobody dead.
  for (const node of state.nodes) {
    const { members } = await connect(node.apiUrl).members()
    expect(members, `node ${node.index}'s view`).toHaveLength(N)
    expect(members.filter((m) => m.state === 'dead' || m.state === 'left'), `node ${node.index}'s view`).toEqual([])
  }
  await testnet.kill(dir, 7)
  const victim = state.nodes[7]!.peerId
  await waitUntil('node 7 dead on all 11 survivors', async () => await Promise.all(
    state.nodes.filter((n) => n.index !== 7).map(async (n) => (await connect(n.apiUrl).members()).members.find((m) => m.id === victim)?.state),
  ), (views) => views.every((v) => v === 'dead'))
})
