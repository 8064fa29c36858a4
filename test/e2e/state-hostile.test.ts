// A hostile member against the shared state: garbage and huge frames on the sync
// protocol, malformed and poisonous updates on the gossip topic. The node drops
// and counts them, stays up and a member, and its copy stays equal to its peer's.
// And a key holder that is not a member: it is neither answered nor read.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import pino from 'pino'
import * as Y from 'yjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '../../cli/client.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import { ClusterState } from '../../crdt/state.ts'
import { encodeFrame } from '../../crdt/sync.ts'
import { type Host, STATE_TOPIC, createHost } from '../../node/host.ts'
import { TaskRpc } from '../../node/rpc.ts'
import { SYNC_PROTOCOL } from '../../node/state-transport.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { testnetKey } from '../helpers/cluster-key.ts'
import { HostileMember } from '../helpers/hostile-member.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir = ''
let net: TestnetState
let member: HostileMember
/** The member's libp2p host: what it sends, a member sends. */
let host: Host
/** A key holder that never joined. */
let stranger: Host

beforeAll(async () => {
  ({ dir, state: net } = await startTestnet('hostile', 2))
  member = await HostileMember.start({ clusterKey: testnetKey(dir), seeds: [net.nodes[0]!.addrs[0]!] })
  host = member.host
  await waitUntil('node 0 to take the hostile member for a member', async () => (await connect(net.nodes[0]!.apiUrl).members()).members.find((m) => m.id === member.id)?.state, (state) => state === 'alive', 30_000)
  stranger = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, clusterKey: testnetKey(dir) })
  await stranger.start()
}, 60_000)
afterAll(async () => {
  await stranger?.stop()
  await member?.stop()
  await stopTestnet(dir)
}, 60_000)

const target = (): ReturnType<typeof multiaddr> => multiaddr(net.nodes[0]!.addrs[0]!)

/** Opens a sync stream to node 0, writes the frames, and reads until the node closes or resets it. */
async function sendSync (frames: Uint8Array[], maxDataLength = 64 * 1024 * 1024, from: Host = host): Promise<Uint8Array[]> {
  const replies: Uint8Array[] = []
  const stream = await from.dialProtocol(target(), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
  const lp = lpStream(stream, { maxDataLength })
  try {
    for (const frame of frames) await lp.write(frame, { signal: AbortSignal.timeout(10_000) })
    for (;;) replies.push((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
  } catch {
    // The node hung up on us: expected.
  }
  return replies
}

async function nodeStillWell (): Promise<void> {
  const client = connect(net.nodes[0]!.apiUrl)
  const { members } = await client.members()
  const alive = members.filter((m) => m.state === 'alive').map((m) => m.id)
  for (const n of net.nodes) expect(alive).toContain(n.peerId)
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

  it('malformed gossip is dropped; an update with an unsigned record or a type the schema does not know is refused whole', async () => {
    const client = connect(net.nodes[0]!.apiUrl)
    await host.dial(target(), { signal: AbortSignal.timeout(5_000) })
    // Wait until node 0 knows we are on the topic, so our messages reach it.
    await waitUntil('node 0 to list us as a topic peer', async () => host.services.pubsub.getSubscribers(STATE_TOPIC).map(String), (peers) => peers.includes(net.nodes[0]!.peerId!), 15_000)
    const before = (await client.state()).stats
    await member.gossip(Uint8Array.of(0xde, 0xad, 0xbe, 0xef))
    await host.services.pubsub.publish(STATE_TOPIC, Uint8Array.of(42, 0, 0))
    await member.gossip(member.forge((doc) => { doc.getMap('nodes').set('not-a-node', { hello: 'world' }) }))
    await member.gossip(member.forge((doc) => { doc.getMap('tasks').set('no-slash-here', new Y.Map()) }))
    await member.gossip(member.forge((doc) => { doc.getMap('elsewhere').set('k', 1) }))
    const delta = (s: typeof before, reason: string): number => (s.gossip.dropped[reason] ?? 0) - (before.gossip.dropped[reason] ?? 0)
    const stats = await waitUntil('the gossip to be judged', async () => (await client.state()).stats,
      (s) => delta(s, 'malformed') >= 2 && delta(s, 'forged') >= 1 && delta(s, 'not-allowed') >= 2)
    expect([delta(stats, 'malformed'), delta(stats, 'forged'), delta(stats, 'not-allowed')]).toEqual([2, 1, 2])
    // Refused before they were applied: nothing reached the document, so no reader had anything to skip.
    expect(stats.invalidRecords - before.invalidRecords).toBe(0)
    const { nodes } = await client.stateNodes()
    expect(nodes.map((n) => n.id).sort()).toEqual([...net.nodes.map((n) => n.peerId), member.id].sort())
    await nodeStillWell()
  })

  it('a key holder that is not a member is neither answered nor read', async () => {
    const client = connect(net.nodes[0]!.apiUrl)
    const before = (await client.state()).stats
    // Sync: not a frame back, not even a digest.
    const replies = await sendSync([encodeFrame({ type: 'hello', sv: Y.encodeStateVector(new Y.Doc()) })], undefined, stranger)
    expect(replies).toEqual([])
    // Gossip: a record it signed itself, honestly, is still not read.
    const own = new ClusterState({ self: stranger.peerId.toString(), life: 'l', keys: derivedKeys('unused') })
    const updates: Uint8Array[] = []
    own.doc.on('update', (u: Uint8Array) => { updates.push(u) })
    own.putJob({ id: 'stranger-job', name: 'stranger-job', type: 'batch', spec: { command: ['true'] }, desired: 'running', version: 1, submittedBy: 'x', submittedAt: 1, updatedAt: 1 })
    stranger.services.pubsub.subscribe(STATE_TOPIC)
    await stranger.dial(target(), { signal: AbortSignal.timeout(5_000) })
    await waitUntil('node 0 to list the stranger as a topic peer', async () => stranger.services.pubsub.getSubscribers(STATE_TOPIC).map(String), (peers) => peers.includes(net.nodes[0]!.peerId!), 15_000)
    await stranger.services.pubsub.publish(STATE_TOPIC, Uint8Array.of(1, ...Y.mergeUpdates(updates)))
    const stats = await waitUntil('the sync request and the gossip to be refused', async () => (await client.state()).stats,
      (s) => (s.sync.rejected['not-a-member'] ?? 0) > (before.sync.rejected['not-a-member'] ?? 0) && (s.gossip.dropped['not-a-member'] ?? 0) > (before.gossip.dropped['not-a-member'] ?? 0))
    expect(stats.gossip.applied).toBe(before.gossip.applied)
    expect((await client.jobs()).jobs.map((j) => j.name)).not.toContain('stranger-job')
    // The task RPC: no usage, no logs, no kill.
    const rpc = new TaskRpc(stranger, pino({ level: 'silent' }))
    await expect(rpc.usage(net.nodes[0]!.peerId!, [])).rejects.toThrow(/members of its cluster only/)
    await nodeStillWell()
  })
})
