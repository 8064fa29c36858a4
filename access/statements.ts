// What the root key and admins sign: grants (a user's name, key, role, namespaces
// and the uids their tasks may run as), revocations (by name and time) and quotas
// (a namespace's limits). Each statement carries its signer's own grant in `by`
// (null: the root key signed it), so any node can check it alone, against the
// root key it was started with, without asking anyone (verify.ts). No I/O.

import { type KeyObject, createHash } from 'node:crypto'
import { z } from 'zod'
import { AccessError, isPublicKeyText, publicKeyText, signBytes } from './keys.ts'

export const ROLES = ['admin', 'operator', 'submit', 'read'] as const
export type Role = typeof ROLES[number]

/** A user name: short, lowercase, safe in a path, a log line and a command line. */
export const NAME_RE = /^[a-z][a-z0-9-]{0,62}$/
/** A namespace is a DNS label, as job namespaces are; `*` in a grant's namespaces means all of them. */
export const NAMESPACE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/

export const ACCESS_LIMITS = Object.freeze({
  /** Admin grants between a statement and the root key: deep enough for any organisation, short enough to check in microseconds. */
  chainDepthMax: 8,
  /** Namespaces in one grant; a user who needs more gets `*`. */
  namespacesMax: 64,
  /** Uids in one grant's runAs. */
  runAsMax: 64,
  /** A statement's JSON, chain included: it travels in a request header and in every node's state. */
  statementBytesMax: 16 * 1024,
  /** A stored request's body (a job's spec as sent): within the job record's own bound. */
  proofBodyBytesMax: 128 * 1024,
  /** Grant checks in one decision (grantProblem): revocations signed by admins who were themselves revoked can chain; this bounds the work any set of statements can cause. */
  checkStepsMax: 1_024,
})

export interface GrantBody {
  name: string
  /** The user's public key (`ed25519:…`). */
  key: string
  role: Role
  namespaces: string[]
  /** The uids the user's tasks may run as; 0 (root) only if listed. */
  runAs: number[]
  /** ms since the epoch; the grant is in force from here. */
  issuedAt: number
  /** ms since the epoch, exclusive; null: until revoked. */
  expiresAt: number | null
}
export interface Grant extends GrantBody { type: 'grant', by: Grant | null, sig: string }

/** Revokes every grant of `name` issued at or before `at`, from `at` on. A grant issued after `at` is untouched: that is how a user is added again. */
export interface RevocationBody { name: string, at: number }
export interface Revocation extends RevocationBody { type: 'revoke', by: Grant | null, sig: string }

/** A namespace's limits, whole-cluster; null: unlimited. The latest `setAt` wins. */
export interface QuotaBody { namespace: string, cpuMillis: number | null, memoryBytes: number | null, instances: number | null, setAt: number }
export interface Quota extends QuotaBody { type: 'quota', by: Grant | null, sig: string }

export type Statement = Grant | Revocation | Quota

/** A signer: the root key (by = null) or an admin with its own grant. */
export type Signer = { privateKey: KeyObject, grant: Grant | null }

// --- schemas ---------------------------------------------------------------------

const time = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const name = z.string().regex(NAME_RE, 'a user name is a-z, 0-9 and -, starting with a letter, at most 63 characters')
const publicKey = z.string().max(64).refine(isPublicKeyText, 'a public key is ed25519: and 43 base64url characters')
/** 64 bytes of base64url. */
const sig = z.string().regex(/^[A-Za-z0-9_-]{86}$/, 'a signature is 86 base64url characters')
const uid = z.number().int().min(0).max(2 ** 32 - 2)
const limit = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).nullable()

/** Typed by hand (it holds itself), and as a discriminated union's member, which it is: its `type` is a literal. */
const grantShape: z.ZodType<Grant> & z.core.$ZodTypeDiscriminable = z.lazy(() => z.object({
  type: z.literal('grant'),
  name,
  key: publicKey,
  role: z.enum(ROLES),
  namespaces: z.array(z.string().refine((n) => n === '*' || NAMESPACE_RE.test(n), 'a namespace is a DNS label, or *')).max(ACCESS_LIMITS.namespacesMax),
  runAs: z.array(uid).max(ACCESS_LIMITS.runAsMax),
  issuedAt: time,
  expiresAt: time.nullable(),
  by: grantShape.nullable(),
  sig,
}).strict().refine((g) => g.expiresAt === null || g.expiresAt > g.issuedAt, 'a grant expires after it is issued'))

const revocationShape = z.object({ type: z.literal('revoke'), name, at: time, by: grantShape.nullable(), sig }).strict()

const quotaShape = z.object({
  type: z.literal('quota'),
  namespace: z.string().regex(NAMESPACE_RE, 'a quota is for one namespace, a DNS label'),
  cpuMillis: limit,
  memoryBytes: limit,
  instances: limit,
  setAt: time,
  by: grantShape.nullable(),
  sig,
}).strict()

/**
 * Checked before the shape: the chain's depth (so the recursive shape recurses a
 * bounded number of times) and the statement's size.
 */
const bounded = z.unknown().superRefine((value, ctx) => {
  const problem = boundsProblem(value)
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem })
})

function boundsProblem (value: unknown): string | null {
  let depth = 0
  for (let s = value; isObject(s) && isObject(s.by); s = s.by) {
    if (++depth > ACCESS_LIMITS.chainDepthMax) return `a statement is at most ${ACCESS_LIMITS.chainDepthMax} grants from the root key`
  }
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch {
    return 'a statement is JSON'
  }
  if (json !== undefined && Buffer.byteLength(json) > ACCESS_LIMITS.statementBytesMax) return `a statement is at most ${ACCESS_LIMITS.statementBytesMax} bytes`
  return null
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

export const grantSchema = bounded.pipe(grantShape)
export const revocationSchema = bounded.pipe(revocationShape)
export const quotaSchema = bounded.pipe(quotaShape)
export const statementSchema = bounded.pipe(z.discriminatedUnion('type', [grantShape, revocationShape, quotaShape]))

// --- signing ---------------------------------------------------------------------

export function signGrant (body: GrantBody, signer: Signer): Grant {
  return signed({ type: 'grant', ...pick(body, ['name', 'key', 'role', 'namespaces', 'runAs', 'issuedAt', 'expiresAt']) }, signer, grantSchema) as Grant
}

export function signRevocation (body: RevocationBody, signer: Signer): Revocation {
  return signed({ type: 'revoke', ...pick(body, ['name', 'at']) }, signer, revocationSchema) as Revocation
}

export function signQuota (body: QuotaBody, signer: Signer): Quota {
  return signed({ type: 'quota', ...pick(body, ['namespace', 'cpuMillis', 'memoryBytes', 'instances', 'setAt']) }, signer, quotaSchema) as Quota
}

/** Only the body's own fields are signed: a caller's extra property would make a statement nobody can parse. */
function pick<T extends object, K extends keyof T> (body: T, keys: K[]): Pick<T, K> {
  const out = {} as Pick<T, K>
  for (const k of keys) out[k] = body[k]
  return out
}

/**
 * Signs, and checks the result parses as every node will parse it, so a bad body
 * fails here, in the signer's hands, with a reason, instead of being dropped by
 * every node. A signer with a grant must hold that grant's key and be an admin.
 */
function signed (unsigned: Record<string, unknown>, signer: Signer, schema: z.ZodType): Statement {
  const grant = signer.grant
  if (grant !== null) {
    if (publicKeyText(signer.privateKey) !== grant.key) throw new AccessError('signer-mismatch', `the signing key is not ${grant.name}'s (${grant.key}); sign with the key file the grant was made for`)
    if (grant.role !== 'admin') throw new AccessError('not-admin', `${grant.name} is ${article(grant.role)} ${grant.role}, not an admin, and cannot sign grants, revocations or quotas; ask an admin`)
  }
  const statement = { ...unsigned, by: grant, sig: '' } as unknown as Statement
  statement.sig = signBytes(signer.privateKey, statementBytes(statement))
  const parsed = schema.safeParse(statement)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue === undefined || issue.path.length === 0 ? '' : `${issue.path.map(String).join('.')}: `
    throw new AccessError('bad-statement', `cannot sign this ${statement.type}: ${where}${issue?.message ?? 'invalid'}`)
  }
  return statement
}

function article (role: Role): string {
  return role === 'admin' || role === 'operator' ? 'an' : 'a'
}

/**
 * What a statement's signer signs: a domain line, then the canonical JSON of the
 * statement without `sig`, with `by` replaced by the signer's grant's signature.
 * That signature covers the signer's whole grant (and so, in turn, its chain), so
 * no link of the chain can be swapped; and a signature made for one type of
 * statement can never be read as another's.
 */
export function statementBytes (s: Statement): Uint8Array {
  const { sig: _sig, by, ...rest } = s
  return Buffer.from(`murmur/${s.type}/1\n${canonicalJson({ ...rest, by: by === null ? null : by.sig })}`)
}

/** A short id for storage keys and logs: a statement is known by its signature. */
export function statementId (s: Statement): string {
  return createHash('sha256').update(s.sig).digest('hex').slice(0, 16)
}

/** JSON with every object's keys sorted, so the signed bytes do not depend on how an object was built. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => v === undefined ? 'null' : canonicalJson(v)).join(',')}]`
  if (isObject(value)) {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`
  }
  const json = JSON.stringify(value)
  if (json === undefined) throw new AccessError('not-json', `${typeof value} is not JSON`)
  return json
}
