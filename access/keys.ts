// Users' and the root's Ed25519 keys: how a public key is written (`ed25519:` and
// the 32 raw bytes in base64url, short enough to paste into a command line), how
// bytes are signed and checked, and the JSON key files the CLI keeps. No I/O:
// callers read and write the files (mode 0600), this module only encodes and
// parses their text.

import { type KeyObject, createPublicKey, generateKeyPairSync, sign as edSign, verify as edVerify } from 'node:crypto'
import { privateKeyFromSeed, publicKeyFromRaw } from '../crdt/signing.ts'
import { type Grant, NAME_RE, grantSchema } from './statements.ts'

export const KEY_PREFIX = 'ed25519:'
const RAW_KEY_BYTES = 32
const SIGNATURE_BYTES = 64
/** Imported public keys kept: a cluster has few users, and each request of one user needs the same key. */
const PUBLIC_KEY_CACHE_MAX = 4_096

/** A user's key file, decoded: who they are, their private key, and the grant an admin gave them (null until then). */
export interface UserKey { name: string, publicKey: string, privateKey: KeyObject, grant: Grant | null }
/** The root key: it signs the first admins' grants; its public half is pinned on every node. */
export interface RootKey { publicKey: string, privateKey: KeyObject }

/** Something about keys, grants or requests that the user can fix; `code` is stable, the message is one line. */
export class AccessError extends Error {
  override name = 'AccessError'
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.code = code
  }
}

export function newKeyPair (): { publicKey: string, privateKey: KeyObject } {
  const { privateKey } = generateKeyPairSync('ed25519')
  return { publicKey: publicKeyText(privateKey), privateKey }
}

/** The text of a key's public half; a private key gives its public key's text. */
export function publicKeyText (key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key
  if (pub.asymmetricKeyType !== 'ed25519') throw new AccessError('not-ed25519', `a murmur key is an Ed25519 key, got ${pub.asymmetricKeyType ?? key.type}`)
  const x = pub.export({ format: 'jwk' }).x
  if (x === undefined) throw new AccessError('not-ed25519', 'an Ed25519 public key without its bytes')
  return KEY_PREFIX + x
}

export function isPublicKeyText (text: string): boolean {
  return text.startsWith(KEY_PREFIX) && rawOf(text.slice(KEY_PREFIX.length), RAW_KEY_BYTES) !== null
}

/** The base64url signature of `privateKey` over `bytes`. */
export function signBytes (privateKey: KeyObject, bytes: Uint8Array): string {
  return edSign(null, bytes, privateKey).toString('base64url')
}

const publicKeys = new Map<string, KeyObject | null>()

/** True only if `signature` is `publicKey`'s over `bytes`; false, never a throw, for a malformed key or signature. */
export function verifyBytes (publicKey: string, bytes: Uint8Array, signature: string): boolean {
  const key = importPublicKey(publicKey)
  const sig = rawOf(signature, SIGNATURE_BYTES)
  if (key === null || sig === null) return false
  try {
    return edVerify(null, bytes, key, sig)
  } catch {
    return false
  }
}

function importPublicKey (text: string): KeyObject | null {
  let key = publicKeys.get(text)
  if (key !== undefined) return key
  const raw = text.startsWith(KEY_PREFIX) ? rawOf(text.slice(KEY_PREFIX.length), RAW_KEY_BYTES) : null
  try {
    key = raw === null ? null : publicKeyFromRaw(raw)
  } catch {
    key = null // 32 bytes that are not a point of the curve
  }
  if (publicKeys.size >= PUBLIC_KEY_CACHE_MAX) publicKeys.delete(publicKeys.keys().next().value!)
  publicKeys.set(text, key)
  return key
}

/**
 * The bytes of canonical unpadded base64url text of exactly `bytes` bytes, or null.
 * Canonical, so that one key or signature has one text: ids and caches keyed by
 * the text cannot be dodged by writing the same bytes another way.
 */
function rawOf (text: string, bytes: number): Buffer | null {
  if (text.length !== Math.ceil(bytes * 4 / 3) || !/^[A-Za-z0-9_-]+$/.test(text)) return null
  const raw = Buffer.from(text, 'base64url')
  return raw.byteLength === bytes && raw.toString('base64url') === text ? raw : null
}

// --- key files -------------------------------------------------------------------

const USER_FORMAT = 'user-key/1'
const ROOT_FORMAT = 'root-key/1'
/** A key file is a few hundred bytes, a few KiB with a long grant chain. */
const KEY_FILE_CHARS_MAX = 64 * 1024

function seedText (privateKey: KeyObject): string {
  const d = privateKey.export({ format: 'jwk' }).d
  if (privateKey.asymmetricKeyType !== 'ed25519' || d === undefined) throw new AccessError('not-ed25519', 'a murmur private key is an Ed25519 private key')
  return d
}

export function encodeUserKey (key: UserKey): string {
  return JSON.stringify({ murmur: USER_FORMAT, name: key.name, publicKey: key.publicKey, privateKey: seedText(key.privateKey), grant: key.grant }, null, 2) + '\n'
}

export function encodeRootKey (key: RootKey): string {
  return JSON.stringify({ murmur: ROOT_FORMAT, publicKey: key.publicKey, privateKey: seedText(key.privateKey) }, null, 2) + '\n'
}

/** A user key file's content; throws an AccessError that names `where` and what is wrong with it. */
export function parseUserKey (text: string, where: string): UserKey {
  const file = keyFileObject(text, where, USER_FORMAT, ['murmur', 'name', 'publicKey', 'privateKey', 'grant'])
  const bad = (what: string): AccessError => new AccessError('bad-key-file', `${where}: ${what}; the file is damaged: restore it from a backup or make a new key`)
  if (typeof file.name !== 'string' || !NAME_RE.test(file.name)) throw bad('"name" is not a user name (a-z, 0-9 and -, starting with a letter)')
  const { publicKey, privateKey } = keyPairOf(file, bad)
  let grant: Grant | null = null
  if (file.grant !== null) {
    const parsed = grantSchema.safeParse(file.grant)
    if (!parsed.success) throw bad(`"grant" is not a grant (${firstIssue(parsed.error)})`)
    grant = parsed.data
    if (grant.key !== publicKey || grant.name !== file.name) {
      throw new AccessError('bad-key-file', `${where}: its grant is for ${grant.name} (${grant.key}), not for this key; ask an admin for a grant of ${file.name} with ${publicKey}`)
    }
  }
  return { name: file.name, publicKey, privateKey, grant }
}

/** A root key file's content; throws an AccessError that names `where` and what is wrong with it. */
export function parseRootKey (text: string, where: string): RootKey {
  const file = keyFileObject(text, where, ROOT_FORMAT, ['murmur', 'publicKey', 'privateKey'])
  return keyPairOf(file, (what) => new AccessError('bad-key-file', `${where}: ${what}; the file is damaged: restore the root key from its backup`))
}

/** A public key given as text (a flag, a file's content): trimmed, checked. */
export function parsePublicKey (text: string, where: string): string {
  const key = text.trim()
  if (isPublicKeyText(key)) return key
  // Quoted as JSON: a file given by mistake (a private key file) shows its first characters on the same line.
  const shown = JSON.stringify(key.length > 24 ? `${key.slice(0, 24)}…` : key)
  throw new AccessError('bad-public-key', `${where}: ${shown} is not a murmur public key; give one as printed by its owner, like ${KEY_PREFIX}<43 base64url characters>`)
}

function keyFileObject (text: string, where: string, format: string, fields: string[]): Record<string, unknown> {
  const kind = format === USER_FORMAT ? 'user' : 'root'
  const notOne = (why: string): AccessError => new AccessError('bad-key-file', `${where}: not a murmur ${kind} key file (${why}); give the path of a file made by murmur`)
  if (text.length > KEY_FILE_CHARS_MAX) throw notOne(`more than ${KEY_FILE_CHARS_MAX} characters`)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw notOne('not JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw notOne('not a JSON object')
  const file = value as Record<string, unknown>
  if (file.murmur !== format) {
    const other = file.murmur === USER_FORMAT || file.murmur === ROOT_FORMAT ? `it is a ${String(file.murmur).split('-')[0]} key` : `"murmur" is not "${format}"`
    throw notOne(other)
  }
  const missing = fields.find((f) => !(f in file))
  if (missing !== undefined) throw notOne(`no "${missing}"`)
  const extra = Object.keys(file).find((f) => !fields.includes(f))
  if (extra !== undefined) throw notOne(`an unknown field "${extra}"`)
  return file
}

function keyPairOf (file: Record<string, unknown>, bad: (what: string) => AccessError): RootKey {
  if (typeof file.publicKey !== 'string' || !isPublicKeyText(file.publicKey)) throw bad('"publicKey" is not an ed25519: public key')
  const seed = typeof file.privateKey === 'string' ? rawOf(file.privateKey, RAW_KEY_BYTES) : null
  if (seed === null) throw bad('"privateKey" is not 32 bytes of base64url')
  const privateKey = privateKeyFromSeed(seed)
  if (publicKeyText(privateKey) !== file.publicKey) throw bad('"privateKey" does not match "publicKey"')
  return { publicKey: file.publicKey, privateKey }
}

function firstIssue (error: { issues: ReadonlyArray<{ path: PropertyKey[], message: string }> }): string {
  const issue = error.issues[0]
  if (issue === undefined) return 'invalid'
  return issue.path.length === 0 ? issue.message : `${issue.path.map(String).join('.')}: ${issue.message}`
}
