// `murmur state` in words: a damaged state database found at start is shown,
// not only in --json.

import { describe, expect, it } from 'vitest'
import { renderState } from '../../cli/state.ts'
import type { StateInfo } from '../../node/state.ts'

function info (damage: StateInfo['store']['damage']): StateInfo {
  return {
    life: 'life-1',
    clientId: 1,
    bytes: 1000,
    records: { nodes: 1, jobs: 0, tasks: 0, spaces: 1 },
    stateVector: { clients: 1, clock: 10, top: [] },
    digest: 'ab'.repeat(32),
    store: { updates: 3, logBytes: 300, snapshotBytes: 0, compactions: 0, lastCompactionMs: null, appends: 3, damage },
    stats: {
      gossip: { published: 0, publishedBytes: 0, received: 0, applied: 0, skippedLarge: 0, dropped: {} },
      sync: { started: 0, served: 0, failed: 0, appliedBytes: 0, rejected: {} },
      invalidRecords: 0,
      maintenance: { runs: 0, removedTasks: 0, removedJobs: 0, removedNodes: 0, rotatedSpaces: 0, lastMs: null },
    },
    syncs: [],
  }
}

describe('murmur state', () => {
  it('says nothing of damage when there is none', () => {
    expect(renderState(info(null), Date.now())).not.toMatch(/damage/)
  })

  it('names what was found damaged at start', () => {
    const text = renderState(info({ droppedBytes: 6531, missingUpdates: 24, corruptUpdates: 1, corruptSnapshot: false, reports: [] }), Date.now())
    const line = text.split('\n').find((l) => l.startsWith('damage'))
    expect(line).toMatch(/dropped by LevelDB/)
    expect(line).toMatch(/24 updates missing/)
    expect(line).toMatch(/1 updates failed their checksum/)
  })
})
