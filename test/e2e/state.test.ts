// The shared state on a real 5-node testnet: a record written on one node reaches
// all; a node that was down catches up; a late joiner gets everything; a write the
// API acknowledged survives SIGKILL; a corrupt database stops the start with one
// line, and --reset-state refills it from the peers.

import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Client, connect } from '../../cli/client.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { clusterFilesBeside } from '../../cli/cluster-files.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir = ''
let net: { nodes: TestnetNode[] }

beforeAll(async () => { ({ dir, state: net } = await startTestnet('state', 5)) }, 60_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

const client = (i: number): Client => connect(net.nodes[i]!.apiUrl)
const peerId = (i: number): string => net.nodes[i]!.peerId!

async function labelsOn (observer: number, subject: string): Promise<Record<string, string> | undefined> {
  const { nodes } = await client(observer).stateNodes()
  return nodes.find((n) => n.id === subject)?.labels
}

/** Every listed node's copy equals node `reference`'s, by canonical digest. */
async function waitConverged (what: string, nodes: number[], reference: number): Promise<void> {
  await waitUntil(what, async () => await Promise.all(nodes.filter((i) => i !== reference).map(async (i) => (await client(i).compareState(peerId(reference))).equal)),
    (equal) => equal.every(Boolean))
}

describe('the shared state on a 5-node testnet', () => {
  it('a record written on one node is on all', async () => {
    const { labels } = await client(0).updateLabels({ zone: 'eu-1' }, [])
    expect(labels).toEqual({ 'testnet.index': '0', zone: 'eu-1' })
    for (let i = 0; i < 5; i++) {
      await waitUntil(`node ${i} to see node 0's label`, async () => await labelsOn(i, peerId(0)), (l) => l?.zone === 'eu-1', 10_000, 50)
    }
    // Membership carries the labels too, by its own gossip (a moment later).
    await waitUntil('membership to carry the label', async () => (await client(3).members()).members.find((m) => m.id === peerId(0))?.meta.labels.zone,
      (zone) => zone === 'eu-1', 10_000, 50)
    await waitConverged('all copies equal', [0, 1, 2, 3, 4], 0)
    const info = await client(0).state()
    expect(info.records.nodes).toBe(5)
    expect(info.stats.invalidRecords).toBe(0)
  })

  it('a node that was down while others wrote catches up on restart', async () => {
    await testnet.stop(dir, 3)
    for (let round = 0; round < 20; round++) {
      await Promise.all([0, 1, 2, 4].map(async (i) => await client(i).updateLabels({ round: String(round) }, [])))
    }
    net = (await testnet.status(dir))!
    await testnet.restart(dir, 3)
    await waitConverged('node 3 to catch up', [3], 0)
    for (const i of [0, 1, 2, 4]) expect((await labelsOn(3, peerId(i)))?.round).toBe('19')
    const syncs = (await client(3).state()).syncs
    expect(syncs.some((s) => s.ok)).toBe(true)
  })

  it('a late joiner gets everything', async () => {
    const added = await testnet.add(dir)
    net = (await testnet.status(dir))!
    expect(net.nodes).toHaveLength(6)
    await waitConverged('the new node to converge', [added.index], 0)
    const { nodes } = await client(added.index).stateNodes()
    expect(nodes.map((n) => n.id).sort()).toEqual(net.nodes.map((n) => n.peerId).sort())
    expect(nodes.find((n) => n.id === peerId(0))?.labels.zone).toBe('eu-1')
  })

  it('every write the API acknowledged survives a SIGKILL during a stream of writes', async () => {
    const acked = new Map<string, number>()
    let stopWriting = false
    const writer = (async () => {
      for (let i = 0; !stopWriting; i++) {
        const key = `k${i % 16}`
        try {
          await client(1).updateLabels({ [key]: String(i) }, [])
          acked.set(key, i)
        } catch {
          return // the node died mid-request: that write was never acknowledged
        }
      }
    })()
    await waitUntil('some writes acknowledged', async () => acked.size, (n) => n >= 16, 20_000, 20)
    await testnet.kill(dir, 1)
    stopWriting = true
    await writer
    const last = new Map(acked)
    expect(last.size).toBe(16)
    await testnet.restart(dir, 1)
    const labels = (await labelsOn(1, peerId(1)))!
    for (const [key, value] of last) expect(Number(labels[key]), `label ${key}`).toBeGreaterThanOrEqual(value)
    // And the cluster agrees with what it came back with.
    await waitConverged('the others to see node 1 again', [0, 2], 1)
  })

  it('a corrupt state database stops the start with one line; --reset-state refills it from the peers', async () => {
    await client(2).updateLabels({ disk: 'ssd' }, [])
    await waitUntil('node 0 to see node 2\'s label', async () => await labelsOn(0, peerId(2)), (l) => l?.disk === 'ssd', 10_000, 50)
    const node = net.nodes[2]!
    await testnet.stop(dir, 2)
    const stateDir = join(node.dataDir, 'state')
    for (const file of await readdir(stateDir)) if (/^(CURRENT|MANIFEST-.*|.*\.(ldb|log))$/.test(file)) await writeFile(join(stateDir, file), 'garbage')

    const failed = await murmur(['node', 'start', '--data-dir', node.dataDir, '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--log-level', 'error', '--cluster-key', testnet.clusterKeyFile(dir), '--root-key', clusterFilesBeside(testnet.clusterKeyFile(dir)).rootPub])
    expect(failed.code, failed.stderr).toBe(2)
    const lines = userLines(failed.stderr)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain(stateDir)
    expect(lines[0]).toMatch(/--reset-state/)

    await testnet.restart(dir, 2, ['--reset-state'])
    // The node's own labels, lost with its database, come back from the cluster's copy of its record.
    expect((await labelsOn(2, peerId(2)))?.disk).toBe('ssd')
    await waitConverged('node 2 to converge after the reset', [2], 0)
    const moved = (await readdir(node.dataDir)).filter((f) => f.startsWith('state.reset-'))
    expect(moved).toHaveLength(1)
  })
})
