// Names of instances and attempts, and cron ticks: the names must round-trip,
// and every node must find the same latest tick for the same moment.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { attemptId, instanceId, latestTick, parseAttempt, tickOf, tickText } from '../../node/jobs/instances.ts'
import type { JobSpec } from '../../node/jobs/spec.ts'

type CronSpec = NonNullable<JobSpec['cron']>

function cron (schedule: string, timezone = 'UTC'): CronSpec {
  return { schedule, timezone, missed: 'skip', overlap: 'skip' }
}

const T = Date.UTC(2026, 10, 26, 1, 30, 0)

/** Job names as normalizeJob allows them. */
const jobArb = fc.stringMatching(/^[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?$/)
/** Whole seconds from 2000 to 2100: what a tick is. */
const tickArb = fc.integer({ min: Date.UTC(2000, 0, 1) / 1000, max: Date.UTC(2100, 0, 1) / 1000 }).map((s) => s * 1000)

describe('instance and attempt ids', () => {
  it('names a batch or service instance <job>.<index>', () => {
    expect(instanceId('web', 0)).toBe('web.0')
    expect(instanceId('web-1.v2', 17)).toBe('web-1.v2.17')
  })

  it('names a cron run <job>@<tick in UTC>.<index>', () => {
    expect(instanceId('backup', 0, Date.UTC(2026, 10, 26, 1, 32, 30))).toBe('backup@20261126T013230Z.0')
    expect(instanceId('backup', 3, Date.UTC(2026, 0, 5, 23, 4, 5))).toBe('backup@20260105T230405Z.3')
  })

  it('names the first attempt as the instance, later ones with ~<restarts>', () => {
    expect(attemptId('web.2', 0)).toBe('web.2')
    expect(attemptId('web.2', 3)).toBe('web.2~3')
    expect(attemptId('backup@20261126T013230Z.0', 12)).toBe('backup@20261126T013230Z.0~12')
  })

  it('parses an attempt id back', () => {
    expect(parseAttempt('web.2')).toEqual({ instance: 'web.2', restarts: 0 })
    expect(parseAttempt('web.2~3')).toEqual({ instance: 'web.2', restarts: 3 })
    expect(parseAttempt('backup@20261126T013230Z.0~12')).toEqual({ instance: 'backup@20261126T013230Z.0', restarts: 12 })
  })

  it('round-trips every instance and attempt', () => {
    fc.assert(fc.property(jobArb, fc.integer({ min: 0, max: 999 }), fc.option(tickArb, { nil: undefined }), fc.integer({ min: 0, max: 10_000 }), (job, index, tick, restarts) => {
      const instance = instanceId(job, index, tick)
      expect(parseAttempt(attemptId(instance, restarts))).toEqual({ instance, restarts })
      expect(tickOf(instance)).toBe(tick ?? null)
    }), { seed: 4302, numRuns: 300 })
  })
})

describe('ticks', () => {
  it('tickText writes UTC to the second, dropping milliseconds', () => {
    expect(tickText(Date.UTC(2026, 10, 26, 1, 32, 30))).toBe('20261126T013230Z')
    expect(tickText(Date.UTC(2026, 10, 26, 1, 32, 30) + 999)).toBe('20261126T013230Z')
    expect(tickText(0)).toBe('19700101T000000Z')
  })

  it('tickOf reads the tick of a cron instance, null for any other', () => {
    expect(tickOf('backup@20261126T013230Z.0')).toBe(Date.UTC(2026, 10, 26, 1, 32, 30))
    expect(tickOf('backup@20261126T013230Z.14')).toBe(Date.UTC(2026, 10, 26, 1, 32, 30))
    expect(tickOf('web.0')).toBeNull()
    expect(tickOf('backup@2026-11-26.0')).toBeNull()
    expect(tickOf('backup@20261126T013230Z')).toBeNull()
  })

  it('tickText and tickOf round-trip whole seconds', () => {
    fc.assert(fc.property(tickArb, (tick) => {
      expect(tickOf(`j@${tickText(tick)}.0`)).toBe(tick)
    }), { seed: 4303, numRuns: 300 })
  })
})

describe('latestTick', () => {
  it('with a seconds schedule: the latest multiple of 10 s', () => {
    const every10s = cron('*/10 * * * * *')
    expect(latestTick(every10s, T + 25_500)).toBe(T + 20_000)
    expect(latestTick(every10s, T + 29_999)).toBe(T + 20_000)
    expect(latestTick(every10s, T + 30_000)).toBe(T + 30_000)
  })

  it('with a minutes schedule: the latest multiple of 5 min', () => {
    const every5m = cron('*/5 * * * *')
    expect(latestTick(every5m, T + 4 * 60_000 + 59_999)).toBe(T)
    expect(latestTick(every5m, T + 5 * 60_000)).toBe(T + 5 * 60_000)
    expect(latestTick(every5m, T + 7 * 60_000 + 1)).toBe(T + 5 * 60_000)
  })

  it('in a time zone: 03:00 in New York is 08:00 UTC in winter and 07:00 UTC in summer', () => {
    const nightly = cron('0 3 * * *', 'America/New_York')
    expect(latestTick(nightly, Date.UTC(2026, 0, 15, 12, 0, 0))).toBe(Date.UTC(2026, 0, 15, 8, 0, 0))
    expect(latestTick(nightly, Date.UTC(2026, 0, 15, 7, 59, 59))).toBe(Date.UTC(2026, 0, 14, 8, 0, 0))
    expect(latestTick(nightly, Date.UTC(2026, 6, 15, 12, 0, 0))).toBe(Date.UTC(2026, 6, 15, 7, 0, 0))
    // The same schedule in UTC is another tick: the cache is keyed by zone too.
    expect(latestTick(cron('0 3 * * *'), Date.UTC(2026, 0, 15, 12, 0, 0))).toBe(Date.UTC(2026, 0, 15, 3, 0, 0))
  })

  it('counts a tick exactly at now, and anywhere in its second', () => {
    const every5m = cron('*/5 * * * *')
    expect(latestTick(every5m, T)).toBe(T)
    expect(latestTick(every5m, T + 999)).toBe(T)
    expect(latestTick(every5m, T - 1)).toBe(T - 5 * 60_000)
    expect(latestTick(cron('*/10 * * * * *'), T + 10_000)).toBe(T + 10_000)
  })

  it('is a tick at or before now, and no later tick lies between it and now', () => {
    const every7s = cron('*/7 * * * * *')
    fc.assert(fc.property(fc.integer({ min: T, max: T + 86_400_000 }), (now) => {
      const tick = latestTick(every7s, now)!
      expect(tick).toBeLessThanOrEqual(now)
      expect(new Date(tick).getUTCSeconds() % 7).toBe(0)
      // The next tick of the pattern (0, 7, …, 56, then the next minute's 0) is after now.
      const s = new Date(tick).getUTCSeconds()
      const next = s + 7 < 60 ? tick + 7_000 : tick + (60 - s) * 1000
      expect(next).toBeGreaterThan(now)
    }), { seed: 4304, numRuns: 300 })
  })
})
