// Several replicas of the cluster state, random concurrent writes through the real
// schema, random delivery of their updates (loss, duplication, reordering), random
// maintenance (retention, rotation) and restarts, plus anti-entropy rounds over the
// real frames: in the end every replica is byte-for-byte equal and every reader
// sees the same records. The seed is printed; SEED=<n> replays it.

import fc from 'fast-check'
import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { ClusterState, ORIGIN } from '../../crdt/state.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import { applyRemote, canonicalState, decodeFrame, diffFor, encodeFrame } from '../../crdt/sync.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'
import { jobRecord, nodeRecord, taskRecord } from './helpers.ts'

interface Replica { state: ClusterState, inbox: Uint8Array[] }

const runSeed = seedFromEnv(3003)

function replica (self: string, life: string, doc?: Y.Doc): ClusterState {
  return new ClusterState({ self, life, doc, keys: derivedKeys(self) })
}

/** Anti-entropy between two replicas through encoded frames, as the node does it. */
export function antiEntropy (a: ClusterState, b: ClusterState): void {
  const helloA = decodeFrame(encodeFrame({ type: 'hello', sv: Y.encodeStateVector(a.doc) }))
  const helloB = decodeFrame(encodeFrame({ type: 'hello', sv: Y.encodeStateVector(b.doc) }))
  if (!('type' in helloA) || helloA.type !== 'hello' || !('type' in helloB) || helloB.type !== 'hello') throw new Error('bad hello')
  const toA = decodeFrame(encodeFrame({ type: 'diff', update: diffFor(b.doc, helloA.sv) }))
  const toB = decodeFrame(encodeFrame({ type: 'diff', update: diffFor(a.doc, helloB.sv) }))
  if (!('type' in toA) || toA.type !== 'diff' || !('type' in toB) || toB.type !== 'diff') throw new Error('bad diff')
  expect(applyRemote(a.doc, toA.update, ORIGIN.remote)).toEqual({ ok: true })
  expect(applyRemote(b.doc, toB.update, ORIGIN.remote)).toEqual({ ok: true })
}

function readerView (s: ClusterState): string {
  const byId = <T extends { id: string }>(xs: T[]): T[] => [...xs].sort((x, y) => x.id.localeCompare(y.id) || JSON.stringify(x).localeCompare(JSON.stringify(y)))
  return JSON.stringify({ nodes: byId(s.nodes()), jobs: byId(s.jobs()), tasks: byId(s.tasks()) })
}

function simulate (seed: number, size: number, steps: number): void {
  const rng = new Rng(seed)
  const ids = Array.from({ length: size }, (_, i) => `node-${i}`)
  const replicas = new Map<string, Replica>()
  const attach = (id: string, state: ClusterState): void => {
    const r: Replica = { state, inbox: [] }
    replicas.set(id, r)
    state.doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin !== ORIGIN.write && origin !== ORIGIN.maintain) return
      for (const [other, o] of replicas) if (other !== id && o.state.doc !== state.doc) o.inbox.push(update)
    })
  }
  for (const id of ids) attach(id, replica(id, 'life-0'))
  let now = 1_000
  let jobSeq = 0
  let taskSeq = 0
  const gone = new Set<string>()
  for (let step = 0; step < steps; step++) {
    now += rng.int(50)
    const id = rng.pick(ids)
    const { state } = replicas.get(id)!
    const roll = rng.next()
    if (roll < 0.1) {
      state.setNode(nodeRecord(id, { labels: { step: String(step) }, updatedAt: now }))
    } else if (roll < 0.25) {
      state.putJob(jobRecord(`j${jobSeq++}`, id, { submittedAt: now, updatedAt: now }))
    } else if (roll < 0.32) {
      // Stop someone's job: a record of one version higher in our own space.
      const jobs = state.jobs()
      if (jobs.length > 0) {
        const job = rng.pick(jobs)
        state.putJob({ ...job, desired: 'stopped', version: job.version + 1, updatedAt: now, finishedAt: now })
      }
    } else if (roll < 0.6) {
      state.transact(() => {
        for (let i = rng.int(3) + 1; i > 0; i--) state.putTask(taskRecord(`t${taskSeq++}`, id, { since: now }))
      })
    } else if (roll < 0.75) {
      const mine = state.tasks().filter((t) => t.node === id)
      if (mine.length > 0) {
        const t = rng.pick(mine)
        state.putTask({ ...t, state: 'exited', since: now, finishedAt: now, exit: { code: 0, signal: null, reason: 'exited' } })
      }
    } else if (roll < 0.8) {
      const mine = state.tasks().filter((t) => t.node === id)
      if (mine.length > 0) state.removeTask(rng.pick(mine).id)
    } else if (roll < 0.88) {
      state.maintain({ now, taskRetentionMs: 200, jobRetentionMs: 500, isGone: (n) => gone.has(n), rotateGarbageMin: 8 })
    } else if (roll < 0.9) {
      // Restart: a new process (new Yjs client id) loads what this one had.
      const doc = new Y.Doc()
      Y.applyUpdate(doc, Y.encodeStateAsUpdate(state.doc), ORIGIN.load)
      const inbox = replicas.get(id)!.inbox
      state.doc.destroy()
      attach(id, replica(id, 'life-0', doc))
      replicas.get(id)!.inbox.push(...inbox)
    } else if (roll < 0.91 && gone.size === 0) {
      // One node is declared gone for good (but keeps its replica, as a partitioned node would).
      gone.add(rng.pick(ids))
    }
    // Random delivery: some messages, in random order, some lost, some twice.
    for (const r of replicas.values()) {
      for (let k = rng.int(3); k > 0 && r.inbox.length > 0; k--) {
        const [update] = r.inbox.splice(rng.int(r.inbox.length), 1)
        if (rng.next() < 0.1) continue
        if (rng.next() < 0.1) r.inbox.push(update!)
        applyRemote(r.state.doc, update!, ORIGIN.remote)
      }
    }
    if (rng.next() < 0.05) {
      const a = rng.pick(ids)
      const b = rng.pick(ids)
      if (a !== b) antiEntropy(replicas.get(a)!.state, replicas.get(b)!.state)
    }
  }
  // Heal: anti-entropy in a ring, twice around, reaches everyone.
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < ids.length; i++) antiEntropy(replicas.get(ids[i]!)!.state, replicas.get(ids[(i + 1) % ids.length]!)!.state)
  }
  const states = ids.map((id) => replicas.get(id)!.state)
  const canonical = states.map((s) => Buffer.from(canonicalState(s.doc)).toString('base64'))
  const views = states.map(readerView)
  for (let i = 1; i < states.length; i++) {
    expect(canonical[i], `replica ${ids[i]} differs from ${ids[0]} (seed ${seed})`).toBe(canonical[0])
    expect(views[i], `reader view of ${ids[i]} (seed ${seed})`).toBe(views[0])
  }
  for (const s of states) expect(s.counts().invalid, `invalid records (seed ${seed})`).toBe(0)
}

describe(`replicas converge under loss, duplication and reordering (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('every replica ends byte-for-byte equal', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 2, max: 6 }), (seed, size) => {
        simulate(seed, size, 400)
      }),
      { seed: runSeed, numRuns: 40 },
    )
  })
})
