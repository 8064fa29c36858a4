// The fault rules of one node (node/faults.ts): what happens to a message from a
// peer, what the admin endpoint accepts, and what the injector counts.

import { peerIdFromString } from '@libp2p/peer-id'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import {
  FaultDropped, FaultInjector, NO_FAULTS, admitFrame, blockedAdded, compile, judge, parseFaultRules, type FaultRules,
} from '../../node/faults.ts'

const A = '12D3KooWET4EbJ1yYfKQ7iTMRpsaXYY9BD2oUagP3YTFS6owyeFk'
const B = '12D3KooWSNh6pvRoKFbRP8mG9GjcBhtEsn2DXpBoyX1ARDpuBcaj'
const C = '12D3KooWMJrki3fHhRDpbJ6YwqSPQrukXEafKMaq1du1HLQQQbvX'
const SELF = '12D3KooWAqfWUmtZ6x8KJQrD4n3PiQycK9qm4i7tjnJMGRVgyxAk'

const rules = (r: Partial<FaultRules>): FaultRules => ({ ...NO_FAULTS, ...r })

/** A seeded PRNG (mulberry32), so that loss and jitter are replayable. */
function seeded (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const never = (): number => { throw new Error('no draw expected') }

describe('judge', () => {
  it('passes everything without rules, drawing no randomness', () => {
    expect(judge(compile(NO_FAULTS), A, never)).toEqual({ pass: true, delayMs: 0 })
  })

  it('drops what comes from a blocked or cut peer, and only from it', () => {
    const r = compile(rules({ blocked: [A], cutFrom: [B] }))
    expect(judge(r, A, never)).toEqual({ pass: false, reason: 'blocked' })
    expect(judge(r, B, never)).toEqual({ pass: false, reason: 'cut' })
    expect(judge(r, C, never)).toEqual({ pass: true, delayMs: 0 })
  })

  it('blocked wins over cut, and both over loss', () => {
    const r = compile(rules({ blocked: [A], cutFrom: [A], lossRate: 0.5 }))
    expect(judge(r, A, never)).toEqual({ pass: false, reason: 'blocked' })
  })

  it('loses about lossRate of the messages', () => {
    const r = compile(rules({ lossRate: 0.2 }))
    const random = seeded(7)
    let lost = 0
    for (let i = 0; i < 10_000; i++) if (!judge(r, A, random).pass) lost++
    expect(lost).toBeGreaterThan(1_800)
    expect(lost).toBeLessThan(2_200)
  })

  it('delays by delayMs ± jitterMs, never below zero', () => {
    expect(judge(compile(rules({ delayMs: 200 })), A, never)).toEqual({ pass: true, delayMs: 200 })
    const r = compile(rules({ delayMs: 200, jitterMs: 50 }))
    const random = seeded(3)
    const delays = Array.from({ length: 2_000 }, () => judge(r, A, random)).map((v) => v.pass ? v.delayMs : NaN)
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(150)
    expect(Math.max(...delays)).toBeLessThanOrEqual(250)
    expect(Math.min(...delays)).toBeLessThan(160)
    expect(Math.max(...delays)).toBeGreaterThan(240)
    expect(judge(compile(rules({ delayMs: 10, jitterMs: 10 })), A, () => 0)).toEqual({ pass: true, delayMs: 0 })
  })
})

describe('rule changes', () => {
  it('names the peers newly blocked, whose connections must close', () => {
    expect(blockedAdded(rules({ blocked: [A] }), rules({ blocked: [A, B] }))).toEqual([B])
    expect(blockedAdded(rules({ blocked: [A, B] }), rules({ blocked: [] }))).toEqual([])
    expect(blockedAdded(rules({ cutFrom: [A] }), rules({ blocked: [A] }))).toEqual([A])
  })
})

describe('parseFaultRules', () => {
  it('fills in what is left out', () => {
    expect(parseFaultRules({ cutFrom: [A] }, 'faults')).toEqual(rules({ cutFrom: [A] }))
    expect(parseFaultRules(undefined, 'faults')).toEqual(NO_FAULTS)
  })

  it.each([
    [{ blocked: ['nope'] }, /^faults: blocked\.0: must be a peer id/],
    [{ lossRate: 1 }, /^faults: lossRate: must be below 1/],
    [{ lossRate: -0.1 }, /^faults: lossRate: /],
    [{ delayMs: 1.5 }, /^faults: delayMs: /],
    [{ delayMs: 600_000 }, /^faults: delayMs: /],
    [{ delayMs: 10, jitterMs: 20 }, /^faults: jitterMs: must be at most delayMs/],
    [{ partition: [[0]] }, /^faults: body: .*partition/],
    ['blocked', /^faults: body: /],
  ])('refuses %j with one line that names the field', (input, message) => {
    let error: Error | undefined
    try { parseFaultRules(input, 'faults') } catch (err) { error = err as Error }
    expect(error?.name).toBe('InputError')
    expect(error?.message).toMatch(message)
    expect(error?.message).not.toContain('\n')
  })
})

describe('FaultInjector', () => {
  const injector = (r?: FaultRules, random?: () => number): FaultInjector => new FaultInjector({ self: SELF, log: pino({ level: 'silent' }), rules: r, random })

  it('counts drops by path and reason, and delays', () => {
    const faults = injector(rules({ cutFrom: [A], delayMs: 5 }))
    expect(faults.inbound(A, 'membership')).toEqual({ pass: false, reason: 'cut' })
    expect(faults.inbound(B, 'gossip')).toEqual({ pass: true, delayMs: 5 })
    expect(faults.stats.dropped.membership.cut).toBe(1)
    expect(faults.stats.delayed.gossip).toBe(1)
    expect(faults.stats.changes).toBe(1)
  })

  it('refuses rules about itself, and keeps the old ones', () => {
    const faults = injector(rules({ blocked: [A] }))
    expect(() => faults.set(rules({ blocked: [SELF] }))).toThrow(/cannot block or cut itself/)
    expect(faults.rules.blocked).toEqual([A])
  })

  it('returns the newly blocked peers on a change, each once', () => {
    const faults = injector()
    expect(faults.set(rules({ blocked: [A, A, B] }))).toEqual([A, B])
    expect(faults.rules.blocked).toEqual([A, B])
    expect(faults.set(rules({ blocked: [B, C] }))).toEqual([C])
  })

  it('gates connections with blocked peers only', () => {
    const faults = injector(rules({ blocked: [A], cutFrom: [B] }))
    const gater = faults.gater()
    expect(gater.denyDialPeer?.(peerIdFromString(A))).toBe(true)
    expect(gater.denyInboundEncryptedConnection?.(peerIdFromString(A), undefined as never)).toBe(true)
    expect(gater.denyDialPeer?.(peerIdFromString(B))).toBe(false)
    expect(faults.stats.refusedConnections).toBe(2)
  })

  it('arrive() waits out the delay; admitFrame() throws for a dropped frame and is free without faults', async () => {
    const faults = injector(rules({ delayMs: 30, cutFrom: [A] }))
    const started = performance.now()
    expect(await faults.arrive(B, 'sync')).toBeNull()
    expect(performance.now() - started).toBeGreaterThanOrEqual(25)
    await expect(admitFrame(faults, A, 'rpc')).rejects.toBeInstanceOf(FaultDropped)
    await expect(admitFrame(faults, A, 'rpc')).rejects.toThrow(/dropped by fault injection \(cut\)/)
    await expect(admitFrame(undefined, A, 'rpc')).resolves.toBeUndefined()
  })

  it('a lost message is counted as loss', () => {
    const faults = injector(rules({ lossRate: 0.5 }), () => 0.1)
    expect(faults.inbound(C, 'rpc')).toEqual({ pass: false, reason: 'loss' })
    expect(faults.stats.dropped.rpc.loss).toBe(1)
  })
})
