// A min-heap of things that happen at a virtual time. Ties keep insertion order,
// so two packets due at the same millisecond are handled the same way every run.

interface Entry<T> {
  atMs: number
  order: number
  value: T
}

export class TimeQueue<T> {
  private readonly heap: Entry<T>[] = []
  private order = 0

  get size (): number {
    return this.heap.length
  }

  push (atMs: number, value: T): void {
    this.heap.push({ atMs, order: this.order++, value })
    this.up(this.heap.length - 1)
  }

  /** When the earliest entry is due, or undefined when empty. */
  peekMs (): number | undefined {
    return this.heap[0]?.atMs
  }

  /** Removes and returns the earliest entry if it is due at or before `nowMs`. */
  popDue (nowMs: number): { atMs: number, value: T } | undefined {
    const top = this.heap[0]
    if (top === undefined || top.atMs > nowMs) return undefined
    const last = this.heap.pop()!
    if (this.heap.length > 0) {
      this.heap[0] = last
      this.down(0)
    }
    return { atMs: top.atMs, value: top.value }
  }

  private before (i: number, j: number): boolean {
    const a = this.heap[i]!
    const b = this.heap[j]!
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order)
  }

  private swap (i: number, j: number): void {
    const t = this.heap[i]!
    this.heap[i] = this.heap[j]!
    this.heap[j] = t
  }

  private up (i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(i, parent)) return
      this.swap(i, parent)
      i = parent
    }
  }

  private down (i: number): void {
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let best = i
      if (left < this.heap.length && this.before(left, best)) best = left
      if (right < this.heap.length && this.before(right, best)) best = right
      if (best === i) return
      this.swap(i, best)
      i = best
    }
  }
}
