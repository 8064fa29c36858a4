// The gossip queue: bounded retransmits, one entry per member (newer replaces
// older), least-sent first.

import { describe, expect, it } from 'vitest'
import { BroadcastQueue } from '../../membership/broadcast.ts'
import { retransmitLimit, SIM } from '../../membership/config.ts'
import type { Update } from '../../membership/types.ts'
import { aliveOf, makeSwim, mesh } from './helpers.ts'

function suspect (id: string, incarnation = 0): Update {
  return { kind: 'suspect', id, incarnation, from: 'x' }
}

describe('BroadcastQueue', () => {
  it('gives nothing when empty', () => {
    expect(new BroadcastQueue().take(10, 3)).toEqual([])
  })

  it('takes at most `max` updates at a time', () => {
    const q = new BroadcastQueue()
    for (let i = 0; i < 10; i++) q.enqueue(suspect(`m${i}`))
    expect(q.take(4, 100)).toHaveLength(4)
    expect(q.size).toBe(10)
  })

  it('drops an update once it was sent `limit` times', () => {
    const q = new BroadcastQueue()
    q.enqueue(suspect('m'))
    expect(q.take(5, 3)).toHaveLength(1)
    expect(q.take(5, 3)).toHaveLength(1)
    expect(q.size).toBe(1)
    expect(q.take(5, 3)).toHaveLength(1)
    expect(q.size).toBe(0)
    expect(q.take(5, 3)).toEqual([])
  })

  it('keeps one update per member: a newer one replaces the older and starts its count again', () => {
    const q = new BroadcastQueue()
    q.enqueue(suspect('m', 1))
    q.take(1, 2)
    q.enqueue({ kind: 'alive', id: 'm', incarnation: 2, addrs: [], meta: { cpuMillis: 1, memoryBytes: 1, labels: {} } })
    expect(q.size).toBe(1)
    expect(q.get('m')?.kind).toBe('alive')
    // A fresh entry: two more transmits before it is dropped.
    expect(q.take(1, 2)[0]?.kind).toBe('alive')
    expect(q.take(1, 2)[0]?.kind).toBe('alive')
    expect(q.size).toBe(0)
  })

  it('sends the least-sent updates first, the newest among equals', () => {
    const q = new BroadcastQueue()
    q.enqueue(suspect('old'))
    q.enqueue(suspect('mid'))
    expect(q.take(1, 10).map((u) => u.id)).toEqual(['mid'])
    q.enqueue(suspect('new'))
    expect(q.take(3, 10).map((u) => u.id)).toEqual(['new', 'old', 'mid'])
  })

  it('clears', () => {
    const q = new BroadcastQueue()
    q.enqueue(suspect('m'))
    q.clear()
    expect(q.size).toBe(0)
    expect(q.get('m')).toBeUndefined()
  })
})

describe('piggybacking in Swim', () => {
  it('puts at most piggybackUpdatesMax updates on a message, and each update on at most retransmitLimit messages', () => {
    const piggybackUpdatesMax = 8
    const a = makeSwim('a', { config: { piggybackUpdatesMax } })
    const b = makeSwim('b')
    mesh([a, b])
    const others = Array.from({ length: 40 }, (_, i) => makeSwim(`m${i}`))
    a.receive('b', { type: 'gossip', updates: others.map(aliveOf) }, 0)
    a.drain()
    const limit = retransmitLimit(SIM, 42)
    const sends = new Map<string, number>()
    for (let seq = 1; seq <= 1000; seq++) {
      a.receive('b', { type: 'ping', seq, updates: [] }, 0)
      const [ack] = a.drain().messages
      if (ack?.message.type !== 'ack') throw new Error('expected an ack')
      expect(ack.message.updates.length).toBeLessThanOrEqual(piggybackUpdatesMax)
      for (const update of ack.message.updates) sends.set(update.id, (sends.get(update.id) ?? 0) + 1)
    }
    // The 40 newcomers and b, whom a learned in mesh().
    expect(sends.size).toBe(41)
    for (const count of sends.values()) expect(count).toBe(limit)
  })
})
