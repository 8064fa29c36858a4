// Gradual rebalancing. Nothing moves on its own: a join moves no running task and
// a death re-places only the dead node's tasks (see `plan` and `displaced`). A
// rebalance, when the operator or a policy asks for one, moves some tasks to the
// nodes their ranking prefers, never more than a set fraction at once.

import { positionOf, rank } from './place.ts'
import { Pool } from './pool.ts'
import { PlacementError, type View } from './types.ts'

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
 * take it. Tasks furthest from home move first (ties by task id); each move is
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
    pool.release(a.task.id)
    const spreads = pool.spreadCounts(a.task)
    const ranking = rank(pool, a.task)
    let to = -1
    for (let k = 0; k < position; k++) {
      if (pool.check(ranking[k]!.i, a.task, spreads) === undefined) { to = k; break }
    }
    const target = to >= 0 ? pool.ids[ranking[to]!.i]! : a.node
    pool.allocate({ task: a.task, node: target })
    if (to >= 0) moves.push({ task: a.task.id, from: a.node, to: target, fromRank: position, toRank: to })
  }
  return moves
}
