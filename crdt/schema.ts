// The records of the cluster state and their bounds. Every record that a reader
// takes out of the document passes through these schemas: the document is filled
// by peers, so what it holds is input like any other.

import { z } from 'zod'
import { proofSchema } from '../access/request.ts'
import { NAMESPACE_RE, statementId, statementSchema } from '../access/statements.ts'

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
  /** A job holds its spec twice: in normal form, and as its user signed it (the submission's proof). */
  jobRecordBytesMax: 160 * 1024,
  /** A statement (a grant, a revocation, a quota) with its signers' grants, or a node's row of quota shares. */
  accessRecordBytesMax: 128 * 1024,
  taskRecordBytesMax: 16 * 1024,
  reasonCharsMax: 1_024,
  /**
   * What one writer may hold of a kind, over all its spaces: far above what a node
   * writes (a thousand jobs at their largest), and what keeps one member from
   * filling every node's memory. An update that would go over is refused.
   */
  writerBytesMax: { jobs: 64 * 1024 * 1024, tasks: 32 * 1024 * 1024, access: 8 * 1024 * 1024 },
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
  namespace: z.string().regex(NAMESPACE_RE).optional(),
  submittedBy: id,
  submittedAt: time,
  updatedAt: time,
  /** Set when the job can run no more (a batch that finished, a stopped job): retention counts from here. */
  finishedAt: time.optional(),
  /**
   * The user's signed requests behind the record (access/request.ts): the submission
   * (with the spec as sent), the latest scale, the stop. Every node checks them
   * before it runs or stops anything (node/jobs/records.ts, jobProblem); a record
   * without them is refused by a node that has users (a root key).
   */
  proof: proofSchema.optional(),
  scale: proofSchema.optional(),
  stop: proofSchema.optional(),
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
 * version, then one marked finished, then the greater writer id.
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
    if (r.record.version !== best.record.version) {
      if (r.record.version > best.record.version) best = r
      continue
    }
    // A batch marked finished keeps its version when its user signed it (node/jobs/records.ts): the mark wins a tie.
    const finished = r.record.finishedAt !== undefined
    if (finished !== (best.record.finishedAt !== undefined)) {
      if (finished) best = r
      continue
    }
    if (r.writer > best.writer) best = r
  }
  return best?.record
}

/**
 * Amounts of a namespace's quota (placement/escrow.ts): what a node minted may be
 * below zero (it lowered a quota); what it gave only grows from zero.
 */
const minted = z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER)
const given = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const mintedSchema = z.object({ cpuMillis: minted, memoryBytes: minted, instances: minted }).strict()
const givenSchema = z.object({ cpuMillis: given, memoryBytes: given, instances: given }).strict()

/**
 * The `access` kind: what says who may do what, and each node's share of the
 * namespaces' quotas. Statements (grants, revocations, quotas) are signed by the
 * root key or an admin, inside the envelope of the node that stored them; any
 * node checks them against the root key it was started with (access/verify.ts).
 * Keys: `g-<statement id>` (a grant), `r-<statement id>` (a revocation),
 * `q-<namespace>` (the latest quota this node stored for it), and
 * `share-<namespace>` (this node's row of the quota ledger: what it minted when
 * it stored a quota change, and what it has given to each other node, cumulative).
 */
export const accessRecordSchema = z.discriminatedUnion('kind', [
  z.object({ id, kind: z.literal('statement'), statement: statementSchema }).strict(),
  z.object({
    id,
    kind: z.literal('share'),
    namespace: z.string().regex(NAMESPACE_RE),
    minted: mintedSchema,
    given: z.record(id, givenSchema).refine((given) => Object.keys(given).length <= 4_096, 'at most 4096 nodes'),
  }).strict(),
])
export type AccessRecord = z.infer<typeof accessRecordSchema>

/** Why an access record is not under the key its content gives it (see accessRecordSchema), or null. */
export function accessKeyProblem (record: AccessRecord): string | null {
  let key: string
  if (record.kind === 'share') key = `share-${record.namespace}`
  else if (record.statement.type === 'quota') key = `q-${record.statement.namespace}`
  else key = `${record.statement.type === 'grant' ? 'g' : 'r'}-${statementId(record.statement)}`
  return record.id === key ? null : `is stored under ${record.id}, not under ${key}`
}
