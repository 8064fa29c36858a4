// Why a node cannot take a task, as data (for programs) and as words (for people).

import { constraintText, type Constraint } from './constraints.ts'

export type SkipReason =
  | { readonly code: 'not-alive' }
  | { readonly code: 'constraint', readonly constraint: Constraint, readonly actual: string | undefined }
  | { readonly code: 'per-node', readonly max: number, readonly count: number }
  | { readonly code: 'spread', readonly label: string, readonly value: string | undefined, readonly count: number, readonly min: number, readonly maxSkew: number }
  | { readonly code: 'resources', readonly cpu?: Shortfall, readonly memory?: Shortfall }

/** A resource the task needs more of than the node has free (capacity minus claims). */
export interface Shortfall { readonly need: number, readonly free: number }

export type SkipCode = SkipReason['code']

export function bytesText (bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let i = 0
  while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i++ }
  return `${Math.abs(value) >= 10 || i === 0 ? Math.round(value) : value.toFixed(1).replace(/\.0$/, '')} ${units[i]}`
}

export function cpuText (millis: number): string {
  return millis % 1000 === 0 ? String(millis / 1000) : (millis / 1000).toFixed(2).replace(/\.?0+$/, '')
}

export function reasonText (r: SkipReason): string {
  switch (r.code) {
    case 'not-alive': return 'not alive'
    case 'constraint':
      return `fails ${constraintText(r.constraint)} (${r.actual === undefined ? `no label ${r.constraint.label}` : `has ${r.constraint.label}=${r.actual}`})`
    case 'per-node': return `already runs ${r.count} of the job's instances (at most ${r.max} per node)`
    case 'spread':
      return r.value === undefined
        ? `has no label ${r.label}, which the job spreads over`
        : `${r.label}=${r.value} already holds ${r.count} of the job's instances, the least-used value ${r.min} (max skew ${r.maxSkew})`
    case 'resources': {
      const parts: string[] = []
      if (r.cpu !== undefined) parts.push(`CPU: needs ${cpuText(r.cpu.need)}, free ${cpuText(r.cpu.free)}`)
      if (r.memory !== undefined) parts.push(`memory: needs ${bytesText(r.memory.need)}, free ${bytesText(r.memory.free)}`)
      return `not enough ${parts.join('; ')}`
    }
  }
}
