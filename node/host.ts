// The libp2p host of one node: TCP, a private network (the cluster key), Noise,
// Yamux, identify and ping, with every limit that matters for a cluster on one
// host set explicitly (node/README.md, "libp2p on one host" and "The cluster key").

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import type { RPC } from '@libp2p/gossipsub/message'
import { identify } from '@libp2p/identify'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { createLibp2p, type Libp2p } from 'libp2p'
import { SYNC_LIMITS } from '../crdt/sync.ts'
import type { FaultInjector } from './faults.ts'
import { boundPnetCipher } from './pnet-cipher.ts'

export interface HostInit {
  privateKey: PrivateKey
  /** Largest gossipsub frame a peer may send us (several messages and control). */
  gossipBytesMax?: number
  host: string
  port: number
  mdns: boolean
  dialTimeoutMs: number
  /** Testnet fault rules (--fault-injection): a connection gater, and a filter on inbound gossip. */
  faults?: FaultInjector
  /**
   * The cluster key file's bytes (@libp2p/pnet's format): every connection is
   * wrapped in a private network, so a host without this key (or with another)
   * cannot complete one. Without it the host is open to anyone who reaches it.
   */
  clusterKey?: Uint8Array
}

export type Host = Libp2p<{
  identify: ReturnType<ReturnType<typeof identify>>
  ping: ReturnType<ReturnType<typeof ping>>
  pubsub: ReturnType<ReturnType<typeof gossipsub>>
}>

/** The one gossipsub topic: live updates of the cluster state. */
export const STATE_TOPIC = '/murmur/state/1'

export const HOST_LIMITS = Object.freeze({
  /** Every member may keep a connection to every other: room for a 1,000-node cluster. */
  maxConnections: 1_100,
  /**
   * libp2p allows 5 inbound connections per second per remote host by default; a
   * testnet of 20 nodes on one IP exceeds that at start and saw ECONNRESET.
   */
  inboundConnectionThreshold: 1_000,
  maxIncomingPendingConnections: 256,
  /**
   * An inbound connection must finish its set-up (private network nonces, Noise,
   * Yamux) within this, 10 s by default: a stranger that connects and sends
   * nothing, or bytes under another key, holds a pending slot no longer. A LAN
   * set-up takes milliseconds.
   */
  inboundUpgradeTimeoutMs: 2_000,
  /**
   * The private network's nonce exchange, for connections libp2p hands over
   * without a signal of its own (1 s by default); dials and inbound set-ups pass
   * theirs, bounded by the dial timeout and inboundUpgradeTimeoutMs.
   */
  pnetHandshakeTimeoutMs: 2_000,
})

export async function createHost (init: HostInit): Promise<Host> {
  if (init.clusterKey !== undefined) boundPnetCipher()
  const ip = init.host.includes(':') ? 'ip6' : 'ip4'
  const host = await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [`/${ip}/${init.host}/tcp/${init.port}`] },
    transports: [tcp()],
    ...(init.clusterKey === undefined ? {} : { connectionProtector: preSharedKey({ psk: init.clusterKey, timeout: HOST_LIMITS.pnetHandshakeTimeoutMs }) }),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // mDNS is loaded only when asked for.
    peerDiscovery: init.mdns ? [(await import('@libp2p/mdns')).mdns({ interval: 5_000 })] : [],
    connectionManager: {
      maxConnections: HOST_LIMITS.maxConnections,
      inboundConnectionThreshold: HOST_LIMITS.inboundConnectionThreshold,
      maxIncomingPendingConnections: HOST_LIMITS.maxIncomingPendingConnections,
      dialTimeout: init.dialTimeoutMs,
      inboundUpgradeTimeout: HOST_LIMITS.inboundUpgradeTimeoutMs,
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // The first node of a cluster publishes before anyone subscribes.
        allowPublishToZeroTopicPeers: true,
        // A testnet runs every node on one IP: colocation scoring would graylist them all
        // (node/README.md, "libp2p on one host").
        scoreParams: { IPColocationFactorWeight: 0 },
        allowedTopics: [STATE_TOPIC],
        // A copy of a message already seen is dropped by its (signed) author and
        // sequence number before its signature is checked again: measured at about
        // a quarter of a node's CPU under load (bench/state.ts). The message id
        // itself is the same pair, so this adds no way to shadow a message.
        fastMsgIdFn: (msg) => `${hex(msg.from)}:${hex(msg.seqno)}`,
        maxInboundDataLength: init.gossipBytesMax ?? SYNC_LIMITS.gossipFrameBytesMax,
        emitSelf: false,
      }),
    },
    ...(init.faults === undefined ? {} : { connectionGater: init.faults.gater() }),
    start: false,
  }) as Host
  if (init.faults !== undefined) filterGossip(host, init.faults)
  return host
}

/** The method of gossipsub's implementation (not of its interface) that every RPC read from a peer goes through. */
interface RpcReceiver {
  handleReceivedRpc: (from: PeerId, rpc: RPC) => Promise<void>
}

/**
 * Every RPC a peer sends on gossipsub (messages, subscriptions and control) passes
 * the fault rules as one datagram, before gossipsub sees any of it. gossipsub
 * calls this method per RPC without waiting for it, so a delay holds up only that RPC.
 */
function filterGossip (host: Host, faults: FaultInjector): void {
  const pubsub = host.services.pubsub as unknown as RpcReceiver
  // A gossipsub that renamed it would let every gossip message through unnoticed: fail loudly instead.
  if (typeof pubsub.handleReceivedRpc !== 'function') throw new Error('this gossipsub has no handleReceivedRpc(): fault injection cannot filter gossip; update node/host.ts')
  const handle = pubsub.handleReceivedRpc.bind(pubsub)
  pubsub.handleReceivedRpc = async (from, rpc) => {
    if (await faults.arrive(from.toString(), 'gossip') === null) await handle(from, rpc)
  }
}

function hex (bytes: Uint8Array | undefined): string {
  return bytes === undefined ? '' : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}
