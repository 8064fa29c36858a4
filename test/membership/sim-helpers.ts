// Helpers for simulation tests: forming a cluster, reading the event log, and
// printing the figures a run produced (one line each, so that a reader of the
// test output sees detection times and suspicion counts next to the verdict).

import type { MemberState } from '../../membership/types.ts'
import type { SimCluster, SimEvent } from '../../testnet/sim/cluster.ts'

/** Grows `count` members, then runs until everyone sees everyone alive; throws, with the seed, if that never happens. */
export function form (cluster: SimCluster, count: number, maxMs = 60_000): { ids: string[], convergedMs: number } {
  const ids = cluster.grow(count, { joinEveryMs: 10 })
  const convergedMs = cluster.runUntil(() => cluster.allAgree(), maxMs)
  if (convergedMs === undefined) {
    throw new Error(`${count} members did not converge within ${maxMs} ms, ${cluster.describe()}: ${cluster.disagreements(5).join('; ')}`)
  }
  return { ids, convergedMs }
}

/** Events recorded from index `from` on (take `cluster.events.length` before a phase). */
export function eventsFrom (cluster: SimCluster, from: number, keep: (e: SimEvent) => boolean = () => true): SimEvent[] {
  const out: SimEvent[] = []
  for (let i = from; i < cluster.events.length; i++) {
    const e = cluster.events[i]!
    if (keep(e)) out.push(e)
  }
  return out
}

/** When each observer first reported `id` in `state`, among the given events. */
export function firstTimes (events: SimEvent[], id: string, state: MemberState): Map<string, number> {
  const times = new Map<string, number>()
  for (const e of events) {
    if (e.event.member.id === id && e.event.member.state === state && !times.has(e.observer)) times.set(e.observer, e.atMs)
  }
  return times
}

/** A new suspicion (not a repeat of one already held). */
export function isNewSuspicion (e: SimEvent): boolean {
  return e.event.member.state === 'suspect' && e.event.previous !== 'suspect'
}

export function report (name: string, figures: Record<string, unknown>): void {
  const text = Object.entries(figures).map(([k, v]) => `${k}=${typeof v === 'number' ? Math.round(v) : String(v)}`).join(' ')
  console.log(`[sim] ${name}: ${text}`)
}
