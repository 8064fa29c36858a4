// Which claim of a task instance stays is decided by every node from the claims
// alone, in whatever order and with whatever repetitions its replica got them:
// the rule must be commutative, idempotent, stable, and never leave an instance
// without a holder while someone alive holds it. Random claim sets from a small
// pool of node names (so that nodes collide), random deaths, random orders.
// The fast-check seed is printed; SEED=<n> replays another.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CLAIM_STATUSES, nextGeneration, resolveClaims, type Claim, type ClaimOutcome, type ClaimStatus } from '../../placement/claims.ts'
import { idKey, pairHash, taskPrefix } from '../../placement/hash.ts'
import { PlacementError } from '../../placement/types.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'

const runSeed = seedFromEnv(4202)
const RUNS = 400

const NAMES = ['a', 'b', 'c', 'node-1', 'node-2', 'nœud-é', 'z'] as const
const LIVE_STATUSES = ['active', 'releasing'] as const

const taskArb = fc.oneof(fc.constantFrom('web/0', 'db/3', 'batch/17'), fc.string({ maxLength: 12 }))
const nameArb = fc.constantFrom(...NAMES)
const statusArb = fc.constantFrom(...CLAIM_STATUSES)
/** Finished rarer than the others, so that most claim sets are not simply finished. */
const claimStatusArb = fc.oneof(
  { arbitrary: fc.constantFrom('active', 'releasing', 'ended'), weight: 9 },
  { arbitrary: fc.constant('finished'), weight: 1 },
)
const claimArb = fc.record({ node: nameArb, generation: fc.integer({ min: 1, max: 6 }), status: claimStatusArb })
/** One claim per node: what a caught-up replica holds. */
const latestClaimsArb = fc.uniqueArray(claimArb, { selector: (c) => c.node, maxLength: NAMES.length })
/** Any claims, several versions of one node's claim among them: what a replica that has not caught up may hold. */
const anyClaimsArb = fc.array(claimArb, { maxLength: 12 })
const deadArb = fc.subarray([...NAMES])

function liveness (dead: readonly string[]): (node: string) => boolean {
  const set = new Set(dead)
  return (node) => !set.has(node)
}

function shuffled<T> (items: readonly T[], seed: number): T[] {
  return new Rng(seed).shuffled(items)
}

const STATUS_RANK: Record<ClaimStatus, number> = { active: 0, releasing: 1, ended: 2, finished: 3 }

/** Each node's latest claim (higher generation, then later status): the test's own reading of "latest". */
function latestOf (claims: readonly Claim[]): Claim[] {
  const byNode = new Map<string, Claim>()
  for (const c of claims) {
    const seen = byNode.get(c.node)
    if (seen === undefined || c.generation > seen.generation || (c.generation === seen.generation && STATUS_RANK[c.status] > STATUS_RANK[seen.status])) byNode.set(c.node, c)
  }
  return [...byNode.values()]
}

function isLiveClaim (c: Claim, isLive: (node: string) => boolean): boolean {
  return (c.status === 'active' || c.status === 'releasing') && isLive(c.node)
}

function pairOf (task: string, node: string): number {
  const k = idKey(node)
  return pairHash(taskPrefix(idKey(task)), k.lo, k.hi)
}

function held (o: ClaimOutcome): Extract<ClaimOutcome, { kind: 'held' }> {
  if (o.kind !== 'held') throw new Error(`expected a holder, got ${JSON.stringify(o)}`)
  return o
}

/** An earlier version of a claim, as the node wrote it before: an older generation, or an earlier status of the same one. */
function earlierVersionArb (c: Claim): fc.Arbitrary<Claim> {
  const earlierStatuses: ClaimStatus[] = c.status === 'releasing' ? ['active'] : c.status === 'active' ? [] : ['active', 'releasing']
  const older = c.generation > 1
    ? [fc.record({ node: fc.constant(c.node), generation: fc.integer({ min: 1, max: c.generation - 1 }), status: statusArb })]
    : []
  const sameGeneration = earlierStatuses.length > 0
    ? [fc.record({ node: fc.constant(c.node), generation: fc.constant(c.generation), status: fc.constantFrom(...earlierStatuses) })]
    : []
  const options = [...older, ...sameGeneration]
  return options.length === 0 ? fc.constant(c) : fc.oneof(...options)
}

describe(`resolveClaims (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('is commutative: any permutation of the claims gives the same outcome', () => {
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, fc.integer(), (task, claims, dead, order) => {
        const isLive = liveness(dead)
        expect(resolveClaims(task, shuffled(claims, order), isLive)).toEqual(resolveClaims(task, claims, isLive))
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('is idempotent: duplicated claims, and earlier versions of a node’s claim, change nothing', () => {
    const caseArb = latestClaimsArb.chain((latest) => fc.tuple(
      fc.constant(latest),
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: latest.length, maxLength: latest.length }),
      latest.length === 0 ? fc.constant([]) : fc.array(fc.constantFrom(...latest).chain(earlierVersionArb), { maxLength: 8 }),
    ))
    fc.assert(
      fc.property(taskArb, caseArb, deadArb, fc.integer(), (task, [latest, copies, earlier], dead, order) => {
        const isLive = liveness(dead)
        const noisy = [...latest, ...latest.flatMap((c, i) => Array.from({ length: copies[i]! }, () => ({ ...c }))), ...earlier]
        expect(resolveClaims(task, shuffled(noisy, order), isLive)).toEqual(resolveClaims(task, latest, isLive))
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('never keeps zero: a live active or releasing claim, and nothing finished, means exactly one holder and the rest duplicates', () => {
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, (task, claims, dead) => {
        const isLive = liveness(dead)
        const latest = latestOf(claims)
        const live = latest.filter((c) => isLiveClaim(c, isLive))
        fc.pre(live.length > 0 && !latest.some((c) => c.status === 'finished'))
        const o = held(resolveClaims(task, claims, isLive))
        const all = [o.holder, ...o.duplicates]
        expect(new Set(all.map((c) => c.node)).size, 'one claim per node').toBe(all.length)
        const byNode = (x: Claim, y: Claim): number => x.node < y.node ? -1 : x.node > y.node ? 1 : 0
        expect([...all].sort(byNode)).toEqual([...live].sort(byNode))
        expect(o.duplicates.map((c) => c.node)).toEqual(o.duplicates.map((c) => c.node).sort())
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('never makes a dead node’s claim, an ended claim or a superseded claim a holder or a duplicate', () => {
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, (task, claims, dead) => {
        const isLive = liveness(dead)
        const o = resolveClaims(task, claims, isLive)
        if (o.kind !== 'held') return
        const latest = new Map(latestOf(claims).map((c) => [c.node, c]))
        for (const c of [o.holder, ...o.duplicates]) {
          expect(isLive(c.node), `${c.node} is dead`).toBe(true)
          expect(['active', 'releasing']).toContain(c.status)
          expect(c, `${c.node}'s latest claim`).toEqual(latest.get(c.node))
        }
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('finished dominates: a finished claim, dead or alive, ends the instance; the lowest generation (then node id) is `by`', () => {
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, (task, claims, dead) => {
        const finished = latestOf(claims).filter((c) => c.status === 'finished')
        fc.pre(finished.length > 0)
        const first = finished.reduce((x, y) => y.generation < x.generation || (y.generation === x.generation && y.node < x.node) ? y : x)
        expect(resolveClaims(task, claims, liveness(dead))).toEqual({ kind: 'finished', by: first })
        // Whoever is alive: with every node dead, or every node alive, still finished.
        expect(resolveClaims(task, claims, () => false)).toEqual({ kind: 'finished', by: first })
        expect(resolveClaims(task, claims, () => true)).toEqual({ kind: 'finished', by: first })
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('is stable: newcomers that claim knowing the holder (generation = nextGeneration) never displace it, unless it is releasing and they are active', () => {
    const newcomerArb = fc.record({ node: fc.constantFrom(...NAMES, 'newcomer-1', 'newcomer-2'), status: fc.constantFrom(...LIVE_STATUSES) })
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, fc.array(newcomerArb, { minLength: 1, maxLength: 4 }), (task, claims, dead, newcomers) => {
        const isLive = liveness(dead)
        const before = resolveClaims(task, claims, isLive)
        fc.pre(before.kind === 'held')
        let holder = held(before).holder
        let current: Claim[] = [...claims]
        for (const n of newcomers) {
          // Another node, alive: the only kind of claim that could compete.
          if (n.node === holder.node || !isLive(n.node)) continue
          const claim: Claim = { node: n.node, generation: nextGeneration(current), status: n.status }
          current = [...current, claim]
          const after = held(resolveClaims(task, current, isLive))
          if (holder.status === 'releasing' && claim.status === 'active') {
            expect(after.holder, 'an active claim takes over from a releasing holder').toEqual(claim)
            expect(after.duplicates).toContainEqual(holder)
            holder = claim
          } else {
            expect(after.holder, 'the holder stays').toEqual(holder)
            expect(after.duplicates).toContainEqual(claim)
          }
        }
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('an active claim beats a releasing one, whatever their generations and node ids', () => {
    fc.assert(
      fc.property(taskArb, fc.uniqueArray(nameArb, { minLength: 2, maxLength: 2 }), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 50 }), fc.boolean(), (task, [x, y], gx, gy, flip) => {
        const active: Claim = { node: x!, generation: gx, status: 'active' }
        const releasing: Claim = { node: y!, generation: gy, status: 'releasing' }
        const input = flip ? [releasing, active] : [active, releasing]
        expect(resolveClaims(task, input, () => true)).toEqual({ kind: 'held', holder: active, duplicates: [releasing] })
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('the lower generation beats the higher one, for claims of the same status', () => {
    fc.assert(
      fc.property(
        taskArb, fc.uniqueArray(nameArb, { minLength: 2, maxLength: 2 }), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 50 }),
        fc.constantFrom(...LIVE_STATUSES), fc.boolean(),
        (task, [x, y], g, delta, status, flip) => {
          const first: Claim = { node: x!, generation: g, status }
          const later: Claim = { node: y!, generation: g + delta, status }
          const input = flip ? [later, first] : [first, later]
          expect(resolveClaims(task, input, () => true)).toEqual({ kind: 'held', holder: first, duplicates: [later] })
        },
      ),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('equal generations are decided by the pair hash, whatever the order of the node names in the input', () => {
    fc.assert(
      fc.property(
        taskArb, fc.uniqueArray(fc.string({ minLength: 1, maxLength: 10 }), { minLength: 2, maxLength: 5 }), fc.integer({ min: 1, max: 50 }),
        fc.constantFrom(...LIVE_STATUSES), fc.integer(),
        (task, nodes, generation, status, order) => {
          const claims = nodes.map((node): Claim => ({ node, generation, status }))
          const winner = claims.reduce((x, y) => pairOf(task, y.node) > pairOf(task, x.node) ? y : x)
          const o = held(resolveClaims(task, shuffled(claims, order), () => true))
          expect(o.holder).toEqual(winner)
          expect(o).toEqual(resolveClaims(task, [...claims].reverse(), () => true))
        },
      ),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('the pair hash, not the node id, breaks ties: each of two nodes wins some tasks', () => {
    const winners = new Set<string>()
    for (let i = 0; i < 32; i++) {
      const task = `job/${i}`
      const o = held(resolveClaims(task, [{ node: 'node-a', generation: 3, status: 'active' }, { node: 'node-b', generation: 3, status: 'active' }], () => true))
      winners.add(o.holder.node)
      expect(o.holder.node).toBe(pairOf(task, 'node-a') > pairOf(task, 'node-b') ? 'node-a' : 'node-b')
    }
    expect([...winners].sort()).toEqual(['node-a', 'node-b'])
  })
})

describe(`nextGeneration (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('is one above every generation seen, counting dead nodes’ and ended claims', () => {
    fc.assert(
      fc.property(taskArb, anyClaimsArb, deadArb, (task, claims, dead) => {
        const expected = Math.max(0, ...claims.map((c) => c.generation)) + 1
        expect(nextGeneration(claims)).toBe(expected)
        const o = resolveClaims(task, claims, liveness(dead))
        if (o.kind === 'open') expect(o.nextGeneration).toBe(expected)
      }),
      { seed: runSeed, numRuns: RUNS },
    )
  })

  it('is 1 with no claims, and nobody alive holding means open', () => {
    expect(nextGeneration([])).toBe(1)
    expect(resolveClaims('t', [], () => true)).toEqual({ kind: 'open', nextGeneration: 1 })
    const claims: Claim[] = [
      { node: 'dead', generation: 7, status: 'active' },
      { node: 'quit', generation: 4, status: 'ended' },
      { node: 'alive', generation: 2, status: 'ended' },
    ]
    expect(resolveClaims('t', claims, (n) => n !== 'dead')).toEqual({ kind: 'open', nextGeneration: 8 })
  })
})

describe('invalid claims', () => {
  const valid: Claim = { node: 'ok', generation: 1, status: 'active' }
  const bad: Array<[string, unknown, unknown]> = [
    ['generation 0', 0, 'active'],
    ['a negative generation', -1, 'active'],
    ['a non-integer generation', 1.5, 'active'],
    ['a NaN generation', Number.NaN, 'active'],
    ['an infinite generation', Number.POSITIVE_INFINITY, 'active'],
    ['an unsafe generation', 2 ** 53, 'active'],
    ['a string generation', '1', 'active'],
    ['an unknown status', 1, 'running'],
    ['an empty status', 1, ''],
    ['status constructor', 1, 'constructor'],
    ['status __proto__', 1, '__proto__'],
    ['status toString', 1, 'toString'],
  ]

  it.each(bad)('%s throws PlacementError', (_name, generation, status) => {
    const claim = { node: 'bad', generation, status } as unknown as Claim
    expect(() => resolveClaims('t', [claim], () => true)).toThrow(PlacementError)
    // Also among valid claims, and even when the outcome would not need it.
    expect(() => resolveClaims('t', [valid, claim], () => true)).toThrow(PlacementError)
    expect(() => resolveClaims('t', [{ node: 'done', generation: 1, status: 'finished' }, claim], () => true)).toThrow(PlacementError)
    expect(() => resolveClaims('t', [claim, { node: 'bad', generation: 9, status: 'active' }], () => false)).toThrow(PlacementError)
  })
})

describe('scenarios', () => {
  const task = 'web/2'

  it('a partition where both sides claim the instance at the same generation heals to one holder and one duplicate', () => {
    // The instance ran on n0 (generation 1), which died. The cluster split in two
    // halves, each of which saw n0 dead and the instance open at generation 2.
    const n0: Claim = { node: 'n0', generation: 1, status: 'active' }
    const isLive = (n: string): boolean => n !== 'n0'
    expect(resolveClaims(task, [n0], isLive)).toEqual({ kind: 'open', nextGeneration: 2 })
    // Left claims on n1, right on n2, each without seeing the other's claim.
    const left: Claim = { node: 'n1', generation: 2, status: 'active' }
    const right: Claim = { node: 'n2', generation: 2, status: 'active' }
    expect(held(resolveClaims(task, [n0, left], isLive)).holder).toEqual(left)
    expect(held(resolveClaims(task, [right, n0], isLive)).holder).toEqual(right)
    // The partition heals: each side merges the other's claims in its own order.
    const leftView = resolveClaims(task, [n0, left, right], isLive)
    const rightView = resolveClaims(task, [right, n0, left], isLive)
    expect(leftView).toEqual(rightView)
    const { holder, duplicates } = held(leftView)
    // Same generation, both active: the pair hash of (task, node) decides.
    const expected = pairOf(task, 'n1') > pairOf(task, 'n2') ? left : right
    expect(holder).toEqual(expected)
    expect(duplicates).toEqual([expected === left ? right : left])
  })

  it('a node that died and came back with its older claim still active wins the instance back: the task that has run longest is not moved', () => {
    // n0 held the instance at generation 1 and was declared dead (a long pause,
    // a partition) while its process kept running the task.
    const old: Claim = { node: 'n0', generation: 1, status: 'active' }
    expect(resolveClaims(task, [old], () => false)).toEqual({ kind: 'open', nextGeneration: 2 })
    // The others re-placed it: n1 claims at generation 2.
    const replacement: Claim = { node: 'n1', generation: 2, status: 'active' }
    expect(held(resolveClaims(task, [old, replacement], (n) => n !== 'n0')).holder).toEqual(replacement)
    // n0 comes back alive with its claim still active: the lower generation wins.
    // This is intended: n0's copy has run longest, so n1's new copy is the one
    // that stops (it is the duplicate), whatever the pair hash says.
    expect(resolveClaims(task, [old, replacement], () => true)).toEqual({ kind: 'held', holder: old, duplicates: [replacement] })
    expect(resolveClaims(task, [replacement, old], () => true)).toEqual({ kind: 'held', holder: old, duplicates: [replacement] })
  })

  it('a node that ended its old claim when it restarted leaves the instance with the replacement', () => {
    // n0 restarted as a new life: its previous life's claims are ended.
    const ended: Claim = { node: 'n0', generation: 1, status: 'ended' }
    const replacement: Claim = { node: 'n1', generation: 2, status: 'active' }
    expect(resolveClaims(task, [ended, replacement], () => true)).toEqual({ kind: 'held', holder: replacement, duplicates: [] })
    // Even if some replica still has the active version of n0's old claim: the ended one supersedes it.
    expect(resolveClaims(task, [{ ...ended, status: 'active' }, replacement, ended], () => true))
      .toEqual({ kind: 'held', holder: replacement, duplicates: [] })
  })

  it('a rebalance move hands over: the releasing holder keeps it until the new home claims, then is the duplicate', () => {
    const from: Claim = { node: 'n0', generation: 1, status: 'releasing' }
    expect(held(resolveClaims(task, [from], () => true)).holder).toEqual(from)
    const to: Claim = { node: 'n3', generation: nextGeneration([from]), status: 'active' }
    expect(resolveClaims(task, [from, to], () => true)).toEqual({ kind: 'held', holder: to, duplicates: [from] })
  })
})
