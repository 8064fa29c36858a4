// What a restarted node keeps of the tasks its previous life left running: the
// ones the cluster state still assigns to it. Everything else is stopped, so
// that nothing runs that the cluster does not know about.

import type { ClusterState } from '../crdt/state.ts'
import type { FoundTask } from './executor/types.ts'

/** A claim in one of these states says "this node runs it" (or is about to). */
const LIVE = new Set(['claimed', 'starting', 'running'])

export function keepOnRestart (state: ClusterState, self: string, task: FoundTask): 'adopt' | 'stop' {
  const mine = state.taskClaims(task.id).some((claim) => claim.node === self && claim.job === task.job && LIVE.has(claim.state))
  if (!mine) return 'stop'
  // A job stopped while the node was away must not come back through its old processes.
  const job = state.job(task.job)
  return job !== undefined && job.desired === 'running' ? 'adopt' : 'stop'
}
