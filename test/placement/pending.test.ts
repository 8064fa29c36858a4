// Why a task is pending, in one line a user can act on: a request no node could
// hold names the largest node and asks for less; room that the job's own rules
// (spread, per-node limit, avoidance) rule out says so, with counts; otherwise
// the most free of what is short. And the words underneath: a need and what is
// free never read alike when they differ, sizes never read "1024 KiB", and each
// skip reason reads as what it is. The fast-check seed is printed; SEED=<n>
// replays another.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  bytesText, cpuText, explain, needAndFree, place, plan, Pool, reasonText, satisfies,
  type NodeView, type PendingSummary, type InstanceDemand, type View,
} from '../../placement/index.ts'
import { AMOUNT_MAX } from '../../placement/pool.ts'
import { seedFromEnv } from '../../testnet/sim/rng.ts'
import { GiB, MiB, node, smallTask, taskArb, viewArb } from './helpers.ts'

const runSeed = seedFromEnv(6262)

function pendingWhy (view: View, task: InstanceDemand): PendingSummary {
  const p = plan(view, [task])
  expect(p.placements, `${task.id} placed`).toEqual([])
  return p.pending[0]!.why
}

/** The cause list of a "ruled out" headline, as a map cause → count. */
function ruledOut (message: string): Map<string, number> | undefined {
  const m = /^the nodes with room are ruled out: (.*?) \(of \d+ nodes?: /.exec(message)
  if (m === null) return undefined
  return new Map(m[1]!.split(', ').map((part) => {
    const p = /^(\d+) by (.*)$/.exec(part)
    expect(p, `cause "${part}" in ${message}`).not.toBeNull()
    return [p![2]!, Number(p![1])]
  }))
}

/** What a need or a free amount reads as, back in millicores or bytes. */
function readBack (text: string, resource: 'cpu' | 'memory'): number {
  if (resource === 'cpu') {
    const m = /^(-?\d+(?:\.\d+)?)(m?)$/.exec(text)
    expect(m, `CPU text "${text}"`).not.toBeNull()
    return m![2] === 'm' ? Number(m![1]) : Number(m![1]) * 1000
  }
  const m = /^(-?\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB|PiB|bytes)$/.exec(text)
  expect(m, `memory text "${text}"`).not.toBeNull()
  return Number(m![1]) * 1024 ** Math.max(0, ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'].indexOf(m![2]!))
}

describe(`pending summaries (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  describe('no node is large enough', () => {
    // Two nodes that pass the constraints; a dead giant and a giant that fails them do not count.
    const view: View = {
      nodes: [
        node('n-a', 4000, 8 * GiB),
        node('n-b', 2000, 16 * GiB),
        node('n-dead', 64_000, 256 * GiB, { live: false }),
        node('n-gpu', 64_000, 256 * GiB, { labels: { gpu: 'yes' } }),
      ],
      allocations: [],
    }
    const ask = (cpuMillis: number, memoryBytes: number): string =>
      pendingWhy(view, smallTask('big/0', { cpuMillis, memoryBytes, constraints: [{ label: 'gpu', op: 'absent' }] })).message
    const tail = ' (of 4 nodes: 1 dead or left, 1 fail gpu absent, 2 lack free resources)'

    it('more CPU than any alive node that passes the constraints has', () => {
      expect(ask(8000, GiB)).toBe(`no node is large enough: it asks for 8 CPU and the largest node has 4 (n-a); ask for less${tail}`)
    })

    it('more memory than any of them has', () => {
      expect(ask(1000, 32 * GiB)).toBe(`no node is large enough: it asks for 32 GiB memory and the largest node has 16 GiB (n-b); ask for less${tail}`)
    })

    it('more of both: both named, CPU first', () => {
      expect(ask(8000, 32 * GiB)).toBe(
        `no node is large enough: it asks for 8 CPU and the largest node has 4 (n-a); it asks for 32 GiB memory and the largest node has 16 GiB (n-b); ask for less${tail}`,
      )
    })

    it('just over the largest: the need and the capacity never read alike', () => {
      expect(ask(4001, GiB)).toMatch(/^no node is large enough: it asks for 4.001 CPU and the largest node has 4 \(n-a\); ask for less \(/)
      expect(ask(1000, 16 * GiB + 1)).toMatch(/^no node is large enough: it asks for 17179869185 bytes memory and the largest node has 17179869184 bytes \(n-b\); ask for less \(/)
      expect(ask(1000, 16 * GiB + MiB)).toMatch(/^no node is large enough: it asks for 16385 MiB memory and the largest node has 16384 MiB \(n-b\); ask for less \(/)
    })

    it('it is capacity that counts, not what is free: a large node that is full is a wait for room', () => {
      const full: View = {
        nodes: [node('n-a', 4000, 8 * GiB)],
        allocations: [{ node: 'n-a', task: smallTask('old/0', { cpuMillis: 3000, memoryBytes: 0 }) }],
      }
      expect(pendingWhy(full, smallTask('w/0', { cpuMillis: 2000, memoryBytes: 0 })).message)
        .toBe('no node has 2 CPU free; largest free: 1 CPU on n-a (of 1 node: 1 lack free resources)')
    })

    it('a large node the job\'s rules rule out still counts as large enough: the headline names the rule', () => {
      const view: View = { nodes: [node('n-big', 8000, 8 * GiB), node('n-small', 2000, 8 * GiB)], allocations: [] }
      const why = pendingWhy(view, smallTask('w/0', { cpuMillis: 4000, memoryBytes: 0, avoid: ['n-big'] }))
      expect(why.message).toBe('the nodes with room are ruled out: 1 by avoidance (of 2 nodes: 1 are avoided (the task failed there), 1 lack free resources)')
      // And a task too large for every node is told so first, whatever else rules nodes out.
      const huge = pendingWhy(view, smallTask('w/1', { cpuMillis: 16_000, memoryBytes: 0, avoid: ['n-big'] }))
      expect(huge.message).toMatch(/^no node is large enough: it asks for 16 CPU and the largest node has 8 \(n-big\); ask for less \(/)
    })

    // Capacity is compared in both resources at once: a task that fits no node in
    // CPU and memory together (the CPU-rich node lacks the memory, the
    // memory-rich node the CPU) can never be placed, and is told so, not to wait
    // for room (a bug found by this test: "no node has 4 CPU and 8 GiB memory
    // free; largest free: 8 CPU on n1, 16 GiB on n2").
    it('a task no node can hold in both resources at once is told no node is large enough', () => {
      const view: View = { nodes: [node('n1', 8000, GiB), node('n2', 1000, 16 * GiB)], allocations: [] }
      const why = pendingWhy(view, smallTask('x/0', { cpuMillis: 4000, memoryBytes: 8 * GiB }))
      expect(why.message).toMatch(/^no node is large enough: /)
    })
  })

  describe('room ruled out by the job\'s own rules', () => {
    it('counts the nodes with room that the spread, the per-node limit and avoidance rule out, and only those', () => {
      const nodes = ['a1', 'a2', 'a3', 'b1', 'b2', 'b3', 'b4'].map((id) => node(id, 4000, 8 * GiB, { labels: { zone: id[0]! } }))
      const filler = (id: string, on: string): { task: InstanceDemand, node: string } => ({ node: on, task: { id, job: 'fill', cpuMillis: 4000, memoryBytes: 0 } })
      const view: View = {
        nodes,
        allocations: [
          // One instance of web in zone a, on a1: zone a is one ahead of zone b.
          { node: 'a1', task: { id: 'web/0', job: 'web', cpuMillis: 100, memoryBytes: 128 * MiB } },
          filler('fill/0', 'b3'),
          filler('fill/1', 'b4'),
        ],
      }
      const task: InstanceDemand = {
        id: 'web/1', job: 'web', cpuMillis: 500, memoryBytes: GiB,
        perNodeMax: 1, spread: [{ label: 'zone', maxSkew: 1 }], avoid: ['b1', 'b2', 'b3', 'ghost'],
      }
      const why = pendingWhy(view, task)
      // a1: per-node limit, with room; a2, a3: spread, with room; b1, b2: avoided, with room;
      // b3: avoided, full (not counted as room); b4: full.
      expect(why.skipped).toEqual({ 'per-node': 1, spread: 2, avoided: 3, resources: 1 })
      expect(why.message).toMatch(/^the nodes with room are ruled out: /)
      expect(ruledOut(why.message)).toEqual(new Map([['the spread over zone', 2], ['the per-node limit', 1], ['avoidance', 2]]))
      for (const part of ['1 are at the per-node limit (1)', '2 would unbalance the spread over zone', '3 are avoided (the task failed there)', '1 lack free resources']) {
        expect(why.message).toContain(part)
      }
      expect(why.message).toMatch(/\(of 7 nodes: .*\)$/)
      // Without the rules, the task fits: they, not room, are why it waits.
      expect(plan(view, [{ ...task, perNodeMax: undefined, spread: undefined, avoid: undefined }]).placements).toHaveLength(1)
    })

    it('each rule alone', () => {
      const two: NodeView[] = [node('n1', 4000, 8 * GiB), node('n2', 4000, 8 * GiB)]
      const web = (id: string): InstanceDemand => ({ id, job: 'web', cpuMillis: 100, memoryBytes: MiB })
      const limited = pendingWhy({ nodes: two, allocations: [{ node: 'n1', task: web('web/0') }, { node: 'n2', task: web('web/1') }] }, { ...web('web/2'), perNodeMax: 1 })
      expect(limited.message).toBe('the nodes with room are ruled out: 2 by the per-node limit (of 2 nodes: 2 are at the per-node limit (1))')
      const avoided = pendingWhy({ nodes: two, allocations: [] }, { ...web('web/2'), avoid: ['n2', 'n1'] })
      expect(avoided.message).toBe('the nodes with room are ruled out: 2 by avoidance (of 2 nodes: 2 are avoided (the task failed there))')
      const zoned: View = { nodes: [node('n1', 4000, 8 * GiB, { labels: { zone: 'a' } }), node('n2', 4000, 8 * GiB)], allocations: [{ node: 'n1', task: web('web/0') }] }
      const spread = pendingWhy(zoned, { ...web('web/2'), spread: [{ label: 'zone', maxSkew: 1 }], avoid: ['n1'] })
      // The causes in any order: the order is not documented.
      expect(ruledOut(spread.message)).toEqual(new Map([['the spread over zone', 1], ['avoidance', 1]]))
      expect(spread.message).toContain('1 are avoided (the task failed there)')
      expect(spread.message).toContain('1 lack the label zone')
    })

    it('an avoided node without room is no room ruled out: the headline is the room that is short', () => {
      const view: View = {
        nodes: [node('n1', 4000, 8 * GiB), node('n2', 4000, 8 * GiB)],
        allocations: [
          { node: 'n1', task: smallTask('old/0', { cpuMillis: 4000, memoryBytes: 0 }) },
          { node: 'n2', task: smallTask('old/1', { cpuMillis: 3000, memoryBytes: 0 }) },
        ],
      }
      expect(pendingWhy(view, smallTask('w/0', { cpuMillis: 2000, memoryBytes: 0, avoid: ['n1'] })).message)
        .toBe('no node has 2 CPU free; largest free: 1 CPU on n2 (of 2 nodes: 1 are avoided (the task failed there), 1 lack free resources)')
    })
  })

  it('on random views, the headline is the first that applies: too large for every node, room ruled out (with the counts), no room', () => {
    const seen = { large: 0, ruled: 0, room: 0, none: 0 }
    fc.assert(
      fc.property(viewArb(), taskArb(), (view, task) => {
        const pool = new Pool(view)
        const d = place(pool, task)
        if (d.placed) return
        const { message, skipped } = d.why
        const spreads = pool.spreadCounts(task)
        const eligible = view.nodes.filter((n) => n.live && (task.constraints ?? []).every((c) => satisfies(n.labels, c)))
        const cpuCap = Math.max(...eligible.map((n) => n.cpuMillis))
        const memCap = Math.max(...eligible.map((n) => n.memoryBytes))
        if (eligible.length > 0 && (task.cpuMillis > cpuCap || task.memoryBytes > memCap)) {
          seen.large++
          const parts: string[][] = []
          if (task.cpuMillis > cpuCap) {
            const [need, has] = needAndFree(task.cpuMillis, cpuCap, 'cpu')
            parts.push(eligible.filter((n) => n.cpuMillis === cpuCap).map((n) => `it asks for ${need} CPU and the largest node has ${has} (${n.id})`))
          }
          if (task.memoryBytes > memCap) {
            const [need, has] = needAndFree(task.memoryBytes, memCap, 'memory')
            parts.push(eligible.filter((n) => n.memoryBytes === memCap).map((n) => `it asks for ${need} memory and the largest node has ${has} (${n.id})`))
          }
          const options = parts.reduce<string[]>((acc, alts) => acc.flatMap((a) => alts.map((b) => a === '' ? b : `${a}; ${b}`)), [''])
            .map((p) => `no node is large enough: ${p}; ask for less (`)
          expect(options.some((o) => message.startsWith(o)), `${message}\nwanted one of\n${options.join('\n')}`).toBe(true)
          return
        }
        if (eligible.length > 0 && !eligible.some((n) => n.cpuMillis >= task.cpuMillis && n.memoryBytes >= task.memoryBytes)) {
          // Each resource alone fits some node, but no node has both.
          seen.large++
          const [cpuNeed] = needAndFree(task.cpuMillis, cpuCap, 'cpu')
          const [memNeed] = needAndFree(task.memoryBytes, memCap, 'memory')
          expect(message.startsWith(`no node is large enough: it asks for ${cpuNeed} CPU and ${memNeed} memory together, and no node has both; ask for less (`), message).toBe(true)
          return
        }
        // Eligible nodes with room, by plain arithmetic, and which of the job's rules rules each out.
        const want = new Map<string, number>()
        for (const n of eligible) {
          let cpu = n.cpuMillis
          let mem = n.memoryBytes
          let mine = 0
          for (const a of view.allocations) {
            if (a.node !== n.id) continue
            cpu -= a.task.cpuMillis
            mem -= a.task.memoryBytes
            if (a.task.job === task.job) mine++
          }
          if (cpu < task.cpuMillis || mem < task.memoryBytes) continue
          const reason = pool.check(pool.indexOf(n.id)!, task, spreads)
          let cause: string
          if ((task.avoid ?? []).includes(n.id)) cause = 'avoidance'
          else if (task.perNodeMax !== undefined && mine >= task.perNodeMax) cause = 'the per-node limit'
          else {
            expect(reason?.code, `${n.id} has room and is neither avoided nor at its limit`).toBe('spread')
            cause = `the spread over ${reason!.code === 'spread' ? reason!.label : '?'}`
          }
          want.set(cause, (want.get(cause) ?? 0) + 1)
        }
        if (want.size > 0) {
          seen.ruled++
          expect(ruledOut(message), message).toEqual(want)
          return
        }
        expect(message).not.toMatch(/^(no node is large enough|the nodes with room are ruled out)/)
        if (skipped.resources !== undefined) {
          seen.room++
          expect(message).toMatch(/^no node has .* free; largest free: /)
        } else {
          // No node lacked only resources: none is worth naming as the most free.
          seen.none++
          expect(message).toMatch(/^no node can take it \(/)
        }
        // The counts after the headline.
        if (skipped.avoided !== undefined) expect(message).toContain(`${skipped.avoided} are avoided (the task failed there)`)
        if (skipped['per-node'] !== undefined) expect(message).toContain(`are at the per-node limit (${task.perNodeMax})`)
      }),
      { numRuns: 2000, seed: runSeed },
    )
    // Each headline must come up often (about 250, 600, 75 and 700 of 2,000 at the seeds tried).
    const least = { large: 100, ruled: 300, room: 25, none: 300 }
    for (const [kind, count] of Object.entries(seen)) expect(count, `${kind} headlines`).toBeGreaterThan(least[kind as keyof typeof least])
  })
})

describe(`needs, frees and sizes in words (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  /** Amounts from 0 to AMOUNT_MAX, often next to where a rendering changes unit or rounds. */
  const amountArb = (resource: 'cpu' | 'memory'): fc.Arbitrary<number> => fc.oneof(
    fc.integer({ min: 0, max: AMOUNT_MAX }),
    fc.integer({ min: 0, max: 20_000 }),
    fc.tuple(fc.integer({ min: 0, max: resource === 'cpu' ? 12 : 5 }), fc.integer({ min: 1, max: 1100 }), fc.integer({ min: -3, max: 3 }))
      .map(([e, k, d]) => Math.min(AMOUNT_MAX, Math.max(0, k * (resource === 'cpu' ? 10 ** e : 1024 ** e) + d))),
  )
  /** A need and a free amount: unrelated, a few units apart, or within a fraction of a percent. */
  const pairArb = fc.constantFrom('cpu' as const, 'memory' as const).chain((resource) => fc.tuple(
    fc.constant(resource),
    amountArb(resource),
    fc.oneof(fc.constant(0), fc.integer({ min: -5, max: 5 }), fc.double({ min: -0.002, max: 0.002, noNaN: true }), fc.constant(Number.NaN)),
    amountArb(resource),
  ).map(([r, need, delta, other]) => {
    const free = Number.isNaN(delta) ? other : Math.min(AMOUNT_MAX, Math.max(0, need + (Number.isInteger(delta) ? delta : Math.round(need * delta))))
    return { resource: r, need, free }
  }))

  it('a need and a free amount that differ never read alike, and read in the right order; equal ones read as the plain text', () => {
    let near = 0
    fc.assert(
      fc.property(pairArb, ({ resource, need, free }) => {
        const text = resource === 'cpu' ? cpuText : bytesText
        const [n, f] = needAndFree(need, free, resource)
        if (need === free) {
          expect([n, f]).toEqual([text(need), text(free)])
          return
        }
        expect(n, `${resource} ${need} against ${free}`).not.toBe(f)
        expect(Math.sign(readBack(n, resource) - readBack(f, resource)), `${resource} ${need} → ${n}, ${free} → ${f}`).toBe(Math.sign(need - free))
        if (text(need) === text(free)) near++
        else expect([n, f]).toEqual([text(need), text(free)])
      }),
      { numRuns: 5000, seed: runSeed },
    )
    // Pairs that the plain text rounds alike must come up often: they are the
    // point. CPU prints to the millicore, so only memory pairs round alike.
    expect(near).toBeGreaterThan(200)
  })

  it('needAndFree gives more digits only where the plain text would read alike', () => {
    expect(needAndFree(2000, 1999, 'cpu')).toEqual(['2', '1.999'])
    expect(needAndFree(1, 0, 'cpu')).toEqual(['0.001', '0'])
    expect(needAndFree(2000, 1500, 'cpu')).toEqual(['2', '1.5'])
    expect(needAndFree(2 * GiB, 2 * GiB - MiB, 'memory')).toEqual(['2048 MiB', '2047 MiB'])
    expect(needAndFree(2 * GiB, 2 * GiB - 1, 'memory')).toEqual([`${2 * GiB} bytes`, `${2 * GiB - 1} bytes`])
    expect(needAndFree(MiB, MiB - 1, 'memory')).toEqual(['1048576 bytes', '1048575 bytes'])
    expect(needAndFree(8 * GiB, 6 * GiB, 'memory')).toEqual(['8 GiB', '6 GiB'])
    expect(needAndFree(3 * GiB, 3 * GiB, 'memory')).toEqual(['3 GiB', '3 GiB'])
  })

  // A node overcommitted by a few millicores (claims made on differing views)
  // has a negative free. Found by these tests: −1 to −4 millicores read "-0", so
  // explain() said "not enough CPU: needs 0, free -0", and the pending headline,
  // which clamped free at 0, said "no node has 0 CPU free; largest free: 0 CPU".
  const overcommitted: View = {
    nodes: [node('n1', 1000, GiB)],
    allocations: [{ node: 'n1', task: smallTask('old/0', { cpuMillis: 1001, memoryBytes: 0 }) }],
  }
  const asksNoCpu = smallTask('w/0', { cpuMillis: 0, memoryBytes: 1 })

  it('explain() of an overcommitted node never reads need and free alike ("needs 0, free -0")', () => {
    const text = explain(overcommitted, asksNoCpu).ranking[0]!.text
    const m = /^not enough CPU: needs (\S+), free (\S+)$/.exec(text)!
    expect(readBack(m[1]!, 'cpu'), text).toBeGreaterThan(readBack(m[2]!, 'cpu'))
  })

  it('the pending headline never reads need and free alike ("no node has 0 CPU free; largest free: 0 CPU")', () => {
    const message = pendingWhy(overcommitted, asksNoCpu).message
    const m = /^no node has (\S+) CPU free; largest free: (\S+) CPU on n1 /.exec(message)!
    expect(m[1], message).not.toBe(m[2])
  })

  it('bytesText: exact units, and no "1024 KiB" where it means 1 MiB', () => {
    const table: Array<[number, string]> = [
      [0, '0 B'], [1, '1 B'], [1023, '1023 B'], [1024, '1 KiB'], [1536, '1.5 KiB'], [10 * 1024, '10 KiB'],
      [1048575, '1 MiB'], [MiB, '1 MiB'], [1.5 * MiB, '1.5 MiB'], [GiB - 1, '1 GiB'], [GiB, '1 GiB'], [8 * GiB, '8 GiB'],
      [2 ** 40 - 1, '1 TiB'], [2 ** 40, '1 TiB'], [AMOUNT_MAX - 1, '1 PiB'], [AMOUNT_MAX, '1 PiB'],
    ]
    for (const [bytes, text] of table) expect(bytesText(bytes), `${bytes}`).toBe(text)
    fc.assert(
      fc.property(amountArb('memory'), (bytes) => {
        const text = bytesText(bytes)
        expect(text).not.toMatch(/^1024 /)
        expect(text).not.toMatch(/\.0 /)
        // Within 5 % (half a unit at 10 of it, or at 1.0 of it).
        expect(Math.abs(readBack(text, 'memory') - bytes)).toBeLessThanOrEqual(bytes * 0.05 + 0.5)
      }),
      { numRuns: 3000, seed: runSeed },
    )
  })

  it('cpuText: whole CPUs without decimals, fractions to the hundredth', () => {
    const table: Array<[number, string]> = [[0, '0'], [1000, '1'], [2000, '2'], [64_000, '64'], [1500, '1.5'], [250, '0.25'], [100, '0.1'], [10, '0.01'], [1250, '1.25']]
    for (const [millis, text] of table) expect(cpuText(millis), `${millis}`).toBe(text)
  })

  it('reasonText of each skip reason', () => {
    expect(reasonText({ code: 'per-node', max: 2, count: 3 })).toBe('at the per-node limit: runs 3 of the job\'s instances (at most 2)')
    expect(reasonText({ code: 'avoided' })).toMatch(/^avoided\b/)
    expect(reasonText({ code: 'not-live' })).toBe('dead or left')
    expect(reasonText({ code: 'resources', cpu: { need: 2000, free: 1999 } })).toBe('not enough CPU: needs 2, free 1.999')
    expect(reasonText({ code: 'resources', memory: { need: 2 * GiB, free: 2 * GiB - MiB } })).toBe('not enough memory: needs 2048 MiB, free 2047 MiB')
    // explain() words its skipped nodes with them.
    const view: View = { nodes: [node('n1', 1000, GiB), node('n2', 1000, GiB)], allocations: [{ node: 'n2', task: smallTask('web/0') }] }
    const e = explain(view, smallTask('web/1', { avoid: ['n1'], perNodeMax: 1 }))
    expect(Object.fromEntries(e.ranking.map((r) => [r.node, r.text]))).toEqual({
      n1: reasonText({ code: 'avoided' }),
      n2: reasonText({ code: 'per-node', max: 1, count: 1 }),
    })
  })
})
