// Time as the node's logic sees it: the wall clock, a monotonic clock for
// durations, and timers. A node uses the system's; testnet/sim hands each
// simulated node a virtual one (with its own skew, frozen while the node is
// paused), so the same code runs there deterministically from a seed.

/** An opaque timer handle, to be given back to the clock that made it. */
export type Timer = { readonly __timer: unique symbol }

export interface Clock {
  /** Wall time, milliseconds since the epoch (Date.now). */
  now (): number
  /** Milliseconds from an arbitrary origin that never goes back (performance.now). */
  monotonic (): number
  /** Runs `fn` once after `ms`. `background`: the timer alone does not keep the process alive. */
  setTimeout (fn: () => void, ms: number, background?: boolean): Timer
  clearTimeout (timer: Timer | null): void
  /** Runs `fn` every `ms`; such timers never keep the process alive. */
  setInterval (fn: () => void, ms: number): Timer
  clearInterval (timer: Timer | null): void
  /** Runs `fn` after the current turn and its microtasks, before any timer. */
  setImmediate (fn: () => void): void
}

export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn: () => void, ms: number, background = false): Timer => {
    const t = setTimeout(fn, ms)
    if (background) t.unref()
    return t as unknown as Timer
  },
  clearTimeout: (timer: Timer | null): void => { if (timer !== null) clearTimeout(timer as unknown as NodeJS.Timeout) },
  setInterval: (fn: () => void, ms: number): Timer => {
    const t = setInterval(fn, ms)
    t.unref()
    return t as unknown as Timer
  },
  clearInterval: (timer: Timer | null): void => { if (timer !== null) clearInterval(timer as unknown as NodeJS.Timeout) },
  setImmediate: (fn: () => void): void => { setImmediate(fn) },
})
