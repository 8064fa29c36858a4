// The simulator itself: a seeded PRNG whose forks do not disturb each other, a
// network that keeps its promises (delay, loss, duplicates, partitions, how a
// failure is reported), and a cluster that replays exactly from its seed.

import { afterEach, describe, expect, it } from 'vitest'
import { LIMITS } from '../../membership/codec.ts'
import type { Message, Outbound, Update } from '../../membership/types.ts'
import { randomMeta, SimCluster } from '../../testnet/sim/cluster.ts'
import { type NetworkConfig, type NetworkHost, SimNetwork, type Wire } from '../../testnet/sim/network.ts'
import { Rng, seedFromEnv } from '../../testnet/sim/rng.ts'
import { TimeQueue } from '../../testnet/sim/time-queue.ts'

describe('Rng', () => {
  it('gives the same stream for the same seed, another for another seed', () => {
    const draw = (rng: Rng): number[] => Array.from({ length: 5 }, () => rng.uint32())
    expect(draw(new Rng(7))).toEqual(draw(new Rng(7)))
    expect(draw(new Rng(7))).not.toEqual(draw(new Rng(8)))
  })

  it('forks by label, whatever the parent has drawn', () => {
    const parent = new Rng(7)
    const before = parent.fork('n1').next()
    for (let i = 0; i < 100; i++) parent.next()
    expect(parent.fork('n1').next()).toBe(before)
    expect(parent.fork('n2').next()).not.toBe(before)
  })

  it('draws integers in range, roughly uniformly', () => {
    const rng = new Rng(1)
    const counts = [0, 0, 0, 0]
    for (let i = 0; i < 40_000; i++) counts[rng.int(4)]!++
    for (const count of counts) expect(Math.abs(count - 10_000)).toBeLessThan(400)
    const seen = new Set<number>()
    for (let i = 0; i < 1_000; i++) seen.add(rng.between(3, 5))
    expect([...seen].sort()).toEqual([3, 4, 5])
  })

  describe('seedFromEnv', () => {
    const saved = process.env['SEED']
    afterEach(() => {
      if (saved === undefined) delete process.env['SEED']
      else process.env['SEED'] = saved
    })

    it('replays SEED when set, and refuses a bad one', () => {
      delete process.env['SEED']
      expect(seedFromEnv(5)).toBe(5)
      process.env['SEED'] = '123'
      expect(seedFromEnv(5)).toBe(123)
      process.env['SEED'] = 'abc'
      expect(() => seedFromEnv(5)).toThrow(/SEED must be a non-negative integer/)
    })
  })
})

describe('TimeQueue', () => {
  it('pops in time order, ties in insertion order, and only what is due', () => {
    const q = new TimeQueue<string>()
    q.push(5, 'c')
    q.push(1, 'a')
    q.push(5, 'd')
    q.push(3, 'b')
    expect(q.popDue(0)).toBeUndefined()
    const out: string[] = []
    for (let e = q.popDue(5); e !== undefined; e = q.popDue(5)) out.push(e.value)
    expect(out).toEqual(['a', 'b', 'c', 'd'])
    expect(q.size).toBe(0)
  })
})

/** A network between hosts a, b, c that records what arrives and what is reported back. */
function net (config: Partial<NetworkConfig> = {}): { network: SimNetwork, delivered: { to: string, atMs: number, message: Wire }[], refused: { from: string, atMs: number }[], host: NetworkHost } {
  const network = new SimNetwork(config, new Rng(1))
  for (const id of ['a', 'b', 'c']) network.register(id, `sim://${id}`)
  const delivered: { to: string, atMs: number, message: Wire }[] = []
  const refused: { from: string, atMs: number }[] = []
  const host: NetworkHost = {
    deliver: (to, _from, message, atMs) => { delivered.push({ to, atMs, message }) },
    undeliverable: (from, _message, atMs) => { refused.push({ from, atMs }) },
  }
  return { network, delivered, refused, host }
}

function ping (seq: number, to: string | null = 'b', addrs: string[] = []): Outbound {
  return { to, addrs, message: { type: 'ping', seq, updates: [] } }
}

describe('SimNetwork', () => {
  it('delays each message within its bounds, which reorders them', () => {
    const { network, delivered, host } = net({ delayMinMs: 2, delayMaxMs: 40 })
    for (let seq = 0; seq < 500; seq++) network.send('a', ping(seq), 0)
    network.deliverDue(1_000, host)
    expect(delivered).toHaveLength(500)
    for (const d of delivered) expect(d.atMs).toBeGreaterThanOrEqual(2)
    for (const d of delivered) expect(d.atMs).toBeLessThanOrEqual(40)
    const order = delivered.map((d) => d.message.type === 'ping' ? d.message.seq : -1)
    expect(order).not.toEqual([...order].sort((x, y) => x - y))
  })

  it('loses and duplicates messages at the configured rates', () => {
    const { network, delivered, host } = net({ lossRate: 0.1, duplicateRate: 0.05 })
    for (let seq = 0; seq < 20_000; seq++) network.send('a', ping(seq), 0)
    network.deliverDue(1_000, host)
    const { lost, duplicated } = network.stats
    expect(lost / 21_000).toBeGreaterThan(0.09)
    expect(lost / 21_000).toBeLessThan(0.11)
    expect(duplicated / 20_000).toBeGreaterThan(0.04)
    expect(duplicated / 20_000).toBeLessThan(0.06)
    expect(delivered).toHaveLength(20_000 + duplicated - lost)
  })

  it('carries messages as bytes through the codec: what it rejects is counted, not delivered', () => {
    const { network, delivered, host } = net()
    const tooMany: Update[] = Array.from({ length: LIMITS.updatesPerMessageMax + 1 }, (_, i) => ({ kind: 'left', id: `m${i}`, incarnation: 0 }))
    network.send('a', { to: 'b', addrs: [], message: { type: 'gossip', updates: tooMany } }, 0)
    network.send('a', ping(1), 0)
    network.deliverDue(100, host)
    expect(delivered).toHaveLength(1)
    expect(network.stats.rejected).toBe(1)
  })

  it('reports a message to a crashed process back to the sender one round trip later, once per send', () => {
    const { network, delivered, refused, host } = net({ delayMinMs: 3, delayMaxMs: 3, duplicateRate: 1 })
    network.setStatus('b', 'crashed')
    network.send('a', ping(1), 10)
    network.deliverDue(100, host)
    expect(delivered).toEqual([])
    expect(refused).toEqual([{ from: 'a', atMs: 16 }])
  })

  it('reports an address nobody listens at as refused', () => {
    const { network, refused, host } = net()
    network.send('a', ping(1, null, ['sim://nowhere']), 0)
    network.deliverDue(100, host)
    expect(refused).toHaveLength(1)
  })

  it('routes by address when no id is given', () => {
    const { network, delivered, host } = net()
    network.send('a', ping(1, null, ['sim://c']), 0)
    network.deliverDue(100, host)
    expect(delivered.map((d) => d.to)).toEqual(['c'])
  })

  it('drops silently what goes to a frozen process or across a cut, and delivers again after the heal', () => {
    const { network, delivered, refused, host } = net()
    network.setStatus('b', 'paused')
    network.send('a', ping(1), 0)
    network.setStatus('b', 'up')
    network.partition([['a'], ['b', 'c']])
    network.send('a', ping(2), 0)
    network.send('c', ping(3), 0)
    network.deliverDue(100, host)
    expect(delivered.map((d) => d.message.type === 'ping' && d.message.seq)).toEqual([3])
    expect(refused).toEqual([])
    network.heal()
    network.send('a', ping(4), 100)
    network.deliverDue(200, host)
    expect(delivered.map((d) => d.message.type === 'ping' && d.message.seq)).toEqual([3, 4])
  })

  it('can report a cut as refused instead', () => {
    const { network, refused, host } = net({ whenPartitioned: 'refuse' })
    network.partition([['a'], ['b']])
    network.send('a', ping(1), 0)
    network.deliverDue(100, host)
    expect(refused).toHaveLength(1)
  })

  it('loses everything a muted host sends, while it still hears others', () => {
    const { network, delivered, host } = net()
    network.mute('b')
    network.send('b', ping(1, 'a'), 0)
    network.send('a', ping(2, 'b'), 0)
    network.deliverDue(100, host)
    expect(delivered.map((d) => d.to)).toEqual(['b'])
    network.unmute('b')
    network.send('b', ping(3, 'a'), 100)
    network.deliverDue(200, host)
    expect(delivered.map((d) => d.to)).toEqual(['b', 'a'])
  })

  it('refuses nonsense settings', () => {
    expect(() => net({ lossRate: 1 })).toThrow(/lossRate/)
    expect(() => net({ delayMinMs: 5, delayMaxMs: 4 })).toThrow(/delayMaxMs/)
    expect(() => net({ delayMinMs: 0.5 })).toThrow(/delayMinMs/)
  })
})

describe('SimCluster', () => {
  /** A small eventful run: joins under loss and jitter, a crash, a pause. */
  function eventLog (seed: number): string {
    const cluster = new SimCluster({ seed, network: { lossRate: 0.05, delayMaxMs: 20, duplicateRate: 0.05 } })
    const ids = cluster.grow(12)
    cluster.runFor(5_000)
    cluster.crash(ids[3]!)
    cluster.pause(ids[5]!)
    cluster.runFor(3_000)
    cluster.resume(ids[5]!)
    cluster.runFor(10_000)
    return cluster.events.map((e) => `${e.atMs} ${e.observer} ${e.event.member.id} ${e.event.member.state} ${e.event.member.incarnation}`).join('\n')
  }

  it('replays exactly from its seed', () => {
    const first = eventLog(99)
    expect(first.split('\n').length).toBeGreaterThan(100)
    expect(eventLog(99)).toBe(first)
    expect(eventLog(100)).not.toBe(first)
  })

  it('staggers joins through the seed member', () => {
    const cluster = new SimCluster({ seed: 3 })
    const ids = cluster.grow(5, { joinEveryMs: 100 })
    const joinedAt = new Map<string, number>()
    cluster.onEvent((e) => { if (e.observer === ids[0] && e.event.previous === null) joinedAt.set(e.event.member.id, e.atMs) })
    expect(cluster.runUntil(() => cluster.allAgree(), 10_000)).toBeDefined()
    for (let i = 1; i < 5; i++) {
      expect(joinedAt.get(ids[i]!)).toBeGreaterThan(i * 100)
      expect(joinedAt.get(ids[i]!)).toBeLessThan(i * 100 + 20)
    }
  })

  it('retries a join that was lost, as node/ does', () => {
    const cluster = new SimCluster({ seed: 4 })
    const [seedId, late] = cluster.grow(2, { joinEveryMs: 10 })
    cluster.partition([[seedId!], [late!]])
    cluster.runFor(2_500)
    expect(cluster.allAgree()).toBe(false)
    cluster.heal()
    expect(cluster.runUntil(() => cluster.allAgree(), 2_000)).toBeDefined()
  })

  it('stays quiet once formed: no incarnation churns, whatever the key order of a member\'s meta', () => {
    // Keys in another order than the codec's schema: a member must still know its own record when it comes back.
    const cluster = new SimCluster({ seed: 6, meta: (id, rng) => { const m = randomMeta(id, rng); return { labels: m.labels, memoryBytes: m.memoryBytes, cpuMillis: m.cpuMillis } } })
    const ids = cluster.grow(20)
    expect(cluster.runUntil(() => cluster.allAgree(), 10_000)).toBeDefined()
    const events = cluster.events.length
    cluster.runFor(30_000)
    expect(cluster.events.slice(events)).toEqual([])
    expect(ids.map((id) => cluster.swimOf(id).member(id)!.incarnation)).toEqual(ids.map(() => 0))
  })

  it('gives a frozen member no ticks, so that it sees its stall when it resumes', () => {
    const cluster = new SimCluster({ seed: 5 })
    const ids = cluster.grow(3)
    expect(cluster.runUntil(() => cluster.allAgree(), 5_000)).toBeDefined()
    const frozen = ids[1]!
    const events = cluster.events.length
    cluster.pause(frozen)
    cluster.runFor(3_000)
    expect(cluster.events.slice(events).filter((e) => e.observer === frozen)).toEqual([])
    expect(cluster.swimOf(frozen).health).toBe(0)
    cluster.resume(frozen)
    cluster.step()
    expect(cluster.swimOf(frozen).health).toBeGreaterThan(0)
  })
})
