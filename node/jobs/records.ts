// The job records a user's request writes: a new job, a stop, a new count. Pure,
// so the API (service.ts) and the simulator (testnet/sim) write the very same.
//
// In a cluster with users (a root key), a record carries the signed requests it
// comes from (access/request.ts, Proof), and every node checks them before it
// runs or stops anything (`jobProblem`): the job's id, name, namespace, spec and
// state must all follow from what its users signed. A member that writes a job
// or a stop no user asked for changes nothing.

import { createHash } from 'node:crypto'
import type { Proof } from '../../access/request.ts'
import { canonicalJson } from '../../access/statements.ts'
import { type Trust, mayRunAs, permits, proofProblem } from '../../access/verify.ts'
import type { JobRecord } from '../../crdt/schema.ts'
import { JOB_LIMITS, JobSpecError, type NormalJob, normalizeJob, readSpec } from './spec.ts'

export const DEFAULT_NAMESPACE = 'default'

/** The namespace of a job (records written before namespaces have none: the default one). */
export function namespaceOf (record: Pick<JobRecord, 'namespace'>): string {
  return record.namespace ?? DEFAULT_NAMESPACE
}

/** A signed job's id: its name and 8 hex digits of its submission's signature, so no one else can make a record of that id. */
export function jobIdOf (name: string, proof: Pick<Proof, 's'>): string {
  return `${name}-${createHash('sha256').update(proof.s).digest('hex').slice(0, 8)}`
}

/**
 * A new job, submitted by node `by` at `now`; `suffix` makes its id unique (random in
 * a node, seeded in the simulator). With `signed`, the id comes from the user's
 * signature and the time from the request, so every node can check them.
 */
export function newJobRecord (job: NormalJob, by: string, now: number, suffix: string, signed?: { namespace: string, proof: Proof }): JobRecord {
  return {
    id: signed === undefined ? `${job.name}-${suffix}` : jobIdOf(job.name, signed.proof),
    name: job.name,
    type: job.type,
    spec: job.spec as unknown as JobRecord['spec'],
    desired: 'running',
    version: 1,
    ...(signed === undefined ? {} : { namespace: signed.namespace }),
    submittedBy: by,
    submittedAt: signed === undefined ? now : signed.proof.t,
    updatedAt: now,
    ...(signed === undefined ? {} : { proof: signed.proof }),
  }
}

/** The version a signed record must have: the time of the latest request that changed it, or 1. */
function signedVersion (record: Pick<JobRecord, 'scale' | 'stop'>): number {
  return Math.max(1, record.scale?.t ?? 0, record.stop?.t ?? 0)
}

/** The job, stopped: a higher version that every node obeys, wherever it was meanwhile. */
export function stoppedJob (record: JobRecord, now: number, proof?: Proof): JobRecord {
  const stopped = { ...record, desired: 'stopped' as const, updatedAt: now, finishedAt: record.finishedAt ?? now }
  if (proof === undefined) return { ...stopped, version: record.version + 1 }
  return { ...stopped, stop: proof, version: signedVersion({ ...record, stop: proof }) }
}

/**
 * The service with `count` instances: a higher version. Instances past the new
 * count are stopped wherever they run; new ones are placed like any other.
 */
export function scaledJob (record: JobRecord, count: number, now: number, proof?: Proof): JobRecord {
  if (record.type !== 'service') throw new JobSpecError(`only a service can be scaled; ${record.id} is a ${record.type} job`)
  if (record.desired !== 'running') throw new JobSpecError(`${record.id} is stopped; submit it again instead`)
  if (!Number.isSafeInteger(count) || count < 1 || count > JOB_LIMITS.countMax) throw new JobSpecError(`count must be a whole number from 1 to ${JOB_LIMITS.countMax}, got ${count}; stop the job to run none`)
  if (readSpec(record.spec) === null) throw new JobSpecError(`the stored spec of ${record.id} cannot be read; submit the job again`)
  const spec = { ...record.spec, count }
  if (readSpec(spec) === null) throw new JobSpecError(`a count of ${count} does not fit the rest of the spec of ${record.id}`)
  if (proof === undefined) return { ...record, spec, version: record.version + 1, updatedAt: now }
  return { ...record, spec, scale: proof, version: signedVersion({ ...record, scale: proof }), updatedAt: now }
}

/** A batch marked finished by the node that saw its last instance end: no user signs that, and it changes no version. */
export function finishedJob (record: JobRecord, now: number): JobRecord {
  return { ...record, version: record.proof === undefined ? record.version + 1 : record.version, updatedAt: now, finishedAt: now }
}

/**
 * Why a job record does not follow from the requests its users signed, or null.
 * `trust` null: the cluster has no users (no root key), and records carry no proofs.
 * Deterministic in the record and the revocations `trust` holds, so every node
 * admits the same records.
 */
export function jobProblem (record: JobRecord, trust: Trust | null): string | null {
  if (trust === null) return null
  const submit = record.proof
  if (submit === undefined) return 'carries no signed submission: no user asked for it'
  const namespace = namespaceOf(record)
  const problem = requestProblem(submit, 'submission', trust, namespace, 'POST', (path) => path === '/v1/jobs')
  if (problem !== null) return problem
  const job = submittedJob(submit)
  if (typeof job === 'string') return job
  if (record.id !== jobIdOf(job.name, submit)) return `its id ${record.id} is not the one its submission gives (${jobIdOf(job.name, submit)})`
  if (record.name !== job.name || record.type !== job.type) return 'its name or type differ from what its user submitted'
  if (record.submittedAt !== submit.t) return 'its submission time differs from its signed request'
  const runAs = (job.spec as { runAs?: number }).runAs
  if (runAs !== undefined && !mayRunAs(submit.grant, runAs)) return `its user ${submit.grant.name} may not run tasks as uid ${runAs}`
  let spec: unknown = job.spec
  const scale = record.scale
  if (scale !== undefined) {
    const refers = refersTo(record, scale.t)
    const scaleProblem = requestProblem(scale, 'scale', trust, namespace, 'POST', (path) => refers(path, 'scale'))
    if (scaleProblem !== null) return scaleProblem
    const count = readCount(scale.body)
    if (count === null || record.type !== 'service') return 'scale: its signed request does not give a count for a service'
    spec = { ...job.spec, count }
  }
  const signedSpec = scale === undefined ? canonicalOf(submit, spec) : canonicalJson(spec)
  if (signedSpec !== canonicalJson(record.spec)) return 'its spec differs from what its users signed'
  const stop = record.stop
  if (stop !== undefined) {
    const refers = refersTo(record, stop.t)
    const stopProblem = requestProblem(stop, 'stop', trust, namespace, 'POST', (path) => refers(path, 'stop'))
    if (stopProblem !== null) return stopProblem
  }
  if (record.desired !== (stop === undefined ? 'running' : 'stopped')) return `it is ${record.desired}, but ${stop === undefined ? 'no user stopped it' : 'a user stopped it'}`
  if (record.version !== signedVersion(record)) return `its version ${record.version} is not the time of its latest signed change`
  if (record.finishedAt !== undefined && stop === undefined && record.type !== 'batch') return 'it is marked finished, but only a stop finishes a service or a cron job'
  return null
}

/**
 * Every user name in the grant chains of a record's signed requests: a revocation
 * of any of them may change whether the record is admitted (a record that is not
 * a job's shape names none).
 */
export function signersOf (record: Partial<Pick<JobRecord, 'proof' | 'scale' | 'stop'>> | null | undefined): string[] {
  const out: string[] = []
  for (const proof of [record?.proof, record?.scale, record?.stop]) {
    for (let g = proof?.grant ?? null; g !== null && typeof g === 'object'; g = g.by) if (typeof g.name === 'string') out.push(g.name)
  }
  return out
}

/**
 * The job a submission's body gives, in normal form, or why it gives none; and its
 * spec's canonical JSON. Kept by the request's signature: the same submission comes
 * back in every copy of its record (a finish mark, a scale, other nodes' spaces),
 * and normalizing it is most of what checking one costs after its signature.
 */
const SUBMISSIONS_MAX = 16_384
const submissions = new Map<string, { body: string, job: NormalJob | string, canonical: string }>()

function submission (proof: Proof): { job: NormalJob | string, canonical: string } {
  const known = submissions.get(proof.s)
  if (known !== undefined && known.body === proof.body) return known
  let job: NormalJob | string
  try {
    job = normalizeJob(JSON.parse(proof.body ?? ''))
  } catch (err) {
    job = `submission: its spec cannot be read (${err instanceof JobSpecError ? err.message : 'not JSON'})`
  }
  const entry = { body: proof.body ?? '', job, canonical: typeof job === 'string' ? '' : canonicalJson(job.spec) }
  if (submissions.size >= SUBMISSIONS_MAX) submissions.delete(submissions.keys().next().value!)
  submissions.set(proof.s, entry)
  return entry
}

function submittedJob (proof: Proof): NormalJob | string {
  return submission(proof).job
}

/** The canonical JSON of a submission's spec (its normal form, as signed). */
function canonicalOf (proof: Proof, spec: unknown): string {
  const known = submission(proof)
  return typeof known.job === 'string' ? canonicalJson(spec) : known.canonical
}

/** Why one signed request behind a job is not one its user could make for it, or null. */
function requestProblem (proof: Proof, what: string, trust: Trust, namespace: string, method: string, pathOk: (path: string) => boolean): string | null {
  const problem = proofProblem(proof, trust)
  if (problem !== null) return `${what}: ${problem}`
  if (proof.m !== method) return `${what}: the signed request is a ${proof.m}, not a ${method}`
  const url = parsePath(proof.p)
  if (url === null || !pathOk(url.pathname)) return `${what}: the signed request is for ${proof.p}, not for this job`
  if ((url.searchParams.get('namespace') ?? DEFAULT_NAMESPACE) !== namespace) return `${what}: the signed request is for another namespace than ${namespace}`
  const denied = permits(proof.grant, 'submit', namespace)
  return denied === null ? null : `${what}: ${denied}`
}

/** Whether a path names this job: by id, or by name for a request made after the job was submitted. */
function refersTo (record: JobRecord, at: number): (path: string, verb: string) => boolean {
  return (path, verb) => {
    const match = /^\/v1\/jobs\/([^/]+)\/([a-z]+)$/.exec(path)
    if (match === null || match[2] !== verb) return false
    let ref: string
    try {
      ref = decodeURIComponent(match[1]!)
    } catch {
      return false
    }
    return ref === record.id || (ref === record.name && record.submittedAt <= at)
  }
}

function parsePath (path: string): URL | null {
  if (!path.startsWith('/')) return null
  try {
    return new URL(path, 'http://murmur.invalid')
  } catch {
    return null
  }
}

function readCount (body: string | undefined): number | null {
  try {
    const count = (JSON.parse(body ?? '') as { count?: unknown }).count
    return typeof count === 'number' && Number.isSafeInteger(count) ? count : null
  } catch {
    return null
  }
}
