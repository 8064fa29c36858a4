// The steps of state sync: frames in and out, the check every peer update passes
// before it touches the document, canonical state and diffs. Every Y.Doc gets a
// fixed client id and every random input comes from a seeded Rng, so each run is
// the same.

import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { ClusterState, ORIGIN } from '../../crdt/state.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import {
  type Frame, SYNC_LIMITS, applyRemote, canonicalState, stateFingerprint, checkUpdate, decodeFrame, diffFor, encodeFrame,
  sameStateVector, stateVectorOf, summarizeStateVector,
} from '../../crdt/sync.ts'
import { Rng } from '../../testnet/sim/rng.ts'
import { jobRecord, nodeRecord, taskRecord } from './helpers.ts'

function doc (clientID: number): Y.Doc {
  const d = new Y.Doc()
  d.clientID = clientID
  return d
}

/** A replica whose client id (derived from its name and a nonce) is the same in every run. */
function replica (self: string, clientID: number): ClusterState {
  const rng = new Rng(`replica-${self}-${clientID}`)
  return new ClusterState({ self, life: 'life-1', doc: doc(clientID), keys: derivedKeys(self), random: () => rng.next() })
}

/** Collects the updates a document emits. */
function recorder (d: Y.Doc): Uint8Array[] {
  const updates: Uint8Array[] = []
  d.on('update', (u: Uint8Array) => { updates.push(u) })
  return updates
}

const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex')

/** Everything that must not change when an update is refused. */
function snapshot (d: Y.Doc): { sv: string, canonical: string } {
  return { sv: hex(Y.encodeStateVector(d)), canonical: hex(canonicalState(d)) }
}

function randomBytes (rng: Rng, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => rng.int(256))
}

describe('frames', () => {
  const a = replica('A', 1)
  a.setNode(nodeRecord('A'))
  a.putTask(taskRecord('t1', 'A'))
  const sv = Y.encodeStateVector(a.doc)
  const update = Y.encodeStateAsUpdate(a.doc)
  const digest = Uint8Array.from({ length: 32 }, (_, i) => i * 7)

  it('round-trip through encodeFrame and decodeFrame, every type', () => {
    const frames: Frame[] = [
      { type: 'hello', sv },
      { type: 'hello', sv: Y.encodeStateVector(new Y.Doc()) },
      { type: 'diff', update },
      { type: 'diff', update: new Uint8Array(0) },
      { type: 'digest-request' },
      { type: 'digest', sv, digest },
      { type: 'digest', sv, digest: new Uint8Array(0) },
    ]
    for (const frame of frames) {
      const bytes = encodeFrame(frame)
      const back = decodeFrame(bytes)
      expect(back, frame.type).toEqual(frame)
      expect(encodeFrame(back as Frame)).toEqual(bytes)
    }
    // Distinct types are distinct on the wire.
    expect(new Set(frames.map((f) => encodeFrame(f)[0])).size).toBe(4)
  })

  it('decodeFrame returns an error, never throws, for what is not a frame', () => {
    const digestFrame = encodeFrame({ type: 'digest', sv, digest })
    const bad: Array<[string, Uint8Array, RegExp]> = [
      ['empty', new Uint8Array(0), /empty/],
      ['unknown tag 0', Uint8Array.of(0), /unknown frame type 0/],
      ['unknown tag 9', Uint8Array.of(9, 1, 2, 3), /unknown frame type 9/],
      ['unknown tag 255', Uint8Array.of(255), /unknown frame type 255/],
      ['digest without a length', Uint8Array.of(4, 0, 0), /truncated digest/],
      ['digest cut in its state vector', digestFrame.subarray(0, 5 + sv.length - 1), /truncated digest/],
      ['digest claiming a huge state vector', Uint8Array.of(4, 0xff, 0xff, 0xff, 0xff, 0), /truncated digest/],
      ['hello with a cut state vector', Uint8Array.of(1, 2, 1), /malformed state vector/],
      ['hello with a varint that never ends', Uint8Array.of(1, 0x81, 0x80, 0x80), /malformed state vector/],
      ['hello with an empty body', Uint8Array.of(1), /malformed state vector/],
      ['digest with a malformed state vector', Uint8Array.of(4, 0, 0, 0, 2, 5, 0x80, 1, 2), /malformed state vector/],
      ['digest request with a body', Uint8Array.of(3, 0), /digest request with a body/],
    ]
    for (const [what, bytes, error] of bad) {
      let result: ReturnType<typeof decodeFrame> | undefined
      expect(() => { result = decodeFrame(bytes) }, what).not.toThrow()
      expect(result, what).toEqual({ error: expect.stringMatching(error) })
    }
  })

  it('decodeFrame refuses a frame over SYNC_LIMITS.frameBytesMax, and takes one at the limit', () => {
    const over = new Uint8Array(SYNC_LIMITS.frameBytesMax + 1)
    over[0] = 2
    expect(decodeFrame(over)).toEqual({ error: expect.stringMatching(/over the limit/) })
    const at = over.subarray(0, SYNC_LIMITS.frameBytesMax)
    const frame = decodeFrame(at)
    expect('type' in frame && frame.type).toBe('diff')
  })

  it('decodeFrame survives 2,000 random byte arrays; whatever it accepts encodes back to the same bytes', () => {
    const rng = new Rng('decode-fuzz')
    let accepted = 0
    for (let i = 0; i < 2_000; i++) {
      const bytes = randomBytes(rng, rng.int(64))
      // Half of them start with a known tag, to get past the first check.
      if (bytes.length > 0 && rng.chance(0.5)) bytes[0] = rng.between(1, 4)
      let result: ReturnType<typeof decodeFrame> | undefined
      expect(() => { result = decodeFrame(bytes) }, hex(bytes)).not.toThrow()
      if ('error' in result!) {
        expect(typeof result.error).toBe('string')
      } else {
        accepted++
        expect(hex(encodeFrame(result!)), hex(bytes)).toBe(hex(bytes))
      }
    }
    // Diff frames take any body, so some must have been accepted.
    expect(accepted).toBeGreaterThan(100)
  })
})

describe('checkUpdate and applyRemote', () => {
  it('apply a valid update', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    const updates = recorder(a.doc)
    a.setNode(nodeRecord('A'))
    a.putJob(jobRecord('j1', 'A'))
    for (const u of updates) {
      expect(checkUpdate(b.doc, u)).toEqual({ ok: true })
      expect(applyRemote(b.doc, u, ORIGIN.remote)).toEqual({ ok: true })
    }
    expect(b.node('A')).toEqual(nodeRecord('A'))
    expect(b.job('j1')).toEqual(jobRecord('j1', 'A'))
    expect(hex(canonicalState(b.doc))).toBe(hex(canonicalState(a.doc)))
  })

  it('refuse random bytes as malformed and leave the document as it was', () => {
    const b = replica('B', 2)
    b.putTask(taskRecord('t1', 'B'))
    const before = snapshot(b.doc)
    const rng = new Rng('random-updates')
    const updates = recorder(b.doc)
    for (let i = 0; i < 50; i++) {
      const bytes = randomBytes(rng, rng.between(8, 200))
      expect(checkUpdate(b.doc, bytes), hex(bytes)).toEqual({ ok: false, reason: 'malformed' })
      expect(applyRemote(b.doc, bytes, ORIGIN.remote), hex(bytes)).toEqual({ ok: false, reason: 'malformed' })
    }
    for (const bytes of [new Uint8Array(0), Uint8Array.of(0xff, 0xff, 0xff), Uint8Array.of(1, 1, 7, 0, 0)]) {
      expect(applyRemote(b.doc, bytes, ORIGIN.remote), hex(bytes)).toEqual({ ok: false, reason: 'malformed' })
    }
    expect(snapshot(b.doc)).toEqual(before)
    expect(updates).toEqual([])
  })

  it('refuse an update that depends on a missing earlier one as a gap, with nothing left pending; both apply in order', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    b.setNode(nodeRecord('B'))
    const updates = recorder(a.doc)
    a.putTask(taskRecord('t1', 'A'))
    a.putTask(taskRecord('t2', 'A'))
    const [first, second] = updates as [Uint8Array, Uint8Array]
    const before = snapshot(b.doc)
    expect(checkUpdate(b.doc, second)).toEqual({ ok: false, reason: 'gap' })
    expect(applyRemote(b.doc, second, ORIGIN.remote)).toEqual({ ok: false, reason: 'gap' })
    expect(snapshot(b.doc)).toEqual(before)
    expect(b.doc.store.pendingStructs).toBeNull()
    expect(b.doc.store.pendingDs).toBeNull()
    expect(b.tasks()).toEqual([])
    expect(applyRemote(b.doc, first, ORIGIN.remote)).toEqual({ ok: true })
    expect(applyRemote(b.doc, second, ORIGIN.remote)).toEqual({ ok: true })
    expect(b.tasks().map((t) => t.id).sort()).toEqual(['t1', 't2'])
    expect(b.doc.store.pendingStructs).toBeNull()
  })

  it('refuse an update whose items refer to another writer\'s items that are missing, as a gap', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    const c = replica('C', 3)
    // B overwrites a key that A created: B's item has A's item as its origin.
    a.doc.getMap('scratch').set('k', 1)
    Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc), ORIGIN.remote)
    const sv = Y.encodeStateVector(b.doc)
    b.doc.getMap('scratch').set('k', 2)
    const fromB = Y.encodeStateAsUpdate(b.doc, sv)
    expect(Y.decodeUpdate(fromB).structs.every((s) => s.id.client === b.doc.clientID)).toBe(true)
    const before = snapshot(c.doc)
    expect(applyRemote(c.doc, fromB, ORIGIN.remote)).toEqual({ ok: false, reason: 'gap' })
    expect(snapshot(c.doc)).toEqual(before)
    expect(c.doc.store.pendingStructs).toBeNull()
    expect(applyRemote(c.doc, Y.encodeStateAsUpdate(a.doc), ORIGIN.remote)).toEqual({ ok: true })
    expect(applyRemote(c.doc, fromB, ORIGIN.remote)).toEqual({ ok: true })
    expect(c.doc.getMap('scratch').get('k')).toBe(2)
  })

  it('refuse structs under the document\'s own client id that it does not have', () => {
    const b = replica('B', 2)
    b.putTask(taskRecord('t1', 'B'))
    // Another process that took the same client id (or a peer forging it), and wrote
    // more than B has of its own (B has clocks 0 and 1: its space and t1).
    const id = b.doc.clientID
    expect(stateVectorOf(b.doc)).toEqual(new Map([[id, 2]]))
    const twin = doc(id)
    for (const id of ['B', 'C', 'D']) twin.getMap('nodes').set(id, nodeRecord(id))
    const before = snapshot(b.doc)
    const forged = Y.encodeStateAsUpdate(twin)
    expect(checkUpdate(b.doc, forged)).toEqual({ ok: false, reason: 'own-client' })
    expect(applyRemote(b.doc, forged, ORIGIN.remote)).toEqual({ ok: false, reason: 'own-client' })
    expect(snapshot(b.doc)).toEqual(before)
    expect(b.doc.clientID).toBe(id)
    // Its own changes coming back (an echo) are fine.
    expect(applyRemote(b.doc, Y.encodeStateAsUpdate(b.doc), ORIGIN.remote)).toEqual({ ok: true })
    expect(snapshot(b.doc)).toEqual(before)
    // A document that has written nothing yet refuses any struct under its id.
    const fresh = doc(id)
    expect(applyRemote(fresh, forged, ORIGIN.remote)).toEqual({ ok: false, reason: 'own-client' })
    expect(stateVectorOf(fresh).size).toBe(0)
    // Mixed with another writer's valid structs, the whole update is refused.
    const c = doc(3)
    c.getMap('nodes').set('C', nodeRecord('C'))
    expect(applyRemote(b.doc, Y.mergeUpdates([Y.encodeStateAsUpdate(c), forged]), ORIGIN.remote)).toEqual({ ok: false, reason: 'own-client' })
    expect(snapshot(b.doc)).toEqual(before)
  })

  it('refuse a delete-only update for items the document lacks, as a gap', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    const c = replica('C', 3)
    a.putTask(taskRecord('t1', 'A'))
    Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc), ORIGIN.remote)
    // B deletes A's whole space: an update with a delete set and no structs of A.
    const updates = recorder(b.doc)
    b.doc.getMap('tasks').delete('A/life-1')
    expect(updates).toHaveLength(1)
    const deleteOnly = updates[0]!
    const decoded = Y.decodeUpdate(deleteOnly)
    expect(decoded.structs).toEqual([])
    expect(decoded.ds.clients.size).toBe(1)
    const before = snapshot(c.doc)
    expect(applyRemote(c.doc, deleteOnly, ORIGIN.remote)).toEqual({ ok: false, reason: 'gap' })
    expect(snapshot(c.doc)).toEqual(before)
    expect(c.doc.store.pendingDs).toBeNull()
    expect(applyRemote(c.doc, Y.encodeStateAsUpdate(a.doc), ORIGIN.remote)).toEqual({ ok: true })
    expect(c.tasks()).toHaveLength(1)
    expect(applyRemote(c.doc, deleteOnly, ORIGIN.remote)).toEqual({ ok: true })
    expect(c.tasks()).toEqual([])
  })

  it('take a duplicate harmlessly: ok, and nothing changes', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    const updates = recorder(a.doc)
    a.putTask(taskRecord('t1', 'A'))
    a.removeTask('t1')
    a.putJob(jobRecord('j1', 'A'))
    for (const u of updates) expect(applyRemote(b.doc, u, ORIGIN.remote)).toEqual({ ok: true })
    const before = snapshot(b.doc)
    const changes: unknown[] = []
    b.onChange((c) => { changes.push(c) })
    const emitted = recorder(b.doc)
    for (const u of [...updates, ...updates, Y.encodeStateAsUpdate(a.doc)]) expect(applyRemote(b.doc, u, ORIGIN.remote)).toEqual({ ok: true })
    expect(snapshot(b.doc)).toEqual(before)
    expect(changes).toEqual([])
    expect(emitted).toEqual([])
  })

  it('survive 500 mutated updates: each applies, or leaves the document exactly as it was', () => {
    // A receiver that already has part of the writers' history, and an update with
    // more of it from two writers (so a mutation can refer to what it has).
    const a = replica('A', 11)
    const b = replica('B', 22)
    a.setNode(nodeRecord('A'))
    a.putJob(jobRecord('j1', 'A'))
    a.putTask(taskRecord('t1', 'A'))
    b.setNode(nodeRecord('B'))
    Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc), ORIGIN.remote)
    const base = Y.encodeStateAsUpdate(b.doc)
    const baseSv = Y.encodeStateVector(b.doc)
    a.transact(() => {
      a.putTask(taskRecord('t2', 'A'))
      a.putTask(taskRecord('t1', 'A', { state: 'exited', finishedAt: 3 }))
      a.removeJob('j1')
    })
    b.transact(() => {
      b.putTask(taskRecord('t9', 'B'))
      b.putJob(jobRecord('j2', 'B'))
    })
    const update = Y.mergeUpdates([Y.encodeStateAsUpdate(a.doc, baseSv), Y.encodeStateAsUpdate(b.doc, baseSv)])

    // Unchanged, it applies.
    const intact = doc(33)
    Y.applyUpdate(intact, base, ORIGIN.load)
    expect(new ClusterState({ self: 'C', life: 'life-1', doc: intact, keys: derivedKeys('C') }).applyRemote(update)).toEqual({ ok: true })
    const rng = new Rng('update-fuzz')
    const outcomes = { ok: 0, malformed: 0, gap: 0, 'own-client': 0, forged: 0, 'not-allowed': 0, 'over-budget': 0 }
    for (let i = 0; i < 500; i++) {
      let mutated: Uint8Array
      const how = rng.int(3)
      if (how === 0) {
        mutated = Uint8Array.from(update)
        for (let k = rng.between(1, 3); k > 0; k--) mutated[rng.int(mutated.length)] = rng.int(256)
      } else if (how === 1) {
        mutated = update.slice(0, rng.int(update.length))
      } else {
        const at = rng.int(update.length)
        const cut = rng.int(8)
        mutated = new Uint8Array([...update.subarray(0, at), ...randomBytes(rng, rng.between(1, 8)), ...update.subarray(at + cut)])
      }
      const receiver = doc(33)
      Y.applyUpdate(receiver, base, ORIGIN.load)
      const state = new ClusterState({ self: 'C', life: 'life-1', doc: receiver, keys: derivedKeys('C') })
      const before = snapshot(receiver)
      let verdict: ReturnType<typeof applyRemote> | undefined
      expect(() => { verdict = state.applyRemote(mutated) }, `mutation ${i}: ${hex(mutated)}`).not.toThrow()
      outcomes[verdict!.ok ? 'ok' : verdict!.reason]++
      if (verdict!.ok) {
        expect(receiver.store.pendingStructs).toBeNull()
        expect(() => {
          state.nodes()
          state.jobs()
          state.tasks()
          state.counts()
          const fresh = new ClusterState({ self: 'D', life: 'life-1', doc: receiver, keys: derivedKeys('D') })
          fresh.jobs()
          fresh.tasks()
        }, `mutation ${i} accepted, then unreadable`).not.toThrow()
      } else {
        expect(snapshot(receiver), `mutation ${i} refused (${verdict!.reason}) but changed the document`).toEqual(before)
        expect(receiver.store.pendingStructs).toBeNull()
        expect(receiver.store.pendingDs).toBeNull()
      }
      receiver.destroy()
    }
    // A mutation that still decodes mostly changes a record: its signature no longer holds.
    expect(outcomes.forged).toBeGreaterThan(0)
    expect(outcomes.malformed).toBeGreaterThan(0)
  })

  // Regression, once a bug (crdt/sync.ts checkUpdate, lines 111-124): Yjs integrates a client's structs in
  // clock order and only checks dependencies on *other* clients; an item whose origin
  // (or right origin, or parent) is its own client at a clock not yet integrated makes
  // Y.applyUpdate throw half-way. checkUpdate accepts it (the id is inside the update),
  // so applyRemote applies the other client's structs, then returns 'malformed'.
  it('an update that passes the check but cannot be integrated changes nothing', () => {
    const writer = doc(100)
    writer.getMap('m').set('a', 1)
    const forger = doc(5)
    forger.getMap('m').set('k', 1)
    forger.getMap('m').set('k', 2)
    const own = Y.encodeStateAsUpdate(forger)
    const structs = Y.decodeUpdate(own).structs
    expect(structs[1]!.id).toEqual({ client: 5, clock: 1 })
    expect((structs[1] as Y.Item).origin).toEqual({ client: 5, clock: 0 })
    // Point the second item's origin at itself (client 5, clock 1): the byte after "a8 05".
    const at = hex(own).indexOf('a80500') / 2 + 2
    const bad = Uint8Array.from(own)
    bad[at] = 1
    expect((Y.decodeUpdate(bad).structs[1] as Y.Item).origin).toEqual({ client: 5, clock: 1 })
    const update = Y.mergeUpdates([Y.encodeStateAsUpdate(writer), bad])
    const receiver = doc(7)
    receiver.getMap('m').set('z', 0)
    const before = snapshot(receiver)
    const verdict = applyRemote(receiver, update, ORIGIN.remote)
    if (!verdict.ok) expect(snapshot(receiver)).toEqual(before)
    expect(receiver.getMap('m').has('a')).toBe(verdict.ok)
  })
})

describe('canonicalState', () => {
  /**
   * Two writers; B rewrites its tasks until its space is rotated. Overwritten
   * values collected with the old space become GC structs that a live replica keeps
   * apart and a replica that gets them in one piece merges.
   */
  function history (): { a: ClusterState, b: ClusterState, fromA: Uint8Array[], fromB: Uint8Array[] } {
    const a = replica('A', 11)
    const b = replica('B', 22)
    const fromA = recorder(a.doc)
    const fromB = recorder(b.doc)
    b.putTask(taskRecord('t0', 'B'))
    b.putTask(taskRecord('t1', 'B'))
    b.setNode(nodeRecord('B'))
    for (const state of ['exited', 'killed', 'lost'] as const) {
      b.putTask(taskRecord('t0', 'B', { state }))
      b.putTask(taskRecord('t1', 'B', { state }))
    }
    a.setNode(nodeRecord('A'))
    a.putJob(jobRecord('j1', 'A'))
    a.putTask(taskRecord('ta', 'A'))
    expect(b.maintain({ now: 0, taskRetentionMs: 0, jobRetentionMs: 0, isGone: () => false, rotateGarbageMin: 1 }).rotatedSpaces).toBe(1)
    a.removeTask('ta')
    return { a, b, fromA, fromB }
  }

  it('is byte-identical on replicas that got the same updates in different orders and batchings', () => {
    const { a, b, fromA, fromB } = history()
    // One by one, A's first.
    const r1 = doc(1)
    for (const u of [...fromA, ...fromB]) expect(applyRemote(r1, u, ORIGIN.remote)).toEqual({ ok: true })
    // One by one, interleaved, B's first.
    const r2 = doc(2)
    for (let i = 0; i < Math.max(fromA.length, fromB.length); i++) {
      for (const u of [fromB[i], fromA[i]]) if (u !== undefined) expect(applyRemote(r2, u, ORIGIN.remote)).toEqual({ ok: true })
    }
    // All at once, merged.
    const r3 = doc(3)
    expect(applyRemote(r3, Y.mergeUpdates([...fromB, ...fromA]), ORIGIN.remote)).toEqual({ ok: true })
    // By anti-entropy from each writer.
    const r4 = doc(4)
    expect(applyRemote(r4, diffFor(b.doc, Y.encodeStateVector(r4)), ORIGIN.remote)).toEqual({ ok: true })
    expect(applyRemote(r4, diffFor(a.doc, Y.encodeStateVector(r4)), ORIGIN.remote)).toEqual({ ok: true })

    const replicas = [r1, r2, r3, r4]
    const raw = replicas.map((r) => hex(Y.encodeStateAsUpdate(r)))
    const canonical = replicas.map((r) => hex(canonicalState(r)))
    // The live encodings differ (so this test shows what canonicalState is for) ...
    expect(new Set(raw).size).toBeGreaterThan(1)
    // ... the canonical ones do not, nor the fingerprints.
    expect(new Set(canonical).size).toBe(1)
    expect(new Set(replicas.map((r) => hex(stateFingerprint(r)))).size).toBe(1)
    expect(sameStateVector(Y.encodeStateVector(r1), Y.encodeStateVector(r3))).toBe(true)
    // And readers agree.
    const views = replicas.map((r) => {
      const s = new ClusterState({ self: 'R', life: 'life-1', doc: r, keys: derivedKeys('R') })
      const byId = <T extends { id: string }>(xs: T[]): T[] => xs.sort((x, y) => x.id.localeCompare(y.id))
      return JSON.stringify([byId(s.nodes()), byId(s.jobs()), byId(s.tasks())])
    })
    expect(new Set(views).size).toBe(1)
  })

  it('differs when the changes differ, and does not change the document', () => {
    const { a } = history()
    const copy = doc(9)
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(a.doc))
    const before = hex(Y.encodeStateAsUpdate(a.doc))
    expect(hex(canonicalState(copy))).toBe(hex(canonicalState(a.doc)))
    expect(hex(Y.encodeStateAsUpdate(a.doc))).toBe(before)
    a.putTask(taskRecord('tb', 'A'))
    expect(hex(canonicalState(copy))).not.toBe(hex(canonicalState(a.doc)))
  })

  it('stateFingerprint tells apart replicas that differ only by a deletion, which the state vector does not show', () => {
    const { a } = history()
    const copy = doc(9)
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(a.doc))
    expect(hex(stateFingerprint(copy))).toBe(hex(stateFingerprint(a.doc)))
    const svBefore = hex(Y.encodeStateVector(a.doc))
    expect(a.removeJob('j1')).toBe(true)
    // A deletion adds no struct: the state vector stays, the fingerprint moves.
    expect(hex(Y.encodeStateVector(a.doc))).toBe(svBefore)
    expect(hex(stateFingerprint(copy))).not.toBe(hex(stateFingerprint(a.doc)))
    Y.applyUpdate(copy, diffFor(a.doc, Y.encodeStateVector(copy)))
    expect(hex(stateFingerprint(copy))).toBe(hex(stateFingerprint(a.doc)))
    expect(hex(canonicalState(copy))).toBe(hex(canonicalState(a.doc)))
  })
})

describe('diffs and state vectors', () => {
  it('diffFor(doc, peer state vector) applied to the peer makes the state vectors equal, both ways', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    a.setNode(nodeRecord('A'))
    a.putTask(taskRecord('t1', 'A'))
    b.setNode(nodeRecord('B'))
    b.putJob(jobRecord('j1', 'B'))
    // Some shared history first.
    expect(applyRemote(b.doc, diffFor(a.doc, Y.encodeStateVector(b.doc)), ORIGIN.remote)).toEqual({ ok: true })
    a.putTask(taskRecord('t2', 'A'))
    b.removeJob('j1')
    expect(sameStateVector(Y.encodeStateVector(a.doc), Y.encodeStateVector(b.doc))).toBe(false)
    const toB = diffFor(a.doc, Y.encodeStateVector(b.doc))
    const toA = diffFor(b.doc, Y.encodeStateVector(a.doc))
    // Only what the other lacks: smaller than the whole document.
    expect(toB.byteLength).toBeLessThan(Y.encodeStateAsUpdate(a.doc).byteLength)
    expect(applyRemote(b.doc, toB, ORIGIN.remote)).toEqual({ ok: true })
    expect(applyRemote(a.doc, toA, ORIGIN.remote)).toEqual({ ok: true })
    expect(sameStateVector(Y.encodeStateVector(a.doc), Y.encodeStateVector(b.doc))).toBe(true)
    expect(stateVectorOf(a.doc)).toEqual(stateVectorOf(b.doc))
    expect(hex(canonicalState(a.doc))).toBe(hex(canonicalState(b.doc)))
    // Nothing more to send.
    const none = diffFor(a.doc, Y.encodeStateVector(b.doc))
    const before = snapshot(b.doc)
    expect(applyRemote(b.doc, none, ORIGIN.remote)).toEqual({ ok: true })
    expect(snapshot(b.doc)).toEqual(before)
  })

  it('sameStateVector compares clocks per client, not bytes', () => {
    const a = replica('A', 1)
    const b = replica('B', 2)
    a.setNode(nodeRecord('A'))
    b.setNode(nodeRecord('B'))
    Y.applyUpdate(a.doc, Y.encodeStateAsUpdate(b.doc))
    Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc))
    expect(sameStateVector(Y.encodeStateVector(a.doc), Y.encodeStateVector(b.doc))).toBe(true)
    const x = Y.encodeStateVector(a.doc)
    a.putTask(taskRecord('t1', 'A'))
    expect(sameStateVector(x, Y.encodeStateVector(a.doc))).toBe(false)
    expect(sameStateVector(Y.encodeStateVector(new Y.Doc()), Y.encodeStateVector(new Y.Doc()))).toBe(true)
    expect(sameStateVector(Y.encodeStateVector(new Y.Doc()), x)).toBe(false)
    // Same clients, one clock different.
    const sv = stateVectorOf(a.doc)
    const shifted = new Map([...sv].map(([client, clock]) => [client, client === a.doc.clientID ? clock + 1 : clock]))
    expect(sameStateVector(encodeSv(sv), encodeSv(shifted))).toBe(false)
    expect(sameStateVector(encodeSv(sv), encodeSv(new Map([...sv].reverse())))).toBe(true)
  })

  it('summarizeStateVector counts clients, sums clocks and lists the largest writers', () => {
    expect(summarizeStateVector(new Map())).toEqual({ clients: 0, clock: 0, top: [] })
    const sv = new Map([[7, 5], [3, 10], [9, 1], [1, 10], [4, 2], [8, 3]])
    expect(summarizeStateVector(sv)).toEqual({
      clients: 6,
      clock: 31,
      top: [{ client: 1, clock: 10 }, { client: 3, clock: 10 }, { client: 7, clock: 5 }, { client: 8, clock: 3 }, { client: 4, clock: 2 }],
    })
    expect(summarizeStateVector(sv, 2).top).toEqual([{ client: 1, clock: 10 }, { client: 3, clock: 10 }])
    const a = replica('A', 1)
    a.setNode(nodeRecord('A'))
    a.putTask(taskRecord('t1', 'A'))
    const id = a.doc.clientID
    expect(summarizeStateVector(stateVectorOf(a.doc))).toEqual({ clients: 1, clock: 3, top: [{ client: id, clock: 3 }] })
  })
})

/** A state vector in Yjs's encoding (count, then client and clock pairs), in the map's order. */
function encodeSv (sv: Map<number, number>): Uint8Array {
  const out: number[] = []
  const varUint = (n: number): void => {
    while (n > 0x7f) {
      out.push(0x80 | (n & 0x7f))
      n = Math.floor(n / 128)
    }
    out.push(n)
  }
  varUint(sv.size)
  for (const [client, clock] of sv) {
    varUint(client)
    varUint(clock)
  }
  return Uint8Array.from(out)
}
