// Builders and fast-check arbitraries for placement's tests: small random views
// (few nodes, labels from a small alphabet that includes Object.prototype's own
// names, capacities including 0, allocations on dead, missing and overcommitted
// nodes) and tasks with random constraints, spreads, per-node limits and nodes
// to avoid (some in the view, some not), so that every filter and every tie is
// hit often. Demands and capacities are whole millicores and bytes, as the
// units are: sums of them are exact in doubles.

import fc from 'fast-check'
import type { Allocation, Constraint, NodeView, Plan, PlaceOptions, Spread, InstanceDemand, View } from '../../placement/index.ts'
import type { Rng } from '../../testnet/sim/rng.ts'

export const MiB = 2 ** 20
export const GiB = 2 ** 30

/** Ids whose order by code unit differs from a human's: `N5` < `a-…` < `n10` < `n9` < `node-ä`. */
export const NODE_IDS = ['n0', 'n1', 'n2', 'n3', 'n9', 'n10', 'N5', 'b', 'a-long-node-id', 'node-ä'] as const
/** A node id that no view holds: allocations on it are orphans. */
export const GHOST = 'ghost'
/** `constructor`, `__proto__` and `toString` are on every object's prototype: a label check must not see them. */
export const LABEL_KEYS = ['zone', 'rack', 'gpu', 'constructor', '__proto__', 'toString'] as const
export const LABEL_VALUES = ['a', 'b', 'c'] as const
export const JOBS = ['api', 'batch', 'db'] as const
/** Plans and allocations draw from the same ids, so that plans re-place allocated tasks. */
export const TASK_IDS = Array.from({ length: 12 }, (_, i) => `t${i}`)

export const NODE_CPU = [0, 1000, 2000, 4000, 8000] as const
export const NODE_MEMORY = [0, GiB, 2 * GiB, 4 * GiB, 8 * GiB] as const
export const TASK_CPU = [0, 100, 500, 1000, 3000] as const
export const TASK_MEMORY = [0, 256 * MiB, GiB, 3 * GiB] as const

const keyArb = fc.constantFrom(...LABEL_KEYS)
/** `z` is on no node. */
const valueArb = fc.constantFrom(...LABEL_VALUES, 'z')

/** Built with Object.fromEntries, so `__proto__` is an own label like any other. */
export const labelsArb: fc.Arbitrary<Record<string, string>> = fc
  .uniqueArray(fc.tuple(keyArb, fc.constantFrom(...LABEL_VALUES)), { selector: ([key]) => key, maxLength: 3 })
  .map((entries) => Object.fromEntries(entries))

export const constraintArb: fc.Arbitrary<Constraint> = fc.oneof(
  fc.record({ label: keyArb, op: fc.constant('eq' as const), value: valueArb }),
  fc.record({ label: keyArb, op: fc.constant('ne' as const), value: valueArb }),
  fc.record({ label: keyArb, op: fc.constant('in' as const), values: fc.uniqueArray(valueArb, { minLength: 1, maxLength: 3 }) }),
  fc.record({ label: keyArb, op: fc.constant('notIn' as const), values: fc.uniqueArray(valueArb, { minLength: 1, maxLength: 3 }) }),
  fc.record({ label: keyArb, op: fc.constant('exists' as const) }),
  fc.record({ label: keyArb, op: fc.constant('absent' as const) }),
)

export const spreadArb: fc.Arbitrary<Spread> = fc.record({ label: keyArb, maxSkew: fc.integer({ min: 1, max: 2 }) })

/**
 * Nodes a task avoids: drawn from the ids views are drawn from (so some are in
 * the view and some are not) and GHOST; sometimes one twice, sometimes none.
 */
export function avoidArb (nodeIds: readonly string[] = NODE_IDS): fc.Arbitrary<string[]> {
  return fc.array(fc.constantFrom(...nodeIds, GHOST), { maxLength: 3 })
}

/** A task with every optional field sometimes there; `nodeIds` are what `avoid` names. */
export function taskArb (ids: readonly string[] = TASK_IDS, nodeIds: readonly string[] = NODE_IDS): fc.Arbitrary<InstanceDemand> {
  return fc.record({
    id: fc.constantFrom(...ids),
    job: fc.constantFrom(...JOBS),
    cpuMillis: fc.constantFrom(...TASK_CPU),
    memoryBytes: fc.constantFrom(...TASK_MEMORY),
    constraints: fc.array(constraintArb, { maxLength: 2 }),
    perNodeMax: fc.integer({ min: 1, max: 2 }),
    spread: fc.array(spreadArb, { minLength: 1, maxLength: 2 }),
    avoid: avoidArb(nodeIds),
  }, { requiredKeys: ['id', 'job', 'cpuMillis', 'memoryBytes'] })
}

/** Tasks to plan: distinct ids, as plan() requires. */
export function tasksArb (maxLength = 10, nodeIds: readonly string[] = NODE_IDS): fc.Arbitrary<InstanceDemand[]> {
  return fc.uniqueArray(taskArb(TASK_IDS, nodeIds), { selector: (t) => t.id, maxLength })
}

const nodeFields = {
  live: fc.integer({ min: 0, max: 4 }).map((x) => x !== 0),
  cpuMillis: fc.constantFrom(...NODE_CPU),
  memoryBytes: fc.constantFrom(...NODE_MEMORY),
  labels: labelsArb,
}

export const nodeArb: fc.Arbitrary<NodeView> = fc.record({ ...nodeFields, id: fc.constantFrom(...NODE_IDS) })

export interface ViewShape {
  readonly nodesMax?: number
  readonly allocationsMax?: number
  readonly ids?: readonly string[]
  /** fast-check's size: its default keeps arrays near 10 elements whatever their maxLength. */
  readonly size?: fc.SizeForArbitrary
}

/**
 * 1–8 nodes (by default) with distinct ids, and up to `allocationsMax`
 * allocations of random tasks on them (dead ones included), sometimes on a node
 * the view lacks, often more than a node can hold.
 */
export function viewArb ({ nodesMax = 8, allocationsMax = 10, ids = NODE_IDS, size }: ViewShape = {}): fc.Arbitrary<View> {
  const nodeOf = fc.record({ ...nodeFields, id: fc.constantFrom(...ids) })
  return fc.uniqueArray(nodeOf, { selector: (n) => n.id, minLength: 1, maxLength: nodesMax, ...(size ? { size } : {}) }).chain((nodes) => fc.record({
    nodes: fc.constant(nodes),
    allocations: fc.array(
      fc.record({ task: taskArb(TASK_IDS, ids), node: fc.constantFrom(...nodes.map((n) => n.id), GHOST) }),
      { maxLength: allocationsMax, ...(size ? { size } : {}) },
    ),
  }))
}

export const optionsArb: fc.Arbitrary<Required<PlaceOptions>> = fc.record({
  choices: fc.integer({ min: 1, max: 3 }),
  candidatesMax: fc.integer({ min: 0, max: 3 }),
})

export interface Scenario {
  readonly view: View
  readonly tasks: readonly InstanceDemand[]
  readonly options: Required<PlaceOptions>
}

export function scenarioArb (tasksMax = 10, shape: ViewShape = {}): fc.Arbitrary<Scenario> {
  return fc.record({ view: viewArb(shape), tasks: tasksArb(tasksMax), options: optionsArb })
}

/**
 * Nodes with capacities in the given proportions and so large that no test
 * workload fills them: weightFor() is then the weight times a constant for any
 * task of `smallTask`'s shape, and plan() with choices 1 puts every task on its
 * first choice.
 */
export function ampleNodes (weights: readonly number[], ids: readonly string[] = weights.map((_, i) => `node-${i}`)): NodeView[] {
  return weights.map((w, i) => ({ id: ids[i]!, live: true, cpuMillis: w * 1e12, memoryBytes: w * 2 ** 46, labels: {} }))
}

export function smallTask (id: string, extra: Partial<InstanceDemand> = {}): InstanceDemand {
  return { id, job: id.split('/')[0]!, cpuMillis: 100, memoryBytes: 128 * MiB, ...extra }
}

export function node (id: string, cpuMillis: number, memoryBytes: number, extra: Partial<NodeView> = {}): NodeView {
  return { id, live: true, cpuMillis, memoryBytes, labels: {}, ...extra }
}

/** The allocations a plan adds, with the tasks' demands. */
export function allocationsOf (p: Plan, tasks: readonly InstanceDemand[]): Allocation[] {
  const byId = new Map(tasks.map((t) => [t.id, t]))
  return p.placements.map((x) => ({ task: byId.get(x.task)!, node: x.node }))
}

/** The tasks in the order plan() documents: largest dominant share of the alive capacity first, then job, then id. */
export function canonicalOrder (view: View, tasks: readonly InstanceDemand[]): InstanceDemand[] {
  let cpu = 0
  let mem = 0
  for (const n of view.nodes) if (n.live) { cpu += n.cpuMillis; mem += n.memoryBytes }
  const share = (t: InstanceDemand): number => Math.max(cpu > 0 ? t.cpuMillis / cpu : 0, mem > 0 ? t.memoryBytes / mem : 0)
  return [...tasks].sort((a, b) => share(b) - share(a) || compare(a.job, b.job) || compare(a.id, b.id))
}

export function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export function shuffle<T> (items: readonly T[], rng: Rng): T[] {
  return rng.shuffled(items)
}

/** The same view in another order: nodes, each node's label keys, and allocations. */
export function shuffleView (view: View, rng: Rng): View {
  return {
    nodes: shuffle(view.nodes, rng).map((n) => ({ ...n, labels: Object.fromEntries(shuffle(Object.entries(n.labels), rng)) })),
    allocations: shuffle(view.allocations, rng),
  }
}

/** Frozen all the way down: a placement function that writes to its input throws in strict mode. */
export function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<string | symbol, unknown>)[key])
  }
  return value
}

/**
 * A bound on the count of a binomial(n, p) outside of which a correct
 * implementation lands with probability at most `delta`: the Chernoff bound
 * P(X ≥ nq) ≤ exp(−n·KL(q‖p)) for q > p (and the same below p), each side
 * given delta / 2, solved for q by bisection. Rigorous for every n, unlike a
 * normal approximation, and within a few percent of it at the sizes used here.
 */
export function binomialBounds (n: number, p: number, delta: number): { lo: number, hi: number } {
  const target = Math.log(2 / delta) / n
  const kl = (q: number): number => (q === 0 ? 0 : q * Math.log(q / p)) + (q === 1 ? 0 : (1 - q) * Math.log((1 - q) / (1 - p)))
  const solve = (from: number, to: number): number => {
    // KL(q‖p) grows from 0 at q = p towards `to`; find where it reaches the target.
    let a = from
    let b = to
    if (kl(to) <= target) return to
    for (let k = 0; k < 100; k++) {
      const mid = (a + b) / 2
      if (kl(mid) < target) a = mid
      else b = mid
    }
    return b
  }
  return { lo: Math.ceil(n * solve(p, 0)), hi: Math.floor(n * solve(p, 1)) }
}
