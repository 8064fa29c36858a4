// A member that misbehaves: a key holder that joined the cluster the proper way,
// with the node's own membership and state code, and then writes what an honest
// node never would (records under other nodes' names, replayed signatures, items
// under another writer's client id). Everything it sends goes out on the real
// protocols, so the honest nodes judge it exactly as they would judge a
// compromised node.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import pino from 'pino'
import * as Y from 'yjs'
import { nodeRecord, signedAs } from '../crdt/helpers.ts'
import { PRESETS, membershipConfig } from '../../membership/config.ts'
import { stateConfig } from '../../node/config.ts'
import { type Host, STATE_TOPIC, createHost } from '../../node/host.ts'
import { nodeKeys } from '../../node/keys.ts'
import { MembershipService } from '../../node/membership.ts'
import type { RecordKeys } from '../../crdt/signing.ts'
import { StateService, gossipMessage, loadState } from '../../node/state.ts'
import { StateStore } from '../../node/state-store.ts'
import { Libp2pStateTransport } from '../../node/state-transport.ts'


export class HostileMember {
  readonly id: string
  readonly host: Host
  readonly membership: MembershipService
  readonly state: StateService
  /** Its own signing key: what it signs, it signs as itself. */
  readonly keys: RecordKeys
  private readonly dir: string
  private readonly storage: StateStore

  private constructor (init: { id: string, keys: RecordKeys, host: Host, membership: MembershipService, state: StateService, dir: string, storage: StateStore }) {
    this.id = init.id
    this.keys = init.keys
    this.host = init.host
    this.membership = init.membership
    this.state = init.state
    this.dir = init.dir
    this.storage = init.storage
  }

  /** Joins through `seeds` with the cluster key, and syncs the state like any node. */
  static async start (init: { clusterKey: Uint8Array, seeds: string[] }): Promise<HostileMember> {
    const privateKey = await generateKeyPair('Ed25519')
    const id = peerIdFromPrivateKey(privateKey).toString()
    const log = pino({ level: 'silent' })
    const dir = await mkdtemp(join(tmpdir(), 'murmur-hostile-member-'))
    const host = await createHost({ privateKey, host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, clusterKey: init.clusterKey })
    await host.start()
    const keys = nodeKeys(privateKey)
    const membership = new MembershipService({
      host,
      config: membershipConfig({}, PRESETS.local),
      // No capacity: placement never gives it an instance; it is here to lie, not to work.
      meta: { cpuMillis: 0, memoryBytes: 0, labels: {}, apiUrl: '', isolation: 'none' },
      tickMs: 20,
      dialTimeoutMs: 2_000,
      log,
      keys,
    })
    await membership.start()
    await membership.join(init.seeds, 10_000)
    const storage = await StateStore.open(join(dir, 'state'), { log })
    const records = await loadState({ self: id, keys, storage, log, where: dir })
    const state = new StateService({
      state: records,
      storage,
      transport: new Libp2pStateTransport(host),
      members: {
        peers: () => membership.members().filter((m) => m.state === 'alive' && m.id !== id).map((m) => m.id),
        stateOf: (peer) => membership.swim.member(peer)?.state,
      },
      config: stateConfig('local'),
      log,
    })
    await state.start()
    // Its own record, honestly signed, with nothing to offer: the honest nodes see a member like any other.
    state.records.setNode(nodeRecord(id, { addrs: host.getMultiaddrs().map(String), apiUrl: '', cpuMillis: 0, memoryBytes: 0 }))
    return new HostileMember({ id, keys, host, membership, state, dir, storage })
  }

  /**
   * An update that does to a copy of this member's replica what `forge` does with
   * the plain Yjs API (under the client id `client`, when given), as one update.
   */
  forge (forge: (doc: Y.Doc) => void, client?: number): Uint8Array {
    const copy = new Y.Doc()
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(this.state.records.doc))
    if (client !== undefined) copy.clientID = client
    const before = Y.encodeStateVector(copy)
    forge(copy)
    const update = Y.encodeStateAsUpdate(copy, before)
    copy.destroy()
    return update
  }

  /**
   * Sets `key` of `map` in a forged copy to `record`, signed by this member for the
   * item it makes, under a client id of its own: a record that is honestly its own
   * in every respect but where it is put.
   */
  signAsSelf (doc: Y.Doc, map: Y.Map<unknown>, at: { kind: string, space: string }, key: string, record: unknown): void {
    signedAs(doc, this.id, this.keys)(map, at, key, record)
  }

  /** Sends an update on the gossip topic, as a node sends its changes. */
  async gossip (update: Uint8Array): Promise<void> {
    await this.host.services.pubsub.publish(STATE_TOPIC, gossipMessage(update))
  }

  async stop (): Promise<void> {
    await this.state.stop().catch(() => {})
    await this.membership.stop().catch(() => {})
    await this.host.stop()
    await this.storage.close().catch(() => {})
    await rm(this.dir, { recursive: true, force: true })
  }
}
