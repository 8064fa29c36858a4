// Helpers for the end-to-end tests of jobs: task commands that carry a marker,
// the processes that carry it, and views of a job's claims across the testnet.

import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { type Client, connect, type JobView, type ClaimRecord } from '../../cli/client.ts'
import { byInstance } from '../../testnet/cluster-check.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import { waitUntil } from './wait.ts'

/** A marker unique to one test file's run; each job adds its own tag. */
export function marker (file: string): string {
  return `murmur-e2e-${file}-${randomBytes(4).toString('hex')}`
}

/**
 * A job's command and args running `script` in sh, with `mark` as the script's $0:
 * the mark is an argument of the task's process, and nothing else's.
 */
export function sh (script: string, mark: string, ...args: string[]): { command: string, args: string[] } {
  return { command: 'sh', args: ['-c', script, mark, ...args] }
}

/** The PIDs of live processes (zombies excluded) that have `mark` as one of their arguments. */
export function markedPids (mark: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0')
      if (!args.includes(mark)) continue
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${name}/stat`, 'utf8'))) continue
      out.push(Number(name))
    } catch {
      // The process ended while we looked.
    }
  }
  return out
}

/** A claim that holds its instance: claimed, starting, running or restarting in place. */
export function isLive (t: Pick<ClaimRecord, 'state'>): boolean {
  return t.state === 'claimed' || t.state === 'starting' || t.state === 'running' || t.state === 'restarting'
}

export class Net {
  nodes: TestnetNode[]

  constructor (nodes: TestnetNode[]) { this.nodes = nodes }

  client (i: number, timeoutMs?: number): Client {
    return connect(this.nodes[i]!.apiUrl, timeoutMs === undefined ? {} : { timeoutMs })
  }

  peer (i: number): string { return this.nodes[i]!.peerId! }

  /** The testnet index of a node by its peer id (-1 if none). */
  index (peer: string | null): number { return this.nodes.findIndex((n) => n.peerId === peer) }

  /** A job as node `i` sees it, once the job has reached that node. */
  async job (i: number, ref: string, done: (v: JobView) => boolean, what: string, timeoutMs = 30_000): Promise<JobView> {
    return await waitUntil(`${what} (as node ${i} sees job ${ref})`, async () => await this.client(i).job(ref), done, timeoutMs, 100)
  }

  /** Every claim of every instance of a job, as node `i` sees them. */
  async claims (i: number, ref: string): Promise<ClaimRecord[]> {
    return (await this.client(i).jobHistory(ref)).tasks
  }
}


/** Whether a service's every instance runs, with exactly one live claim by a node in `live`, and no live claim by another node in `live`. */
export function settled (view: JobView, claims: readonly ClaimRecord[], live: ReadonlySet<string>, count: number): boolean {
  if (view.instances.length !== count) return false
  if (!view.instances.every((i) => i.state === 'running' && i.node !== null && live.has(i.node))) return false
  const grouped = byInstance(claims)
  return view.instances.every((i) => (grouped.get(i.id) ?? []).filter((c) => isLive(c) && live.has(c.node)).length === 1)
}

export { byInstance }
