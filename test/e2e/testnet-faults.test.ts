// Network faults on a real 3-node loopback testnet (no root): a partition and its
// heal, a one-way cut, delay and loss, each judged by what the nodes do and say
// through their API; bad input; and a `down` that leaves nothing behind with a
// paused node and no state file.

import { rm } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Client, type MemberState, connect } from '../../cli/client.ts'
import type { FaultsView } from '../../node/faults.ts'
import { getRules } from '../../testnet/local/admin.ts'
import { stateFile, type TestnetState } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { adminKey, signedFetch } from '../helpers/signed.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir = ''
let net: TestnetState

beforeAll(async () => { ({ dir, state: net } = await startTestnet('faults', 3)) }, 60_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

const client = (i: number): Client => connect(net.nodes[i]!.apiUrl, { timeoutMs: 3_000 })
const peerId = (i: number): string => net.nodes[i]!.peerId!
const rulesOf = async (i: number): Promise<FaultsView> => await getRules(net.nodes[i]!.apiUrl, adminKey(dir))

/** How node `observer` sees each of `subjects`. */
async function views (observer: number, subjects: number[]): Promise<Array<MemberState | 'unknown'>> {
  const { members } = await client(observer).members()
  return subjects.map((s) => members.find((m) => m.id === peerId(s))?.state ?? 'unknown')
}

const all = (state: MemberState) => (seen: Array<MemberState | 'unknown'>): boolean => seen.every((s) => s === state)

async function allAlive (): Promise<void> {
  for (const i of [0, 1, 2]) await waitUntil(`node ${i} to see all alive`, async () => await views(i, [0, 1, 2]), all('alive'), 30_000)
}

async function labelOn (observer: number, subject: number, key: string): Promise<string | undefined> {
  const { nodes } = await client(observer).stateNodes()
  return nodes.find((n) => n.id === peerId(subject))?.labels[key]
}

const dropped = (view: FaultsView, reason: 'blocked' | 'cut' | 'loss'): number =>
  Object.values(view.stats.dropped).reduce((sum, byReason) => sum + byReason[reason], 0)

describe('network faults on a 3-node loopback testnet', () => {
  it('a 2/1 partition: each side sees the other dead; heal brings them back alive', async () => {
    const cut = await murmur(['testnet', 'partition', '0,1', '2', '--dir', dir])
    expect(cut.code, cut.stderr).toBe(0)
    expect(cut.stdout).toBe('partitioned: {0,1} | {2}\n')
    expect((await testnet.faults(dir)).map((n) => n.blocked)).toEqual([[2], [2], [0, 1]])
    for (const i of [0, 1]) await waitUntil(`node ${i} to see node 2 dead`, async () => await views(i, [2]), all('dead'))
    // The lone side doubts its own health first (Lifeguard), so it takes longer to give up on the others.
    await waitUntil('node 2 to see nodes 0 and 1 dead', async () => await views(2, [0, 1]), all('dead'), 45_000, 250)
    expect(dropped(await rulesOf(2), 'blocked') + (await rulesOf(2)).stats.refusedConnections).toBeGreaterThan(0)

    const healed = await murmur(['testnet', 'heal', '--dir', dir])
    expect(healed.code, healed.stderr).toBe(0)
    await allAlive()
    expect((await rulesOf(2)).rules).toEqual({ blocked: [], cutFrom: [], delayMs: 0, jitterMs: 0, lossRate: 0 })
  }, 90_000)

  it('one-way cuts: node 1 no longer hears 0 and 2, while they still hear node 1', async () => {
    const cut = await murmur(['testnet', 'partition', '--from', '0', '--to', '1', '--dir', dir])
    expect(cut.code, cut.stderr).toBe(0)
    await testnet.cut(dir, 2, 1)
    expect((await testnet.faults(dir))[1]!.cutFrom).toEqual([0, 2])
    await client(0).updateLabels({ said: 'by-0' }, [])
    await client(1).updateLabels({ said: 'by-1' }, [])
    // What node 1 says still reaches the others, and node 0's news reaches node 2 ...
    await waitUntil('node 0 to hear node 1', async () => await labelOn(0, 1, 'said'), (v) => v === 'by-1')
    await waitUntil('node 2 to hear node 0', async () => await labelOn(2, 0, 'said'), (v) => v === 'by-0')
    // ... but nothing reaches node 1: it has no path left to hear node 0's label on.
    expect(await labelOn(1, 0, 'said')).toBeUndefined()
    expect(dropped(await rulesOf(1), 'cut')).toBeGreaterThan(0)
    expect(dropped(await rulesOf(0), 'cut') + dropped(await rulesOf(2), 'cut')).toBe(0)

    await testnet.heal(dir)
    await waitUntil('node 1 to hear node 0 after the heal', async () => await labelOn(1, 0, 'said'), (v) => v === 'by-0')
    await allAlive()
  }, 60_000)

  it('delay: a request answered by the delayed node takes at least the delay', async () => {
    await testnet.delay(dir, 1, 400)
    expect((await rulesOf(1)).rules.delayMs).toBe(400)
    // The digest request is a sync frame that node 1 receives: it waits 400 ms there.
    const started = performance.now()
    const compared = await client(0).compareState(peerId(1))
    expect(compared.peer).toBe(peerId(1))
    expect(performance.now() - started).toBeGreaterThanOrEqual(390)
    expect((await rulesOf(1)).stats.delayed.sync).toBeGreaterThan(0)
    expect((await rulesOf(0)).stats.delayed.sync).toBe(0)
    await testnet.delay(dir, 1, 0)
    expect((await rulesOf(1)).rules.delayMs).toBe(0)
  })

  it('loss: only the lossy node drops, about as often as asked', async () => {
    await testnet.loss(dir, 2, 0.5)
    expect((await testnet.faults(dir))[2]).toMatchObject({ index: 2, lossRate: 0.5 })
    const passed = (v: FaultsView): number => Object.values(v.stats.passed).reduce((a, b) => a + b, 0)
    const before = await rulesOf(2)
    const after = await waitUntil('node 2 to judge 100 messages', async () => await rulesOf(2), (v) => dropped(v, 'loss') + passed(v) - passed(before) >= 100)
    // Binomial with n ≥ 100 and p = 0.5: outside 30–70 % is four standard deviations away.
    const share = dropped(after, 'loss') / (dropped(after, 'loss') + passed(after) - passed(before))
    expect(share).toBeGreaterThan(0.3)
    expect(share).toBeLessThan(0.7)
    expect(dropped(await rulesOf(0), 'loss') + dropped(await rulesOf(1), 'loss')).toBe(0)
    await testnet.heal(dir)
    expect((await rulesOf(2)).rules.lossRate).toBe(0)
  })

  it('bad input: one line, a 4xx or exit code 2, and nothing changed', async () => {
    const before = await testnet.faults(dir)
    // Unsigned, the rules are not even read: the fault endpoint is for admins.
    const unsigned = await fetch(`${net.nodes[0]!.apiUrl}/v1/admin/faults`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ lossRate: 0.5 }) })
    expect(unsigned.status).toBe(401)
    expect((await rulesOf(0)).rules.lossRate).toBe(0)
    const put = await signedFetch(adminKey(dir), `${net.nodes[0]!.apiUrl}/v1/admin/faults`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ lossRate: 1 }) })
    expect(put.status).toBe(400)
    const body = await put.json() as { error: { code: string, message: string } }
    expect(body.error.code).toBe('BAD_FAULTS')
    expect(body.error.message).toMatch(/^faults: lossRate: must be below 1/)
    for (const [args, message] of [
      [['loss', '0', '100%'], /below 100%/],
      [['partition', '0,x'], /'0,x' is not a group of nodes/],
      [['partition', '0,1', '1'], /node 1 is named in two groups/],
      [['delay', '7', '1s'], /no node 7 in the testnet/],
      [['delay', '1', 'soon'], /'soon' is not a duration/],
      [['partition', '--from', '1'], /takes both --from and --to/],
    ] as const) {
      const result = await murmur(['testnet', ...args, '--dir', dir])
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(2)
      expect(userLines(result.stderr)).toHaveLength(1)
      expect(result.stderr).toMatch(message)
    }
    expect(await testnet.faults(dir)).toEqual(before)
  })

  it('down removes every process and dir, with a node paused and the state file gone', async () => {
    await testnet.pause(dir, 2)
    await rm(stateFile(dir))
    const result = await murmur(['testnet', 'down', '--dir', dir])
    expect([result.code, result.stdout], result.stderr).toEqual([0, 'stopped 3 node(s)\n'])
    expect(await testnet.leftovers(dir)).toEqual({ processes: [], network: [], files: [] })
  })
})
