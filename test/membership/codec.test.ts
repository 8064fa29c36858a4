// The wire boundary: every valid message survives a round trip; every bad one is
// a typed error with a reason and a message that says what is wrong, never a throw.

import { describe, expect, it } from 'vitest'
import { decodeMessage, encodeMessage, LIMITS } from '../../membership/codec.ts'
import type { Message, Update } from '../../membership/types.ts'
import { meta } from './helpers.ts'

const alive: Update = { kind: 'alive', id: 'n1', incarnation: 3, addrs: ['/ip4/10.0.0.1/tcp/4001'], meta: { ...meta(), apiUrl: 'http://10.0.0.1:8080' } }
const updates: Update[] = [
  alive,
  { kind: 'suspect', id: 'n2', incarnation: 0, from: 'n1' },
  { kind: 'dead', id: 'n3', incarnation: 7, from: 'n1' },
  { kind: 'left', id: 'n4', incarnation: 1 },
]

const valid: Message[] = [
  { type: 'ping', seq: 1, updates },
  { type: 'ack', seq: 2, updates: [] },
  { type: 'ping-req', seq: 3, target: 'n9', targetAddrs: ['/ip4/10.0.0.9/tcp/4001'], updates },
  { type: 'nack', seq: Number.MAX_SAFE_INTEGER, updates: [] },
  { type: 'gossip', updates },
  {
    type: 'push-pull', join: true, reply: true, members: [
      { id: 'n1', addrs: [], incarnation: 0, state: 'alive', meta: meta() },
      { id: 'n2', addrs: ['a'], incarnation: 5, state: 'dead', meta: { cpuMillis: 0, memoryBytes: 0, labels: {} } },
    ],
  },
]

function bytesOf (value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value))
}

function rejected (value: unknown): { reason: string, error: string } {
  const result = decodeMessage(value instanceof Uint8Array ? value : bytesOf(value))
  if (result.ok) throw new Error(`accepted ${JSON.stringify(value).slice(0, 200)}`)
  return result
}

describe('codec: valid messages', () => {
  it.each(valid.map((m) => [m.type, m] as const))('round-trips a %s', (_type, message) => {
    const result = decodeMessage(encodeMessage(message))
    expect(result).toEqual({ ok: true, message })
  })

  it('accepts a message at the limits', () => {
    const many = Array.from({ length: LIMITS.updatesPerMessageMax }, (_, i): Update => ({ kind: 'left', id: `${i}`.padEnd(LIMITS.idCharsMax, 'x'), incarnation: i }))
    expect(decodeMessage(encodeMessage({ type: 'gossip', updates: many })).ok).toBe(true)
  })
})

describe('codec: rejects what a peer must not send', () => {
  it('refuses an oversized message before parsing it', () => {
    const bytes = new Uint8Array(LIMITS.messageBytesMax + 1).fill(0x20)
    const { reason, error } = rejected(bytes)
    expect(reason).toBe('oversized')
    expect(error).toContain(String(LIMITS.messageBytesMax))
  })

  it('refuses bytes that are not UTF-8 JSON', () => {
    expect(rejected(new TextEncoder().encode('{"type":"ping"')).reason).toBe('malformed')
    expect(rejected(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])).reason).toBe('malformed')
    expect(rejected(new Uint8Array(0)).reason).toBe('malformed')
  })

  const invalid: [string, unknown, string][] = [
    ['a value that is not an object', 42, 'message'],
    ['an unknown type', { type: 'shout', updates: [] }, 'type'],
    ['a string seq', { type: 'ping', seq: '1', updates: [] }, 'seq'],
    ['a fractional seq', { type: 'ack', seq: 1.5, updates: [] }, 'seq'],
    ['a negative seq', { type: 'ack', seq: -1, updates: [] }, 'seq'],
    ['a seq beyond 2^53', { type: 'ack', seq: 2 ** 60, updates: [] }, 'seq'],
    ['missing updates', { type: 'ping', seq: 1 }, 'updates'],
    ['updates that are not a list', { type: 'gossip', updates: {} }, 'updates'],
    ['too many updates', { type: 'gossip', updates: Array.from({ length: LIMITS.updatesPerMessageMax + 1 }, () => updates[3]) }, 'updates'],
    ['an update of unknown kind', { type: 'gossip', updates: [{ kind: 'zombie', id: 'x', incarnation: 0 }] }, 'updates.0.kind'],
    ['a negative incarnation', { type: 'gossip', updates: [{ kind: 'left', id: 'x', incarnation: -1 }] }, 'updates.0.incarnation'],
    ['an empty id', { type: 'gossip', updates: [{ kind: 'left', id: '', incarnation: 0 }] }, 'updates.0.id'],
    ['a huge id', { type: 'gossip', updates: [{ kind: 'left', id: 'x'.repeat(LIMITS.idCharsMax + 1), incarnation: 0 }] }, 'updates.0.id'],
    ['a suspicion without accuser', { type: 'gossip', updates: [{ kind: 'suspect', id: 'x', incarnation: 0 }] }, 'updates.0.from'],
    ['a huge address', { type: 'gossip', updates: [{ ...alive, addrs: ['a'.repeat(LIMITS.addrCharsMax + 1)] }] }, 'updates.0.addrs.0'],
    ['too many addresses', { type: 'gossip', updates: [{ ...alive, addrs: Array.from({ length: LIMITS.addrsPerMemberMax + 1 }, (_, i) => `a${i}`) }] }, 'updates.0.addrs'],
    ['a huge label value', { type: 'gossip', updates: [{ ...alive, meta: { ...meta(), labels: { k: 'v'.repeat(LIMITS.labelValueCharsMax + 1) } } }] }, 'updates.0.meta.labels.k'],
    ['too many labels', { type: 'gossip', updates: [{ ...alive, meta: { ...meta(), labels: Object.fromEntries(Array.from({ length: LIMITS.labelsPerMemberMax + 1 }, (_, i) => [`k${i}`, 'v'])) } }] }, 'updates.0.meta.labels'],
    ['a label that is not a string', { type: 'gossip', updates: [{ ...alive, meta: { ...meta(), labels: { k: 1 } } }] }, 'updates.0.meta.labels.k'],
    ['a negative memory', { type: 'gossip', updates: [{ ...alive, meta: { ...meta(), memoryBytes: -1 } }] }, 'updates.0.meta.memoryBytes'],
    ['a ping-req without target', { type: 'ping-req', seq: 1, targetAddrs: [], updates: [] }, 'target'],
    ['an unknown member state', { type: 'push-pull', join: false, reply: false, members: [{ id: 'x', addrs: [], incarnation: 0, state: 'zombie', meta: meta() }] }, 'members.0.state'],
    ['a push-pull whose flags are strings', { type: 'push-pull', join: 'yes', reply: false, members: [] }, 'join'],
    ['too many members', { type: 'push-pull', join: false, reply: false, members: Array.from({ length: LIMITS.membersPerPushPullMax + 1 }, () => ({ id: 'x', addrs: [], incarnation: 0, state: 'left', meta: { cpuMillis: 0, memoryBytes: 0, labels: {} } })) }, 'members'],
  ]

  it.each(invalid)('refuses %s, naming where', (_what, value, where) => {
    const { reason, error } = rejected(value)
    expect(reason).toBe('invalid')
    expect(error.startsWith(`${where}: `), error).toBe(true)
  })
})
