// Whether a grant is in force, a statement was made by someone allowed to make it,
// a stored request was made by a user allowed to, and what a grant permits. Every
// answer is a function of the statements and the root key alone (no clock, no
// peer, no order of arrival), so every node that holds the same statements decides
// alike. Reasons are one line, for logs and for the user.

import { createHash } from 'node:crypto'
import { verifyBytes } from './keys.ts'
import { bodyDigest, type Proof, requestBytes } from './request.ts'
import { ACCESS_LIMITS, type Grant, type Quota, type Revocation, type Role, type Statement, statementBytes } from './statements.ts'

/** What a node trusts: the root key it was started with, and the revocations it holds. */
export interface Trust { rootKey: string, revocations: (name: string) => readonly Revocation[] }

export type Op = 'read' | 'submit' | 'operate' | 'admin'

/** The checks of one decision: results by grant object and time, and the work left. */
interface Check { trust: Trust, memo: Map<Grant, Map<number, string | null>>, stepsLeft: number }

function newCheck (trust: Trust): Check {
  return { trust, memo: new Map(), stepsLeft: ACCESS_LIMITS.checkStepsMax }
}

/**
 * A check that ran out of steps fails closed: once a step is refused, the answers
 * below it mean nothing (a revocation that could not be checked is not thereby
 * void), so the whole decision is a refusal.
 */
function decided (check: Check, problem: string | null, what: string): string | null {
  if (check.stepsLeft >= 0) return problem
  return `checking ${what} takes more than ${ACCESS_LIMITS.checkStepsMax} steps (too many revocations of revokers); ask an admin to grant it again`
}

/**
 * null when `grant` is in force at time `at`, else a one-line reason. In force:
 * signed by its issuer (root if by === null, else by.key); the issuer is root, or
 * an admin whose grant was in force at grant.issuedAt; issuedAt ≤ at < expiresAt;
 * no valid revocation r of grant.name with grant.issuedAt ≤ r.at ≤ at. A
 * revocation is valid if signed by root or by an admin in force at r.at − 1: each
 * step into a revocation goes strictly back in time, and each step to an issuer
 * goes up a chain of at most ACCESS_LIMITS.chainDepthMax grants, so the check
 * ends, even when two admins revoke each other.
 */
export function grantProblem (grant: Grant, at: number, trust: Trust): string | null {
  if (!Number.isSafeInteger(at)) return `${grant.name}'s grant is checked at ${at}, which is not a time in ms`
  const check = newCheck(trust)
  return decided(check, grantProblemIn(check, grant, at), `${grant.name}'s grant`)
}

/** A statement (revocation, quota) made by root or an admin in force at its time (a revocation's at − 1, a quota's setAt). */
export function statementProblem (s: Revocation | Quota, trust: Trust): string | null {
  const check = newCheck(trust)
  const what = s.type === 'revoke' ? `the revocation of ${s.name}` : `the quota of ${s.namespace}`
  return decided(check, signerProblem(check, s, s.type === 'revoke' ? s.at - 1 : s.setAt, what), what)
}

/** A stored proof: its signature over its request bytes, its body's digest if the body is kept, its key the grant's, the grant in force at proof.t. */
export function proofProblem (proof: Proof, trust: Trust): string | null {
  const who = proof.grant.name
  if (proof.key !== proof.grant.key) return `the request was signed by ${proof.key}, not by ${who}'s key ${proof.grant.key}`
  if (proof.body !== undefined && bodyDigest(proof.body) !== proof.d) return `the body stored with ${who}'s request is not the one it signed`
  let bytes: Uint8Array
  try {
    bytes = requestBytes(proof)
  } catch {
    return `${who}'s request has a line break in its method, host or path`
  }
  // Memoized too: a stored proof is checked again wherever its record is copied (a finish mark, a scale, another node's space).
  if (!verifiedOnce(proof.key, bytes, proof.s)) return `${who}'s request is not signed by ${who}'s key`
  const problem = grantProblem(proof.grant, proof.t, trust)
  return problem === null ? null : `${who}'s request at ${iso(proof.t)}: ${problem}`
}

/**
 * null if `grant` may do `op` (in `namespace`, where given), else a one-line reason
 * naming the user, role and namespaces and the fix. admin: everything; operator:
 * operate and read in every namespace; submit: read and submit in its namespaces;
 * read: read in its namespaces. Cluster-wide reads (no namespace) are every role's.
 * Whether the grant is in force is grantProblem's question, not this one's.
 */
export function permits (grant: Grant, op: Op, namespace?: string): string | null {
  const role = grant.role
  if (role === 'admin') return null
  const ops: Record<Exclude<Role, 'admin'>, readonly Op[]> = { operator: ['read', 'operate'], submit: ['read', 'submit'], read: ['read'] }
  const who = `${grant.name} (role ${role}, namespaces ${grant.namespaces.length === 0 ? 'none' : grant.namespaces.join(',')})`
  if (!ops[role].includes(op)) return `${who} may not ${op}; ask an admin for a grant with role ${roleFor(op)}`
  if (role === 'operator' || (namespace === undefined && op === 'read')) return null
  if (namespace === undefined) return `${who} may ${op} only in a namespace; name the namespace`
  if (grant.namespaces.includes('*') || grant.namespaces.includes(namespace)) return null
  return `${who} may not ${op} in namespace ${namespace}; use one of its namespaces or ask an admin for a grant that adds ${namespace}`
}

/** Whether the user's tasks may run as `uid`: only the uids its grant lists (so root, 0, only when listed), whatever its role. */
export function mayRunAs (grant: Grant, uid: number): boolean {
  return grant.runAs.includes(uid)
}

function roleFor (op: Op): Role {
  return op === 'operate' ? 'operator' : op
}

function grantProblemIn (check: Check, grant: Grant, at: number): string | null {
  let byTime = check.memo.get(grant)
  const known = byTime?.get(at)
  if (known !== undefined) return known
  if (check.stepsLeft-- <= 0) return 'out of steps' // decided() turns the whole answer into a refusal
  const problem = grantProblemNow(check, grant, at)
  if (byTime === undefined) check.memo.set(grant, byTime = new Map())
  byTime.set(at, problem)
  return problem
}

function grantProblemNow (check: Check, grant: Grant, at: number): string | null {
  const who = `${grant.name}'s grant`
  if (at < grant.issuedAt) return `${who} is issued at ${iso(grant.issuedAt)}, after ${iso(at)}`
  if (grant.expiresAt !== null && at >= grant.expiresAt) return `${who} expired at ${iso(grant.expiresAt)}; ask an admin to grant it again`
  const signer = signerProblem(check, grant, grant.issuedAt, who)
  if (signer !== null) return signer
  const revocation = revokedBy(check, grant, at)
  if (revocation !== null) return `${who} of ${iso(grant.issuedAt)} is revoked from ${iso(revocation.at)}; ask an admin to grant it again`
  return null
}

/** Whether `s` is signed by root, or by an admin whose grant is in force at `at`. */
function signerProblem (check: Check, s: Statement, at: number, what: string): string | null {
  if (chainDepth(s) > ACCESS_LIMITS.chainDepthMax) return `${what} is more than ${ACCESS_LIMITS.chainDepthMax} grants from the root key`
  const by = s.by
  const issuerKey = by === null ? check.trust.rootKey : by.key
  if (!verifiedOnce(issuerKey, statementBytes(s), s.sig)) return `${what} is not signed by ${by === null ? 'the root key' : `${by.name}'s key`}`
  if (by === null) return null
  if (by.role !== 'admin') return `${what} is signed by ${by.name}, who is not an admin`
  const problem = grantProblemIn(check, by, at)
  return problem === null ? null : `${what} is signed by ${by.name}, whose grant was not in force at ${iso(at)}: ${problem}`
}

/** The first valid revocation that takes `grant` away at `at`, in a fixed order (so every node gives the same reason and does the same work). */
function revokedBy (check: Check, grant: Grant, at: number): Revocation | null {
  const applicable = check.trust.revocations(grant.name)
    .filter((r) => r.name === grant.name && grant.issuedAt <= r.at && r.at <= at)
    .sort((a, b) => a.at - b.at || (a.sig < b.sig ? -1 : a.sig > b.sig ? 1 : 0))
  for (const r of applicable) {
    if (signerProblem(check, r, r.at - 1, `the revocation of ${r.name}`) === null) return r
  }
  return null
}

function chainDepth (s: Statement): number {
  let depth = 0
  for (let g = s.by; g !== null && depth <= ACCESS_LIMITS.chainDepthMax; g = g.by) depth++
  return depth
}

// Signature checks are the cost of a decision (tens of µs each) and the same chains
// come back with every request: remember the answers, keyed by signature, but only
// for the same key and bytes, so a tampered copy of a statement never borrows the
// original's answer.
// The bytes are kept as their SHA-256 (a few µs to hash against ~100 µs to verify), so
// the memo holds the signatures of many jobs' requests in little memory.
const SIGNATURE_MEMO_MAX = 16_384
const signatures = new Map<string, { key: string, digest: Buffer, ok: boolean }>()

function verifiedOnce (key: string, bytes: Uint8Array, sig: string): boolean {
  const digest = createHash('sha256').update(bytes).digest()
  const known = signatures.get(sig)
  if (known !== undefined && known.key === key && known.digest.equals(digest)) return known.ok
  const ok = verifyBytes(key, bytes, sig)
  if (signatures.size >= SIGNATURE_MEMO_MAX) signatures.delete(signatures.keys().next().value!)
  signatures.set(sig, { key, digest, ok })
  return ok
}

function iso (ms: number): string {
  const date = new Date(ms)
  return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString()
}
