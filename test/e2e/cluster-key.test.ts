// The cluster key end to end: two nodes with the same key form a cluster; a node
// with another key, and libp2p hosts with another key or none, cannot connect to
// them (no protocol is reached, membership never shows them, nothing hangs); a
// node without a key refuses to start unless told --insecure-open-cluster, and
// then `murmur status` and `murmur members` say so.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '../../cli/client.ts'
import { readClusterKey } from '../../node/config.ts'
import { createHost, type Host } from '../../node/host.ts'
import { MEMBERSHIP_PROTOCOL } from '../../node/membership.ts'
import { freePorts, isNodeProcess, readRuntime, signal, spawnNode, waitForExit } from '../../testnet/local/process.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { tempClusterKey } from '../helpers/cluster-key.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

/**
 * A refused connection must end within the dial timeout (2 s), not hang until
 * some later timeout: this bound is far above 2 s for a loaded machine, and far
 * below the 10 s libp2p would otherwise wait.
 */
const REFUSED_WITHIN_MS = 8_000

let dir = ''
let net: TestnetState
let scratch = ''

beforeAll(async () => {
  ({ dir, state: net } = await startTestnet('cluster-key', 2))
  scratch = await mkdtemp(join(tmpdir(), 'murmur-key-e2e-'))
}, 60_000)
afterAll(async () => {
  await stopTestnet(dir)
  await rm(scratch, { recursive: true, force: true })
}, 60_000)

async function aliveIds (i: number): Promise<string[]> {
  return (await connect(net.nodes[i]!.apiUrl).members()).members.filter((m) => m.state === 'alive').map((m) => m.id).sort()
}

describe('a cluster key', () => {
  it('two nodes with the same key form a cluster', async () => {
    const ids = net.nodes.map((n) => n.peerId!).sort()
    for (const i of [0, 1]) expect(await aliveIds(i)).toEqual(ids)
    const info = await connect(net.nodes[0]!.apiUrl).node() as { openCluster?: boolean }
    expect(info.openCluster).toBe(false)
  })

  it('a libp2p host with another key or none cannot reach any protocol, and fails within the dial timeout', async () => {
    const other = await tempClusterKey(scratch)
    const rejectedBefore = (await connect(net.nodes[0]!.apiUrl).node()).membership.rejected
    for (const clusterKey of [readClusterKey(other.file), undefined]) {
      const host: Host = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, ...(clusterKey === undefined ? {} : { clusterKey }) })
      await host.start()
      try {
        for (const node of net.nodes) {
          const started = Date.now()
          await expect(host.dialProtocol(multiaddr(node.addrs[0]!), MEMBERSHIP_PROTOCOL)).rejects.toThrow()
          expect(Date.now() - started).toBeLessThan(REFUSED_WITHIN_MS)
        }
        expect(host.getConnections()).toEqual([])
      } finally {
        await host.stop()
      }
    }
    await other.remove()
    // Nothing got as far as membership: no frame counted, no new member.
    expect((await connect(net.nodes[0]!.apiUrl).node()).membership.rejected).toEqual(rejectedBefore)
    for (const i of [0, 1]) expect(await aliveIds(i)).toHaveLength(2)
  }, 60_000)

  it('a stranger that connects and sends nothing is cut off within the set-up timeout', async () => {
    const port = Number(multiaddr(net.nodes[0]!.addrs[0]!).getComponents().find((c) => c.name === 'tcp')!.value)
    const started = Date.now()
    const closed = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect(port, '127.0.0.1')
      socket.on('data', () => {}) // the node's nonce: read and ignored
      socket.on('close', () => { resolve(true) })
      socket.on('error', () => {})
      setTimeout(() => { socket.destroy(); resolve(false) }, 20_000)
    })
    expect(closed).toBe(true)
    expect(Date.now() - started).toBeLessThan(REFUSED_WITHIN_MS)
  }, 30_000)

  it('a node with another key cannot join: it exits with one line, and no member ever lists it', async () => {
    const other = await tempClusterKey(scratch)
    const result = await murmur(['node', 'start', '--data-dir', join(scratch, 'other'), '--host', '127.0.0.1', '--port', '0', '--api-port', '0',
      '--profile', 'local', '--log-level', 'error', '--join-timeout', '3s', '--cluster-key', other.file, '--root-key', other.rootPub, '--join', net.nodes[0]!.addrs[0]!])
    await other.remove()
    expect(result.code, result.stderr).toBe(1)
    expect(userLines(result.stderr)).toHaveLength(1)
    expect(userLines(result.stderr)[0]).toMatch(/^murmur: could not join the cluster/)
    for (const i of [0, 1]) {
      const { members } = await connect(net.nodes[i]!.apiUrl).members()
      expect(members).toHaveLength(2)
    }
  }, 60_000)

  it('a node without a key refuses to start, with one line that says how to make one', async () => {
    const result = await murmur(['node', 'start', '--data-dir', join(scratch, 'keyless'), '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--log-level', 'error'],
      { env: { MURMUR_CLUSTER_KEY_FILE: '' } })
    expect(result.code, result.stderr).toBe(2)
    const lines = userLines(result.stderr)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^murmur: no cluster key: make one with 'murmur cluster init'.*--cluster-key <file>.*--insecure-open-cluster/)
  })

  it('--insecure-open-cluster starts, warns in its log, and status and members say so', async () => {
    const dataDir = join(scratch, 'open')
    const logFile = join(scratch, 'open.log')
    const [port, apiPort] = await freePorts(2)
    const pid = spawnNode({ dataDir, logFile, port: port!, apiPort: apiPort!, join: [], labels: {}, clusterKeyFile: null })
    try {
      const runtime = await waitUntil('the open node to start', async () => {
        if (!isNodeProcess(pid, dataDir)) throw new Error(`the node exited: ${await readFile(logFile, 'utf8')}`)
        return await readRuntime(dataDir)
      }, (r) => r?.pid === pid, 30_000, 50)
      const api = ['--api', runtime!.apiUrl]
      const warnings = (await readFile(logFile, 'utf8')).split('\n').filter((l) => l.includes('open cluster')).map((l) => JSON.parse(l) as { level: number })
      expect(warnings.map((w) => w.level)).toEqual([40])
      expect((await connect(runtime!.apiUrl).node() as { openCluster?: boolean }).openCluster).toBe(true)

      const members = await murmur(['members', ...api])
      expect(members.code, members.stderr).toBe(0)
      expect(members.stdout).toMatch(/^warning: open cluster: this node runs without a cluster key/m)
      const membersJson = await murmur(['members', '--json', ...api])
      expect((JSON.parse(membersJson.stdout) as { openCluster: boolean }).openCluster).toBe(true)
      const status = await murmur(['status', ...api])
      expect(status.code, status.stderr).toBe(0)
      expect(status.stdout).toMatch(/^warning: this node runs an open cluster \(no cluster key\)/m)
    } finally {
      signal(pid, 'SIGTERM')
      if (!await waitForExit(pid, dataDir, 10_000)) signal(pid, 'SIGKILL')
    }
  }, 60_000)

  it('the members of a keyed cluster show no open-cluster warning', async () => {
    const members = await murmur(['members', '--api', net.nodes[0]!.apiUrl])
    expect(members.stdout).not.toMatch(/open cluster/)
    const status = await murmur(['status', '--api', net.nodes[0]!.apiUrl])
    expect(status.stdout).not.toMatch(/open cluster/)
  })
})
