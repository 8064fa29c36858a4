// One config: defaults from a preset, overrides checked, one-line errors that name
// the setting; and the derived figures the protocol and the tests rely on.

import { describe, expect, it } from 'vitest'
import {
  crashDetectionBoundMs, LAN, LOCAL, MembershipConfigError, membershipConfig, PRESETS, pushPullIntervalMs,
  retransmitLimit, SIM, suspicionMaxMs,
} from '../../membership/config.ts'

describe('membershipConfig', () => {
  it('fills in the LAN preset by default, and any preset on request', () => {
    expect(membershipConfig()).toEqual(LAN)
    expect(membershipConfig({}, LOCAL)).toEqual(LOCAL)
    expect(membershipConfig({ probeIntervalMs: 1_000, probeTimeoutMs: undefined }, SIM)).toEqual({ ...SIM, probeIntervalMs: 1_000 })
  })

  it('returns a copy: presets stay frozen and unchanged', () => {
    const config = membershipConfig()
    config.probeIntervalMs = 1
    expect(LAN.probeIntervalMs).toBe(500)
    for (const preset of Object.values(PRESETS)) expect(Object.isFrozen(preset)).toBe(true)
  })

  it('accepts every preset as it is', () => {
    for (const preset of Object.values(PRESETS)) expect(() => membershipConfig({}, preset)).not.toThrow()
  })

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown setting', { probeIntervalSecs: 1 }, /unknown membership setting 'probeIntervalSecs'/],
    ['a negative number', { gossipNodes: -1 }, /'gossipNodes' must be a non-negative number, got -1/],
    ['NaN', { retransmitMult: Number.NaN }, /'retransmitMult' must be a non-negative number, got NaN/],
    ['Infinity', { deadRetentionMs: Number.POSITIVE_INFINITY }, /'deadRetentionMs' must be a non-negative number/],
    ['a string', { stallMs: '1s' }, /'stallMs' must be a non-negative number, got 1s/],
    ['a zero probe interval', { probeIntervalMs: 0 }, /probeIntervalMs must be > 0/],
    ['a probe timeout as long as the interval', { probeTimeoutMs: 500 }, /probeTimeoutMs \(500\) must be less than probeIntervalMs \(500\)/],
    ['a suspicion multiplier below 1', { suspicionMult: 0.5 }, /suspicionMult must be ≥ 1/],
    ['a suspicion ceiling below the floor', { suspicionMaxTimeoutMult: 0 }, /suspicionMaxTimeoutMult must be ≥ 1/],
    ['no awareness', { awarenessMax: 0 }, /awarenessMax must be ≥ 1/],
    ['a zero gossip interval', { gossipIntervalMs: 0 }, /gossipIntervalMs must be > 0/],
    ['a zero push-pull interval', { pushPullIntervalMs: 0 }, /pushPullIntervalMs must be > 0/],
    ['a zero reconnect interval', { reconnectIntervalMs: 0 }, /reconnectIntervalMs must be > 0/],
    ['no room for updates', { piggybackUpdatesMax: 0 }, /piggybackUpdatesMax must be ≥ 1/],
  ]

  it.each(bad)('refuses %s with a one-line MembershipConfigError', (_what, init, message) => {
    let error: unknown
    try {
      membershipConfig(init)
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(MembershipConfigError)
    expect((error as Error).name).toBe('MembershipConfigError')
    expect((error as Error).message).toMatch(message)
    expect((error as Error).message).not.toContain('\n')
  })
})

describe('derived figures', () => {
  it('retransmits each update retransmitMult × ceil(log10(n + 1)) times, at least retransmitMult', () => {
    expect(retransmitLimit(LAN, 1)).toBe(4)
    expect(retransmitLimit(LAN, 9)).toBe(4)
    expect(retransmitLimit(LAN, 10)).toBe(8)
    expect(retransmitLimit(LAN, 200)).toBe(12)
  })

  it('stretches the push-pull interval above 32 members', () => {
    expect(pushPullIntervalMs(LAN, 32)).toBe(LAN.pushPullIntervalMs)
    expect(pushPullIntervalMs(LAN, 64)).toBe(2 * LAN.pushPullIntervalMs)
    expect(pushPullIntervalMs(LAN, 128)).toBe(3 * LAN.pushPullIntervalMs)
  })

  it('bounds crash detection by probe rounds, the unconfirmed suspicion, gossip and two ticks', () => {
    const n = 200
    const expected = 11 * LAN.probeIntervalMs + suspicionMaxMs(LAN, n) + 12 * LAN.gossipIntervalMs + 20
    expect(crashDetectionBoundMs(LAN, n, 10)).toBeCloseTo(expected, 6)
    // Small clusters: every member probes the crashed one within 2(n − 1) intervals.
    expect(crashDetectionBoundMs(LAN, 3, 10)).toBeCloseTo(5 * LAN.probeIntervalMs + suspicionMaxMs(LAN, 3) + 4 * LAN.gossipIntervalMs + 20, 6)
  })
})
