// The one hash that every node ranks with. Changing anything here changes where
// tasks go, and nodes that disagree on it would claim each other's tasks: bump
// PLACEMENT_HASH_VERSION with any change, and never run two versions in one cluster.
//
// Version 1 is MurmurHash3 (x86, 32 bits), chosen because it is public, small,
// fast with 32-bit integer arithmetic (no BigInt), and mixes well:
// - the key of an id is two MurmurHash3 values of its UTF-8 bytes, seeds KEY_SEEDS;
// - the hash of a pair (task, node) is MurmurHash3 of the 16 bytes
//   key(task) ‖ key(node), four little-endian words, seed PAIR_SEED.
// Test vectors in test/placement/hash.test.ts pin all three.

export const PLACEMENT_HASH_VERSION = 1

/** 'murm' and 'ur01', 'pair': arbitrary, fixed forever for version 1. */
const KEY_SEEDS = [0x6d75726d, 0x75723031] as const
const PAIR_SEED = 0x70616972

const C1 = 0xcc9e2d51
const C2 = 0x1b873593

/** The part of a MurmurHash3 round that depends on the block alone. */
export function premix (block: number): number {
  const k = Math.imul(block, C1)
  return Math.imul((k << 15) | (k >>> 17), C2)
}

/** The part that folds a premixed block into the state. */
function fold (h: number, k: number): number {
  h ^= k
  h = (h << 13) | (h >>> 19)
  return (Math.imul(h, 5) + 0xe6546b64) | 0
}

function mixBlock (h: number, block: number): number {
  return fold(h, premix(block))
}

function finish (h: number, length: number): number {
  h ^= length
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** MurmurHash3 x86 32-bit of some bytes (the first `length` of them): an unsigned 32-bit integer. */
export function murmur3 (bytes: Uint8Array, seed: number, length = bytes.length): number {
  let h = seed | 0
  const whole = length & ~3
  for (let i = 0; i < whole; i += 4) {
    h = mixBlock(h, bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))
  }
  const tail = length & 3
  if (tail > 0) {
    let k = bytes[whole]!
    if (tail > 1) k ^= bytes[whole + 1]! << 8
    if (tail > 2) k ^= bytes[whole + 2]! << 16
    k = Math.imul(k, C1)
    k = (k << 15) | (k >>> 17)
    h ^= Math.imul(k, C2)
  }
  return finish(h, length)
}

/** An id's 64-bit key, as two unsigned 32-bit words. */
export interface IdKey { readonly lo: number, readonly hi: number }

const utf8 = new TextEncoder()
/** Reused for every id: encoding into it allocates nothing (grown for longer ids). */
let scratch = new Uint8Array(256)

export function idKey (id: string): IdKey {
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  if (scratch.length < id.length * 3) scratch = new Uint8Array(id.length * 3)
  const { written } = utf8.encodeInto(id, scratch)
  return { lo: murmur3(scratch, KEY_SEEDS[0], written), hi: murmur3(scratch, KEY_SEEDS[1], written) }
}

/**
 * The hash state after a task's key, so that ranking one task over many nodes
 * mixes the task's half once (`pairHash(taskPrefix(t), n)` = the pair hash).
 */
export function taskPrefix (task: IdKey): number {
  return mixBlock(mixBlock(PAIR_SEED, task.lo), task.hi)
}

/** The pair hash of (task, node): an unsigned 32-bit integer. */
export function pairHash (prefix: number, nodeLo: number, nodeHi: number): number {
  return premixedPairHash(prefix, premix(nodeLo), premix(nodeHi))
}

/** The same, with the node's words premixed once per view (`premix`): the hot loop of placement. */
export function premixedPairHash (prefix: number, kLo: number, kHi: number): number {
  return finish(fold(fold(prefix, kLo), kHi), 16)
}

/** A pair hash as a uniform draw in the open interval (0, 1). */
export function unitDraw (hash: number): number {
  return (hash + 0.5) * TWO_TO_MINUS_32
}

/** Multiplying by 2⁻³² is exact, and cheaper than dividing by 2³². */
const TWO_TO_MINUS_32 = 1 / 4294967296

/**
 * Weighted rendezvous score (the logarithmic method of Schindelhauer and
 * Schomaker): with draws uniform in (0, 1), the node with the highest w / −ln(u)
 * wins with probability w / Σw, and removing or adding a node changes no other
 * node's score. Higher is better.
 */
export function weightedScore (weight: number, hash: number): number {
  return weight / -Math.log(unitDraw(hash))
}
