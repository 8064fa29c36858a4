// How the CLI shows sizes, CPU and ages to people.

// Sizes and CPU read the same in tables as in placement's reasons ("no node has 8 GiB free").
export { bytesText as formatBytes, cpuText as formatCpu } from '../placement/reasons.ts'

export function formatAge (ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.floor((ms % 60_000) / 1000)}s`
  return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`
}
