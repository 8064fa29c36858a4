// Helpers for unit tests of the membership core: a few Swim state machines wired
// by hand, with every message passed through the real codec, so that a test can
// hold, drop or inspect each one.

import { decodeMessage, encodeMessage } from '../../membership/codec.ts'
import { type MembershipInit, SIM, membershipConfig } from '../../membership/config.ts'
import { Swim } from '../../membership/swim.ts'
import type { MemberMeta, Message, Outbound, Update } from '../../membership/types.ts'
import { Rng } from '../../testnet/sim/rng.ts'

export function meta (cpuMillis = 4000): MemberMeta {
  return { cpuMillis, memoryBytes: 8 * 1024 ** 3, labels: { zone: 'a' } }
}

export function makeSwim (id: string, options: { nowMs?: number, config?: MembershipInit, meta?: MemberMeta, incarnation?: number } = {}): Swim {
  const rng = new Rng(`unit/${id}`)
  return new Swim({
    self: { id, addrs: [`sim://${id}`], meta: options.meta ?? meta() },
    // Unit tests start every member at once; the newcomer grace has its own test.
    config: membershipConfig({ newcomerGraceMs: 0, ...options.config }, SIM),
    random: () => rng.next(),
    nowMs: options.nowMs ?? 0,
    ...(options.incarnation === undefined ? {} : { incarnation: options.incarnation }),
  })
}

/** The alive update a member would gossip about itself. */
export function aliveOf (swim: Swim): Extract<Update, { kind: 'alive' }> {
  const self = swim.member(swim.id)!
  return { kind: 'alive', id: self.id, incarnation: self.incarnation, addrs: self.addrs, meta: self.meta }
}

/**
 * Every swim learns every other as alive, then all effects so far are thrown away.
 * Through push-pulls, as a joining node is learned: gossip from a peer that is no
 * member yet is refused.
 */
export function mesh (swims: Swim[], nowMs = 0): void {
  for (const swim of swims) {
    for (const other of swims) {
      if (other === swim) continue
      swim.receive(other.id, { type: 'push-pull', join: true, reply: false, members: [other.ownRecord()] }, nowMs)
    }
  }
  for (const swim of swims) swim.drain()
}

/** Through the codec, as on the wire: a test sees what a peer would. */
export function wire (message: Message): Message {
  const decoded = decodeMessage(encodeMessage(message))
  if (!decoded.ok) throw new Error(`codec rejected ${message.type}: ${decoded.error}`)
  return decoded.message
}

export interface Sent {
  from: string
  outbound: Outbound
}

/**
 * Delivers messages between the swims until none is left (bounded), all at `nowMs`.
 * `drop` decides which messages are lost; messages to unknown members vanish.
 * Returns every message sent, delivered or not.
 */
export function settle (swims: Swim[], nowMs: number, drop: (sent: Sent) => boolean = () => false): Sent[] {
  const byId = new Map(swims.map((swim) => [swim.id, swim]))
  const log: Sent[] = []
  for (let round = 0; round < 100; round++) {
    const batch: Sent[] = []
    for (const swim of swims) for (const outbound of swim.drain().messages) batch.push({ from: swim.id, outbound })
    if (batch.length === 0) return log
    log.push(...batch)
    for (const sent of batch) {
      if (drop(sent)) continue
      const to = sent.outbound.to ?? sent.outbound.addrs[0]?.replace('sim://', '')
      const target = to === undefined ? undefined : byId.get(to)
      target?.receive(sent.from, wire(sent.outbound.message), nowMs)
    }
  }
  throw new Error('messages still flowing after 100 rounds')
}

export function messagesOf (swim: Swim): Outbound[] {
  return swim.drain().messages
}

/** Ticks every swim each `stepMs` from `fromMs` (exclusive) to `toMs` (inclusive), settling messages after each tick. */
export function run (swims: Swim[], fromMs: number, toMs: number, drop: (sent: Sent) => boolean = () => false, stepMs = 10): Sent[] {
  const log: Sent[] = []
  for (let t = fromMs + stepMs; t <= toMs; t += stepMs) {
    for (const swim of swims) swim.tick(t)
    log.push(...settle(swims, t, drop))
  }
  return log
}
