// Membership messages on the wire: JSON, decoded and validated at the boundary.
// A message from a peer is either a typed Message or a typed error that says
// what was wrong; it never throws into the caller. Every field is bounded.
//
// Version 2 (the protocol id in node/membership.ts says which): a member's
// statements about itself (alive, left) and push-pull records carry the member's
// signature (statements.ts). A cluster is upgraded whole: version 1 nodes do not
// speak to version 2 nodes at all.

import { z } from 'zod'
import type { Message } from './types.ts'

/** Limits on what a peer may send; the unit is in the name. */
export const LIMITS = Object.freeze({
  /** A push-pull of 1,000 members with labels fits well below this. */
  messageBytesMax: 1_048_576,
  idCharsMax: 128,
  addrCharsMax: 256,
  addrsPerMemberMax: 16,
  labelsPerMemberMax: 64,
  labelKeyCharsMax: 63,
  labelValueCharsMax: 255,
  updatesPerMessageMax: 256,
  membersPerPushPullMax: 10_000,
  /** An Ed25519 signature is 64 bytes, 88 characters of base64. */
  signatureCharsMax: 128,
})

const id = z.string().min(1).max(LIMITS.idCharsMax)
const counter = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const signature = z.string().min(1).max(LIMITS.signatureCharsMax).optional()
const addrs = z.array(z.string().min(1).max(LIMITS.addrCharsMax)).max(LIMITS.addrsPerMemberMax)

export const memberMetaSchema = z.object({
  cpuMillis: counter,
  memoryBytes: counter,
  labels: z.record(z.string().min(1).max(LIMITS.labelKeyCharsMax), z.string().max(LIMITS.labelValueCharsMax))
    .refine((labels) => Object.keys(labels).length <= LIMITS.labelsPerMemberMax, `at most ${LIMITS.labelsPerMemberMax} labels`),
  apiUrl: z.string().max(LIMITS.addrCharsMax).optional(),
  isolation: z.enum(['cgroup-v2', 'cgroup-v1', 'none']).optional(),
})

const update = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('alive'), id, incarnation: counter, addrs, meta: memberMetaSchema, sig: signature }),
  z.object({ kind: z.literal('suspect'), id, incarnation: counter, from: id }),
  z.object({ kind: z.literal('dead'), id, incarnation: counter, from: id }),
  z.object({ kind: z.literal('left'), id, incarnation: counter, sig: signature }),
])
const updates = z.array(update).max(LIMITS.updatesPerMessageMax)

const memberRecord = z.object({
  id,
  addrs,
  incarnation: counter,
  state: z.enum(['alive', 'suspect', 'dead', 'left']),
  meta: memberMetaSchema,
  sig: signature,
})

const messageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ping'), seq: counter, updates }),
  z.object({ type: z.literal('ack'), seq: counter, updates }),
  z.object({ type: z.literal('ping-req'), seq: counter, target: id, targetAddrs: addrs, updates }),
  z.object({ type: z.literal('nack'), seq: counter, updates }),
  z.object({ type: z.literal('gossip'), updates }),
  z.object({ type: z.literal('push-pull'), join: z.boolean(), reply: z.boolean(), members: z.array(memberRecord).max(LIMITS.membersPerPushPullMax) }),
])

export type DecodeResult =
  | { ok: true, message: Message }
  | { ok: false, reason: 'oversized' | 'malformed' | 'invalid', error: string }

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeMessage (message: Message): Uint8Array {
  return encoder.encode(JSON.stringify(message))
}

export function decodeMessage (bytes: Uint8Array): DecodeResult {
  if (bytes.byteLength > LIMITS.messageBytesMax) {
    return { ok: false, reason: 'oversized', error: `message of ${bytes.byteLength} bytes exceeds ${LIMITS.messageBytesMax}` }
  }
  let raw: unknown
  try {
    raw = JSON.parse(decoder.decode(bytes))
  } catch (err) {
    return { ok: false, reason: 'malformed', error: `not UTF-8 JSON: ${(err as Error).message}` }
  }
  const parsed = messageSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue?.path.join('.') ?? ''
    return { ok: false, reason: 'invalid', error: `${where === '' ? 'message' : where}: ${issue?.message ?? 'invalid'}` }
  }
  return { ok: true, message: parsed.data as Message }
}
