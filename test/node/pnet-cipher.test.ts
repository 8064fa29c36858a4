// The cluster key's cipher within bounds (node/pnet-cipher.ts). Unpatched, its
// WebAssembly memory cannot pass 64 MiB: one call with more throws, and so do
// enough ciphers made before the memory last grew, each of which grows it again by
// all it needs. Both would throw out of a connection's send or receive path.

import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { boundPnetCipher, pnetCipherMemoryBytes } from '../../node/pnet-cipher.ts'

const xsalsa20 = createRequire(import.meta.url)('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => { update: (input: Uint8Array) => Uint8Array }
const MiB = 1024 * 1024

describe('the cluster key cipher', () => {
  boundPnetCipher()
  const nonce = new Uint8Array(24).fill(3)
  const key = new Uint8Array(32).fill(5)

  it('encrypts 96 MiB in one call, and gives the bytes it gives piece by piece', () => {
    const input = new Uint8Array(96 * MiB)
    for (let i = 0; i < input.length; i += 4099) input[i] = i & 0xff
    const whole = xsalsa20(nonce, key).update(input)
    const stream = xsalsa20(nonce, key)
    // Pieces of odd sizes, across the 64-byte blocks of the cipher.
    for (const [at, end] of [[0, 1], [1, 1_000_003], [1_000_003, 70_000_000], [70_000_000, input.length]] as const) {
      expect(Buffer.from(stream.update(input.subarray(at, end))).equals(Buffer.from(whole.subarray(at, end)))).toBe(true)
    }
    expect(pnetCipherMemoryBytes()).toBeLessThan(2 * MiB)
  })

  it('a thousand ciphers made before the memory grew each go on without growing it much', () => {
    const ciphers = Array.from({ length: 1_000 }, (_, i) => xsalsa20(new Uint8Array(24).fill(i & 0xff), key))
    const before = pnetCipherMemoryBytes()
    for (let round = 0; round < 3; round++) {
      for (const cipher of ciphers) cipher.update(new Uint8Array(200 * 1024))
      xsalsa20(nonce, key).update(new Uint8Array(8 * MiB))
    }
    expect(pnetCipherMemoryBytes()).toBeLessThan(before + 2 * MiB)
  })
})
