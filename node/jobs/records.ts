// The job records a user's request writes: a new job, a stop, a new count. Pure,
// so the API (service.ts) and the simulator (testnet/sim) write the very same.

import type { JobRecord } from '../../crdt/schema.ts'
import { JOB_LIMITS, JobSpecError, type NormalJob, readSpec } from './spec.ts'

/** A new job, submitted by node `by` at `now`; `suffix` makes its id unique (random in a node, seeded in the simulator). */
export function newJobRecord (job: NormalJob, by: string, now: number, suffix: string): JobRecord {
  return {
    id: `${job.name}-${suffix}`,
    name: job.name,
    type: job.type,
    spec: job.spec as unknown as JobRecord['spec'],
    desired: 'running',
    version: 1,
    submittedBy: by,
    submittedAt: now,
    updatedAt: now,
  }
}

/** The job, stopped: a higher version that every node obeys, wherever it was meanwhile. */
export function stoppedJob (record: JobRecord, now: number): JobRecord {
  return { ...record, desired: 'stopped', version: record.version + 1, updatedAt: now, finishedAt: record.finishedAt ?? now }
}

/**
 * The service with `count` instances: a higher version. Instances past the new
 * count are stopped wherever they run; new ones are placed like any other.
 */
export function scaledJob (record: JobRecord, count: number, now: number): JobRecord {
  if (record.type !== 'service') throw new JobSpecError(`only a service can be scaled; ${record.id} is a ${record.type} job`)
  if (record.desired !== 'running') throw new JobSpecError(`${record.id} is stopped; submit it again instead`)
  if (!Number.isSafeInteger(count) || count < 1 || count > JOB_LIMITS.countMax) throw new JobSpecError(`count must be a whole number from 1 to ${JOB_LIMITS.countMax}, got ${count}; stop the job to run none`)
  if (readSpec(record.spec) === null) throw new JobSpecError(`the stored spec of ${record.id} cannot be read; submit the job again`)
  const spec = { ...record.spec, count }
  if (readSpec(spec) === null) throw new JobSpecError(`a count of ${count} does not fit the rest of the spec of ${record.id}`)
  return { ...record, spec, version: record.version + 1, updatedAt: now }
}
