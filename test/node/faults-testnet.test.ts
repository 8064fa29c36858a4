// A testnet's network faults by node index (testnet/local/faults.ts): the
// partition's sides, cuts, delay and loss, and the rules each node gets.

import { describe, expect, it } from 'vitest'
import {
  NO_NETWORK_FAULTS, type TestnetFaults, blockedOf, describeNode, describePartition, hasFaults, reaches, rulesFor,
  withCut, withDelay, withLoss, withPartition,
} from '../../testnet/local/faults.ts'

const none: TestnetFaults = { ...NO_NETWORK_FAULTS }
const ids = ['p0', 'p1', 'p2', 'p3', 'p4']

function inputError (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect((err as { exitCode?: number }).exitCode).toBe(2)
    return (err as Error).message
  }
  throw new Error('expected an error')
}

describe('partition', () => {
  it('blocks every pair on different sides, the unnamed nodes being one more side', () => {
    const f = withPartition(none, [[0, 1], [2]], 5)
    expect(blockedOf(f, 0, 5)).toEqual([2, 3, 4])
    expect(blockedOf(f, 2, 5)).toEqual([0, 1, 3, 4])
    expect(blockedOf(f, 3, 5)).toEqual([0, 1, 2])
    expect(describePartition(f, 5)).toBe('{0,1} | {2} | {3,4}')
  })

  it('a single group cuts it off from the rest', () => {
    const f = withPartition(none, [[2]], 3)
    expect(blockedOf(f, 0, 3)).toEqual([2])
    expect(reaches(f, 0, 1, 3)).toBe(true)
    expect(reaches(f, 2, 0, 3)).toBe(false)
  })

  it('replaces the partition before, and keeps cuts and shaping', () => {
    let f = withCut(none, 0, 1, 3)
    f = withDelay(f, 2, 100, 0, 3)
    f = withPartition(f, [[0], [1, 2]], 3)
    f = withPartition(f, [[1]], 3)
    expect(f.partition).toEqual([[1]])
    expect(f.cuts).toEqual([{ from: 0, to: 1 }])
    expect(f.shaping).toHaveLength(1)
  })

  it.each([
    [[[0, 1], [1]], /node 1 is named in two groups/],
    [[[0, 7]], /no node 7 in the testnet: it has nodes 0–4/],
    [[[0, 1, 2, 3, 4]], /that is no partition/],
    [[], /at least one group/],
  ])('refuses %j with exit code 2', (groups, message) => {
    expect(inputError(() => withPartition(none, groups, 5))).toMatch(message)
  })
})

describe('cuts', () => {
  it('are one-way: to no longer hears from, from still hears to', () => {
    const f = withCut(none, 0, 1, 3)
    expect(reaches(f, 0, 1, 3)).toBe(false)
    expect(reaches(f, 1, 0, 3)).toBe(true)
    expect(describeNode(f, 1, 'p1', 3).cutFrom).toEqual([0])
    expect(describeNode(f, 0, 'p0', 3).cutFrom).toEqual([])
  })

  it('are kept once, and refused between a node and itself', () => {
    expect(withCut(withCut(none, 0, 1, 3), 0, 1, 3).cuts).toHaveLength(1)
    expect(inputError(() => withCut(none, 1, 1, 3))).toMatch(/same node/)
  })
})

describe('delay and loss', () => {
  it('are per node, merged, and removed by zero', () => {
    let f = withDelay(none, 1, 200, 50, 3)
    f = withLoss(f, 1, 0.2, 3)
    expect(describeNode(f, 1, null, 3)).toMatchObject({ delayMs: 200, jitterMs: 50, lossRate: 0.2 })
    f = withDelay(f, 1, 0, 0, 3)
    expect(f.shaping).toEqual([{ index: 1, delayMs: 0, jitterMs: 0, lossRate: 0.2 }])
    f = withLoss(f, 1, 0, 3)
    expect(hasFaults(f)).toBe(false)
  })

  it('refuses a loss of 100% and a jitter over the delay', () => {
    expect(inputError(() => withLoss(none, 0, 1, 3))).toMatch(/below 100%.*partition 0/)
    expect(inputError(() => withDelay(none, 0, 10, 20, 3))).toMatch(/jitter must be from 0 to the delay/)
  })
})

describe('rulesFor', () => {
  it('names peers by id, and leaves out the ones not known yet', () => {
    let f = withPartition(none, [[0, 1]], 5)
    f = withCut(f, 3, 2, 5)
    f = withLoss(f, 2, 0.5, 5)
    expect(rulesFor(f, 2, ids)).toEqual({ blocked: ['p0', 'p1'], cutFrom: ['p3'], delayMs: 0, jitterMs: 0, lossRate: 0.5 })
    expect(rulesFor(f, 0, ['p0', 'p1', null, 'p3', 'p4'])).toEqual({ blocked: ['p3', 'p4'], cutFrom: [], delayMs: 0, jitterMs: 0, lossRate: 0 })
  })
})
