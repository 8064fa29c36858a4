// Reliability: hosts without the cluster key, against a 3-node cluster running a
// service. A libp2p host with no key, and one with another key, try every
// protocol of every node and the gossip topic; a hundred TCP connections open
// and say nothing. None completes a connection, each attempt fails within the
// dial timeout, the silent ones are cut at the set-up limit, no node counts a
// single bad frame (nothing reached a protocol), no member appears, and the
// service runs on, each instance once.

import { connect as tcpConnect } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { readClusterKey } from '../../node/config.ts'
import { MEMBERSHIP_PROTOCOL } from '../../node/membership.ts'
import { TASKS_PROTOCOL } from '../../node/rpc.ts'
import { SYNC_PROTOCOL } from '../../node/state-transport.ts'
import { tempClusterKey } from '../helpers/cluster-key.ts'
import { type Cluster, resultRow, SCENARIO_MS, steadyService, useCluster } from './harness.ts'
import { HostilePeer } from './hostile-peer.ts'

const t = useCluster('stranger', 3, steadyService(6))

/** A refused attempt ends within the dial timeout (2 s); this bound leaves a loaded machine room, and is far below a hang. */
const REFUSED_WITHIN_MS = 8_000
const SILENT_CONNECTIONS = 100

async function counters (cluster: Cluster, i: number): Promise<unknown> {
  const client = cluster.net.client(i)
  const [node, state] = await Promise.all([client.node(), client.state()])
  return { membership: node.membership.rejected, sync: state.stats.sync.rejected, gossip: state.stats.gossip.dropped }
}

/** Opens `count` TCP connections to `port` that never send a byte; resolves with when each was closed by the node (ms), or null. */
async function silent (port: number, count: number, limitMs: number): Promise<Array<number | null>> {
  const started = Date.now()
  return await Promise.all(Array.from({ length: count }, async () => await new Promise<number | null>((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1')
    const timer = setTimeout(() => { socket.destroy(); resolve(null) }, limitMs)
    socket.on('data', () => {})
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(timer); resolve(Date.now() - started) })
  })))
}

describe('reliability', () => {
  it('hosts without the cluster key', async ({ task }) => {
    const row = resultRow(task, 'a host without the key cannot connect')
    const { cluster } = t
    const { net } = cluster
    const before = await Promise.all(cluster.all().map(async (i) => await counters(cluster, i)))
    const addr = (i: number): string => net.nodes[i]!.addrs[0]!
    const other = await tempClusterKey()
    const strangers = [await HostilePeer.start(), await HostilePeer.start({ clusterKey: readClusterKey(other.file) })]
    const attempts: number[] = []
    try {
      for (const stranger of strangers) {
        for (const i of cluster.all()) {
          for (const protocol of [MEMBERSHIP_PROTOCOL, SYNC_PROTOCOL, TASKS_PROTOCOL]) {
            const started = Date.now()
            await expect(stranger.frames(addr(i), protocol, [new TextEncoder().encode('hello')], 500)).rejects.toThrow()
            attempts.push(Date.now() - started)
          }
        }
        await expect(stranger.gossip(cluster.all().map(addr), cluster.all().map((i) => net.peer(i)), [Uint8Array.of(1, 2, 3)])).rejects.toThrow()
        expect(stranger.host.getConnections()).toEqual([])
      }
    } finally {
      for (const stranger of strangers) await stranger.stop()
      await other.remove()
    }
    const port = Number(multiaddr(addr(0)).getComponents().find((c) => c.name === 'tcp')!.value)
    const cut = await silent(port, SILENT_CONNECTIONS, 20_000)
    const attackEnd = Date.now()

    expect(Math.max(...attempts), 'every attempt failed within the dial timeout').toBeLessThan(REFUSED_WITHIN_MS)
    expect(cut.filter((ms) => ms === null), 'every silent connection was cut by the node').toEqual([])
    expect(Math.max(...cut as number[])).toBeLessThan(REFUSED_WITHIN_MS)
    // Nothing reached a protocol: not one bad frame counted anywhere, no member more.
    expect(await Promise.all(cluster.all().map(async (i) => await counters(cluster, i)))).toEqual(before)
    for (const i of cluster.all()) {
      const { members } = await net.client(i).members()
      expect(members.map((m) => m.state)).toEqual(['alive', 'alive', 'alive'])
    }
    await cluster.finish(row, attackEnd)
    row.notes.push(`${attempts.length} dials (no key, another key) refused in at most ${Math.max(...attempts)} ms (median ${attempts.sort((a, b) => a - b)[attempts.length >> 1]} ms); ${SILENT_CONNECTIONS} silent TCP connections cut after at most ${Math.max(...cut as number[])} ms`)
  }, SCENARIO_MS)
})
