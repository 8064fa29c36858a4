// Gradual rebalancing. Nothing moves on its own: a join moves no running task and
// a death re-places only the dead node's tasks (see `plan` and `displaced`). A
// rebalance, when the operator or a policy asks for one, moves some tasks to the
// nodes their ranking prefers, never more than a set fraction at once.

import { PLACE_DEFAULTS, place, positionOf } from './place.ts'
import { Pool } from './pool.ts'
import { PlacementError, type InstanceDemand, type View } from './types.ts'

export interface RebalanceOptions {
  /** At most floor(fractionMax × allocations) moves in one round. */
  readonly fractionMax: number
  /** As for `place`: a task moves where placing it now would put it. */
  readonly choices?: number
}

export interface Move {
  readonly task: string
  readonly from: string
  readonly to: string
  /** How many nodes the task's ranking puts above its current home, and above its new one. */
  readonly fromRank: number
  readonly toRank: number
}

/**
 * Moves that take tasks to better homes: a task held on exactly one live node
 * moves where `place` would put it now (same `choices`), if that node ranks
 * above its current home and the move keeps its job's spreads within maxSkew
 * (or no further past it). Tasks furthest from home go first (ties by task id);
 * each move is applied to the pool before the next is chosen, so no move
 * overcommits a node. Every move lowers its task's rank, so rounds end.
 */
export function rebalance (view: View, options: RebalanceOptions): Move[] {
  if (!(options.fractionMax >= 0 && options.fractionMax <= 1)) throw new PlacementError(`fractionMax must be from 0 to 1, not ${options.fractionMax}`)
  const choices = options.choices ?? PLACE_DEFAULTS.choices
  const pool = new Pool(view)
  const movesMax = Math.floor(options.fractionMax * view.allocations.length)
  if (movesMax === 0) return []
  const single = view.allocations.filter((a) => {
    const i = pool.indexOf(a.node)
    return i !== undefined && pool.live[i] === 1 && pool.holders(a.task.id).length === 1
  })
  const standing = single.map((a) => ({ a, position: positionOf(pool, a.task, pool.indexOf(a.node)!) }))
    .filter((s) => s.position > 0)
    .sort((x, y) => y.position - x.position || (x.a.task.id < y.a.task.id ? -1 : 1))
  const moves: Move[] = []
  for (const { a, position } of standing) {
    if (moves.length === movesMax) break
    const skewBefore = skews(pool, a.task)
    pool.release(a.task.id)
    const decision = place(pool, a.task, { choices, candidatesMax: 0 })
    const to = decision.placed && decision.node !== a.node ? positionOf(pool, a.task, pool.indexOf(decision.node)!) : position
    if (decision.placed && to < position) {
      pool.allocate({ task: a.task, node: decision.node })
      // Leaving a value can lower the spread's minimum, which the placing check
      // (made with the task already released) cannot see.
      if (skews(pool, a.task).every((skew, j) => skew <= Math.max(a.task.spread![j]!.maxSkew, skewBefore[j]!))) {
        moves.push({ task: a.task.id, from: a.node, to: decision.node, fromRank: position, toRank: to })
        continue
      }
      pool.release(a.task.id)
    }
    pool.allocate(a)
  }
  return moves
}

/** Per spread of the task's job: its largest count on a value minus its smallest. */
function skews (pool: Pool, task: InstanceDemand): number[] {
  return pool.spreadCounts(task).map((s) => {
    let max = 0
    for (const count of s.counts.values()) max = Math.max(max, count)
    return max - s.min
  })
}
