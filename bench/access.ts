// Access benchmark: what users cost per operation, in this process, with the code
// the CLI and the nodes run (access/, node/auth.ts, node/jobs/records.ts). Prints
// one table of per-op times; never fails on time. Usage:
//   npm run bench:access -- [--quick] [--json] [--repeats 7] [--scale 1]
//
//   sign        the client's signRequest (cli/client.ts signs every request so): a GET
//               of /v1/jobs, and a POST of a 1 KiB job spec; the headers only, no I/O
//   check       RequestAuth.check (node/auth.ts), as the API's preHandler calls it, on
//               requests the client signed, with the grant header the client sends,
//               against a real AccessBook over a ClusterState that holds the grants
//               (so the header's grant is known and nothing is learned): a GET, and a
//               POST with a 1 KiB body (each with a nonce of its own: the replay
//               cache admits every one; a new RequestAuth each repeat); and a GET
//               without the grant header (the grant found in the book by key)
//   proof       proofProblem (access/verify.ts) of a stored submission: cold (every
//               grant of the chain new: nothing memoized, every public key imported),
//               and memoized (the same proofs again: only the request's own
//               signature is verified, the chain's come from the signature memo)
//   job         jobProblem (node/jobs/records.ts) of a job record as the API writes
//               it (newJobRecord of a POST /v1/jobs a user signed), as every node
//               runs it when it indexes the record: cold and memoized
//   chains      `typical`: root → admin → user (the user's grant two from the root);
//               `3 admins`: root → admin → admin → admin → user (four from the root).
//               A testnet's admin.key is one from the root (root → admin)
//   reference   one Ed25519 sign and one verify (key imported) of the same bytes, to
//               read the rows above in signatures
//
// Every op: a warm-up batch, then --repeats timed batches, all ops interleaved in
// each repeat (a noisy stretch hits them all); per op the median of the repeats'
// per-op times and their min–max. Cold inputs are made before each batch, outside
// the timing. About a minute on 2 cores; --quick about 10 s (smaller batches, 3 repeats).
// --json: one JSON document on stdout. One thread, CPU-bound: run it alone.

import { cpus, loadavg, release } from 'node:os'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { type UserKey, newKeyPair, signBytes, verifyBytes } from '../access/keys.ts'
import { GRANT_HEADER, type Proof, bodyDigest, parseAuthorization, proofOf, requestBytes, signRequest } from '../access/request.ts'
import { type Grant, signGrant, statementId } from '../access/statements.ts'
import { proofProblem } from '../access/verify.ts'
import { table } from '../cli/table.ts'
import { derivedKeys } from '../crdt/signing.ts'
import { ClusterState } from '../crdt/state.ts'
import type { JobRecord } from '../crdt/schema.ts'
import { AccessBook } from '../node/access.ts'
import { RequestAuth, type RequestFacts } from '../node/auth.ts'
import { jobProblem, newJobRecord } from '../node/jobs/records.ts'
import { normalizeJob } from '../node/jobs/spec.ts'
import { COMMON_OPTIONS, Report, log, percentile } from './report.ts'

const HOST = '127.0.0.1:7947'
const PORT = 7947
const NAMESPACE = 'default'
const JOBS_PATH = `/v1/jobs?namespace=${NAMESPACE}`
/** When every grant is issued: well before the requests, so each is in force at the request's time. */
const ISSUED_AT = Date.now() - 60_000

const report = new Report()
const us = (x: number): string => Number.isNaN(x) ? '-' : `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x)} µs`
const perSecond = (perOpUs: number): string => `${Math.round(1e6 / perOpUs).toLocaleString('en-US')}/s`

// ---- keys, chains, requests ----------------------------------------------------------------

interface Chain {
  /** The user's key, its grant holding the admins' grants up to the root. */
  user: UserKey
  /** Every grant of the chain, root's first (for the state). */
  grants: Grant[]
}

const root = newKeyPair()

/** root → `admins` admins → a user with role submit in NAMESPACE; every key new. */
function newChain (admins: number): Chain {
  const grants: Grant[] = []
  let signer: { privateKey: UserKey['privateKey'], grant: Grant | null } = { privateKey: root.privateKey, grant: null }
  for (let i = 0; i < admins; i++) {
    const k = newKeyPair()
    const grant = signGrant({ name: `admin-${i}`, key: k.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: ISSUED_AT, expiresAt: null }, signer)
    grants.push(grant)
    signer = { privateKey: k.privateKey, grant }
  }
  const k = newKeyPair()
  const grant = signGrant({ name: 'alice', key: k.publicKey, role: 'submit', namespaces: [NAMESPACE], runAs: [], issuedAt: ISSUED_AT, expiresAt: null }, signer)
  grants.push(grant)
  return { user: { name: 'alice', publicKey: k.publicKey, privateKey: k.privateKey, grant }, grants }
}

/** A batch job as the jobs benchmark submits it, with an env that brings its JSON to `bytes`. */
function jobBody (name: string, bytes: number): string {
  const spec = { name, type: 'batch', command: 'true', cpu: '10m', memory: '16M', env: { PAD: '' } }
  const base = JSON.stringify(spec).length
  spec.env.PAD = 'x'.repeat(Math.max(0, bytes - base))
  return JSON.stringify(spec)
}

/** What the API hands RequestAuth.check for a request the client signed (cli/client.ts headers()). */
function signedFacts (key: UserKey, method: string, path: string, body: string, withGrant = true): RequestFacts {
  const headers = signRequest(key, { method, host: HOST, path, body }, Date.now())
  return {
    method,
    url: path,
    host: HOST,
    localPort: PORT,
    authorization: headers.authorization,
    grantHeader: withGrant ? headers[GRANT_HEADER] : undefined,
    body: body === '' ? undefined : Buffer.from(body),
  }
}

/** The submission a node stores with a job: the user's signed POST /v1/jobs, with its body. */
function submission (key: UserKey, body: string): Proof {
  const headers = signRequest(key, { method: 'POST', host: HOST, path: JOBS_PATH, body }, Date.now())
  const signed = parseAuthorization(headers.authorization!)
  if (typeof signed === 'string') throw new Error(signed)
  return proofOf(signed, { method: 'POST', host: HOST, path: JOBS_PATH, digest: bodyDigest(body) }, key.grant!, body)
}

/** The job record the API writes for a signed submission (node/jobs/service.ts). */
function jobRecord (proof: Proof): JobRecord {
  return newJobRecord(normalizeJob(JSON.parse(proof.body!)), 'bench-node', Date.now(), '00000000', { namespace: NAMESPACE, proof })
}

// ---- the node's side: a state holding the grants ----------------------------------------------

const state = new ClusterState({ self: 'bench-node', life: 'l1', keys: derivedKeys('bench-node') })
const book = new AccessBook(state, root.publicKey)
const silent = pino({ level: 'silent' })

function store (chain: Chain): void {
  state.transact(() => {
    for (const grant of chain.grants) if (!book.has(grant)) state.putAccess({ id: `g-${statementId(grant)}`, kind: 'statement', statement: grant })
  })
}

function newAuth (): RequestAuth {
  return new RequestAuth({ book, now: () => Date.now(), log: silent, learn: async () => { throw new Error('the bench stored every grant: nothing should be learned') } })
}

// ---- the ops --------------------------------------------------------------------------------

/**
 * One op: `prepare(n)` makes the inputs of a batch of n (not timed), `run(input)` is
 * timed per batch; a run that returns a string is a refusal (the bench's inputs are
 * all valid, so that is a bug here, reported and fatal).
 */
interface Op<T> {
  name: string
  chain: string
  n: number
  prepare: (n: number) => T[]
  run: (input: T) => unknown
}

const ok = (what: string) => (problem: string | null): void => { if (problem !== null) throw new Error(`${what} refused a valid input: ${problem}`) }

function ops (scale: number): Array<Op<any>> {
  const n = (x: number): number => Math.max(20, Math.round(x * scale))
  const typical = newChain(1)
  const deep = newChain(3)
  store(typical)
  store(deep)
  const getOne = (key: UserKey, withGrant = true): RequestFacts => signedFacts(key, 'GET', JOBS_PATH, '', withGrant)
  const postBody = jobBody('bench', 1024)
  const postOne = (key: UserKey): RequestFacts => signedFacts(key, 'POST', JOBS_PATH, postBody)
  /** Memoized inputs: a pool checked once before, reused in every batch. */
  const pool = <T>(size: number, make: () => T, warm: (t: T) => unknown): (count: number) => T[] => {
    let items: T[] | null = null
    return (count) => {
      if (items === null) { items = Array.from({ length: size }, make); for (const t of items) warm(t) }
      return Array.from({ length: count }, (_, i) => items![i % size]!)
    }
  }
  const name = (): string => `j${Math.random().toString(36).slice(2, 8)}`
  const proofPool = (chain: Chain): (count: number) => Proof[] => pool(200, () => submission(chain.user, jobBody(name(), 200)), (p) => { ok('proofProblem')(proofProblem(p, book.trust)) })
  const jobPool = (chain: Chain): (count: number) => JobRecord[] => pool(200, () => jobRecord(submission(chain.user, jobBody(name(), 200))), (r) => { ok('jobProblem')(jobProblem(r, book.trust)) })
  /** Cold: a chain of its own for every input, stored in no memo yet. */
  const coldProofs = (admins: number) => (count: number): Proof[] => Array.from({ length: count }, () => submission(newChain(admins).user, jobBody('cold', 200)))
  const coldJobs = (admins: number) => (count: number): JobRecord[] => coldProofs(admins)(count).map(jobRecord)
  const bytes = requestBytes({ m: 'POST', h: HOST, p: JOBS_PATH, d: bodyDigest(postBody), t: Date.now(), n: '0123456789abcdef' })
  const sig = signBytes(typical.user.privateKey, bytes)
  let auth = newAuth()
  return [
    { name: 'sign a request (client): GET', chain: 'typical', n: n(4000), prepare: (k) => Array.from({ length: k }, () => typical.user), run: (key: UserKey) => signRequest(key, { method: 'GET', host: HOST, path: JOBS_PATH, body: '' }, Date.now()) },
    { name: 'sign a request (client): POST, 1 KiB body', chain: 'typical', n: n(4000), prepare: (k) => Array.from({ length: k }, () => typical.user), run: (key: UserKey) => signRequest(key, { method: 'POST', host: HOST, path: JOBS_PATH, body: postBody }, Date.now()) },
    { name: 'RequestAuth.check: signed GET', chain: 'typical', n: n(3000), prepare: (k) => { auth = newAuth(); return Array.from({ length: k }, () => getOne(typical.user)) }, run: (f: RequestFacts) => auth.check(f) },
    { name: 'RequestAuth.check: signed POST, 1 KiB body', chain: 'typical', n: n(3000), prepare: (k) => { auth = newAuth(); return Array.from({ length: k }, () => postOne(typical.user)) }, run: (f: RequestFacts) => auth.check(f) },
    { name: 'RequestAuth.check: signed GET, no grant header', chain: 'typical', n: n(3000), prepare: (k) => { auth = newAuth(); return Array.from({ length: k }, () => getOne(typical.user, false)) }, run: (f: RequestFacts) => auth.check(f) },
    { name: 'RequestAuth.check: signed POST, 1 KiB body', chain: '3 admins', n: n(3000), prepare: (k) => { auth = newAuth(); return Array.from({ length: k }, () => postOne(deep.user)) }, run: (f: RequestFacts) => auth.check(f) },
    { name: 'proofProblem: cold', chain: 'typical', n: n(600), prepare: coldProofs(1), run: (p: Proof) => ok('proofProblem')(proofProblem(p, book.trust)) },
    { name: 'proofProblem: memoized', chain: 'typical', n: n(4000), prepare: proofPool(typical), run: (p: Proof) => ok('proofProblem')(proofProblem(p, book.trust)) },
    { name: 'jobProblem: cold', chain: 'typical', n: n(600), prepare: coldJobs(1), run: (r: JobRecord) => ok('jobProblem')(jobProblem(r, book.trust)) },
    { name: 'jobProblem: memoized', chain: 'typical', n: n(3000), prepare: jobPool(typical), run: (r: JobRecord) => ok('jobProblem')(jobProblem(r, book.trust)) },
    { name: 'proofProblem: cold', chain: '3 admins', n: n(400), prepare: coldProofs(3), run: (p: Proof) => ok('proofProblem')(proofProblem(p, book.trust)) },
    { name: 'proofProblem: memoized', chain: '3 admins', n: n(4000), prepare: proofPool(deep), run: (p: Proof) => ok('proofProblem')(proofProblem(p, book.trust)) },
    { name: 'jobProblem: cold', chain: '3 admins', n: n(400), prepare: coldJobs(3), run: (r: JobRecord) => ok('jobProblem')(jobProblem(r, book.trust)) },
    { name: 'jobProblem: memoized', chain: '3 admins', n: n(3000), prepare: jobPool(deep), run: (r: JobRecord) => ok('jobProblem')(jobProblem(r, book.trust)) },
    { name: 'reference: one Ed25519 sign', chain: '', n: n(4000), prepare: (k) => Array.from({ length: k }, () => bytes), run: (b: Uint8Array) => signBytes(typical.user.privateKey, b) },
    { name: 'reference: one Ed25519 verify', chain: '', n: n(4000), prepare: (k) => Array.from({ length: k }, () => bytes), run: (b: Uint8Array) => { if (!verifyBytes(typical.user.publicKey, b, sig)) throw new Error('verify failed') } },
    { name: 'reference: jobProblem, no users (open cluster)', chain: '', n: n(4000), prepare: jobPool(typical), run: (r: JobRecord) => ok('jobProblem')(jobProblem(r, null)) },
  ]
}

/** Per-op µs of one timed batch. */
function batch<T> (op: Op<T>, n: number): number {
  const inputs = op.prepare(n)
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  const t0 = performance.now()
  for (const input of inputs) op.run(input)
  return (performance.now() - t0) * 1000 / inputs.length
}

// ---- main -------------------------------------------------------------------------------------

function main (): void {
  const { values } = parseArgs({ options: { ...COMMON_OPTIONS, repeats: { type: 'string' }, scale: { type: 'string' } } })
  report.json = values.json
  const repeats = Number(values.repeats ?? (values.quick ? 3 : 7))
  const scale = Number(values.scale ?? (values.quick ? 0.2 : 1))
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > 100 || !(scale > 0 && scale <= 20)) {
    process.stderr.write('bench: --repeats 1–100 (whole), --scale above 0 and at most 20\n')
    process.exit(2)
  }
  if (values.only !== undefined) {
    process.stderr.write('bench: bench:access has no parts; it takes --quick, --json, --repeats and --scale\n')
    process.exit(2)
  }
  const machine = { node: process.version, cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release(), loadavg: loadavg().map((x) => Math.round(x * 10) / 10) }
  log(`Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, load average ${machine.loadavg.join(' ')}${typeof (globalThis as { gc?: unknown }).gc === 'function' ? '' : '; no --expose-gc: garbage collection falls inside the batches'}`)
  const started = performance.now()
  const all = ops(scale)
  log(`warm-up: one batch of each of ${all.length} ops`)
  for (const op of all) batch(op, Math.max(20, Math.round(op.n / 4)))
  const times: number[][] = all.map(() => [])
  for (let r = 0; r < repeats; r++) {
    for (const [i, op] of all.entries()) times[i]!.push(batch(op, op.n))
    log(`repeat ${r + 1}/${repeats} done`)
  }
  const rows = all.map((op, i) => {
    const t = times[i]!
    return { op: op.name, chain: op.chain, n: op.n, repeats: t.length, medianUs: percentile(t, 0.5), minUs: Math.min(...t), maxUs: Math.max(...t) }
  })
  report.results.ops = rows.map((r) => ({ ...r, medianUs: Math.round(r.medianUs * 100) / 100, minUs: Math.round(r.minUs * 100) / 100, maxUs: Math.round(r.maxUs * 100) / 100 }))
  const elapsed = (performance.now() - started) / 1000
  if (report.json) {
    process.stdout.write(JSON.stringify({ bench: 'access', ...machine, repeats, scale, elapsedS: Math.round(elapsed), results: report.results }, null, 2) + '\n')
    return
  }
  report.print(`access: per-op cost, Node ${machine.node}, ${machine.cores} cores (${machine.cpu}), load average ${machine.loadavg.join(' ')}; ${repeats} repeats after a warm-up, median of the repeats' per-op times (min–max)\n`)
  report.print('chains: typical = root → admin → user; 3 admins = root → admin → admin → admin → user\n\n')
  report.print(table(['OP', 'CHAIN', 'PER OP', 'MIN–MAX', 'OPS/S (ONE CORE)', 'BATCH'], rows.map((r) => [
    r.op, r.chain, us(r.medianUs), `${us(r.minUs)} – ${us(r.maxUs)}`, perSecond(r.medianUs), String(r.n),
  ])) + '\n')
  report.print(`\n${elapsed.toFixed(0)} s in all\n`)
}

main()
