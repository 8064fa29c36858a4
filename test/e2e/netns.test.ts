// A --netns testnet (root only; skipped elsewhere): each node in a network
// namespace of its own on a bridge, and the kernel carrying the network faults:
// a partition by policy rules, loss by iptables when it is installed, delay by
// netem when the kernel has it (else by the nodes' own filter, and said so).
// `down` removes every namespace, link, process and dir, also without its state file.

import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Client, type MemberState, connect } from '../../cli/client.ts'
import { getRules } from '../../testnet/local/admin.ts'
import { NO_IPTABLES, NO_NETEM, namesOf } from '../../testnet/local/netns.ts'
import { stateFile, type TestnetState } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { murmur } from '../helpers/cli.ts'
import { adminKey } from '../helpers/signed.ts'
import { waitUntil } from '../helpers/wait.ts'

function works (cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

const root = process.getuid?.() === 0
const supported = root && works('ip', ['-V']) && works('nsenter', ['--version'])
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' })

let dir = ''
let net: TestnetState

const client = (i: number): Client => connect(net.nodes[i]!.apiUrl, { timeoutMs: 3_000 })
const peerId = (i: number): string => net.nodes[i]!.peerId!

async function views (observer: number, subjects: number[]): Promise<Array<MemberState | 'unknown'>> {
  const { members } = await client(observer).members()
  return subjects.map((s) => members.find((m) => m.id === peerId(s))?.state ?? 'unknown')
}

describe.skipIf(!supported)('a --netns testnet (root)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'murmur-netns-'))
    net = await testnet.up({ nodes: 3, dir, netns: true })
  }, 90_000)

  afterAll(async () => {
    if (dir === '') return
    await testnet.down({ dir })
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('every node has a namespace of its own and an address on the bridge; the API is reachable from the host', async () => {
    const subnet = net.netns!.subnet
    expect(net.nodes.map((n) => n.address)).toEqual([`${subnet}.2`, `${subnet}.3`, `${subnet}.4`])
    expect(new Set(net.nodes.map((n) => n.netns)).size).toBe(3)
    for (const node of net.nodes) {
      expect(ip('-n', node.netns!, '-4', '-o', 'addr', 'show', 'dev', 'eth0')).toContain(`${node.address}/24`)
      expect(node.addrs[0]).toMatch(new RegExp(`^/ip4/${node.address!.replaceAll('.', '\\.')}/tcp/7946/p2p/`))
      expect((await client(node.index).members()).members.filter((m) => m.state === 'alive')).toHaveLength(3)
    }
    expect(ip('-4', '-o', 'addr', 'show', 'dev', net.netns!.bridge)).toContain(`${subnet}.1/24`)
    // Tasks stay contained: the nodes keep the cgroup hierarchy (nsenter switches only the network).
    expect((await client(0).node()).isolation.kind).not.toBe('none')
  })

  it('a partition is made by the kernel: the majority sees the other side dead, and heal brings it back', async () => {
    await testnet.partition(dir, [[0, 1], [2]])
    expect(ip('-n', namesOf(net.netns!.id, 2).netns, 'rule', 'show', 'pref', '100')).toContain(`from ${net.nodes[0]!.address} iif eth0 blackhole`)
    for (const i of [0, 1]) await waitUntil(`node ${i} to see node 2 dead`, async () => await views(i, [2]), (v) => v[0] === 'dead')
    // Not the nodes' filter: it has no rule and dropped nothing.
    const rules = await getRules(net.nodes[2]!.apiUrl, adminKey(dir))
    expect(rules.rules.blocked).toEqual([])
    expect(rules.stats.refusedConnections + Object.values(rules.stats.dropped).reduce((a, r) => a + r.blocked, 0)).toBe(0)
    await testnet.heal(dir)
    expect(ip('-n', namesOf(net.netns!.id, 2).netns, 'rule', 'show', 'pref', '100').trim()).toBe('')
    for (const i of [0, 1, 2]) await waitUntil(`node ${i} to see all alive`, async () => await views(i, [0, 1, 2]), (v) => v.every((s) => s === 'alive'), 30_000)
  }, 60_000)

  it('loss: by iptables in the receiving namespace when it is installed, else by the node', async () => {
    const result = await murmur(['testnet', 'loss', '2', '40%', '--dir', dir])
    expect(result.code, result.stderr).toBe(0)
    const iptables = net.netns!.iptables
    if (iptables === null) {
      expect(result.stdout).toContain(NO_IPTABLES)
      expect((await getRules(net.nodes[2]!.apiUrl, adminKey(dir))).rules.lossRate).toBe(0.4)
    } else {
      expect(result.stdout).not.toContain('note:')
      expect((await getRules(net.nodes[2]!.apiUrl, adminKey(dir))).rules.lossRate).toBe(0)
      const dropped = (): number => Number(/^\s*(\d+)\s+\d+\s+DROP/m.exec(execFileSync('ip', ['netns', 'exec', namesOf(net.netns!.id, 2).netns, iptables, '-w', '-L', 'murmur-loss', '-v', '-x', '-n'], { encoding: 'utf8' }))?.[1] ?? 0)
      await waitUntil('the kernel to drop packets to node 2', async () => dropped(), (n) => n > 0)
    }
    await testnet.loss(dir, 2, 0)
  })

  it('delay: by netem when the kernel has it, else by the node, and the command says which', async () => {
    const result = await murmur(['testnet', 'delay', '1', '300ms', '--dir', dir])
    expect(result.code, result.stderr).toBe(0)
    if (net.netns!.netem) {
      expect(ip('-s', 'qdisc', 'show', 'dev', namesOf(net.netns!.id, 1).hostLink)).toContain('netem')
    } else {
      expect(result.stdout).toContain(`note: ${NO_NETEM}`)
      expect((await getRules(net.nodes[1]!.apiUrl, adminKey(dir))).rules.delayMs).toBe(300)
    }
    const started = performance.now()
    await client(0).compareState(peerId(1))
    expect(performance.now() - started).toBeGreaterThanOrEqual(290)
    await testnet.delay(dir, 1, 0)
  })

  it('down removes every namespace, link, process and dir, also after a crash left a node paused and no state file', async () => {
    const before = await testnet.leftovers(dir)
    expect(before.network).toHaveLength(7) // 3 namespaces, 3 veths, the bridge
    await testnet.pause(dir, 1)
    await rm(stateFile(dir))
    const down = await murmur(['testnet', 'down', '--dir', dir])
    expect([down.code, down.stdout], down.stderr).toEqual([0, 'stopped 3 node(s)\n'])
    expect(down.stderr).toMatch(/removed 7 network namespace\(s\) and link\(s\)/)
    expect(await testnet.leftovers(dir)).toEqual({ processes: [], network: [], files: [] })
  })
})

describe.skipIf(root)('--netns without root', () => {
  it('is refused with one line', async () => {
    const result = await murmur(['testnet', 'up', '--netns', '--nodes', '1', '--dir', join(tmpdir(), 'murmur-netns-never')])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/^murmur: murmur testnet up --netns needs root/m)
  })
})
