// Only a node removes its own records. A peer that took it for gone (say, after a
// day cut off alone) and removed its spaces is overruled: the node writes them back.

import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { ClusterState, ORIGIN } from '../../crdt/state.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import { jobRecord, nodeRecord, taskRecord } from './helpers.ts'

function pair (): { a: ClusterState, b: ClusterState, toB: () => void, toA: () => void } {
  const a = new ClusterState({ self: 'A', life: 'a1', keys: derivedKeys('A') })
  const b = new ClusterState({ self: 'B', life: 'b1', keys: derivedKeys('B') })
  const sync = (from: ClusterState, to: ClusterState) => () => {
    Y.applyUpdate(to.doc, Y.encodeStateAsUpdate(from.doc, Y.encodeStateVector(to.doc)), ORIGIN.remote)
  }
  return { a, b, toB: sync(a, b), toA: sync(b, a) }
}

describe('records removed by a peer are written back by their owner', () => {
  it('a peer that took this node for gone removes its spaces; the node restores them and the peer gets them back', () => {
    const { a, b, toA, toB } = pair()
    a.setNode(nodeRecord('A'))
    a.transact(() => {
      a.putJob(jobRecord('j1', 'A'))
      for (let i = 0; i < 5; i++) a.putTask(taskRecord(`t${i}`, 'A', { job: 'j1' }))
    })
    toB()
    expect(b.tasks()).toHaveLength(5)
    const report = b.maintain({ now: 10, taskRetentionMs: 1_000, jobRetentionMs: 1_000, isGone: (id) => id === 'A' })
    expect(report.removedNodes).toEqual(['A'])
    expect(report.adoptedJobs).toBe(1)
    expect(b.tasks()).toHaveLength(0)
    expect(b.job('j1')).toBeDefined()

    const changes: Array<{ kind: string, ids: string[], local: boolean }> = []
    a.onChange((c) => changes.push({ ...c, ids: [...c.ids].sort() }))
    toA()
    expect(a.tasks()).toHaveLength(0)
    // Readers are told, like for any removal.
    expect(changes).toContainEqual({ kind: 'tasks', ids: ['t0', 't1', 't2', 't3', 't4'], local: false })
    expect(changes).toContainEqual({ kind: 'jobs', ids: ['j1'], local: false })
    // Its job, its five claims, and its own node record (a delete is signed by nobody: anyone can send one).
    expect(a.node('A')).toBeUndefined()
    expect(a.lostRecords()).toBe(7)
    expect(a.restoreLost()).toBe(7)
    expect(a.lostRecords()).toBe(0)
    expect(a.tasks().map((t) => t.id).sort()).toEqual(['t0', 't1', 't2', 't3', 't4'])
    expect(a.node('A')).toEqual(nodeRecord('A'))
    toB()
    expect(b.tasks()).toHaveLength(5)
    expect(b.node('A')).toEqual(nodeRecord('A'))
    // Both hold j1 now, the same record: both keep it (every node that took a job holds its current record).
    expect(a.jobRecords('j1')).toHaveLength(2)
    a.maintain({ now: 20, taskRetentionMs: 1_000, jobRetentionMs: 1_000, isGone: () => false })
    b.maintain({ now: 20, taskRetentionMs: 1_000, jobRetentionMs: 1_000, isGone: () => false })
    toA()
    toB()
    expect(a.jobRecords('j1')).toHaveLength(2)
    expect(b.jobRecords('j1')).toEqual(a.jobRecords('j1'))
    expect(a.job('j1')).toEqual(jobRecord('j1', 'A'))
  })

  it('removals this node made itself are not undone, and a record written again since is not overwritten', () => {
    const { a, b, toA, toB } = pair()
    a.transact(() => { for (let i = 0; i < 3; i++) a.putTask(taskRecord(`t${i}`, 'A')) })
    a.removeTask('t0')
    toB()
    expect(a.lostRecords()).toBe(0)
    // B removes A's space; before A hears of it, A updates t1.
    b.maintain({ now: 10, taskRetentionMs: 1_000, jobRetentionMs: 1_000, isGone: (id) => id === 'A' })
    toA()
    a.putTask(taskRecord('t1', 'A', { state: 'exited', finishedAt: 5 }))
    a.restoreLost()
    expect(a.taskClaims('t1')[0]!.state).toBe('exited')
    expect(a.tasks().map((t) => t.id).sort()).toEqual(['t1', 't2'])
  })
})
