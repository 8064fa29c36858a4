// The cluster state on a node: the document of crdt/, kept in a store, spread by
// gossip and repaired by anti-entropy.
//
//   write ─▶ doc ─update─▶ store (fsync) ─▶ ack
//                     └──▶ gossip batch ─▶ transport.publish   (at once, in parallel with the fsync)
//   gossip in ─▶ check ─▶ doc ─▶ store       (a gap: anti-entropy with the sender)
//   new connection / every syncInterval ─▶ a SyncSession (crdt/sync.ts) over a channel
//
// Everything it touches comes in as an interface: the clock, a source of
// randomness, the store (level on a node, a simulated disk in testnet/sim) and the
// transport (libp2p on a node, the simulated network in testnet/sim), so the
// simulator runs this very service.

import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import * as Y from 'yjs'
import { type InvalidRecord, ClusterState, GoneTracker, ORIGIN, type StateChange } from '../crdt/state.ts'
import {
  type Frame, SYNC_LIMITS, SyncSession, applyRemote, decodeFrame, encodeFrame, stateFingerprint,
  stateVectorOf, summarizeStateVector, type StateVectorSummary,
} from '../crdt/sync.ts'
import type { RecordKeys } from '../crdt/signing.ts'
import { type Clock, systemClock } from './clock.ts'
import type { StateConfig } from './config.ts'
import { MurmurError } from './errors.ts'
import { FaultDropped } from './faults.ts'
import type { StateStore } from './state-store.ts'
import { PeerError, type StateTransport, type SyncChannel } from './state-transport.ts'

/** The first byte of a gossip message: the format of what follows (a Yjs v1 update). */
const GOSSIP_FORMAT = 1

/** An update as one gossip message: the format byte, then the update. */
export function gossipMessage (update: Uint8Array): Uint8Array {
  const data = new Uint8Array(1 + update.byteLength)
  data[0] = GOSSIP_FORMAT
  data.set(update, 1)
  return data
}
const SYNC_TIMEOUT_MS = 15_000
/** Writes acknowledged to nobody yet; past this the node answers 503 at once. */
const WRITES_IN_FLIGHT_MAX = 1_024
/** Peers remembered for `murmur state`; the oldest entry goes first. */
const SYNC_LOG_MAX = 1_000
/** A connection from a peer membership does not know yet is synced with after this, if it is a member by then. */
const NEW_PEER_SYNC_DELAY_MS = 500
/**
 * A sync request from a peer membership does not take for a member yet waits this
 * long for it to become one before it is refused: a node that joins (or comes back
 * after it left, and must first outbid its goodbye) asks for the state at once,
 * often before its news has reached the node it asks.
 */
const NON_MEMBER_WAIT_MS = 3_000
const NON_MEMBER_POLL_MS = 50
/** A diff larger than this has its signatures checked in slices before it is applied (a few hundred records). */
const PRECHECK_BYTES_MIN = 64 * 1024

/** What the service needs of a store: level's StateStore on a node, a simulated disk in testnet/sim. */
export type StateStorage = Pick<StateStore, 'load' | 'append' | 'compact' | 'setSnapshotSource' | 'stats' | 'close'>

/** A member in one of these states takes part in the cluster: it is answered, and what it writes is read. */
export function isLive (state: string | undefined): boolean {
  return state === 'alive' || state === 'suspect'
}

/** What the service needs of membership. */
export interface StateMembers {
  /** Alive members other than this node: whom anti-entropy may pick. */
  peers (): string[]
  /** 'alive', 'suspect', 'dead', 'left', or undefined for a node membership does not know. */
  stateOf (id: string): string | undefined
}

export interface PeerSync {
  peer: string
  at: string
  /** out: we asked; in: the peer asked. */
  direction: 'out' | 'in'
  reason: string
  ok: boolean
  error?: string
  ms: number
  sentBytes: number
  receivedBytes: number
}

export interface StateStats {
  gossip: { published: number, publishedBytes: number, received: number, applied: number, skippedLarge: number, dropped: Record<string, number> }
  sync: { started: number, served: number, failed: number, appliedBytes: number, rejected: Record<string, number> }
  invalidRecords: number
  maintenance: { runs: number, removedTasks: number, removedJobs: number, removedNodes: number, rotatedSpaces: number, lastMs: number | null }
}

export interface StateInfo {
  life: string
  clientId: number
  bytes: number
  records: { nodes: number, jobs: number, tasks: number, spaces: number }
  stateVector: StateVectorSummary
  digest: string
  store: ReturnType<StateStorage['stats']>
  stats: StateStats
  syncs: PeerSync[]
}

export interface StateLoadInit {
  self: string
  /** This node's signing key and everyone's public keys: records are signed by their writers (crdt/signing.ts). */
  keys: RecordKeys
  storage: StateStorage
  log: Logger
  /** Where the document's Yjs client id comes from: fresh per process, never reused. */
  random?: () => number
  /** Names the store in the one-line error about a damaged one. */
  where: string
}

export interface StateServiceInit {
  /** The document, loaded from `storage` (loadState). */
  state: ClusterState
  storage: StateStorage
  transport: StateTransport
  members: StateMembers
  config: StateConfig
  log: Logger
  clock?: Clock
  random?: () => number
}

/** Loads the document from its store: the snapshot, then the log. */
export async function loadState (init: StateLoadInit): Promise<ClusterState> {
  const { storage, log, where } = init
  const started = performance.now()
  const loaded = await storage.load()
  const doc = new Y.Doc()
  // The client id this process writes under is set by ClusterState: derived from the node's id
  // and a random nonce, new in every process (crdt/signing.ts, clientIdOf).
  try {
    doc.transact(() => {
      if (loaded.snapshot !== null) Y.applyUpdate(doc, loaded.snapshot)
      for (const update of loaded.updates) Y.applyUpdate(doc, update)
    }, ORIGIN.load)
  } catch (err) {
    throw new MurmurError('STATE_CORRUPT', `the state database in ${where} holds an update that cannot be read (${(err as Error).message}); start the node with --reset-state to move it aside and refill it from the other nodes`, 2)
  }
  if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
    log.warn({ where }, 'the stored state has a gap; peers will fill it')
    doc.store.pendingStructs = null
    doc.store.pendingDs = null
  }
  // What the store holds passed the checks when it arrived (or was written here): not verified again.
  const state = new ClusterState({ self: init.self, life: loaded.lifeId, doc, keys: init.keys, trusted: true, ...(init.random === undefined ? {} : { random: init.random }) })
  log.info({ life: loaded.lifeId, updates: loaded.updates.length, snapshotBytes: loaded.snapshot?.length ?? 0, ...state.counts(), ms: Math.round(performance.now() - started) }, 'state loaded')
  return state
}

export class StateService extends EventEmitter<{ change: [StateChange] }> {
  /** The document's records, typed. */
  readonly records: ClusterState
  private readonly transport: StateTransport
  private readonly store: StateStorage
  private readonly members: StateMembers
  private readonly config: StateConfig
  private readonly log: Logger
  private readonly clock: Clock
  private readonly random: () => number
  private readonly syncs = new Map<string, PeerSync>()
  /** Which nodes are gone for good, for maintenance. */
  private readonly gone: GoneTracker
  private readonly running = new Map<string, Promise<PeerSync>>()
  private syncTimer: ReturnType<Clock['setInterval']> | null = null
  private maintainTimer: ReturnType<Clock['setInterval']> | null = null
  private outbox: Uint8Array[] = []
  private flushTimer: ReturnType<Clock['setTimeout']> | null = null
  private tokens: number
  private tokensAt: number
  /** The append of the last local update, for write() to await. */
  private lastLocalAppend: Promise<void> | null = null
  private started = false
  private stopped = false
  private writesInFlight = 0
  /** Aborts every sync in progress when the node stops. */
  private readonly aborter = new AbortController()
  private readonly serving = new Set<Promise<void>>()
  /** Local changes on their way to the disk (they are in the gossip batch already). */
  private readonly storing = new Set<Promise<void>>()
  /** Counts document updates, to know when a cached digest is stale. */
  private version = 0
  private digestCache: { version: number, sv: Uint8Array, digestBytes: Uint8Array } | null = null
  private sizeCache: { version: number, at: number, bytes: number } | null = null
  readonly stats: StateStats = {
    gossip: { published: 0, publishedBytes: 0, received: 0, applied: 0, skippedLarge: 0, dropped: {} },
    sync: { started: 0, served: 0, failed: 0, appliedBytes: 0, rejected: {} },
    invalidRecords: 0,
    maintenance: { runs: 0, removedTasks: 0, removedJobs: 0, removedNodes: 0, rotatedSpaces: 0, lastMs: null },
  }

  constructor (init: StateServiceInit) {
    super()
    this.records = init.state
    this.store = init.storage
    this.transport = init.transport
    this.members = init.members
    this.config = init.config
    this.log = init.log
    this.clock = init.clock ?? systemClock
    this.random = init.random ?? Math.random
    this.gone = new GoneTracker(init.config.nodeRetentionMs)
    this.tokens = init.config.publishPerSecondMax
    this.tokensAt = this.clock.monotonic()
    const state = this.records
    this.store.setSnapshotSource(() => Y.encodeStateAsUpdate(state.doc))
    state.doc.on('update', this.onUpdate)
    state.onChange((change) => {
      // Written back in the same turn as the removal: no stop or crash falls in between.
      if (!change.local && state.lostRecords() > 0) this.restoreLost()
      try {
        this.emit('change', change)
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'a state change listener failed')
      }
    })
    state.onInvalid(this.onInvalid)
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.transport.start({
      validate: (from, data) => this.validate(from, data),
      gossip: (from, data) => { this.onGossip(from, data) },
      channel: (channel) => {
        const serving = this.serve(channel).finally(() => { this.serving.delete(serving) })
        this.serving.add(serving)
      },
      connected: (peer) => { this.onConnect(peer) },
    })
    this.syncTimer = this.clock.setInterval(() => { this.syncRandom() }, this.config.syncIntervalMs)
    this.maintainTimer = this.clock.setInterval(() => { this.maintain() }, this.config.maintainIntervalMs)
  }

  /**
   * Runs `fn` as one transaction on the document and resolves once its update is
   * on disk (fsynced): only then may the caller tell anyone it is done.
   */
  async write (fn: (state: ClusterState) => void): Promise<void> {
    if (this.stopped) throw new MurmurError('STOPPING', 'the node is stopping; retry on another node', 1, 503)
    // Inside another transaction (or an observer), Yjs defers our update: we could
    // not wait for it to be stored, and would acknowledge too early.
    const doc = this.records.doc
    if (doc._transaction !== null || doc._transactionCleanups.length > 0) {
      throw new Error('StateService.write() was called inside a document transaction; call it after the transaction')
    }
    // Back-pressure: a node that cannot keep up says so at once instead of answering after many seconds.
    if (this.writesInFlight >= WRITES_IN_FLIGHT_MAX) {
      throw new MurmurError('OVERLOADED', `the node has ${this.writesInFlight} writes waiting to be stored; retry in a moment or on another node`, 1, 503)
    }
    this.lastLocalAppend = null
    this.records.transact(() => { fn(this.records) })
    const appended = this.lastLocalAppend as Promise<void> | null
    this.lastLocalAppend = null
    if (appended === null) return
    this.writesInFlight++
    try {
      await appended
    } finally {
      this.writesInFlight--
    }
  }

  /** Anti-entropy with one peer: state vectors both ways, then each side's missing diff. */
  async syncWith (peer: string, reason: string): Promise<PeerSync> {
    const running = this.running.get(peer)
    if (running !== undefined) return await running
    const promise = this.runSync(peer, reason).finally(() => { this.running.delete(peer) })
    this.running.set(peer, promise)
    return await promise
  }

  /** Whether this node's copy equals a peer's: same state vector and same canonical state. */
  async compare (peer: string): Promise<{ peer: string, equal: boolean, local: { stateVector: StateVectorSummary, digest: string }, remote: { stateVector: StateVectorSummary, digest: string } }> {
    if (this.members.stateOf(peer) === undefined) throw new MurmurError('NOT_A_MEMBER', `no member has the peer id ${peer}; see 'murmur members' for the ids`, 2, 404)
    const reply = await this.request(peer, { type: 'digest-request' })
    if (reply.type !== 'digest') throw new MurmurError('BAD_PEER_REPLY', `peer ${peer} did not answer with a digest`)
    const local = this.digest()
    const remote = { stateVector: summarizeStateVector(Y.decodeStateVector(reply.sv)), digest: Buffer.from(reply.digest).toString('hex') }
    return { peer, equal: local.digest === remote.digest, local: { stateVector: local.stateVector, digest: local.digest }, remote }
  }

  info (): StateInfo {
    const counts = this.records.counts()
    const { stateVector, digest } = this.digest()
    return {
      life: this.records.life,
      clientId: this.records.doc.clientID,
      bytes: this.documentBytes(),
      records: { nodes: counts.nodes, jobs: counts.jobs, tasks: counts.tasks, spaces: counts.spaces },
      stateVector,
      digest,
      store: this.store.stats(),
      stats: this.stats,
      syncs: [...this.syncs.values()].sort((a, b) => a.peer.localeCompare(b.peer)),
    }
  }

  /** Runs retention and compaction now (also on a timer). */
  maintain (): void {
    if (this.stopped) return
    const started = this.clock.monotonic()
    const now = this.clock.now()
    const report = this.records.maintain({
      now,
      taskRetentionMs: this.config.taskRetentionMs,
      jobRetentionMs: this.config.jobRetentionMs,
      isGone: (id) => this.gone.isGone(id, this.isMember(id), now),
    })
    const m = this.stats.maintenance
    m.runs++
    m.removedTasks += report.removedTasks
    m.removedJobs += report.removedJobs
    m.removedNodes += report.removedNodes.length
    m.rotatedSpaces += report.rotatedSpaces
    m.lastMs = Math.round((this.clock.monotonic() - started) * 10) / 10
    for (const id of report.removedNodes) this.gone.forget(id)
    const changed = report.removedTasks + report.removedJobs + report.removedNodes.length + report.rotatedSpaces + report.migratedRecords + report.adoptedJobs + report.removedSpaces
    if (changed > 0) this.log.info({ ...report, ms: m.lastMs }, 'state maintenance')
  }

  /**
   * Stops gossip and anti-entropy (the store is closed by its owner, after). Acknowledged writes still
   * waiting for their gossip batch go out first, rate or not: there is no
   * anti-entropy with a stopped node.
   */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.clock.clearInterval(this.syncTimer)
    this.clock.clearInterval(this.maintainTimer)
    this.clock.clearTimeout(this.flushTimer)
    await Promise.allSettled([...this.storing])
    if (this.started) await this.publish(this.takeOutbox()).catch(() => {})
    this.aborter.abort(new Error('the node is stopping'))
    if (this.started) await this.transport.stop().catch(() => {})
    await Promise.allSettled([...this.running.values(), ...this.serving])
    this.records.doc.off('update', this.onUpdate)
  }

  /**
   * A peer removed records of ours (it took us for gone): write them back at once.
   * Runs inside the peer's transaction cleanup; Yjs runs the write as the next
   * transaction, and its update is stored like any local write.
   */
  private restoreLost (): void {
    const restored = this.records.restoreLost()
    if (restored > 0) this.log.warn({ restored }, 'a peer removed records of this node; wrote them back')
  }

  // ---- persistence and gossip out ----------------------------------------------

  private readonly onUpdate = (update: Uint8Array, origin: unknown): void => {
    this.version++
    const local = origin === ORIGIN.write || origin === ORIGIN.maintain
    // A user's write is fsynced before it is acknowledged; what came from peers
    // (or maintenance, which reruns) is written without waiting for the disk.
    const appended = this.store.append(update, { durable: origin === ORIGIN.write })
    if (!local) {
      appended.catch((err: Error) => { this.storeFailed(err, 'an update from a peer') })
      return
    }
    // Gossiped at once, in parallel with the disk: the acknowledgement waits for the
    // disk, the peers need not (a change they got that this node then lost on a crash
    // comes back to it by anti-entropy, like any other record of its earlier life).
    this.queueGossip(update)
    const stored = appended.then(() => {}, (err: Error) => {
      this.storeFailed(err, 'a local change')
      throw new MurmurError('STATE_WRITE_FAILED', `the change could not be stored on disk (${err.message}); it is not acknowledged, though it may still take effect: check before retrying`, 1, 503)
    })
    this.lastLocalAppend = stored
    this.storing.add(stored)
    stored.then(() => { this.storing.delete(stored) }, () => { this.storing.delete(stored) })
  }

  /**
   * An update that is in the document but not in the log leaves a hole that later
   * updates cannot be loaded across: a snapshot of the document closes it.
   */
  private storeFailed (err: Error, what: string): void {
    this.log.error({ err: err.message }, `could not store ${what}; writing a snapshot of the whole state instead`)
    this.store.compact().catch((again: Error) => {
      this.log.fatal({ err: again.message }, 'the state database cannot be written: this node\'s state is in memory only until it restarts')
    })
  }

  private queueGossip (update: Uint8Array): void {
    this.outbox.push(update)
    if (!this.stopped) this.flushTimer ??= this.clock.setTimeout(() => { this.flush() }, this.config.gossipBatchMs, true)
  }

  /** The batch to publish, as one update; null when there is none. */
  private takeOutbox (): Uint8Array | null {
    const batch = this.outbox
    this.outbox = []
    if (batch.length === 0) return null
    return batch.length === 1 ? batch[0]! : Y.mergeUpdates(batch)
  }

  private async publish (update: Uint8Array | null): Promise<void> {
    if (update === null) return
    if (update.byteLength > SYNC_LIMITS.gossipBytesMax) {
      // Too big for one message: the peers fetch it by anti-entropy, with us.
      this.stats.gossip.skippedLarge++
      this.log.debug({ bytes: update.byteLength }, 'change too large to gossip; syncing with peers instead')
      if (!this.stopped) for (const peer of this.members.peers()) void this.syncWith(peer, 'large change').catch(() => {})
      return
    }
    const data = gossipMessage(update)
    try {
      await this.transport.publish(data)
      this.stats.gossip.published++
      this.stats.gossip.publishedBytes += data.byteLength
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'gossip publish failed; anti-entropy will carry the change')
    }
  }

  private flush (): void {
    this.flushTimer = null
    if (this.stopped || this.outbox.length === 0) return
    const now = this.clock.monotonic()
    const rate = this.config.publishPerSecondMax
    this.tokens = Math.min(rate, this.tokens + (now - this.tokensAt) * rate / 1000)
    this.tokensAt = now
    if (this.tokens < 1) {
      // Over the rate: wait for the next token; changes meanwhile join this batch.
      this.flushTimer = this.clock.setTimeout(() => { this.flush() }, Math.ceil((1 - this.tokens) * 1000 / rate), true)
      return
    }
    this.tokens--
    void this.publish(this.takeOutbox())
  }

  // ---- gossip in -----------------------------------------------------------------

  /** Runs before the transport relays a message: garbage, and anything a non-member wrote, is refused (and not spread). */
  private validate (from: string | undefined, data: Uint8Array): string | null {
    // Only members write: an update whose (signed) author is not one is not read at all. A node
    // that joined a moment ago and is not known here yet is synced with once it is (onConnect).
    if (from === undefined || !this.isMember(from)) {
      this.stats.gossip.dropped['not-a-member'] = (this.stats.gossip.dropped['not-a-member'] ?? 0) + 1
      this.log.debug({ from }, 'dropped a state update from a peer that is not a member')
      return 'not-a-member'
    }
    let reason: string | null = null
    if (data.byteLength < 2 || data[0] !== GOSSIP_FORMAT || data.byteLength > SYNC_LIMITS.gossipBytesMax + 1) reason = 'malformed'
    else {
      try {
        Y.decodeUpdate(data.subarray(1))
      } catch {
        reason = 'malformed'
      }
    }
    if (reason !== null) {
      this.stats.gossip.dropped[reason] = (this.stats.gossip.dropped[reason] ?? 0) + 1
      this.log.warn({ reason, from, bytes: data.byteLength }, 'dropped a bad state update from gossip')
    }
    return reason
  }

  private onGossip (from: string | undefined, data: Uint8Array): void {
    if (this.stopped) return
    this.stats.gossip.received++
    const verdict = this.records.applyRemote(data.subarray(1))
    if (verdict.ok) {
      this.stats.gossip.applied++
      return
    }
    this.stats.gossip.dropped[verdict.reason] = (this.stats.gossip.dropped[verdict.reason] ?? 0) + 1
    if (verdict.reason === 'gap' && from !== undefined && this.isMember(from)) {
      // We missed something the sender has: fetch it all by state vectors.
      void this.syncWith(from, 'gap in gossip').catch(() => {})
    } else if (verdict.reason !== 'gap') {
      this.log.warn({ reason: verdict.reason }, 'dropped a state update from gossip')
    }
  }

  // ---- anti-entropy --------------------------------------------------------------

  private isMember (id: string): boolean {
    return isLive(this.members.stateOf(id))
  }

  private onConnect (peer: string): void {
    if (this.stopped) return
    // Only members: a connection from anything else is not a cluster node.
    if (!this.isMember(peer)) {
      // Membership may learn of it a moment later (the connection comes first).
      this.clock.setTimeout(() => {
        if (!this.stopped && this.isMember(peer)) void this.syncWith(peer, 'new connection').catch(() => {})
      }, NEW_PEER_SYNC_DELAY_MS, true)
      return
    }
    void this.syncWith(peer, 'new connection').catch(() => {})
  }

  private syncRandom (): void {
    const peers = this.members.peers()
    if (peers.length === 0 || this.stopped) return
    const peer = peers[Math.floor(this.random() * peers.length)]!
    void this.syncWith(peer, 'periodic').catch(() => {})
  }

  private newRecord (peer: string, direction: PeerSync['direction'], reason: string): PeerSync {
    return { peer, at: new Date(this.clock.now()).toISOString(), direction, reason, ok: false, ms: 0, sentBytes: 0, receivedBytes: 0 }
  }

  private async runSync (peer: string, reason: string): Promise<PeerSync> {
    const started = this.clock.monotonic()
    this.stats.sync.started++
    const record = this.newRecord(peer, 'out', reason)
    const deadline = this.deadline()
    let channel: SyncChannel | undefined
    try {
      if (this.stopped) throw new Error('the node is stopping')
      channel = await this.transport.open(peer, deadline.signal)
      const { session, send } = SyncSession.ask(this.records.doc)
      await this.drive(channel, session, send, record, deadline.signal)
      await channel.close(deadline.signal)
      record.ok = true
    } catch (err) {
      channel?.abort(err as Error)
      this.stats.sync.failed++
      record.error = (err as Error).message
      this.log.debug({ peer, reason, err: record.error }, 'anti-entropy failed')
    } finally {
      deadline.clear()
    }
    record.ms = Math.round(this.clock.monotonic() - started)
    this.remember(record)
    return record
  }

  /** The answering side of anti-entropy and of digest requests. */
  private async serve (channel: SyncChannel): Promise<void> {
    if (!this.isMember(channel.peer)) await this.memberWithin(channel.peer, NON_MEMBER_WAIT_MS)
    if (!this.isMember(channel.peer)) {
      // Neither the document nor a digest of it goes to a peer that is not a member, and nothing it sends is read.
      this.stats.sync.rejected['not-a-member'] = (this.stats.sync.rejected['not-a-member'] ?? 0) + 1
      this.log.debug({ peer: channel.peer }, 'refused a sync request from a peer that is not a member')
      channel.abort(new PeerError('not-a-member', `${channel.peer} is not a member`))
      return
    }
    const started = this.clock.monotonic()
    const deadline = this.deadline()
    const record = this.newRecord(channel.peer, 'in', 'asked')
    const session = SyncSession.answer(this.records.doc, () => {
      const { sv, digestBytes } = this.digestBytes()
      return { sv, digest: digestBytes }
    })
    try {
      await this.drive(channel, session, [], record, deadline.signal)
      await channel.close(deadline.signal)
      record.ok = true
    } catch (err) {
      record.error = (err as Error).message
      if (err instanceof PeerError) {
        this.stats.sync.rejected[err.reason] = (this.stats.sync.rejected[err.reason] ?? 0) + 1
        this.log.warn({ peer: channel.peer, reason: err.reason, err: err.message }, 'dropped a bad sync request')
      } else if (!(err instanceof FaultDropped) && !this.stopped) {
        this.log.warn({ peer: channel.peer, err: record.error }, 'could not answer a sync request')
      }
      channel.abort(err as Error)
    } finally {
      deadline.clear()
      record.ms = Math.round(this.clock.monotonic() - started)
      // A digest request is not an exchange of state: it is not remembered as a sync.
      if (!session.digestOnly) this.remember(record)
    }
  }

  /** Runs a sync session over a channel: `first` out, then the peer's frames in until the session is done. */
  private async drive (channel: SyncChannel, session: SyncSession, first: Frame[], record: PeerSync, signal: AbortSignal): Promise<void> {
    for (const frame of first) await this.send(channel, frame, record, signal)
    while (!session.done) {
      const frame = await this.receive(channel, record, signal)
      const step = session.receive(frame)
      if ('error' in step) throw new PeerError('unexpected', step.error)
      if (session.role === 'answer' && frame.type === 'hello') this.stats.sync.served++
      for (const out of step.send) await this.send(channel, out, record, signal)
      if (step.apply !== null) await this.applyDiff(channel.peer, step.apply)
    }
  }

  /** Sends one request frame on a fresh channel and reads one frame back. */
  private async request (peer: string, frame: Frame): Promise<Frame> {
    const deadline = this.deadline()
    let channel: SyncChannel
    try {
      channel = await this.transport.open(peer, deadline.signal)
    } catch (err) {
      deadline.clear()
      throw new MurmurError('PEER_UNREACHABLE', `cannot reach peer ${peer}: ${(err as Error).message}`)
    }
    const record = this.newRecord(peer, 'out', 'request')
    try {
      await this.send(channel, frame, record, deadline.signal)
      const reply = await this.receive(channel, record, deadline.signal)
      await channel.close(deadline.signal)
      return reply
    } catch (err) {
      channel.abort(err as Error)
      throw new MurmurError('PEER_FAILED', `peer ${peer} did not answer: ${(err as Error).message}`)
    } finally {
      deadline.clear()
    }
  }

  private async send (channel: SyncChannel, frame: Frame, record: PeerSync, signal: AbortSignal): Promise<void> {
    const bytes = encodeFrame(frame)
    if (bytes.byteLength > SYNC_LIMITS.frameBytesMax) throw new Error(`the ${frame.type} frame of ${bytes.byteLength} bytes is over the sync limit of ${SYNC_LIMITS.frameBytesMax}`)
    await channel.write(bytes, signal)
    record.sentBytes += bytes.byteLength
  }

  /** Resolves once `peer` is a member, or after `ms` (on this service's clock), or when the node stops. */
  private async memberWithin (peer: string, ms: number): Promise<void> {
    const until = this.clock.monotonic() + ms
    while (!this.stopped && !this.isMember(peer) && this.clock.monotonic() < until) {
      await new Promise<void>((resolve) => { this.clock.setTimeout(resolve, NON_MEMBER_POLL_MS, true) })
    }
  }

  private async receive (channel: SyncChannel, record: PeerSync, signal: AbortSignal): Promise<Frame> {
    const bytes = await channel.read(signal)
    record.receivedBytes += bytes.byteLength
    const frame = decodeFrame(bytes)
    if ('error' in frame) throw new PeerError('malformed', frame.error)
    return frame
  }

  private async applyDiff (peer: string, update: Uint8Array): Promise<void> {
    // A large diff's signatures are checked in slices first, between which the node goes on with its work.
    const prechecked = update.byteLength > PRECHECK_BYTES_MIN
      ? await this.records.precheck(update, async () => { await new Promise<void>((resolve) => { this.clock.setTimeout(resolve, 0, true) }) })
      : undefined
    if (this.stopped) throw new Error('the node is stopping')
    const verdict = this.records.applyRemote(update, prechecked)
    if (!verdict.ok) throw new PeerError(verdict.reason, `the diff from ${peer} was refused (${verdict.reason})`)
    this.stats.sync.appliedBytes += update.byteLength
  }

  /** A signal that aborts after SYNC_TIMEOUT_MS on this service's clock, or when the node stops. */
  private deadline (): { signal: AbortSignal, clear: () => void } {
    const timeout = new AbortController()
    const timer = this.clock.setTimeout(() => { timeout.abort(new MurmurError('SYNC_TIMEOUT', `no answer within ${SYNC_TIMEOUT_MS} ms`)) }, SYNC_TIMEOUT_MS, true)
    return { signal: AbortSignal.any([timeout.signal, this.aborter.signal]), clear: () => { this.clock.clearTimeout(timer) } }
  }

  private remember (record: PeerSync): void {
    this.syncs.delete(record.peer)
    this.syncs.set(record.peer, record)
    if (this.syncs.size > SYNC_LOG_MAX) this.syncs.delete(this.syncs.keys().next().value!)
  }

  /** The digest walks the document's structs: computed once per change, not per request. */
  private digestBytes (): { sv: Uint8Array, digestBytes: Uint8Array } {
    if (this.digestCache?.version !== this.version) {
      this.digestCache = {
        version: this.version,
        sv: Y.encodeStateVector(this.records.doc),
        digestBytes: createHash('sha256').update(stateFingerprint(this.records.doc)).digest(),
      }
    }
    return this.digestCache
  }

  /**
   * The encoded document's size: encoding it all costs about 5 ms per 1,000
   * records, so a busy node recomputes it at most once a second.
   */
  private documentBytes (): number {
    const now = this.clock.monotonic()
    if (this.sizeCache === null || (this.sizeCache.version !== this.version && now - this.sizeCache.at >= 1_000)) {
      this.sizeCache = { version: this.version, at: now, bytes: Y.encodeStateAsUpdate(this.records.doc).byteLength }
    }
    return this.sizeCache.bytes
  }

  private digest (): { stateVector: StateVectorSummary, digest: string } {
    const { digestBytes } = this.digestBytes()
    return { stateVector: summarizeStateVector(stateVectorOf(this.records.doc)), digest: Buffer.from(digestBytes).toString('hex') }
  }

  private readonly onInvalid = (invalid: InvalidRecord): void => {
    this.stats.invalidRecords++
    this.log.warn(invalid, 'skipped an invalid record in the cluster state')
  }
}
