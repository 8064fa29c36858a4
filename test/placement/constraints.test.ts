// Label constraints and spreads: what each operator means on a node's labels
// (missing labels and the keys every plain object inherits included), what the
// job-spec schemas accept and refuse, and how constraints read in messages.
// The one property uses fast-check with a fixed seed, printed in the describe
// title; SEED=<n> replays another.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CONSTRAINT_LIMITS, constraintSchema, constraintsSchema, constraintText, firstFailed, labelValue, satisfies, spreadSchema, spreadsSchema,
  type Constraint,
} from '../../placement/constraints.ts'
import { seedFromEnv } from '../../testnet/sim/rng.ts'

const runSeed = seedFromEnv(4404)

const EU = { zone: 'eu' }
const US = { zone: 'us' }
const EMPTY_VALUE = { zone: '' }
const NONE = {}

describe('satisfies: truth table of each operator', () => {
  const table: Array<[string, Constraint, Record<string, string>, boolean]> = [
    ['eq, same value', { label: 'zone', op: 'eq', value: 'eu' }, EU, true],
    ['eq, other value', { label: 'zone', op: 'eq', value: 'eu' }, US, false],
    ['eq, label missing', { label: 'zone', op: 'eq', value: 'eu' }, NONE, false],
    ['eq, empty value against a missing label', { label: 'zone', op: 'eq', value: '' }, NONE, false],
    ['eq, empty value against an empty value', { label: 'zone', op: 'eq', value: '' }, EMPTY_VALUE, true],
    ['eq is case-sensitive', { label: 'zone', op: 'eq', value: 'EU' }, EU, false],
    ['ne, same value', { label: 'zone', op: 'ne', value: 'eu' }, EU, false],
    ['ne, other value', { label: 'zone', op: 'ne', value: 'eu' }, US, true],
    ['ne, label missing', { label: 'zone', op: 'ne', value: 'eu' }, NONE, true],
    ['in, first value', { label: 'zone', op: 'in', values: ['eu', 'us'] }, EU, true],
    ['in, second value', { label: 'zone', op: 'in', values: ['eu', 'us'] }, US, true],
    ['in, not listed', { label: 'zone', op: 'in', values: ['ap'] }, EU, false],
    ['in, label missing', { label: 'zone', op: 'in', values: ['eu', 'us'] }, NONE, false],
    ['in, empty value listed', { label: 'zone', op: 'in', values: [''] }, EMPTY_VALUE, true],
    ['notIn, listed', { label: 'zone', op: 'notIn', values: ['eu', 'us'] }, EU, false],
    ['notIn, not listed', { label: 'zone', op: 'notIn', values: ['ap'] }, EU, true],
    ['notIn, label missing', { label: 'zone', op: 'notIn', values: ['eu'] }, NONE, true],
    ['exists, present', { label: 'zone', op: 'exists' }, EU, true],
    ['exists, present with an empty value', { label: 'zone', op: 'exists' }, EMPTY_VALUE, true],
    ['exists, missing', { label: 'zone', op: 'exists' }, NONE, false],
    ['exists, another label only', { label: 'gpu', op: 'exists' }, EU, false],
    ['absent, present', { label: 'zone', op: 'absent' }, EU, false],
    ['absent, present with an empty value', { label: 'zone', op: 'absent' }, EMPTY_VALUE, false],
    ['absent, missing', { label: 'zone', op: 'absent' }, NONE, true],
  ]

  it.each(table)('%s', (_name, c, labels, expected) => {
    expect(satisfies(labels, c)).toBe(expected)
  })
})

describe('keys every plain object inherits are not labels', () => {
  const inherited = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']

  it.each(inherited)('%s on a plain object without it', (key) => {
    const labels: Record<string, string> = { zone: 'eu' }
    expect(labelValue(labels, key)).toBeUndefined()
    expect(satisfies(labels, { label: key, op: 'exists' })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'absent' })).toBe(true)
    expect(satisfies(labels, { label: key, op: 'eq', value: '' })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'eq', value: String((labels as Record<string, unknown>)[key]) })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'ne', value: 'x' })).toBe(true)
    expect(satisfies(labels, { label: key, op: 'in', values: ['[object Object]', 'function Object() { [native code] }'] })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'notIn', values: ['x'] })).toBe(true)
  })

  it.each(inherited)('%s as a node’s own label', (key) => {
    // JSON.parse makes even __proto__ an own data property, as labels decoded from the wire would be.
    const labels = JSON.parse(`{"${key}": "yes"}`) as Record<string, string>
    expect(labelValue(labels, key)).toBe('yes')
    expect(satisfies(labels, { label: key, op: 'exists' })).toBe(true)
    expect(satisfies(labels, { label: key, op: 'absent' })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'eq', value: 'yes' })).toBe(true)
    expect(satisfies(labels, { label: key, op: 'ne', value: 'yes' })).toBe(false)
    expect(satisfies(labels, { label: key, op: 'in', values: ['no', 'yes'] })).toBe(true)
    expect(satisfies(labels, { label: key, op: 'notIn', values: ['yes'] })).toBe(false)
  })

  it('labels without a prototype work the same', () => {
    const labels = Object.assign(Object.create(null) as Record<string, string>, { zone: 'eu' })
    expect(satisfies(labels, { label: 'zone', op: 'eq', value: 'eu' })).toBe(true)
    expect(satisfies(labels, { label: 'constructor', op: 'absent' })).toBe(true)
  })
})

const keyArb = fc.constantFrom('zone', 'rack', 'gpu', 'constructor', '__proto__', 'toString')
const valueArb = fc.constantFrom('', 'eu', 'us', 'ap', 'yes')
const labelsArb = fc.array(fc.tuple(keyArb, valueArb), { maxLength: 4 }).map((entries) => {
  const labels: Record<string, string> = {}
  for (const [k, v] of entries) Object.defineProperty(labels, k, { value: v, enumerable: true, configurable: true, writable: true })
  return labels
})

describe(`satisfies on any labels (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('follows the own labels, and ne / notIn / absent are exactly the negations of eq / in / exists', () => {
    fc.assert(
      fc.property(labelsArb, keyArb, valueArb, fc.array(valueArb, { minLength: 1, maxLength: 3 }), (labels, label, value, values) => {
        const own = Object.hasOwn(labels, label) ? labels[label] : undefined
        const eq = satisfies(labels, { label, op: 'eq', value })
        const isIn = satisfies(labels, { label, op: 'in', values })
        const exists = satisfies(labels, { label, op: 'exists' })
        expect(eq).toBe(own === value)
        expect(isIn).toBe(own !== undefined && (values as readonly string[]).includes(own))
        expect(exists).toBe(own !== undefined)
        expect(satisfies(labels, { label, op: 'ne', value })).toBe(!eq)
        expect(satisfies(labels, { label, op: 'notIn', values })).toBe(!isIn)
        expect(satisfies(labels, { label, op: 'absent' })).toBe(!exists)
      }),
      { seed: runSeed, numRuns: 500 },
    )
  })
})

describe('firstFailed', () => {
  it('is the first constraint in order that the labels fail, or undefined', () => {
    const a: Constraint = { label: 'zone', op: 'eq', value: 'eu' }
    const b: Constraint = { label: 'gpu', op: 'exists' }
    const c: Constraint = { label: 'zone', op: 'in', values: ['us'] }
    expect(firstFailed(EU, [])).toBeUndefined()
    expect(firstFailed(EU, [a])).toBeUndefined()
    expect(firstFailed(EU, [a, b, c])).toBe(b)
    expect(firstFailed(EU, [a, c, b])).toBe(c)
    expect(firstFailed(US, [a, b, c])).toBe(a)
  })
})

describe('constraintSchema', () => {
  const L = CONSTRAINT_LIMITS
  const valid: Array<[string, unknown]> = [
    ['eq', { label: 'zone', op: 'eq', value: 'eu' }],
    ['eq with an empty value', { label: 'zone', op: 'eq', value: '' }],
    ['ne', { label: 'zone', op: 'ne', value: 'eu' }],
    ['in', { label: 'zone', op: 'in', values: ['eu', 'us'] }],
    ['notIn', { label: 'zone', op: 'notIn', values: ['eu'] }],
    ['exists', { label: 'gpu', op: 'exists' }],
    ['absent', { label: 'gpu', op: 'absent' }],
    ['the longest label', { label: 'k'.repeat(L.labelKeyCharsMax), op: 'exists' }],
    ['the longest value', { label: 'zone', op: 'eq', value: 'v'.repeat(L.labelValueCharsMax) }],
    ['the most values', { label: 'zone', op: 'in', values: Array.from({ length: L.valuesMax }, (_, i) => `v${i}`) }],
    ['a label named like a prototype key', { label: '__proto__', op: 'exists' }],
  ]
  const invalid: Array<[string, unknown]> = [
    ['an unknown op', { label: 'zone', op: 'gt', value: '3' }],
    ['no op', { label: 'zone', value: 'eu' }],
    ['an extra field on eq', { label: 'zone', op: 'eq', value: 'eu', values: ['eu'] }],
    ['an extra field on exists', { label: 'gpu', op: 'exists', value: 'yes' }],
    ['an unknown extra field', { label: 'zone', op: 'in', values: ['eu'], weight: 2 }],
    ['too many values', { label: 'zone', op: 'in', values: Array.from({ length: L.valuesMax + 1 }, (_, i) => `v${i}`) }],
    ['no values', { label: 'zone', op: 'notIn', values: [] }],
    ['values that are not a list', { label: 'zone', op: 'in', values: 'eu' }],
    ['a value that is not a string', { label: 'zone', op: 'eq', value: 3 }],
    ['eq without a value', { label: 'zone', op: 'eq' }],
    ['in with value instead of values', { label: 'zone', op: 'in', value: 'eu' }],
    ['an empty label', { label: '', op: 'exists' }],
    ['no label', { op: 'exists' }],
    ['a label too long', { label: 'k'.repeat(L.labelKeyCharsMax + 1), op: 'exists' }],
    ['a value too long', { label: 'zone', op: 'eq', value: 'v'.repeat(L.labelValueCharsMax + 1) }],
    ['a listed value too long', { label: 'zone', op: 'in', values: ['v'.repeat(L.labelValueCharsMax + 1)] }],
    ['not an object', 'zone=eu'],
    ['null', null],
  ]

  it.each(valid)('accepts %s', (_name, input) => {
    const parsed = constraintSchema.safeParse(input)
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true)
    expect(parsed.data).toEqual(input)
  })

  it.each(invalid)('refuses %s', (_name, input) => {
    expect(constraintSchema.safeParse(input).success).toBe(false)
  })

  it('constraintsSchema takes at most constraintsMax constraints', () => {
    const one = { label: 'zone', op: 'exists' }
    expect(constraintsSchema.safeParse([]).success).toBe(true)
    expect(constraintsSchema.safeParse(Array.from({ length: L.constraintsMax }, () => one)).success).toBe(true)
    expect(constraintsSchema.safeParse(Array.from({ length: L.constraintsMax + 1 }, () => one)).success).toBe(false)
    expect(constraintsSchema.safeParse([one, { label: 'zone', op: 'nope' }]).success).toBe(false)
  })
})

describe('spreadSchema', () => {
  const L = CONSTRAINT_LIMITS

  it('accepts a label, with maxSkew 1 by default', () => {
    expect(spreadSchema.parse({ label: 'zone' })).toEqual({ label: 'zone', maxSkew: 1 })
    expect(spreadSchema.parse({ label: 'zone', maxSkew: 2 })).toEqual({ label: 'zone', maxSkew: 2 })
    expect(spreadSchema.parse({ label: 'rack', maxSkew: 1_000_000 })).toEqual({ label: 'rack', maxSkew: 1_000_000 })
    expect(spreadSchema.parse({ label: 'k'.repeat(L.labelKeyCharsMax) }).label).toHaveLength(L.labelKeyCharsMax)
  })

  const invalid: Array<[string, unknown]> = [
    ['maxSkew 0', { label: 'zone', maxSkew: 0 }],
    ['a negative maxSkew', { label: 'zone', maxSkew: -1 }],
    ['a fractional maxSkew', { label: 'zone', maxSkew: 1.5 }],
    ['a maxSkew too large', { label: 'zone', maxSkew: 1_000_001 }],
    ['a NaN maxSkew', { label: 'zone', maxSkew: Number.NaN }],
    ['a string maxSkew', { label: 'zone', maxSkew: '1' }],
    ['an empty label', { label: '' }],
    ['no label', { maxSkew: 1 }],
    ['a label too long', { label: 'k'.repeat(L.labelKeyCharsMax + 1) }],
    ['an extra field', { label: 'zone', maxSkew: 1, whenUnsatisfiable: 'ScheduleAnyway' }],
  ]

  it.each(invalid)('refuses %s', (_name, input) => {
    expect(spreadSchema.safeParse(input).success).toBe(false)
  })

  it('spreadsSchema takes at most spreadsMax spreads', () => {
    const spreads = Array.from({ length: L.spreadsMax }, (_, i) => ({ label: `l${i}` }))
    expect(spreadsSchema.parse(spreads)).toEqual(spreads.map((s) => ({ ...s, maxSkew: 1 })))
    expect(spreadsSchema.safeParse([...spreads, { label: 'one-more' }]).success).toBe(false)
  })
})

describe('constraintText', () => {
  const texts: Array<[Constraint, string]> = [
    [{ label: 'zone', op: 'eq', value: 'eu' }, 'zone=eu'],
    [{ label: 'zone', op: 'ne', value: 'eu' }, 'zone!=eu'],
    [{ label: 'zone', op: 'in', values: ['a', 'b'] }, 'zone in (a, b)'],
    [{ label: 'zone', op: 'in', values: ['a'] }, 'zone in (a)'],
    [{ label: 'zone', op: 'notIn', values: ['a', 'b'] }, 'zone not in (a, b)'],
    [{ label: 'gpu', op: 'exists' }, 'gpu exists'],
    [{ label: 'gpu', op: 'absent' }, 'gpu absent'],
  ]

  it.each(texts)('%o reads %s', (c, text) => {
    expect(constraintText(c)).toBe(text)
  })
})
