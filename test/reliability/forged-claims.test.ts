// Reliability: a peer forges membership claims about others. Any peer that can
// open a connection may send membership messages, and SWIM spreads what they
// say; the nodes must stay correct: no live node taken for gone, failover intact.
//   1. "node 1 left" at its current incarnation, to every other node;
//   2. six members that do not exist, "alive" (they die at once: nobody answers
//      for them), then a real node is SIGKILLed: its tasks must be placed again;
//   3. "node 1 left" at the highest incarnation the codec admits.
// Each part's failure is collected, so that one run shows all of them.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, expect, it } from 'vitest'
import * as testnet from '../../testnet/local/testnet.ts'
import { describeDeaths, resultRow, SCENARIO_MS, seconds, sleep, steadyService, useCluster } from './harness.ts'
import { useHostilePeer } from './hostile-peer.ts'

// Two instances on each node: every node the forged claims are about holds some.
const t = useCluster('forged', 5, steadyService(10, { spread: [{ label: 'testnet.index', maxSkew: 1 }] }))
const h = useHostilePeer()

describe('reliability', () => {
  it('forged membership claims about other nodes', async ({ task }) => {
    const row = resultRow(task, 'hostile peer: forged membership claims')
    const { cluster } = t
    const hostile = h.peer
    const { net } = cluster
    const failures: string[] = []
    const addr = (i: number): string => net.nodes[i]!.addrs[0]!
    const target = 1
    const incarnation = async (): Promise<number> => (await net.client(0).members()).members.find((m) => m.id === net.peer(target))!.incarnation
    const claimLeft = async (inc: number): Promise<void> => {
      await Promise.all(cluster.except(target).map(async (i) => { await hostile.membership(addr(i), { type: 'gossip', updates: [{ kind: 'left', id: net.peer(target), incarnation: inc }] }) }))
    }
    const part = async (what: string, live: number[], since: number, timeoutMs = 20_000): Promise<number | null> => {
      const { ms, census } = await cluster.waitClean(live, since, timeoutMs)
      if (ms === null) failures.push(`${what}: not clean after ${timeoutMs / 1000} s: ${census.problems.slice(0, 3).join('; ')}`)
      const deaths = cluster.faults.falseDeaths(cluster.watch.deaths).filter((d) => d.at >= since)
      if (deaths.length > 0) failures.push(`${what}: ${describeDeaths(deaths, cluster.startedAt)}`)
      row.notes.push(`${what}: clean ${seconds(ms)}, ${deaths.length} false deaths`)
      return ms
    }

    // 0. A live node "dead", twice in one message, at the incarnation everyone knows it by.
    const deadAt = Date.now()
    const dead = { kind: 'dead' as const, id: net.peer(target), incarnation: await incarnation(), from: net.peer((target + 1) % 5) }
    await Promise.all(cluster.except(target).map(async (i) => { await hostile.membership(addr(i), { type: 'gossip', updates: [dead, dead] }) }))
    await sleep(2_000)
    await part('"node 1 is dead", twice', cluster.all(), deadAt)

    // 1. A live node "left", at the incarnation everyone knows it by.
    const leftAt = Date.now()
    await claimLeft(await incarnation())
    await sleep(2_000)
    await part('"node 1 left"', cluster.all(), leftAt)

    // 2. Ghost members, then a real crash: the survivors must still take the dead node's tasks.
    const ghosts = await Promise.all(Array.from({ length: 6 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    await Promise.all(cluster.all().map(async (i) => {
      await hostile.membership(addr(i), { type: 'gossip', updates: ghosts.map((id) => ({ kind: 'alive' as const, id, incarnation: 0, addrs: ['/ip4/127.0.0.1/tcp/9'], meta: { cpuMillis: 1000, memoryBytes: 1024 ** 3, labels: {} } })) })
    }))
    await sleep(5_000)
    const majority = await Promise.all(cluster.all().map(async (i) => (await net.client(i).node()).reconcile.majority))
    row.notes.push(`after 6 ghost members: ${majority.filter(Boolean).length}/5 nodes think they hold the majority`)
    const victim = 4
    const back = cluster.faults.open('SIGKILL', [victim])
    const killedAt = Date.now()
    await testnet.kill(cluster.dir, victim)
    await part('ghost members, then SIGKILL of node 4', cluster.except(victim), killedAt)
    const lost = (await cluster.census(cluster.except(victim))).lost
    await cluster.restart(victim)
    back()
    await part('node 4 back', cluster.all(), Date.now())

    // 3. "node 1 left" at the highest incarnation: it can refute only beyond what the codec admits.
    const maxAt = Date.now()
    await claimLeft(Number.MAX_SAFE_INTEGER)
    await sleep(2_000)
    row.recoverMs = await part('"node 1 left" at incarnation 2^53 − 1', cluster.all(), maxAt)

    const end = await cluster.census(cluster.all())
    cluster.score(row, end)
    row.tasksLost = Math.max(row.tasksLost, lost.length)
    expect(failures).toEqual([])
  }, SCENARIO_MS)
})
