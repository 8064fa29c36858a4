// The keys a node signs with and checks everyone's by: its libp2p identity, for
// its records in the shared state (crdt/signing.ts) and its statements about
// itself in membership (membership/statements.ts). An Ed25519 peer id holds its
// public key, so a writer's id is all a reader needs: no certificate authority.

import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type RecordKeys, SIGNATURE_BYTES, privateKeyFromSeed, publicKeyFromRaw, recordKeys } from '../crdt/signing.ts'
import type { StatementKeys } from '../membership/statements.ts'

export function nodeKeys (privateKey: PrivateKey): RecordKeys {
  if (privateKey.type !== 'Ed25519') throw new Error(`a node's identity must be an Ed25519 key, got ${privateKey.type}`)
  // libp2p's raw Ed25519 private key is the 32-byte seed followed by the public key.
  return recordKeys({ privateKey: privateKeyFromSeed(privateKey.raw.subarray(0, 32)), publicKeyOf })
}

/** The node's keys as membership takes them: its signatures travel as base64 text. */
export function statementKeys (keys: RecordKeys): StatementKeys {
  return {
    sign: (bytes) => Buffer.from(keys.sign(bytes)).toString('base64'),
    verify: (member, bytes, signature) => {
      const raw = Buffer.from(signature, 'base64')
      return raw.byteLength === SIGNATURE_BYTES && keys.verify(member, bytes, raw)
    },
  }
}

/** The public key inside an Ed25519 peer id, or null for anything else. */
function publicKeyOf (writer: string): ReturnType<typeof publicKeyFromRaw> | null {
  try {
    const key = peerIdFromString(writer).publicKey
    return key?.type === 'Ed25519' ? publicKeyFromRaw(key.raw) : null
  } catch {
    return null
  }
}
