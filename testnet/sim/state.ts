// The shared state of a simulated node: the real ClusterState and the real sync
// steps of crdt/sync.ts, carried over the simulated network instead of
// gossipsub and libp2p streams, and a simulated disk that keeps what was stored
// across crashes. It does what node/state.ts does, in the same order:
//
//   write ──▶ transaction ──▶ update ──▶ gossip to every reachable member (at once)
//                                    └─▶ disk (after the fsync) ──▶ the write resolves
//   gossip in ──▶ applyRemote (a gap: anti-entropy with the sender)
//   every syncIntervalMs, and when a member comes (back) alive: anti-entropy
//   hello(sv) ─▶  ◀─ diff, hello(sv)  diff ─▶
//
// A crash loses what was not on the disk yet: an acknowledged write never is.

import * as Y from 'yjs'
import { ClusterState, GoneTracker, ORIGIN, type StateChange } from '../../crdt/state.ts'
import { applyRemote, decodeFrame, diffFor, encodeFrame } from '../../crdt/sync.ts'
import type { MemberEvent } from '../../membership/types.ts'
import type { Clock } from '../../node/clock.ts'
import { MurmurError } from '../../node/errors.ts'
import type { Rng } from './rng.ts'

/** What a node's disk holds of its state database; it outlives the node's lives. */
export interface SimDisk {
  updates: Uint8Array[]
}

export interface SimStateConfig {
  syncIntervalMs: number
  maintainIntervalMs: number
  taskRetentionMs: number
  jobRetentionMs: number
  nodeRetentionMs: number
  /** How long an append takes to be on the disk (an fsync), drawn in [min, max]. */
  fsyncMs: readonly [number, number]
}

/** node/config.ts's values for the local profile. */
export const SIM_STATE_CONFIG: Readonly<SimStateConfig> = Object.freeze({
  syncIntervalMs: 2_000,
  maintainIntervalMs: 10_000,
  taskRetentionMs: 60 * 60_000,
  jobRetentionMs: 24 * 60 * 60_000,
  nodeRetentionMs: 24 * 60 * 60_000,
  fsyncMs: [1, 8] as const,
})

const KIND = { gossip: 1, hello: 2, helloBack: 3, diff: 4 } as const

export interface SimStateInit {
  self: string
  /** The life of the state database (one per data dir; the sim never resets one). */
  life: string
  disk: SimDisk
  clock: Clock
  rng: Rng
  send: (to: string, bytes: Uint8Array) => void
  /** Members to gossip to and sync with: alive or suspect. */
  peers: () => string[]
  memberState: (id: string) => string | undefined
  config?: Partial<SimStateConfig>
}

export class SimState {
  readonly state: ClusterState
  readonly stats = { gossipSent: 0, gossipApplied: 0, gaps: 0, syncs: 0, diffsApplied: 0, refused: 0 }
  private readonly init: SimStateInit
  private readonly config: SimStateConfig
  private readonly gone: GoneTracker
  private lastWrite: Promise<void> | null = null
  private readonly listeners = new Set<(change: StateChange) => void>()
  private closed = false

  constructor (init: SimStateInit) {
    this.init = init
    this.config = { ...SIM_STATE_CONFIG, ...init.config }
    this.gone = new GoneTracker(this.config.nodeRetentionMs)
    const doc = new Y.Doc()
    // Yjs picks a random client id per document: the simulation draws it from its seed.
    doc.clientID = init.rng.uint32()
    doc.transact(() => { for (const update of init.disk.updates) Y.applyUpdate(doc, update) }, ORIGIN.load)
    this.state = new ClusterState({ self: init.self, life: init.life, doc })
    doc.on('update', this.onUpdate)
    this.state.onChange((change) => {
      if (!change.local && this.state.lostRecords() > 0) this.state.restoreLost()
      for (const listener of this.listeners) listener(change)
    })
    init.clock.setInterval(() => { this.syncRandom() }, this.config.syncIntervalMs)
    init.clock.setInterval(() => { this.maintain() }, this.config.maintainIntervalMs)
  }

  onChange (listener: (change?: StateChange) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** One transaction; resolves once its update is on the simulated disk. */
  async write (fn: (state: ClusterState) => void): Promise<void> {
    if (this.closed) throw new MurmurError('STOPPING', 'the node is stopping', 1, 503)
    this.lastWrite = null
    this.state.transact(() => { fn(this.state) })
    const stored = this.lastWrite
    this.lastWrite = null
    if (stored !== null) await stored
  }

  receive (from: string, bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return
    const body = bytes.subarray(1)
    switch (bytes[0]) {
      case KIND.gossip: {
        const verdict = applyRemote(this.state.doc, body, ORIGIN.remote)
        if (verdict.ok) { this.stats.gossipApplied++; return }
        if (verdict.reason === 'gap') { this.stats.gaps++; this.syncWith(from); return }
        this.stats.refused++
        return
      }
      case KIND.hello:
      case KIND.helloBack: {
        const frame = decodeFrame(body)
        if ('error' in frame || frame.type !== 'hello') { this.stats.refused++; return }
        this.sendFrame(from, KIND.diff, { type: 'diff', update: diffFor(this.state.doc, frame.sv) })
        if (bytes[0] === KIND.hello) this.sendFrame(from, KIND.helloBack, { type: 'hello', sv: Y.encodeStateVector(this.state.doc) })
        return
      }
      case KIND.diff: {
        const frame = decodeFrame(body)
        if ('error' in frame || frame.type !== 'diff') { this.stats.refused++; return }
        if (applyRemote(this.state.doc, frame.update, ORIGIN.remote).ok) this.stats.diffsApplied++
        else this.stats.refused++
        return
      }
      default:
        this.stats.refused++
    }
  }

  /** A member came (back) alive: sync with it, as a node does on a new connection. */
  onMemberEvent (event: MemberEvent): void {
    if (event.member.state === 'alive' && event.member.id !== this.init.self) this.syncWith(event.member.id)
  }

  syncWith (peer: string): void {
    this.stats.syncs++
    this.sendFrame(peer, KIND.hello, { type: 'hello', sv: Y.encodeStateVector(this.state.doc) })
  }

  close (): void {
    this.closed = true
    this.state.doc.off('update', this.onUpdate)
    this.listeners.clear()
  }

  private readonly onUpdate = (update: Uint8Array, origin: unknown): void => {
    if (this.closed) return
    const local = origin === ORIGIN.write || origin === ORIGIN.maintain
    if (local) {
      const message = new Uint8Array(update.length + 1)
      message[0] = KIND.gossip
      message.set(update, 1)
      for (const peer of this.init.peers()) this.init.send(peer, message)
      this.stats.gossipSent++
    }
    const stored = new Promise<void>((resolve) => {
      this.init.clock.setTimeout(() => {
        this.init.disk.updates.push(update)
        resolve()
      }, this.init.rng.between(...this.config.fsyncMs))
    })
    if (origin === ORIGIN.write) this.lastWrite = stored
  }

  private sendFrame (to: string, kind: number, frame: Parameters<typeof encodeFrame>[0]): void {
    const encoded = encodeFrame(frame)
    const message = new Uint8Array(encoded.length + 1)
    message[0] = kind
    message.set(encoded, 1)
    this.init.send(to, message)
  }

  private syncRandom (): void {
    const peers = this.init.peers()
    if (peers.length > 0) this.syncWith(this.init.rng.pick(peers))
  }

  private maintain (): void {
    const now = this.init.clock.now()
    const report = this.state.maintain({
      now,
      taskRetentionMs: this.config.taskRetentionMs,
      jobRetentionMs: this.config.jobRetentionMs,
      isGone: (id) => {
        const s = this.init.memberState(id)
        return this.gone.isGone(id, s === 'alive' || s === 'suspect', now)
      },
    })
    for (const id of report.removedNodes) this.gone.forget(id)
  }
}
