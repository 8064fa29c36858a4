// Gradual rebalancing. Nothing moves on its own: a join moves no running task and
// a death re-places only the dead node's tasks (see `plan` and `displaced`). A
// rebalance, when the operator or a policy asks for one, moves some tasks to the
// nodes their ranking prefers, never more than a set fraction at once.

import { positionOf, rank } from './place.ts'
import { Pool } from './pool.ts'
import { PlacementError, type TaskDemand, type View } from './types.ts'

export interface RebalanceOptions {
  /** At most floor(fractionMax × allocations) moves in one round. */
  readonly fractionMax: number
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
 * Moves that take tasks to better-ranked homes: each task held on exactly one
 * alive node may move to the best-ranked node above its current one that can
 * take it without taking its job's spread past maxSkew (or further past it). Tasks furthest from home move first (ties by task id); each move is
 * applied to the pool before the next is chosen, so no move overcommits a node.
 * Every move lowers its task's rank, so rounds of rebalancing end.
 */
export function rebalance (view: View, options: RebalanceOptions): Move[] {
  if (!(options.fractionMax >= 0 && options.fractionMax <= 1)) throw new PlacementError(`fractionMax must be from 0 to 1, not ${options.fractionMax}`)
  const pool = new Pool(view)
  const movesMax = Math.floor(options.fractionMax * view.allocations.length)
  if (movesMax === 0) return []
  const single = view.allocations.filter((a) => {
    const i = pool.indexOf(a.node)
    return i !== undefined && pool.alive[i] === 1 && pool.holders(a.task.id).length === 1
  })
  const standing = single.map((a) => ({ a, position: positionOf(pool, a.task, pool.indexOf(a.node)!) })).filter((s) => s.position > 0)
    .sort((x, y) => y.position - x.position || (x.a.task.id < y.a.task.id ? -1 : 1))
  const moves: Move[] = []
  for (const { a, position } of standing) {
    if (moves.length === movesMax) break
    const skewBefore = skews(pool, a.task)
    pool.release(a.task.id)
    const spreads = pool.spreadCounts(a.task)
    const ranking = rank(pool, a.task)
    let to = -1
    for (let k = 0; k < position && to < 0; k++) {
      const i = ranking[k]!.i
      if (pool.check(i, a.task, spreads) !== undefined) continue
      pool.allocate({ task: a.task, node: pool.ids[i]! })
      // Leaving a value can lower the spread's minimum, which the check above
      // (made for placing, with the task already gone) cannot see.
      if (skews(pool, a.task).every((skew, j) => skew <= Math.max(a.task.spread![j]!.maxSkew, skewBefore[j]!))) to = k
      else pool.release(a.task.id)
    }
    if (to >= 0) moves.push({ task: a.task.id, from: a.node, to: pool.ids[ranking[to]!.i]!, fromRank: position, toRank: to })
    else pool.allocate(a)
  }
  return moves
}

/** Per spread of the task's job: its largest count on a value minus its smallest. */
function skews (pool: Pool, task: TaskDemand): number[] {
  return pool.spreadCounts(task).map((s) => {
    let max = 0
    for (const count of s.counts.values()) max = Math.max(max, count)
    return max - s.min
  })
}
