// Every API request is signed by its user: the method, host, path, a digest of the
// body, the time and a nonce, under the user's key. A node checks the signature,
// the time (within REQUEST_WINDOW_MS of its clock) and the nonce (never seen in the
// window, ReplayCache), then the user's grant (verify.ts). A request that changes
// the cluster is stored with the change as a Proof, so every other node can check,
// on its own, that a user who may do it asked for it. No I/O; the clock is an argument.

import { createHash, randomBytes } from 'node:crypto'
import { z } from 'zod'
import { AccessError, type UserKey, isPublicKeyText, signBytes, verifyBytes } from './keys.ts'
import { ACCESS_LIMITS, type Grant, grantSchema } from './statements.ts'

export interface RequestParts {
  method: string
  host: string
  /** As sent, with its query. */
  path: string
  body: Uint8Array | string
}

export const AUTH_SCHEME = 'Murmur'
/**
 * Optional: base64url of the JSON of the signer's grant, so that a node can learn a
 * grant it has not seen yet (the first admin, before any node stored its grant).
 */
export const GRANT_HEADER = 'murmur-grant'
/** A request's t must be within ± this of the node's clock: wide enough for NTP-synced clocks and slow links, and the replay cache remembers this long. */
export const REQUEST_WINDOW_MS = 30_000
/** Dashboard tokens live at most a day: they are bearer tokens, so they are short-lived and read-only. */
export const TOKEN_TTL_MS_MAX = 24 * 60 * 60 * 1000

/** A signed request as stored with what it changed. */
export interface Proof {
  key: string
  m: string
  h: string
  p: string
  /** sha256 hex of the body. */
  d: string
  /** ms since the epoch, the signer's clock. */
  t: number
  /** 16 hex. */
  n: string
  s: string
  grant: Grant
  /** The body as sent (UTF-8 text: API bodies are JSON), when what it says must be checked again (a job's spec). */
  body?: string
}

/** One line of the signed bytes: no line breaks, printable, bounded. */
const line = (max: number) => z.string().min(1).max(max).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
const NONCE_RE = /^[0-9a-f]{16}$/
const SIG_RE = /^[A-Za-z0-9_-]{86}$/

export const proofSchema = z.object({
  key: z.string().max(64).refine(isPublicKeyText, 'a public key is ed25519: and 43 base64url characters'),
  m: line(16).regex(/^[A-Z]+$/, 'an upper-case method'),
  h: line(255),
  p: line(4_096),
  d: z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 hex digest'),
  t: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  n: z.string().regex(NONCE_RE, '16 hex characters'),
  s: z.string().regex(SIG_RE, 'a signature is 86 base64url characters'),
  grant: grantSchema,
  body: z.string().max(ACCESS_LIMITS.proofBodyBytesMax).optional(),
}).strict()

export function bodyDigest (body: Uint8Array | string): string {
  return createHash('sha256').update(body).digest('hex')
}

/** What a user signs for one request. The key is not in it: only that key's signature verifies. */
export function requestBytes (parts: { m: string, h: string, p: string, d: string, t: number, n: string }): Uint8Array {
  const lines = ['murmur/request/1', parts.m.toUpperCase(), parts.h.toLowerCase(), parts.p, parts.d, String(parts.t), parts.n]
  if (lines.some((l) => /[\r\n]/.test(l))) throw new AccessError('bad-request', 'a request\'s method, host and path hold no line breaks')
  return Buffer.from(lines.join('\n'))
}

/** The headers that sign a request: authorization, and the signer's grant when it has one. */
export function signRequest (key: UserKey, parts: RequestParts, now: number, nonce: string = randomBytes(8).toString('hex')): Record<string, string> {
  if (!NONCE_RE.test(nonce)) throw new AccessError('bad-nonce', 'a request nonce is 16 lowercase hex characters')
  const t = Math.floor(now)
  const s = signBytes(key.privateKey, requestBytes({ m: parts.method, h: parts.host, p: parts.path, d: bodyDigest(parts.body), t, n: nonce }))
  const headers: Record<string, string> = { authorization: `${AUTH_SCHEME} key=${key.publicKey}, t=${t}, n=${nonce}, s=${s}` }
  if (key.grant !== null) headers[GRANT_HEADER] = Buffer.from(JSON.stringify(key.grant)).toString('base64url')
  return headers
}

export interface SignedHeader { key: string, t: number, n: string, s: string }

const AUTHORIZATION_CHARS_MAX = 512

/** The parts of an authorization header, or a one-line reason it is not a murmur signature. */
export function parseAuthorization (header: string): SignedHeader | string {
  const fix = 'sign requests with a murmur user key'
  if (header.length > AUTHORIZATION_CHARS_MAX) return `the authorization header is longer than ${AUTHORIZATION_CHARS_MAX} characters; ${fix}`
  const space = header.indexOf(' ')
  if (space < 0 || header.slice(0, space).toLowerCase() !== AUTH_SCHEME.toLowerCase()) return `the authorization is not a ${AUTH_SCHEME} signature; ${fix}`
  const params = new Map<string, string>()
  for (const part of header.slice(space + 1).split(',')) {
    const eq = part.indexOf('=')
    const name = part.slice(0, eq).trim()
    if (eq < 0 || params.has(name)) return `the authorization has a malformed or repeated parameter; ${fix}`
    params.set(name, part.slice(eq + 1).trim())
  }
  const key = params.get('key') ?? ''
  const t = params.get('t') ?? ''
  const n = params.get('n') ?? ''
  const s = params.get('s') ?? ''
  if (params.size !== 4) return `the authorization has parameters other than key, t, n and s; ${fix}`
  if (!isPublicKeyText(key)) return `the authorization's key is not a murmur public key; ${fix}`
  if (!/^[0-9]{1,16}$/.test(t) || !Number.isSafeInteger(Number(t))) return `the authorization's t is not a time in ms; ${fix}`
  if (!NONCE_RE.test(n)) return `the authorization's n is not 16 hex characters; ${fix}`
  if (!SIG_RE.test(s)) return `the authorization's s is not a signature; ${fix}`
  return { key, t: Number(t), n, s }
}

/** Why a request's time is not within the window of this node's clock, or null. */
export function requestTimeProblem (t: number, now: number, windowMs: number = REQUEST_WINDOW_MS): string | null {
  if (Math.abs(t - now) <= windowMs) return null
  return `the request was signed at ${new Date(t).toISOString()}, more than ${windowMs / 1000} s from this node's clock (${new Date(now).toISOString()}); sync the clock (NTP) and retry`
}

/** The stored form of a request that was checked. */
export function proofOf (header: SignedHeader, parts: { method: string, host: string, path: string, digest: string }, grant: Grant, body?: string): Proof {
  const proof: Proof = { key: header.key, m: parts.method.toUpperCase(), h: parts.host.toLowerCase(), p: parts.path, d: parts.digest, t: header.t, n: header.n, s: header.s, grant }
  if (body !== undefined) proof.body = body
  return proof
}

/**
 * The (key, nonce) pairs seen within the window. A pair is remembered until its t
 * leaves the window (t + window): after that the time check refuses the request
 * anyway. A t outside ±window of `now` is answered 'replay': it could be one that
 * is no longer remembered. When `max` pairs are remembered, new requests are
 * refused ('full', the caller answers 503) rather than forgetting one early.
 */
export class ReplayCache {
  private readonly windowMs: number
  private readonly max: number
  private readonly seen = new Map<string, number>()
  /** Min-heap of [expiry, pair]: pairs expire in t order, not in the order they came. */
  private readonly heap: Array<[number, string]> = []

  constructor (windowMs: number, max: number) {
    if (!(windowMs > 0) || !(max > 0)) throw new Error('a replay cache has a positive window and size')
    this.windowMs = windowMs
    this.max = max
  }

  get size (): number {
    return this.seen.size
  }

  admit (key: string, nonce: string, t: number, now: number): 'ok' | 'replay' | 'full' {
    this.expire(now)
    if (!(Math.abs(t - now) <= this.windowMs)) return 'replay' // NaN too
    const pair = `${key}\n${nonce}`
    if (this.seen.has(pair)) return 'replay'
    if (this.seen.size >= this.max) return 'full'
    const expiry = t + this.windowMs
    this.seen.set(pair, expiry)
    this.push([expiry, pair])
    return 'ok'
  }

  private expire (now: number): void {
    while (this.heap.length > 0 && this.heap[0]![0] < now) {
      const [, pair] = this.pop()
      this.seen.delete(pair)
    }
  }

  private push (entry: [number, string]): void {
    const h = this.heap
    h.push(entry)
    for (let i = h.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (h[parent]![0] <= h[i]![0]) break
      ;[h[parent], h[i]] = [h[i]!, h[parent]!]
      i = parent
    }
  }

  private pop (): [number, string] {
    const h = this.heap
    const top = h[0]!
    const last = h.pop()!
    if (h.length > 0) {
      h[0] = last
      for (let i = 0; ;) {
        const l = 2 * i + 1
        const r = l + 1
        let min = i
        if (l < h.length && h[l]![0] < h[min]![0]) min = l
        if (r < h.length && h[r]![0] < h[min]![0]) min = r
        if (min === i) break
        ;[h[min], h[i]] = [h[i]!, h[min]!]
        i = min
      }
    }
    return top
  }
}

// --- dashboard tokens --------------------------------------------------------------

const TOKEN_PREFIX = 'mt1'

function tokenBytes (payload: string): Uint8Array {
  return Buffer.from(`murmur/token/1\n${payload}`)
}

/** A read-only bearer token for the web dashboard, signed by the user's key: 'mt1.<payload>.<sig>'. */
export function makeToken (key: UserKey, ttlMs: number, now: number): string {
  if (!Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > TOKEN_TTL_MS_MAX) throw new AccessError('bad-token-ttl', `a token lives between 1 ms and 24 h, not ${ttlMs} ms; give a shorter ttl`)
  const iat = Math.floor(now)
  const payload = Buffer.from(JSON.stringify({ k: key.publicKey, iat, exp: iat + ttlMs })).toString('base64url')
  return `${TOKEN_PREFIX}.${payload}.${signBytes(key.privateKey, tokenBytes(payload))}`
}

const TOKEN_CHARS_MAX = 512
const tokenPayloadSchema = z.object({
  k: z.string().max(64).refine(isPublicKeyText),
  iat: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  exp: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
}).strict()

/** The key a token speaks for and until when, or a one-line reason it does not. The caller finds the key's grant and allows reads only. */
export function parseToken (token: string, now: number): { key: string, exp: number } | string {
  const fix = 'make a new one with your user key'
  const parts = token.length <= TOKEN_CHARS_MAX ? token.split('.') : []
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) return `not a murmur token; ${fix}`
  const [, payload, sig] = parts as [string, string, string]
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(payload, 'base64url').toString())
  } catch {
    return `the token is damaged; ${fix}`
  }
  const parsed = tokenPayloadSchema.safeParse(json)
  if (!parsed.success) return `the token is damaged; ${fix}`
  const { k, iat, exp } = parsed.data
  if (!verifyBytes(k, tokenBytes(payload), sig)) return `the token's signature does not match its key; ${fix}`
  if (exp - iat > TOKEN_TTL_MS_MAX || exp <= iat) return `the token claims to live longer than 24 h; ${fix}`
  if (iat > now + REQUEST_WINDOW_MS) return `the token is issued in the future (${new Date(iat).toISOString()}); sync the clock (NTP) and ${fix}`
  if (now >= exp) return `the token expired at ${new Date(exp).toISOString()}; ${fix}`
  return { key: k, exp }
}
