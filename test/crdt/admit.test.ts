// Admission: the node's own check of what a record means, beyond its schema and its
// writer's signature. A record it refuses is invalid to every reader; each record is
// judged once; a large diff is judged ahead in slices; readmit judges again what a
// change can concern.

import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { type Admit, ClusterState } from '../../crdt/state.ts'
import type { JobRecord } from '../../crdt/schema.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import { jobRecord } from './helpers.ts'

function writer (jobs: JobRecord[]): Uint8Array {
  const a = new ClusterState({ self: 'node-a', life: 'l1', keys: derivedKeys('node-a') })
  a.transact(() => { for (const j of jobs) a.putJob(j) })
  return Y.encodeStateAsUpdate(a.doc)
}

/** An admit that refuses jobs whose name is in `refused`, and counts its calls. */
function counting (refused: Set<string>): { admit: Admit, calls: () => number } {
  let calls = 0
  return {
    admit: (kind, record) => { calls++; return kind === 'jobs' && refused.has((record as JobRecord).name) ? 'not asked for by a user' : null },
    calls: () => calls,
  }
}

describe('admission', () => {
  it('hides what the check refuses and counts it invalid; judges each record once', () => {
    const check = counting(new Set(['job-bad']))
    const b = new ClusterState({ self: 'node-b', life: 'l2', keys: derivedKeys('node-b'), admit: check.admit })
    const invalid: string[] = []
    b.onInvalid((i) => { invalid.push(`${i.key}: ${i.reason}`) })
    expect(b.applyRemote(writer([jobRecord('good', 'node-a'), jobRecord('bad', 'node-a')]))).toEqual({ ok: true })
    expect(b.jobIds()).toEqual(['good'])
    expect(invalid).toEqual(['bad: not asked for by a user'])
    expect(check.calls()).toBe(2)
    // Indexing again (a space re-read) asks no more.
    b.readmit(['jobs'], check.admit, () => false)
    expect(check.calls()).toBe(2)
  })

  it('judges a large diff ahead in slices, so applying it asks nothing more', async () => {
    const check = counting(new Set())
    const b = new ClusterState({ self: 'node-b', life: 'l2', keys: derivedKeys('node-b'), admit: check.admit })
    const update = writer(Array.from({ length: 200 }, (_, i) => jobRecord(`j${i}`, 'node-a')))
    let pauses = 0
    const pre = await b.precheck(update, async () => { pauses++ }, 64)
    expect(check.calls()).toBe(200)
    expect(pauses).toBeGreaterThanOrEqual(2 * Math.floor(200 / 64))
    expect(b.applyRemote(update, pre)).toEqual({ ok: true })
    expect(check.calls()).toBe(200)
    expect(b.jobIds()).toHaveLength(200)
  })

  it('judges again only what a change concerns, and shows what it now refuses', () => {
    const refused = new Set<string>()
    const check = counting(refused)
    const b = new ClusterState({ self: 'node-b', life: 'l2', keys: derivedKeys('node-b'), admit: check.admit })
    b.applyRemote(writer([jobRecord('x', 'node-a'), jobRecord('y', 'node-a')]))
    const changes: string[][] = []
    b.onChange((c) => { if (c.kind === 'jobs') changes.push(c.ids) })
    refused.add('job-x')
    const changed = b.readmit(['jobs'], check.admit, (record) => (record as JobRecord).name === 'job-x')
    expect(changed).toEqual(['x'])
    expect(changes).toEqual([['x']])
    expect(b.jobIds()).toEqual(['y'])
    expect(check.calls()).toBe(3)
  })
})
