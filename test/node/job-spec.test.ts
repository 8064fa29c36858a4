// The job spec as a user writes it and the normal form the cluster stores:
// defaults, units, one test per refusal (each message must name the field and
// say what to do), the stored form read back, and the restart backoff.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { JOB_LIMITS, JobSpecError, normalizeJob, readSpec, restartDelay, type JobSpec } from '../../node/jobs/spec.ts'

const MiB = 2 ** 20
const BASE = { name: 'web', command: 'sleep' }

/** The message of the JobSpecError that `input` is refused with. */
function refusal (input: unknown): string {
  try {
    normalizeJob(input)
  } catch (err) {
    expect(err).toBeInstanceOf(JobSpecError)
    return (err as Error).message
  }
  throw new Error(`expected ${JSON.stringify(input)} to be refused`)
}

function specOf (input: object): JobSpec {
  return normalizeJob({ ...BASE, ...input }).spec
}

describe('normalizeJob: defaults', () => {
  it('fills every default of a batch job', () => {
    expect(normalizeJob(BASE)).toEqual({
      name: 'web',
      type: 'batch',
      spec: {
        command: 'sleep',
        args: [],
        env: {},
        cpuMillis: 100,
        memoryBytes: 128 * MiB,
        count: 1,
        constraints: [],
        spread: [],
        restart: { attempts: 3, delayMs: 1_000, backoff: 2, maxDelayMs: 60_000 },
        graceMs: 10_000,
        partition: 'majority',
      },
    })
  })

  it('gives a cron job UTC, missed skip and overlap skip', () => {
    const job = normalizeJob({ ...BASE, type: 'cron', schedule: '*/5 * * * *' })
    expect(job.type).toBe('cron')
    expect(job.spec.cron).toEqual({ schedule: '*/5 * * * *', timezone: 'UTC', missed: 'skip', overlap: 'skip' })
  })

  it('leaves out workdir and perNodeMax unless given, and keeps them when given', () => {
    const plain = specOf({})
    expect('workdir' in plain).toBe(false)
    expect('perNodeMax' in plain).toBe(false)
    expect('cron' in plain).toBe(false)
    const full = specOf({ workdir: 'srv', perNodeMax: 1, count: 2, args: ['60'], env: { A_1: 'x' } })
    expect(full).toMatchObject({ workdir: 'srv', perNodeMax: 1, count: 2, args: ['60'], env: { A_1: 'x' } })
  })
})

describe('normalizeJob: units', () => {
  it('reads CPU as cores or millicores', () => {
    expect(specOf({ cpu: 0.5 }).cpuMillis).toBe(500)
    expect(specOf({ cpu: '500m' }).cpuMillis).toBe(500)
    expect(specOf({ cpu: '0.25' }).cpuMillis).toBe(250)
    expect(specOf({ cpu: 2 }).cpuMillis).toBe(2_000)
  })

  it('reads memory as a size with a binary unit, or bytes', () => {
    expect(specOf({ memory: '256M' }).memoryBytes).toBe(256 * MiB)
    expect(specOf({ memory: '1.5G' }).memoryBytes).toBe(1.5 * 1024 * MiB)
    expect(specOf({ memory: 8 * MiB }).memoryBytes).toBe(8 * MiB)
  })

  it('reads durations as text or milliseconds', () => {
    expect(specOf({ grace: '30s' }).graceMs).toBe(30_000)
    expect(specOf({ grace: 2_500 }).graceMs).toBe(2_500)
    expect(specOf({ restart: { delay: '500ms', maxDelay: '2m' } }).restart).toEqual({ attempts: 3, delayMs: 500, backoff: 2, maxDelayMs: 120_000 })
  })
})

describe('normalizeJob: refusals name the field and the fix', () => {
  it('refuses what is not an object', () => {
    for (const input of [null, 'web', 42, ['web']]) expect(refusal(input)).toBe('a job spec is an object with at least name and command')
  })

  it('refuses an unknown field at the top level', () => {
    expect(refusal({ ...BASE, colour: 'red' })).toMatch(/^unknown field 'colour'; check the spelling/)
  })

  it('refuses an unknown field inside restart', () => {
    expect(refusal({ ...BASE, restart: { tries: 3 } })).toMatch(/^restart: unknown field 'tries'; check the spelling/)
  })

  it('refuses a workdir that is absolute or leaves the task\'s own dir, and takes one inside it', () => {
    expect(refusal({ ...BASE, workdir: '/srv' })).toMatch(/^workdir: '\/srv' is absolute; give a path relative to the task's own dir/)
    for (const workdir of ['..', '../', '../../', 'a/../..', './../x', 'a/b/../../../etc']) {
      expect(refusal({ ...BASE, workdir })).toMatch(/^workdir: '.*' leaves the task's own dir; give a path inside it/)
    }
    for (const workdir of ['data', './data', 'a/../b', 'a/b/..', '.', '..data']) expect(specOf({ workdir }).workdir).toBe(workdir)
    // One line, naming the field.
    expect(refusal({ ...BASE, workdir: '../../' }).split('\n')).toHaveLength(1)
  })

  it('refuses a missing name', () => {
    expect(refusal({ command: 'sleep' })).toBe('name: is required')
  })

  it('refuses a missing or empty command', () => {
    expect(refusal({ name: 'web' })).toBe('command: is required')
    expect(refusal({ name: 'web', command: '' })).toBe('command: name the program to run')
  })

  it('refuses a bad name', () => {
    for (const name of ['Web', 'web server', '-web', 'web-', 'a'.repeat(64), 'web@1', '']) {
      expect(refusal({ ...BASE, name })).toMatch(/^name: use 1–63 lowercase letters, digits/)
    }
  })

  it('refuses a negative cpu', () => {
    expect(refusal({ ...BASE, cpu: -1 })).toBe("cpu: '-1' must not be negative")
    expect(refusal({ ...BASE, cpu: '-1' })).toMatch(/^cpu: '-1' is not a CPU amount: write cores \(0\.5, 2\) or millicores \(500m\)/)
  })

  it('refuses cpu "0" and amounts that round to nothing', () => {
    expect(refusal({ ...BASE, cpu: '0' })).toBe('cpu: 0 millicores is nothing; ask for at least 1m (0.001 cores)')
    expect(refusal({ ...BASE, cpu: 0.0001 })).toMatch(/^cpu: .*ask for at least 1m/)
  })

  it('refuses memory "1K"', () => {
    expect(refusal({ ...BASE, memory: '1K' })).toBe('memory: 1024 bytes cannot hold a process; ask for at least 4M')
    expect(refusal({ ...BASE, memory: '12 parsecs' })).toMatch(/^memory: '12 parsecs' is not a size: write a number with an optional unit/)
  })

  it('refuses count 0 and 1,000,000', () => {
    expect(refusal({ ...BASE, count: 0 })).toBe('count: run at least 1 instance')
    expect(refusal({ ...BASE, count: 1_000_000 })).toBe(`count: at most ${JOB_LIMITS.countMax} instances per job; split the work into several jobs`)
  })

  // zod 4 reports a bad record key as `invalid_key` with the key's own message nested inside.
  it('refuses a bad env key, saying what a name may hold', () => {
    const message = refusal({ ...BASE, env: { '1BAD': 'x' } })
    expect(message).toMatch(/^env/)
    expect(message).toMatch(/letters, digits and _/)
  })

  it('refuses a bad env key, naming it', () => {
    expect(refusal({ ...BASE, env: { '1BAD': 'x' } })).toMatch(/^env\.1BAD: /)
  })

  it('refuses a cron job without a schedule', () => {
    expect(refusal({ ...BASE, type: 'cron' })).toMatch(/^schedule: a cron job needs a schedule, e\.g\. "\*\/5 \* \* \* \*"/)
  })

  it('refuses a bad schedule', () => {
    expect(refusal({ ...BASE, type: 'cron', schedule: 'every day' })).toMatch(/^schedule: 'every day' is not a cron schedule: .*five, six, or seven/)
    expect(refusal({ ...BASE, type: 'cron', schedule: '61 * * * *' })).toMatch(/^schedule: '61 \* \* \* \*' is not a cron schedule: .*minute/)
  })

  it('refuses a bad timezone', () => {
    expect(refusal({ ...BASE, type: 'cron', schedule: '* * * * *', timezone: 'Mars/Olympus' }))
      .toBe("timezone: 'Mars/Olympus' is not an IANA time zone; write e.g. UTC, Europe/Berlin, America/New_York")
  })

  it('refuses a schedule, timezone, missed or overlap on a batch or service job', () => {
    expect(refusal({ ...BASE, schedule: '* * * * *' })).toBe('schedule: only a cron job takes \'schedule\'; add type: cron, or remove it')
    expect(refusal({ ...BASE, type: 'service', timezone: 'UTC' })).toBe('timezone: only a cron job takes \'timezone\'; add type: cron, or remove it')
    expect(refusal({ ...BASE, missed: 'skip' })).toBe('missed: only a cron job takes \'missed\'; add type: cron, or remove it')
    expect(refusal({ ...BASE, overlap: 'allow' })).toBe('overlap: only a cron job takes \'overlap\'; add type: cron, or remove it')
  })

  it('refuses perNodeMax over count', () => {
    expect(refusal({ ...BASE, count: 2, perNodeMax: 3 })).toBe('perNodeMax: is more than count (2); leave it out')
    expect(specOf({ count: 3, perNodeMax: 3 }).perNodeMax).toBe(3)
  })

  it('refuses restart.maxDelay below restart.delay', () => {
    expect(refusal({ ...BASE, restart: { delay: '10s', maxDelay: '5s' } })).toBe('restart.maxDelay: must be at least restart.delay (10000 ms)')
    // The default maxDelay (60 s) is below a delay of 2 minutes too.
    expect(refusal({ ...BASE, restart: { delay: '2m' } })).toBe('restart.maxDelay: must be at least restart.delay (120000 ms)')
  })

  it('refuses a grace over its limit', () => {
    expect(refusal({ ...BASE, grace: '11m' })).toBe('grace: at most 10 minutes')
  })

  it('takes runAs as a uid written as a whole number, 0 included, and refuses anything else without coercing it', () => {
    expect('runAs' in specOf({})).toBe(false)
    expect(specOf({ runAs: 1000 }).runAs).toBe(1000)
    // Root is a uid like any other here, spelled out: whether a user may name it is the API's to check.
    expect(specOf({ runAs: 0 }).runAs).toBe(0)
    expect(specOf({ runAs: 2 ** 32 - 2 }).runAs).toBe(2 ** 32 - 2)
    const fix = 'runAs: a uid is a whole number from 0 to 4294967294, written without quotes (runAs: 1000); got'
    expect(refusal({ ...BASE, runAs: -1 })).toBe(`${fix} -1`)
    expect(refusal({ ...BASE, runAs: 2 ** 32 })).toBe(`${fix} 4294967296`)
    expect(refusal({ ...BASE, runAs: 2 ** 32 - 1 })).toBe(`${fix} 4294967295`)
    expect(refusal({ ...BASE, runAs: '1000' })).toBe(`${fix} '1000' (in quotes: a string)`)
    expect(refusal({ ...BASE, runAs: '0' })).toBe(`${fix} '0' (in quotes: a string)`)
    expect(refusal({ ...BASE, runAs: 1.5 })).toBe(`${fix} 1.5`)
    expect(refusal({ ...BASE, runAs: null })).toBe(`${fix} null`)
    expect(refusal({ ...BASE, runAs: false })).toBe(`${fix} false`)
    expect(refusal({ ...BASE, runAs: true })).toBe(`${fix} true`)
    expect(refusal({ ...BASE, runAs: NaN })).toBe(`${fix} NaN`)
    expect(refusal({ ...BASE, runAs: [1000] })).toBe(`${fix} [1000]`)
  })
})

describe('readSpec', () => {
  it('refuses a stored cron spec whose schedule or time zone a peer made unreadable', () => {
    const { spec } = normalizeJob({ ...BASE, type: 'cron', schedule: '*/5 * * * *' })
    expect(readSpec(JSON.parse(JSON.stringify(spec)))).toEqual(spec)
    expect(readSpec({ ...spec, cron: { ...spec.cron!, schedule: 'every now and then' } })).toBeNull()
    expect(readSpec({ ...spec, cron: { ...spec.cron!, timezone: 'Mars/Olympus' } })).toBeNull()
  })

  it('reads back a stored runAs, 0 included, and refuses one a peer wrote as anything but a uid', () => {
    for (const runAs of [0, 1000]) {
      const spec = specOf({ runAs })
      expect(readSpec(JSON.parse(JSON.stringify(spec)))).toEqual(spec)
    }
    const spec = specOf({})
    for (const runAs of ['0', '1000', null, true, -1, 1.5, 2 ** 32]) expect(readSpec({ ...spec, runAs }), JSON.stringify(runAs)).toBeNull()
  })

  it('refuses a stored spec whose workdir a peer made leave the task\'s dir', () => {
    const spec = specOf({ workdir: 'data' })
    expect(readSpec(spec)).toEqual(spec)
    for (const workdir of ['/etc', '../..', 'a/../../x']) expect(readSpec({ ...spec, workdir })).toBeNull()
  })

  it('accepts a normalized spec, also after a JSON round trip', () => {
    for (const input of [BASE, { ...BASE, type: 'cron', schedule: '0 3 * * *', timezone: 'America/New_York', missed: 'run-once' }, { ...BASE, cpu: '1.5', memory: '1G', count: 4, perNodeMax: 2, workdir: 'srv/data', constraints: [{ label: 'zone', op: 'eq', value: 'a' }] }]) {
      const { spec } = normalizeJob(input)
      expect(readSpec(spec)).toEqual(spec)
      expect(readSpec(JSON.parse(JSON.stringify(spec)))).toEqual(spec)
    }
  })

  it('refuses garbage', () => {
    const spec = specOf({})
    const garbage: unknown[] = [
      null, undefined, 'sleep', 42, [], {},
      { ...spec, extra: true },
      { ...spec, cpuMillis: 0 },
      { ...spec, memoryBytes: 1024 },
      { ...spec, count: 0 },
      { ...spec, count: 1.5 },
      { ...spec, command: '' },
      { ...spec, env: { '1BAD': 'x' } },
      { ...spec, restart: { ...spec.restart, extra: 1 } },
      { ...spec, partition: 'minority' },
      { ...spec, cron: { schedule: '* * * * *', timezone: 'UTC', missed: 'skip' } },
    ]
    for (const raw of garbage) expect(readSpec(raw), JSON.stringify(raw)).toBeNull()
  })

  // The stored spec holds whole bytes and milliseconds: a fractional bare number is
  // rounded, or no node could read the job back and it would never run.
  it('reads back whatever normalizeJob accepted, fractional bare numbers included', () => {
    for (const input of [{ memory: 4 * MiB + 0.5 }, { grace: 1.5 }, { restart: { delay: 1.5 } }]) {
      expect(readSpec(specOf(input)), JSON.stringify(input)).not.toBeNull()
    }
  })

  it('reads back whatever normalizeJob accepted, for inputs in units', () => {
    const inputArb = fc.record({
      cpu: fc.oneof(fc.integer({ min: 1, max: 64_000 }).map((m) => `${m}m`), fc.integer({ min: 1, max: 64 }).map((c) => c / 4)),
      memory: fc.integer({ min: 4, max: 65_536 }).map((m) => `${m}M`),
      count: fc.integer({ min: 1, max: JOB_LIMITS.countMax }),
      grace: fc.integer({ min: 0, max: 600 }).map((s) => `${s}s`),
      partition: fc.constantFrom('majority', 'both'),
    }, { requiredKeys: [] })
    fc.assert(fc.property(inputArb, (input) => {
      const { spec } = normalizeJob({ ...BASE, ...input })
      expect(readSpec(JSON.parse(JSON.stringify(spec)))).toEqual(spec)
    }), { seed: 4301, numRuns: 200 })
  })
})

describe('restartDelay', () => {
  it('grows by the backoff from the delay and stops at maxDelay', () => {
    const spec = specOf({})
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((n) => restartDelay(spec, n))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000])
  })

  it('stays at the cap for any number of restarts', () => {
    const spec = specOf({ restart: { delay: '1s', maxDelay: '1h', backoff: 10 } })
    for (const n of [4, 30, 31, 1_000, 1e9]) expect(restartDelay(spec, n)).toBe(3_600_000)
  })

  it('with backoff 1 is the delay every time', () => {
    const spec = specOf({ restart: { delay: '250ms', backoff: 1 } })
    for (const n of [0, 1, 10, 100]) expect(restartDelay(spec, n)).toBe(250)
  })

  it('rounds a fractional backoff to whole milliseconds', () => {
    const spec = specOf({ restart: { delay: '1s', backoff: 1.5 } })
    expect([0, 1, 2, 3].map((n) => restartDelay(spec, n))).toEqual([1_000, 1_500, 2_250, 3_375])
  })
})
