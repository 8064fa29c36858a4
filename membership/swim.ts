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

import { BroadcastQueue } from './broadcast.ts'
import {
  type MembershipConfig, pushPullIntervalMs, retransmitLimit, suspicionMaxMs, suspicionMinMs,
} from './config.ts'
import { Suspicion } from './suspicion.ts'
import type {
  Effects, Member, MemberMeta, MemberRecord, MemberState, Message, Outbound, SelfInit, Update,
} from './types.ts'

/** Incarnations at or above this are refused from others: the codec admits no higher one to refute with. */
const INCARNATION_MAX = Number.MAX_SAFE_INTEGER - 1

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
}

/** Forgetting long-dead members is not urgent: once a second is plenty. */
const REAP_INTERVAL_MS = 1_000
/** A helper's nack goes out at this fraction of the probe timeout (Lifeguard, memberlist). */
const NACK_TIMEOUT_FRACTION = 0.8

export class Swim {
  readonly config: MembershipConfig
  readonly id: string
  private readonly random: () => number
  private readonly members = new Map<string, Member>()
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
  private out: Effects = { messages: [], events: [] }

  constructor (init: SwimInit) {
    this.config = init.config
    this.id = init.self.id
    this.random = init.random
    const now = init.nowMs
    const self: Member = {
      id: init.self.id,
      addrs: [...init.self.addrs],
      incarnation: init.incarnation ?? 0,
      state: 'alive',
      meta: cloneMeta(init.self.meta),
      stateSinceMs: now,
      lastHeardMs: now,
    }
    this.members.set(self.id, self)
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
    if (message.type === 'push-pull') {
      this.mergeRecords(from, message.members, nowMs)
      if (message.reply && !this.leaving) this.send(from, { type: 'push-pull', join: false, reply: false, members: this.records() })
      return
    }
    // A sender we hold dead (or gone) is across a partition from us, or just back
    // from one: its verdicts were witnessed by nobody we can reach, so its "dead" is
    // only a suspicion here, as in a push-pull. Taken as deaths, a healed
    // partition's stale verdicts would kill members their own side sees alive.
    // A sender that is no member at all (any peer that can connect may send to us) is
    // doubted the same way, and its goodbyes for others are not taken at all (found by
    // the reliability suite's forged claims).
    const stranger = sender === undefined && from !== this.id
    const doubted = stranger || (sender !== undefined && (sender.state === 'dead' || sender.state === 'left'))
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
    self.incarnation++
    this.setState(self, 'left', nowMs, self.incarnation - 1)
    const update: Update = { kind: 'left', id: self.id, incarnation: self.incarnation }
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
    self.incarnation++
    this.emit(self, self.state, previousIncarnation)
    this.broadcasts.enqueue(this.aliveUpdate(self))
  }

  // ---- outputs --------------------------------------------------------------

  /** The effects accumulated since the last drain: send the messages, then report the events. */
  drain (): Effects {
    const out = this.out
    this.out = { messages: [], events: [] }
    return out
  }

  /** Every member this node knows, itself included. Copies: safe to keep. */
  list (): Member[] {
    return [...this.members.values()].map(cloneMember)
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

  private applyUpdates (updates: Update[], nowMs: number, doubted = false, from: string | null = null): void {
    for (const update of updates) {
      // At the highest incarnation the codec admits, a claim could never be outbid (a refutation needs one more).
      if (update.incarnation >= INCARNATION_MAX) continue
      // A goodbye is believed from the member itself, or relayed by a member we hold alive.
      if (update.kind === 'left' && doubted && update.id !== from) continue
      if (doubted && update.kind === 'dead') this.applySuspect({ kind: 'suspect', id: update.id, incarnation: update.incarnation, from: update.from }, nowMs)
      else this.applyUpdate(update, nowMs)
    }
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
    const member = this.members.get(update.id)
    if (member === undefined) {
      if (this.members.size >= this.config.membersMax) return
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
      this.refute(update.incarnation)
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
      if (!this.leaving) this.refute(update.incarnation)
      return
    }
    const previousIncarnation = member.incarnation
    member.incarnation = update.incarnation
    this.suspicions.delete(member.id)
    this.setState(member, update.kind, nowMs, previousIncarnation)
    this.broadcasts.enqueue(update)
  }

  /** Another member's full view: taken as updates, except that its "dead" is only our suspicion. */
  private mergeRecords (from: string, records: MemberRecord[], nowMs: number): void {
    for (const record of records) {
      switch (record.state) {
        case 'alive':
          this.applyAlive({ kind: 'alive', id: record.id, incarnation: record.incarnation, addrs: record.addrs, meta: record.meta }, nowMs)
          break
        case 'suspect':
        case 'dead':
          // Not witnessed by us: only a suspicion here (a live member then gets to refute),
          // and nothing to learn about members we never knew.
          if (record.id === this.id) {
            if (record.incarnation >= this.self().incarnation && !this.leaving) this.refute(record.incarnation)
          } else {
            this.applySuspect({ kind: 'suspect', id: record.id, incarnation: record.incarnation, from }, nowMs)
          }
          break
        case 'left':
          this.applyVerdict({ kind: 'left', id: record.id, incarnation: record.incarnation }, nowMs)
          break
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
    if (!this.leaving) this.broadcasts.enqueue(this.aliveUpdate(this.self()))
    return true
  }

  private refute (incarnation: number): void {
    const self = this.self()
    const previousIncarnation = self.incarnation
    self.incarnation = Math.max(self.incarnation, incarnation) + 1
    // Being suspected means others could not hear us in time: doubt our own health first.
    this.adjustAwareness(1)
    this.emit(self, self.state, previousIncarnation)
    this.broadcasts.enqueue(this.aliveUpdate(self))
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
    return [...this.members.values()].map((m) => ({
      id: m.id, addrs: [...m.addrs], incarnation: m.incarnation, state: m.state, meta: cloneMeta(m.meta),
    }))
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
        this.liveCached = null
      }
    }
  }

  // ---- helpers --------------------------------------------------------------

  private self (): Member {
    return this.members.get(this.id)!
  }

  private aliveUpdate (member: Member): Update {
    return { kind: 'alive', id: member.id, incarnation: member.incarnation, addrs: [...member.addrs], meta: cloneMeta(member.meta) }
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
