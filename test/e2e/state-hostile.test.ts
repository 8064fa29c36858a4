// A hostile peer against the shared state: garbage and huge frames on the sync
// protocol, malformed and poisonous updates on the gossip topic. The node drops
// and counts them, stays up and a member, and its copy stays equal to its peer's.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import * as Y from 'yjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '../../cli/client.ts'
import { encodeFrame } from '../../crdt/sync.ts'
import { type Host, STATE_TOPIC, createHost } from '../../node/host.ts'
import { SYNC_PROTOCOL } from '../../node/state-transport.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { testnetKey } from '../helpers/cluster-key.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir = ''
let net: TestnetState
let host: Host

beforeAll(async () => {
  ({ dir, state: net } = await startTestnet('hostile', 2))
  host = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, clusterKey: testnetKey(dir) })
  await host.start()
}, 60_000)
afterAll(async () => {
  await host?.stop()
  await stopTestnet(dir)
}, 60_000)

const target = (): ReturnType<typeof multiaddr> => multiaddr(net.nodes[0]!.addrs[0]!)

/** Opens a sync stream to node 0, writes the frames, and reads until the node closes or resets it. */
async function sendSync (frames: Uint8Array[], maxDataLength = 64 * 1024 * 1024): Promise<void> {
  const stream = await host.dialProtocol(target(), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
  const lp = lpStream(stream, { maxDataLength })
  try {
    for (const frame of frames) await lp.write(frame, { signal: AbortSignal.timeout(10_000) })
    for (;;) await lp.read({ signal: AbortSignal.timeout(10_000) })
  } catch {
    // The node hung up on us: expected.
  }
}

async function nodeStillWell (): Promise<void> {
  const client = connect(net.nodes[0]!.apiUrl)
  const { members } = await client.members()
  expect(members.filter((m) => m.state === 'alive').map((m) => m.id).sort()).toEqual(net.nodes.map((n) => n.peerId).sort())
  await client.updateLabels({ still: 'writable' }, [])
  await waitUntil('the copies to be equal', async () => await client.compareState(net.nodes[1]!.peerId!), (c) => c.equal)
}

describe('a hostile peer on the state protocols', () => {
  it('garbage, out-of-order and malformed sync frames are dropped and counted', async () => {
    const client = connect(net.nodes[0]!.apiUrl)
    const before = (await client.state()).stats.sync.rejected
    await sendSync([Uint8Array.of(99, 1, 2, 3)]) // unknown frame type
    await sendSync([Uint8Array.of(1, 0xff, 0xff, 0xff, 0xff, 0xff)]) // hello with a broken state vector
    await sendSync([encodeFrame({ type: 'diff', update: Uint8Array.of(0) })]) // a diff before any hello
    // A proper hello, then a diff that is not a Yjs update.
    await sendSync([encodeFrame({ type: 'hello', sv: Y.encodeStateVector(new Y.Doc()) }), encodeFrame({ type: 'diff', update: new Uint8Array(1000).fill(7) })])
    const rejected = await waitUntil('the bad frames to be counted', async () => (await client.state()).stats.sync.rejected,
      (r) => (r.malformed ?? 0) - (before.malformed ?? 0) >= 3 && (r.unexpected ?? 0) - (before.unexpected ?? 0) >= 1)
    expect(rejected.malformed! - (before.malformed ?? 0)).toBe(3)
    expect(rejected.unexpected! - (before.unexpected ?? 0)).toBe(1)
    await nodeStillWell()
  })

  it('a frame over the size limit is refused before it is read whole', async () => {
    const client = connect(net.nodes[0]!.apiUrl)
    const before = (await client.state()).stats.sync.rejected.oversized ?? 0
    await sendSync([new Uint8Array(40 * 1024 * 1024)])
    await waitUntil('the oversized frame to be counted', async () => (await client.state()).stats.sync.rejected.oversized ?? 0, (n) => n === before + 1)
    await nodeStillWell()
  })

  it('malformed gossip is rejected; a well-formed update with junk records is applied but its records are skipped', async () => {
    const client = connect(net.nodes[0]!.apiUrl)
    await host.dial(target(), { signal: AbortSignal.timeout(5_000) })
    host.services.pubsub.subscribe(STATE_TOPIC)
    // Wait until node 0 knows we are on the topic, so our messages reach it.
    await waitUntil('node 0 to list us as a topic peer', async () => host.services.pubsub.getSubscribers(STATE_TOPIC).map(String), (peers) => peers.includes(net.nodes[0]!.peerId!), 15_000)
    const before = (await client.state()).stats
    await host.services.pubsub.publish(STATE_TOPIC, Uint8Array.of(1, 0xde, 0xad, 0xbe, 0xef))
    await host.services.pubsub.publish(STATE_TOPIC, Uint8Array.of(42, 0, 0))
    const junk = new Y.Doc()
    junk.getMap('nodes').set('not-a-node', { hello: 'world' })
    junk.getMap('tasks').set('no-slash-here', new Y.Map())
    const update = Y.encodeStateAsUpdate(junk)
    await host.services.pubsub.publish(STATE_TOPIC, Uint8Array.of(1, ...update))
    const stats = await waitUntil('the gossip to be judged', async () => (await client.state()).stats,
      (s) => (s.gossip.dropped.malformed ?? 0) - (before.gossip.dropped.malformed ?? 0) >= 2 && s.invalidRecords - before.invalidRecords >= 2)
    expect((stats.gossip.dropped.malformed ?? 0) - (before.gossip.dropped.malformed ?? 0)).toBe(2)
    expect(stats.invalidRecords - before.invalidRecords).toBe(2)
    const { nodes } = await client.stateNodes()
    expect(nodes.map((n) => n.id).sort()).toEqual(net.nodes.map((n) => n.peerId).sort())
    await nodeStillWell()
  })
})
