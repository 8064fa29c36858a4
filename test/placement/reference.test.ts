// plan(), place() and explain() against a brute-force reference written here from
// the documented rules alone: score every node with the weighted rendezvous hash,
// sort, recompute every filter from scratch for every node (no masks, no caches,
// no pruning), take the best fit among the first `choices` feasible nodes, and
// plan in the documented canonical order. On small random views the two must
// agree exactly: node, candidates, pending, and why each node was skipped.
// The seed is printed; SEED=<n> replays it.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  explain, idKey, pairHash, place, plan, Pool, taskPrefix, weightedScore, weightFor,
  type Constraint, type NodeView, type SkipCode, type InstanceDemand, type View,
} from '../../placement/index.ts'
import { seedFromEnv } from '../../testnet/sim/rng.ts'
import { canonicalOrder, compare, deepFreeze, NODE_IDS, scenarioArb, taskArb, tasksArb, viewArb, optionsArb } from './helpers.ts'

const runSeed = seedFromEnv(4242)

/** The state the reference places on: nodes by id, and every allocation held on a node of the view. */
interface RefState {
  readonly nodes: readonly NodeView[]
  readonly held: Array<{ readonly task: InstanceDemand, readonly node: string }>
}

interface RefDecision {
  readonly node?: string
  readonly candidates: readonly string[]
  /** Every node in rendezvous order, with why it cannot take the task (undefined: it can). */
  readonly ranking: ReadonlyArray<{ readonly node: string, readonly reason: SkipCode | undefined }>
}

function refState (view: View, released: ReadonlySet<string>): RefState {
  const ids = new Set(view.nodes.map((n) => n.id))
  return {
    nodes: [...view.nodes].sort((a, b) => compare(a.id, b.id)),
    held: view.allocations.filter((a) => ids.has(a.node) && !released.has(a.task.id)),
  }
}

/** A label as the node has it: own entries only. */
function labelOf (n: NodeView, key: string): string | undefined {
  for (const [k, v] of Object.entries(n.labels)) if (k === key) return v
  return undefined
}

function holds (n: NodeView, c: Constraint): boolean {
  const v = labelOf(n, c.label)
  switch (c.op) {
    case 'eq': return v === c.value
    case 'ne': return v !== c.value
    case 'in': return v !== undefined && c.values.includes(v)
    case 'notIn': return v === undefined || !c.values.includes(v)
    case 'exists': return v !== undefined
    case 'absent': return v === undefined
  }
}

function passes (n: NodeView, task: InstanceDemand): boolean {
  return (task.constraints ?? []).every((c) => holds(n, c))
}

function free (s: RefState, n: NodeView): { cpu: number, mem: number } {
  let cpu = n.cpuMillis
  let mem = n.memoryBytes
  for (const a of s.held) if (a.node === n.id) { cpu -= a.task.cpuMillis; mem -= a.task.memoryBytes }
  return { cpu, mem }
}

/** Instances of the job on a node. */
function onNode (s: RefState, job: string, id: string): number {
  return s.held.filter((a) => a.node === id && a.task.job === job).length
}

/**
 * The filters in the documented order (constraints.ts, pool.ts, README): alive,
 * the constraints, the task's `avoid` list (ids the view lacks rule out nothing),
 * the per-node limit, each spread (a node with value v may take one
 * more while count(v) + 1 − min ≤ maxSkew, counting instances on alive nodes over
 * the values of the alive nodes that pass the constraints), then free CPU and memory.
 */
function reasonFor (s: RefState, n: NodeView, task: InstanceDemand): SkipCode | undefined {
  if (!n.live) return 'not-live'
  if (!passes(n, task)) return 'constraint'
  if ((task.avoid ?? []).some((id) => id === n.id)) return 'avoided'
  if (task.perNodeMax !== undefined && onNode(s, task.job, n.id) >= task.perNodeMax) return 'per-node'
  for (const spread of task.spread ?? []) {
    const domain = new Set<string>()
    for (const m of s.nodes) {
      const v = labelOf(m, spread.label)
      if (m.live && passes(m, task) && v !== undefined) domain.add(v)
    }
    const count = (value: string): number => s.nodes
      .filter((m) => m.live && labelOf(m, spread.label) === value)
      .reduce((sum, m) => sum + onNode(s, task.job, m.id), 0)
    const min = domain.size === 0 ? 0 : Math.min(...[...domain].map(count))
    const v = labelOf(n, spread.label)
    if (v === undefined || count(v) + 1 - min > spread.maxSkew) return 'spread'
  }
  const f = free(s, n)
  if (f.cpu < task.cpuMillis || f.mem < task.memoryBytes) return 'resources'
  return undefined
}

/** What is left of the node in its emptier resource once the task is on it, as a fraction of capacity (none of none). */
function leftAfter (s: RefState, n: NodeView, task: InstanceDemand): number {
  const f = free(s, n)
  const cpu = n.cpuMillis > 0 ? (f.cpu - task.cpuMillis) / n.cpuMillis : 0
  const mem = n.memoryBytes > 0 ? (f.mem - task.memoryBytes) / n.memoryBytes : 0
  return Math.max(cpu, mem)
}

function refPlace (s: RefState, task: InstanceDemand, choices: number, backups: number): RefDecision {
  const prefix = taskPrefix(idKey(task.id))
  const scored = s.nodes.map((n) => {
    const key = idKey(n.id)
    const hash = pairHash(prefix, key.lo, key.hi)
    return { n, hash, score: weightedScore(weightFor(n.cpuMillis, n.memoryBytes, task), hash) }
  })
  scored.sort((a, b) => b.score - a.score || b.hash - a.hash || compare(a.n.id, b.n.id))
  const ranking = scored.map(({ n }) => ({ node: n.id, reason: reasonFor(s, n, task) }))
  const feasible = scored.filter((_, k) => ranking[k]!.reason === undefined).map(({ n }) => n)
  if (feasible.length === 0) return { candidates: [], ranking }
  // Best fit among the first `choices`: the least left after, ties to the better ranked.
  let chosen = 0
  for (let k = 1; k < Math.min(choices, feasible.length); k++) {
    if (leftAfter(s, feasible[k]!, task) < leftAfter(s, feasible[chosen]!, task)) chosen = k
  }
  const candidates = feasible.slice(0, choices + backups).filter((_, k) => k !== chosen).slice(0, backups).map((n) => n.id)
  return { node: feasible[chosen]!.id, candidates, ranking }
}

interface RefPlan {
  readonly placements: Array<{ task: string, node: string, candidates: readonly string[] }>
  readonly pending: Array<{ task: string, skipped: Partial<Record<SkipCode, number>> }>
}

function refPlan (view: View, tasks: readonly InstanceDemand[], choices: number, backups: number): RefPlan {
  const s = refState(view, new Set(tasks.map((t) => t.id)))
  const out: RefPlan = { placements: [], pending: [] }
  for (const task of canonicalOrder(view, tasks)) {
    const d = refPlace(s, task, choices, backups)
    if (d.node !== undefined) {
      s.held.push({ task, node: d.node })
      out.placements.push({ task: task.id, node: d.node, candidates: d.candidates })
    } else {
      const skipped: Partial<Record<SkipCode, number>> = {}
      for (const r of d.ranking) skipped[r.reason!] = (skipped[r.reason!] ?? 0) + 1
      out.pending.push({ task: task.id, skipped })
    }
  }
  return out
}

describe(`placement agrees with a brute-force reference (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('plan() places, backs up and leaves pending exactly as the reference does', () => {
    let placed = 0
    let pending = 0
    fc.assert(
      fc.property(scenarioArb(), ({ view, tasks, options }) => {
        deepFreeze(view)
        deepFreeze(tasks)
        const got = plan(view, tasks, options)
        const want = refPlan(view, tasks, options.choices, options.candidatesMax)
        expect(got.placements).toEqual(want.placements)
        expect(got.pending.map((p) => ({ task: p.task, skipped: p.why.skipped }))).toEqual(want.pending)
        for (const p of got.pending) expect(p.why.nodes).toBe(view.nodes.length)
        placed += got.placements.length
        pending += got.pending.length
      }),
      { numRuns: 1500, seed: runSeed },
    )
    // The generators must exercise both outcomes, or the agreement says little.
    expect(placed).toBeGreaterThan(1000)
    expect(pending).toBeGreaterThan(1000)
  })

  it('plan() agrees with the reference on views of up to 30 nodes, with up to 8 choices and 16 backups', () => {
    // More nodes than the best-fit window and the backups together, so that the
    // bounded top-k search and its pruning decide, not a scan of every node.
    const ids = [...NODE_IDS, ...Array.from({ length: 30 }, (_, i) => `node-${i}`)]
    const wide = fc.record({
      view: viewArb({ nodesMax: 30, allocationsMax: 40, ids, size: 'max' }),
      tasks: tasksArb(12, ids),
      options: fc.record({ choices: fc.integer({ min: 1, max: 8 }), candidatesMax: fc.integer({ min: 0, max: 16 }) }),
    })
    let nodes = 0
    fc.assert(
      fc.property(wide, ({ view, tasks, options }) => {
        const got = plan(view, tasks, options)
        const want = refPlan(view, tasks, options.choices, options.candidatesMax)
        expect(got.placements).toEqual(want.placements)
        expect(got.pending.map((p) => ({ task: p.task, skipped: p.why.skipped }))).toEqual(want.pending)
        nodes += view.nodes.length
      }),
      { numRuns: 150, seed: runSeed },
    )
    expect(nodes / 150).toBeGreaterThan(12)
  })

  it('place() on a pool agrees with the reference, one task at a time', () => {
    // How often the task's `avoid` list changed the answer: the fast path's mask must have had a say.
    let avoidDecided = 0
    fc.assert(
      fc.property(viewArb(), taskArb(), optionsArb, (view, task, options) => {
        const got = place(new Pool(view), task, options)
        const state = refState(view, new Set())
        const want = refPlace(state, task, options.choices, options.candidatesMax)
        if (want.node === undefined) {
          expect(got.placed).toBe(false)
        } else {
          expect(got).toEqual({ placed: true, task: task.id, node: want.node, candidates: want.candidates })
        }
        if (task.avoid !== undefined) {
          const heedless = refPlace(state, { ...task, avoid: [] }, options.choices, options.candidatesMax)
          if (heedless.node !== want.node || heedless.candidates.join() !== want.candidates.join()) avoidDecided++
        }
      }),
      { numRuns: 1500, seed: runSeed },
    )
    expect(avoidDecided).toBeGreaterThan(10)
  })

  it('explain() ranks every node as the reference does, with its verdict and reason', () => {
    const seen: Partial<Record<SkipCode, number>> = {}
    fc.assert(
      fc.property(viewArb(), taskArb(), optionsArb, (view, task, options) => {
        deepFreeze(view)
        const got = explain(view, task, options)
        const want = refPlace(refState(view, new Set([task.id])), task, options.choices, options.candidatesMax)
        expect(got.node).toBe(want.node)
        expect(got.candidates).toEqual(want.candidates)
        expect(got.ranking.map((r) => r.node)).toEqual(want.ranking.map((r) => r.node))
        expect(got.ranking.map((r) => r.rank)).toEqual(want.ranking.map((_, k) => k + 1))
        got.ranking.forEach((r, k) => {
          const reason = want.ranking[k]!.reason
          expect(r.reason?.code).toBe(reason)
          if (reason !== undefined) seen[reason] = (seen[reason] ?? 0) + 1
          const verdict = r.node === want.node ? 'chosen' : want.candidates.includes(r.node) ? 'candidate' : reason === undefined ? 'feasible' : 'skipped'
          expect(r.verdict, `verdict of ${r.node}`).toBe(verdict)
        })
        const holders = view.allocations.filter((a) => a.task.id === task.id && view.nodes.some((n) => n.id === a.node)).map((a) => a.node)
        expect(got.holders).toEqual(holders.sort())
      }),
      { numRuns: 1500, seed: runSeed },
    )
    // Every reason, avoidance included, must come up often, or the agreement says little about it.
    for (const code of ['not-live', 'constraint', 'avoided', 'per-node', 'spread', 'resources'] as const) {
      expect(seen[code] ?? 0, `nodes skipped as ${code}`).toBeGreaterThan(100)
    }
  })

  it('plan() of a single task is explain() of it', () => {
    fc.assert(
      fc.property(viewArb(), taskArb(), optionsArb, (view, task, options) => {
        const p = plan(view, [task], options)
        const e = explain(view, task, options)
        if (e.node === undefined) {
          expect(p.placements).toEqual([])
          expect(p.pending).toEqual([{ task: task.id, why: e.pending }])
        } else {
          expect(p.placements).toEqual([{ task: task.id, node: e.node, candidates: e.candidates }])
        }
      }),
      { numRuns: 500, seed: runSeed },
    )
  })
})
