// A 5-node testnet of real processes on loopback: what only real processes have
// (capacity and labels from flags, the CLI, the event stream, a clean stop).
// Crash, hang, leave and restart run in test/conformance on both the simulator
// and real processes.

import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type MemberState } from '../../cli/client.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { murmur } from '../helpers/cli.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 5
let dir: string
let state: TestnetState

/** How every running node other than `subject` sees `subject`. */
async function viewsOf (subject: number, except: number[] = []): Promise<Array<MemberState | 'unknown'>> {
  const peerId = state.nodes[subject]!.peerId
  const observers = state.nodes.filter((n) => n.index !== subject && !except.includes(n.index))
  return await Promise.all(observers.map(async (n) => {
    const { members } = await connect(n.apiUrl, { timeoutMs: 2_000 }).members()
    return members.find((m) => m.id === peerId)?.state ?? 'unknown'
  }))
}

const all = (state: MemberState) => (views: Array<MemberState | 'unknown'>) => views.every((v) => v === state)

describe('a 5-node testnet on loopback', () => {
  beforeAll(async () => {
    ({ dir, state } = await startTestnet('e2e', N))
  }, 90_000)

  afterAll(async () => { await stopTestnet(dir) }, 60_000)

  it('every node sees all 5 alive, with capacity and labels', async () => {
    for (const node of state.nodes) {
      const { members, self } = await connect(node.apiUrl).members()
      expect(self).toBe(node.peerId)
      // A passing suspicion under load is allowed; a death is not.
      expect(members.filter((m) => m.state === 'dead' || m.state === 'left')).toEqual([])
      expect(new Set(members.map((m) => m.id))).toEqual(new Set(state.nodes.map((n) => n.peerId)))
      for (const m of members) {
        expect(m.meta.cpuMillis).toBeGreaterThan(0)
        expect(m.meta.memoryBytes).toBeGreaterThan(0)
        expect(m.meta.labels['testnet.index']).toMatch(/^\d$/)
        expect(m.addrs[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
      }
    }
  })

  it('the CLI prints members and testnet status as one JSON document each', async () => {
    const members = await murmur(['members', '--json'], { env: { MURMUR_API: state.nodes[1]!.apiUrl } })
    expect(members.code, members.stderr).toBe(0)
    const parsed = JSON.parse(members.stdout) as { self: string, members: Array<{ id: string, state: string }> }
    expect(parsed.self).toBe(state.nodes[1]!.peerId)
    expect(parsed.members).toHaveLength(N)
    expect(parsed.members.filter((m) => m.state === 'dead' || m.state === 'left')).toEqual([])

    const status = await murmur(['testnet', 'status', '--json', '--dir', dir])
    expect(status.code, status.stderr).toBe(0)
    const nodes = (JSON.parse(status.stdout) as { nodes: Array<Record<string, unknown>> }).nodes
    expect(nodes).toHaveLength(N)
    for (const [i, node] of nodes.entries()) {
      expect(node).toMatchObject({ index: i, process: 'running', peerId: state.nodes[i]!.peerId, apiUrl: state.nodes[i]!.apiUrl })
      expect(node.pid).toBeTypeOf('number')
      expect((node.addrs as string[])[0]).toContain(state.nodes[i]!.peerId)
      expect(node.dataDir).toBe(state.nodes[i]!.dataDir)
    }
  })

  it('a SIGTERMed node leaves: the rest mark it left, never dead', async () => {
    const events: Array<{ id: string, state: string }> = []
    const controller = new AbortController()
    const following = connect(state.nodes[0]!.apiUrl).events((e) => { if (e.type === 'member') events.push({ id: e.data.member.id, state: e.data.member.state }) }, controller.signal)
    await waitUntil('event stream open', async () => { await new Promise((r) => setTimeout(r, 200)); return true }, (v) => v)
    // A client following the leaving node itself must not hold up its stop.
    const watchingLeaver = new AbortController()
    const followingLeaver = connect(state.nodes[2]!.apiUrl).events(() => {}, watchingLeaver.signal).catch(() => {})
    await testnet.stop(dir, 2)
    await waitUntil('node 2 left everywhere', async () => await viewsOf(2, [2]), all('left'))
    controller.abort()
    watchingLeaver.abort()
    await following
    await followingLeaver
    // It stopped by itself, cleanly (not by the SIGKILL that follows an unanswered SIGTERM).
    expect(await readFile(state.nodes[2]!.logFile, 'utf8')).toContain('"msg":"node stopped"')
    const about2 = events.filter((e) => e.id === state.nodes[2]!.peerId).map((e) => e.state)
    expect(about2).toEqual(['left'])
  })

  it('murmur node leave makes a node leave and stop', async () => {
    const leaving = state.nodes[1]!
    const result = await murmur(['node', 'leave', '--api', leaving.apiUrl])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(`node ${leaving.peerId} is leaving`)
    await waitUntil('node 1 left everywhere', async () => await viewsOf(1, [1, 2]), all('left'))
    await waitUntil('node 1 process gone', async () => (await testnet.status(dir))!.nodes[1]!.process, (p) => p === 'exited')
  })
})
