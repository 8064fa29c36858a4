// Signed records. Every record in the document is stored in an envelope that
// carries its writer's Ed25519 signature. What is signed binds the record to the
// one Yjs item that holds it, so a signature cannot be moved: not to another key,
// another writer space, another map, another position in a key's history, nor to
// an item id of someone else's (see README.md, "Signed records"). No I/O; the
// hashing and the signatures are CPU only.

import { type KeyObject, createHash, createPrivateKey, createPublicKey, sign as edSign, verify as edVerify } from 'node:crypto'
import * as Y from 'yjs'

/** Signs as this node, and checks any writer's signature. */
export interface RecordKeys {
  /** The 64-byte Ed25519 signature of this node over `bytes`. */
  sign: (bytes: Uint8Array) => Uint8Array
  /** True only if `signature` is `writer`'s over `bytes`; false for a writer whose key cannot be known. */
  verify: (writer: string, bytes: Uint8Array, signature: Uint8Array) => boolean
}

/** What a record's envelope holds in the document. */
export interface Envelope {
  /** The record. */
  r: unknown
  /** The writer's signature, base64. */
  s: string
  /** The nonce the writer's Yjs client id is derived from (hex; see clientIdOf). */
  n: string
}

/** Where a record sits in the document: all of it is signed. */
export interface Placement {
  kind: string
  /** The writer space key, or '' for a record in a top-level map (a node record). */
  space: string
  /** The id of the item of the map that holds the record ('' for a top-level map). */
  parent: string
  key: string
  /** The record's own item, and the item it was written after (the key's previous value), or ''. */
  item: string
  origin: string
}

export const SIGNATURE_BYTES = 64
const NONCE_HEX = 16
const CLIENT_ID_BITS = 53
const DOMAIN = 'murmur/record/1'

/** An item id as signed: `client:clock`. */
export function idText (id: { client: number, clock: number } | null): string {
  return id === null ? '' : `${id.client}:${id.clock}`
}

/** The bytes a writer signs for one record in one place; null for a record that is not JSON (a BigInt, a cycle). */
export function signedBytes (place: Placement, record: unknown): Uint8Array | null {
  let json: string | undefined
  try {
    json = JSON.stringify(record)
  } catch {
    return null
  }
  return json === undefined ? null : Buffer.from([DOMAIN, place.kind, place.space, place.parent, place.key, place.item, place.origin, json].join('\n'))
}

/**
 * Sets `key` of `map` (a map in a document, inside a transaction) to `record` in an
 * envelope signed for the item Yjs is about to make for it: the document's client
 * id (which must be the one `nonce` gives the signer) at its next clock, written
 * after the key's current value.
 */
export function writeSigned (map: Y.Map<unknown>, at: { kind: string, space: string }, key: string, record: unknown, signer: { keys: RecordKeys, nonce: string }): Envelope {
  const doc = map.doc
  if (doc === null) throw new Error('a signed record is written into a map that is in a document')
  const left = map._map.get(key)
  const place: Placement = {
    ...at,
    parent: idText(map._item?.id ?? null),
    key,
    item: idText({ client: doc.clientID, clock: Y.getState(doc.store, doc.clientID) }),
    origin: idText(left?.lastId ?? null),
  }
  const bytes = signedBytes(place, record)
  if (bytes === null) throw new Error(`the ${at.kind} record ${key} is not JSON`)
  const envelope: Envelope = { r: record, s: Buffer.from(signer.keys.sign(bytes)).toString('base64'), n: signer.nonce }
  map.set(key, envelope)
  return envelope
}

/**
 * A Yjs client id that only its writer may use: the first 53 bits of a hash of the
 * writer's id and a nonce the writer chose, which every envelope carries. A reader
 * refuses a record whose item's client id is not the one its writer and nonce give,
 * so nobody can sign records under another writer's client id; finding a nonce of
 * one's own that gives another's id takes about 2⁵³ hashes.
 */
export function clientIdOf (writer: string, nonce: string): number {
  const digest = createHash('sha256').update(`murmur/client/1\n${writer}\n${nonce}`).digest()
  return digest.readUIntBE(0, 6) * 32 + (digest[6]! >> 3) // 48 + 5 = 53 bits
}

/** A fresh nonce from the given randomness (the simulator's is seeded). */
export function newNonce (random: () => number): string {
  let out = ''
  while (out.length < NONCE_HEX) out += Math.floor(random() * 16).toString(16)
  return out
}

export function isNonce (value: unknown): value is string {
  return typeof value === 'string' && value.length === NONCE_HEX && /^[0-9a-f]+$/.test(value)
}

/** The envelope's parts, if it has the envelope's shape. */
export function asEnvelope (value: unknown): Envelope | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null
  const v = value as Record<string, unknown>
  if (Object.keys(v).length !== 3 || !('r' in v) || typeof v.s !== 'string' || !isNonce(v.n)) return null
  return { r: v.r, s: v.s, n: v.n }
}

/** What an envelope in a place claims: that `writer` signed `bytes`. */
export interface SignatureClaim { writer: string, bytes: Uint8Array, signature: Uint8Array }

/** The claim an envelope in this place makes for `writer`, or why it cannot hold a record of `writer` at all. */
export function envelopeClaim (writer: string, place: Placement, client: number, envelope: Envelope): SignatureClaim | string {
  if (clientIdOf(writer, envelope.n) !== client) return `was written under a client id that is not ${writer}'s`
  const signature = Buffer.from(envelope.s, 'base64')
  if (signature.byteLength !== SIGNATURE_BYTES) return 'has no valid signature'
  const bytes = signedBytes(place, envelope.r)
  if (bytes === null) return 'is not JSON'
  return { writer, bytes, signature }
}

/** Why an envelope in this place does not hold a record of `writer`, or null if it does. */
export function envelopeProblem (keys: RecordKeys, writer: string, place: Placement, client: number, envelope: Envelope): string | null {
  const claim = envelopeClaim(writer, place, client, envelope)
  if (typeof claim === 'string') return claim
  return keys.verify(writer, claim.bytes, claim.signature) ? null : `is not signed by ${writer}`
}

/** One claim, as a key: all it says, hashed. */
export function claimKey (claim: SignatureClaim): string {
  return createHash('sha256').update(claim.writer).update('\n').update(claim.signature).update(claim.bytes).digest('base64')
}

// --- keys ----------------------------------------------------------------------

const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')

/** An Ed25519 private key from its 32-byte seed. */
export function privateKeyFromSeed (seed: Uint8Array): KeyObject {
  if (seed.byteLength !== 32) throw new Error(`an Ed25519 seed is 32 bytes, got ${seed.byteLength}`)
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' })
}

/** An Ed25519 public key from its 32 raw bytes. */
export function publicKeyFromRaw (raw: Uint8Array): KeyObject {
  if (raw.byteLength !== 32) throw new Error(`an Ed25519 public key is 32 bytes, got ${raw.byteLength}`)
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: 'der', type: 'spki' })
}

/**
 * RecordKeys over a way to find a writer's public key (cached: a cluster has few
 * writers, and every record of one writer needs the same key).
 */
export function recordKeys (init: { privateKey: KeyObject, publicKeyOf: (writer: string) => KeyObject | null }): RecordKeys {
  const cache = new Map<string, KeyObject | null>()
  const CACHE_MAX = 4_096
  return {
    sign: (bytes) => edSign(null, bytes, init.privateKey),
    verify: (writer, bytes, signature) => {
      let key = cache.get(writer)
      if (key === undefined) {
        key = init.publicKeyOf(writer)
        if (cache.size >= CACHE_MAX) cache.clear()
        cache.set(writer, key)
      }
      if (key === null) return false
      try {
        return edVerify(null, bytes, key, signature)
      } catch {
        return false
      }
    },
  }
}

/**
 * Keys derived from a writer's name alone, for the simulator and tests: every
 * party can compute every key, so they prove nothing against a hostile writer.
 * A node uses its libp2p identity instead (node/keys.ts).
 */
export function derivedKeys (self: string): RecordKeys {
  return recordKeys({
    privateKey: derivedPrivateKey(self),
    publicKeyOf: (writer) => createPublicKey(derivedPrivateKey(writer)),
  })
}

function derivedPrivateKey (name: string): KeyObject {
  return privateKeyFromSeed(createHash('sha256').update(`murmur/derived-key/1\n${name}`).digest())
}
