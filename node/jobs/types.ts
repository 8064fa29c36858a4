// What the jobs API answers: the shapes the CLI and `murmur/client` read.

import type { JobRecord, ClaimRecord, ClaimState } from '../../crdt/schema.ts'
import type { Explanation, PendingSummary } from '../../placement/index.ts'
import type { TaskUsage } from '../executor/types.ts'
import type { JobSpec, JobType } from './spec.ts'

/**
 * - pending: not all instances run yet (placing, or no room: see each instance's `pending`);
 * - running: every instance runs (a service at its count; a batch still working);
 * - degraded: a service below its count, or with instances in a crash loop;
 * - completed / failed: a batch whose instances all finished, all with code 0 / not;
 * - scheduled: a cron job between runs;
 * - stopping / stopped: `job stop` was given; instances still running / none left.
 */
export type JobStatus = 'pending' | 'running' | 'degraded' | 'completed' | 'failed' | 'scheduled' | 'stopping' | 'stopped'

export interface InstanceView {
  id: string
  /** Holder of the instance now (or the node that finished it), if any. */
  node: string | null
  /** The holder's state; `pending` when no claim holds it. */
  state: ClaimState | 'pending'
  since: number | null
  startedAt: number | null
  finishedAt: number | null
  restarts: number
  exit: ClaimRecord['exit'] | null
  /** Why it does not run, when pending. */
  pending: string | null
  /** For a cron run: its scheduled time. */
  tick: number | null
}

export interface JobView {
  id: string
  name: string
  type: JobType
  desired: JobRecord['desired']
  status: JobStatus
  version: number
  submittedAt: number
  /** The node that took the submission. */
  submittedBy: string
  /** The user who submitted it (null in a cluster without users). */
  submittedByUser: string | null
  namespace: string
  finishedAt: number | null
  spec: JobSpec | null
  /** Instances by state (running, pending, restarting, exited, failed, …). */
  counts: Record<string, number>
  instances: InstanceView[]
  /** For a cron job: the next scheduled time. */
  nextRun: number | null
  /** The exit code a `--wait` for a finished batch returns: 0, or the first instance's failing code (1 if it had none). */
  exitCode: number | null
}

export interface JobSummary {
  id: string
  name: string
  namespace: string
  type: JobType
  desired: JobRecord['desired']
  status: JobStatus
  submittedAt: number
  counts: Record<string, number>
  count: number
}

/** One task instance as `murmur ps` shows it: its holder's claim, and its use when the holder answered. */
export interface TaskView {
  id: string
  job: string
  jobName: string
  node: string
  state: ClaimState
  since: number
  startedAt: number | null
  finishedAt: number | null
  restarts: number
  generation: number
  exit: ClaimRecord['exit'] | null
  /** CPU and memory use from the node that runs it; null if it did not answer or the task is not running. */
  usage: TaskUsage | null
}

export interface TaskDetail extends TaskView {
  /** Every node's claim of this instance. */
  claims: ClaimRecord[]
  /** The executor's attempt id on its node (where the logs are). */
  attempt: string
}

export interface ExplainView {
  task: string
  job: string
  state: ClaimState | 'pending'
  holders: string[]
  /** Why it is pending, if it is. */
  pending: string | null
  /** Whether this node's side of the cluster may take over tasks of unreachable nodes. */
  majority: boolean
  explanation: Explanation
}

export interface PoolStatus {
  self: string
  majority: boolean
  nodes: { total: number, alive: number, suspect: number, dead: number, left: number }
  cpu: { totalMillis: number, claimedMillis: number, usedMillis: number | null }
  memory: { totalBytes: number, claimedBytes: number, usedBytes: number | null }
  tasks: Record<string, number>
  jobs: Record<string, number>
  /** Anything a user should look at, one line each. */
  degraded: string[]
}

export interface HistoryView {
  job: JobView
  /** Every claim of every instance of the job, oldest first. */
  tasks: ClaimRecord[]
}

export type { PendingSummary }
