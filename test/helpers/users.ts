// Users for the end-to-end tests of a closed testnet: the testnet's admin key, users
// added, revoked and given quotas by it (signed here, as the CLI signs them), and
// signed requests sent exactly as built, so that a test can change a signed request
// on its way (body, path, time, host) or send it twice.

import { readFileSync } from 'node:fs'
import { expect } from 'vitest'
import { join } from 'node:path'
import { type UserKey, newKeyPair, parseUserKey } from '../../access/keys.ts'
import { bodyDigest, proofOf, type Proof, signRequest } from '../../access/request.ts'
import { type Grant, type Role, type Signer, signGrant, signQuota, signRevocation } from '../../access/statements.ts'
import { type Client, connect } from '../../cli/client.ts'
import { rawRequest } from './http.ts'

/** The admin key `murmur testnet up` wrote into the testnet's dir. */
export function testnetAdmin (dir: string): UserKey {
  const file = join(dir, 'admin.key')
  return parseUserKey(readFileSync(file, 'utf8'), file)
}

/** What an admin key signs statements with. */
export function signerOf (admin: UserKey): Signer {
  return { privateKey: admin.privateKey, grant: admin.grant }
}

/** A client of one node that signs with `key`, in namespace `namespace` unless a call names another. */
export function as (apiUrl: string, key: UserKey | null, namespace = 'default'): Client {
  return connect(apiUrl, { key, namespace })
}

/**
 * A new user with a key of its own, granted by `admin` and stored through the node
 * at `apiUrl`; `expiresAt` null: never. The key holds its grant, as a key file would.
 */
export async function addUser (apiUrl: string, admin: UserKey, user: { name: string, role: Role, namespaces: string[], runAs?: number[], expiresAt?: number | null, issuedAt?: number }): Promise<UserKey> {
  const pair = newKeyPair()
  const grant: Grant = signGrant({
    name: user.name, key: pair.publicKey, role: user.role, namespaces: user.namespaces, runAs: user.runAs ?? [],
    issuedAt: user.issuedAt ?? Date.now(), expiresAt: user.expiresAt ?? null,
  }, signerOf(admin))
  await as(apiUrl, admin).addUser(grant)
  return { name: user.name, publicKey: pair.publicKey, privateKey: pair.privateKey, grant }
}

/** Revokes every grant of `name` from now on, signed by `admin`, through the node at `apiUrl`; resolves with the revocation's time. */
export async function revokeUser (apiUrl: string, admin: UserKey, name: string, at = Date.now()): Promise<number> {
  await as(apiUrl, admin).revokeUser(signRevocation({ name, at }, signerOf(admin)))
  return at
}

/** Sets a namespace's quota, signed by `admin`, through the node at `apiUrl` (which mints its rights). */
export async function setQuota (apiUrl: string, admin: UserKey, namespace: string, limit: { cpuMillis?: number | null, memoryBytes?: number | null, instances?: number | null }): Promise<void> {
  await as(apiUrl, admin).setQuota(signQuota({
    namespace, cpuMillis: limit.cpuMillis ?? null, memoryBytes: limit.memoryBytes ?? null, instances: limit.instances ?? null, setAt: Date.now(),
  }, signerOf(admin)))
}

/** A request signed by `key` and not sent yet: its exact method, path, Host, headers and body. */
export interface SignedRequest {
  method: string
  path: string
  /** The host (host:port) it is signed for. */
  host: string
  headers: Record<string, string>
  body: string | undefined
  /** The signed time and nonce, as the node stores them in a proof. */
  t: number
  n: string
}

/**
 * Signs a request as the murmur client does: for `apiUrl`'s host (or `host`), at
 * `now` (default: the clock now), with a JSON body when one is given.
 */
export function signed (apiUrl: string, key: UserKey, method: string, path: string, body?: unknown, opts: { now?: number, host?: string } = {}): SignedRequest {
  const host = opts.host ?? new URL(apiUrl).host
  const text = body === undefined ? undefined : JSON.stringify(body)
  const now = Math.floor(opts.now ?? Date.now())
  const auth = signRequest(key, { method, host, path, body: text ?? '' }, now)
  const n = /n=([0-9a-f]{16})/.exec(auth.authorization!)![1]!
  const headers: Record<string, string> = { ...auth, ...(text === undefined ? {} : { 'content-type': 'application/json' }) }
  return { method, path, host, headers, body: text, t: now, n }
}

/** A node's answer: its status, and its JSON body (with `error.code` and `error.message` when it refused). */
/** A refusal: the status and code, and one line that matches `message`. */
export function expectRefused (a: Answer, status: number, code: string, message: RegExp, what: string): void {
  expect({ status: a.status, code: a.code }, `${what}: ${a.message ?? JSON.stringify(a.json)}`).toEqual({ status, code })
  expect(a.message, what).toMatch(message)
  expect(a.message, what).not.toContain('\n')
}

export interface Answer {
  status: number
  json: any // eslint-disable-line @typescript-eslint/no-explicit-any
  code: string | null
  message: string | null
}

/**
 * Sends a request to the node at `apiUrl` exactly as given: its headers (Host from
 * `hostHeader`, else the one it was signed for), its path and body as they are now
 * (a test may have changed them after signing).
 */
export async function send (apiUrl: string, req: { method: string, path: string, host?: string, headers?: Record<string, string>, body?: string | undefined }, hostHeader?: string): Promise<Answer> {
  const url = new URL(apiUrl)
  const host = hostHeader ?? req.host ?? url.host
  const headers = { ...(req.headers ?? {}) }
  if (req.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json'
  const answer = await rawRequest({ hostname: url.hostname, port: Number(url.port), host }, req.method, req.path, headers, req.body)
  let json: unknown = null
  try {
    json = answer.body === '' ? null : JSON.parse(answer.body)
  } catch {
    json = answer.body
  }
  const error = (json as { error?: { code?: string, message?: string } } | null)?.error
  return { status: answer.status, json, code: error?.code ?? null, message: error?.message ?? null }
}

/** Signs and sends one request as `key` (null: unsigned). */
export async function call (apiUrl: string, key: UserKey | null, method: string, path: string, body?: unknown): Promise<Answer> {
  if (key === null) return await send(apiUrl, { method, path, body: body === undefined ? undefined : JSON.stringify(body) })
  return await send(apiUrl, signed(apiUrl, key, method, path, body))
}

/**
 * The proof a node would store for this signed request, had it accepted it: what
 * a member that intercepted the request (or read it out of the shared state) holds.
 */
export function proofOfSigned (req: SignedRequest, key: UserKey): Proof {
  if (key.grant === null) throw new Error(`${key.name}'s key has no grant to put in a proof`)
  const s = /s=([A-Za-z0-9_-]{86})/.exec(req.headers.authorization!)![1]!
  return proofOf({ key: key.publicKey, t: req.t, n: req.n, s }, { method: req.method, host: req.host, path: req.path, digest: bodyDigest(req.body ?? '') }, key.grant, req.body)
}
