// The cluster state on a node: the document of crdt/, kept in level, spread by
// gossipsub and repaired by anti-entropy over a protocol of ours.
//
//   write ─▶ doc ─update─▶ level (fsync) ─▶ ack ─▶ gossip batch ─▶ topic
//   topic ─▶ check ─▶ doc ─▶ level            (a gap: anti-entropy with the sender)
//   new connection / every syncInterval ─▶ hello ⇄ hello, diff ⇄ diff

import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { type Message, TopicValidatorResult } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import * as Y from 'yjs'
import { type InvalidRecord, ClusterState, GoneTracker, ORIGIN, type StateChange } from '../crdt/state.ts'
import {
  type Frame, SYNC_LIMITS, applyRemote, decodeFrame, diffFor, encodeFrame, stateFingerprint,
  stateVectorOf, summarizeStateVector, type StateVectorSummary,
} from '../crdt/sync.ts'
import type { StateConfig } from './config.ts'
import { MurmurError } from './errors.ts'
import { type FaultInjector, FaultDropped, admitFrame } from './faults.ts'
import { type Host, STATE_TOPIC } from './host.ts'
import { StateStore, resetState } from './state-store.ts'
import { isOversized } from './streams.ts'

export const SYNC_PROTOCOL = '/murmur/sync/1.0.0'
/** The first byte of a gossip message: the format of what follows (a Yjs v1 update). */
const GOSSIP_FORMAT = 1
const SYNC_TIMEOUT_MS = 15_000
/** Writes acknowledged to nobody yet; past this the node answers 503 at once. */
const WRITES_IN_FLIGHT_MAX = 1_024
/** Peers remembered for `murmur state`; the oldest entry goes first. */
const SYNC_LOG_MAX = 1_000

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
  store: ReturnType<StateStore['stats']>
  stats: StateStats
  syncs: PeerSync[]
}

export interface StateServiceInit {
  host: Host
  self: string
  /** The LevelDB directory (<data-dir>/state). */
  dir: string
  config: StateConfig
  log: Logger
  /** Alive members other than this node: who anti-entropy may pick. */
  peers: () => string[]
  /** 'alive', 'suspect', 'dead', 'left', or undefined for a node membership does not know. */
  memberState: (id: string) => string | undefined
  /** Testnet fault rules: every sync frame received passes them (gossip passes them in host.ts). */
  faults?: FaultInjector
}

export class StateService extends EventEmitter<{ change: [StateChange] }> {
  readonly state: ClusterState
  private readonly host: Host
  private readonly store: StateStore
  private readonly config: StateConfig
  private readonly log: Logger
  private readonly peers: () => string[]
  private readonly memberState: (id: string) => string | undefined
  private readonly faults: FaultInjector | undefined
  private readonly syncs = new Map<string, PeerSync>()
  /** Which nodes are gone for good, for maintenance. */
  private readonly gone: GoneTracker
  private readonly running = new Map<string, Promise<PeerSync>>()
  private readonly timers: NodeJS.Timeout[] = []
  private outbox: Uint8Array[] = []
  private flushTimer: NodeJS.Timeout | null = null
  private tokens: number
  private tokensAt = Date.now()
  /** The append of the last local update, for write() to await. */
  private lastLocalAppend: Promise<void> | null = null
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

  private constructor (init: StateServiceInit, store: StateStore, state: ClusterState) {
    super()
    this.host = init.host
    this.store = store
    this.state = state
    this.config = init.config
    this.log = init.log
    this.peers = init.peers
    this.memberState = init.memberState
    this.faults = init.faults
    this.gone = new GoneTracker(init.config.nodeRetentionMs)
    this.tokens = init.config.publishPerSecondMax
  }

  /** Opens (or, with resetState, moves aside and recreates) the database and loads the document. */
  static async open (init: StateServiceInit): Promise<StateService> {
    const { dir, log, config } = init
    if (config.resetState) {
      const aside = await resetState(dir)
      if (aside !== null) log.warn({ dir, movedTo: aside }, 'state database moved aside (--reset-state); starting empty, peers will fill it')
    }
    const started = performance.now()
    const store = await StateStore.open(dir, { log: log.child({ component: 'state-store' }) })
    let state: ClusterState
    try {
      const loaded = await store.load()
      const doc = new Y.Doc()
      try {
        doc.transact(() => {
          if (loaded.snapshot !== null) Y.applyUpdate(doc, loaded.snapshot)
          for (const update of loaded.updates) Y.applyUpdate(doc, update)
        }, ORIGIN.load)
      } catch (err) {
        throw new MurmurError('STATE_CORRUPT', `the state database in ${dir} holds an update that cannot be read (${(err as Error).message}); start the node with --reset-state to move it aside and refill it from the other nodes`, 2)
      }
      if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
        log.warn({ dir }, 'the stored state has a gap; peers will fill it')
        doc.store.pendingStructs = null
        doc.store.pendingDs = null
      }
      state = new ClusterState({ self: init.self, life: loaded.lifeId, doc })
      log.info({ life: loaded.lifeId, updates: loaded.updates.length, snapshotBytes: loaded.snapshot?.length ?? 0, ...state.counts(), ms: Math.round(performance.now() - started) }, 'state loaded')
    } catch (err) {
      await store.close().catch(() => {})
      throw err
    }
    const service = new StateService(init, store, state)
    store.setSnapshotSource(() => Y.encodeStateAsUpdate(state.doc))
    state.doc.on('update', service.onUpdate)
    state.onChange((change) => {
      // Written back in the same turn as the removal: no stop or crash falls in between.
      if (!change.local && state.lostRecords() > 0) service.restoreLost()
      try {
        service.emit('change', change)
      } catch (err) {
        log.error({ err: (err as Error).message }, 'a state change listener failed')
      }
    })
    state.onInvalid(service.onInvalid)
    return service
  }

  async start (): Promise<void> {
    await this.host.handle(SYNC_PROTOCOL, (stream, connection) => {
      const serving = this.serve(stream, connection).finally(() => { this.serving.delete(serving) })
      this.serving.add(serving)
    }, {
      // Frames are large (up to 32 MiB): a few syncs per peer at once, not dozens.
      maxInboundStreams: 4,
    })
    const pubsub = this.host.services.pubsub
    pubsub.topicValidators.set(STATE_TOPIC, (_peer, msg) => this.validate(msg))
    pubsub.addEventListener('message', this.onGossip)
    pubsub.subscribe(STATE_TOPIC)
    this.host.addEventListener('peer:connect', this.onConnect)
    this.timers.push(setInterval(() => { this.syncRandom() }, this.config.syncIntervalMs))
    this.timers.push(setInterval(() => { this.maintain() }, this.config.maintainIntervalMs))
    for (const timer of this.timers) timer.unref()
  }

  /**
   * Runs `fn` as one transaction on the document and resolves once its update is
   * on disk (fsynced): only then may the caller tell anyone it is done.
   */
  async write (fn: (state: ClusterState) => void): Promise<void> {
    if (this.stopped) throw new MurmurError('STOPPING', 'the node is stopping; retry on another node', 1, 503)
    // Inside another transaction (or an observer), Yjs defers our update: we could
    // not wait for it to be stored, and would acknowledge too early.
    const doc = this.state.doc
    if (doc._transaction !== null || doc._transactionCleanups.length > 0) {
      throw new Error('StateService.write() was called inside a document transaction; call it after the transaction')
    }
    // Back-pressure: a node that cannot keep up says so at once instead of answering after many seconds.
    if (this.writesInFlight >= WRITES_IN_FLIGHT_MAX) {
      throw new MurmurError('OVERLOADED', `the node has ${this.writesInFlight} writes waiting to be stored; retry in a moment or on another node`, 1, 503)
    }
    this.lastLocalAppend = null
    this.state.transact(() => { fn(this.state) })
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
    if (this.memberState(peer) === undefined) throw new MurmurError('NOT_A_MEMBER', `no member has the peer id ${peer}; see 'murmur members' for the ids`, 2, 404)
    const frames = await this.request(peer, { type: 'digest-request' }, 1)
    const reply = frames[0]
    if (reply?.type !== 'digest') throw new MurmurError('BAD_PEER_REPLY', `peer ${peer} did not answer with a digest`)
    const local = this.digest()
    const remote = { stateVector: summarizeStateVector(Y.decodeStateVector(reply.sv)), digest: Buffer.from(reply.digest).toString('hex') }
    return { peer, equal: local.digest === remote.digest, local: { stateVector: local.stateVector, digest: local.digest }, remote }
  }

  info (): StateInfo {
    const counts = this.state.counts()
    const { stateVector, digest } = this.digest()
    return {
      life: this.state.life,
      clientId: this.state.doc.clientID,
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
    const started = performance.now()
    const now = Date.now()
    const report = this.state.maintain({
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
    m.lastMs = Math.round((performance.now() - started) * 10) / 10
    for (const id of report.removedNodes) this.gone.forget(id)
    const changed = report.removedTasks + report.removedJobs + report.removedNodes.length + report.rotatedSpaces + report.migratedRecords + report.adoptedJobs + report.removedSpaces
    if (changed > 0) this.log.info({ ...report, ms: m.lastMs }, 'state maintenance')
  }

  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    for (const timer of this.timers) clearInterval(timer)
    if (this.flushTimer !== null) clearTimeout(this.flushTimer)
    this.host.removeEventListener('peer:connect', this.onConnect)
    const pubsub = this.host.services.pubsub
    pubsub.removeEventListener('message', this.onGossip)
    // Acknowledged writes still waiting for their gossip batch go out now, rate or not.
    await Promise.allSettled([...this.storing])
    await this.publish(this.takeOutbox()).catch(() => {})
    try { pubsub.unsubscribe(STATE_TOPIC) } catch {}
    this.aborter.abort(new Error('the node is stopping'))
    await this.host.unhandle(SYNC_PROTOCOL).catch(() => {})
    await Promise.allSettled([...this.running.values(), ...this.serving])
    this.state.doc.off('update', this.onUpdate)
    await this.store.close()
  }

  /**
   * A peer removed records of ours (it took us for gone): write them back at once.
   * Runs inside the peer's transaction cleanup; Yjs runs the write as the next
   * transaction, and its update is stored like any local write.
   */
  private restoreLost (): void {
    const restored = this.state.restoreLost()
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
    if (!this.stopped) this.flushTimer ??= setTimeout(() => { this.flush() }, this.config.gossipBatchMs)
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
      if (!this.stopped) for (const peer of this.peers()) void this.syncWith(peer, 'large change').catch(() => {})
      return
    }
    const data = new Uint8Array(1 + update.byteLength)
    data[0] = GOSSIP_FORMAT
    data.set(update, 1)
    try {
      await this.host.services.pubsub.publish(STATE_TOPIC, data)
      this.stats.gossip.published++
      this.stats.gossip.publishedBytes += data.byteLength
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'gossip publish failed; anti-entropy will carry the change')
    }
  }

  private flush (): void {
    this.flushTimer = null
    if (this.stopped || this.outbox.length === 0) return
    const now = Date.now()
    const rate = this.config.publishPerSecondMax
    this.tokens = Math.min(rate, this.tokens + (now - this.tokensAt) * rate / 1000)
    this.tokensAt = now
    if (this.tokens < 1) {
      // Over the rate: wait for the next token; changes meanwhile join this batch.
      this.flushTimer = setTimeout(() => { this.flush() }, Math.ceil((1 - this.tokens) * 1000 / rate))
      return
    }
    this.tokens--
    void this.publish(this.takeOutbox())
  }

  // ---- gossip in -----------------------------------------------------------------

  /** Runs before gossipsub forwards a message: garbage is rejected (and its sender penalised), not spread. */
  private validate (msg: Message): TopicValidatorResult {
    const data = msg.data
    if (data.byteLength < 2 || data[0] !== GOSSIP_FORMAT || data.byteLength > SYNC_LIMITS.gossipBytesMax + 1) return this.dropGossip('malformed', msg)
    try {
      Y.decodeUpdate(data.subarray(1))
    } catch {
      return this.dropGossip('malformed', msg)
    }
    return TopicValidatorResult.Accept
  }

  private dropGossip (reason: string, msg: Message): TopicValidatorResult {
    this.stats.gossip.dropped[reason] = (this.stats.gossip.dropped[reason] ?? 0) + 1
    this.log.warn({ reason, from: msg.type === 'signed' ? msg.from.toString() : undefined, bytes: msg.data.byteLength }, 'dropped a bad state update from gossip')
    return TopicValidatorResult.Reject
  }

  private readonly onGossip = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== STATE_TOPIC || this.stopped) return
    this.stats.gossip.received++
    const verdict = applyRemote(this.state.doc, msg.data.subarray(1), ORIGIN.remote)
    if (verdict.ok) {
      this.stats.gossip.applied++
      return
    }
    this.stats.gossip.dropped[verdict.reason] = (this.stats.gossip.dropped[verdict.reason] ?? 0) + 1
    if (verdict.reason === 'gap' && msg.type === 'signed' && this.isMember(msg.from.toString())) {
      // We missed something the sender has: fetch it all by state vectors.
      void this.syncWith(msg.from.toString(), 'gap in gossip').catch(() => {})
    } else if (verdict.reason !== 'gap') {
      this.log.warn({ reason: verdict.reason }, 'dropped a state update from gossip')
    }
  }

  // ---- anti-entropy --------------------------------------------------------------

  private isMember (id: string): boolean {
    const state = this.memberState(id)
    return state === 'alive' || state === 'suspect'
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    // Only members: a connection from anything else is not a cluster node.
    if (!this.isMember(peer)) {
      // Membership may learn of it a moment later (the connection comes first).
      setTimeout(() => {
        if (!this.stopped && this.isMember(peer)) void this.syncWith(peer, 'new connection').catch(() => {})
      }, 500).unref()
      return
    }
    void this.syncWith(peer, 'new connection').catch(() => {})
  }

  private syncRandom (): void {
    const peers = this.peers()
    if (peers.length === 0 || this.stopped) return
    const peer = peers[Math.floor(Math.random() * peers.length)]!
    void this.syncWith(peer, 'periodic').catch(() => {})
  }

  private async runSync (peer: string, reason: string): Promise<PeerSync> {
    const started = performance.now()
    this.stats.sync.started++
    const record: PeerSync = { peer, at: new Date().toISOString(), direction: 'out', reason, ok: false, ms: 0, sentBytes: 0, receivedBytes: 0 }
    try {
      await this.exchange(peer, record)
      record.ok = true
    } catch (err) {
      this.stats.sync.failed++
      record.error = (err as Error).message
      this.log.debug({ peer, reason, err: record.error }, 'anti-entropy failed')
    }
    record.ms = Math.round(performance.now() - started)
    this.remember(record)
    return record
  }

  private async exchange (peer: string, record: PeerSync): Promise<void> {
    const signal = this.syncSignal()
    const raw = await this.host.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal })
    const lp = lpStream(raw, { maxDataLength: SYNC_LIMITS.frameBytesMax })
    try {
      await this.send(lp, { type: 'hello', sv: Y.encodeStateVector(this.state.doc) }, record, signal)
      const hello = await this.receive(lp, 'hello', record, signal)
      const diff = await this.receive(lp, 'diff', record, signal)
      await this.send(lp, { type: 'diff', update: diffFor(this.state.doc, hello.sv) }, record, signal)
      this.applyDiff(peer, diff.update)
      await raw.close({ signal }).catch(() => {})
    } catch (err) {
      raw.abort(err as Error)
      throw err
    }
  }

  /** The answering side of anti-entropy and of digest requests. */
  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const started = performance.now()
    const signal = this.syncSignal()
    const lp = lpStream(stream, { maxDataLength: SYNC_LIMITS.frameBytesMax })
    const record: PeerSync = { peer, at: new Date().toISOString(), direction: 'in', reason: 'asked', ok: false, ms: 0, sentBytes: 0, receivedBytes: 0 }
    try {
      const first = await this.receive(lp, null, record, signal)
      if (first.type === 'digest-request') {
        const { sv, digestBytes } = this.digestBytes()
        await this.send(lp, { type: 'digest', sv, digest: digestBytes }, record, signal)
        await stream.close({ signal }).catch(() => {})
        return
      }
      if (first.type !== 'hello') throw new PeerError('unexpected', `expected hello or digest-request, got ${first.type}`)
      this.stats.sync.served++
      await this.send(lp, { type: 'hello', sv: Y.encodeStateVector(this.state.doc) }, record, signal)
      await this.send(lp, { type: 'diff', update: diffFor(this.state.doc, first.sv) }, record, signal)
      const diff = await this.receive(lp, 'diff', record, signal)
      this.applyDiff(peer, diff.update)
      record.ok = true
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      record.error = (err as Error).message
      if (!(err instanceof PeerError) && !(err instanceof FaultDropped) && !this.stopped) this.log.warn({ peer, err: record.error }, 'could not answer a sync request')
      if (err instanceof PeerError) {
        this.stats.sync.rejected[err.reason] = (this.stats.sync.rejected[err.reason] ?? 0) + 1
        this.log.warn({ peer, reason: err.reason, err: err.message }, 'dropped a bad sync request')
      }
      stream.abort(err as Error)
    } finally {
      record.ms = Math.round(performance.now() - started)
      if (record.reason === 'asked' && (record.ok || record.error !== undefined)) this.remember(record)
    }
  }

  /** Sends one request frame on a fresh stream and reads `replies` frames back. */
  private async request (peer: string, frame: Frame, replies: number): Promise<Frame[]> {
    const signal = this.syncSignal()
    let raw: Stream
    try {
      raw = await this.host.dialProtocol(peerIdFromString(peer), SYNC_PROTOCOL, { signal })
    } catch (err) {
      throw new MurmurError('PEER_UNREACHABLE', `cannot reach peer ${peer}: ${(err as Error).message}`)
    }
    const lp = lpStream(raw, { maxDataLength: SYNC_LIMITS.frameBytesMax })
    const record: PeerSync = { peer, at: '', direction: 'out', reason: 'request', ok: false, ms: 0, sentBytes: 0, receivedBytes: 0 }
    try {
      await this.send(lp, frame, record, signal)
      const out: Frame[] = []
      for (let i = 0; i < replies; i++) out.push(await this.receive(lp, null, record, signal))
      await raw.close({ signal }).catch(() => {})
      return out
    } catch (err) {
      raw.abort(err as Error)
      throw new MurmurError('PEER_FAILED', `peer ${peer} did not answer: ${(err as Error).message}`)
    }
  }

  private async send (lp: LengthPrefixedStream<Stream>, frame: Frame, record: PeerSync, signal: AbortSignal): Promise<void> {
    const bytes = encodeFrame(frame)
    if (bytes.byteLength > SYNC_LIMITS.frameBytesMax) throw new Error(`the ${frame.type} frame of ${bytes.byteLength} bytes is over the sync limit of ${SYNC_LIMITS.frameBytesMax}`)
    await lp.write(bytes, { signal })
    record.sentBytes += bytes.byteLength
  }

  private async receive<T extends Frame['type']> (lp: LengthPrefixedStream<Stream>, expected: T | null, record: PeerSync, signal: AbortSignal): Promise<Extract<Frame, { type: T }>> {
    let bytes: Uint8Array
    try {
      bytes = (await lp.read({ signal })).subarray()
    } catch (err) {
      if (isOversized(err)) throw new PeerError('oversized', `a sync frame over ${SYNC_LIMITS.frameBytesMax} bytes`)
      throw err
    }
    await admitFrame(this.faults, record.peer, 'sync', signal)
    record.receivedBytes += bytes.byteLength
    const frame = decodeFrame(bytes)
    if ('error' in frame) throw new PeerError('malformed', frame.error)
    if (expected !== null && frame.type !== expected) throw new PeerError('unexpected', `expected ${expected}, got ${frame.type}`)
    return frame as Extract<Frame, { type: T }>
  }

  private applyDiff (peer: string, update: Uint8Array): void {
    const verdict = applyRemote(this.state.doc, update, ORIGIN.remote)
    if (!verdict.ok) throw new PeerError(verdict.reason, `the diff from ${peer} was refused (${verdict.reason})`)
    this.stats.sync.appliedBytes += update.byteLength
  }

  private syncSignal (): AbortSignal {
    return AbortSignal.any([AbortSignal.timeout(SYNC_TIMEOUT_MS), this.aborter.signal])
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
        sv: Y.encodeStateVector(this.state.doc),
        digestBytes: createHash('sha256').update(stateFingerprint(this.state.doc)).digest(),
      }
    }
    return this.digestCache
  }

  /**
   * The encoded document's size: encoding it all costs about 5 ms per 1,000
   * records, so a busy node recomputes it at most once a second.
   */
  private documentBytes (): number {
    const now = Date.now()
    if (this.sizeCache === null || (this.sizeCache.version !== this.version && now - this.sizeCache.at >= 1_000)) {
      this.sizeCache = { version: this.version, at: now, bytes: Y.encodeStateAsUpdate(this.state.doc).byteLength }
    }
    return this.sizeCache.bytes
  }

  private digest (): { stateVector: StateVectorSummary, digest: string } {
    const { digestBytes } = this.digestBytes()
    return { stateVector: summarizeStateVector(stateVectorOf(this.state.doc)), digest: Buffer.from(digestBytes).toString('hex') }
  }


  private readonly onInvalid = (invalid: InvalidRecord): void => {
    this.stats.invalidRecords++
    this.log.warn(invalid, 'skipped an invalid record in the cluster state')
  }
}

/** A peer broke the sync protocol; `reason` is the counter it goes to. */
class PeerError extends Error {
  override name = 'PeerError'
  readonly reason: string
  constructor (reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}
