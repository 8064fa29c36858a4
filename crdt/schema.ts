// The records of the cluster state and their bounds. Every record that a reader
// takes out of the document passes through these schemas: the document is filled
// by peers, so what it holds is input like any other.

import { z } from 'zod'

export const RECORD_LIMITS = Object.freeze({
  idCharsMax: 128,
  nameCharsMax: 253,
  addrCharsMax: 256,
  addrsMax: 16,
  labelsMax: 64,
  labelKeyCharsMax: 63,
  labelValueCharsMax: 255,
  /** The JSON of one record; a job's spec is the only large part. */
  nodeRecordBytesMax: 16 * 1024,
  jobRecordBytesMax: 64 * 1024,
  taskRecordBytesMax: 16 * 1024,
  reasonCharsMax: 1_024,
  /**
   * What one writer may hold of a kind, over all its spaces: far above what a node
   * writes (a thousand jobs at their largest), and what keeps one member from
   * filling every node's memory. An update that would go over is refused.
   */
  writerBytesMax: { jobs: 64 * 1024 * 1024, tasks: 32 * 1024 * 1024 },
  /** Writer spaces of one writer: its current life, and earlier ones until maintenance moves them. */
  spacesPerWriterMax: 8,
})

const L = RECORD_LIMITS
const id = z.string().min(1).max(L.idCharsMax)
const counter = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
/** Milliseconds since the epoch, by the writer's clock. */
const time = counter

export const labelsSchema = z.record(z.string().min(1).max(L.labelKeyCharsMax), z.string().max(L.labelValueCharsMax))
  .refine((labels) => Object.keys(labels).length <= L.labelsMax, `at most ${L.labelsMax} labels`)

/** A node's own record, written by that node only: what it is and what it offers. */
export const nodeRecordSchema = z.object({
  id,
  addrs: z.array(z.string().min(1).max(L.addrCharsMax)).max(L.addrsMax),
  apiUrl: z.string().max(L.addrCharsMax),
  /** At most 2⁵⁰ (placement's AMOUNT_MAX: sums stay exact), so one peer's record cannot break placement for all. */
  cpuMillis: counter.max(2 ** 50),
  memoryBytes: counter.max(2 ** 50),
  labels: labelsSchema,
  /** When this life of the node started, and when it last changed this record. */
  startedAt: time,
  updatedAt: time,
}).strict()
export type NodeRecord = z.infer<typeof nodeRecordSchema>

/**
 * A job as one writer last set it. Several nodes may hold a record of one job (the
 * submitter, and any node that changed its desired state): the highest version
 * wins (see `resolveJob`). The spec is validated by the jobs layer; here it is
 * bounded JSON.
 */
export const jobRecordSchema = z.object({
  id,
  name: z.string().min(1).max(L.nameCharsMax),
  type: z.enum(['batch', 'service', 'cron']),
  spec: z.record(z.string(), z.json()),
  desired: z.enum(['running', 'stopped']),
  version: counter.min(1),
  /** The namespace the job lives in (absent in records written before namespaces: 'default'). */
  namespace: z.string().min(1).max(63).regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/).optional(),
  submittedBy: id,
  submittedAt: time,
  updatedAt: time,
  /** Set when the job can run no more (a batch that finished, a stopped job): retention counts from here. */
  finishedAt: time.optional(),
}).strict()
export type JobRecord = z.infer<typeof jobRecordSchema>

/**
 * claimed, starting, running and restarting (waiting out its backoff on this node) hold the instance;
 * exited (a batch run that succeeded) and failed (gave up after its attempts) finish it, whoever ran it;
 * killed (stopped here: the job was stopped, a duplicate, `murmur kill`) and lost (its process went with the node's previous life) give it up here.
 */
export const CLAIM_STATES = ['claimed', 'starting', 'running', 'restarting', 'exited', 'failed', 'killed', 'lost'] as const
export type ClaimState = typeof CLAIM_STATES[number]

/**
 * One node's record of one task instance: its claim and how the task is doing
 * there. Written by that node only (`node`). Several nodes' claims of one
 * instance can coexist; placement decides which stays.
 */
export const taskRecordSchema = z.object({
  id,
  job: id,
  node: id,
  /** A claim's generation starts at 1 (placement/claims.ts refuses 0). */
  generation: counter.min(1),
  state: z.enum(CLAIM_STATES),
  since: time,
  startedAt: time.optional(),
  /** Set when the task has ended for good on this node: retention counts from here. */
  finishedAt: time.optional(),
  exit: z.object({
    code: z.number().int().nullable(),
    signal: z.string().max(32).nullable(),
    reason: z.string().max(L.reasonCharsMax),
  }).strict().optional(),
  restarts: counter,
  /**
   * Set on a claim the node gave up without running the instance to its end, and
   * will not take again for a while: its executor refused the start (no room), or a
   * user killed the instance there. The other candidates read it as the node's
   * refusal and take the instance over at once (node/reconcile/decide.ts, backups).
   */
  declined: z.literal(true).optional(),
}).strict()
export type ClaimRecord = z.infer<typeof taskRecordSchema>

/**
 * The job that the given records of one job id describe: a stop first (it is
 * final: a scale written concurrently on the other side of a partition, at the
 * same or a higher version, must not bring the job back), then the highest
 * version, then the greater writer id.
 */
export function resolveJob (records: ReadonlyArray<{ writer: string, record: JobRecord }>): JobRecord | undefined {
  let best: { writer: string, record: JobRecord } | undefined
  for (const r of records) {
    if (best === undefined) { best = r; continue }
    const stopped = r.record.desired === 'stopped'
    const bestStopped = best.record.desired === 'stopped'
    if (stopped !== bestStopped) {
      if (stopped) best = r
      continue
    }
    if (r.record.version > best.record.version || (r.record.version === best.record.version && r.writer > best.writer)) best = r
  }
  return best?.record
}
