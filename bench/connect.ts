// Connection set-up benchmark: what the cluster key (a libp2p private network)
// costs a new connection. Two real hosts (node/host.ts) on 127.0.0.1 in this
// process; each sample dials a fresh connection and waits for a ping answer on
// it (TCP, then the private network's nonces when keyed, Noise, Yamux, a stream
// negotiated and answered), then hangs up. Prints p50/p99/max per mode; never
// fails on time. Usage:
//   npm run bench:connect -- [--samples 200]

import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { table } from '../cli/table.ts'
import { readClusterKey, writeClusterKey } from '../node/config.ts'
import { createHost, type Host } from '../node/host.ts'
import { log, percentile } from './report.ts'

const { values } = parseArgs({ options: { samples: { type: 'string', default: '200' } } })
const SAMPLES = Number(values.samples)
if (!Number.isInteger(SAMPLES) || SAMPLES < 1 || SAMPLES > 100_000) {
  process.stderr.write(`bench:connect: --samples must be a whole number from 1 to 100000, got '${values.samples}'\n`)
  process.exit(2)
}
/** Samples dropped before measuring: JIT and first-use costs. */
const WARMUP = 10

async function host (clusterKey: Uint8Array | undefined): Promise<Host> {
  const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000, ...(clusterKey === undefined ? {} : { clusterKey }) })
  await h.start()
  return h
}

/** Dial → ping answered on a new connection, `count` times (after a warm-up), in ms. */
async function measure (clusterKey: Uint8Array | undefined, count: number): Promise<number[]> {
  const [a, b] = [await host(clusterKey), await host(clusterKey)]
  try {
    const target = b.getMultiaddrs()[0]!
    const times: number[] = []
    for (let i = 0; i < WARMUP + count; i++) {
      const started = performance.now()
      await a.services.ping.ping(target, { signal: AbortSignal.timeout(5_000) })
      const ms = performance.now() - started
      if (i >= WARMUP) times.push(ms)
      await a.hangUp(b.peerId)
      // Both sides have let go of the connection before the next dial.
      while (a.getConnections(b.peerId).length > 0 || b.getConnections(a.peerId).length > 0) await new Promise((r) => setTimeout(r, 1))
    }
    return times
  } finally {
    await a.stop()
    await b.stop()
  }
}

/** How long each of `count` dials from a host holding `dialerKey` to one holding `key` takes to fail, in ms. */
async function refusals (dialerKey: Uint8Array | undefined, key: Uint8Array, count: number): Promise<number[]> {
  const [a, b] = [await host(dialerKey), await host(key)]
  try {
    const times: number[] = []
    for (let i = 0; i < count; i++) {
      const started = performance.now()
      const ok = await a.services.ping.ping(b.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(10_000) }).then(() => true, () => false)
      if (ok) throw new Error('a dial without the right key connected: the private network is not in force')
      times.push(performance.now() - started)
    }
    return times
  } finally {
    await a.stop()
    await b.stop()
  }
}

const dir = await mkdtemp(join(tmpdir(), 'murmur-bench-connect-'))
try {
  const keyFile = join(dir, 'cluster.key')
  writeClusterKey(keyFile)
  const key = readClusterKey(keyFile)
  const rows: string[][] = []
  const fmt = (x: number): string => `${x.toFixed(2)} ms`
  // Interleaved rounds, so that a noisy neighbour hits both modes alike.
  const results: Record<'open' | 'pnet', number[]> = { open: [], pnet: [] }
  const rounds = 4
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['open', 'pnet'] as const) {
      log(`round ${r + 1}/${rounds}: ${mode}`)
      results[mode].push(...await measure(mode === 'pnet' ? key : undefined, Math.ceil(SAMPLES / rounds)))
    }
  }
  for (const mode of ['open', 'pnet'] as const) {
    const t = results[mode]
    rows.push([mode === 'open' ? 'no key (open)' : 'cluster key (pnet)', String(t.length), fmt(percentile(t, 0.5)), fmt(percentile(t, 0.99)), fmt(Math.max(...t))])
  }
  process.stdout.write(`connection set-up, dial → ping answered on a new connection, two hosts on 127.0.0.1, Node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? '?'})\n`)
  process.stdout.write(table(['mode', 'samples', 'p50', 'p99', 'max'], rows) + '\n')
  const extra = percentile(results.pnet, 0.5) - percentile(results.open, 0.5)
  process.stdout.write(`median difference, cluster key − no key: ${fmt(extra)} (the XSalsa20 layer and a 24-byte nonce exchange; under the noise of this machine when near 0)\n`)
  // How long a host without the key, or with another, takes to learn that it cannot connect.
  const otherFile = join(dir, 'other.key')
  writeClusterKey(otherFile)
  const refused: string[][] = []
  for (const [name, dialerKey] of [['no key → keyed host', undefined], ['another key → keyed host', readClusterKey(otherFile)]] as const) {
    const t = await refusals(dialerKey, key, 20)
    refused.push([name, String(t.length), fmt(percentile(t, 0.5)), fmt(Math.max(...t))])
  }
  process.stdout.write('\nrefused dials (dial timeout 2 s)\n' + table(['dialer', 'samples', 'p50', 'max'], refused) + '\n')
} finally {
  await rm(dir, { recursive: true, force: true })
}
