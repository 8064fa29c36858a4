// The placement hash is a protocol: every node must rank (task, node) pairs
// identically, so the values here are pinned. The murmur3 vectors are the
// published MurmurHash3_x86_32 ones (checked against aappleby/smhasher's
// MurmurHash3.cpp, compiled). The idKey and pair-hash values are pinned twice:
// as literals, and against a second, plain byte-level implementation of the
// documented construction, so that a pinned value means "this is the hash that
// hash.ts documents", not "this is what the code happened to return".
//
// Changing any pinned value below means the placement hash changed: bump
// PLACEMENT_HASH_VERSION, and never run two versions in one cluster.
//
// Properties use fast-check with a fixed seed, printed in the describe title;
// SEED=<n> replays another.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  PLACEMENT_HASH_VERSION, idKey, murmur3, pairHash, premix, premixedPairHash, taskPrefix, unitDraw, weightedScore,
} from '../../placement/hash.ts'
import { seedFromEnv } from '../../testnet/sim/rng.ts'

const runSeed = seedFromEnv(4101)
const utf8 = new TextEncoder()

// The seeds documented in hash.ts: 'murm' and 'ur01' for an id's two words, 'pair' for a pair.
const KEY_SEED_LO = 0x6d75726d
const KEY_SEED_HI = 0x75723031
const PAIR_SEED = 0x70616972

// ---- an independent MurmurHash3_x86_32, written from the reference, byte by byte ----

/** a × b mod 2³², from 16-bit halves (no Math.imul, so it shares nothing with hash.ts). */
function mul32 (a: number, b: number): number {
  const aLo = a & 0xffff
  const aHi = a >>> 16
  return ((aLo * b) + (((aHi * b) & 0xffff) * 0x10000)) % 0x100000000
}

function rotl32 (x: number, r: number): number {
  return ((x << r) | (x >>> (32 - r))) >>> 0
}

function refMurmur3 (bytes: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = seed >>> 0
  const blocks = Math.floor(bytes.length / 4)
  for (let b = 0; b < blocks; b++) {
    const o = b * 4
    let k = (bytes[o]! + bytes[o + 1]! * 0x100 + bytes[o + 2]! * 0x10000 + bytes[o + 3]! * 0x1000000) >>> 0
    k = mul32(k, c1)
    k = rotl32(k, 15)
    k = mul32(k, c2)
    h = (h ^ k) >>> 0
    h = rotl32(h, 13)
    h = (mul32(h, 5) + 0xe6546b64) % 0x100000000
  }
  const rest = bytes.length % 4
  if (rest > 0) {
    let k = 0
    for (let i = rest - 1; i >= 0; i--) k = k * 0x100 + bytes[blocks * 4 + i]!
    k = mul32(k, c1)
    k = rotl32(k, 15)
    k = mul32(k, c2)
    h = (h ^ k) >>> 0
  }
  h = (h ^ bytes.length) >>> 0
  h = (h ^ (h >>> 16)) >>> 0
  h = mul32(h, 0x85ebca6b)
  h = (h ^ (h >>> 13)) >>> 0
  h = mul32(h, 0xc2b2ae35)
  h = (h ^ (h >>> 16)) >>> 0
  return h
}

/** An id's key as hash.ts documents it: two MurmurHash3 values of its UTF-8 bytes. */
function refKey (id: string): { lo: number, hi: number } {
  const bytes = utf8.encode(id)
  return { lo: refMurmur3(bytes, KEY_SEED_LO), hi: refMurmur3(bytes, KEY_SEED_HI) }
}

/** The pair hash as documented: MurmurHash3 of key(task) ‖ key(node), four little-endian words. */
function refPairFromKeys (task: { lo: number, hi: number }, node: { lo: number, hi: number }): number {
  const bytes = new Uint8Array(16)
  const words = [task.lo, task.hi, node.lo, node.hi]
  words.forEach((w, i) => {
    for (let b = 0; b < 4; b++) bytes[i * 4 + b] = Math.floor((w >>> 0) / 2 ** (8 * b)) % 256
  })
  return refMurmur3(bytes, PAIR_SEED)
}

function refPair (task: string, node: string): number {
  return refPairFromKeys(refKey(task), refKey(node))
}

function codePair (task: string, node: string): number {
  const n = idKey(node)
  return pairHash(taskPrefix(idKey(task)), n.lo, n.hi)
}

// ---- murmur3 itself ----

describe('murmur3 is MurmurHash3_x86_32', () => {
  // Published vectors, each checked against the reference C implementation.
  const vectors: Array<[string, Uint8Array, number, number]> = [
    ['empty, seed 0', utf8.encode(''), 0, 0x00000000],
    ['empty, seed 1', utf8.encode(''), 1, 0x514e28b7],
    ['empty, seed 0xffffffff', utf8.encode(''), 0xffffffff, 0x81f16f39],
    ['four zero bytes, seed 0', new Uint8Array(4), 0, 0x2362f9de],
    ['"a" (tail of 1), seed 0', utf8.encode('a'), 0, 0x3c2569b2],
    ['"ab" (tail of 2), seed 0', utf8.encode('ab'), 0, 0x9bbfd75f],
    ['"abc" (tail of 3), seed 0', utf8.encode('abc'), 0, 0xb3dd93fa],
    ['"abcd" (one block), seed 0', utf8.encode('abcd'), 0, 0x43ed676a],
    ['"hello", seed 0', utf8.encode('hello'), 0, 0x248bfa47],
    ['"aaaa", seed 0x9747b28c', utf8.encode('aaaa'), 0x9747b28c, 0x5a97808a],
    ['"Hello, world!", seed 0x9747b28c', utf8.encode('Hello, world!'), 0x9747b28c, 0x24884cba],
    ['"The quick brown fox jumps over the lazy dog", seed 0', utf8.encode('The quick brown fox jumps over the lazy dog'), 0, 0x2e4ff723],
  ]

  it.each(vectors)('%s', (_name, bytes, seed, expected) => {
    expect(murmur3(bytes, seed)).toBe(expected)
    // The test's own implementation agrees with the same vectors, so it can vouch for the pinned values below.
    expect(refMurmur3(bytes, seed)).toBe(expected)
  })

  it('hashes only the first `length` bytes when given a length', () => {
    const bytes = utf8.encode('hello, world')
    expect(murmur3(bytes, 0, 5)).toBe(0x248bfa47)
    expect(murmur3(bytes, 0, 0)).toBe(0)
    expect(murmur3(bytes, 0)).toBe(0x149bbb7f)
  })

  it('returns an unsigned 32-bit integer', () => {
    for (const [, bytes, seed] of vectors) {
      const h = murmur3(bytes, seed)
      expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true)
    }
  })
})

describe(`murmur3 agrees with a byte-level reference (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('on any bytes and seed', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70 }), fc.integer({ min: 0, max: 0xffffffff }), (bytes, seed) => {
        expect(murmur3(bytes, seed)).toBe(refMurmur3(bytes, seed))
      }),
      { seed: runSeed, numRuns: 300 },
    )
  })
})

// ---- the version and the pinned keys ----

describe('the placement hash version', () => {
  it('is 1', () => {
    expect(PLACEMENT_HASH_VERSION).toBe(1)
  })
})

const LONG_ID = `job-${'abcdefghij'.repeat(30)}` // 304 bytes: longer than the initial 256-byte scratch buffer
const EMOJI_ID = '🚀 launch' // a surrogate pair: 4 UTF-8 bytes

describe('idKey: pinned values (changing them means bumping PLACEMENT_HASH_VERSION)', () => {
  const keys: Array<[string, string, number, number]> = [
    ['ASCII node id', 'node-1', 0xf154ab3c, 0x386df452],
    ['ASCII task id', 'web/0', 0x4267b108, 0x08772423],
    ['a 304-byte id', LONG_ID, 0xf1e57d5b, 0xb865ea8d],
    ['non-ASCII (2-byte UTF-8)', 'nœud-é', 0x82f5a547, 0x7ddad75d],
    ['an emoji (4-byte UTF-8)', EMOJI_ID, 0x84b844a2, 0xb9cbc2c5],
  ]

  it.each(keys)('%s', (_name, id, lo, hi) => {
    expect(idKey(id)).toEqual({ lo, hi })
    expect(refKey(id), 'the pinned value is the documented construction').toEqual({ lo, hi })
  })

  it('an empty id is the two murmur3 values of no bytes', () => {
    expect(idKey('')).toEqual(refKey(''))
  })

  it('distinguishes UTF-8 from UTF-16 and from Latin-1', () => {
    // 'é' is U+00E9: one UTF-16 unit, one Latin-1 byte, but two UTF-8 bytes (c3 a9).
    expect(idKey('é').lo).toBe(murmur3(new Uint8Array([0xc3, 0xa9]), KEY_SEED_LO))
    expect(idKey('é').lo).not.toBe(murmur3(new Uint8Array([0xe9]), KEY_SEED_LO))
  })
})

describe('pairHash: pinned values (changing them means bumping PLACEMENT_HASH_VERSION)', () => {
  const pairs: Array<[string, string, number]> = [
    ['node-1', 'node-1', 0xd85d7bf1],
    ['web/0', 'node-1', 0x444ee277],
    ['node-1', 'web/0', 0x681b81d7],
    [LONG_ID, EMOJI_ID, 0x7b1053df],
    ['nœud-é', LONG_ID, 0xceeb80b8],
    [EMOJI_ID, 'nœud-é', 0x9778fa60],
  ]

  it.each(pairs)('task %s on node %s', (task, node, expected) => {
    expect(codePair(task, node)).toBe(expected)
    expect(refPair(task, node), 'the pinned value is murmur3 of key(task) ‖ key(node) with the pair seed').toBe(expected)
  })

  it('is the exported murmur3 over the hand-built 16 bytes', () => {
    const t = idKey('web/0')
    const n = idKey('node-1')
    const bytes = new Uint8Array(16)
    const view = new DataView(bytes.buffer)
    view.setUint32(0, t.lo, true)
    view.setUint32(4, t.hi, true)
    view.setUint32(8, n.lo, true)
    view.setUint32(12, n.hi, true)
    expect(murmur3(bytes, PAIR_SEED)).toBe(0x444ee277)
  })

  it('is not symmetric: (task, node) and (node, task) differ', () => {
    expect(codePair('web/0', 'node-1')).not.toBe(codePair('node-1', 'web/0'))
  })
})

// ---- the pieces of the pair hash ----

const uint32 = fc.integer({ min: 0, max: 0xffffffff })
const keyArb = fc.record({ lo: uint32, hi: uint32 })

describe(`pair hash pieces (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('pairHash(taskPrefix(task), node) is murmur3 of the 16 bytes, for any keys', () => {
    fc.assert(
      fc.property(keyArb, keyArb, (t, n) => {
        expect(pairHash(taskPrefix(t), n.lo, n.hi)).toBe(refPairFromKeys(t, n))
      }),
      { seed: runSeed, numRuns: 300 },
    )
  })

  it('premixedPairHash with premix applied equals pairHash, also through an Int32Array as the pool keeps them', () => {
    const stored = new Int32Array(2)
    fc.assert(
      fc.property(keyArb, keyArb, (t, n) => {
        const prefix = taskPrefix(t)
        const expected = pairHash(prefix, n.lo, n.hi)
        expect(premixedPairHash(prefix, premix(n.lo), premix(n.hi))).toBe(expected)
        stored[0] = premix(n.lo)
        stored[1] = premix(n.hi)
        expect(premixedPairHash(prefix, stored[0], stored[1])).toBe(expected)
        // Keys given as signed words hash the same as their unsigned forms.
        expect(pairHash(prefix, n.lo | 0, n.hi | 0)).toBe(expected)
      }),
      { seed: runSeed, numRuns: 300 },
    )
  })

  it('returns unsigned 32-bit integers', () => {
    fc.assert(
      fc.property(keyArb, keyArb, (t, n) => {
        const h = pairHash(taskPrefix(t), n.lo, n.hi)
        expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true)
      }),
      { seed: runSeed, numRuns: 100 },
    )
  })
})

// ---- draws and scores ----

describe('unitDraw', () => {
  it('is strictly inside (0, 1) at both ends of the hash range', () => {
    const low = unitDraw(0)
    const high = unitDraw(0xffffffff)
    expect(low).toBeGreaterThan(0)
    expect(low).toBeLessThan(1)
    expect(high).toBeGreaterThan(0)
    expect(high).toBeLessThan(1)
    expect(Number.isFinite(Math.log(low))).toBe(true)
    expect(Math.log(high)).toBeLessThan(0)
  })

  it('is strictly increasing in the hash', () => {
    const hashes = [0, 1, 2, 3, 0x7fffffff, 0x80000000, 0xfffffffd, 0xfffffffe, 0xffffffff]
    for (let k = 1; k < hashes.length; k++) expect(unitDraw(hashes[k]!)).toBeGreaterThan(unitDraw(hashes[k - 1]!))
  })
})

describe(`weightedScore is monotonic (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('is finite and positive at the ends of the hash range', () => {
    for (const h of [0, 0xffffffff]) {
      const s = weightedScore(1, h)
      expect(Number.isFinite(s)).toBe(true)
      expect(s).toBeGreaterThan(0)
    }
    expect(weightedScore(0, 12345)).toBe(0)
  })

  it('strictly increasing in the hash, for a fixed positive weight', () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-3, max: 1e9, noNaN: true }), uint32, uint32, (weight, a, b) => {
        fc.pre(a !== b)
        const [lo, hi] = a < b ? [a, b] : [b, a]
        expect(weightedScore(weight, lo)).toBeLessThan(weightedScore(weight, hi))
      }),
      { seed: runSeed, numRuns: 500 },
    )
    // Adjacent hashes at the ends, where the logarithm is least forgiving.
    for (const h of [0, 1, 0xfffffffd, 0xfffffffe]) expect(weightedScore(1, h)).toBeLessThan(weightedScore(1, h + 1))
  })

  it('increasing in the weight, for a fixed hash (strictly for integer weights)', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e9, noNaN: true }), fc.double({ min: 0, max: 1e9, noNaN: true }), uint32, (a, b, h) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a]
        expect(weightedScore(lo, h)).toBeLessThanOrEqual(weightedScore(hi, h))
      }),
      { seed: runSeed, numRuns: 500 },
    )
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 0, max: 1_000_000 }), uint32, (a, b, h) => {
        fc.pre(a !== b)
        const [lo, hi] = a < b ? [a, b] : [b, a]
        expect(weightedScore(lo, h)).toBeLessThan(weightedScore(hi, h))
      }),
      { seed: runSeed, numRuns: 500 },
    )
  })
})

// ---- idKey and its reused scratch buffer ----

const idArb = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  // Lone surrogates too: both encoders write U+FFFD for them.
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
  fc.string({ unit: 'grapheme-ascii', minLength: 200, maxLength: 900 }),
  fc.string({ unit: 'binary', minLength: 100, maxLength: 700 }),
)

describe(`idKey is murmur3 over TextEncoder bytes (fast-check seed ${runSeed}; replay with SEED=${runSeed})`, () => {
  it('for any id, short or long, ASCII or not', () => {
    fc.assert(
      fc.property(idArb, (id) => {
        const bytes = utf8.encode(id)
        const key = idKey(id)
        expect(key).toEqual({ lo: murmur3(bytes, KEY_SEED_LO), hi: murmur3(bytes, KEY_SEED_HI) })
        expect(key).toEqual(refKey(id))
      }),
      { seed: runSeed, numRuns: 300 },
    )
  })

  it('interleaving long and short ids gives each the key it has alone', () => {
    fc.assert(
      fc.property(fc.array(idArb, { minLength: 2, maxLength: 12 }), (ids) => {
        const alone = ids.map(refKey)
        expect(ids.map((id) => idKey(id))).toEqual(alone)
        expect([...ids].reverse().map((id) => idKey(id))).toEqual([...alone].reverse())
      }),
      { seed: runSeed, numRuns: 150 },
    )
  })

  it('a short id after a longer one with the same prefix does not hash the longer one’s leftover bytes', () => {
    const alone = refKey('aaaaa')
    idKey('a'.repeat(5000))
    expect(idKey('aaaaa')).toEqual(alone)
    idKey(`${'é'.repeat(400)}x`)
    expect(idKey('é')).toEqual(refKey('é'))
    idKey('🚀'.repeat(300))
    expect(idKey('')).toEqual(refKey(''))
  })
})
