// The membership transport's limits, against a real libp2p host: a stream that
// sends nothing and a frame that never ends are cut after their deadlines, a
// peer cannot hold more than its share of streams, and bytes over its allowance
// are dropped before they are decoded. Deadlines are asserted with room to
// spare: a busy machine may be late, never early.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PRESETS, membershipConfig } from '../../membership/config.ts'
import { createHost, type Host } from '../../node/host.ts'
import { nodeKeys } from '../../node/keys.ts'
import { MEMBERSHIP_PROTOCOL, MembershipService, TRANSPORT_LIMITS } from '../../node/membership.ts'
import { HostilePeer } from '../reliability/hostile-peer.ts'
import { waitUntil } from '../helpers/wait.ts'

let host: Host
let service: MembershipService
let hostile: HostilePeer
let addr: string

beforeAll(async () => {
  const privateKey = await generateKeyPair('Ed25519')
  host = await createHost({ privateKey, host: '127.0.0.1', port: 0, mdns: false, dialTimeoutMs: 2_000 })
  await host.start()
  service = new MembershipService({
    host, config: membershipConfig({}, PRESETS.local), meta: { cpuMillis: 1000, memoryBytes: 1024 ** 3, labels: {} },
    tickMs: 20, dialTimeoutMs: 2_000, log: pino({ level: 'silent' }), keys: nodeKeys(privateKey),
  })
  await service.start()
  hostile = await HostilePeer.start()
  addr = host.getMultiaddrs()[0]!.toString()
})

afterAll(async () => {
  await hostile?.stop()
  await service?.stop()
  await host?.stop()
})

const rejected = (reason: string): number => service.stats.rejected[reason] ?? 0

describe('membership transport limits', () => {
  it('cuts a stream that sends nothing after firstFrameMs', async () => {
    const stream = await hostile.host.dialProtocol(multiaddr(addr), MEMBERSHIP_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    const started = Date.now()
    await waitUntil('the node to cut the silent stream', async () => stream.status, (status) => status !== 'open', TRANSPORT_LIMITS.firstFrameMs + 10_000)
    expect(Date.now() - started).toBeGreaterThanOrEqual(TRANSPORT_LIMITS.firstFrameMs - 100)
    expect(rejected('idle')).toBeGreaterThanOrEqual(1)
  }, 30_000)

  it('cuts a frame that never ends within frameReadMs of its first bytes', async () => {
    const cut = await hostile.trickle(addr, MEMBERSHIP_PROTOCOL, 512 * 1024, TRANSPORT_LIMITS.frameReadMs + 10_000)
    expect(cut).toBe(true)
    expect(rejected('slow-frame')).toBeGreaterThanOrEqual(1)
  }, 30_000)

  it('holds no more than inboundStreamsPerPeerMax streams of one peer open', async () => {
    const streams: Array<Stream | null> = []
    for (let i = 0; i < TRANSPORT_LIMITS.inboundStreamsPerPeerMax + 2; i++) {
      streams.push(await hostile.host.dialProtocol(multiaddr(addr), MEMBERSHIP_PROTOCOL, { signal: AbortSignal.timeout(5_000) }).catch(() => null))
    }
    // The extra ones are refused by libp2p's cap per connection or by ours per peer (over several connections).
    const open = await waitUntil('the extra streams to be refused', async () => streams.filter((s) => s?.status === 'open').length,
      (n) => n <= TRANSPORT_LIMITS.inboundStreamsPerPeerMax, 10_000)
    expect(open).toBeLessThanOrEqual(TRANSPORT_LIMITS.inboundStreamsPerPeerMax)
    for (const stream of streams) stream?.abort(new Error('done'))
  }, 30_000)

  it('drops frames beyond a peer\'s byte allowance before decoding them', async () => {
    const before = rejected('rate')
    const stream = await hostile.host.dialProtocol(multiaddr(addr), MEMBERSHIP_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    const lp = lpStream(stream, { maxDataLength: 2 * 1024 * 1024 })
    // Four frames of 900 KB at once: the burst holds two.
    const frame = new TextEncoder().encode(`"${'x'.repeat(900_000)}"`)
    for (let i = 0; i < 4; i++) await lp.write(frame, { signal: AbortSignal.timeout(5_000) })
    await waitUntil('frames over the allowance to be dropped', async () => rejected('rate') - before, (n) => n >= 1, 10_000)
    stream.abort(new Error('done'))
  }, 30_000)
})
