// The job spec: what a user writes (YAML, JSON or CLI flags) and the normal form
// the cluster stores. Validated at the API, with errors that name the field and
// the fix; read back from the shared state through the same normal-form schema,
// because peers fill the document. No I/O.

import { posix } from 'node:path'
import { Cron } from 'croner'
import { z } from 'zod'
import { constraintsSchema, spreadsSchema } from '../../placement/constraints.ts'
import { parseCpu, parseDuration, parseSize } from '../units.ts'

export const JOB_LIMITS = Object.freeze({
  countMax: 1_000,
  argsMax: 256,
  argCharsMax: 4_096,
  envMax: 128,
  envValueCharsMax: 4_096,
  restartAttemptsMax: 1_000,
  graceMsMax: 10 * 60_000,
  restartDelayMsMax: 60 * 60_000,
  /** The smallest memory limit a task may ask for: less cannot hold a shell. */
  memoryBytesMin: 4 * 1024 * 1024,
})

export const JOB_TYPES = ['batch', 'service', 'cron'] as const
export type JobType = typeof JOB_TYPES[number]

const NAME = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/

/**
 * Why a workdir cannot be a task's, or null: it must stay inside the task's own dir, so it is relative and
 * does not climb out with `..`. The executor checks again at start, on the real path (a peer's record is
 * untrusted, and a symlink could point out).
 */
export function workdirProblem (workdir: string): string | null {
  if (workdir.includes('\0')) return 'must not contain NUL'
  if (posix.isAbsolute(workdir)) return `'${workdir}' is absolute; give a path relative to the task's own dir (MURMUR_ALLOC_DIR), e.g. 'data'`
  const normal = posix.normalize(workdir)
  if (normal === '..' || normal.startsWith('../')) return `'${workdir}' leaves the task's own dir; give a path inside it, without '..' above it`
  return null
}
const workdirSchema = z.string().min(1).max(JOB_LIMITS.argCharsMax).superRefine((workdir, ctx) => {
  const problem = workdirProblem(workdir)
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem })
})
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/

/** The largest uid the kernel takes (2^32 - 1 means "no id"). */
export const RUN_AS_MAX = 2 ** 32 - 2
/** Why a value is no runAs, naming what was given: `runAs: '1000'` reads much like `runAs: 1000`. */
const runAsError = (issue: { input?: unknown }): string | undefined => {
  if (issue.input === undefined) return undefined
  const got = typeof issue.input === 'string' ? `'${issue.input}' (in quotes: a string)` : typeof issue.input === 'number' ? String(issue.input) : JSON.stringify(issue.input) ?? String(issue.input)
  return `a uid is a whole number from 0 to ${RUN_AS_MAX}, written without quotes (runAs: 1000); got ${got}`
}
/**
 * The uid the job's tasks run as: a plain integer, never coerced ('1000', null, true are refused), so that
 * `runAs: 0`, root, is always written as such. Absent: a uid of the task's own (a root node) or the node's.
 */
const runAsSchema = z.number({ error: runAsError }).int({ error: runAsError }).min(0, { error: runAsError }).max(RUN_AS_MAX, { error: runAsError })

/** A value in units ("500m", "256M", "30s") or a bare number, parsed by `parse`; the unit error becomes the field's. */
function units (parse: (text: string) => number, bareNumber: (n: number) => number) {
  return z.union([z.number(), z.string()]).transform((value, ctx) => {
    try {
      const n = typeof value === 'number' ? bareNumber(value) : parse(value)
      if (!Number.isFinite(n) || n < 0) throw new Error(`'${value}' must not be negative`)
      return n
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  })
}
/** CPU: cores as a number (0.5) or a string ("0.5", "500m"). */
const cpu = units(parseCpu, (n) => Math.round(n * 1000))
/** Memory: bytes as a number, or a size with a unit ("256M"); whole bytes, as the stored spec holds them. */
const memory = units(parseSize, (n) => Math.floor(n))
/** A duration: "500ms", "30s", or a number of milliseconds (whole). */
const duration = units(parseDuration, (n) => Math.round(n))

const restartInput = z.object({
  attempts: z.number().int().min(0).max(JOB_LIMITS.restartAttemptsMax).optional(),
  delay: duration.optional(),
  backoff: z.number().min(1).max(10).optional(),
  maxDelay: duration.optional(),
}).strict()

/** The job as a user writes it. */
export const jobInputSchema = z.object({
  name: z.string().regex(NAME, 'use 1–63 lowercase letters, digits, ".", "_" or "-", starting and ending with a letter or digit'),
  type: z.enum(JOB_TYPES).default('batch'),
  command: z.string().min(1, 'name the program to run').max(JOB_LIMITS.argCharsMax),
  args: z.array(z.string().max(JOB_LIMITS.argCharsMax)).max(JOB_LIMITS.argsMax).default([]),
  env: z.record(z.string().regex(ENV_KEY, 'an environment variable name is letters, digits and _, not starting with a digit'), z.string().max(JOB_LIMITS.envValueCharsMax))
    .refine((env) => Object.keys(env).length <= JOB_LIMITS.envMax, `at most ${JOB_LIMITS.envMax} variables`).default({}),
  workdir: workdirSchema.optional(),
  runAs: runAsSchema.optional(),
  cpu: cpu.default(100),
  memory: memory.default(128 * 1024 * 1024),
  count: z.number().int().min(1, 'run at least 1 instance').max(JOB_LIMITS.countMax, `at most ${JOB_LIMITS.countMax} instances per job; split the work into several jobs`).default(1),
  constraints: constraintsSchema.default([]),
  spread: spreadsSchema.default([]),
  perNodeMax: z.number().int().min(1).max(JOB_LIMITS.countMax).optional(),
  restart: restartInput.default({}),
  grace: duration.default(10_000),
  partition: z.enum(['majority', 'both']).default('majority'),
  schedule: z.string().min(1).max(256).optional(),
  timezone: z.string().min(1).max(64).optional(),
  missed: z.enum(['skip', 'run-once']).optional(),
  overlap: z.enum(['skip', 'allow']).optional(),
}).strict()
export type JobInput = z.input<typeof jobInputSchema>

/** The normal form, stored in the job record's `spec`: numbers in millicores, bytes and milliseconds. */
export const jobSpecSchema = z.object({
  command: z.string().min(1).max(JOB_LIMITS.argCharsMax),
  args: z.array(z.string().max(JOB_LIMITS.argCharsMax)).max(JOB_LIMITS.argsMax),
  env: z.record(z.string().regex(ENV_KEY), z.string().max(JOB_LIMITS.envValueCharsMax)),
  // A peer's record with a workdir outside the task's dir is no spec: no node runs it.
  workdir: workdirSchema.optional(),
  // Who the tasks run as; the API checks that the submitting user may name this uid, the node only that it can.
  runAs: runAsSchema.optional(),
  cpuMillis: z.number().int().min(1),
  memoryBytes: z.number().int().min(JOB_LIMITS.memoryBytesMin),
  count: z.number().int().min(1).max(JOB_LIMITS.countMax),
  constraints: constraintsSchema,
  spread: spreadsSchema,
  perNodeMax: z.number().int().min(1).optional(),
  restart: z.object({
    attempts: z.number().int().min(0).max(JOB_LIMITS.restartAttemptsMax),
    delayMs: z.number().int().min(0).max(JOB_LIMITS.restartDelayMsMax),
    backoff: z.number().min(1).max(10),
    maxDelayMs: z.number().int().min(0).max(JOB_LIMITS.restartDelayMsMax),
  }).strict(),
  graceMs: z.number().int().min(0).max(JOB_LIMITS.graceMsMax),
  partition: z.enum(['majority', 'both']),
  cron: z.object({
    schedule: z.string().max(256),
    timezone: z.string().max(64),
    missed: z.enum(['skip', 'run-once']),
    overlap: z.enum(['skip', 'allow']),
  }).strict()
    // A peer's record is read through this schema too: a schedule that does not parse makes the spec unreadable, not a pass fail.
    .refine((c) => scheduleProblem(c.schedule, c.timezone) === null, 'not a cron schedule and time zone')
    .optional(),
}).strict()
export type JobSpec = z.infer<typeof jobSpecSchema>

export interface NormalJob { name: string, type: JobType, spec: JobSpec }

/** Thrown for a spec that cannot run: the message names the field and the fix. */
export class JobSpecError extends Error {
  override name = 'JobSpecError'
}

/** Validates a job as a user wrote it and returns its normal form, or throws a JobSpecError. */
export function normalizeJob (input: unknown): NormalJob {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new JobSpecError('a job spec is an object with at least name and command')
  const parsed = jobInputSchema.safeParse(input)
  if (!parsed.success) throw new JobSpecError(issueText(parsed.error))
  const j = parsed.data
  const field = (name: string, message: string): never => { throw new JobSpecError(`${name}: ${message}`) }
  if (j.cpu < 1) field('cpu', `${j.cpu} millicores is nothing; ask for at least 1m (0.001 cores)`)
  if (j.memory < JOB_LIMITS.memoryBytesMin) field('memory', `${j.memory} bytes cannot hold a process; ask for at least 4M`)
  if (j.grace > JOB_LIMITS.graceMsMax) field('grace', `at most ${JOB_LIMITS.graceMsMax / 60_000} minutes`)
  const delayMs = j.restart.delay ?? 1_000
  const maxDelayMs = j.restart.maxDelay ?? 60_000
  if (delayMs > JOB_LIMITS.restartDelayMsMax) field('restart.delay', 'at most 1h')
  if (maxDelayMs > JOB_LIMITS.restartDelayMsMax) field('restart.maxDelay', 'at most 1h')
  if (maxDelayMs < delayMs) field('restart.maxDelay', `must be at least restart.delay (${delayMs} ms)`)
  const cronFields = ['schedule', 'timezone', 'missed', 'overlap'] as const
  let cron: JobSpec['cron']
  if (j.type === 'cron') {
    if (j.schedule === undefined) field('schedule', 'a cron job needs a schedule, e.g. "*/5 * * * *" (minutes) or "*/10 * * * * *" (with seconds)')
    const timezone = j.timezone ?? 'UTC'
    const problem = scheduleProblem(j.schedule!, timezone)
    if (problem !== null) field(problem.field, problem.message)
    cron = { schedule: j.schedule!, timezone, missed: j.missed ?? 'skip', overlap: j.overlap ?? 'skip' }
  } else {
    for (const f of cronFields) if (j[f] !== undefined) field(f, `only a cron job takes '${f}'; add type: cron, or remove it`)
  }
  if (j.perNodeMax !== undefined && j.perNodeMax > j.count) field('perNodeMax', `is more than count (${j.count}); leave it out`)
  const spec: JobSpec = {
    command: j.command,
    args: j.args,
    env: j.env,
    ...(j.workdir !== undefined ? { workdir: j.workdir } : {}),
    ...(j.runAs !== undefined ? { runAs: j.runAs } : {}),
    cpuMillis: j.cpu,
    memoryBytes: j.memory,
    count: j.count,
    constraints: j.constraints,
    spread: j.spread,
    ...(j.perNodeMax !== undefined ? { perNodeMax: j.perNodeMax } : {}),
    // A batch is retried 3 times by default; a service is restarted without end, so attempts do not apply.
    restart: { attempts: j.restart.attempts ?? 3, delayMs, backoff: j.restart.backoff ?? 2, maxDelayMs },
    graceMs: j.grace,
    partition: j.partition,
    ...(cron !== undefined ? { cron } : {}),
  }
  return { name: j.name, type: j.type, spec }
}

/** Specs already read, by the stored object: the state hands out the same object until the record changes. */
const readSpecs = new WeakMap<object, JobSpec | null>()

/** The stored spec of a job record, or null if a peer wrote something that is not one. */
export function readSpec (raw: unknown): JobSpec | null {
  if (raw === null || typeof raw !== 'object') return null
  let spec = readSpecs.get(raw)
  if (spec === undefined) {
    const parsed = jobSpecSchema.safeParse(raw)
    spec = parsed.success ? parsed.data : null
    readSpecs.set(raw, spec)
  }
  return spec
}

function scheduleProblem (schedule: string, timezone: string): { field: string, message: string } | null {
  try {
    new Cron(schedule, { paused: true, timezone }).nextRun(new Date(0))
  } catch (err) {
    const text = (err as Error).message
    if (/timezone/i.test(text)) return { field: 'timezone', message: `'${timezone}' is not an IANA time zone; write e.g. UTC, Europe/Berlin, America/New_York` }
    return { field: 'schedule', message: `'${schedule}' is not a cron schedule: ${text.replace(/^CronPattern: /, '')}` }
  }
  return null
}

/** Milliseconds between backoff `n` (0 for the first restart) and the attempt after it. */
export function restartDelay (spec: JobSpec, n: number): number {
  return Math.min(spec.restart.maxDelayMs, Math.round(spec.restart.delayMs * spec.restart.backoff ** Math.min(n, 30)))
}

function issueText (error: z.ZodError): string {
  const issue = error.issues[0]!
  const path = issue.path.join('.')
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys
    return `${path === '' ? '' : `${path}: `}unknown field${keys.length > 1 ? 's' : ''} ${keys.map((k) => `'${k}'`).join(', ')}; check the spelling (the fields are listed in README.md, "Job spec")`
  }
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) return `${path}: is required`
  // A record's key: zod puts the key schema's own message one level down.
  const inner = (issue as { issues?: Array<{ message: string }> }).issues?.[0]?.message
  if (issue.code === 'invalid_key' && inner !== undefined) return `${path}: ${inner}`
  return `${path === '' ? '(spec)' : path}: ${issue.message}`
}
