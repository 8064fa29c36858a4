// Sizes, durations and CPU amounts as people write them: 256M, 1.5G, 500ms, 30s, 0.5, 500m.

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, ki: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mi: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gi: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, ti: 1024 ** 4, tib: 1024 ** 4,
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Bytes from "256M", "1.5G", "1024"; binary units (1K = 1024). Throws a one-line error. */
export function parseSize (text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = SIZE_UNITS[match?.[2]?.toLowerCase() ?? '']
  if (match === null || unit === undefined) {
    throw new Error(`'${text}' is not a size: write a number with an optional unit, e.g. 512M, 1.5G, 1048576`)
  }
  return Math.floor(Number(match[1]) * unit)
}

/** Milliseconds from "500ms", "30s", "2m", "1h"; a bare number is milliseconds. */
export function parseDuration (text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text)
  if (match === null) throw new Error(`'${text}' is not a duration: write e.g. 500ms, 30s, 5m, 1h`)
  return Math.round(Number(match[1]) * DURATION_UNITS[match[2] ?? 'ms']!)
}

/** Millicores from cores ("0.5", "2") or millicores ("500m"). */
export function parseCpu (text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$/.exec(text)
  if (match === null) throw new Error(`'${text}' is not a CPU amount: write cores (0.5, 2) or millicores (500m)`)
  const value = Number(match[1])
  return match[2] === 'm' ? Math.round(value) : Math.round(value * 1000)
}
