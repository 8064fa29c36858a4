// What a job may ask of the nodes it runs on: label constraints, and how its
// instances spread. Schemas here are the boundary for job specs (the jobs layer
// embeds them); the checks are pure functions of a node's labels and counts.

import { z } from 'zod'

export const CONSTRAINT_LIMITS = Object.freeze({
  /** Constraints on one job; each is evaluated on every node of the pool. */
  constraintsMax: 32,
  /** Values in one `in` / `notIn` list. */
  valuesMax: 64,
  /** Label keys a job can spread over at once. */
  spreadsMax: 4,
  labelKeyCharsMax: 63,
  labelValueCharsMax: 255,
})

const L = CONSTRAINT_LIMITS
const label = z.string().min(1).max(L.labelKeyCharsMax)
const value = z.string().max(L.labelValueCharsMax)
const values = z.array(value).min(1).max(L.valuesMax)

export const constraintSchema = z.discriminatedUnion('op', [
  z.object({ label, op: z.literal('eq'), value }).strict(),
  z.object({ label, op: z.literal('ne'), value }).strict(),
  z.object({ label, op: z.literal('in'), values }).strict(),
  z.object({ label, op: z.literal('notIn'), values }).strict(),
  z.object({ label, op: z.literal('exists') }).strict(),
  z.object({ label, op: z.literal('absent') }).strict(),
])
export type Constraint = z.infer<typeof constraintSchema>

/**
 * Spread a job's instances over the values of a label (zones, racks): placing an
 * instance on value v is allowed only while count(v) + 1 − min count over the
 * label's values stays ≤ maxSkew. The values that count are those of the live
 * nodes that pass the job's constraints; a node without the label cannot take
 * the job. (Kubernetes' topology spread with whenUnsatisfiable: DoNotSchedule.)
 */
export const spreadSchema = z.object({
  label,
  maxSkew: z.number().int().min(1).max(1_000_000).default(1),
}).strict()
export type Spread = z.output<typeof spreadSchema>

export const constraintsSchema = z.array(constraintSchema).max(L.constraintsMax)
export const spreadsSchema = z.array(spreadSchema).max(L.spreadsMax)

/** A label's value; own keys only, so that `constructor` is not a label every node has. */
export function labelValue (labels: Readonly<Record<string, string>>, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined
}

/** Whether labels satisfy one constraint. */
export function satisfies (labels: Readonly<Record<string, string>>, c: Constraint): boolean {
  const actual = labelValue(labels, c.label)
  switch (c.op) {
    case 'eq': return actual === c.value
    case 'ne': return actual !== c.value
    case 'in': return actual !== undefined && c.values.includes(actual)
    case 'notIn': return actual === undefined || !c.values.includes(actual)
    case 'exists': return actual !== undefined
    case 'absent': return actual === undefined
  }
}

/** The first constraint the labels fail, if any. */
export function firstFailed (labels: Readonly<Record<string, string>>, constraints: readonly Constraint[]): Constraint | undefined {
  for (const c of constraints) if (!satisfies(labels, c)) return c
  return undefined
}

/** A constraint as people write it: `zone=eu`, `zone!=eu`, `zone in (a, b)`, `gpu exists`. */
export function constraintText (c: Constraint): string {
  switch (c.op) {
    case 'eq': return `${c.label}=${c.value}`
    case 'ne': return `${c.label}!=${c.value}`
    case 'in': return `${c.label} in (${c.values.join(', ')})`
    case 'notIn': return `${c.label} not in (${c.values.join(', ')})`
    case 'exists': return `${c.label} exists`
    case 'absent': return `${c.label} absent`
  }
}
