// The queue of membership updates waiting to be gossiped. Every update is sent a
// limited number of times (retransmitMult × log n, as in memberlist's
// TransmitLimitedQueue); a newer update about a member replaces the older one,
// and the least-sent updates ride first.

import type { Update } from './types.ts'

interface Entry {
  update: Update
  transmits: number
  /** Insertion order, so that among equally-sent updates the newest goes first. */
  order: number
}

export class BroadcastQueue {
  private readonly entries = new Map<string, Entry>()
  private counter = 0

  get size (): number {
    return this.entries.size
  }

  /** Queues an update, replacing any queued update about the same member. */
  enqueue (update: Update): void {
    this.entries.set(update.id, { update, transmits: 0, order: this.counter++ })
  }

  /** Takes up to `max` updates to send now; each is dropped after `limit` transmits. */
  take (max: number, limit: number): Update[] {
    if (this.entries.size === 0) return []
    const chosen = [...this.entries.values()]
      .sort((a, b) => a.transmits - b.transmits || b.order - a.order)
      .slice(0, max)
    for (const entry of chosen) {
      entry.transmits++
      if (entry.transmits >= limit) this.entries.delete(entry.update.id)
    }
    return chosen.map((entry) => entry.update)
  }

  /** The queued update about a member, if any. */
  get (id: string): Update | undefined {
    return this.entries.get(id)?.update
  }

  clear (): void {
    this.entries.clear()
  }
}
