// SWIM with the Lifeguard refinements, as a pure state machine.
//
// The caller feeds it time (`tick`), messages (`receive`) and transport
// outcomes (`undeliverable`, `hint`), then `drain`s the effects: messages to
// send and membership events to report. It owns no timer, socket or clock, and
// draws randomness only from the `random` it is given, so a run is replayable.
//
//   probe round:  ping ──(probeTimeoutMs)──▶ ping-req × k ──(rest of interval)──▶ suspect
//   suspicion:    suspect ──(Lifeguard timeout, shrinking with confirmations)──▶ dead
//   refutation:   a member that hears it is suspected or dead raises its incarnation
//   gossip:       updates ride on every message, plus a gossip round every gossipIntervalMs
//   anti-entropy: push-pull of the full member list with one random member; one
//                 dead member tried again every reconnectIntervalMs, so partitions heal
//
// Every statement from a peer, gossiped or in a push-pull, passes the same checks
// (admit) before it is applied: an incarnation cap that always leaves the member
// room to refute, a bound on how far a relayed incarnation may jump, and, with
// keys, the member's own signature on what it says about itself (alive, left).

import { BroadcastQueue } from './broadcast.ts'
import {
  type MembershipConfig, pushPullIntervalMs, retransmitLimit, suspicionMaxMs, suspicionMinMs,
} from './config.ts'
import { type StatementKeys, signStatement, verifyStatement } from './statements.ts'
import { Suspicion } from './suspicion.ts'
import type {
  Effects, Member, MemberMeta, MemberRecord, MemberState, Message, Outbound, RefusalReason, SelfInit, Update,
} from './types.ts'

/**
 * No statement above this incarnation is taken, and no suspicion or death at it:
 * whatever others take, the member can outbid by one, and no member ever goes
 * above it. Far below the largest integer the codec admits, and far above what a
 * member reaches by refuting (one step per suspicion) in any lifetime.
 */
export const INCARNATION_MAX = Number.MAX_SAFE_INTEGER - 2 ** 20

interface Probe {
  seq: number
  target: string
  /** When the direct probe gives up and indirect probes start. */
  directDeadlineMs: number
  /** When the whole probe gives up and the target is suspected. */
  deadlineMs: number
  indirect: boolean
  /** The direct ping could not even be delivered (refused): no late ack can come. */
  refused: boolean
  expectedNacks: number
  nacks: number
}

/** A ping this node sends on another member's behalf (ping-req). */
interface Relay {
  origin: string
  originSeq: number
  deadlineMs: number
}

export interface SwimInit {
  self: SelfInit
  config: MembershipConfig
  /** Uniform in [0, 1): the only source of randomness. */
  random: () => number
  nowMs: number
  /** Start from this incarnation (a restarted node may know a higher one). */
  incarnation?: number
  /**
   * Signs this member's statements about itself and checks others' (statements.ts).
   * Without keys (the simulator, whose members are not peer ids) statements go
   * unsigned, and a goodbye for another is taken only when relayed by a member
   * held alive: anyone could still forge an "alive" at a higher incarnation.
   */
  keys?: StatementKeys
}

/** Forgetting long-dead members is not urgent: once a second is plenty. */
const REAP_INTERVAL_MS = 1_000
/** A helper's nack goes out at this fraction of the probe timeout (Lifeguard, memberlist). */
const NACK_TIMEOUT_FRACTION = 0.8

export class Swim {
  readonly config: MembershipConfig
  readonly id: string
  private readonly random: () => number
  private readonly keys: StatementKeys | null
  private readonly members = new Map<string, Member>()
  /** Each member's signature over its latest statement about itself, at its current incarnation (MemberRecord.sig). */
  private readonly proofs = new Map<string, string>()
  private readonly suspicions = new Map<string, Suspicion>()
  private readonly broadcasts = new BroadcastQueue()
  private readonly probes = new Map<number, Probe>()
  private readonly relays = new Map<number, Relay>()
  private probeOrder: string[] = []
  private probeIndex = 0
  private regularProbe: number | null = null
  private seq = 0
  /** Lifeguard local health: 0 is healthy; timeouts are multiplied by awareness + 1. */
  private awareness = 0
  /** Members neither dead nor gone, counted once per change: piggyback() needs it on every message. */
  private liveCached: number | null = null
  private leaving = false
  private lastInputMs: number
  private nextProbeMs: number
  private nextGossipMs: number
  private nextPushPullMs: number
  private nextReconnectMs: number
  private nextReapMs: number
  private out: Effects = { messages: [], events: [], refused: [] }

  constructor (init: SwimInit) {
    this.config = init.config
    this.id = init.self.id
    this.random = init.random
    this.keys = init.keys ?? null
    const now = init.nowMs
    const self: Member = {
      id: init.self.id,
      addrs: [...init.self.addrs],
      incarnation: Math.min(INCARNATION_MAX, init.incarnation ?? 0),
      state: 'alive',
      meta: cloneMeta(init.self.meta),
      stateSinceMs: now,
      lastHeardMs: now,
    }
    this.members.set(self.id, self)
    this.restate()
    this.lastInputMs = now
    // Spread the first rounds so that nodes started together do not probe in lockstep.
    this.nextProbeMs = now + Math.floor(this.random() * this.config.probeIntervalMs)
    this.nextGossipMs = now + Math.floor(this.random() * this.config.gossipIntervalMs)
    this.nextPushPullMs = now + Math.floor(this.config.pushPullIntervalMs * (0.5 + this.random() / 2))
    this.nextReconnectMs = now + this.jitter(this.config.reconnectIntervalMs)
    this.nextReapMs = now + REAP_INTERVAL_MS
  }

  // ---- inputs ---------------------------------------------------------------

  /** Advances time: probes, timeouts, suspicions, gossip and anti-entropy rounds. */
  tick (nowMs: number): void {
    this.detectStall(nowMs)
    this.expireProbes(nowMs)
    this.expireRelays(nowMs)
    this.expireSuspicions(nowMs)
    if (this.leaving) return
    if (nowMs >= this.nextProbeMs) {
      this.nextProbeMs = nowMs + this.config.probeIntervalMs
      if (this.regularProbe === null) this.probeNext(nowMs)
    }
    if (nowMs >= this.nextGossipMs) {
      this.nextGossipMs = nowMs + this.config.gossipIntervalMs
      this.gossipRound(nowMs)
    }
    if (nowMs >= this.nextPushPullMs) {
      this.nextPushPullMs = nowMs + pushPullIntervalMs(this.config, this.liveCount())
      const peer = this.pickRandom(this.others((m) => m.state === 'alive'), 1)[0]
      if (peer !== undefined) this.pushPull(peer, false)
    }
    if (nowMs >= this.nextReconnectMs) {
      // Jittered, so that the members of a healed partition do not all retry in step.
      this.nextReconnectMs = nowMs + this.jitter(this.config.reconnectIntervalMs)
      const dead = this.pickRandom(this.others((m) => m.state === 'dead'), 1)[0]
      if (dead !== undefined) this.pushPull(dead, false)
    }
    if (nowMs >= this.nextReapMs) {
      this.nextReapMs = nowMs + REAP_INTERVAL_MS
      this.reap(nowMs)
    }
  }

  /** A message from member `from` (as authenticated by the transport). */
  receive (from: string, message: Message, nowMs: number): void {
    this.detectStall(nowMs)
    const sender = this.members.get(from)
    if (sender !== undefined && from !== this.id) sender.lastHeardMs = nowMs
    // A sender we hold dead (or gone) is across a partition from us, or just back
    // from one: its verdicts were witnessed by nobody we can reach, so its "dead" is
    // only a suspicion here. Taken as deaths, a healed partition's stale verdicts
    // would kill members their own side sees alive. A sender that is no member at
    // all is doubted the same way (found by the reliability suite's forged claims).
    const stranger = sender === undefined && from !== this.id
    const doubted = stranger || (sender !== undefined && (sender.state === 'dead' || sender.state === 'left'))
    if (message.type === 'push-pull') {
      // The same checks as gossip, record by record: a push-pull is how a stranger
      // joins, so it is the easiest way in for a forged claim.
      this.applyUpdates(message.members.flatMap((record) => this.recordUpdates(record, from)), nowMs, doubted, from)
      if (message.reply && !this.leaving) this.send(from, { type: 'push-pull', join: false, reply: false, members: this.records() })
      return
    }
    if (stranger) {
      // A peer that is no member may join (a push-pull) and may learn that we are
      // up (a bare ack: a joined node pings members that have not heard of it yet),
      // but its news is nobody's we know.
      if (message.type === 'ping') this.send(from, { type: 'ack', seq: message.seq, updates: [] })
      else this.refuse(from, 'stranger', message.type)
      return
    }
    this.applyUpdates(message.updates, nowMs, doubted, from)
    switch (message.type) {
      case 'ping': return this.onPing(from, message.seq)
      case 'ack': return this.onAck(message.seq, nowMs)
      case 'nack': return this.onNack(message.seq, nowMs)
      case 'ping-req': return this.onPingReq(from, message.seq, message.target, message.targetAddrs, nowMs)
      case 'gossip': return
    }
  }

  /** The transport could not deliver `message` to `to` (refused, unreachable, reset). */
  undeliverable (message: Message, nowMs: number): void {
    this.detectStall(nowMs)
    if (message.type === 'ping') {
      const probe = this.probes.get(message.seq)
      // Fail fast: a refused connection is a failed direct probe, no need to wait.
      if (probe !== undefined && !probe.indirect) {
        probe.refused = true
        this.startIndirect(probe, nowMs)
      }
      const relay = this.relays.get(message.seq)
      if (relay !== undefined) {
        this.relays.delete(message.seq)
        this.send(relay.origin, { type: 'nack', seq: relay.originSeq, updates: this.piggyback() })
      }
    } else if (message.type === 'ping-req') {
      // The helper never got the request, so it cannot nack: do not count that against our own health.
      const probe = this.probes.get(message.seq)
      if (probe !== undefined) {
        probe.expectedNacks = Math.max(0, probe.expectedNacks - 1)
        this.maybeFinishEarly(probe, nowMs)
      }
    }
  }

  /**
   * A transport-level hint that `id` may have failed (its last connection closed):
   * probe it now instead of waiting for its turn.
   */
  hint (id: string, nowMs: number): void {
    this.detectStall(nowMs)
    const member = this.members.get(id)
    if (this.leaving || member === undefined || id === this.id || member.state !== 'alive') return
    if (this.probing(id)) return
    this.startProbe(id, nowMs)
  }

  /**
   * The caller's own measure of how late its event loop ran (the worst delay over
   * the last probe interval). A node that cannot run its timers on time cannot judge
   * others' timeliness either: a delay over half the probe timeout counts against
   * its own health (Lifeguard), which stretches its probe and suspicion timeouts.
   */
  localDelay (delayMs: number, nowMs: number): void {
    this.detectStall(nowMs)
    if (delayMs > this.config.probeTimeoutMs / 2) this.adjustAwareness(1)
  }

  /** Join the cluster through the members at these addresses (ids unknown). */
  join (seedAddrs: string[]): void {
    for (const addr of seedAddrs) {
      this.out.messages.push({ to: null, addrs: [addr], message: { type: 'push-pull', join: true, reply: true, members: this.records() } })
    }
  }

  /** Leave gracefully: everyone reachable is told at once, so nobody waits for a timeout. */
  leave (nowMs: number): void {
    if (this.leaving) return
    const self = this.self()
    this.leaving = true
    const previousIncarnation = self.incarnation
    self.incarnation = Math.min(INCARNATION_MAX, self.incarnation + 1)
    this.setState(self, 'left', nowMs, previousIncarnation)
    const update: Update = { kind: 'left', id: self.id, incarnation: self.incarnation }
    if (this.keys !== null) {
      update.sig = signStatement(this.keys, update)
      this.proofs.set(self.id, update.sig)
    }
    this.broadcasts.clear()
    for (const member of this.others((m) => m.state === 'alive' || m.state === 'suspect')) {
      this.send(member.id, { type: 'gossip', updates: [update] })
    }
    this.probes.clear()
    this.relays.clear()
  }

  /** Change what this node offers (capacity, labels, API); spreads as a new incarnation. */
  updateSelf (change: { meta?: MemberMeta, addrs?: string[] }): void {
    const self = this.self()
    const previousIncarnation = self.incarnation
    if (change.meta !== undefined) self.meta = cloneMeta(change.meta)
    if (change.addrs !== undefined) self.addrs = [...change.addrs]
    self.incarnation = Math.min(INCARNATION_MAX, self.incarnation + 1)
    this.restate()
    this.emit(self, self.state, previousIncarnation)
    this.broadcasts.enqueue(this.selfAlive())
  }

  // ---- outputs --------------------------------------------------------------

  /** The effects accumulated since the last drain: send the messages, then report the events and refusals. */
  drain (): Effects {
    const out = this.out
    this.out = { messages: [], events: [], refused: [] }
    return out
  }

  /** Every member this node knows, itself included. Copies: safe to keep. */
  list (): Member[] {
    return [...this.members.values()].map(cloneMember)
  }

  /** This member's own record, as a push-pull carries it (signed, with keys). */
  ownRecord (): MemberRecord {
    return this.records().find((record) => record.id === this.id)!
  }

  member (id: string): Member | undefined {
    const member = this.members.get(id)
    return member === undefined ? undefined : cloneMember(member)
  }

  /** Lifeguard's local health score: 0 healthy, up to awarenessMax − 1. */
  get health (): number {
    return this.awareness
  }

  get hasLeft (): boolean {
    return this.leaving
  }

  // ---- probing --------------------------------------------------------------

  private probeNext (nowMs: number): void {
    for (let tries = 0; tries <= this.members.size; tries++) {
      if (this.probeIndex >= this.probeOrder.length) {
        this.probeOrder = this.shuffle([...this.members.keys()].filter((id) => id !== this.id))
        this.probeIndex = 0
        if (this.probeOrder.length === 0) return
      }
      const id = this.probeOrder[this.probeIndex++]!
      const member = this.members.get(id)
      if (member === undefined || (member.state !== 'alive' && member.state !== 'suspect')) continue
      if (this.probing(id)) continue
      this.regularProbe = this.startProbe(id, nowMs)
      return
    }
  }

  private startProbe (target: string, nowMs: number): number {
    const seq = this.nextSeq()
    const scale = this.awareness + 1
    this.probes.set(seq, {
      seq,
      target,
      directDeadlineMs: nowMs + this.config.probeTimeoutMs * scale,
      deadlineMs: nowMs + this.config.probeIntervalMs * scale,
      indirect: false,
      refused: false,
      expectedNacks: 0,
      nacks: 0,
    })
    // Lifeguard's buddy system: a suspect hears of its suspicion with the probe itself.
    const updates = this.piggyback()
    const member = this.members.get(target)
    if (member?.state === 'suspect') {
      updates.unshift({ kind: 'suspect', id: target, incarnation: member.incarnation, from: this.id })
    }
    this.send(target, { type: 'ping', seq, updates })
    return seq
  }

  private startIndirect (probe: Probe, nowMs: number): void {
    probe.indirect = true
    const target = this.members.get(probe.target)
    const helpers = this.pickRandom(
      this.others((m) => m.state === 'alive' && m.id !== probe.target),
      this.config.indirectChecks,
    )
    probe.expectedNacks = helpers.length
    for (const helper of helpers) {
      this.send(helper.id, {
        type: 'ping-req', seq: probe.seq, target: probe.target, targetAddrs: target?.addrs ?? [], updates: this.piggyback(),
      })
    }
    this.maybeFinishEarly(probe, nowMs)
  }

  /**
   * Every helper said it could not reach the target either (or, with no helper to
   * ask, the direct ping was refused): all the evidence is in, no need to wait.
   */
  private maybeFinishEarly (probe: Probe, nowMs: number): void {
    if (!probe.indirect || probe.nacks < probe.expectedNacks) return
    if (probe.expectedNacks > 0 || probe.refused) this.failProbe(probe, nowMs)
  }

  private failProbe (probe: Probe, nowMs: number): void {
    this.endProbe(probe)
    // Lifeguard: helpers that did not even nack suggest the fault is ours; with no
    // helpers to tell, every failed probe counts against our own health.
    const missedNacks = probe.expectedNacks > 0 ? probe.expectedNacks - Math.min(probe.nacks, probe.expectedNacks) : 1
    this.adjustAwareness(missedNacks)
    const member = this.members.get(probe.target)
    if (member === undefined || (member.state !== 'alive' && member.state !== 'suspect')) return
    this.applySuspect({ kind: 'suspect', id: member.id, incarnation: member.incarnation, from: this.id }, nowMs)
  }

  private endProbe (probe: Probe): void {
    this.probes.delete(probe.seq)
    if (this.regularProbe === probe.seq) this.regularProbe = null
  }

  private probing (target: string): boolean {
    for (const probe of this.probes.values()) if (probe.target === target) return true
    return false
  }

  private expireProbes (nowMs: number): void {
    for (const probe of [...this.probes.values()]) {
      if (!probe.indirect && nowMs >= probe.directDeadlineMs) this.startIndirect(probe, nowMs)
      if (this.probes.has(probe.seq) && nowMs >= probe.deadlineMs) this.failProbe(probe, nowMs)
    }
  }

  private expireRelays (nowMs: number): void {
    for (const [seq, relay] of [...this.relays]) {
      if (nowMs < relay.deadlineMs) continue
      this.relays.delete(seq)
      this.send(relay.origin, { type: 'nack', seq: relay.originSeq, updates: this.piggyback() })
    }
  }

  private onPing (from: string, seq: number): void {
    this.send(from, { type: 'ack', seq, updates: this.piggyback() })
  }

  private onAck (seq: number, nowMs: number): void {
    const probe = this.probes.get(seq)
    if (probe !== undefined) {
      this.endProbe(probe)
      this.adjustAwareness(-1)
      const target = this.members.get(probe.target)
      if (target !== undefined) target.lastHeardMs = nowMs
      return
    }
    const relay = this.relays.get(seq)
    if (relay !== undefined) {
      this.relays.delete(seq)
      this.send(relay.origin, { type: 'ack', seq: relay.originSeq, updates: this.piggyback() })
    }
  }

  private onNack (seq: number, nowMs: number): void {
    const probe = this.probes.get(seq)
    if (probe === undefined) return
    probe.nacks++
    this.maybeFinishEarly(probe, nowMs)
  }

  private onPingReq (from: string, originSeq: number, target: string, targetAddrs: string[], nowMs: number): void {
    if (this.leaving) return
    const seq = this.nextSeq()
    // Nack at 80 % of the probe timeout (as memberlist): the asker started its indirect
    // phase one probe timeout before its deadline, so a full timeout here would make
    // every nack arrive late and count against the asker's own health.
    this.relays.set(seq, { origin: from, originSeq, deadlineMs: nowMs + Math.floor(this.config.probeTimeoutMs * NACK_TIMEOUT_FRACTION) })
    const known = this.members.get(target)
    this.out.messages.push({ to: target, addrs: known?.addrs ?? targetAddrs, message: { type: 'ping', seq, updates: this.piggyback() } })
  }

  // ---- suspicion ------------------------------------------------------------

  private expireSuspicions (nowMs: number): void {
    for (const [id, suspicion] of [...this.suspicions]) {
      // Lifeguard's local health stretches our own suspicions too: a node that doubts
      // its own timing (missed nacks, stalls, refutations) waits longer before it
      // declares anyone dead; a healthy node (score 0) is not slowed at all.
      if (nowMs < suspicion.deadlineMs(this.awareness + 1)) continue
      this.suspicions.delete(id)
      const member = this.members.get(id)
      if (member === undefined || member.state !== 'suspect') continue
      this.applyVerdict({ kind: 'dead', id, incarnation: member.incarnation, from: this.id }, nowMs)
    }
  }

  /** `aliveSinceMs`: since when this node has known the member alive (first seen, or back from the dead). */
  private startSuspicion (member: Member, from: string, aliveSinceMs: number, nowMs: number): void {
    const n = this.liveCount()
    // Lifeguard: K = suspicionMult − 2 confirmations bring the timeout to its floor,
    // fewer in a cluster too small to have that many other witnesses.
    const expected = Math.min(this.config.suspicionMult - 2, Math.max(0, n - 2))
    const maxMs = suspicionMaxMs(this.config, n)
    // A newcomer is at its busiest in its first seconds (a connection and a handshake
    // with every member, its code still cold): everyone fails to reach it at once, so
    // confirmations prove little. Its suspicion runs to the ceiling.
    const newcomer = nowMs - aliveSinceMs < this.config.newcomerGraceMs
    this.suspicions.set(member.id, new Suspicion({
      from, startMs: nowMs, minMs: newcomer ? maxMs : suspicionMinMs(this.config, n), maxMs, expected,
    }))
  }

  // ---- applying updates -----------------------------------------------------

  /** `from`: the sender as the transport authenticated it; `doubted`: a stranger, or a member we hold gone. */
  private applyUpdates (updates: Update[], nowMs: number, doubted: boolean, from: string): void {
    for (const update of updates) {
      const refusal = this.admit(update, from, doubted)
      if (refusal !== null) {
        this.refuse(from, refusal, update.kind, update.id, update.incarnation)
        continue
      }
      if (doubted && update.kind === 'dead') this.applySuspect({ kind: 'suspect', id: update.id, incarnation: update.incarnation, from: update.from }, nowMs)
      else this.applyUpdate(update, nowMs)
    }
  }

  /**
   * The checks every statement passes before it is applied; null when it may be.
   * Cheap checks first; a signature is checked only for a statement that would
   * change something (news older than what we hold is a no-op anyway).
   */
  private admit (update: Update, from: string, doubted: boolean): RefusalReason | null {
    const { id, incarnation } = update
    const verdict = update.kind === 'suspect' || update.kind === 'dead'
    // A suspicion at the cap could be outbid only above it, where nobody may go.
    if (incarnation > INCARNATION_MAX || (verdict && incarnation === INCARNATION_MAX)) return 'incarnation-cap'
    if (id === this.id) return this.admitAboutSelf(update)
    const member = this.members.get(id)
    if (verdict) {
      if (member === undefined || incarnation <= member.incarnation) return null
      // With keys, a member's incarnation is only what it signed: another's word
      // cannot raise it, so a key holder cannot push a member towards the cap.
      if (this.keys !== null) return 'incarnation-unstated'
      return incarnation - member.incarnation > this.config.incarnationJumpMax ? 'incarnation-jump' : null
    }
    if (member !== undefined) {
      if (incarnation < member.incarnation || member.state === 'left') return null
      if (update.kind === 'alive' && incarnation === member.incarnation) return null
      if (from !== id && incarnation - member.incarnation > this.config.incarnationJumpMax) return 'incarnation-jump'
    } else if (update.kind === 'left') {
      return null
    }
    if (this.keys !== null) return verifyStatement(this.keys, update, update.sig) ? null : 'bad-signature'
    // Unsigned, a goodbye for another is believed from the member itself, or relayed by a member we hold alive.
    if (update.kind === 'left' && doubted && id !== from) return 'unverified-left'
    return null
  }

  /**
   * Statements about ourselves at an incarnation we did not give can only come
   * from a previous life of this node (same key, higher incarnation remembered by
   * others), which we must outbid — or be forgeries, which nobody with keys takes,
   * so they need no answer. With keys, a suspicion above our own incarnation is
   * one nobody else takes either (others hold us at what we signed): answering it
   * would only let a liar walk our incarnation up. A previous life's incarnation
   * reaches us signed (its record in a push-pull), and is outbid then.
   */
  private admitAboutSelf (update: Update): RefusalReason | null {
    const self = this.self()
    if (update.kind === 'suspect' || update.kind === 'dead') {
      return this.keys !== null && update.incarnation > self.incarnation ? 'incarnation-unstated' : null
    }
    if (update.incarnation < self.incarnation) return null
    if (update.kind === 'alive' && update.incarnation === self.incarnation && sameAlive(update, self)) return null
    if (this.keys === null) return null
    return verifyStatement(this.keys, update, update.sig) ? null : 'bad-signature'
  }

  private applyUpdate (update: Update, nowMs: number): void {
    switch (update.kind) {
      case 'alive': return this.applyAlive(update, nowMs)
      case 'suspect': return this.applySuspect(update, nowMs)
      case 'dead':
      case 'left': return this.applyVerdict(update, nowMs)
    }
  }

  private applyAlive (update: Extract<Update, { kind: 'alive' }>, nowMs: number): void {
    if (update.id === this.id) {
      const self = this.self()
      // Someone speaks of us at an incarnation we did not give (a previous life of
      // this node, or a stale record): outbid it.
      if (update.incarnation > self.incarnation ||
        (update.incarnation === self.incarnation && !sameAlive(update, self))) this.refute(update.incarnation)
      return
    }
    // The proof a record carries is the statement its state stands on: an alive's
    // signature replaces it only when that alive is taken (a stale one, relayed after
    // the member's signed goodbye, must not leave the goodbye without its proof).
    const member = this.members.get(update.id)
    if (member === undefined) {
      if (this.members.size >= this.config.membersMax) return
      if (update.sig !== undefined) this.proofs.set(update.id, update.sig)
      const fresh: Member = {
        id: update.id,
        addrs: [...update.addrs],
        incarnation: update.incarnation,
        state: 'alive',
        meta: cloneMeta(update.meta),
        stateSinceMs: nowMs,
        lastHeardMs: null,
      }
      this.members.set(fresh.id, fresh)
      this.liveCached = null
      // A newcomer goes to a random place in this round, as in memberlist.
      const at = this.probeIndex + Math.floor(this.random() * (this.probeOrder.length - this.probeIndex + 1))
      this.probeOrder.splice(at, 0, fresh.id)
      this.emit(fresh, null, null)
      this.broadcasts.enqueue(update)
      return
    }
    if (update.incarnation <= member.incarnation) return
    if (update.sig !== undefined) this.proofs.set(update.id, update.sig)
    const previous = member.state
    const previousIncarnation = member.incarnation
    member.incarnation = update.incarnation
    member.addrs = [...update.addrs]
    member.meta = cloneMeta(update.meta)
    this.suspicions.delete(member.id)
    if (previous !== 'alive') member.stateSinceMs = nowMs
    member.state = 'alive'
    this.liveCached = null
    this.emit(member, previous, previousIncarnation)
    this.broadcasts.enqueue(update)
  }

  private applySuspect (update: Extract<Update, { kind: 'suspect' }>, nowMs: number): void {
    if (this.staleAboutSelf(update)) return
    const member = this.members.get(update.id)
    if (member === undefined || update.incarnation < member.incarnation) return
    if (member.state === 'dead' || member.state === 'left') return
    if (update.id === this.id) {
      this.refuteClaim(update.incarnation)
      return
    }
    const suspicion = this.suspicions.get(member.id)
    if (member.state === 'suspect' && suspicion !== undefined && update.incarnation === member.incarnation) {
      // An independent confirmation shortens the timeout; pass it on so others count it too.
      if (suspicion.confirm(update.from)) this.broadcasts.enqueue(update)
      return
    }
    const previousIncarnation = member.incarnation
    const aliveSinceMs = member.stateSinceMs
    member.incarnation = update.incarnation
    this.setState(member, 'suspect', nowMs, previousIncarnation)
    this.startSuspicion(member, update.from, aliveSinceMs, nowMs)
    this.broadcasts.enqueue(update)
    // Check for ourselves: our own probe is an independent witness (a confirmation if
    // it fails too), and its buddy-system ping tells the suspect to refute at once.
    // Not everyone: about hearsayProbes members in all, so a suspicion costs O(1)
    // probes per member, not O(n) — enough witnesses to reach the timeout's floor.
    if (update.from !== this.id && !this.leaving && !this.probing(member.id) &&
      this.random() < this.config.hearsayProbes / Math.max(1, this.liveCount() - 2)) this.startProbe(member.id, nowMs)
  }

  /**
   * A death or a goodbye. A member already gone stays gone (a leave may still
   * follow a death); about ourselves, it is a claim to outbid, unless we are leaving.
   */
  private applyVerdict (update: Extract<Update, { kind: 'dead' | 'left' }>, nowMs: number): void {
    if (update.kind === 'dead' && this.staleAboutSelf(update)) return
    const member = this.members.get(update.id)
    if (member === undefined || update.incarnation < member.incarnation) return
    // Another's "dead" for a member we still see alive is only a suspicion here: we
    // have no failed probe of our own, and the verdict may be stale (the other side
    // of a healed partition). A live member then gets its buddy ping and refutes;
    // a dead one is confirmed by our own probe. Members we already suspect die at once.
    if (update.kind === 'dead' && member.state === 'alive' && update.id !== this.id) {
      this.applySuspect({ kind: 'suspect', id: update.id, incarnation: update.incarnation, from: update.from }, nowMs)
      return
    }
    if (member.state === 'left' || (update.kind === 'dead' && member.state === 'dead')) return
    if (update.id === this.id) {
      if (this.leaving) return
      if (update.kind === 'left') this.refute(update.incarnation)
      else this.refuteClaim(update.incarnation)
      return
    }
    if (update.kind === 'left' && update.sig !== undefined) this.proofs.set(update.id, update.sig)
    const previousIncarnation = member.incarnation
    member.incarnation = update.incarnation
    this.suspicions.delete(member.id)
    this.setState(member, update.kind, nowMs, previousIncarnation)
    this.broadcasts.enqueue(update)
  }

  /**
   * Another member's record, as the updates it stands for. Its "dead" is only our
   * suspicion (not witnessed by us; a live member then gets to refute), and there
   * is nothing to learn about a suspect we never knew. A suspect's record still
   * carries the member's own signed "alive" at that incarnation: taken first, so
   * that the suspicion is about an incarnation we know the member stated.
   */
  private recordUpdates (record: MemberRecord, from: string): Update[] {
    const alive: Update = { kind: 'alive', id: record.id, incarnation: record.incarnation, addrs: record.addrs, meta: record.meta, sig: record.sig }
    switch (record.state) {
      case 'alive': return [alive]
      case 'left': return [{ kind: 'left', id: record.id, incarnation: record.incarnation, sig: record.sig }]
      case 'suspect':
      case 'dead': {
        // A record of ourselves older than what we said is no news: a push-pull after
        // a heal carries hundreds, and announcing ourselves again for each would crowd
        // out the refutations others are waiting for.
        if (record.id === this.id && record.incarnation < this.self().incarnation) return []
        const suspect: Update = { kind: 'suspect', id: record.id, incarnation: record.incarnation, from }
        // Ourselves included: a previous life's record, suspected or dead at an
        // incarnation above ours, is outbid through its own signed alive.
        const known = this.members.get(record.id)
        const newer = known !== undefined && record.incarnation > known.incarnation
        return newer && record.sig !== undefined ? [alive, suspect] : [suspect]
      }
    }
  }

  /**
   * A suspicion or death of ours at an incarnation we already outbid: whoever sent
   * it never heard our refutation (every retransmit of it may have been lost, say
   * while our outbound link was down), and stale news is otherwise ignored. Announce
   * the incarnation we have again, or we are declared dead while alive and reachable.
   */
  private staleAboutSelf (update: Extract<Update, { kind: 'suspect' | 'dead' }>): boolean {
    if (update.id !== this.id || update.incarnation >= this.self().incarnation) return false
    if (!this.leaving) this.broadcasts.enqueue(this.selfAlive())
    return true
  }

  /**
   * Another's suspicion or death of us, at or above our incarnation (with keys, at
   * it: admitAboutSelf refuses the rest). One step above it outbids the claim.
   */
  private refuteClaim (incarnation: number): void {
    this.refute(incarnation)
  }

  private refute (incarnation: number): void {
    const self = this.self()
    const previousIncarnation = self.incarnation
    // Every claim taken is below the cap (admit), so the cap always leaves one more step.
    self.incarnation = Math.min(INCARNATION_MAX, Math.max(self.incarnation, incarnation) + 1)
    this.restate()
    // Being suspected means others could not hear us in time: doubt our own health first.
    this.adjustAwareness(1)
    this.emit(self, self.state, previousIncarnation)
    this.broadcasts.enqueue(this.selfAlive())
  }

  /** Signs what we now say about ourselves (our alive at this incarnation), for gossip and push-pull records. */
  private restate (): void {
    if (this.keys === null) return
    const self = this.self()
    this.proofs.set(self.id, signStatement(this.keys, { kind: 'alive', id: self.id, incarnation: self.incarnation, addrs: self.addrs, meta: self.meta }))
  }

  private refuse (from: string, reason: RefusalReason, kind: Update['kind'] | Message['type'], id?: string, incarnation?: number): void {
    this.out.refused.push({ from, reason, kind, ...(id === undefined ? {} : { id }), ...(incarnation === undefined ? {} : { incarnation }) })
  }

  // ---- gossip and anti-entropy ----------------------------------------------

  private gossipRound (nowMs: number): void {
    if (this.broadcasts.size === 0) return
    // The recently dead get gossip too, so that a member declared dead by mistake hears it and refutes.
    const targets = this.pickRandom(this.others((m) =>
      m.state === 'alive' || m.state === 'suspect' ||
      (m.state === 'dead' && nowMs - m.stateSinceMs < this.config.gossipToTheDeadMs)), this.config.gossipNodes)
    for (const target of targets) {
      const updates = this.piggyback()
      if (updates.length === 0) return
      this.send(target.id, { type: 'gossip', updates })
    }
  }

  private pushPull (member: Member, join: boolean): void {
    this.send(member.id, { type: 'push-pull', join, reply: true, members: this.records() })
  }

  private records (): MemberRecord[] {
    return [...this.members.values()].map((m) => {
      const record: MemberRecord = { id: m.id, addrs: [...m.addrs], incarnation: m.incarnation, state: m.state, meta: cloneMeta(m.meta) }
      const sig = this.proofs.get(m.id)
      if (sig !== undefined) record.sig = sig
      return record
    })
  }

  private piggyback (): Update[] {
    return this.broadcasts.take(this.config.piggybackUpdatesMax, retransmitLimit(this.config, this.liveCount()))
  }

  // ---- local health ---------------------------------------------------------

  private adjustAwareness (delta: number): void {
    this.awareness = Math.min(this.config.awarenessMax - 1, Math.max(0, this.awareness + delta))
  }

  /**
   * A long gap between inputs means this process was paused or starved: answers may
   * be waiting unread in its sockets. Push every deadline back by the gap rather than
   * accuse others of our own silence, and doubt our own health.
   */
  private detectStall (nowMs: number): void {
    const gap = nowMs - this.lastInputMs
    this.lastInputMs = nowMs
    if (gap <= this.config.stallMs) return
    for (const probe of this.probes.values()) {
      probe.directDeadlineMs += gap
      probe.deadlineMs += gap
    }
    for (const relay of this.relays.values()) relay.deadlineMs += gap
    for (const suspicion of this.suspicions.values()) suspicion.postpone(gap)
    this.adjustAwareness(1)
  }

  private reap (nowMs: number): void {
    for (const member of [...this.members.values()]) {
      if (member.id === this.id || (member.state !== 'dead' && member.state !== 'left')) continue
      if (nowMs - member.stateSinceMs >= this.config.deadRetentionMs) {
        this.members.delete(member.id)
        this.proofs.delete(member.id)
        this.liveCached = null
      }
    }
  }

  // ---- helpers --------------------------------------------------------------

  private self (): Member {
    return this.members.get(this.id)!
  }

  /** What we say about ourselves, signed when we have keys. */
  private selfAlive (): Update {
    const self = this.self()
    const update: Update = { kind: 'alive', id: self.id, incarnation: self.incarnation, addrs: [...self.addrs], meta: cloneMeta(self.meta) }
    const sig = this.proofs.get(self.id)
    if (sig !== undefined) update.sig = sig
    return update
  }

  /** Members that are neither dead nor gone: the n of every formula. */
  private liveCount (): number {
    if (this.liveCached === null) {
      let n = 0
      for (const member of this.members.values()) if (member.state === 'alive' || member.state === 'suspect') n++
      this.liveCached = n
    }
    return this.liveCached
  }


  private others (keep: (m: Member) => boolean): Member[] {
    const list: Member[] = []
    for (const member of this.members.values()) if (member.id !== this.id && keep(member)) list.push(member)
    return list
  }

  private send (to: string, message: Message): void {
    const member = this.members.get(to)
    const outbound: Outbound = { to, addrs: member?.addrs ?? [], message }
    this.out.messages.push(outbound)
  }

  private setState (member: Member, state: MemberState, nowMs: number, previousIncarnation: number): void {
    const previous = member.state
    member.state = state
    this.liveCached = null
    member.stateSinceMs = nowMs
    this.emit(member, previous, previousIncarnation)
  }

  private emit (member: Member, previous: MemberState | null, previousIncarnation: number | null): void {
    this.out.events.push({ member: cloneMember(member), previous, previousIncarnation })
  }

  private nextSeq (): number {
    this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER
    return this.seq
  }

  private shuffle<T> (items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1))
      const t = items[i]!
      items[i] = items[j]!
      items[j] = t
    }
    return items
  }

  /** The interval, ±25 %. */
  private jitter (ms: number): number {
    return Math.round(ms * (0.75 + this.random() / 2))
  }

  private pickRandom<T> (items: T[], count: number): T[] {
    return this.shuffle(items).slice(0, count)
  }
}

function cloneMeta (meta: MemberMeta): MemberMeta {
  return { ...meta, labels: { ...meta.labels } }
}

function cloneMember (member: Member): Member {
  return { ...member, addrs: [...member.addrs], meta: cloneMeta(member.meta) }
}

// Field by field, not as JSON text: the codec rebuilds objects in its schema's key
// order, so a member's own record echoed back by a peer must still compare equal,
// or it refutes its own unchanged record over and over.
function sameAlive (update: Extract<Update, { kind: 'alive' }>, member: Member): boolean {
  const a = update.meta
  const b = member.meta
  return update.addrs.length === member.addrs.length && update.addrs.every((addr, i) => addr === member.addrs[i]) &&
    a.cpuMillis === b.cpuMillis && a.memoryBytes === b.memoryBytes && a.apiUrl === b.apiUrl && a.isolation === b.isolation &&
    Object.keys(a.labels).length === Object.keys(b.labels).length &&
    Object.entries(a.labels).every(([key, value]) => Object.hasOwn(b.labels, key) && b.labels[key] === value)
}
