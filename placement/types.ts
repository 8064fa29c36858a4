// The inputs of placement: a view of the nodes and of what is claimed on them.
// node/ builds views from the shared state and membership; placement never asks
// for anything else.

import type { Constraint, Spread } from './constraints.ts'

/** One node as a view sees it. */
export interface NodeView {
  readonly id: string
  /** Live in the viewer's membership: alive or suspect, neither dead nor left (its claims hold). */
  readonly live: boolean
  /** Capacity offered to tasks. */
  readonly cpuMillis: number
  readonly memoryBytes: number
  readonly labels: Readonly<Record<string, string>>
}

/** What one task instance asks for, and of whom. */
export interface InstanceDemand {
  /** The instance id: what rendezvous hashing ranks nodes for. */
  readonly id: string
  readonly job: string
  readonly cpuMillis: number
  readonly memoryBytes: number
  readonly constraints?: readonly Constraint[]
  /** At most this many instances of the job on one node (1: every instance on its own node). */
  readonly perNodeMax?: number
  readonly spread?: readonly Spread[]
  /** Nodes this instance must not go to (say, where it just failed), each skipped with the reason `avoided`. */
  readonly avoid?: readonly string[]
}

/** A task instance claimed on a node: it holds its demand there. */
export interface Allocation {
  readonly task: InstanceDemand
  readonly node: string
}

export interface View {
  readonly nodes: readonly NodeView[]
  readonly allocations: readonly Allocation[]
}

/** A caller broke placement's contract (duplicate node ids, negative capacity): a bug, not a state of the cluster. */
export class PlacementError extends Error {
  override name = 'PlacementError'
}
