// A member that lies about others, for the reliability suite: a real libp2p host
// with the cluster key and a key of its own, running the node's own membership
// service (so it joins, answers probes and is held alive like any member), that
// also writes forged membership messages straight onto the nodes' streams. It is
// what a key holder of a closed cluster that misbehaves can do; the nodes must
// take nothing from it that its own key does not sign.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { PRESETS, membershipConfig } from '../../membership/config.ts'
import type { Message } from '../../membership/types.ts'
import { createHost, type Host } from '../../node/host.ts'
import { nodeKeys } from '../../node/keys.ts'
import { MembershipService } from '../../node/membership.ts'
import { HostilePeer } from './hostile-peer.ts'

export class ForgingMember {
  readonly id: string
  readonly privateKey: PrivateKey
  readonly host: Host
  readonly membership: MembershipService

  private constructor (init: { privateKey: PrivateKey, host: Host, membership: MembershipService }) {
    this.privateKey = init.privateKey
    this.id = peerIdFromPrivateKey(init.privateKey).toString()
    this.host = init.host
    this.membership = init.membership
  }

  /** Starts, and joins through `seeds`: resolves once some member answered. */
  static async start (init: { clusterKey: Uint8Array | undefined, seeds: string[] }): Promise<ForgingMember> {
    const privateKey = await generateKeyPair('Ed25519')
    const host = await createHost({
      privateKey, host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000,
      ...(init.clusterKey === undefined ? {} : { clusterKey: init.clusterKey }),
    })
    await host.start()
    const membership = new MembershipService({
      host,
      config: membershipConfig({}, PRESETS.local),
      // No capacity: it is here to lie, not to run anything.
      meta: { cpuMillis: 0, memoryBytes: 0, labels: {}, isolation: 'none' },
      tickMs: 20,
      dialTimeoutMs: 2_000,
      log: pino({ level: 'silent' }),
      keys: nodeKeys(privateKey),
    })
    await membership.start()
    await membership.join(init.seeds, 10_000)
    return new ForgingMember({ privateKey, host, membership })
  }

  /** One membership message on a stream of its own, as any member would send it. */
  async send (addr: string, message: Message): Promise<void> {
    await HostilePeer.over(this.host).membership(addr, message)
  }

  /** Leaves like a member (so that nobody counts its going as a death), then stops. */
  async stop (): Promise<void> {
    await this.membership.leave(1_000).catch(() => {})
    await this.membership.stop()
    await this.host.stop()
  }
}
