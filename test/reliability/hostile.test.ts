// Reliability: a member that speaks the nodes' protocols wrongly, on a 5-node
// cluster running a service: a key holder that joined the proper way, as a
// compromised node would be (a host that is no member is not even answered:
// stranger.test.ts, test/e2e/state-hostile.test.ts). On membership, sync, task
// requests and the gossip topic of every node: garbage, oversized frames, frames
// that never end and streams of frames that never end. The nodes stay up, count
// what they dropped, see every honest node alive throughout, and the service runs
// on, each instance once. (test/e2e/state-hostile.test.ts and bad-input.test.ts
// check each kind of bad frame on one node; this is all of them at once, on every
// node, under jobs. Forged membership claims are in forged-claims.test.ts, forged
// records in forged-records.test.ts.)

import { Buffer } from 'node:buffer'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SYNC_LIMITS } from '../../crdt/sync.ts'
import { encodeMessage } from '../../membership/codec.ts'
import { MEMBERSHIP_PROTOCOL } from '../../node/membership.ts'
import { TASKS_PROTOCOL } from '../../node/rpc.ts'
import { SYNC_PROTOCOL } from '../../node/state-transport.ts'
import { HostileMember } from '../helpers/hostile-member.ts'
import { waitUntil } from '../helpers/wait.ts'
import { type Cluster, currentClusterKey, resultRow, SCENARIO_MS, steadyService, useCluster } from './harness.ts'
import { HostilePeer } from './hostile-peer.ts'

const t = useCluster('hostile', 5, steadyService(10))
let member: HostileMember
const h = {} as { peer: HostilePeer }
beforeAll(async () => {
  member = await HostileMember.start({ clusterKey: currentClusterKey(), seeds: [t.cluster.net.nodes[0]!.addrs[0]!] })
  await waitUntil('every node to take the hostile member for a member', async () => await Promise.all(t.cluster.all().map(async (i) => (await t.cluster.net.client(i).members()).members.find((m) => m.id === member.id)?.state)), (states) => states.every((s) => s === 'alive'), 30_000)
  h.peer = HostilePeer.over(member.host)
}, 60_000)
afterAll(async () => { await member?.stop() }, 30_000)

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const MiB = 1024 * 1024

interface Counters { membership: Record<string, number>, sync: Record<string, number>, gossip: Record<string, number>, rssBytes: number }

async function counters (cluster: Cluster, i: number): Promise<Counters> {
  const client = cluster.net.client(i)
  const [node, state] = await Promise.all([client.node(), client.state()])
  return { membership: node.membership.rejected as Record<string, number>, sync: state.stats.sync.rejected, gossip: state.stats.gossip.dropped, rssBytes: node.process.rssBytes }
}

const rose = (after: Record<string, number>, before: Record<string, number>, key: string): number => (after[key] ?? 0) - (before[key] ?? 0)

describe('reliability', () => {
  it('a hostile peer on every protocol of every node', async ({ task }) => {
    const row = resultRow(task, 'hostile member: garbage, oversized, endless')
    const { cluster } = t
    const hostile = h.peer
    const { net } = cluster
    const before = await Promise.all(cluster.all().map(async (i) => await counters(cluster, i)))
    const addr = (i: number): string => net.nodes[i]!.addrs[0]!

    // Garbage and oversized frames, on every node.
    const taskReplies = await Promise.all(cluster.all().map(async (i) => {
      // A membership stream is never answered on: a moment to read it is enough.
      await hostile.frames(addr(i), MEMBERSHIP_PROTOCOL, [text('{not json'), text(JSON.stringify({ type: 'ping', seq: -1, updates: [] }))], 300)
      await hostile.frames(addr(i), MEMBERSHIP_PROTOCOL, [new Uint8Array(2 * MiB)], 500)
      await hostile.frames(addr(i), SYNC_PROTOCOL, [Uint8Array.of(99, 1, 2, 3)], 1_000)
      // Just over the limit: the cipher of the cluster key (a WebAssembly xsalsa20 whose memory is shared by
      // every connection of this process, at most 64 MiB) takes each write whole.
      await hostile.frames(addr(i), SYNC_PROTOCOL, [new Uint8Array(SYNC_LIMITS.frameBytesMax + MiB)], 2_000)
      const garbage = await hostile.frames(addr(i), TASKS_PROTOCOL, [text('X not a request')], 2_000)
      const badJson = await hostile.frames(addr(i), TASKS_PROTOCOL, [text('J{"op":"kill"}')], 2_000)
      const oversized = await hostile.frames(addr(i), TASKS_PROTOCOL, [Buffer.concat([text('J'), new Uint8Array(20 * 1024)])], 2_000)
      return { garbage, badJson, oversized }
    }))
    await hostile.gossip(cluster.all().map(addr), cluster.all().map((i) => net.peer(i)), [
      Uint8Array.of(1, 0xde, 0xad, 0xbe, 0xef),
      Uint8Array.of(42, 0, 0),
      new Uint8Array(300 * 1024).fill(1),
      ...Array.from({ length: 200 }, (_, k) => Uint8Array.of(1, 0xff, k & 0xff)),
    ])

    // Frames that never end, and streams of frames that never end, on every node at once.
    const ENDLESS_MS = 8_000
    const ping = encodeMessage({ type: 'ping', seq: 1, updates: [] })
    const endless = await Promise.all(cluster.all().map(async (i) => {
      const [membershipCut, syncCut, tasksCut, pings, hellos] = await Promise.all([
        hostile.trickle(addr(i), MEMBERSHIP_PROTOCOL, 512 * 1024, ENDLESS_MS),
        hostile.trickle(addr(i), SYNC_PROTOCOL, 16 * MiB, ENDLESS_MS),
        hostile.trickle(addr(i), TASKS_PROTOCOL, 8 * 1024, ENDLESS_MS),
        hostile.flood(addr(i), MEMBERSHIP_PROTOCOL, ping, ENDLESS_MS),
        hostile.flood(addr(i), TASKS_PROTOCOL, text('J{"op":"usage","tasks":[]}'), ENDLESS_MS),
      ])
      return { membershipCut, syncCut, tasksCut, pings, hellos }
    }))
    const attackEnd = Date.now()

    // Every node: up, every honest node alive, its service running, each instance once.
    for (const i of cluster.all()) expect((await net.client(i).health()).ok).toBe(true)
    // The honest ones: the hostile member's own probes drown in what it floods, and may well get it taken for dead.
    const honest = new Set(cluster.all().map((i) => net.peer(i)))
    await waitUntil('every node to see every honest node alive', async () => await Promise.all(cluster.all().map(async (i) => (await net.client(i).members()).members.filter((m) => m.state === 'alive' && honest.has(m.id)).length)),
      (alive) => alive.every((n) => n === 5), 30_000)
    await cluster.finish(row, attackEnd)

    // What each node dropped, and how it answered.
    const after = await Promise.all(cluster.all().map(async (i) => await counters(cluster, i)))
    for (const i of cluster.all()) {
      const [b, a] = [before[i]!, after[i]!]
      expect({ malformed: rose(a.membership, b.membership, 'malformed') >= 1, invalid: rose(a.membership, b.membership, 'invalid') >= 1, oversized: rose(a.membership, b.membership, 'oversized') >= 1 }, `node ${i} membership`).toEqual({ malformed: true, invalid: true, oversized: true })
      expect({ malformed: rose(a.sync, b.sync, 'malformed') >= 1, oversized: rose(a.sync, b.sync, 'oversized') >= 1 }, `node ${i} sync`).toEqual({ malformed: true, oversized: true })
      expect(rose(a.gossip, b.gossip, 'malformed'), `node ${i} gossip`).toBeGreaterThanOrEqual(1)
      const replies = taskReplies[i]!
      expect(Buffer.from(replies.garbage[0] ?? []).toString(), `node ${i} answers garbage with an error`).toMatch(/^J.*BAD_REQUEST/)
      expect(Buffer.from(replies.badJson[0] ?? []).toString()).toMatch(/^J.*BAD_REQUEST/)
      expect(replies.oversized, `node ${i} cuts an oversized request without answering`).toEqual([])
      // A task request that never ends is cut by the node's request timeout.
      expect(endless[i]!.tasksCut, `node ${i} cut the endless task request`).toBe(true)
    }
    const rss = after.map((a, i) => Math.round((a.rssBytes - before[i]!.rssBytes) / MiB))
    row.notes.push(`RSS change per node ${rss.join('/')} MiB; membership pings flooded ${endless.map((e) => e.pings).join('/')}; endless frames cut by the node: membership ${endless.filter((e) => e.membershipCut).length}/5, sync ${endless.filter((e) => e.syncCut).length}/5, tasks ${endless.filter((e) => e.tasksCut).length}/5 within ${ENDLESS_MS / 1000} s`)
  }, SCENARIO_MS)
})
