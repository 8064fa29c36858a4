// Properties of placement as a whole: the same plan whatever order the view and
// the tasks come in; no node overcommitted, and a pending task really fits
// nowhere; tasks spread in proportion to the capacity that binds for them; a
// join or a death moves only what it must; reasons that name what is short;
// and the contract's edges. The reference implementation is in reference.test.ts.
// The seed is printed; SEED=<n> replays it.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  bytesText, constraintText, cpuText, needAndFree, displaced, explain, place, plan, Pool, PlacementError, rank, reasonText, rebalance, satisfies, weightFor,
  type Allocation, type Constraint, type NodeView, type InstanceDemand, type View,
} from '../../placement/index.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'
import {
  allocationsOf, ampleNodes, binomialBounds, canonicalOrder, constraintArb, deepFreeze, GiB, labelsArb, MiB, node, NODE_IDS,
  scenarioArb, shuffle, shuffleView, smallTask, taskArb, viewArb, optionsArb,
} from './helpers.ts'

const runSeed = seedFromEnv(7007)
const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 })

/** What a node holds in a list of allocations. */
function used (allocations: readonly Allocation[], id: string): { cpu: number, mem: number } {
  let cpu = 0
  let mem = 0
  for (const a of allocations) if (a.node === id) { cpu += a.task.cpuMillis; mem += a.task.memoryBytes }
  return { cpu, mem }
}

/** The node a task would take first in a view, with nothing allocated (choices 1, ample capacity): its ranking's first feasible node. */
function firstChoices (view: View, tasks: readonly InstanceDemand[]): Map<string, string | undefined> {
  const p = plan(view, tasks, { choices: 1 })
  const out = new Map<string, string | undefined>(tasks.map((t) => [t.id, undefined]))
  for (const x of p.placements) out.set(x.task, x.node)
  return out
}

describe(`placement properties (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  describe('determinism', () => {
    it('plan() and explain() give the same answers for any order of nodes, labels, allocations and tasks', () => {
      fc.assert(
        fc.property(scenarioArb(), seedArb, ({ view, tasks, options }, shuffleSeed) => {
          const rng = new Rng(shuffleSeed)
          const want = plan(view, tasks, options)
          const explained = tasks.map((t) => explain(view, t, options))
          for (let k = 0; k < 3; k++) {
            const other = shuffleView(view, rng)
            expect(plan(other, shuffle(tasks, rng), options)).toEqual(want)
            tasks.forEach((t, j) => expect(explain(other, t, options)).toEqual(explained[j]))
          }
        }),
        { numRuns: 400, seed: runSeed },
      )
    })

    it('fractional millicores or bytes are a PlacementError, so that free resources never depend on the order of allocations', () => {
      // In doubles 1 − 0.1 − 0.9 is 0 but 1 − 0.9 − 0.1 is −2.8e-17: with
      // fractions, an exactly full node would be full or overcommitted depending
      // on the order the view lists its allocations in. Whole numbers sum exactly.
      const n1 = node('n1', 1, GiB)
      const a = { task: smallTask('a/0', { cpuMillis: 0.1, memoryBytes: 0 }), node: 'n1' }
      const light = smallTask('c/0', { cpuMillis: 0, memoryBytes: MiB })
      expect(() => plan({ nodes: [n1], allocations: [a] }, [light])).toThrow(PlacementError)
      expect(() => plan({ nodes: [n1], allocations: [] }, [smallTask('d/0', { cpuMillis: 1, memoryBytes: 0.5 })])).toThrow(PlacementError)
      expect(() => plan({ nodes: [node('n2', 1.5, GiB)], allocations: [] }, [light])).toThrow(PlacementError)
    })

    it('plan() reads its input and writes nothing to it', () => {
      fc.assert(
        fc.property(scenarioArb(), ({ view, tasks, options }) => {
          const copy = structuredClone({ view, tasks })
          deepFreeze(view)
          deepFreeze(tasks)
          plan(view, tasks, options)
          for (const t of tasks) explain(view, t, options)
          rebalance(view, { fractionMax: 1 })
          expect({ view, tasks }).toEqual(copy)
        }),
        { numRuns: 200, seed: runSeed },
      )
    })
  })

  describe('capacity', () => {
    it('plan() overcommits no node, and adds nothing to a node that was already overcommitted', () => {
      let overcommitted = 0
      fc.assert(
        fc.property(scenarioArb(), ({ view, tasks, options }) => {
          const p = plan(view, tasks, options)
          expect([...p.placements.map((x) => x.task), ...p.pending.map((x) => x.task)].sort()).toEqual(tasks.map((t) => t.id).sort())
          // plan() releases the tasks it is given first: what stays is the rest.
          const ids = new Set(tasks.map((t) => t.id))
          const existing = view.allocations.filter((a) => !ids.has(a.task.id))
          const added = allocationsOf(p, tasks)
          for (const n of view.nodes) {
            const before = used(existing, n.id)
            const after = used([...existing, ...added], n.id)
            if (before.cpu > n.cpuMillis || before.mem > n.memoryBytes) {
              overcommitted++
              expect(added.filter((a) => a.node === n.id), `added to overcommitted ${n.id}`).toEqual([])
            } else {
              expect(after.cpu, `CPU of ${n.id}`).toBeLessThanOrEqual(n.cpuMillis)
              expect(after.mem, `memory of ${n.id}`).toBeLessThanOrEqual(n.memoryBytes)
            }
          }
          for (const a of added) {
            const n = view.nodes.find((m) => m.id === a.node)!
            expect(n.live).toBe(true)
            for (const c of a.task.constraints ?? []) expect(satisfies(n.labels, c), `${a.task.id} on ${n.id}: ${constraintText(c)}`).toBe(true)
          }
        }),
        { numRuns: 1000, seed: runSeed },
      )
      expect(overcommitted).toBeGreaterThan(100)
    })

    it('a pending task fits on no node as the view stood when its turn came', () => {
      // Replays the plan in its documented canonical order: spreads are not monotone
      // (a later placement can raise the least-used count), so the state a task
      // saw, not the final one, is what it must have fitted nowhere in.
      let pendingSeen = 0
      fc.assert(
        fc.property(scenarioArb(), ({ view, tasks, options }) => {
          const p = plan(view, tasks, options)
          const ids = new Set(tasks.map((t) => t.id))
          const held = view.allocations.filter((a) => !ids.has(a.task.id))
          const pool = new Pool({ nodes: view.nodes, allocations: held })
          const placedOn = new Map(p.placements.map((x) => [x.task, x.node]))
          for (const task of canonicalOrder(view, tasks)) {
            const target = placedOn.get(task.id)
            const decision = place(pool, task, options)
            expect(decision.placed ? decision.node : undefined, `replaying ${task.id}`).toBe(target)
            if (target !== undefined) {
              pool.allocate({ task, node: target })
              held.push({ task, node: target })
              continue
            }
            pendingSeen++
            const spreads = pool.spreadCounts(task)
            for (const n of view.nodes) {
              const reason = pool.check(pool.indexOf(n.id)!, task, spreads)
              expect(reason, `${task.id} fits on ${n.id}`).toBeDefined()
              // Plain arithmetic: a node alive, passing the constraints and with room
              // must have been refused for avoidance, its per-node count or the spread.
              const u = used(held, n.id)
              const room = n.cpuMillis - u.cpu >= task.cpuMillis && n.memoryBytes - u.mem >= task.memoryBytes
              const passes = (task.constraints ?? []).every((c) => satisfies(n.labels, c))
              if (n.live && passes && room) expect(['avoided', 'per-node', 'spread']).toContain(reason!.code)
              if (n.live && passes) expect(reason!.code === 'avoided').toBe((task.avoid ?? []).includes(n.id))
              if (reason!.code === 'resources') expect(room).toBe(false)
            }
          }
        }),
        { numRuns: 1000, seed: runSeed },
      )
      expect(pendingSeen).toBeGreaterThan(500)
    })
  })

  describe('capacity-proportional spreading', () => {
    // Each check below allows a correct implementation to fail with probability at
    // most 1e-6 in all, split evenly over every count it checks (a union bound);
    // binomialBounds turns each share into a Chernoff bound on the count.
    const DELTA = 1e-6

    it('with choices 1, nodes of weights 1:2:4 take first choices in proportion 1:2:4', () => {
      const tasksN = 20_000
      const runs = 5
      const weights = [1, 2, 4]
      const total = weights.reduce((a, b) => a + b, 0)
      fc.assert(
        fc.property(seedArb, (seed) => {
          const view: View = { nodes: ampleNodes(weights), allocations: [] }
          const tasks = Array.from({ length: tasksN }, (_, i) => smallTask(`job-${seed}/${i}`))
          const p = plan(view, tasks, { choices: 1 })
          expect(p.pending).toEqual([])
          const pool = new Pool(view)
          const counts = new Map<string, number>()
          for (const x of p.placements) counts.set(x.node, (counts.get(x.node) ?? 0) + 1)
          // With this much room, the plan's node is every task's first choice.
          for (let i = 0; i < tasksN; i += 97) expect(p.placements.find((x) => x.task === tasks[i]!.id)!.node).toBe(pool.ids[rank(pool, tasks[i]!)[0]!.i])
          weights.forEach((w, k) => {
            const { lo, hi } = binomialBounds(tasksN, w / total, DELTA / (runs * weights.length))
            const got = counts.get(`node-${k}`) ?? 0
            expect(got, `node-${k} of weight ${w}: ${got} of ${tasksN}, allowed ${lo}..${hi}`).toBeGreaterThanOrEqual(lo)
            expect(got, `node-${k} of weight ${w}: ${got} of ${tasksN}, allowed ${lo}..${hi}`).toBeLessThanOrEqual(hi)
          })
        }),
        { numRuns: runs, seed: runSeed },
      )
    })

    it('a task weighs nodes by the resource that binds for it', () => {
      // cpuRich holds 8 CPU-heavy tasks and 4 memory-heavy ones; memRich 2 and 16.
      const cpuRich = node('cpu-rich', 8000, 4 * GiB)
      const memRich = node('mem-rich', 2000, 16 * GiB)
      const cpuHeavy = { cpuMillis: 1000, memoryBytes: 128 * MiB }
      const memHeavy = { cpuMillis: 10, memoryBytes: GiB }
      const weigh = (n: NodeView, shape: Partial<InstanceDemand>): number => weightFor(n.cpuMillis, n.memoryBytes, smallTask('w/0', shape))
      expect([weigh(cpuRich, cpuHeavy), weigh(memRich, cpuHeavy)]).toEqual([8, 2])
      expect([weigh(cpuRich, memHeavy), weigh(memRich, memHeavy)]).toEqual([4, 16])
      expect([weigh(cpuRich, { cpuMillis: 500, memoryBytes: 0 }), weigh(memRich, { cpuMillis: 500, memoryBytes: 0 })]).toEqual([16, 4])
      expect([weigh(cpuRich, { cpuMillis: 0, memoryBytes: GiB }), weigh(memRich, { cpuMillis: 0, memoryBytes: GiB })]).toEqual([4, 16])
      // A task that asks for nothing is weighed by CPU capacity.
      expect([weigh(cpuRich, { cpuMillis: 0, memoryBytes: 0 }), weigh(memRich, { cpuMillis: 0, memoryBytes: 0 })]).toEqual([8000, 2000])

      const pool = new Pool({ nodes: [cpuRich, memRich], allocations: [] })
      const tasksN = 20_000
      const shapes = [
        { name: 'cpu-heavy', shape: cpuHeavy, share: 8 / 10 },
        { name: 'memory-heavy', shape: memHeavy, share: 4 / 20 },
        { name: 'cpu-only', shape: { cpuMillis: 500, memoryBytes: 0 }, share: 16 / 20 },
        { name: 'memory-only', shape: { cpuMillis: 0, memoryBytes: GiB }, share: 4 / 20 },
      ]
      for (const { name, shape, share } of shapes) {
        let onCpuRich = 0
        for (let i = 0; i < tasksN; i++) {
          const d = place(pool, smallTask(`${name}-${runSeed}/${i}`, shape), { choices: 1 })
          if (d.placed && d.node === 'cpu-rich') onCpuRich++
        }
        const { lo, hi } = binomialBounds(tasksN, share, DELTA / shapes.length)
        expect(onCpuRich, `${name}: ${onCpuRich} of ${tasksN} on cpu-rich, allowed ${lo}..${hi}`).toBeGreaterThanOrEqual(lo)
        expect(onCpuRich, `${name}: ${onCpuRich} of ${tasksN} on cpu-rich, allowed ${lo}..${hi}`).toBeLessThanOrEqual(hi)
      }
    })

    it('a joining node of weight 3 beside weights 1:2:4 takes 3/10 of the first choices, all from the others', () => {
      const tasksN = 20_000
      const before: View = { nodes: ampleNodes([1, 2, 4]), allocations: [] }
      const after: View = { nodes: [...before.nodes, ...ampleNodes([3], ['joiner'])], allocations: [] }
      const tasks = Array.from({ length: tasksN }, (_, i) => smallTask(`join-${runSeed}/${i}`))
      const was = firstChoices(before, tasks)
      const now = firstChoices(after, tasks)
      let moved = 0
      for (const t of tasks) {
        if (now.get(t.id) !== was.get(t.id)) {
          moved++
          expect(now.get(t.id), `${t.id} moved from ${was.get(t.id)}`).toBe('joiner')
        }
      }
      const { lo, hi } = binomialBounds(tasksN, 3 / 10, DELTA)
      expect(moved, `${moved} of ${tasksN} moved, allowed ${lo}..${hi}`).toBeGreaterThanOrEqual(lo)
      expect(moved, `${moved} of ${tasksN} moved, allowed ${lo}..${hi}`).toBeLessThanOrEqual(hi)
    })
  })

  describe('movement', () => {
    /** 2–8 nodes of random weights and labels, some dead, and 200 small tasks, a third of them constrained. */
    const clusterArb = fc.record({
      nodes: fc.uniqueArray(
        fc.record({ id: fc.constantFrom(...NODE_IDS), weight: fc.integer({ min: 1, max: 8 }), alive: fc.integer({ min: 0, max: 5 }).map((x) => x !== 0), labels: labelsArb }),
        { selector: (n) => n.id, minLength: 2, maxLength: 8 },
      ),
      joiner: fc.record({ weight: fc.integer({ min: 1, max: 8 }), labels: labelsArb }),
      constraints: fc.array(constraintArb, { minLength: 1, maxLength: 3 }),
      prefix: fc.string({ maxLength: 6 }),
    }).map(({ nodes, joiner, constraints, prefix }) => ({
      nodes: nodes.map((n): NodeView => ({ ...ampleNodes([n.weight], [n.id])[0]!, live: n.alive, labels: n.labels })),
      joiner: { ...ampleNodes([joiner.weight], ['joiner'])[0]!, labels: joiner.labels },
      tasks: Array.from({ length: 200 }, (_, i) => smallTask(`${prefix}/${i}`, i % 3 === 0 ? { constraints: [constraints[i % constraints.length]!] } : {})),
    }))

    it('a join moves no task between old nodes: a task whose first choice changes now prefers the joiner', () => {
      fc.assert(
        fc.property(clusterArb, ({ nodes, joiner, tasks }) => {
          const was = firstChoices({ nodes, allocations: [] }, tasks)
          const now = firstChoices({ nodes: [...nodes, joiner], allocations: [] }, tasks)
          for (const t of tasks) if (now.get(t.id) !== was.get(t.id)) expect(now.get(t.id), `${t.id} was on ${was.get(t.id)}`).toBe('joiner')
        }),
        { numRuns: 150, seed: runSeed },
      )
    })

    it('after a join, placing the pending tasks moves no allocation, and only a rebalance moves tasks to the joiner', () => {
      fc.assert(
        fc.property(clusterArb, ({ nodes, joiner, tasks }) => {
          const first = plan({ nodes, allocations: [] }, tasks, { choices: 1 })
          const allocations = allocationsOf(first, tasks)
          const joined: View = deepFreeze({ nodes: [...nodes, joiner], allocations })
          const waiting = tasks.filter((t) => first.pending.some((x) => x.task === t.id))
          const fresh = Array.from({ length: 20 }, (_, i) => smallTask(`fresh/${i}`))
          const next = plan(joined, [...waiting, ...fresh], { choices: 1 })
          // plan() answers for the tasks it was given, and for nothing else.
          expect([...next.placements.map((x) => x.task), ...next.pending.map((x) => x.task)].sort())
            .toEqual([...waiting, ...fresh].map((t) => t.id).sort())
          // A rebalance moves exactly the placed tasks whose first choice is now the joiner, to it.
          const now = firstChoices({ nodes: [...nodes, joiner], allocations: [] }, tasks)
          const moves = rebalance(joined, { fractionMax: 1, choices: 1 })
          const want = allocations.filter((a) => now.get(a.task.id) === 'joiner').map((a) => ({ task: a.task.id, from: a.node, to: 'joiner' })).sort((a, b) => a.task < b.task ? -1 : 1)
          expect(moves.map((m) => ({ task: m.task, from: m.from, to: m.to })).sort((a, b) => a.task < b.task ? -1 : 1)).toEqual(want)
        }),
        { numRuns: 100, seed: runSeed },
      )
    })

    it('a death displaces exactly its tasks, each to the next feasible node of its ranking, and moves nothing else', () => {
      fc.assert(
        fc.property(clusterArb, fc.nat(), ({ nodes: drawn, tasks }, pick) => {
          const nodes = drawn.map((n) => ({ ...n, live: true }))
          const first = plan({ nodes, allocations: [] }, tasks, { choices: 1 })
          const allocations = allocationsOf(first, tasks)
          const victim = nodes[pick % nodes.length]!.id
          const dead: View = deepFreeze({ nodes: nodes.map((n) => n.id === victim ? { ...n, live: false } : n), allocations })
          const lost = displaced(dead)
          const byId = (a: InstanceDemand, b: InstanceDemand): number => a.id < b.id ? -1 : a.id > b.id ? 1 : 0
          expect([...lost].sort(byId)).toEqual(allocations.filter((a) => a.node === victim).map((a) => a.task).sort(byId))
          const p = plan(dead, lost, { choices: 1 })
          const original = new Pool({ nodes, allocations: [] })
          const passes = (t: InstanceDemand, n: NodeView): boolean => (t.constraints ?? []).every((c) => satisfies(n.labels, c))
          for (const t of lost) {
            const ranking = rank(original, t).map((r) => nodes.find((n) => n.id === original.ids[r.i])!)
            // The victim was the task's first feasible node: every node above it fails the constraints.
            const at = ranking.findIndex((n) => n.id === victim)
            expect(ranking.slice(0, at).filter((n) => passes(t, n))).toEqual([])
            const next = ranking.slice(at + 1).find((n) => passes(t, n))
            const got = p.placements.find((x) => x.task === t.id)?.node
            expect(got, `${t.id} from ${victim}`).toBe(next?.id)
            if (next === undefined) expect(p.pending.map((x) => x.task)).toContain(t.id)
          }
          // Nothing else moves: every other task is still on its first choice, so a
          // full rebalance of the healed placement finds nothing to do.
          const healed: View = { nodes: dead.nodes, allocations: [...allocations.filter((a) => a.node !== victim), ...allocationsOf(p, lost)] }
          expect(rebalance(healed, { fractionMax: 1, choices: 1 })).toEqual([])
          const stayed = tasks.filter((t) => allocations.some((a) => a.task === t && a.node !== victim))
          const now = firstChoices({ nodes: dead.nodes, allocations: [] }, stayed)
          for (const t of stayed) expect(now.get(t.id)).toBe(allocations.find((a) => a.task === t)!.node)
        }),
        { numRuns: 150, seed: runSeed },
      )
    })

    it('a rebalance moves at most the fraction asked, each task up its ranking, without overcommitting', () => {
      fc.assert(
        fc.property(viewArb({ allocationsMax: 12 }), fc.integer({ min: 0, max: 4 }), ({ nodes, allocations }, quarters) => {
          const view = { nodes, allocations }
          const fractionMax = quarters / 4
          const moves = rebalance(view, { fractionMax, choices: 1 })
          expect(moves.length).toBeLessThanOrEqual(Math.floor(fractionMax * allocations.length))
          const pool = new Pool(view)
          for (const m of moves) {
            expect(m.toRank).toBeLessThan(m.fromRank)
            const task = allocations.find((a) => a.task.id === m.task && a.node === m.from)!.task
            expect(pool.holders(m.task)).toEqual([m.from])
            pool.release(m.task)
            const ranking = rank(pool, task)
            expect(pool.ids[ranking[m.fromRank]!.i]).toBe(m.from)
            expect(pool.ids[ranking[m.toRank]!.i]).toBe(m.to)
            expect(pool.check(pool.indexOf(m.to)!, task, pool.spreadCounts(task)), `${m.task} to ${m.to}`).toBeUndefined()
            pool.allocate({ task, node: m.to })
          }
        }),
        { numRuns: 500, seed: runSeed },
      )
    })
  })

  describe('reasons', () => {
    it('names the memory that is short: 8 GiB asked, 6 GiB free at most', () => {
      const nodes = [node('n-a', 4000, 6 * GiB), node('n-b', 4000, 10 * GiB), node('n-c', 4000, 7 * GiB)]
      const held = smallTask('old/0', { cpuMillis: 0, memoryBytes: 4 * GiB })
      const view: View = { nodes, allocations: [{ task: held, node: 'n-b' }, { task: { ...held, id: 'old/1', memoryBytes: GiB }, node: 'n-c' }] }
      const p = plan(view, [smallTask('big/0', { memoryBytes: 8 * GiB })])
      expect(p.placements).toEqual([])
      const message = p.pending[0]!.why.message
      expect(message).toContain('8 GiB')
      expect(message).toMatch(/no node has 8 GiB memory free; largest free: 6 GiB on n-[abc]\b/)
      expect(message).toContain('3 lack free resources')
      expect(message).not.toContain('CPU free')
    })

    it('names the CPU that is short, and both when both are', () => {
      // Room, not size, is what is short: both nodes could hold the task when empty.
      const view: View = {
        nodes: [node('n-a', 4000, 8 * GiB), node('n-b', 4000, 64 * GiB)],
        allocations: [
          { node: 'n-a', task: smallTask('old/a', { cpuMillis: 2500, memoryBytes: 4 * GiB }) },
          { node: 'n-b', task: smallTask('old/b', { cpuMillis: 3500, memoryBytes: 0 }) },
        ],
      }
      const cpu = plan(view, [smallTask('c/0', { cpuMillis: 2000, memoryBytes: GiB })]).pending[0]!.why.message
      expect(cpu).toContain('no node has 2 CPU free; largest free: 1.5 CPU on n-a')
      const both = plan(view, [smallTask('c/1', { cpuMillis: 2000, memoryBytes: 32 * GiB })]).pending[0]!.why
      expect(both.message).toContain('no node has 2 CPU and 32 GiB memory free; largest free: 1.5 CPU on n-a, 64 GiB on n-b')
      expect(both.largestFree).toEqual({ cpu: { node: 'n-a', millis: 1500 }, memory: { node: 'n-b', bytes: 64 * GiB } })
    })

    it('a task too big for every node\'s free resources: the message names the largest node if none is large enough, else what is short and the most free of it', () => {
      const shortArb = fc.record({
        nodes: fc.uniqueArray(
          fc.record({ id: fc.constantFrom(...NODE_IDS), alive: fc.integer({ min: 0, max: 3 }).map((x) => x !== 0), cpu: fc.integer({ min: 0, max: 64 }), mem: fc.integer({ min: 0, max: 64 }), used: fc.integer({ min: 0, max: 8 }) }),
          { selector: (n) => n.id, minLength: 1, maxLength: 6 },
        ),
        short: fc.constantFrom('cpu', 'memory', 'both'),
        over: fc.integer({ min: 1, max: 4 }),
      })
      fc.assert(
        fc.property(shortArb, ({ nodes: drawn, short, over }) => {
          // Capacities in steps of 250 millicores and 256 MiB; some already hold a task.
          const nodes = drawn.map((n) => node(n.id, 250 * n.cpu, 256 * MiB * n.mem, { live: n.alive }))
          const allocations = drawn.filter((n) => n.used > 0).map((n) => ({ node: n.id, task: smallTask(`old/${n.id}`, { cpuMillis: 125 * n.used, memoryBytes: 128 * MiB * n.used }) }))
          const alive = nodes.filter((n) => n.live).map((n) => {
            const u = used(allocations, n.id)
            return { id: n.id, cpu: n.cpuMillis - u.cpu, mem: n.memoryBytes - u.mem }
          })
          const cpuMost = Math.max(0, ...alive.map((n) => n.cpu))
          const memMost = Math.max(0, ...alive.map((n) => n.mem))
          const task = smallTask('big/0', {
            cpuMillis: short === 'memory' ? 0 : cpuMost + 250 * over,
            memoryBytes: short === 'cpu' ? 0 : memMost + 256 * MiB * over,
          })
          const why = plan({ nodes, allocations }, [task]).pending[0]!.why
          const dead = nodes.length - alive.length
          if (dead > 0) expect(why.message).toContain(`${dead} dead or left`)
          if (alive.length === 0) {
            expect(why.message).toMatch(/^no node can take it \(/)
            return
          }
          expect(why.message).toContain(`${alive.length} lack free resources`)
          // A demand beyond every alive node's capacity is no wait for room but a request to change.
          const capCpu = Math.max(...nodes.filter((n) => n.live).map((n) => n.cpuMillis))
          const capMem = Math.max(...nodes.filter((n) => n.live).map((n) => n.memoryBytes))
          const holdsBoth = nodes.some((n) => n.live && n.cpuMillis >= task.cpuMillis && n.memoryBytes >= task.memoryBytes)
          if (task.cpuMillis <= capCpu && task.memoryBytes <= capMem && !holdsBoth) {
            expect(why.message).toMatch(/^no node is large enough: it asks for .* CPU and .* memory together, and no node has both; ask for less \(/)
            return
          }
          if (task.cpuMillis > capCpu || task.memoryBytes > capMem) {
            expect(why.message).toMatch(/^no node is large enough: it asks for .* and the largest node has .*; ask for less \(/)
            if (task.cpuMillis > capCpu) expect(why.message).toContain(`${needAndFree(task.cpuMillis, capCpu, 'cpu').join(' CPU and the largest node has ')}`)
            if (task.memoryBytes > capMem) expect(why.message).toContain(`${needAndFree(task.memoryBytes, capMem, 'memory').join(' memory and the largest node has ')}`)
            return
          }
          // A node that already holds more than it has lacks even what the task does not ask for.
          const cpuShort = alive.some((n) => n.cpu < task.cpuMillis)
          const memShort = alive.some((n) => n.mem < task.memoryBytes)
          const cpuMax = Math.max(...alive.map((n) => n.cpu))
          const memMax = Math.max(...alive.map((n) => n.mem))
          // Need and free read differently whenever they differ (needAndFree gives more digits then).
          // An overcommitted node's free is negative, and printed so.
          const [cpuNeed, cpuFree] = needAndFree(task.cpuMillis, cpuMax, 'cpu')
          const [memNeed, memFree] = needAndFree(task.memoryBytes, memMax, 'memory')
          const cpuAt = alive.filter((n) => n.cpu === cpuMax).map((n) => `${cpuFree} CPU on ${n.id}`)
          const memAt = alive.filter((n) => n.mem === memMax).map((n) => `${memFree} on ${n.id}`)
          const options = cpuShort && memShort
            ? cpuAt.flatMap((c) => memAt.map((m) => `no node has ${cpuNeed} CPU and ${memNeed} memory free; largest free: ${c}, ${m} (`))
            : cpuShort
              ? cpuAt.map((c) => `no node has ${cpuNeed} CPU free; largest free: ${c} (`)
              : memAt.map((m) => `no node has ${memNeed} memory free; largest free: ${m} (`)
          expect(short === 'both' ? cpuShort && memShort : short === 'cpu' ? cpuShort : memShort).toBe(true)
          expect(options.some((o) => why.message.startsWith(o)), `${why.message}\nwanted one of\n${options.join('\n')}`).toBe(true)
        }),
        { numRuns: 500, seed: runSeed },
      )
    })

    it('a task no node passes the constraints of: the message counts each constraint that failed', () => {
      const constrained = fc.record({ task: taskArb(), constraints: fc.array(constraintArb, { minLength: 1, maxLength: 3 }) })
        .map(({ task, constraints }): InstanceDemand => ({ id: task.id, job: task.job, cpuMillis: 0, memoryBytes: 0, constraints }))
      let seen = 0
      fc.assert(
        fc.property(viewArb(), constrained, (view, task) => {
          const e = explain(view, task)
          if (e.pending === undefined) return
          seen++
          const failed = new Map<string, number>()
          let dead = 0
          for (const n of view.nodes) {
            if (!n.live) { dead++; continue }
            const c = task.constraints!.find((x) => !satisfies(n.labels, x))
            if (c !== undefined) failed.set(constraintText(c), (failed.get(constraintText(c)) ?? 0) + 1)
          }
          if (dead > 0) expect(e.pending.message).toContain(`${dead} dead or left`)
          for (const [text, count] of failed) expect(e.pending.message).toContain(`${count} fail ${text}`)
          expect(e.pending.skipped.constraint ?? 0).toBe([...failed.values()].reduce((a, b) => a + b, 0))
        }),
        { numRuns: 1000, seed: runSeed },
      )
      expect(seen).toBeGreaterThan(300)
    })

    it('explain() lists every node once, in rank order, with a verdict consistent with place() and Pool.check', () => {
      fc.assert(
        fc.property(viewArb(), taskArb(), optionsArb, (view, task, options) => {
          const e = explain(view, task, options)
          const pool = new Pool(view)
          expect(e.holders).toEqual(pool.release(task.id).sort())
          const decision = place(pool, task, options)
          const spreads = pool.spreadCounts(task)
          expect(e.ranking.map((r) => r.node)).toEqual(rank(pool, task).map((r) => pool.ids[r.i]))
          expect(e.ranking.map((r) => r.rank)).toEqual(e.ranking.map((_, k) => k + 1))
          expect(e.ranking.filter((r) => r.verdict === 'chosen').map((r) => r.node)).toEqual(decision.placed ? [decision.node] : [])
          expect(e.node).toBe(decision.placed ? decision.node : undefined)
          expect(e.candidates).toEqual(decision.placed ? decision.candidates : [])
          expect(e.ranking.filter((r) => r.verdict === 'candidate').map((r) => r.node).sort()).toEqual([...e.candidates].sort())
          const feasibleRanks: number[] = []
          for (const r of e.ranking) {
            const reason = pool.check(pool.indexOf(r.node)!, task, spreads)
            expect(r.reason, `reason of ${r.node}`).toEqual(reason)
            expect(r.verdict === 'skipped').toBe(reason !== undefined)
            if (reason !== undefined) expect(r.text).toBe(reasonText(reason))
            else feasibleRanks.push(r.rank)
          }
          if (decision.placed) {
            // The chosen node is among the first `choices` feasible ones, the candidates among the first choices + candidatesMax.
            const chosen = e.ranking.find((r) => r.verdict === 'chosen')!
            expect(feasibleRanks.slice(0, options.choices)).toContain(chosen.rank)
            for (const c of e.candidates) expect(feasibleRanks.slice(0, options.choices + options.candidatesMax)).toContain(e.ranking.find((r) => r.node === c)!.rank)
          } else {
            expect(feasibleRanks).toEqual([])
            expect(Object.values(e.pending!.skipped).reduce((a, b) => a + b, 0)).toBe(view.nodes.length)
          }
        }),
        { numRuns: 1000, seed: runSeed },
      )
    })
  })

  describe('edges of the contract', () => {
    const task = smallTask('edge/0')

    it('an empty view leaves every task pending, saying so', () => {
      const empty: View = { nodes: [], allocations: [] }
      const p = plan(empty, [task, smallTask('edge/1')])
      expect(p.placements).toEqual([])
      expect(p.pending.map((x) => x.task)).toEqual(['edge/0', 'edge/1'])
      for (const x of p.pending) {
        expect(x.why.message).toContain('no nodes')
        expect(x.why.nodes).toBe(0)
      }
      expect(explain(empty, task)).toMatchObject({ candidates: [], ranking: [] })
      expect(explain(empty, task).node).toBeUndefined()
      expect(explain(empty, task).pending?.message).toContain('no nodes')
      expect(place(new Pool(empty), task).placed).toBe(false)
      expect(displaced(empty)).toEqual([])
      expect(rebalance(empty, { fractionMax: 1 })).toEqual([])
    })

    it('a view naming a node twice is a PlacementError', () => {
      const view: View = { nodes: [node('n1', 1000, GiB), node('n2', 1000, GiB), node('n1', 2000, GiB)], allocations: [] }
      expect(() => plan(view, [task])).toThrow(PlacementError)
      expect(() => explain(view, task)).toThrow(PlacementError)
      expect(() => new Pool(view)).toThrow(PlacementError)
      expect(() => rebalance(view, { fractionMax: 1 })).toThrow(PlacementError)
    })

    it('a plan naming a task twice is a PlacementError', () => {
      const view: View = { nodes: [node('n1', 1000, GiB)], allocations: [] }
      expect(() => plan(view, [task, smallTask('edge/1'), { ...task, cpuMillis: 200 }])).toThrow(PlacementError)
    })

    it('a negative, NaN or infinite demand or capacity is a PlacementError, wherever it comes in', () => {
      const view: View = { nodes: [node('n1', 1000, GiB)], allocations: [] }
      for (const bad of [-1, Number.NaN, Infinity, -Infinity]) {
        for (const demand of [{ cpuMillis: bad }, { memoryBytes: bad }]) {
          const t = smallTask('bad/0', demand)
          expect(() => plan(view, [t]), `plan ${JSON.stringify(demand)}`).toThrow(PlacementError)
          expect(() => plan(view, [task, t])).toThrow(PlacementError)
          expect(() => place(new Pool(view), t)).toThrow(PlacementError)
          expect(() => explain(view, t)).toThrow(PlacementError)
          expect(() => plan({ ...view, allocations: [{ task: t, node: 'n1' }] }, [task])).toThrow(PlacementError)
        }
        expect(() => plan({ nodes: [node('n1', bad, GiB)], allocations: [] }, [task])).toThrow(PlacementError)
        expect(() => plan({ nodes: [node('n1', 1000, bad)], allocations: [] }, [task])).toThrow(PlacementError)
      }
      for (const perNodeMax of [0, -1, 1.5, Number.NaN]) expect(() => plan(view, [{ ...task, perNodeMax }])).toThrow(PlacementError)
      for (const choices of [0, 9, 1.5, Number.NaN]) expect(() => plan(view, [task], { choices })).toThrow(PlacementError)
      for (const candidatesMax of [-1, 17, 0.5]) expect(() => plan(view, [task], { candidatesMax })).toThrow(PlacementError)
    })

    it('labels named after Object.prototype are not on every node', () => {
      const bare = node('bare', 1000, GiB)
      const labelled = node('labelled', 1000, GiB, { labels: Object.fromEntries([['constructor', 'x'], ['__proto__', 'y'], ['toString', 'z']]) })
      const view: View = { nodes: [bare, labelled], allocations: [] }
      const where = (constraints: Constraint[], spread?: InstanceDemand['spread']): string | undefined => {
        const p = plan(view, [smallTask('proto/0', { constraints, ...(spread ? { spread } : {}) })], { choices: 1 })
        return p.placements[0]?.node
      }
      for (const label of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
        const own = label === 'constructor' || label === '__proto__' || label === 'toString'
        expect(where([{ label, op: 'exists' }]), `${label} exists`).toBe(own ? 'labelled' : undefined)
        expect(where([{ label, op: 'absent' }]), `${label} absent`).toBe('bare')
        expect(where([{ label, op: 'notIn', values: ['x', 'y', 'z'] }]), `${label} notIn`).toBe('bare')
        expect(where([{ label, op: 'ne', value: 'x' }, { label, op: 'ne', value: 'y' }, { label, op: 'ne', value: 'z' }]), `${label} ne`).toBe('bare')
        expect(where([], [{ label, maxSkew: 1 }]), `spread over ${label}`).toBe(own ? 'labelled' : undefined)
        expect(satisfies(bare.labels, { label, op: 'exists' })).toBe(false)
      }
      expect(where([{ label: 'constructor', op: 'eq', value: 'x' }])).toBe('labelled')
      expect(where([{ label: '__proto__', op: 'in', values: ['y'] }])).toBe('labelled')
      const why = plan({ nodes: [bare], allocations: [] }, [smallTask('proto/1', { constraints: [{ label: 'constructor', op: 'exists' }] })]).pending[0]!.why
      expect(why.message).toContain('1 fail constructor exists')
    })

    it('a task held on two dead nodes is displaced once, and plan() re-places it', () => {
      const t = smallTask('twice/0')
      const view: View = {
        nodes: [node('n1', 1000, GiB, { live: false }), node('n2', 1000, GiB, { live: false }), node('n3', 1000, GiB)],
        allocations: [{ task: t, node: 'n1' }, { task: t, node: 'n2' }],
      }
      const lost = displaced(view)
      expect(lost.map((x) => x.id)).toEqual(['twice/0'])
      expect(plan(view, lost).placements.map((x) => x.node)).toEqual(['n3'])
    })

    it('a task that still has a live holder is not displaced; one held only on a node gone from the view is', () => {
      const kept = smallTask('kept/0')
      const orphan = smallTask('orphan/0')
      const view: View = {
        nodes: [node('n1', 1000, GiB, { live: false }), node('n2', 1000, GiB)],
        allocations: [{ task: kept, node: 'n1' }, { task: kept, node: 'n2' }, { task: orphan, node: 'gone' }],
      }
      expect(displaced(view).map((x) => x.id)).toEqual(['orphan/0'])
    })
  })
})
