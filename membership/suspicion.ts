// Lifeguard's suspicion timer: a suspicion starts at the ceiling and shrinks
// towards the floor as independent members confirm it, so that a member that
// many see failing is declared dead quickly, and one that only a single (perhaps
// sick) member blames has the longest time to refute.

export class Suspicion {
  readonly startMs: number
  private readonly minMs: number
  private readonly maxMs: number
  /** Confirmations after which the timeout reaches the floor. */
  private readonly expected: number
  private readonly confirmers = new Set<string>()
  private shiftMs = 0

  constructor (init: { from: string, startMs: number, minMs: number, maxMs: number, expected: number }) {
    this.startMs = init.startMs
    this.minMs = init.minMs
    this.maxMs = Math.max(init.minMs, init.maxMs)
    this.expected = Math.max(0, init.expected)
    // The member that raised the suspicion is not a confirmation of it.
    this.confirmers.add(init.from)
  }

  /** Counts a confirmation from `from`; true when it is a new, independent one. */
  confirm (from: string): boolean {
    if (this.confirmers.has(from)) return false
    this.confirmers.add(from)
    return true
  }

  get confirmations (): number {
    return this.confirmers.size - 1
  }

  /** The current timeout: max − (max − min) · log(C + 1) / log(K + 1), never below min. */
  timeoutMs (): number {
    if (this.expected < 1) return this.minMs
    const c = Math.min(this.confirmations, this.expected)
    const frac = Math.log(c + 1) / Math.log(this.expected + 1)
    return Math.max(this.minMs, Math.floor(this.maxMs - frac * (this.maxMs - this.minMs)))
  }

  /** When the suspicion expires, with the timeout stretched `scale` times (local health). */
  deadlineMs (scale = 1): number {
    return this.startMs + this.shiftMs + this.timeoutMs() * scale
  }

  /** Pushes the deadline back, when this node itself was stalled. */
  postpone (ms: number): void {
    this.shiftMs += ms
  }
}
