// Which tasks of its previous life a restarted node keeps: the cluster state's word.

import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { ClusterState } from '../../crdt/state.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import type { FoundAttempt } from '../../node/executor/types.ts'
import { keepOnRestart } from '../../node/recovery.ts'
import { jobRecord, taskRecord } from '../crdt/helpers.ts'

const SELF = 'node-self'
const OTHER = 'node-other'

function found (id: string, job = 'j1'): FoundAttempt {
  return { id, job, spec: { id, job, command: 'sleep', args: ['60'], env: {}, cpuMillis: 100, memoryBytes: 64 * 1024 ** 2 }, startedAt: 1, alive: true }
}

/** Two writers on one document: this node's own claims, and another node's records. */
function states (): { mine: ClusterState, other: ClusterState } {
  const doc = new Y.Doc()
  return { mine: new ClusterState({ self: SELF, life: 'a', doc, keys: derivedKeys(SELF) }), other: new ClusterState({ self: OTHER, life: 'b', doc, keys: derivedKeys(OTHER) }) }
}

describe('keepOnRestart', () => {
  it('adopts a task this node claims, live, of a job that should run', () => {
    const { mine } = states()
    mine.transact(() => {
      mine.putJob(jobRecord('j1', SELF))
      mine.putTask(taskRecord('t1', SELF, { state: 'running' }))
      mine.putTask(taskRecord('t2', SELF, { state: 'claimed' }))
      mine.putTask(taskRecord('t3', SELF, { state: 'starting' }))
    })
    for (const id of ['t1', 't2', 't3']) expect(keepOnRestart(mine, SELF, found(id))).toBe('adopt')
  })

  it('stops what the state does not assign here', () => {
    const { mine, other } = states()
    other.transact(() => {
      other.putJob(jobRecord('j1', OTHER))
      other.putTask(taskRecord('theirs', OTHER))
    })
    mine.transact(() => {
      for (const state of ['exited', 'failed', 'killed', 'lost'] as const) mine.putTask(taskRecord(`over-${state}`, SELF, { state }))
    })
    // Unknown to the cluster, claimed by another node only, or over here.
    expect(keepOnRestart(mine, SELF, found('unknown'))).toBe('stop')
    expect(keepOnRestart(mine, SELF, found('theirs'))).toBe('stop')
    for (const state of ['exited', 'failed', 'killed', 'lost']) expect(keepOnRestart(mine, SELF, found(`over-${state}`))).toBe('stop')
  })

  it('stops a task whose job was stopped, or is gone, or is another job than the claim says', () => {
    const { mine, other } = states()
    other.putJob(jobRecord('j1', OTHER, { desired: 'stopped', version: 2 }))
    mine.transact(() => {
      mine.putJob(jobRecord('j1', SELF, { version: 1 }))
      mine.putTask(taskRecord('t1', SELF))
      mine.putTask(taskRecord('t2', SELF, { job: 'gone' }))
    })
    expect(keepOnRestart(mine, SELF, found('t1'))).toBe('stop')
    expect(keepOnRestart(mine, SELF, found('t2', 'gone'))).toBe('stop')
    expect(keepOnRestart(mine, SELF, found('t1', 'j-other'))).toBe('stop')
  })
})
