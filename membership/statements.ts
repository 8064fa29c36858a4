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
// The keys come in (`StatementKeys`): a node signs and checks with its libp2p
// identity, whose peer id holds its Ed25519 public key (node/keys.ts); the tests
// and the simulator bring their own or none.

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
