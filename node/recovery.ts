// What a restarted node keeps of the tasks its previous life left running: the
// ones the cluster state still assigns to it. Everything else is stopped, so
// that nothing runs that the cluster does not know about.

import type { ClusterState } from '../crdt/state.ts'
import type { FoundAttempt } from './executor/types.ts'
import { parseAttempt } from './jobs/instances.ts'
import { isActiveState } from './reconcile/decide.ts'

/** The executor's task id is an attempt of an instance (jobs/instances.ts): only the claim's current attempt is kept. */
export function keepOnRestart (state: ClusterState, self: string, task: FoundAttempt): 'adopt' | 'stop' {
  const { instance, restarts } = parseAttempt(task.id)
  const mine = state.taskClaims(instance).some((claim) => claim.node === self && claim.job === task.job && isActiveState(claim.state) && claim.restarts === restarts)
  if (!mine) return 'stop'
  // A job stopped while the node was away must not come back through its old processes.
  const job = state.job(task.job)
  return job !== undefined && job.desired === 'running' ? 'adopt' : 'stop'
}
