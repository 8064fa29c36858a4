// What a simulated node's state service runs on instead of libp2p and level: a
// StateTransport over the simulated network and a StateStorage on a simulated
// disk. The service itself (node/state.ts) is the node's own.
//
//   publish ──▶ GOSSIP to every member seen alive or suspect (what a gossipsub mesh reaches)
//   open(peer) ──▶ ASK frames ──▶ the peer's channel ──▶ ANSWER frames back; ABORT ends it early
//
// A channel is a stream, as a libp2p stream over TCP is: its frames carry a
// sequence number and are read in order, once, however the network reorders or
// duplicates them. Lost packets are lost: a sync whose frames do not arrive fails
// on the service's own deadline, as over TCP when the peer stops answering.

import { SYNC_LIMITS } from '../../crdt/sync.ts'
import type { Clock } from '../../node/clock.ts'
import type { StateStorage } from '../../node/state.ts'
import type { LoadedState, StateStoreStats } from '../../node/state-store.ts'
import { PeerError, type StateTransport, type StateTransportHandlers, type SyncChannel } from '../../node/state-transport.ts'
import type { Rng } from './rng.ts'

const KIND = { gossip: 1, ask: 2, answer: 3, abortAsk: 4, abortAnswer: 5 } as const

export interface SimTransportInit {
  self: string
  send (to: string, bytes: Uint8Array): void
  /** Members a publish reaches: those seen alive or suspect. */
  reachable (): string[]
}

export class SimStateTransport implements StateTransport {
  private readonly init: SimTransportInit
  private handlers: StateTransportHandlers | null = null
  private nextChannel = 1
  /** Exchanges this node asked for, by channel id. */
  private readonly asked = new Map<number, SimChannel>()
  /** Exchanges peers asked for, by peer and channel id. */
  private readonly answering = new Map<string, SimChannel>()

  constructor (init: SimTransportInit) {
    this.init = init
  }

  async start (handlers: StateTransportHandlers): Promise<void> {
    this.handlers = handlers
  }

  async publish (data: Uint8Array): Promise<void> {
    const peers = this.init.reachable()
    if (peers.length === 0) throw new Error('no member to publish to')
    const message = withHeader(KIND.gossip, 0, 0, data)
    for (const peer of peers) this.init.send(peer, message)
  }

  async open (peer: string, signal: AbortSignal): Promise<SyncChannel> {
    signal.throwIfAborted()
    const id = this.nextChannel++
    const channel = new SimChannel(peer, (seq, frame) => { this.init.send(peer, withHeader(KIND.ask, id, seq, frame)) }, () => {
      this.asked.delete(id)
    }, () => { this.init.send(peer, withHeader(KIND.abortAsk, id, 0, new Uint8Array(0))) })
    this.asked.set(id, channel)
    return channel
  }

  async stop (): Promise<void> {
    this.handlers = null
    for (const channel of [...this.asked.values(), ...this.answering.values()]) channel.fail(new Error('the node is stopping'))
  }

  /** A member came (back) alive: what a new connection is to libp2p. */
  connected (peer: string): void {
    this.handlers?.connected(peer)
  }

  /** A message of the state's from the network. */
  receive (from: string, bytes: Uint8Array): void {
    const handlers = this.handlers
    if (handlers === null || bytes.length < HEADER_BYTES) return
    const kind = bytes[0]
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const id = view.getUint32(1)
    const seq = view.getUint32(5)
    const body = bytes.subarray(HEADER_BYTES)
    switch (kind) {
      case KIND.gossip:
        if (handlers.validate(from, body) === null) handlers.gossip(from, body)
        return
      case KIND.ask: {
        const key = `${from}/${id}`
        let channel = this.answering.get(key)
        if (channel === undefined) {
          channel = new SimChannel(from, (next, frame) => { this.init.send(from, withHeader(KIND.answer, id, next, frame)) }, () => {
            this.answering.delete(key)
          }, () => { this.init.send(from, withHeader(KIND.abortAnswer, id, 0, new Uint8Array(0))) })
          this.answering.set(key, channel)
          handlers.channel(channel)
        }
        channel.deliver(seq, body)
        return
      }
      case KIND.answer: {
        const channel = this.asked.get(id)
        if (channel?.peer === from) channel.deliver(seq, body)
        return
      }
      case KIND.abortAsk:
        this.answering.get(`${from}/${id}`)?.fail(new Error(`${from} aborted the exchange`))
        return
      case KIND.abortAnswer: {
        const channel = this.asked.get(id)
        if (channel?.peer === from) channel.fail(new Error(`${from} aborted the exchange`))
      }
    }
  }
}

class SimChannel implements SyncChannel {
  readonly peer: string
  private readonly out: (seq: number, frame: Uint8Array) => void
  private readonly forget: () => void
  private readonly tellAbort: () => void
  private readonly queue: Uint8Array[] = []
  private sent = 0
  /** The sequence number of the next frame to read, and frames that arrived ahead of it. */
  private expected = 0
  private readonly ahead = new Map<number, Uint8Array>()
  private waiting: { resolve: (bytes: Uint8Array) => void, reject: (err: Error) => void } | null = null
  private failed: Error | null = null

  constructor (peer: string, out: (seq: number, frame: Uint8Array) => void, forget: () => void, tellAbort: () => void) {
    this.peer = peer
    this.out = out
    this.forget = forget
    this.tellAbort = tellAbort
  }

  async write (frame: Uint8Array, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.failed !== null) throw this.failed
    this.out(this.sent++, frame)
  }

  async read (signal: AbortSignal): Promise<Uint8Array> {
    signal.throwIfAborted()
    if (this.failed !== null) throw this.failed
    const next = this.queue.shift()
    if (next !== undefined) return next
    return await new Promise<Uint8Array>((resolve, reject) => {
      const onAbort = (): void => { this.waiting = null; reject(signal.reason as Error) }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiting = {
        resolve: (bytes) => { signal.removeEventListener('abort', onAbort); resolve(bytes) },
        reject: (err) => { signal.removeEventListener('abort', onAbort); reject(err) },
      }
    })
  }

  async close (): Promise<void> {
    this.forget()
  }

  abort (err: Error): void {
    if (this.failed === null) this.tellAbort()
    this.fail(err)
  }

  /** A frame from the network: kept until the frames before it have come, read once. */
  deliver (seq: number, bytes: Uint8Array): void {
    if (this.failed !== null || seq < this.expected || this.ahead.has(seq)) return
    if (bytes.length > SYNC_LIMITS.frameBytesMax) {
      this.fail(new PeerError('oversized', `a sync frame over ${SYNC_LIMITS.frameBytesMax} bytes`))
      return
    }
    this.ahead.set(seq, bytes)
    for (let next = this.ahead.get(this.expected); next !== undefined; next = this.ahead.get(this.expected)) {
      this.ahead.delete(this.expected++)
      const waiting = this.waiting
      this.waiting = null
      if (waiting !== null) waiting.resolve(next)
      else this.queue.push(next)
    }
  }

  fail (err: Error): void {
    if (this.failed !== null) return
    this.failed = err
    this.forget()
    const waiting = this.waiting
    this.waiting = null
    waiting?.reject(err)
  }
}

/** kind (1 byte), channel id (4), the frame's sequence number in its channel (4). */
const HEADER_BYTES = 9

function withHeader (kind: number, id: number, seq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length)
  out[0] = kind
  const view = new DataView(out.buffer)
  view.setUint32(1, id)
  view.setUint32(5, seq)
  out.set(body, HEADER_BYTES)
  return out
}

/** What a node's disk holds of its state database; it outlives the node's lives. */
export interface SimDisk {
  updates: Uint8Array[]
}

/**
 * The state database on a simulated disk. An append is on the disk after an
 * fsync drawn from `fsyncMs`, in the order of the appends (as level's one write
 * queue keeps them); a crash drops the timers of its life, so what was not on the
 * disk yet is lost and what was acknowledged never is.
 */
export class SimStorage implements StateStorage {
  private readonly disk: SimDisk
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly fsyncMs: readonly [number, number]
  private snapshotSource: (() => Uint8Array) | null = null
  /** When the last append in flight reaches the disk (monotonic ms). */
  private lastDoneAt = 0
  private counters = { appends: 0, compactions: 0 }

  constructor (disk: SimDisk, clock: Clock, rng: Rng, fsyncMs: readonly [number, number]) {
    this.disk = disk
    this.clock = clock
    this.rng = rng
    this.fsyncMs = fsyncMs
  }

  async load (): Promise<LoadedState> {
    return { snapshot: null, updates: [...this.disk.updates], lifeId: 'disk0', damage: null }
  }

  async append (update: Uint8Array): Promise<void> {
    const now = this.clock.monotonic()
    const doneAt = Math.max(this.lastDoneAt, now + this.rng.between(this.fsyncMs[0], this.fsyncMs[1]))
    this.lastDoneAt = doneAt
    await new Promise<void>((resolve) => {
      this.clock.setTimeout(() => {
        this.disk.updates.push(update)
        this.counters.appends++
        resolve()
      }, doneAt - now)
    })
  }

  setSnapshotSource (source: () => Uint8Array): void {
    this.snapshotSource = source
  }

  async compact (): Promise<void> {
    if (this.snapshotSource === null) return
    this.disk.updates.splice(0, this.disk.updates.length, this.snapshotSource())
    this.counters.compactions++
  }

  stats (): StateStoreStats {
    let logBytes = 0
    for (const u of this.disk.updates) logBytes += u.byteLength
    return { updates: this.disk.updates.length, logBytes, snapshotBytes: 0, compactions: this.counters.compactions, lastCompactionMs: null, appends: this.counters.appends, damage: null }
  }

  async close (): Promise<void> {}
}
