// Membership over libp2p: drives the pure SWIM state machine with the real clock,
// carries its messages on a protocol of ours (length-prefixed JSON frames, one
// long-lived stream per peer and direction), and turns transport facts into
// inputs: a refused dial is an undeliverable message, a closed connection a hint.
//
// The sender of a frame is the stream's remote peer, authenticated by the
// connection's handshake: the state machine takes it as who speaks. Each inbound
// stream has read deadlines (a first frame soon, then frames that arrive whole
// within a deadline, and not too long a silence between them), and each peer a
// cap on its open streams and on the bytes it may send per second: a peer that
// misbehaves costs a bounded share of this node.

import { EventEmitter } from 'node:events'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import type { RecordKeys } from '../crdt/signing.ts'
import { LIMITS, decodeMessage, encodeMessage } from '../membership/codec.ts'
import type { MembershipConfig } from '../membership/config.ts'
import { Swim } from '../membership/swim.ts'
import type { Member, MemberEvent, MemberMeta, Message, Outbound, Refusal } from '../membership/types.ts'
import type { FaultInjector } from './faults.ts'
import type { Host } from './host.ts'
import { statementKeys } from './keys.ts'
import { isOversized, isStreamGone } from './streams.ts'

/** Version 2: signed self statements (membership/codec.ts). A cluster is upgraded whole. */
export const MEMBERSHIP_PROTOCOL = '/murmur/membership/2.0.0'

export const TRANSPORT_LIMITS = Object.freeze({
  /** Messages waiting for one peer's stream (a dial in progress); older ones are dropped first. */
  queuedMessagesPerPeerMax: 256,
  /** Inbound membership streams per connection: one is normal, a few allow for reopening. */
  inboundStreamsPerConnectionMax: 8,
  /** Inbound membership streams per peer, over all its connections: a peer cannot multiply the cap by connecting again. */
  inboundStreamsPerPeerMax: 8,
  /** A new stream is opened to send a frame at once: nothing within this long is a peer holding a stream for nothing. */
  firstFrameMs: 5_000,
  /** Once a frame's first bytes arrived, the rest comes within this long: a frame of the largest size takes milliseconds on any link we run on. */
  frameReadMs: 5_000,
  /**
   * Silence on a stream after a frame: members send each other something every few
   * probe intervals, and a sender reopens a stream it finds closed, so an idle one
   * is closed rather than held.
   */
  streamIdleMs: 60_000,
  /**
   * Bytes per second one peer may send us, refilled continuously, with a burst of
   * two of the largest messages (a join's push-pull and its answer). A member sends
   * a few KiB per second; a 1,000-member push-pull is a few hundred KiB.
   */
  peerBytesPerSecondMax: 1_048_576,
  peerBytesBurstMax: 2 * LIMITS.messageBytesMax,
  /** A refusal from one peer for one reason is logged as a warning at most this often; the rest at debug. */
  refusalWarnIntervalMs: 60_000,
})

/** First retry of an unreachable --join address after 250 ms, doubling up to 2 s. */
const JOIN_BACKOFF_MS = 250
const JOIN_BACKOFF_MAX_MS = 2_000

export interface MembershipStats {
  sentMessages: number
  sentBytes: number
  receivedMessages: number
  receivedBytes: number
  /** Peer messages dropped at the boundary, by reason. */
  rejected: Record<string, number>
  undeliverable: number
  droppedQueueFull: number
}

interface Link {
  peer: string
  queue: Array<{ outbound: Outbound, bytes: Uint8Array }>
  stream: LengthPrefixedStream<Stream> | null
  raw: Stream | null
  flushing: boolean
}

export interface MembershipServiceInit {
  host: Host
  config: MembershipConfig
  meta: MemberMeta
  tickMs: number
  dialTimeoutMs: number
  log: Logger
  /** Testnet fault rules: every frame received passes them. */
  faults?: FaultInjector
  /**
   * The node's keys (node/keys.ts, the same the state signs with): sign what this
   * member says about itself and check what others say about themselves. Without
   * them, membership runs unsigned, and says so in one warning.
   */
  keys?: RecordKeys
}

/** A peer's allowance of bytes: a token bucket, refilled at peerBytesPerSecondMax. */
interface Allowance {
  bytes: number
  atMs: number
}

/** Emits 'event' (MemberEvent) for every change, after the state machine made it. */
export class MembershipService extends EventEmitter<{ event: [MemberEvent] }> {
  readonly swim: Swim
  readonly stats: MembershipStats = {
    sentMessages: 0, sentBytes: 0, receivedMessages: 0, receivedBytes: 0, rejected: {}, undeliverable: 0, droppedQueueFull: 0,
  }

  private readonly host: Host
  private readonly log: Logger
  private readonly tickMs: number
  private readonly dialTimeoutMs: number
  private readonly faults: FaultInjector | undefined
  private readonly links = new Map<string, Link>()
  /** Open inbound streams per peer. */
  private readonly inbound = new Map<string, number>()
  private readonly allowances = new Map<string, Allowance>()
  private readonly refusalWarnedMs = new Map<string, number>()
  private readonly pending = new Set<Promise<void>>()
  private timer: NodeJS.Timeout | null = null
  private delayTimer: NodeJS.Timeout | null = null
  private readonly delay = monitorEventLoopDelay({ resolution: 10 })
  /** Collects the join dials of one join() call. */
  private joinAttempts: Array<Promise<boolean>> | null = null
  private stopped = false

  constructor (init: MembershipServiceInit) {
    super()
    this.host = init.host
    this.log = init.log
    this.tickMs = init.tickMs
    this.dialTimeoutMs = init.dialTimeoutMs
    this.faults = init.faults
    const keys = init.keys === undefined ? undefined : statementKeys(init.keys)
    if (keys === undefined) this.log.warn('membership runs without signatures: any peer could speak for another member; give the service the node key')
    this.swim = new Swim({
      self: { id: init.host.peerId.toString(), addrs: this.ownAddrs(), meta: init.meta },
      config: init.config,
      // Each process draws its own randomness, so that nodes never probe in lockstep.
      random: Math.random,
      nowMs: Date.now(),
      ...(keys === undefined ? {} : { keys }),
    })
  }

  async start (): Promise<void> {
    await this.host.handle(MEMBERSHIP_PROTOCOL, (stream, connection) => { this.readLoop(stream, connection) }, {
      maxInboundStreams: TRANSPORT_LIMITS.inboundStreamsPerConnectionMax,
    })
    this.host.addEventListener('peer:disconnect', this.onDisconnect)
    // Our own event-loop delay, fed to Lifeguard's local health once per probe interval.
    this.delay.enable()
    this.delayTimer = setInterval(() => {
      const worstMs = this.delay.max / 1e6
      this.delay.reset()
      this.step((now) => { this.swim.localDelay(worstMs, now) })
    }, this.swim.config.probeIntervalMs)
    // The tick runs in the check phase (setImmediate), after the event loop has polled
    // for I/O: when this process was starved, an ack that arrived meanwhile is read
    // before the probe it answers can time out. A timer callback runs before that poll.
    this.timer = setInterval(() => {
      setImmediate(() => { this.step((now) => { this.swim.tick(now) }) })
    }, this.tickMs)
  }

  /**
   * Sends join requests to these addresses, again with backoff while none can be
   * reached (a cluster that is itself still starting accepts connections late);
   * resolves once some member answered, rejects at the deadline.
   */
  async join (addrs: string[], timeoutMs: number): Promise<void> {
    if (addrs.length === 0) return
    const deadline = Date.now() + timeoutMs
    for (let attempt = 0; !this.stopped; attempt++) {
      this.joinAttempts = []
      this.step(() => { this.swim.join(addrs) })
      const attempts = this.joinAttempts
      this.joinAttempts = null
      if ((await Promise.all(attempts)).some(Boolean)) {
        if (await this.answered(deadline)) return
        throw new Error(`a --join address was reached but no member answered within ${timeoutMs} ms`)
      }
      const backoffMs = Math.min(JOIN_BACKOFF_MAX_MS, JOIN_BACKOFF_MS * 2 ** attempt)
      if (Date.now() + backoffMs >= deadline) break
      this.log.info({ addrs, attempt: attempt + 1, retryInMs: backoffMs }, 'no --join address reachable yet; retrying')
      await new Promise((resolve) => setTimeout(resolve, backoffMs))
    }
    throw new Error(`none of the --join addresses could be reached within ${timeoutMs} ms (${addrs.join(', ')})`)
  }

  /** Resolves true once this node knows another member, false at the deadline. */
  private async answered (deadline: number): Promise<boolean> {
    const knowsOthers = (): boolean => this.swim.list().some((m) => m.id !== this.swim.id)
    if (knowsOthers()) return true
    let check: (() => void) | undefined
    let timer: NodeJS.Timeout | undefined
    try {
      return await new Promise<boolean>((resolve) => {
        check = () => { if (knowsOthers()) resolve(true) }
        this.on('event', check)
        timer = setTimeout(() => { resolve(false) }, Math.max(0, deadline - Date.now()))
      })
    } finally {
      if (check !== undefined) this.off('event', check)
      clearTimeout(timer)
    }
  }

  /** Leaves gracefully and waits (bounded) until the goodbyes are written. */
  async leave (timeoutMs: number): Promise<void> {
    if (this.swim.hasLeft) return
    this.step((now) => { this.swim.leave(now) })
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.pending]),
      new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs) }),
    ])
    clearTimeout(timer)
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearInterval(this.timer)
    if (this.delayTimer !== null) clearInterval(this.delayTimer)
    this.delay.disable()
    this.host.removeEventListener('peer:disconnect', this.onDisconnect)
    await this.host.unhandle(MEMBERSHIP_PROTOCOL).catch(() => {})
    for (const link of this.links.values()) link.raw?.abort(new Error('membership stopped'))
    this.links.clear()
    this.allowances.clear()
  }

  members (): Member[] {
    return this.swim.list()
  }

  updateMeta (meta: MemberMeta): void {
    this.step(() => { this.swim.updateSelf({ meta }) })
  }

  /** Runs one input through the state machine, then performs its effects. */
  private step (input: (nowMs: number) => void): void {
    if (this.stopped) return
    input(Date.now())
    const effects = this.swim.drain()
    for (const outbound of effects.messages) this.send(outbound)
    for (const event of effects.events) this.emit('event', event)
    for (const refusal of effects.refused) this.refused(refusal)
  }

  /** A statement or message the state machine would not take: counted, and logged with its sender. */
  private refused (refusal: Refusal): void {
    this.stats.rejected[refusal.reason] = (this.stats.rejected[refusal.reason] ?? 0) + 1
    this.warnOrDebug({ peer: refusal.from, reason: refusal.reason, kind: refusal.kind, member: refusal.id, incarnation: refusal.incarnation }, 'refused a membership claim')
  }

  /**
   * The first of a kind from one peer is a warning, the rest within
   * refusalWarnIntervalMs are at debug: a hostile peer cannot flood the log.
   */
  private warnOrDebug (fields: { peer: string, reason: string } & Record<string, unknown>, message: string): void {
    const key = `${fields.peer} ${fields.reason}`
    const now = Date.now()
    if (now - (this.refusalWarnedMs.get(key) ?? -Infinity) < TRANSPORT_LIMITS.refusalWarnIntervalMs) {
      this.log.debug(fields, message)
      return
    }
    if (this.refusalWarnedMs.size >= 1_000) this.refusalWarnedMs.clear()
    this.refusalWarnedMs.set(key, now)
    this.log.warn(fields, `${message} (more like it from this peer within ${TRANSPORT_LIMITS.refusalWarnIntervalMs / 1000} s at debug level)`)
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    const link = this.links.get(peer)
    if (link !== undefined && link.queue.length === 0 && !link.flushing) this.links.delete(peer)
    if (!this.inbound.has(peer)) this.allowances.delete(peer)
    // A crashed process closes its connections at once: probe it now, not in its turn.
    this.step((now) => { this.swim.hint(peer, now) })
  }

  // ---- sending ---------------------------------------------------------------

  private send (outbound: Outbound): void {
    const bytes = encodeMessage(outbound.message)
    if (outbound.to === null) {
      const sent = this.sendToAddress(outbound, bytes)
      this.joinAttempts?.push(sent)
      this.track(sent.then(() => {}))
      return
    }
    let link = this.links.get(outbound.to)
    if (link === undefined) {
      link = { peer: outbound.to, queue: [], stream: null, raw: null, flushing: false }
      this.links.set(outbound.to, link)
    }
    if (link.queue.length >= TRANSPORT_LIMITS.queuedMessagesPerPeerMax) {
      const dropped = link.queue.shift()!
      this.stats.droppedQueueFull++
      this.undeliverable(dropped.outbound)
    }
    link.queue.push({ outbound, bytes })
    if (!link.flushing) this.track(this.flush(link))
  }

  private async flush (link: Link): Promise<void> {
    link.flushing = true
    try {
      while (link.queue.length > 0 && !this.stopped) {
        const item = link.queue[0]!
        const delivered = await this.write(link, item.outbound, item.bytes)
        link.queue.shift()
        if (!delivered) {
          // The peer is unreachable now: fail what waits for it too, rather than dial again per message.
          for (const rest of link.queue.splice(0)) this.undeliverable(rest.outbound)
          this.undeliverable(item.outbound)
        }
      }
    } finally {
      link.flushing = false
      // A link with nothing to send and no stream is only a map entry: drop it, so that
      // peers we never reach (dead members, relay targets named by others) cost nothing.
      if (link.queue.length === 0 && link.stream === null && this.links.get(link.peer) === link) this.links.delete(link.peer)
    }
  }

  /** Writes one frame on the link's stream, opening (or re-opening, once) the stream as needed. */
  private async write (link: Link, outbound: Outbound, bytes: Uint8Array): Promise<boolean> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        if (link.stream === null) {
          const raw = await this.host.dialProtocol(this.dialTarget(outbound), MEMBERSHIP_PROTOCOL, {
            signal: AbortSignal.timeout(this.dialTimeoutMs),
          })
          link.raw = raw
          link.stream = lpStream(raw, { maxDataLength: LIMITS.messageBytesMax })
        }
        await link.stream.write(bytes, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
        this.stats.sentMessages++
        this.stats.sentBytes += bytes.byteLength
        return true
      } catch (err) {
        link.raw?.abort(err as Error)
        link.raw = null
        link.stream = null
        // A stream that was closed under us (idle timeout, reset) gets one fresh try.
        if (attempt === 0 && isStreamGone(err)) continue
        this.log.debug({ peer: link.peer, err: (err as Error).message }, 'membership message undeliverable')
        return false
      }
    }
    return false
  }

  /** A join request: dial an address whose peer we do not know yet, send once, close. */
  private async sendToAddress (outbound: Outbound, bytes: Uint8Array): Promise<boolean> {
    try {
      const raw = await this.host.dialProtocol(outbound.addrs.map((a) => multiaddr(a)), MEMBERSHIP_PROTOCOL, {
        signal: AbortSignal.timeout(this.dialTimeoutMs),
      })
      await lpStream(raw, { maxDataLength: LIMITS.messageBytesMax }).write(bytes, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
      this.stats.sentMessages++
      this.stats.sentBytes += bytes.byteLength
      await raw.close().catch(() => {})
      return true
    } catch (err) {
      this.log.warn({ addrs: outbound.addrs, err: (err as Error).message }, 'could not reach join address')
      this.undeliverable(outbound)
      return false
    }
  }

  private dialTarget (outbound: Outbound): Multiaddr[] | PeerId {
    const addrs = outbound.addrs.map((a) => multiaddr(a))
    if (addrs.length > 0) return addrs
    // No address known (a member that pinged us first): libp2p reuses the open connection.
    const conn = this.host.getConnections().find((c) => c.remotePeer.toString() === outbound.to)
    if (conn !== undefined) return conn.remotePeer
    throw new Error(`no address for ${outbound.to ?? 'unknown peer'}`)
  }

  /**
   * Reported on the next microtask, never inside another step: a failure found while
   * performing one step's effects must not emit its events before that step's own.
   */
  private undeliverable (outbound: Outbound): void {
    this.stats.undeliverable++
    queueMicrotask(() => { this.step((now) => { this.swim.undeliverable(outbound.message, now) }) })
  }

  private track (promise: Promise<void>): void {
    this.pending.add(promise)
    void promise.finally(() => this.pending.delete(promise))
  }

  // ---- receiving -------------------------------------------------------------

  private readLoop (stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString()
    const open = this.inbound.get(from) ?? 0
    if (open >= TRANSPORT_LIMITS.inboundStreamsPerPeerMax) {
      this.reject('streams', from, `more than ${TRANSPORT_LIMITS.inboundStreamsPerPeerMax} membership streams open at once`)
      stream.abort(new Error('too many membership streams from this peer'))
      return
    }
    this.inbound.set(from, open + 1)
    const lp = lpStream(stream, { maxDataLength: LIMITS.messageBytesMax })
    void (async () => {
      try {
        await this.readFrames(stream, lp, from)
      } finally {
        const left = (this.inbound.get(from) ?? 1) - 1
        if (left > 0) this.inbound.set(from, left)
        else this.inbound.delete(from)
      }
    })()
  }

  private async readFrames (stream: Stream, lp: LengthPrefixedStream<Stream>, from: string): Promise<void> {
    for (let first = true; !this.stopped; first = false) {
      let frame
      try {
        frame = await readWithDeadlines(stream, lp, first ? TRANSPORT_LIMITS.firstFrameMs : TRANSPORT_LIMITS.streamIdleMs)
      } catch (err) {
        // End of stream is normal; an oversized or slow frame is a misbehaving peer,
        // and silence too long is a stream held for nothing. Either way close our side
        // too, or the half-open stream counts against the limit.
        if (isOversized(err)) {
          this.reject('oversized', from, (err as Error).message)
          stream.abort(err as Error)
        } else if (err instanceof ReadDeadlineError) {
          this.reject(err.reason, from, err.message)
          stream.abort(err)
        } else {
          await stream.close().catch(() => { stream.abort(new Error('membership stream closed')) })
        }
        return
      }
      const bytes = frame.subarray()
      this.stats.receivedMessages++
      this.stats.receivedBytes += bytes.byteLength
      // Before decoding: parsing and checking signatures is the work a flood would make us do.
      if (!this.allow(from, bytes.byteLength)) {
        this.reject('rate', from, `over ${TRANSPORT_LIMITS.peerBytesPerSecondMax} bytes per second`)
        continue
      }
      const decoded = decodeMessage(bytes)
      if (!decoded.ok) {
        this.reject(decoded.reason, from, decoded.error)
        continue
      }
      this.deliver(from, decoded.message)
    }
  }

  /** Takes `bytes` from the peer's allowance; false when it has not that many left. */
  private allow (peer: string, bytes: number): boolean {
    const now = Date.now()
    const allowance = this.allowances.get(peer) ?? { bytes: TRANSPORT_LIMITS.peerBytesBurstMax, atMs: now }
    allowance.bytes = Math.min(TRANSPORT_LIMITS.peerBytesBurstMax, allowance.bytes + (now - allowance.atMs) * TRANSPORT_LIMITS.peerBytesPerSecondMax / 1000)
    allowance.atMs = now
    this.allowances.set(peer, allowance)
    if (allowance.bytes < bytes) return false
    allowance.bytes -= bytes
    return true
  }

  /** Through the fault rules, when a testnet set some: each frame is a datagram, delayed or lost on its own. */
  private deliver (from: string, message: Message): void {
    if (this.faults === undefined) {
      this.receive(from, message)
      return
    }
    void this.faults.arrive(from, 'membership').then((dropped) => { if (dropped === null) this.receive(from, message) })
  }

  private receive (from: string, message: Message): void {
    this.step((now) => { this.swim.receive(from, message, now) })
  }

  private reject (reason: string, from: string, error: string): void {
    this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + 1
    this.warnOrDebug({ peer: from, reason, error }, 'dropped a bad membership message')
  }

  private ownAddrs (): string[] {
    return this.host.getMultiaddrs().map((a) => a.toString())
  }
}

/** A stream that broke a read deadline; `reason` is what stats and logs call it. */
class ReadDeadlineError extends Error {
  override name = 'ReadDeadlineError'
  readonly reason: 'idle' | 'slow-frame'
  constructor (reason: 'idle' | 'slow-frame', message: string) {
    super(message)
    this.reason = reason
  }
}

/**
 * Reads one frame: its first bytes within `waitMs`, the rest within frameReadMs of
 * them. Bytes of the next frame that came with the last are already buffered and
 * fire no event: that frame then has the whole wait, bounded all the same.
 */
async function readWithDeadlines (stream: Stream, lp: LengthPrefixedStream<Stream>, waitMs: number): Promise<{ subarray: () => Uint8Array }> {
  const controller = new AbortController()
  let timer = setTimeout(() => { controller.abort(new ReadDeadlineError('idle', `no membership frame within ${waitMs} ms`)) }, waitMs)
  const onData = (): void => {
    stream.removeEventListener('message', onData)
    clearTimeout(timer)
    timer = setTimeout(() => { controller.abort(new ReadDeadlineError('slow-frame', `a membership frame took over ${TRANSPORT_LIMITS.frameReadMs} ms to arrive`)) }, TRANSPORT_LIMITS.frameReadMs)
  }
  stream.addEventListener('message', onData)
  try {
    return await lp.read({ signal: controller.signal })
  } catch (err) {
    if (controller.signal.aborted && controller.signal.reason instanceof ReadDeadlineError) throw controller.signal.reason
    throw err
  } finally {
    clearTimeout(timer)
    stream.removeEventListener('message', onData)
  }
}

