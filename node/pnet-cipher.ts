// The cluster key's cipher, kept within bounds. @libp2p/pnet encrypts with the
// `xsalsa20` package, whose WebAssembly module has one memory for the whole
// process, at most 64 MiB, that grows to the largest buffer passed in one call and
// never shrinks. Two flaws of it would throw out of a connection's send or receive
// path (and take the node down) or hold memory for good:
// - the connection hands pnet everything queued on it in one call: two 32 MiB sync
//   diffs queued together would pass the limit;
// - each cipher keeps a view of the memory from when it was made; when another
//   one grows the memory that view is detached (length 0), and the cipher's next
//   call grows the memory again by all it needs, not by what is missing. With a
//   connection or two per peer, the memory climbs to the limit.
// XSalsa20 is a stream cipher, so encrypting a buffer in pieces, in order, gives the
// same bytes: every call is cut into pieces of CHUNK_BYTES, and a cipher whose view
// was detached gets the current one first. The module's memory stays about a piece.

import { createRequire } from 'node:module'

const CHUNK_BYTES = 256 * 1024

/** The parts of the package's cipher this relies on (xsalsa20 1.2.0, index.js). */
interface Cipher {
  update: (input: Uint8Array, output?: Uint8Array) => Uint8Array
  finalize: () => void
  /** The WebAssembly state: `_memory` is its view of the module's memory. */
  _xor: { _memory?: Uint8Array } | null
}
type Make = ((nonce: Uint8Array, key: Uint8Array) => Cipher) & { prototype: Cipher & { [PATCHED]?: true } }

/** The package as @libp2p/pnet loads it (the one copy in node_modules). */
const xsalsa20 = createRequire(import.meta.url)('xsalsa20') as Make
const PATCHED = Symbol.for('murmur.xsalsa20.bounded')

/** A view of the module's memory as it is now: that of a cipher made now, whose slot is given back at once. */
function currentMemory (): Uint8Array | undefined {
  const probe = xsalsa20(new Uint8Array(24), new Uint8Array(32))
  const memory = probe._xor?._memory
  probe.finalize()
  return memory
}

export function boundPnetCipher (): void {
  const proto = xsalsa20.prototype
  if (proto[PATCHED] === true) return
  const update = proto.update
  const piece = (cipher: Cipher, input: Uint8Array, output?: Uint8Array): Uint8Array => {
    const xor = cipher._xor
    // Detached by another cipher's growth: a typed array over a detached buffer has length 0.
    if (xor?._memory !== undefined && xor._memory.length === 0) {
      const memory = currentMemory()
      if (memory !== undefined) xor._memory = memory
    }
    return update.call(cipher, input, output)
  }
  proto.update = function (this: Cipher, input: Uint8Array, output?: Uint8Array): Uint8Array {
    if (input.length <= CHUNK_BYTES) return piece(this, input, output)
    const out = output ?? new Uint8Array(input.length)
    for (let at = 0; at < input.length; at += CHUNK_BYTES) {
      const end = Math.min(input.length, at + CHUNK_BYTES)
      piece(this, input.subarray(at, end), out.subarray(at, end))
    }
    return out
  }
  proto[PATCHED] = true
}

/** The bytes of the module's memory now (for tests). */
export function pnetCipherMemoryBytes (): number {
  return currentMemory()?.length ?? 0
}
