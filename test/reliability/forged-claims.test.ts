// Reliability: a peer forges membership claims about others. Any peer that can
// open a connection may send membership messages, and SWIM spreads what they
// say; the nodes must stay correct: no live node taken for gone, failover intact.
//   1. "node 1 left" at its current incarnation, to every other node;
//   2. six members that do not exist, "alive" (they die at once: nobody answers
//      for them), then a real node is SIGKILLed: its tasks must be placed again;
//   3. "node 1 left" at the highest incarnation the codec admits.
// Each part's failure is collected, so that one run shows all of them.
//
// Then a key holder that is a member (it joined, answers probes, is held alive)
// lies about node 1: "left" and high-incarnation suspicions, by gossip and by
// push-pull, up to the incarnations that once expelled a member for good. Only
// node 1's own key signs what node 1 says about itself, and nobody takes a
// suspicion above the incarnation node 1 stated: nothing may change on any node.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { INCARNATION_MAX } from '../../membership/swim.ts'
import type { MemberRecord, Message } from '../../membership/types.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'
import { ForgingMember } from './forge-membership.ts'
import { currentClusterKey, describeDeaths, resultRow, SCENARIO_MS, seconds, sleep, steadyService, useCluster } from './harness.ts'
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

  describe('a key holder\'s forged membership claims about another member', () => {
    const target = 1
    let liar: ForgingMember
    const addr = (i: number): string => t.cluster.net.nodes[i]!.addrs[0]!
    const id = (): string => t.cluster.net.peer(target)
    beforeAll(async () => {
      const { cluster } = t
      liar = await ForgingMember.start({ clusterKey: currentClusterKey(), seeds: [addr(0)] })
      await waitUntil('every node to hold the lying member alive', async () => await Promise.all(cluster.all().map(async (i) => (await cluster.net.client(i).members()).members.find((m) => m.id === liar.id)?.state)),
        (states) => states.every((s) => s === 'alive'), 20_000)
    }, 60_000)
    afterAll(async () => { await liar?.stop() }, 30_000)

    /** Node 1 as every node sees it. */
    const views = async (): Promise<Array<{ state: string, incarnation: number }>> => await Promise.all(t.cluster.all().map(async (i) => {
      const member = (await t.cluster.net.client(i).members()).members.find((m) => m.id === id())!
      return { state: member.state, incarnation: member.incarnation }
    }))
    const rejected = async (): Promise<Record<string, number>> => {
      const sum: Record<string, number> = {}
      for (const i of t.cluster.all()) {
        for (const [reason, n] of Object.entries((await t.cluster.net.client(i).node()).membership.rejected as Record<string, number>)) sum[reason] = (sum[reason] ?? 0) + n
      }
      return sum
    }
    const record = (state: MemberRecord['state'], incarnation: number): MemberRecord => ({ id: id(), addrs: [addr(target)], incarnation, state, meta: { cpuMillis: 1000, memoryBytes: 1024 ** 3, labels: {} } })
    const pushPull = (...members: MemberRecord[]): Message => ({ type: 'push-pull', join: false, reply: false, members })
    const tell = async (nodes: number[], message: Message): Promise<void> => { await Promise.all(nodes.map(async (i) => { await liar.send(addr(i), message) })) }

    /**
     * Runs `lie`, then: node 1 must still be alive everywhere, at most `stepMax`
     * incarnations up (what it needs to refute), the cluster clean, no false death.
     */
    async function nothingChanges (row: ReturnType<typeof resultRow>, what: string, stepMax: number, lie: (inc: number) => Promise<void>): Promise<void> {
      const { cluster } = t
      const failures: string[] = []
      const before = await views()
      const inc = Math.max(...before.map((v) => v.incarnation))
      const rejectedBefore = await rejected()
      const since = Date.now()
      await lie(inc)
      await sleep(2_000)
      const after = await views()
      // Against the highest incarnation any node saw before the lie: a node that had not yet heard node 1's own
      // latest refutation catches up meanwhile, and that is no change the lie made.
      const moved = after.map((v, i) => ({ node: i, ...v })).filter((v) => v.state !== 'alive' || v.incarnation > inc + stepMax)
      if (moved.length > 0) failures.push(`${what}: node 1 is now ${moved.map((v) => `${v.state} at ${v.incarnation} on node ${v.node}`).join(', ')} (was alive at ${inc})`)
      // Clean at once, if nothing changed: timed from the look after the lie, not from the lie.
      const { ms, census } = await cluster.waitClean(cluster.all(), Date.now(), 20_000)
      if (ms === null) failures.push(`${what}: not clean after 20 s: ${census.problems.slice(0, 3).join('; ')}`)
      const deaths = cluster.faults.falseDeaths(cluster.watch.deaths).filter((d) => d.at >= since)
      if (deaths.length > 0) failures.push(`${what}: ${describeDeaths(deaths, cluster.startedAt)}`)
      row.notes.push(`${what}: node 1 ${moved.length === 0 ? 'unchanged' : 'CHANGED'} on every node, ${deaths.length} false deaths`)
      const rejectedAfter = await rejected()
      const rose = Object.fromEntries(Object.entries(rejectedAfter).map(([reason, n]) => [reason, n - (rejectedBefore[reason] ?? 0)]).filter(([, n]) => (n as number) > 0))
      row.notes.push(`refused by the nodes: ${JSON.stringify(rose)}`)
      row.recoverMs = ms
      cluster.score(row, await cluster.census(cluster.all()))
      expect(failures).toEqual([])
    }

    it('"node 1 left", by push-pull and by gossip', async ({ task }) => {
      const row = resultRow(task, 'key holder: a push-pull "left" for another member')
      // At the next incarnation and at 2^53 − 2, which once expelled a member for good.
      await nothingChanges(row, 'a member\'s push-pull and gossip "node 1 left"', 0, async (inc) => {
        await tell(t.cluster.except(target), pushPull(record('left', inc + 1)))
        await tell(t.cluster.except(target), pushPull(record('left', 2 ** 53 - 2)))
        await tell(t.cluster.except(target), { type: 'gossip', updates: [{ kind: 'left', id: id(), incarnation: inc + 1 }] })
      })
    }, SCENARIO_MS)

    it('suspicions of node 1 at high incarnations', async ({ task }) => {
      const row = resultRow(task, 'key holder: suspicions at high incarnations')
      // To everyone, node 1 included: it may step by one, no more.
      await nothingChanges(row, 'a member\'s suspicions of node 1 at incarnations up to 2^53 − 3', 1, async (inc) => {
        for (const incarnation of [2 ** 53 - 3, INCARNATION_MAX - 1, inc + 1_000]) {
          await tell(t.cluster.all(), pushPull(record('suspect', incarnation), record('dead', incarnation)))
          await tell(t.cluster.all(), { type: 'gossip', updates: [{ kind: 'suspect', id: id(), incarnation, from: liar.id }, { kind: 'dead', id: id(), incarnation, from: liar.id }] })
        }
      })
    }, SCENARIO_MS)
  })
})
