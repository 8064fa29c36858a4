// Why a task goes where it goes, or why it cannot go anywhere: every node of the
// view in rendezvous order with its verdict. `murmur explain <task>` prints this.

import { PLACEMENT_HASH_VERSION } from './hash.ts'
import { place, rank, type PendingSummary, type PlaceOptions } from './place.ts'
import { Pool } from './pool.ts'
import { reasonText, type SkipReason } from './reasons.ts'
import type { InstanceDemand, View } from './types.ts'

export type Verdict = 'chosen' | 'candidate' | 'feasible' | 'skipped'

export interface NodeVerdict {
  readonly node: string
  /** 1 for the node the task prefers most, whatever its feasibility. */
  readonly rank: number
  readonly score: number
  readonly weight: number
  readonly verdict: Verdict
  readonly reason?: SkipReason
  /** The verdict in words. */
  readonly text: string
}

export interface Explanation {
  readonly task: string
  readonly hashVersion: number
  /** Where placement puts it now; undefined when it is pending. */
  readonly node?: string
  readonly candidates: readonly string[]
  readonly pending?: PendingSummary
  /** Where the view has it allocated now (before it was set aside to explain). */
  readonly holders: readonly string[]
  readonly ranking: readonly NodeVerdict[]
}

/**
 * Explain the placement of one task in a view. The task's own allocations are
 * set aside first, so that for a running task this says where it would go now
 * and `holders` says where it is.
 */
export function explain (view: View, task: InstanceDemand, options: PlaceOptions = {}): Explanation {
  const pool = new Pool(view)
  const holders = pool.release(task.id).sort()
  const decision = place(pool, task, options)
  const candidates = decision.placed ? decision.candidates : []
  const spreads = pool.spreadCounts(task)
  const ranking = rank(pool, task).map((r, k): NodeVerdict => {
    const node = pool.ids[r.i]!
    const reason = pool.check(r.i, task, spreads)
    const verdict: Verdict = decision.placed && decision.node === node
      ? 'chosen'
      : candidates.includes(node) ? 'candidate' : reason === undefined ? 'feasible' : 'skipped'
    return {
      node,
      rank: k + 1,
      score: r.score,
      weight: r.weight,
      verdict,
      ...(reason !== undefined ? { reason } : {}),
      text: verdictText(verdict, reason, candidates.indexOf(node)),
    }
  })
  return {
    task: task.id,
    hashVersion: PLACEMENT_HASH_VERSION,
    ...(decision.placed ? { node: decision.node } : { pending: decision.why }),
    candidates,
    holders,
    ranking,
  }
}

function verdictText (verdict: Verdict, reason: SkipReason | undefined, backup: number): string {
  switch (verdict) {
    case 'chosen': return 'runs it: the best fit among the first feasible nodes'
    case 'candidate': return `backup ${backup + 1}: claims it once the nodes before it cannot or will not run it`
    case 'feasible': return 'could run it'
    case 'skipped': return reasonText(reason!)
  }
}
