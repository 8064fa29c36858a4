// Exactly once when nothing fails, on a real 5-node testnet: 100 batch jobs of
// 5 instances, submitted at once through every node's API, each run appending
// its attempt id ($MURMUR_TASK_ID) to one file. With no fault, every instance
// must run once: a backup candidate takes an instance over only on evidence that
// the chosen node cannot or will not run it, never because its claim is late
// (node/README.md, "Backups"). A batch job that sends an email must not send it twice.

import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Host, createHost } from '../../node/host.ts'
import { jobOfInstance, parseAttempt } from '../../node/jobs/instances.ts'
import type { ClaimAnswer } from '../../node/reconcile/decide.ts'
import { type RpcHandlers, TaskRpc } from '../../node/rpc.ts'
import { byInstance, marker, markedPids, Net, sh } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 5
const JOBS = 100
const COUNT = 5
const MARK = marker('exactly-once')
/** Small enough that no node's capacity binds: placement alone decides where each instance goes. */
const SMALL = { cpu: '5m', memory: '4M' } as const

describe('exactly once when nothing fails', () => {
  let dir = ''
  let net: Net

  beforeAll(async () => {
    const started = await startTestnet('exactly-once', N)
    dir = started.dir
    net = new Net(started.state.nodes)
  }, 90_000)
  afterAll(async () => { await stopTestnet(dir) }, 60_000)

  it(`${JOBS} batch jobs × ${COUNT} instances submitted at once through every node: each instance runs once`, async () => {
    const runs = join(dir, 'runs.log')
    // Every task appends to it, each as a user of its own: made here, writable by all.
    writeFileSync(runs, '', { mode: 0o666 })
    chmodSync(runs, 0o666)
    const started = Date.now()
    const submitted = await Promise.all(Array.from({ length: JOBS }, async (_, k) =>
      await net.client(k % N, 30_000).submitJob({ name: `once-${k}`, ...sh('echo "$MURMUR_TASK_ID" >> "$1"', MARK, runs), count: COUNT, ...SMALL })))
    const ids = new Set(submitted.map((s) => s.id))
    expect(ids.size).toBe(JOBS)

    for (let i = 0; i < N; i++) {
      await waitUntil(`node ${i} to see all ${JOBS} jobs completed`, async () => (await net.client(i, 15_000).jobs({ all: true })).jobs.filter((j) => ids.has(j.id)),
        (jobs) => jobs.length === JOBS && jobs.every((j) => j.status === 'completed'), 90_000, 500)
    }
    // A second copy could still be running somewhere: wait until no run of ours is left.
    await waitUntil('every run to end', async () => markedPids(MARK), (p) => p.length === 0, 20_000)
    const elapsed = Date.now() - started

    const lines = readFileSync(runs, 'utf8').split('\n').filter((l) => l !== '')
    const perInstance = new Map<string, string[]>()
    for (const attempt of lines) {
      const { instance } = parseAttempt(attempt)
      let list = perInstance.get(instance)
      if (list === undefined) perInstance.set(instance, list = [])
      list.push(attempt)
    }
    const expected = submitted.flatMap((s) => Array.from({ length: COUNT }, (_, i) => `${s.id}.${i}`))
    const missing = expected.filter((id) => !perInstance.has(id))
    const twice = [...perInstance].filter(([, attempts]) => attempts.length > 1)
    // Who ran the instances that ran twice, by the claims: testnet index, state, generation.
    let detail = ''
    if (twice.length > 0) {
      const out: string[] = []
      for (const [id, attempts] of twice) {
        const claims = byInstance(await net.claims(0, jobOfInstance(id))).get(id) ?? []
        out.push(`${id} (${attempts.join(', ')}): ${claims.map((c) => `${net.index(c.node)}:${c.state}:g${c.generation}`).join(' ')}`)
      }
      detail = out.join('\n')
    }
    // How often backups asked and claimed (questions are asked only where the node wires the task RPC into its loop).
    const stats = await Promise.all(net.nodes.map(async (_, i) => (await net.client(i, 15_000).node()).reconcile as unknown as Record<string, number>))
    const sum = (key: string): number => stats.reduce((n, s) => n + (s[key] ?? 0), 0)
    console.log(`exactly-once: ${lines.length} runs of ${expected.length} instances in ${elapsed} ms; ${twice.length} instances ran more than once; ${missing.length} never ran; ` +
      `backup claims ${sum('backupClaims')}, questions ${sum('questions')} (unanswered ${sum('unanswered')})`)
    expect(missing, `${missing.length} instances never ran`).toEqual([])
    expect(perInstance.size).toBe(expected.length)
    expect(twice.length, `${twice.length} instances ran more than once:\n${detail}`).toBe(0)
  }, 150_000)
})

// The question a backup asks before it takes an instance over, between two real
// libp2p hosts: answers as the asked node's loop gives them, a list too long for
// one request frame split over several, and what counts as no answer.
describe('will-run over libp2p', () => {
  const hosts: Host[] = []
  const rpcs: TaskRpc[] = []
  const quiet = pino({ level: 'silent' })
  const unused = {
    logs: async () => { throw new Error('not in this test') },
    usage: () => ({}),
    kill: async () => {},
    isMember: () => true,
  }

  /** A host answering with `willRun` (none: an older node) and its address. */
  async function peer (willRun?: RpcHandlers['willRun']): Promise<{ host: Host, rpc: TaskRpc }> {
    const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000 })
    await host.start()
    hosts.push(host)
    const rpc = new TaskRpc(host, quiet)
    await rpc.start({ ...unused, ...(willRun === undefined ? {} : { willRun }) })
    rpcs.push(rpc)
    return { host, rpc }
  }

  afterAll(async () => {
    for (const r of rpcs) await r.stop()
    for (const h of hosts) await h.stop()
  })

  it('answers for each instance asked, over as many requests as the list needs; a malformed or missing answer fails the question', async () => {
    const asked: string[][] = []
    const answering = await peer((tasks) => {
      asked.push(tasks)
      return Object.fromEntries(tasks.map((t, i): [string, ClaimAnswer] => [t, i % 2 === 0 ? { kind: 'mine', state: 'running' } : { kind: 'declined', reason: 'no room' }]))
    })
    const { host, rpc } = await peer()
    await host.dial(answering.host.getMultiaddrs()[0]!)
    const id = answering.host.peerId.toString()

    expect(await rpc.willRun(id, ['web.0', 'web.1'])).toEqual({ 'web.0': { kind: 'mine', state: 'running' }, 'web.1': { kind: 'declined', reason: 'no room' } })
    // 300 ids of 200 characters do not fit one 16 KiB request: several requests, one answer each.
    const long = Array.from({ length: 300 }, (_, i) => `${'j'.repeat(190)}.${i}`)
    asked.length = 0
    const answers = await rpc.willRun(id, long)
    expect(Object.keys(answers).sort()).toEqual([...long].sort())
    expect(asked.length).toBeGreaterThan(1)
    expect(asked.flat()).toEqual(long)

    const garbled = await peer(() => ({ 'web.0': { kind: 'sure' } }) as unknown as Record<string, ClaimAnswer>)
    await host.dial(garbled.host.getMultiaddrs()[0]!)
    await expect(rpc.willRun(garbled.host.peerId.toString(), ['web.0'])).rejects.toMatchObject({ code: 'BAD_PEER_REPLY' })
    const older = await peer()
    await host.dial(older.host.getMultiaddrs()[0]!)
    await expect(rpc.willRun(older.host.peerId.toString(), ['web.0'])).rejects.toMatchObject({ code: 'NOT_SUPPORTED' })
  }, 30_000)
})
