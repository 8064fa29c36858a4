// What the state service needs of the network, and the libp2p implementation of
// it. The service (state.ts) batches, rate-limits, checks and applies; a transport
// only carries bytes:
//
//   publish(bytes) ──▶ every member            (gossipsub topic; the simulator: each reachable member)
//   gossip in ──▶ validate ──▶ gossip(from, bytes)
//   open(peer) ──▶ a channel of frames ◀── channel(…) on the peer   (one sync exchange each)
//   connected(peer): a new connection, a moment to sync
//
// testnet/sim/transport.ts carries the same over the simulated network, so the
// simulator runs this very service.

import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { type Message, TopicValidatorResult } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { SYNC_LIMITS } from '../crdt/sync.ts'
import { type FaultInjector, admitFrame } from './faults.ts'
import { type Host, STATE_TOPIC } from './host.ts'
import { isOversized } from './streams.ts'

export const SYNC_PROTOCOL = '/murmur/sync/1.0.0'

/** One sync exchange with one peer: length-delimited frames both ways. */
export interface SyncChannel {
  readonly peer: string
  write (frame: Uint8Array, signal: AbortSignal): Promise<void>
  /** The peer's next frame; a PeerError('oversized') for one over the frame limit. */
  read (signal: AbortSignal): Promise<Uint8Array>
  /** The exchange is over: closes our side. */
  close (signal: AbortSignal): Promise<void>
  abort (err: Error): void
}

export interface StateTransportHandlers {
  /** Runs before a gossip message is relayed: a reason refuses it (it is not relayed), null lets it through. */
  validate (from: string | undefined, data: Uint8Array): string | null
  /** A gossip message that passed `validate`; `from` is its signed author where the transport knows it. */
  gossip (from: string | undefined, data: Uint8Array): void
  /** A peer opened a sync exchange. */
  channel (channel: SyncChannel): void
  /** A new connection to a peer (it may not be a member yet). */
  connected (peer: string): void
}

export interface StateTransport {
  start (handlers: StateTransportHandlers): Promise<void>
  /** To every member; rejects when nobody could be reached (anti-entropy carries it then). */
  publish (data: Uint8Array): Promise<void>
  open (peer: string, signal: AbortSignal): Promise<SyncChannel>
  /** Stops delivering anything; exchanges in progress are aborted by their signals. */
  stop (): Promise<void>
}

/** A peer broke the sync protocol; `reason` is the counter it goes to. */
export class PeerError extends Error {
  override name = 'PeerError'
  readonly reason: string
  constructor (reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}

/** The state's gossip on a gossipsub topic, and sync exchanges on streams of SYNC_PROTOCOL. */
export class Libp2pStateTransport implements StateTransport {
  private readonly host: Host
  private readonly faults: FaultInjector | undefined
  private handlers: StateTransportHandlers | null = null

  /** `faults`: a testnet's fault rules, which every sync frame received passes (gossip passes them in host.ts). */
  constructor (host: Host, faults?: FaultInjector) {
    this.host = host
    this.faults = faults
  }

  async start (handlers: StateTransportHandlers): Promise<void> {
    this.handlers = handlers
    await this.host.handle(SYNC_PROTOCOL, (stream: Stream, connection: Connection) => {
      handlers.channel(new StreamChannel(stream, connection.remotePeer.toString(), this.faults))
    }, {
      // Frames are large (up to 32 MiB): a few syncs per peer at once, not dozens.
      maxInboundStreams: 4,
    })
    const pubsub = this.host.services.pubsub
    pubsub.topicValidators.set(STATE_TOPIC, (_peer, msg) => {
      const refused = handlers.validate(authorOf(msg), msg.data)
      // An author this node does not know as a member yet may have joined a moment ago: the
      // honest peer that relayed it is not to blame (Reject would lower its gossipsub score).
      if (refused === 'not-a-member') return TopicValidatorResult.Ignore
      return refused === null ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
    })
    pubsub.addEventListener('message', this.onMessage)
    pubsub.subscribe(STATE_TOPIC)
    this.host.addEventListener('peer:connect', this.onConnect)
  }

  async publish (data: Uint8Array): Promise<void> {
    await this.host.services.pubsub.publish(STATE_TOPIC, data)
  }

  async open (peer: string, signal: AbortSignal): Promise<SyncChannel> {
    const stream = await this.host.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal })
    return new StreamChannel(stream, peer, this.faults)
  }

  async stop (): Promise<void> {
    this.handlers = null
    this.host.removeEventListener('peer:connect', this.onConnect)
    const pubsub = this.host.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.topicValidators.delete(STATE_TOPIC)
    try { pubsub.unsubscribe(STATE_TOPIC) } catch {}
    await this.host.unhandle(SYNC_PROTOCOL).catch(() => {})
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic === STATE_TOPIC) this.handlers?.gossip(authorOf(msg), msg.data)
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    this.handlers?.connected(evt.detail.toString())
  }
}

function authorOf (msg: Message): string | undefined {
  return msg.type === 'signed' ? msg.from.toString() : undefined
}

class StreamChannel implements SyncChannel {
  readonly peer: string
  private readonly stream: Stream
  private readonly lp: LengthPrefixedStream<Stream>
  private readonly faults: FaultInjector | undefined

  constructor (stream: Stream, peer: string, faults: FaultInjector | undefined) {
    this.stream = stream
    this.peer = peer
    this.faults = faults
    this.lp = lpStream(stream, { maxDataLength: SYNC_LIMITS.frameBytesMax })
  }

  async write (frame: Uint8Array, signal: AbortSignal): Promise<void> {
    await this.lp.write(frame, { signal })
  }

  async read (signal: AbortSignal): Promise<Uint8Array> {
    let bytes: Uint8Array
    try {
      bytes = (await this.lp.read({ signal })).subarray()
    } catch (err) {
      if (isOversized(err)) throw new PeerError('oversized', `a sync frame over ${SYNC_LIMITS.frameBytesMax} bytes`)
      throw err
    }
    await admitFrame(this.faults, this.peer, 'sync', signal)
    return bytes
  }

  async close (signal: AbortSignal): Promise<void> {
    await this.stream.close({ signal }).catch(() => {})
  }

  abort (err: Error): void {
    this.stream.abort(err)
  }
}
