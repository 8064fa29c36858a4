// A simulated node's clock: the cluster's virtual time plus the node's skew, and
// timers that go into the cluster's one queue of scheduled actions. The cluster
// decides whether a timer that falls due still runs: not for a crashed life, and
// late (on resume) for a frozen process, as with SIGSTOP.

import type { Clock, Timer } from '../../node/clock.ts'

/** What a node clock needs of the cluster. */
export interface Scheduler {
  readonly nowMs: number
  at (atMs: number, action: () => void): void
}

interface SimTimer { cancelled: boolean }

export class SimClock implements Clock {
  /** Added to the cluster's time by now(): this machine's clock is off by that much. */
  skewMs: number
  private readonly scheduler: Scheduler
  private readonly guard: (fn: () => void) => void
  private readonly epochMs: number

  /** `guard` runs (or drops, or defers) a timer's callback for the life that set it; `epochMs`: the wall time at virtual time 0. */
  constructor (scheduler: Scheduler, guard: (fn: () => void) => void, skewMs = 0, epochMs = 0) {
    this.scheduler = scheduler
    this.guard = guard
    this.skewMs = skewMs
    this.epochMs = epochMs
  }

  now (): number { return Math.round(this.epochMs + this.scheduler.nowMs + this.skewMs) }
  monotonic (): number { return this.scheduler.nowMs }

  setTimeout (fn: () => void, ms: number): Timer {
    const timer: SimTimer = { cancelled: false }
    this.scheduler.at(this.scheduler.nowMs + Math.max(0, ms), () => {
      if (!timer.cancelled) this.guard(() => { if (!timer.cancelled) fn() })
    })
    return timer as unknown as Timer
  }

  clearTimeout (timer: Timer | null): void {
    if (timer !== null) (timer as unknown as SimTimer).cancelled = true
  }

  setInterval (fn: () => void, ms: number): Timer {
    const timer: SimTimer = { cancelled: false }
    const arm = (): void => {
      this.scheduler.at(this.scheduler.nowMs + Math.max(1, ms), () => {
        if (timer.cancelled) return
        this.guard(() => {
          if (timer.cancelled) return
          arm()
          fn()
        })
      })
    }
    arm()
    return timer as unknown as Timer
  }

  clearInterval (timer: Timer | null): void { this.clearTimeout(timer) }

  setImmediate (fn: () => void): void {
    this.scheduler.at(this.scheduler.nowMs, () => { this.guard(fn) })
  }
}
