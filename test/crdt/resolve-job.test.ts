// Which record of a job wins when several nodes wrote one: found by the
// simulator (a scale and a stop written on two sides of a partition, at the same
// version, brought the stopped job back after the heal).

import { describe, expect, it } from 'vitest'
import { type JobRecord, resolveJob } from '../../crdt/schema.ts'

const base: JobRecord = { id: 'web-1', name: 'web', type: 'service', spec: { count: 2 }, desired: 'running', version: 1, submittedBy: 'a', submittedAt: 1, updatedAt: 1 }

describe('resolveJob', () => {
  it('takes the highest version, then the greater writer', () => {
    const v2 = { ...base, version: 2, spec: { count: 3 } }
    expect(resolveJob([{ writer: 'a', record: base }, { writer: 'b', record: v2 }])).toBe(v2)
    const other = { ...base, version: 2, spec: { count: 4 } }
    expect(resolveJob([{ writer: 'z', record: other }, { writer: 'b', record: v2 }])).toBe(other)
    expect(resolveJob([])).toBeUndefined()
  })

  it('keeps a stop over a concurrent scale at the same or a higher version, in any order', () => {
    const stopped = { ...base, version: 2, desired: 'stopped' as const, finishedAt: 5 }
    const scaled = { ...base, version: 2, spec: { count: 3 } }
    const scaledAgain = { ...base, version: 3, spec: { count: 1 } }
    for (const records of [
      [{ writer: 'a', record: stopped }, { writer: 'z', record: scaled }],
      [{ writer: 'z', record: scaled }, { writer: 'a', record: stopped }],
      [{ writer: 'z', record: scaledAgain }, { writer: 'a', record: stopped }, { writer: 'm', record: scaled }],
    ]) expect(resolveJob(records)).toBe(stopped)
  })
})
