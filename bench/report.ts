// What every benchmark prints: progress on stderr, text for people on stdout
// (unless --json), and a summary of figures, each next to its target with "met"
// or "missed" — never a failure on time.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { type HierarchyPlan, parseKeyed } from '../node/executor/cgroups.ts'

export interface Figure { part: string, what: string, measured: string, target: string, verdict: string }

export class Report {
  readonly figures: Figure[] = []
  /** The raw results by part, for --json. */
  readonly results: Record<string, unknown> = {}
  json = false

  /** One line of the summary; `ok` undefined for a figure without a target. */
  figure (part: string, what: string, measured: string, target = '', ok?: boolean): void {
    this.figures.push({ part, what, measured, target, verdict: ok === undefined ? '' : ok ? 'met' : 'missed' })
  }

  print (text: string): void {
    if (!this.json) process.stdout.write(text)
  }

  /** The summary's rows, for table(). */
  rows (): string[][] {
    return this.figures.map((f) => [f.part, f.what, f.measured, f.target, f.verdict])
  }
}

export function log (message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

/** The flags every benchmark takes; spread into parseArgs' options beside its own. */
export const COMMON_OPTIONS = {
  only: { type: 'string' },
  quick: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
} as const

/** The parts `--only` names (default: all), and those it names that do not exist. */
export function selectParts<P extends string> (only: string | undefined, parts: readonly P[]): { selected: Set<P>, unknown: string[] } {
  const named = only === undefined ? [...parts] : only.split(',').map((s) => s.trim())
  return { selected: new Set(named.filter((p): p is P => (parts as readonly string[]).includes(p))), unknown: named.filter((p) => !(parts as readonly string[]).includes(p)) }
}

/** The nearest-rank percentile (`p` from 0 to 1); NaN for no values. */
export function percentile (xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!
}

/** Busy and total jiffies of all cores since boot, from /proc/stat: two readings give the machine's busy share between them. */
export function machineTimes (): { busy: number, total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  return { busy: total - idle, total }
}

/** CPU time this process has used, in ms. */
export function ownCpuMs (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

/**
 * CPU time, in ms, of everything that ever ran below a node's cgroup root (`murmur-<peer id>`): the root's
 * own accounting keeps what removed groups used. NaN without cgroups, or when the root cannot be read.
 */
export function rootCpuMs (plan: HierarchyPlan, rootName: string): number {
  try {
    if (plan.version === 1) {
      const dir = plan.dirs.cpuacct
      return dir === undefined ? NaN : Number(readFileSync(join(dir, rootName, 'cpuacct.usage'), 'utf8')) / 1e6
    }
    if (plan.version === 2) return (parseKeyed(readFileSync(join(plan.dir, rootName, 'cpu.stat'), 'utf8')).get('usage_usec') ?? NaN) / 1000
  } catch {}
  return NaN
}
