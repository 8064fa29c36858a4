// Lifeguard's suspicion timer: starts at the ceiling, shrinks with independent
// confirmations on a log curve, never below the floor; and the formulas that set
// floor and ceiling from the cluster size.

import { describe, expect, it } from 'vitest'
import { LAN, suspicionMaxMs, suspicionMinMs } from '../../membership/config.ts'
import { Suspicion } from '../../membership/suspicion.ts'

function suspicion (expected = 2): Suspicion {
  return new Suspicion({ from: 'a', startMs: 1_000, minMs: 2_000, maxMs: 8_000, expected })
}

describe('Suspicion timer', () => {
  it('waits the ceiling when nobody confirms', () => {
    const s = suspicion()
    expect(s.timeoutMs()).toBe(8_000)
    expect(s.deadlineMs()).toBe(9_000)
  })

  it('shrinks on a log curve with each independent confirmation, down to the floor', () => {
    const s = suspicion(3)
    expect(s.confirm('b')).toBe(true)
    // max − (max − min) · log(2) / log(4) = 8000 − 6000 · 0.5
    expect(s.timeoutMs()).toBe(5_000)
    expect(s.confirm('c')).toBe(true)
    expect(s.timeoutMs()).toBe(Math.floor(8_000 - 6_000 * Math.log(3) / Math.log(4)))
    expect(s.confirm('d')).toBe(true)
    expect(s.timeoutMs()).toBe(2_000)
    expect(s.confirm('e')).toBe(true)
    expect(s.timeoutMs()).toBe(2_000)
    expect(s.deadlineMs()).toBe(3_000)
  })

  it('counts neither the accuser nor a repeated confirmation', () => {
    const s = suspicion()
    expect(s.confirm('a')).toBe(false)
    expect(s.confirm('b')).toBe(true)
    expect(s.confirm('b')).toBe(false)
    expect(s.confirmations).toBe(1)
  })

  it('goes straight to the floor when no confirmations can be expected', () => {
    expect(suspicion(0).timeoutMs()).toBe(2_000)
  })

  it('never lets the ceiling fall below the floor', () => {
    const s = new Suspicion({ from: 'a', startMs: 0, minMs: 3_000, maxMs: 1_000, expected: 2 })
    expect(s.timeoutMs()).toBe(3_000)
  })

  it('moves the deadline when postponed (a stall of this node)', () => {
    const s = suspicion()
    s.postpone(4_000)
    s.postpone(500)
    expect(s.deadlineMs()).toBe(1_000 + 4_500 + 8_000)
  })
})

describe('suspicion timeouts by cluster size', () => {
  it('has a floor of suspicionMult intervals up to 10 members, growing with log10(n) beyond', () => {
    const base = LAN.suspicionMult * LAN.probeIntervalMs
    expect(suspicionMinMs(LAN, 1)).toBe(base)
    expect(suspicionMinMs(LAN, 10)).toBe(base)
    expect(suspicionMinMs(LAN, 100)).toBe(2 * base)
    expect(suspicionMinMs(LAN, 200)).toBeCloseTo(base * Math.log10(200), 6)
    expect(suspicionMinMs(LAN, 0)).toBe(base)
  })

  it('has a ceiling of suspicionMaxTimeoutMult floors', () => {
    for (const n of [1, 5, 50, 1000]) {
      expect(suspicionMaxMs(LAN, n)).toBeCloseTo(LAN.suspicionMaxTimeoutMult * suspicionMinMs(LAN, n), 6)
    }
  })
})
