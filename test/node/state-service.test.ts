// Two StateServices on real libp2p hosts (loopback), with level databases in temp
// dirs: a write acknowledged just before its node stops still reaches the peer by
// gossip (there is no anti-entropy with a stopped node), and a peer that removes
// this node's records is overruled at once.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { StateConfig } from '../../node/config.ts'
import { type Host, STATE_TOPIC, createHost } from '../../node/host.ts'
import { nodeKeys } from '../../node/keys.ts'
import { StateService, loadState } from '../../node/state.ts'
import { StateStore } from '../../node/state-store.ts'
import { Libp2pStateTransport } from '../../node/state-transport.ts'
import { nodeRecord } from '../crdt/helpers.ts'
import { waitUntil } from '../helpers/wait.ts'

const config: StateConfig = {
  resetState: false,
  taskRetentionMs: 60_000,
  jobRetentionMs: 60_000,
  nodeRetentionMs: 60_000,
  // No periodic anti-entropy within the test: what arrives, arrives by gossip.
  syncIntervalMs: 3_600_000,
  gossipBatchMs: 5,
  publishPerSecondMax: 50,
  maintainIntervalMs: 3_600_000,
}

interface Peer { host: Host, service: StateService, id: string }
const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step().catch(() => {})
})

async function peer (dir: string, name: string, others: () => Peer[]): Promise<Peer> {
  const privateKey = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(privateKey).toString()
  const host = await createHost({ privateKey, host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000 })
  const log = pino({ level: 'silent' })
  const storage = await StateStore.open(join(dir, name), { log })
  const service = new StateService({
    state: await loadState({ self: id, keys: nodeKeys(privateKey), storage, log, where: name }),
    storage,
    transport: new Libp2pStateTransport(host),
    members: {
      peers: () => others().filter((p) => p.id !== id).map((p) => p.id),
      stateOf: (m) => others().some((p) => p.id === m) ? 'alive' : undefined,
    },
    config,
    log,
  })
  await host.start()
  await service.start()
  cleanup.push(async () => { await storage.close() }, async () => { await service.stop() }, async () => { await host.stop() })
  return { host, service, id }
}

async function pair (): Promise<[Peer, Peer]> {
  const dir = await mkdtemp(join(tmpdir(), 'murmur-state-service-'))
  cleanup.unshift(async () => { await rm(dir, { recursive: true, force: true }) })
  const peers: Peer[] = []
  peers.push(await peer(dir, 'a', () => peers))
  peers.push(await peer(dir, 'b', () => peers))
  const [a, b] = peers as [Peer, Peer]
  await a.host.dial(b.host.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5_000) })
  // Both on the topic, so that a publish reaches the other at once.
  await waitUntil('the gossip topic to connect', async () => [a.host.services.pubsub.getSubscribers(STATE_TOPIC).length, b.host.services.pubsub.getSubscribers(STATE_TOPIC).length],
    ([x, y]) => x === 1 && y === 1, 10_000, 50)
  // And the initial anti-entropy of the new connection over.
  await waitUntil('the first sync', async () => b.service.info().syncs.some((s) => s.ok), (v) => v, 10_000, 50)
  return [a, b]
}

describe('the state service on real hosts', () => {
  it('a write acknowledged right before stop is gossiped by the stop', async () => {
    const [a, b] = await pair()
    await a.service.write((s) => { s.setNode(nodeRecord(a.id, { labels: { last: 'words' } })) })
    await a.service.stop()
    await waitUntil('the peer to have the last write', async () => b.service.records.node(a.id)?.labels.last, (v) => v === 'words', 10_000, 50)
  })

  it('refuses a write from inside a transaction, where it could not wait for the disk', async () => {
    const [a] = await pair()
    let inner: Promise<void> | undefined
    a.service.records.transact(() => {
      inner = a.service.write((s) => { s.setNode(nodeRecord(a.id)) })
    })
    await expect(inner).rejects.toThrow(/inside a document transaction/)
    expect(a.service.records.node(a.id)).toBeUndefined()
  })

  it('records a peer removes from this node are written back, and the peer gets them again', async () => {
    const [a, b] = await pair()
    await a.service.write((s) => {
      s.putTask({ id: 't1', job: 'j1', node: a.id, generation: 1, state: 'running', since: 1, restarts: 0 })
    })
    await waitUntil('b to see the task', async () => b.service.records.taskClaims('t1').length, (n) => n === 1, 10_000, 50)
    // b takes a for gone (as one cut off alone for a day would) and removes its records.
    // The removal is in b's document once write() has run its transaction, but write()
    // resolves only when the update is on disk, and the gossip goes out in parallel
    // with the fsync: a can have written the record back, and b applied that, before
    // the await returns. So the removal is checked before awaiting the disk.
    const removed = b.service.write((s) => { s.maintain({ now: 1, taskRetentionMs: 1, jobRetentionMs: 1, isGone: (id) => id === a.id }) })
    expect(b.service.records.taskClaims('t1')).toHaveLength(0)
    await removed
    await waitUntil('a to write it back and b to have it again', async () => b.service.records.taskClaims('t1').length, (n) => n === 1, 10_000, 50)
    expect(a.service.records.taskClaims('t1')).toHaveLength(1)
  })
})
