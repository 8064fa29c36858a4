// A small seeded PRNG for the simulator (sfc32, seeded through splitmix32).
//
// Every stream is named by a key: the root key is the seed, and `fork(label)`
// derives a child from the parent's key and the label, not from how far the
// parent has been drawn. So a node's stream stays the same when another node is
// added, or when the test draws one more number somewhere else: a failure found
// with one seed replays with that seed.

export class Rng {
  readonly key: string
  private a: number
  private b: number
  private c: number
  private d: number

  constructor (seed: number | string) {
    this.key = String(seed)
    let h = hashString(this.key)
    const splitmix = (): number => {
      h = (h + 0x9e3779b9) | 0
      let z = h
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad)
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97)
      return (z ^ (z >>> 15)) >>> 0
    }
    this.a = splitmix()
    this.b = splitmix()
    this.c = splitmix()
    this.d = splitmix()
    // sfc32 mixes poorly in its first outputs.
    for (let i = 0; i < 12; i++) this.uint32()
  }

  /** A child stream named by `label`, independent of how much this one was used. */
  fork (label: string): Rng {
    return new Rng(`${this.key}/${label}`)
  }

  uint32 (): number {
    const t0 = (this.a + this.b) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.d = (this.d + 1) | 0
    const t = (t0 + this.d) | 0
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** Uniform in [0, 1). */
  next (): number {
    return this.uint32() / 4_294_967_296
  }

  /** Uniform integer in [0, n). */
  int (n: number): number {
    return Math.floor(this.next() * n)
  }

  /** Uniform integer in [min, max], both included. */
  between (min: number, max: number): number {
    return min + this.int(max - min + 1)
  }

  /** True with probability p. */
  chance (p: number): boolean {
    return p > 0 && this.next() < p
  }

  pick<T> (items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list')
    return items[this.int(items.length)]!
  }

  /** A copy of the items in a uniformly random order (Fisher–Yates). */
  shuffled<T> (items: readonly T[]): T[] {
    const out = [...items]
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const x = out[i]!
      out[i] = out[j]!
      out[j] = x
    }
    return out
  }
}

/** FNV-1a over UTF-16 code units: only needs to spread keys, not resist attack. */
function hashString (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/**
 * The seed of a simulation: `SEED` from the environment to replay a failure,
 * otherwise the test's own default, so that `npm test` is the same every run.
 */
export function seedFromEnv (fallback: number): number {
  const raw = process.env['SEED']
  if (raw === undefined || raw === '') return fallback
  const seed = Number(raw)
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`SEED must be a non-negative integer, got '${raw}'`)
  return seed
}
