// Signed requests for the tests that speak HTTP to a node themselves (fetch, or
// rawRequest for exact headers): every API request of a closed cluster must be
// signed by a user key, so these sign with a testnet's admin key as the murmur
// client does (access/request.ts, signRequest: method, Host, path with its query,
// the body's digest, the time and a nonce).

import { readFileSync, writeFileSync } from 'node:fs'
import { type UserKey, encodeUserKey, newKeyPair, parseUserKey } from '../../access/keys.ts'
import { signRequest } from '../../access/request.ts'
import { type Role, signGrant } from '../../access/statements.ts'
import { connect } from '../../cli/client.ts'
import { adminKeyFile } from '../../testnet/local/testnet.ts'
import { type RawTarget, rawRequest } from './http.ts'

/** The admin key `testnet up` (or tempClusterKey, given its adminKey file) wrote: `dir` is the testnet's dir, or a key file. */
export function adminKey (dirOrFile: string): UserKey {
  const file = dirOrFile.endsWith('.key') ? dirOrFile : adminKeyFile(dirOrFile)
  return parseUserKey(readFileSync(file, 'utf8'), file)
}

/** The headers that sign one request for `host` (host:port, as the Host header sends it). */
export function signedHeaders (key: UserKey, method: string, host: string, path: string, body = ''): Record<string, string> {
  return signRequest(key, { method, host, path, body }, Date.now())
}

/** fetch, signed by `key`: for the URL's host, and its path with the query. */
export async function signedFetch (key: UserKey, url: string, init: RequestInit & { body?: string } = {}): Promise<Response> {
  const u = new URL(url)
  const method = init.method ?? 'GET'
  const headers = { ...(init.headers as Record<string, string> | undefined), ...signedHeaders(key, method, u.host, `${u.pathname}${u.search}`, init.body ?? '') }
  return await fetch(url, { ...init, method, headers })
}

/**
 * rawRequest signed by `key`, for the Host it sends (`headers.host`, else the
 * target's): a test that sends a foreign Host or Origin still gets past the
 * signature, so the check it means to test is the one that answers.
 */
export async function signedRawRequest (key: UserKey, target: RawTarget, method: string, path: string, headers: Record<string, string> = {}, body?: string, timeoutMs?: number): Promise<{ status: number, body: string }> {
  const host = headers.host ?? target.host
  return await rawRequest(target, method, path, { ...headers, ...signedHeaders(key, method, host, path, body ?? '') }, body, timeoutMs)
}

/**
 * A new user granted by `admin` (never expiring), stored through the node at
 * `apiUrl`; with `file`, its key file (mode 0600, as 'murmur user add' writes it)
 * for the CLI's --key.
 */
export async function newUser (apiUrl: string, admin: UserKey, user: { name: string, role: Role, namespaces: string[] }, file?: string): Promise<UserKey> {
  const pair = newKeyPair()
  const grant = signGrant({ ...user, key: pair.publicKey, runAs: [], issuedAt: Date.now(), expiresAt: null }, { privateKey: admin.privateKey, grant: admin.grant })
  await connect(apiUrl, { key: admin }).addUser(grant)
  const key: UserKey = { name: user.name, publicKey: pair.publicKey, privateKey: pair.privateKey, grant }
  if (file !== undefined) writeFileSync(file, encodeUserKey(key), { mode: 0o600 })
  return key
}
