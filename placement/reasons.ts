// Why a node cannot take a task, as data (for programs) and as words (for people).

import { constraintText, type Constraint } from './constraints.ts'

export type SkipReason =
  | { readonly code: 'not-live' }
  | { readonly code: 'constraint', readonly constraint: Constraint, readonly actual: string | undefined }
  | { readonly code: 'avoided' }
  | { readonly code: 'per-node', readonly max: number, readonly count: number }
  | { readonly code: 'spread', readonly label: string, readonly value: string | undefined, readonly count: number, readonly min: number, readonly maxSkew: number }
  | { readonly code: 'resources', readonly cpu?: Shortfall, readonly memory?: Shortfall }

/** A resource the task needs more of than the node has free (capacity minus claims). */
export interface Shortfall { readonly need: number, readonly free: number }

export type SkipCode = SkipReason['code']

export function bytesText (bytes: number): string {
  if (bytes < 0) return `-${bytesText(-bytes)}`
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let value = bytes
  let i = 0
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++ }
  const text = value >= 10 || i === 0 ? String(Math.round(value)) : value.toFixed(1).replace(/\.0$/, '')
  // 1,048,575 bytes would round to "1024 KiB": say "1 MiB" instead.
  return text === '1024' && i < units.length - 1 ? `1 ${units[i + 1]}` : `${text} ${units[i]}`
}

/** Cores, to the millicore: 0.5, 2, 1.999. */
export function cpuText (millis: number): string {
  return millis % 1000 === 0 ? String(millis / 1000) : (millis / 1000).toFixed(3).replace(/\.?0+$/, '')
}

/**
 * A need and what is free, in words, never reading alike when they differ:
 * where rounding would show "needs 2, free 2", both are given exactly.
 */
export function needAndFree (need: number, free: number, resource: 'cpu' | 'memory'): [string, string] {
  const text = resource === 'cpu' ? cpuText : bytesText
  const [n, f] = [text(need), text(free)]
  if (n !== f || need === free) return [n, f]
  if (resource === 'cpu') return [`${need}m`, `${free}m`]
  const [nm, fm] = [Math.round(need / 2 ** 20), Math.round(free / 2 ** 20)]
  return nm !== fm ? [`${nm} MiB`, `${fm} MiB`] : [`${need} bytes`, `${free} bytes`]
}

export function reasonText (r: SkipReason): string {
  switch (r.code) {
    case 'not-live': return 'dead or left'
    case 'constraint':
      return `fails ${constraintText(r.constraint)} (${r.actual === undefined ? `no label ${r.constraint.label}` : `has ${r.constraint.label}=${r.actual}`})`
    case 'avoided': return 'avoided: the task is not to run here again (it failed here)'
    case 'per-node': return `at the per-node limit: runs ${r.count} of the job's instances (at most ${r.max})`
    case 'spread':
      return r.value === undefined
        ? `has no label ${r.label}, which the job spreads over`
        : `${r.label}=${r.value} already holds ${r.count} of the job's instances and the least-used ${r.label} ${r.min} (max skew ${r.maxSkew})`
    case 'resources': {
      const parts: string[] = []
      if (r.cpu !== undefined) {
        const [need, free] = needAndFree(r.cpu.need, r.cpu.free, 'cpu')
        parts.push(`CPU: needs ${need}, free ${free}`)
      }
      if (r.memory !== undefined) {
        const [need, free] = needAndFree(r.memory.need, r.memory.free, 'memory')
        parts.push(`memory: needs ${need}, free ${free}`)
      }
      return `not enough ${parts.join('; ')}`
    }
  }
}
