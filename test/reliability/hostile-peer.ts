// A hostile peer for the reliability suite: a real libp2p host (our own host
// setup, an identity of its own) that speaks the nodes' protocols wrongly: garbage
// and oversized frames, frames that never end, streams of frames that never end,
// forged membership claims, junk on the gossip topic. Usually a holder of the
// cluster key (what a misbehaving member can do); keyless, it shows what a
// stranger on the network can do: nothing past the connection set-up.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll } from 'vitest'
import { encodeMessage } from '../../membership/codec.ts'
import type { Message } from '../../membership/types.ts'
import { createHost, type Host, STATE_TOPIC } from '../../node/host.ts'
import { MEMBERSHIP_PROTOCOL } from '../../node/membership.ts'
import { waitUntil } from '../helpers/wait.ts'
import { currentClusterKey, sleep } from './harness.ts'

export class HostilePeer {
  readonly host: Host

  private constructor (host: Host) { this.host = host }

  /** The same attacks from a host that is a member (test/helpers/hostile-member.ts): what a compromised node could send. */
  static over (host: Host): HostilePeer {
    return new HostilePeer(host)
  }

  /** With `clusterKey`, a key holder that can reach the nodes' protocols; without, a stranger. */
  static async start (options: { clusterKey?: Uint8Array | undefined } = {}): Promise<HostilePeer> {
    const host = await createHost({
      privateKey: await generateKeyPair('Ed25519'),
      host: '127.0.0.1',
      port: 0,
      mdns: false,
      dialTimeoutMs: 2_000,
      ...(options.clusterKey === undefined ? {} : { clusterKey: options.clusterKey }),
    })
    await host.start()
    return new HostilePeer(host)
  }

  async stop (): Promise<void> {
    await this.host.stop()
  }

  private async open (addr: string, protocol: string): Promise<Stream> {
    return await this.host.dialProtocol(multiaddr(addr), protocol, { signal: AbortSignal.timeout(5_000) })
  }

  /**
   * Writes length-prefixed frames on a new stream, then reads what comes back
   * until the node closes or resets the stream (or `readMs` passes).
   */
  async frames (addr: string, protocol: string, frames: Uint8Array[], readMs = 5_000): Promise<Uint8Array[]> {
    const stream = await this.open(addr, protocol)
    const lp = lpStream(stream, { maxDataLength: 64 * 1024 * 1024 })
    const replies: Uint8Array[] = []
    try {
      for (const frame of frames) await lp.write(frame, { signal: AbortSignal.timeout(10_000) })
      const signal = AbortSignal.timeout(readMs)
      for (;;) replies.push((await lp.read({ signal })).subarray())
    } catch {
      // The node hung up on us (or we stopped listening).
    } finally {
      stream.abort(new Error('done'))
    }
    return replies
  }

  /**
   * A frame that never ends: announces `bytes` and then sends one byte every
   * 100 ms. Resolves after `ms`, or as soon as the node cuts the stream; true if it did.
   */
  async trickle (addr: string, protocol: string, bytes: number, ms: number): Promise<boolean> {
    const stream = await this.open(addr, protocol)
    const deadline = Date.now() + ms
    try {
      stream.send(varint(bytes))
      while (Date.now() < deadline) {
        if (stream.status !== 'open' || stream.writeStatus !== 'writable') return true
        stream.send(Uint8Array.of(0x20))
        await sleep(100)
      }
      return stream.status !== 'open'
    } catch {
      return true
    } finally {
      stream.abort(new Error('done'))
    }
  }

  /** Frames that never end: writes `frame` again and again for `ms`; resolves with how many went out. */
  async flood (addr: string, protocol: string, frame: Uint8Array, ms: number): Promise<number> {
    const stream = await this.open(addr, protocol)
    const lp = lpStream(stream)
    const deadline = Date.now() + ms
    let sent = 0
    try {
      while (Date.now() < deadline) {
        await lp.write(frame, { signal: AbortSignal.timeout(5_000) })
        sent++
        // Let the event loop breathe: the point is an endless stream, not to starve our own process.
        if (sent % 50 === 0) await sleep(1)
      }
    } catch {
      // Cut off by the node.
    } finally {
      stream.abort(new Error('done'))
    }
    return sent
  }

  /** One membership message, as any member would send it. */
  async membership (addr: string, message: Message): Promise<void> {
    const stream = await this.open(addr, MEMBERSHIP_PROTOCOL)
    try {
      await lpStream(stream).write(encodeMessage(message), { signal: AbortSignal.timeout(5_000) })
      // Closing at once can reset the stream before the frame is read.
      await sleep(200)
      await stream.close()
    } catch {
      stream.abort(new Error('done'))
    }
  }

  /** Joins the gossip topic of the nodes at `addrs` and publishes each payload once. */
  async gossip (addrs: string[], peers: string[], payloads: Uint8Array[]): Promise<void> {
    const pubsub = this.host.services.pubsub
    await Promise.all(addrs.map(async (a) => await this.host.dial(multiaddr(a) as Multiaddr, { signal: AbortSignal.timeout(5_000) })))
    pubsub.subscribe(STATE_TOPIC)
    await waitUntil('the nodes to list the hostile peer on the topic', async () => pubsub.getSubscribers(STATE_TOPIC).map(String),
      (subscribers) => peers.every((p) => subscribers.includes(p)), 15_000)
    for (const payload of payloads) await pubsub.publish(STATE_TOPIC, payload)
  }
}

/**
 * A hostile peer for the tests of one file: started before them (after the
 * file's cluster), stopped after them. By default it holds the key of the cluster
 * the file started (useCluster); `key: null` makes it a stranger without one.
 */
export function useHostilePeer (key: (() => Uint8Array) | null = currentClusterKey): { peer: HostilePeer } {
  const holder = {} as { peer: HostilePeer }
  beforeAll(async () => { holder.peer = await HostilePeer.start({ clusterKey: key?.() }) })
  afterAll(async () => { await holder.peer?.stop() })
  return holder
}

function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128) }
  out.push(n)
  return Uint8Array.from(out)
}
