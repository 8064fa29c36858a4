// The keys a node signs its records with and checks everyone's by: its libp2p
// identity. An Ed25519 peer id holds its public key, so a record's writer id is
// all a reader needs to check its signature: no certificate authority.

import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { type RecordKeys, privateKeyFromSeed, publicKeyFromRaw, recordKeys } from '../crdt/signing.ts'

export function nodeKeys (privateKey: PrivateKey): RecordKeys {
  if (privateKey.type !== 'Ed25519') throw new Error(`a node's identity must be an Ed25519 key, got ${privateKey.type}`)
  // libp2p's raw Ed25519 private key is the 32-byte seed followed by the public key.
  return recordKeys({ privateKey: privateKeyFromSeed(privateKey.raw.subarray(0, 32)), publicKeyOf })
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
