// A view made ready for placing: nodes in a canonical order (by id, so that any
// ordering of the input gives the same answers), their keys hashed once, free
// resources and per-job counts kept up to date as tasks are allocated.

import { idKey, premix } from './hash.ts'
import { firstFailed, labelValue, type Constraint, type Spread } from './constraints.ts'
import type { SkipReason } from './reasons.ts'
import { PlacementError, type Allocation, type NodeView, type TaskDemand, type View } from './types.ts'

const NO_CONSTRAINTS: readonly Constraint[] = Object.freeze([])

/** For one spread of one job: instances per label value, over the values that count. */
export interface SpreadCounts {
  readonly spread: Spread
  readonly counts: Map<string, number>
  readonly min: number
}

export class Pool {
  readonly size: number
  readonly ids: readonly string[]
  /** The nodes' id keys, premixed for the pair hash (`premixedPairHash`). */
  readonly keyLo: Int32Array
  readonly keyHi: Int32Array
  readonly alive: Uint8Array
  readonly cpuCap: Float64Array
  readonly memCap: Float64Array
  readonly cpuFree: Float64Array
  readonly memFree: Float64Array
  readonly labels: ReadonlyArray<Readonly<Record<string, string>>>
  /** Allocations whose node is not in the view: they hold nothing. */
  orphans = 0

  private readonly index = new Map<string, number>()
  private readonly held = new Map<string, Array<{ node: number, task: TaskDemand }>>()
  /** job → node index → instances of the job allocated there. */
  private readonly jobCounts = new Map<string, Map<number, number>>()
  private readonly masks = new WeakMap<readonly Constraint[], Uint8Array>()
  private readonly interned = new Map<string, { ids: Int32Array, values: string[] }>()
  private readonly aliveMasks = new WeakMap<readonly Constraint[], Uint8Array>()
  private readonly domains = new WeakMap<readonly Constraint[], Map<string, Set<string>>>()

  constructor (view: View) {
    const nodes = [...view.nodes].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const n = nodes.length
    this.size = n
    this.ids = nodes.map((node) => node.id)
    this.keyLo = new Int32Array(n)
    this.keyHi = new Int32Array(n)
    this.alive = new Uint8Array(n)
    this.cpuCap = new Float64Array(n)
    this.memCap = new Float64Array(n)
    this.cpuFree = new Float64Array(n)
    this.memFree = new Float64Array(n)
    this.labels = nodes.map((node) => node.labels)
    nodes.forEach((node, i) => {
      checkNode(node)
      if (this.index.has(node.id)) throw new PlacementError(`node ${node.id} appears twice in the view`)
      this.index.set(node.id, i)
      const key = idKey(node.id)
      this.keyLo[i] = premix(key.lo)
      this.keyHi[i] = premix(key.hi)
      this.alive[i] = node.alive ? 1 : 0
      this.cpuCap[i] = this.cpuFree[i] = node.cpuMillis
      this.memCap[i] = this.memFree[i] = node.memoryBytes
    })
    for (const a of view.allocations) this.allocate(a)
  }

  indexOf (node: string): number | undefined {
    return this.index.get(node)
  }

  /** Hold a task's demand on a node. A node may end up overcommitted (claims made on differing views): its free goes negative and nothing more fits there. */
  allocate (a: Allocation): boolean {
    const i = this.index.get(a.node)
    if (i === undefined) { this.orphans++; return false }
    checkDemand(a.task)
    this.cpuFree[i] = this.cpuFree[i]! - a.task.cpuMillis
    this.memFree[i] = this.memFree[i]! - a.task.memoryBytes
    let list = this.held.get(a.task.id)
    if (list === undefined) this.held.set(a.task.id, list = [])
    list.push({ node: i, task: a.task })
    this.count(a.task.job, i, 1)
    return true
  }

  /** Give back what a task holds, on one node or on all; returns the nodes it was on. */
  release (task: string, node?: string): string[] {
    const list = this.held.get(task)
    if (list === undefined) return []
    const freed: string[] = []
    for (let k = list.length - 1; k >= 0; k--) {
      const h = list[k]!
      if (node !== undefined && this.ids[h.node] !== node) continue
      this.cpuFree[h.node] = this.cpuFree[h.node]! + h.task.cpuMillis
      this.memFree[h.node] = this.memFree[h.node]! + h.task.memoryBytes
      this.count(h.task.job, h.node, -1)
      list.splice(k, 1)
      freed.push(this.ids[h.node]!)
    }
    if (list.length === 0) this.held.delete(task)
    return freed
  }

  /** The nodes a task is allocated on. */
  holders (task: string): string[] {
    return (this.held.get(task) ?? []).map((h) => this.ids[h.node]!)
  }

  allocations (): Allocation[] {
    const out: Allocation[] = []
    for (const list of this.held.values()) for (const h of list) out.push({ task: h.task, node: this.ids[h.node]! })
    return out
  }

  jobCount (job: string, i: number): number {
    return this.jobCounts.get(job)?.get(i) ?? 0
  }

  /** 1 where a node's labels pass the constraints; computed once per constraint list (jobs share theirs). */
  mask (constraints: readonly Constraint[] = NO_CONSTRAINTS): Uint8Array {
    let mask = this.masks.get(constraints)
    if (mask === undefined) {
      mask = new Uint8Array(this.size)
      for (let i = 0; i < this.size; i++) mask[i] = firstFailed(this.labels[i]!, constraints) === undefined ? 1 : 0
      this.masks.set(constraints, mask)
    }
    return mask
  }

  /** 1 where a node is alive and its labels pass the constraints: the fast path's first filter. */
  candidates (constraints: readonly Constraint[] = NO_CONSTRAINTS): Uint8Array {
    let mask = this.aliveMasks.get(constraints)
    if (mask === undefined) {
      mask = this.mask(constraints).map((pass, i) => pass & this.alive[i]!)
      this.aliveMasks.set(constraints, mask)
    }
    return mask
  }

  /** Per spread of the task's job: its instances per label value and the least count among the values that count. */
  spreadCounts (task: TaskDemand): SpreadCounts[] {
    const spreads = task.spread ?? []
    if (spreads.length === 0) return []
    const constraints = task.constraints ?? NO_CONSTRAINTS
    const perNode = this.jobCounts.get(task.job)
    return spreads.map((spread) => {
      const counts = new Map<string, number>()
      for (const value of this.domain(constraints, spread.label)) counts.set(value, 0)
      if (perNode !== undefined) {
        for (const [i, count] of perNode) {
          const value = labelValue(this.labels[i]!, spread.label)
          if (this.alive[i] === 1 && value !== undefined && counts.has(value)) counts.set(value, counts.get(value)! + count)
        }
      }
      let min = Infinity
      for (const count of counts.values()) min = Math.min(min, count)
      return { spread, counts, min: min === Infinity ? 0 : min }
    })
  }

  /**
   * 1 where the job's per-node limit or one of its spreads rules node i out:
   * the fast path's form of those two checks of `check`, computed once per
   * decision instead of once per node; undefined when the task has neither.
   */
  limits (task: TaskDemand, spreads: readonly SpreadCounts[]): Uint8Array | undefined {
    if (task.perNodeMax === undefined && spreads.length === 0) return undefined
    const blocked = new Uint8Array(this.size)
    const perNode = this.jobCounts.get(task.job)
    if (task.perNodeMax !== undefined && perNode !== undefined) {
      for (const [i, count] of perNode) if (count >= task.perNodeMax) blocked[i] = 1
    }
    for (const s of spreads) {
      const { ids, values } = this.valueIds(s.spread.label)
      const allowed = values.map((v) => (s.counts.get(v) ?? 0) + 1 - s.min <= s.spread.maxSkew)
      for (let i = 0; i < this.size; i++) {
        const v = ids[i]!
        if (v < 0 || !allowed[v]) blocked[i] = 1
      }
    }
    return blocked
  }

  /**
   * Why node i cannot take the task, or undefined if it can: not alive,
   * constraints, per-node limit, spread, then resources. The fast path of
   * `place` checks the same things inline.
   */
  check (i: number, task: TaskDemand, spreads: readonly SpreadCounts[]): SkipReason | undefined {
    if (this.alive[i] !== 1) return { code: 'not-alive' }
    const labels = this.labels[i]!
    const failed = firstFailed(labels, task.constraints ?? NO_CONSTRAINTS)
    if (failed !== undefined) return { code: 'constraint', constraint: failed, actual: labelValue(labels, failed.label) }
    if (task.perNodeMax !== undefined) {
      const count = this.jobCount(task.job, i)
      if (count >= task.perNodeMax) return { code: 'per-node', max: task.perNodeMax, count }
    }
    for (const s of spreads) {
      const value = labelValue(labels, s.spread.label)
      const count = value === undefined ? 0 : s.counts.get(value) ?? 0
      if (value === undefined || count + 1 - s.min > s.spread.maxSkew) {
        return { code: 'spread', label: s.spread.label, value, count, min: s.min, maxSkew: s.spread.maxSkew }
      }
    }
    const cpuShort = this.cpuFree[i]! < task.cpuMillis
    const memShort = this.memFree[i]! < task.memoryBytes
    if (cpuShort || memShort) {
      return {
        code: 'resources',
        ...(cpuShort ? { cpu: { need: task.cpuMillis, free: this.cpuFree[i]! } } : {}),
        ...(memShort ? { memory: { need: task.memoryBytes, free: this.memFree[i]! } } : {}),
      }
    }
    return undefined
  }

  private count (job: string, i: number, delta: number): void {
    let perNode = this.jobCounts.get(job)
    if (perNode === undefined) this.jobCounts.set(job, perNode = new Map())
    const next = (perNode.get(i) ?? 0) + delta
    if (next === 0) perNode.delete(i)
    else perNode.set(i, next)
    if (perNode.size === 0) this.jobCounts.delete(job)
  }

  /** Each node's value of a label as an index into `values` (−1: no such label), computed once per label. */
  private valueIds (label: string): { ids: Int32Array, values: string[] } {
    let interned = this.interned.get(label)
    if (interned === undefined) {
      const ids = new Int32Array(this.size)
      const values: string[] = []
      const index = new Map<string, number>()
      for (let i = 0; i < this.size; i++) {
        const value = labelValue(this.labels[i]!, label)
        if (value === undefined) { ids[i] = -1; continue }
        let id = index.get(value)
        if (id === undefined) { id = values.push(value) - 1; index.set(value, id) }
        ids[i] = id
      }
      this.interned.set(label, interned = { ids, values })
    }
    return interned
  }

  /** The values of a label among alive nodes that pass the constraints: the domains a spread balances over. */
  private domain (constraints: readonly Constraint[], label: string): Set<string> {
    let byLabel = this.domains.get(constraints)
    if (byLabel === undefined) this.domains.set(constraints, byLabel = new Map())
    let values = byLabel.get(label)
    if (values === undefined) {
      values = new Set()
      const mask = this.mask(constraints)
      for (let i = 0; i < this.size; i++) {
        const value = labelValue(this.labels[i]!, label)
        if (this.alive[i] === 1 && mask[i] === 1 && value !== undefined) values.add(value)
      }
      byLabel.set(label, values)
    }
    return values
  }
}

/**
 * Millicores and bytes are whole numbers: sums of them are then exact, so a
 * node's free resources do not depend on the order its allocations are listed in.
 */
function amount (value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0
}

function checkNode (node: NodeView): void {
  if (!amount(node.cpuMillis) || !amount(node.memoryBytes)) {
    throw new PlacementError(`node ${node.id} has an invalid capacity (${node.cpuMillis} millicores, ${node.memoryBytes} bytes)`)
  }
}

export function checkDemand (task: TaskDemand): void {
  if (!amount(task.cpuMillis) || !amount(task.memoryBytes)) {
    throw new PlacementError(`task ${task.id} has an invalid demand (${task.cpuMillis} millicores, ${task.memoryBytes} bytes)`)
  }
  if (task.perNodeMax !== undefined && !(Number.isInteger(task.perNodeMax) && task.perNodeMax >= 1)) {
    throw new PlacementError(`task ${task.id} has an invalid perNodeMax (${task.perNodeMax})`)
  }
}
