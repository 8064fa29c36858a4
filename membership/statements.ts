// A member's statements about itself — "I am alive at incarnation i, here, with
// this to offer" and "I left at incarnation i" — signed by the member's own key,
// so that anyone may relay them and nobody can forge them. Others may still
// suspect a member or declare it dead (that is how SWIM detects failures), but
// only the member can answer, and only the member can say goodbye.
//
// The bytes signed are a canonical rendering of the statement (fixed field order,
// sorted labels), never the JSON as received: the codec rebuilds objects in its
// own key order, and a relayed statement must still verify.
//
// `ed25519Keys` signs and checks with the node's libp2p identity: a member's id is
// its peer id, which holds its Ed25519 public key. It uses node:crypto, which
// computes and touches nothing outside the process.

import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { MemberMeta } from './types.ts'

/** What a member says about itself: the parts of an alive or left update that a signature covers. */
export type SelfStatement =
  | { kind: 'alive', id: string, incarnation: number, addrs: string[], meta: MemberMeta }
  | { kind: 'left', id: string, incarnation: number }

/** Signs this member's statements and checks others'. Signatures travel as base64 text. */
export interface StatementKeys {
  sign: (bytes: Uint8Array) => string
  /** True when `signature` is `member`'s over `bytes`; false for anything else, never throws. */
  verify: (member: string, bytes: Uint8Array, signature: string) => boolean
}

/** Changes with the wire format, so that a signature is never taken for another version's statement. */
const DOMAIN = 'murmur/membership/2 self statement\n'
const encoder = new TextEncoder()

export function statementBytes (statement: SelfStatement): Uint8Array {
  const fields: unknown[] = [statement.kind, statement.id, statement.incarnation]
  if (statement.kind === 'alive') {
    const { meta } = statement
    const labels = Object.entries(meta.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    fields.push(statement.addrs, [meta.cpuMillis, meta.memoryBytes, labels, meta.apiUrl ?? null, meta.isolation ?? null])
  }
  return encoder.encode(DOMAIN + JSON.stringify(fields))
}

export function signStatement (keys: StatementKeys, statement: SelfStatement): string {
  return keys.sign(statementBytes(statement))
}

export function verifyStatement (keys: StatementKeys, statement: SelfStatement, signature: string | undefined): boolean {
  if (signature === undefined) return false
  return keys.verify(statement.id, statementBytes(statement), signature)
}

/** Public keys of members already seen: parsing a peer id and importing its key costs more than a verification. */
const PUBLIC_KEYS_CACHED_MAX = 10_000

/**
 * Ed25519 keys from a libp2p identity: `privateKeyRaw` is the 64 bytes of an
 * Ed25519 private key as libp2p holds them (seed, then public key).
 */
export function ed25519Keys (privateKeyRaw: Uint8Array): StatementKeys {
  if (privateKeyRaw.byteLength !== 64) throw new Error(`an Ed25519 private key has 64 bytes, got ${privateKeyRaw.byteLength}`)
  const own = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(privateKeyRaw.subarray(0, 32)), x: b64url(privateKeyRaw.subarray(32)) },
    format: 'jwk',
  })
  const publicKeys = new Map<string, KeyObject | null>()
  const publicKeyOf = (member: string): KeyObject | null => {
    let key = publicKeys.get(member)
    if (key !== undefined) return key
    key = null
    try {
      const peerId = peerIdFromString(member)
      if (peerId.type === 'Ed25519') {
        key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(peerId.publicKey.raw) }, format: 'jwk' })
      }
    } catch {
      // Not a peer id: nobody can sign for it.
    }
    if (publicKeys.size >= PUBLIC_KEYS_CACHED_MAX) publicKeys.clear()
    publicKeys.set(member, key)
    return key
  }
  return {
    sign: (bytes) => sign(null, bytes, own).toString('base64'),
    verify: (member, bytes, signature) => {
      const key = publicKeyOf(member)
      if (key === null) return false
      const sig = Buffer.from(signature, 'base64')
      if (sig.byteLength !== 64) return false
      try {
        return verify(null, bytes, key, sig)
      } catch {
        return false
      }
    },
  }
}

function b64url (bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url')
}
