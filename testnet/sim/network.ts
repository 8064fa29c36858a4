// A simulated network on a virtual clock. Every message crosses it as bytes,
// through the real codec, so the simulator exercises the same wire boundary as
// the libp2p transport: what the codec cannot carry or rejects, a test sees.
//
//   send ─▶ muted? ─▶ lost? ─▶ (duplicated?) ─▶ delay ─▶ arrival: recipient crashed,
//                                                        paused or cut off? ─▶ refuse | drop
//                                                        else decode ─▶ deliver
//
// Besides membership messages it carries app bytes (a simulated node's state
// sync and gossip), which the app encodes with its own real codec.
//
// Reordering falls out of the random delay. What a sender learns about a message
// that cannot arrive depends on why, as with TCP: a crashed process on a live host
// refuses the connection at once (the sender hears "undeliverable" one round trip
// later); a frozen process keeps its connections open and a cut link loses packets,
// so the sender hears nothing and has to time out.

import { decodeMessage, encodeMessage } from '../../membership/codec.ts'
import type { Message } from '../../membership/types.ts'
import type { Rng } from './rng.ts'
import { TimeQueue } from './time-queue.ts'

/** How a host's process is doing, as the network sees it. */
export type HostStatus = 'up' | 'crashed' | 'paused'

/** Bytes of a simulated node's own protocols (state sync, gossip), already encoded. */
export interface AppMessage { type: 'app', bytes: Uint8Array }

/** What crosses the simulated network: a membership message or app bytes. */
export type Wire = Message | AppMessage

/** Where a message goes: a known host, or (joining) only an address. */
export interface WireOutbound {
  to: string | null
  addrs: string[]
  message: Wire
}

/** What the sender learns about a message that cannot arrive. */
export type FailureReport = 'refuse' | 'drop'

export interface NetworkConfig {
  /** One-way delay of a message, drawn uniformly in [delayMinMs, delayMaxMs]. */
  delayMinMs: number
  delayMaxMs: number
  /** Probability that a message is lost. */
  lossRate: number
  /** Probability that a message arrives twice (each copy with its own delay). */
  duplicateRate: number
  whenCrashed: FailureReport
  whenPaused: FailureReport
  whenPartitioned: FailureReport
}

/** A LAN on a good day: sub-5 ms delays, nothing lost; a crash is refused, a freeze or a cut is silent. */
export const NETWORK_DEFAULTS: Readonly<NetworkConfig> = Object.freeze({
  delayMinMs: 1,
  delayMaxMs: 5,
  lossRate: 0,
  duplicateRate: 0,
  whenCrashed: 'refuse',
  whenPaused: 'drop',
  whenPartitioned: 'drop',
})

export interface NetworkStats {
  /** Messages handed to the network. */
  sent: number
  bytesSent: number
  largestBytes: number
  /** Copies handed to a recipient. */
  delivered: number
  lost: number
  duplicated: number
  /** Sends reported back to the sender as undeliverable. */
  refused: number
  /** Copies dropped without a word: muted sender, frozen recipient, cut link. */
  dropped: number
  /** Copies the recipient's codec rejected (never expected between honest members). */
  rejected: number
}

/** A host's own link trouble, on top of the network's: everything it sends or receives. */
export interface LinkFault {
  /** Extra one-way delay, plus up to jitterMs more drawn uniformly. */
  delayMs: number
  jitterMs: number
  lossRate: number
}

/** Where the network hands what arrives. */
export interface NetworkHost {
  deliver (to: string, from: string, message: Wire, nowMs: number): void
  undeliverable (from: string, message: Wire, nowMs: number): void
}

/** One send; its copies share it so that a refusal is reported once, as a transport would. */
interface Send {
  from: string
  message: Wire
  reported: boolean
}

type Packet =
  | { kind: 'arrive', send: Send, to: string, bytes: Uint8Array }
  | { kind: 'refused', send: Send }

export class SimNetwork {
  private config: NetworkConfig
  private readonly rng: Rng
  private readonly queue = new TimeQueue<Packet>()
  private readonly addrToId = new Map<string, string>()
  private readonly status = new Map<string, HostStatus>()
  private readonly groupOf = new Map<string, number>()
  private readonly muted = new Set<string>()
  /** One-way cuts: `from>to`. */
  private readonly cuts = new Set<string>()
  private readonly links = new Map<string, LinkFault>()
  readonly stats: NetworkStats = {
    sent: 0, bytesSent: 0, largestBytes: 0, delivered: 0, lost: 0, duplicated: 0, refused: 0, dropped: 0, rejected: 0,
  }

  constructor (config: Partial<NetworkConfig>, rng: Rng) {
    this.config = checkConfig({ ...NETWORK_DEFAULTS, ...config })
    this.rng = rng
  }

  /** Changes loss, delay or failure reporting from now on (in-flight messages keep theirs). */
  configure (change: Partial<NetworkConfig>): void {
    this.config = checkConfig({ ...this.config, ...change })
  }

  get settings (): Readonly<NetworkConfig> {
    return this.config
  }

  register (id: string, addr: string): void {
    this.addrToId.set(addr, id)
    this.status.set(id, 'up')
  }

  setStatus (id: string, status: HostStatus): void {
    if (!this.status.has(id)) throw new Error(`unknown host ${id}`)
    this.status.set(id, status)
  }

  /** Cuts the network into groups that cannot reach each other; hosts not named form one more group. */
  partition (groups: readonly (readonly string[])[]): void {
    this.groupOf.clear()
    groups.forEach((group, index) => {
      for (const id of group) {
        if (this.groupOf.has(id)) throw new Error(`host ${id} is in two groups of the partition`)
        this.groupOf.set(id, index)
      }
    })
  }

  /** Heals partitions and one-way cuts (not link faults: see setLink). */
  heal (): void {
    this.groupOf.clear()
    this.cuts.clear()
  }

  /** From now on nothing `from` sends reaches `to`; `to` still reaches `from`. */
  cut (from: string, to: string): void {
    this.cuts.add(`${from}>${to}`)
  }

  /** Extra delay and loss on one host's link; undefined removes them. */
  setLink (id: string, fault: Partial<LinkFault> | undefined): void {
    if (fault === undefined) {
      this.links.delete(id)
      return
    }
    const link = { delayMs: 0, jitterMs: 0, lossRate: 0, ...fault }
    if (!Number.isInteger(link.delayMs) || link.delayMs < 0 || !Number.isInteger(link.jitterMs) || link.jitterMs < 0) throw new Error(`link delays must be non-negative integers, got ${link.delayMs} and ${link.jitterMs}`)
    if (!(link.lossRate >= 0 && link.lossRate < 1)) throw new Error(`lossRate must be in [0, 1), got ${link.lossRate}`)
    this.links.set(id, link)
  }

  /** Whether any partition, cut, mute or link fault is in force. */
  get faulty (): boolean {
    return this.groupOf.size > 0 || this.cuts.size > 0 || this.muted.size > 0 || this.links.size > 0
  }

  /** Everything `id` sends is lost from now on (it still hears others): a one-way fault. */
  mute (id: string): void {
    this.muted.add(id)
  }

  unmute (id: string): void {
    this.muted.delete(id)
  }

  /** Whether what `a` sends can reach `b` (partitions and one-way cuts). */
  reachable (a: string, b: string): boolean {
    return (this.groupOf.get(a) ?? -1) === (this.groupOf.get(b) ?? -1) && !this.cuts.has(`${a}>${b}`)
  }

  send (from: string, outbound: WireOutbound, nowMs: number): void {
    this.stats.sent++
    const send: Send = { from, message: outbound.message, reported: false }
    const to = this.resolve(outbound)
    if (to === undefined) {
      // Nobody listens at that address: the connection is refused.
      this.refuse(send, nowMs)
      return
    }
    const bytes = outbound.message.type === 'app' ? outbound.message.bytes : encodeMessage(outbound.message)
    this.stats.bytesSent += bytes.byteLength
    this.stats.largestBytes = Math.max(this.stats.largestBytes, bytes.byteLength)
    if (this.muted.has(from)) {
      this.stats.dropped++
      return
    }
    const copies = this.rng.chance(this.config.duplicateRate) ? 2 : 1
    if (copies === 2) this.stats.duplicated++
    const a = this.links.get(from)
    const b = this.links.get(to)
    for (let i = 0; i < copies; i++) {
      if (this.rng.chance(this.config.lossRate) || (a !== undefined && this.rng.chance(a.lossRate)) || (b !== undefined && this.rng.chance(b.lossRate))) {
        this.stats.lost++
        continue
      }
      this.queue.push(nowMs + this.delay() + this.linkDelay(a) + this.linkDelay(b), { kind: 'arrive', send, to, bytes })
    }
  }

  /** When the next packet is due, or undefined when nothing is in flight. */
  nextDueMs (): number | undefined {
    return this.queue.peekMs()
  }

  get inFlight (): number {
    return this.queue.size
  }

  /**
   * Hands every packet due at or before `untilMs` to `host`, in time order, each at
   * its own time. Packets sent meanwhile that fall due before `untilMs` go too.
   */
  deliverDue (untilMs: number, host: NetworkHost): void {
    for (let due = this.queue.popDue(untilMs); due !== undefined; due = this.queue.popDue(untilMs)) {
      const packet = due.value
      if (packet.kind === 'refused') {
        if (this.status.get(packet.send.from) === 'up') host.undeliverable(packet.send.from, packet.send.message, due.atMs)
        continue
      }
      this.arrive(packet.send, packet.to, packet.bytes, due.atMs, host)
    }
  }

  private arrive (send: Send, to: string, bytes: Uint8Array, nowMs: number, host: NetworkHost): void {
    const failure = this.failureAt(send.from, to)
    if (failure === 'refuse') return this.refuse(send, nowMs)
    if (failure === 'drop') {
      this.stats.dropped++
      return
    }
    let message: Wire
    if (send.message.type === 'app') {
      message = send.message
    } else {
      const decoded = decodeMessage(bytes)
      if (!decoded.ok) {
        this.stats.rejected++
        return
      }
      message = decoded.message
    }
    this.stats.delivered++
    host.deliver(to, send.from, message, nowMs)
  }

  /** Why a packet from `from` cannot be handed to `to` now, or undefined if it can. */
  private failureAt (from: string, to: string): FailureReport | undefined {
    if (!this.reachable(from, to)) return this.config.whenPartitioned
    const status = this.status.get(to)
    if (status === 'crashed') return this.config.whenCrashed
    if (status === 'paused') return this.config.whenPaused
    return undefined
  }

  /** The refusal travels back to the sender, once per send however many copies hit it. */
  private refuse (send: Send, nowMs: number): void {
    if (send.reported) return
    send.reported = true
    this.stats.refused++
    this.queue.push(nowMs + this.delay(), { kind: 'refused', send })
  }

  private resolve (outbound: WireOutbound): string | undefined {
    if (outbound.to !== null && this.status.has(outbound.to)) return outbound.to
    for (const addr of outbound.addrs) {
      const id = this.addrToId.get(addr)
      if (id !== undefined) return id
    }
    return undefined
  }

  private delay (): number {
    return this.rng.between(this.config.delayMinMs, this.config.delayMaxMs)
  }

  private linkDelay (link: LinkFault | undefined): number {
    if (link === undefined) return 0
    return link.delayMs + (link.jitterMs > 0 ? this.rng.between(0, link.jitterMs) : 0)
  }
}

function checkConfig (config: NetworkConfig): NetworkConfig {
  const { delayMinMs, delayMaxMs, lossRate, duplicateRate } = config
  if (!Number.isInteger(delayMinMs) || delayMinMs < 0) throw new Error(`delayMinMs must be a non-negative integer, got ${delayMinMs}`)
  if (!Number.isInteger(delayMaxMs) || delayMaxMs < delayMinMs) throw new Error(`delayMaxMs must be an integer ≥ delayMinMs, got ${delayMaxMs}`)
  if (!(lossRate >= 0 && lossRate < 1)) throw new Error(`lossRate must be in [0, 1), got ${lossRate}`)
  if (!(duplicateRate >= 0 && duplicateRate <= 1)) throw new Error(`duplicateRate must be in [0, 1], got ${duplicateRate}`)
  return config
}
