// The steps of state sync, bytes in and bytes out: the frames of the anti-entropy
// protocol, the diff a peer is missing, and the check every update from a peer
// passes before it touches the document. No I/O.

import * as Y from 'yjs'

export const SYNC_LIMITS = Object.freeze({
  /** One frame of the sync protocol: a whole document's diff for a late joiner fits well below. */
  frameBytesMax: 32 * 1024 * 1024,
  /**
   * One gossip message; larger batches go by anti-entropy instead. Well below
   * gossipsub's inbound limit, since it bundles several messages and its own
   * control into one frame.
   */
  gossipBytesMax: 256 * 1024,
  /** gossipsub's inbound frame limit: room for a dozen full messages and control. */
  gossipFrameBytesMax: 4 * 1024 * 1024,
  /** A state vector with more clients than this is not a state vector of ours. */
  stateVectorClientsMax: 1_000_000,
})

/**
 * Anti-entropy: both sides send `hello` (their state vector); each answers with
 * `diff` (what the other lacks). `digest-request` asks for a peer's state vector
 * and a hash of its canonical state, to compare copies.
 */
export type Frame =
  | { type: 'hello', sv: Uint8Array }
  | { type: 'diff', update: Uint8Array }
  | { type: 'digest-request' }
  | { type: 'digest', sv: Uint8Array, digest: Uint8Array }

const TAG = { hello: 1, diff: 2, 'digest-request': 3, digest: 4 } as const

export function encodeFrame (frame: Frame): Uint8Array {
  switch (frame.type) {
    case 'hello': return withTag(TAG.hello, frame.sv)
    case 'diff': return withTag(TAG.diff, frame.update)
    case 'digest-request': return Uint8Array.of(TAG['digest-request'])
    case 'digest': {
      const out = new Uint8Array(1 + 4 + frame.sv.length + frame.digest.length)
      out[0] = TAG.digest
      new DataView(out.buffer).setUint32(1, frame.sv.length)
      out.set(frame.sv, 5)
      out.set(frame.digest, 5 + frame.sv.length)
      return out
    }
  }
}

/** A frame from a peer, or why it is not one. Never throws. */
export function decodeFrame (bytes: Uint8Array): Frame | { error: string } {
  if (bytes.length === 0) return { error: 'empty frame' }
  if (bytes.length > SYNC_LIMITS.frameBytesMax) return { error: `frame of ${bytes.length} bytes is over the limit` }
  const body = bytes.subarray(1)
  switch (bytes[0]) {
    case TAG.hello: return checkedStateVector(body) ?? { type: 'hello', sv: body }
    case TAG.diff: return { type: 'diff', update: body }
    case TAG['digest-request']: return body.length === 0 ? { type: 'digest-request' } : { error: 'digest request with a body' }
    case TAG.digest: {
      if (body.length < 4) return { error: 'truncated digest' }
      const svLength = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(0)
      if (4 + svLength > body.length) return { error: 'truncated digest' }
      const sv = body.subarray(4, 4 + svLength)
      return checkedStateVector(sv) ?? { type: 'digest', sv, digest: body.subarray(4 + svLength) }
    }
    default: return { error: `unknown frame type ${bytes[0]}` }
  }
}

/**
 * One anti-entropy exchange with one peer, as a pure state machine: frames in,
 * frames to send and an update to apply out. Both transports drive it, the
 * libp2p stream of a node and the simulated network, so the order of the
 * exchange is one piece of code:
 *
 *   asker                          answerer
 *   hello(sv) ───────────────────▶
 *             ◀─────────────────── hello(sv), diff(what the asker lacks)
 *   diff(what the answerer lacks) ▶
 *
 * The answerer also answers a `digest-request` with a `digest` (its state vector
 * and a hash of its state, computed by the caller) and is done. Each side
 * computes its diff before it applies the other's, so the diff is no larger than
 * it must be.
 */
export class SyncSession {
  readonly role: 'ask' | 'answer'
  private readonly doc: Y.Doc
  private readonly digest: (() => { sv: Uint8Array, digest: Uint8Array }) | undefined
  private expecting: 'hello' | 'first' | 'diff' | 'nothing'
  private peerSv: Uint8Array | null = null
  /** The answerer was asked for its digest, not for an exchange of state. */
  digestOnly = false

  private constructor (role: 'ask' | 'answer', doc: Y.Doc, digest?: () => { sv: Uint8Array, digest: Uint8Array }) {
    this.role = role
    this.doc = doc
    this.digest = digest
    this.expecting = role === 'ask' ? 'hello' : 'first'
  }

  /** The asking side, with the frame it opens the exchange with. */
  static ask (doc: Y.Doc): { session: SyncSession, send: Frame[] } {
    return { session: new SyncSession('ask', doc), send: [{ type: 'hello', sv: Y.encodeStateVector(doc) }] }
  }

  /** The answering side; `digest` answers a digest request. */
  static answer (doc: Y.Doc, digest: () => { sv: Uint8Array, digest: Uint8Array }): SyncSession {
    return new SyncSession('answer', doc, digest)
  }

  get done (): boolean { return this.expecting === 'nothing' }

  /** The type of frame the session waits for next, or null once it is done. */
  get next (): 'hello' | 'diff' | 'hello or digest-request' | null {
    switch (this.expecting) {
      case 'hello': return 'hello'
      case 'first': return 'hello or digest-request'
      case 'diff': return 'diff'
      case 'nothing': return null
    }
  }

  /** Takes the peer's next frame. A frame out of order is an error that names what was expected. */
  receive (frame: Frame): SessionStep | { error: string } {
    switch (this.expecting) {
      case 'hello':
        if (frame.type !== 'hello') return unexpected('hello', frame)
        this.peerSv = frame.sv
        this.expecting = 'diff'
        return { send: [], apply: null, done: false }
      case 'first':
        if (frame.type === 'digest-request' && this.digest !== undefined) {
          this.expecting = 'nothing'
          this.digestOnly = true
          return { send: [{ type: 'digest', ...this.digest() }], apply: null, done: true }
        }
        if (frame.type !== 'hello') return unexpected('hello or digest-request', frame)
        this.expecting = 'diff'
        return { send: [{ type: 'hello', sv: Y.encodeStateVector(this.doc) }, { type: 'diff', update: diffFor(this.doc, frame.sv) }], apply: null, done: false }
      case 'diff': {
        if (frame.type !== 'diff') return unexpected('diff', frame)
        this.expecting = 'nothing'
        const send: Frame[] = this.role === 'ask' ? [{ type: 'diff', update: diffFor(this.doc, this.peerSv!) }] : []
        return { send, apply: frame.update, done: true }
      }
      case 'nothing':
        return { error: `the exchange is over, got ${frame.type}` }
    }
  }
}

/** What a session step asks of its driver: send these frames, then apply this update from the peer (if any). */
export interface SessionStep {
  send: Frame[]
  apply: Uint8Array | null
  done: boolean
}

function unexpected (expected: string, frame: Frame): { error: string } {
  return { error: `expected ${expected}, got ${frame.type}` }
}

function withTag (tag: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + body.length)
  out[0] = tag
  out.set(body, 1)
  return out
}

function checkedStateVector (bytes: Uint8Array): { error: string } | null {
  try {
    const sv = Y.decodeStateVector(bytes)
    if (sv.size > SYNC_LIMITS.stateVectorClientsMax) return { error: 'state vector too large' }
    for (const clock of sv.values()) if (!Number.isSafeInteger(clock) || clock < 0) return { error: 'state vector with a bad clock' }
    return null
  } catch {
    return { error: 'malformed state vector' }
  }
}

/** What the peer with state vector `remoteSv` lacks of `doc`. */
export function diffFor (doc: Y.Doc, remoteSv: Uint8Array): Uint8Array {
  return Y.encodeStateAsUpdate(doc, remoteSv)
}

export type Verdict =
  | { ok: true }
  /**
   * malformed: not a Yjs update. own-client: claims to be written by this
   * document's own client id, which only this process writes. gap: depends on
   * changes this document does not have yet: sync by state vectors instead.
   * The records' own checks (crdt/state.ts, ClusterState.applyRemote) add: forged:
   * a record its owner did not sign for the item that holds it. not-allowed: a
   * type or place the schema does not have. over-budget: more than a writer may hold.
   */
  | { ok: false, reason: 'malformed' | 'own-client' | 'gap' | 'forged' | 'not-allowed' | 'over-budget' }

export type DecodedUpdate = ReturnType<typeof Y.decodeUpdate>

/**
 * Checks an update from a peer against a document without changing it. An update
 * that passes applies whole, at once, and leaves nothing pending in Yjs (whose
 * pending structs are retried on every later update, which made 10,000 updates
 * in reverse order take about a minute to apply).
 */
export function checkUpdate (doc: Y.Doc, update: Uint8Array, gate?: (decoded: DecodedUpdate) => Verdict): Verdict {
  let decoded: DecodedUpdate
  try {
    decoded = Y.decodeUpdate(update)
  } catch {
    return { ok: false, reason: 'malformed' }
  }
  // What the document has of each writer, read only for the writers the update names (a whole
  // state vector per update costs O(writers), and every node applies every update).
  const known = new Map<number, number>()
  const knownOf = (client: number): number => {
    let end = known.get(client)
    if (end === undefined) known.set(client, end = Y.getState(doc.store, client))
    return end
  }
  for (const struct of decoded.structs) {
    if (struct instanceof Y.Skip) return { ok: false, reason: 'gap' }
    const { client, clock } = struct.id
    if (!Number.isSafeInteger(clock) || !Number.isSafeInteger(struct.length) || struct.length < 1) return { ok: false, reason: 'malformed' }
    if (client === doc.clientID && clock + struct.length > Y.getState(doc.store, client)) return { ok: false, reason: 'own-client' }
    const end = knownOf(client)
    if (clock > end) return { ok: false, reason: 'gap' }
    known.set(client, Math.max(end, clock + struct.length))
  }
  const missing = (id: Y.ID | null): boolean => id !== null && id.clock >= knownOf(id.client)
  // Yjs integrates one writer's structs in clock order: an item can only refer to
  // its own writer's earlier structs. A reference forward (or to itself) would make
  // applyUpdate throw halfway, leaving part of the update applied.
  const forward = (item: Y.Item, id: Y.ID | null): boolean => id !== null && id.client === item.id.client && id.clock >= item.id.clock
  for (const struct of decoded.structs) {
    if (!(struct instanceof Y.Item)) continue
    const parent = struct.parent instanceof Y.ID ? struct.parent : null
    if (forward(struct, struct.origin) || forward(struct, struct.rightOrigin) || forward(struct, parent)) return { ok: false, reason: 'malformed' }
    if (missing(struct.origin) || missing(struct.rightOrigin) || missing(parent)) return { ok: false, reason: 'gap' }
  }
  for (const [client, deletes] of decoded.ds.clients) {
    for (const d of deletes) if (d.clock + d.len > knownOf(client)) return { ok: false, reason: 'gap' }
  }
  return gate === undefined ? { ok: true } : gate(decoded)
}

/** Checks (with `gate`'s checks of what the update holds, if given), then applies an update from a peer in one transaction. */
export function applyRemote (doc: Y.Doc, update: Uint8Array, origin: unknown, gate?: (decoded: DecodedUpdate) => Verdict): Verdict {
  const verdict = checkUpdate(doc, update, gate)
  if (!verdict.ok) return verdict
  try {
    Y.applyUpdate(doc, update, origin)
  } catch {
    return { ok: false, reason: 'malformed' }
  }
  if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
    // Not expected after the check; if it happens, drop what is pending rather
    // than retry it forever: anti-entropy brings it again, whole.
    doc.store.pendingStructs = null
    doc.store.pendingDs = null
    return { ok: false, reason: 'gap' }
  }
  return { ok: true }
}

/**
 * The document's state in a form that is byte-for-byte the same on every replica
 * that has seen the same changes, whatever order they arrived in (a live
 * document's own encoding depends on how its structs were split and merged).
 */
export function canonicalState (doc: Y.Doc): Uint8Array {
  const fresh = new Y.Doc({ gc: true })
  Y.applyUpdate(fresh, Y.encodeStateAsUpdate(doc))
  const out = Y.encodeStateAsUpdate(fresh)
  fresh.destroy()
  return out
}

/**
 * What a document holds, in far fewer bytes than canonicalState and far cheaper to
 * compute: its state vector and its delete set, both written by Yjs in a fixed order
 * (clients sorted, adjacent deletions merged into ranges). Since a replica has every
 * change up to its state vector and nothing beyond (checkUpdate lets no gap in),
 * two replicas with the same fingerprint hold the same document.
 */
export function stateFingerprint (doc: Y.Doc): Uint8Array {
  const sv = Y.encodeStateVector(doc)
  // Against its own state vector, the update holds no structs: only the delete set.
  const ds = Y.encodeStateAsUpdate(doc, sv)
  const out = new Uint8Array(sv.length + ds.length)
  out.set(sv, 0)
  out.set(ds, sv.length)
  return out
}

export interface StateVectorSummary {
  /** Yjs clients (writers: one per node process) that this document has changes of. */
  clients: number
  /** Sum of their clocks: grows with every change, equal on equal replicas. */
  clock: number
  /** The largest writers, by clock. */
  top: Array<{ client: number, clock: number }>
}

export function summarizeStateVector (sv: Map<number, number>, topN = 5): StateVectorSummary {
  let clock = 0
  for (const c of sv.values()) clock += c
  const top = [...sv].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, topN).map(([client, c]) => ({ client, clock: c }))
  return { clients: sv.size, clock, top }
}

export function stateVectorOf (doc: Y.Doc): Map<number, number> {
  return Y.decodeStateVector(Y.encodeStateVector(doc))
}

export function sameStateVector (a: Uint8Array, b: Uint8Array): boolean {
  const x = Y.decodeStateVector(a)
  const y = Y.decodeStateVector(b)
  if (x.size !== y.size) return false
  for (const [client, clock] of x) if (y.get(client) !== clock) return false
  return true
}
