// The SWIM + Lifeguard state machine, one rule at a time, with a few members
// wired by hand so that each message can be held, dropped or inspected.

import { describe, expect, it } from 'vitest'
import { SIM, suspicionMaxMs, suspicionMinMs } from '../../membership/config.ts'
import type { Swim } from '../../membership/swim.ts'
import type { MemberEvent, MemberRecord, Message, Outbound, Update } from '../../membership/types.ts'
import { aliveOf, makeSwim, mesh, run, wire } from './helpers.ts'

/** Members that all know each other, one per id, in the order given. */
function swims<const T extends string[]> (...ids: T): { [K in keyof T]: Swim } {
  const list = ids.map((id) => makeSwim(id))
  mesh(list)
  return list as { [K in keyof T]: Swim }
}

function gossip (...updates: Update[]): Message {
  return { type: 'gossip', updates }
}

/** Ticks `swim` every 10 ms until it sends a ping; returns the ping and when. */
function nextPing (swim: Swim, fromMs: number): { atMs: number, ping: Outbound } {
  for (let t = fromMs; t < fromMs + 10_000; t += 10) {
    swim.tick(t)
    const ping = swim.drain().messages.find((m) => m.message.type === 'ping')
    if (ping !== undefined) return { atMs: t, ping }
  }
  throw new Error('no ping within 10 s')
}

/** Ticks `swim` alone every 10 ms, answering each of its pings at once with a bare ack, dropping the rest. */
function tickAcking (swim: Swim, fromMs: number, toMs: number, onEvent: (e: MemberEvent, atMs: number) => void = () => {}): void {
  for (let t = fromMs; t <= toMs; t += 10) {
    swim.tick(t)
    const { messages, events } = swim.drain()
    for (const e of events) onEvent(e, t)
    for (const m of messages) {
      if (m.message.type === 'ping' && m.to !== null) swim.receive(m.to, { type: 'ack', seq: m.message.seq, updates: [] }, t)
    }
    for (const e of swim.drain().events) onEvent(e, t)
  }
}

describe('joining', () => {
  it('joins through a seed address with a push-pull, and both sides learn each other', () => {
    const [a, b] = [makeSwim('a'), makeSwim('b')]
    b.join(['sim://a'])
    const [hello] = b.drain().messages
    expect(hello).toMatchObject({ to: null, addrs: ['sim://a'], message: { type: 'push-pull', join: true, reply: true } })
    a.receive('b', wire(hello!.message), 5)
    const { messages, events } = a.drain()
    expect(events).toEqual([expect.objectContaining({ previous: null, previousIncarnation: null, member: expect.objectContaining({ id: 'b', state: 'alive' }) })])
    expect(messages).toEqual([expect.objectContaining({ to: 'b', message: expect.objectContaining({ type: 'push-pull', reply: false }) })])
    b.receive('a', wire(messages[0]!.message), 6)
    expect(b.member('a')?.state).toBe('alive')
    expect(b.member('a')?.meta).toEqual(a.member('a')?.meta)
  })
})

describe('refutation', () => {
  it('answers a suspicion of itself with a higher incarnation, and others take it', () => {
    const [a, b, c] = swims('a', 'b', 'c')
    a.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 0, from: 'c' }), 10)
    const { events } = a.drain()
    expect(a.member('a')).toMatchObject({ state: 'alive', incarnation: 1 })
    expect(events).toEqual([expect.objectContaining({ previous: 'alive', previousIncarnation: 0, member: expect.objectContaining({ id: 'a', incarnation: 1 }) })])

    a.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 7, from: 'c' }), 20)
    expect(a.member('a')?.incarnation).toBe(8)
    a.receive('c', gossip({ kind: 'dead', id: 'a', incarnation: 8, from: 'c' }), 30)
    expect(a.member('a')).toMatchObject({ state: 'alive', incarnation: 9 })
    // News about an older incarnation is stale: nothing to refute.
    a.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 3, from: 'c' }), 40)
    expect(a.member('a')?.incarnation).toBe(9)

    b.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 0, from: 'c' }), 40)
    expect(b.member('a')?.state).toBe('suspect')
    run([a, b, c], 40, 1_000)
    expect(b.member('a')).toMatchObject({ state: 'alive', incarnation: 9 })
    expect(c.member('a')).toMatchObject({ state: 'alive', incarnation: 9 })
  })

  it('announces its incarnation again when it hears an older suspicion of itself (its refutation was lost)', () => {
    const [a] = swims('a', 'b', 'c')
    a.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 0, from: 'c' }), 10)
    expect(a.member('a')?.incarnation).toBe(1)
    // Everything a sends for a while is lost, until its refutation has used up its retransmits.
    const carriesAlive = (m: Message): boolean => 'updates' in m && m.updates.some((u) => u.kind === 'alive' && u.id === 'a')
    let seq = 0
    for (;;) {
      a.receive('b', { type: 'ping', seq: ++seq, updates: [] }, 20)
      if (!a.drain().messages.some((m) => carriesAlive(m.message))) break
      if (seq > 100) throw new Error('the refutation never ran out of retransmits')
    }
    for (const kind of ['suspect', 'dead'] as const) {
      // b never heard the refutation: it still speaks of incarnation 0.
      a.receive('b', { type: 'ping', seq: ++seq, updates: [{ kind, id: 'a', incarnation: 0, from: 'b' }] }, 30)
      const [ack] = a.drain().messages
      expect(ack?.message.type === 'ack' && ack.message.updates).toContainEqual(expect.objectContaining({ kind: 'alive', id: 'a', incarnation: 1 }))
      for (let i = 0; i < 20; i++) a.receive('b', { type: 'ping', seq: ++seq, updates: [] }, 40)
      a.drain()
    }
    // Announced again, not raised again: the incarnation it has is not in doubt.
    expect(a.member('a')?.incarnation).toBe(1)
  })

  it('outbids an alive record of itself that differs from what it is (a previous life)', () => {
    const [a] = swims('a', 'b')
    a.receive('b', gossip({ ...aliveOf(a), addrs: ['sim://elsewhere'] }), 10)
    expect(a.member('a')?.incarnation).toBe(1)
    expect(a.member('a')?.addrs).toEqual(['sim://a'])
  })

  it('does not refute its own alive record coming back through the codec, whatever the key order of its meta', () => {
    // The codec rebuilds objects in its schema's key order; the node must not take that for a different meta.
    const a = makeSwim('a', { meta: { labels: { zone: 'a', rack: '7' }, memoryBytes: 1024, cpuMillis: 500 } })
    const b = makeSwim('b')
    mesh([a, b])
    b.receive('a', wire(gossip(aliveOf(a))), 0)
    const echo = b.member('a')!
    a.receive('b', wire(gossip({ kind: 'alive', id: 'a', incarnation: echo.incarnation, addrs: echo.addrs, meta: echo.meta })), 10)
    expect(a.member('a')?.incarnation).toBe(0)
  })
})

describe('the buddy system', () => {
  it('probes a member it hears is suspected, telling it so on the ping, so that it refutes at once', () => {
    const [a, b] = swims('a', 'b', 'c')
    b.receive('c', gossip({ kind: 'suspect', id: 'a', incarnation: 0, from: 'c' }), 100)
    const ping = b.drain().messages.find((m) => m.to === 'a' && m.message.type === 'ping')
    expect(ping?.message.type === 'ping' && ping.message.updates[0]).toEqual({ kind: 'suspect', id: 'a', incarnation: 0, from: 'b' })

    a.receive('b', wire(ping!.message), 101)
    const ack = a.drain().messages.find((m) => m.to === 'b' && m.message.type === 'ack')
    expect(ack?.message.type === 'ack' && ack.message.updates).toContainEqual(expect.objectContaining({ kind: 'alive', id: 'a', incarnation: 1 }))
    b.receive('a', wire(ack!.message), 102)
    expect(b.member('a')).toMatchObject({ state: 'alive', incarnation: 1 })
  })

  it('puts the suspicion first on the regular probe of a suspect too', () => {
    const [b] = swims('b', 'a', 'c')
    // b's own probe of a fails: all its messages are lost.
    const { atMs, ping } = nextPing(b, 0)
    const target = ping.to!
    let t = atMs
    while (b.member(target)?.state !== 'suspect') {
      t += 10
      b.tick(t)
      b.drain()
      if (t > atMs + 2_000) throw new Error('no suspicion')
    }
    // The next probe of the suspect (round robin) carries its suspicion at the head.
    for (;;) {
      const next = nextPing(b, t + 10)
      t = next.atMs
      if (next.ping.to !== target) continue
      expect(next.ping.message.type === 'ping' && next.ping.message.updates[0]).toMatchObject({ kind: 'suspect', id: target })
      return
    }
  })
})

describe('probing', () => {
  it('starts indirect probes at once when the transport says a ping is undeliverable', () => {
    const all = swims('b', 'c', 'd', 'a')
    const [b] = all
    const { atMs, ping } = nextPing(b, 0)
    b.undeliverable(ping.message, atMs + 2)
    const reqs = b.drain().messages.filter((m) => m.message.type === 'ping-req')
    expect(reqs.map((m) => m.to).sort()).toEqual(['a', 'c', 'd'].filter((id) => id !== ping.to).sort())
    // The helpers cannot reach it either: their nacks complete the evidence before the probe's deadline.
    const byId = new Map(all.map((s) => [s.id, s]))
    for (const req of reqs) {
      const helper = byId.get(req.to!)!
      helper.receive('b', wire(req.message), atMs + 3)
      const relay = helper.drain().messages.find((m) => m.message.type === 'ping')!
      helper.undeliverable(relay.message, atMs + 4)
      const nack = helper.drain().messages.find((m) => m.message.type === 'nack')!
      b.receive(helper.id, wire(nack.message), atMs + 5)
    }
    expect(b.member(ping.to!)?.state).toBe('suspect')
  })

  it('otherwise waits probeTimeoutMs before asking others', () => {
    const [b] = swims('b', 'c', 'd', 'a')
    const { atMs } = nextPing(b, 0)
    for (let t = atMs + 10; t < atMs + SIM.probeTimeoutMs; t += 10) {
      b.tick(t)
      expect(b.drain().messages.filter((m) => m.message.type === 'ping-req')).toEqual([])
    }
    b.tick(atMs + SIM.probeTimeoutMs)
    expect(b.drain().messages.filter((m) => m.message.type === 'ping-req')).toHaveLength(2)
  })

  it('relays a ping-req: an ack from the target goes back to the asker, silence becomes a nack', () => {
    const [a, b] = swims('a', 'b', 'c')
    a.receive('b', { type: 'ping-req', seq: 77, target: 'c', targetAddrs: ['sim://c'], updates: [] }, 100)
    const relay = a.drain().messages.find((m) => m.message.type === 'ping')!
    expect(relay.to).toBe('c')
    a.receive('c', { type: 'ack', seq: relay.message.type === 'ping' ? relay.message.seq : -1, updates: [] }, 103)
    expect(a.drain().messages).toEqual([expect.objectContaining({ to: 'b', message: expect.objectContaining({ type: 'ack', seq: 77 }) })])

    a.receive('b', { type: 'ping-req', seq: 78, target: 'c', targetAddrs: ['sim://c'], updates: [] }, 200)
    a.drain()
    // The nack goes out at 80 % of the probe timeout, so that it reaches the asker before its deadline.
    const nackAtMs = 200 + Math.floor(SIM.probeTimeoutMs * 0.8)
    a.tick(nackAtMs - 10)
    expect(a.drain().messages.filter((m) => m.message.type === 'nack')).toEqual([])
    a.tick(nackAtMs)
    expect(a.drain().messages.filter((m) => m.message.type === 'nack')).toEqual([expect.objectContaining({ to: 'b', message: expect.objectContaining({ seq: 78 }) })])
    expect(b).toBeDefined()
  })

  it('a prober whose helpers nack in time does not doubt its own health when a member really dies', () => {
    const list = swims('a', 'b', 'c', 'd', 'e')
    const live = list.slice(0, 4)
    const crashed = (sent: { from: string, outbound: Outbound }): boolean => sent.from === 'e' || sent.outbound.to === 'e'
    let worstHealth = 0
    for (let t = 10; t <= 60_000; t += 10) {
      run(live, t - 10, t, crashed)
      worstHealth = Math.max(worstHealth, ...live.map((s) => s.health))
      if (live.every((s) => s.member('e')?.state === 'dead')) break
    }
    expect(live.map((s) => s.member('e')?.state)).toEqual(['dead', 'dead', 'dead', 'dead'])
    expect(worstHealth).toBe(0)
  })

  it('probes at once on a transport hint, but not twice, and not a dead member', () => {
    const [b] = swims('b', 'a', 'c')
    b.hint('a', 5)
    expect(b.drain().messages).toEqual([expect.objectContaining({ to: 'a', message: expect.objectContaining({ type: 'ping' }) })])
    b.hint('a', 6)
    expect(b.drain().messages).toEqual([])
    b.receive('a', gossip({ kind: 'dead', id: 'c', incarnation: 0, from: 'a' }), 7)
    b.drain()
    b.hint('c', 8)
    b.hint('nobody', 8)
    expect(b.drain().messages).toEqual([])
  })
})

describe('suspicion timeouts in the state machine', () => {
  function deadAt (confirmers: string[]): number {
    const [b] = swims('b', 'a', 'c', 'd', 'e')
    b.receive('a', gossip({ kind: 'suspect', id: 'c', incarnation: 0, from: 'a' }), 0)
    b.receive('d', gossip(...confirmers.map((from): Update => ({ kind: 'suspect', id: 'c', incarnation: 0, from }))), 0)
    let dead: number | undefined
    tickAcking(b, 0, 20_000, (e, t) => { if (e.member.id === 'c' && e.member.state === 'dead') dead ??= t })
    if (dead === undefined) throw new Error('never declared dead')
    return dead
  }

  it('declares an unconfirmed suspect dead after the ceiling', () => {
    expect(deadAt([])).toBe(Math.ceil(suspicionMaxMs(SIM, 5) / 10) * 10)
  })

  it('shortens the wait with each independent confirmation, down to the floor', () => {
    const min = suspicionMinMs(SIM, 5)
    const max = suspicionMaxMs(SIM, 5)
    const one = Math.floor(max - (max - min) * Math.log(2) / Math.log(3))
    expect(deadAt(['d'])).toBe(Math.ceil(one / 10) * 10)
    expect(deadAt(['d', 'e'])).toBe(Math.ceil(min / 10) * 10)
    // The accuser repeating itself is no confirmation.
    expect(deadAt(['a', 'a'])).toBe(Math.ceil(max / 10) * 10)
  })
})

describe('leaving', () => {
  it('tells everyone at once: the others mark it left without waiting for a timeout, and never dead', () => {
    const [a, b, c] = swims('a', 'b', 'c')
    a.leave(100)
    const { messages, events } = a.drain()
    expect(events).toEqual([expect.objectContaining({ previous: 'alive', member: expect.objectContaining({ id: 'a', state: 'left', incarnation: 1 }) })])
    expect(messages.map((m) => m.to).sort()).toEqual(['b', 'c'])
    for (const m of messages) {
      const other = m.to === 'b' ? b : c
      other.receive('a', wire(m.message), 101)
      expect(other.member('a')).toMatchObject({ state: 'left', stateSinceMs: 101 })
    }
    // Then a is gone for good: nothing reaches it, and nobody turns it into a suspect or a corpse.
    const states = new Set<string>()
    run([b, c], 101, 30_000)
    for (const s of [b, c]) states.add(s.member('a')!.state)
    expect([...states]).toEqual(['left'])
    expect(a.hasLeft).toBe(true)
  })

  it('does not probe or gossip once it has left', () => {
    const [a] = swims('a', 'b', 'c')
    a.leave(0)
    a.drain()
    for (let t = 10; t < 5_000; t += 10) a.tick(t)
    expect(a.drain().messages).toEqual([])
  })
})

describe('verdicts from across a partition', () => {
  it('takes a death reported by a member it holds dead as a suspicion only, and checks for itself', () => {
    const [b] = swims('b', 'a', 'c', 'd')
    b.receive('d', gossip({ kind: 'suspect', id: 'a', incarnation: 0, from: 'd' }, { kind: 'dead', id: 'a', incarnation: 0, from: 'd' }), 0)
    expect(b.member('a')?.state).toBe('dead')
    b.drain()
    // a is back (a healed partition) and brings its side's stale verdict on c.
    b.receive('a', gossip({ kind: 'dead', id: 'c', incarnation: 0, from: 'a' }), 10)
    expect(b.member('c')?.state).toBe('suspect')
    const ping = b.drain().messages.find((m) => m.to === 'c' && m.message.type === 'ping')
    expect(ping?.message.type === 'ping' && ping.message.updates[0]).toMatchObject({ kind: 'suspect', id: 'c' })
  })

  it('takes a death as a suspicion while it sees the member alive, as a death once it suspects it too', () => {
    const [b] = swims('b', 'a', 'c')
    b.receive('a', gossip({ kind: 'dead', id: 'c', incarnation: 0, from: 'a' }), 10)
    expect(b.member('c')?.state).toBe('suspect')
    b.receive('a', gossip({ kind: 'dead', id: 'c', incarnation: 0, from: 'a' }), 20)
    expect(b.member('c')?.state).toBe('dead')
  })

  it('lets a newcomer\'s suspicion run to the ceiling, confirmations or not', () => {
    const [b] = swims('b', 'a', 'c', 'd')
    // awarenessMax 1: its own unanswered probes must not stretch the timeout here.
    const graced = makeSwim('e', { config: { newcomerGraceMs: 10_000, awarenessMax: 1 } })
    mesh([graced, b])
    for (const other of ['a', 'c', 'd']) graced.receive('b', gossip({ kind: 'alive', id: other, incarnation: 0, addrs: [`sim://${other}`], meta: b.member(other)!.meta }), 0)
    graced.receive('a', gossip({ kind: 'suspect', id: 'b', incarnation: 0, from: 'a' }, { kind: 'suspect', id: 'b', incarnation: 0, from: 'c' }, { kind: 'suspect', id: 'b', incarnation: 0, from: 'd' }), 100)
    const n = graced.list().filter((m) => m.state === 'alive' || m.state === 'suspect').length
    let t = 100
    const tickUntil = (toMs: number): void => {
      for (t += 10; t <= toMs; t += 10) graced.tick(t)
      t -= 10
      graced.drain()
    }
    tickUntil(100 + suspicionMinMs(SIM, n) + 10)
    expect(graced.member('b')?.state).toBe('suspect')
    tickUntil(100 + suspicionMaxMs(SIM, n) + 10)
    expect(graced.member('b')?.state).toBe('dead')
  })
})

describe('coming back', () => {
  it('rejoins after being declared dead: a new process outbids its old incarnation', () => {
    const [a, b] = swims('a', 'b')
    // a stops answering; b alone declares it dead.
    run([a, b], 0, 20_000, (sent) => sent.outbound.to === 'a' || sent.from === 'a')
    expect(b.member('a')?.state).toBe('dead')
    const deadIncarnation = b.member('a')!.incarnation

    const reborn = makeSwim('a', { nowMs: 20_000 })
    reborn.join(['sim://b'])
    run([reborn, b], 20_000, 22_000)
    expect(b.member('a')).toMatchObject({ state: 'alive' })
    expect(b.member('a')!.incarnation).toBeGreaterThan(deadIncarnation)
    expect(reborn.member('b')?.state).toBe('alive')
  })
})

describe('limits', () => {
  it('knows at most membersMax members, however many a peer announces', () => {
    const a = makeSwim('a', { config: { membersMax: 3 } })
    const others = ['b', 'c', 'd', 'e'].map((id) => ({ kind: 'alive' as const, id, incarnation: 0, addrs: [`sim://${id}`], meta: a.member('a')!.meta }))
    const records = others.map(({ kind: _, ...record }) => ({ ...record, state: 'alive' as const }))
    a.receive('b', { type: 'push-pull', join: true, reply: false, members: records }, 10)
    expect(a.list().map((m) => m.id)).toEqual(['a', 'b', 'c'])
  })
})

describe('local health from event-loop delay', () => {
  it('doubts itself when its own event loop ran late by more than half a probe timeout', () => {
    const [a] = swims('a', 'b')
    a.localDelay(SIM.probeTimeoutMs / 2, 10)
    expect(a.health).toBe(0)
    a.localDelay(SIM.probeTimeoutMs / 2 + 1, 20)
    expect(a.health).toBe(1)
  })
})

describe('stall detection', () => {
  it('pushes probe deadlines back by a stall instead of blaming the target', () => {
    const twin = (): Swim => swims('b', 'a', 'c')[0]
    const stalled = twin()
    const steady = twin()
    const { atMs, ping } = nextPing(stalled, 0)
    expect(nextPing(steady, 0)).toEqual({ atMs, ping })
    // Both miss the answer; one ticks on, the other is frozen for 5 s.
    steady.tick(atMs + 600)
    expect(steady.member(ping.to!)?.state).toBe('suspect')

    stalled.tick(atMs + 100)
    stalled.tick(atMs + 5_100)
    expect(stalled.member(ping.to!)?.state).toBe('alive')
    expect(stalled.health).toBe(1)
    expect(stalled.drain().messages.filter((m) => m.message.type === 'ping-req')).toEqual([])
    // The probe goes on where it was: indirect probes at its (pushed) direct deadline.
    stalled.tick(atMs + 5_240)
    expect(stalled.drain().messages.filter((m) => m.message.type === 'ping-req')).toEqual([])
    stalled.tick(atMs + 5_250)
    expect(stalled.drain().messages.filter((m) => m.message.type === 'ping-req').length).toBeGreaterThan(0)
  })

  it('pushes suspicion deadlines back by a stall', () => {
    const max = suspicionMaxMs(SIM, 3)
    const [b] = swims('b', 'a', 'c')
    b.receive('a', gossip({ kind: 'suspect', id: 'c', incarnation: 0, from: 'a' }), 0)
    tickAcking(b, 10, 1_000)
    let dead: number | undefined
    tickAcking(b, 7_000, 30_000, (e, t) => { if (e.member.id === 'c' && e.member.state === 'dead') dead ??= t })
    expect(dead).toBe(Math.ceil(max / 10) * 10 + 6_000)
  })
})

describe('claims from a peer that is no member (found by the reliability suite)', () => {
  it('takes none of its gossip; its push-pull\'s "dead" only as a suspicion, and none of its goodbyes for others', () => {
    const [a] = swims('a', 'b', 'c')
    a.receive('mallory', gossip({ kind: 'dead', id: 'b', incarnation: 0, from: 'c' }, { kind: 'dead', id: 'b', incarnation: 0, from: 'c' }), 10)
    expect(a.member('b')!.state).toBe('alive')
    expect(a.drain().refused).toEqual([expect.objectContaining({ from: 'mallory', reason: 'stranger', kind: 'gossip' })])
    const record = (id: string, state: 'dead' | 'left'): MemberRecord => ({ ...a.member(id)!, state })
    a.receive('mallory', { type: 'push-pull', join: true, reply: false, members: [record('b', 'dead'), record('b', 'dead')] }, 11)
    expect(a.member('b')!.state).toBe('suspect')
    a.receive('mallory', { type: 'push-pull', join: true, reply: false, members: [record('c', 'left')] }, 12)
    expect(a.member('c')!.state).toBe('alive')
    expect(a.drain().refused).toEqual([expect.objectContaining({ from: 'mallory', reason: 'unverified-left', id: 'c' })])
    // Unsigned, the member itself may say goodbye, and a member held alive may relay it.
    a.receive('b', gossip({ kind: 'left', id: 'c', incarnation: 0 }), 13)
    expect(a.member('c')!.state).toBe('left')
  })

  it('answers a ping with a bare ack, so that a node that joined a moment ago finds us up', () => {
    const [a] = swims('a', 'b')
    a.receive('newcomer', { type: 'ping', seq: 7, updates: [{ kind: 'suspect', id: 'b', incarnation: 0, from: 'newcomer' }] }, 10)
    expect(a.drain().messages).toEqual([expect.objectContaining({ to: 'newcomer', message: { type: 'ack', seq: 7, updates: [] } })])
    expect(a.member('b')!.state).toBe('alive')
  })

  it('takes no claim at the highest incarnation, which could never be outbid', () => {
    const [a] = swims('a', 'b', 'c')
    a.receive('c', gossip({ kind: 'suspect', id: 'b', incarnation: Number.MAX_SAFE_INTEGER, from: 'c' }), 10)
    expect(a.member('b')!.state).toBe('alive')
    expect(a.member('b')!.incarnation).toBe(0)
  })
})
