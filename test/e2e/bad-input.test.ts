// Bad input from users and from peers: one line that says what is wrong, the
// right exit code or HTTP status, and nothing else harmed.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '../../cli/client.ts'
import { encodeMessage } from '../../membership/codec.ts'
import { createHost } from '../../node/host.ts'
import { MEMBERSHIP_PROTOCOL } from '../../node/membership.ts'
import { freePorts } from '../../testnet/local/process.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import type { TestnetState } from '../../testnet/local/state.ts'
import { clusterFilesBeside } from '../../cli/cluster-files.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { adminKey, signedFetch } from '../helpers/signed.ts'
import { tempClusterKey, testnetKey } from '../helpers/cluster-key.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir: string
let keyFile: string
let rootPub: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'murmur-bad-'))
  ;({ file: keyFile, rootPub } = await tempClusterKey(dir))
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** Starts a node that must fail, and checks it said one line and exited with `code`. */
async function failsToStart (args: string[], code: number, message: RegExp): Promise<void> {
  const result = await murmur(['node', 'start', '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--log-level', 'error', '--cluster-key', keyFile, '--root-key', rootPub, ...args])
  expect(result.code, result.stderr).toBe(code)
  const lines = userLines(result.stderr)
  expect(lines, result.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(message)
}

describe('bad input from users', () => {
  it('an unknown flag: exit 2', async () => {
    const result = await murmur(['node', 'start', '--no-such-flag'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/unknown option '--no-such-flag'/)
  })

  it('a malformed value: exit 2, naming the flag', async () => {
    await failsToStart(['--data-dir', join(dir, 'cpu'), '--cpu', 'lots'], 2, /^murmur: --cpu: 'lots' is not a CPU amount/)
    await failsToStart(['--data-dir', join(dir, 'mem'), '--memory', '12 parsecs'], 2, /^murmur: --memory: .* is not a size/)
    await failsToStart(['--data-dir', join(dir, 'label'), '--label', 'novalue'], 2, /^murmur: --label 'novalue' must be key=value/)
    await failsToStart(['--data-dir', join(dir, 'join'), '--join', 'not-a-multiaddr'], 2, /^murmur: --join: /)
    await failsToStart(['--data-dir', join(dir, 'huge'), '--cpu', '1000000000'], 2, /^murmur: --cpu must be more than 0 and at most 100000 cores/)
    await failsToStart(['--data-dir', join(dir, 'host'), '--api-host', 'localhost:80'], 2, /^murmur: --api-host must be an IP address/)
    await failsToStart(['--data-dir', join(dir, 'level'), '--log-level', 'loud'], 2, /^murmur: --log-level must be one of/)
  })

  it('a data dir that belongs to something else: exit 2, untouched', async () => {
    const foreign = join(dir, 'foreign')
    await mkdir(foreign)
    await writeFile(join(foreign, 'precious.txt'), 'keep me')
    await failsToStart(['--data-dir', foreign], 2, /is not empty and has no murmur\.json: it belongs to something else/)
  })

  it('a corrupt data dir: exit 2, naming the dir', async () => {
    const corrupt = join(dir, 'corrupt')
    await mkdir(corrupt)
    await writeFile(join(corrupt, 'murmur.json'), '{"format":"murmur-data-dir","version":1,"peerId":"x"}')
    await writeFile(join(corrupt, 'identity.key'), 'garbage')
    await failsToStart(['--data-dir', corrupt], 2, new RegExp(`data dir ${corrupt} is corrupt \\(identity.key`))
  })

  it('an unreachable --join address: exit 1 within the timeout', async () => {
    const [port] = await freePorts(1)
    await failsToStart(['--data-dir', join(dir, 'lonely'), '--join', `/ip4/127.0.0.1/tcp/${port}`, '--join-timeout', '5s'], 1, /could not join the cluster: none of the --join addresses could be reached/)
  })

  it('a port already in use: exit 1, naming the flag', async () => {
    const server: Server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as { port: number }).port
    try {
      await failsToStart(['--data-dir', join(dir, 'busy'), '--api-port', String(port)], 1, new RegExp(`port ${port} is already in use; .* --api-port`))
    } finally {
      server.close()
    }
  })

  it('an API that does not answer: exit 1 with what to do', async () => {
    const [port] = await freePorts(1)
    const result = await murmur(['members', '--api', `http://127.0.0.1:${port}`])
    expect(result.code).toBe(1)
    expect(userLines(result.stderr)).toEqual([`murmur: no murmur node answers at http://127.0.0.1:${port}; start one with 'murmur node start' or point --api / MURMUR_API at a running node`])
  })

  it('an --api that is not a URL: exit 2', async () => {
    const result = await murmur(['members', '--api', 'localhost:7947'])
    expect(result.code).toBe(2)
    expect(userLines(result.stderr)).toEqual(["murmur: --api / MURMUR_API must be a URL such as http://127.0.0.1:7947, got 'localhost:7947'"])
  })

  it('testnet commands on a node that does not exist: one line, non-zero', async () => {
    const result = await murmur(['testnet', 'kill', 'two', '--dir', join(dir, 'no-testnet')])
    expect(result.code).toBe(2)
    expect(userLines(result.stderr)).toEqual(["murmur: <index> must be a node number such as 0 or 2, got 'two'"])
    const missing = await murmur(['testnet', 'kill', '1', '--dir', join(dir, 'no-testnet')])
    expect(missing.code).toBe(1)
    expect(userLines(missing.stderr)[0]).toMatch(/^murmur: no testnet in /)
  })
})

describe('bad input to a running node', () => {
  let net: string
  let state: TestnetState

  beforeAll(async () => {
    net = join(dir, 'net')
    state = await testnet.up({ nodes: 2, dir: net })
  }, 60_000)
  afterAll(async () => { await testnet.down({ dir: net }) }, 60_000)

  it('unknown endpoints get a 404 with an error body', async () => {
    const res = await signedFetch(adminKey(net), `${state.nodes[0]!.apiUrl}/v1/nope`)
    expect(res.status).toBe(404)
    expect(await res.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'no such endpoint: GET /v1/nope' } })
    // Unsigned, the signature is what is wrong: a stranger learns nothing of which endpoints there are.
    expect((await fetch(`${state.nodes[0]!.apiUrl}/v1/nope`)).status).toBe(401)
  })

  it('bad label changes and state comparisons: one line, exit 2, nothing stored', async () => {
    const api = ['--api', state.nodes[0]!.apiUrl]
    const before = (await connect(state.nodes[0]!.apiUrl).state()).stateVector.clock
    const badKey = await murmur(['node', 'label', ...api, 'bad key=1'])
    expect(badKey.code).toBe(2)
    expect(userLines(badKey.stderr)).toEqual(["murmur: label 'bad key': a key is letters, digits, '.', '_', '-', '/' (starting and ending with a letter or digit), at most 63 characters"])
    const neither = await murmur(['node', 'label', ...api, 'nokv'])
    expect(neither.code).toBe(2)
    expect(userLines(neither.stderr)).toEqual(["murmur: 'nokv' is neither key=value (set a label) nor key- (remove one)"])
    const huge = await murmur(['node', 'label', ...api, ...Array.from({ length: 60 }, (_, i) => `key-${String(i).padStart(50, '0')}=${'v'.repeat(250)}`)])
    expect(huge.code).toBe(2)
    expect(userLines(huge.stderr)[0]).toMatch(/^murmur: the node record would be \d+ bytes, over the limit of 16384; make it smaller \(fewer or shorter labels\)$/)
    const stranger = await murmur(['state', ...api, '--compare', '12D3KooWGTMSE3Wvqh6o68wa6818NiFFSEfgkQ74o2XNJde4ierx'])
    expect(stranger.code).toBe(2)
    expect(userLines(stranger.stderr)).toEqual(["murmur: no member has the peer id 12D3KooWGTMSE3Wvqh6o68wa6818NiFFSEfgkQ74o2XNJde4ierx; see 'murmur members' for the ids"])
    expect((await connect(state.nodes[0]!.apiUrl).state()).stateVector.clock).toBe(before)
  })

  it('a second node on the same data dir is refused', async () => {
    const result = await murmur(['node', 'start', '--data-dir', state.nodes[0]!.dataDir, '--port', '0', '--api-port', '0', '--cluster-key', testnet.clusterKeyFile(net), '--root-key', clusterFilesBeside(testnet.clusterKeyFile(net)).rootPub])
    expect(result.code, result.stderr).toBe(1)
    expect(userLines(result.stderr)[0]).toMatch(/is in use by another murmur node \(pid \d+\)/)
  })

  it('malformed, invalid and oversized membership messages are counted and dropped; the node stays a member', async () => {
    const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, clusterKey: testnetKey(net) })
    await host.start()
    try {
      const target = multiaddr(state.nodes[0]!.addrs[0]!)
      const stream = await host.dialProtocol(target, MEMBERSHIP_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
      const lp = lpStream(stream)
      await lp.write(new TextEncoder().encode('{not json'))
      await lp.write(new TextEncoder().encode(JSON.stringify({ type: 'ping', seq: -1, updates: [] })))
      await lp.write(encodeMessage({ type: 'gossip', updates: [{ kind: 'suspect', id: 'x'.repeat(10_000), incarnation: 1, from: 'y' }] }))
      const oversized = await host.dialProtocol(target, MEMBERSHIP_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
      await lpStream(oversized, { maxDataLength: 4 * 1024 * 1024 }).write(new Uint8Array(2 * 1024 * 1024)).catch(() => {})
      const client = connect(state.nodes[0]!.apiUrl)
      const rejected = await waitUntil('the bad messages to be counted', async () => (await client.node()).membership.rejected as Record<string, number>,
        (r) => (r.malformed ?? 0) >= 1 && (r.invalid ?? 0) >= 2 && (r.oversized ?? 0) >= 1)
      expect(rejected).toEqual({ malformed: 1, invalid: 2, oversized: 1 })
      const { members } = await client.members()
      expect(members.filter((m) => m.state === 'alive')).toHaveLength(2)
    } finally {
      await host.stop()
    }
  })
})
