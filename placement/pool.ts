// A view made ready for placing: nodes in a canonical order (by id, so that any
// ordering of the input gives the same answers), their keys hashed once, free
// resources and per-job counts kept up to date as tasks are allocated.

import { idKey, premix } from './hash.ts'
import type { z } from 'zod'
import { constraintsSchema, firstFailed, labelValue, spreadsSchema, type Constraint, type Spread } from './constraints.ts'
import type { SkipReason } from './reasons.ts'
import { PlacementError, type Allocation, type NodeView, type InstanceDemand, type View } from './types.ts'

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
  readonly live: Uint8Array
  readonly cpuCap: Float64Array
  readonly memCap: Float64Array
  readonly cpuFree: Float64Array
  readonly memFree: Float64Array
  readonly labels: ReadonlyArray<Readonly<Record<string, string>>>
  /** Allocations whose node is not in the view: they hold nothing. */
  orphans = 0

  private readonly index = new Map<string, number>()
  private readonly held = new Map<string, Array<{ node: number, task: InstanceDemand }>>()
  /** job → node index → instances of the job allocated there. */
  private readonly jobCounts = new Map<string, Map<number, number>>()
  /**
   * Caches keyed by the constraint list's JSON, not its identity: lists read
   * afresh from the shared state each tick still hit, and a list changed in
   * place cannot leave a stale entry behind.
   */
  private readonly masks = new Map<string, Uint8Array>()
  private readonly liveMasks = new Map<string, Uint8Array>()
  private readonly domains = new Map<string, Map<string, Set<string>>>()
  private readonly interned = new Map<string, { ids: Int32Array, values: string[] }>()
  private readonly validSpreads = new Set<string>()

  constructor (view: View) {
    const nodes = [...view.nodes].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const n = nodes.length
    this.size = n
    this.ids = nodes.map((node) => node.id)
    this.keyLo = new Int32Array(n)
    this.keyHi = new Int32Array(n)
    this.live = new Uint8Array(n)
    this.cpuCap = new Float64Array(n)
    this.memCap = new Float64Array(n)
    this.cpuFree = new Float64Array(n)
    this.memFree = new Float64Array(n)
    // Copied (own keys only, `__proto__` included) and frozen: the caches stay true to them.
    this.labels = nodes.map((node) => Object.freeze({ ...node.labels }))
    nodes.forEach((node, i) => {
      checkNode(node)
      if (this.index.has(node.id)) throw new PlacementError(`node ${node.id} appears twice in the view`)
      this.index.set(node.id, i)
      const key = idKey(node.id)
      this.keyLo[i] = premix(key.lo)
      this.keyHi[i] = premix(key.hi)
      this.live[i] = node.live ? 1 : 0
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
    checkDemand(a.task)
    const i = this.index.get(a.node)
    if (i === undefined) { this.orphans++; return false }
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
    const key = JSON.stringify(constraints)
    let mask = this.masks.get(key)
    if (mask === undefined) {
      checkList(constraintsSchema, constraints, 'constraints')
      mask = new Uint8Array(this.size)
      for (let i = 0; i < this.size; i++) mask[i] = firstFailed(this.labels[i]!, constraints) === undefined ? 1 : 0
      this.masks.set(key, mask)
    }
    return mask
  }

  /** 1 where a node is live and its labels pass the constraints: the fast path's first filter. */
  candidates (constraints: readonly Constraint[] = NO_CONSTRAINTS): Uint8Array {
    const key = JSON.stringify(constraints)
    let mask = this.liveMasks.get(key)
    if (mask === undefined) {
      mask = this.mask(constraints).map((pass, i) => pass & this.live[i]!)
      this.liveMasks.set(key, mask)
    }
    return mask
  }

  /** Per spread of the task's job: its instances per label value and the least count among the values that count. */
  spreadCounts (task: InstanceDemand): SpreadCounts[] {
    const spreads = task.spread ?? []
    if (spreads.length === 0) return []
    const key = JSON.stringify(spreads)
    if (!this.validSpreads.has(key)) {
      checkList(spreadsSchema, spreads, 'spread')
      this.validSpreads.add(key)
    }
    const constraints = task.constraints ?? NO_CONSTRAINTS
    const perNode = this.jobCounts.get(task.job)
    return spreads.map((spread) => {
      const counts = new Map<string, number>()
      for (const value of this.domain(constraints, spread.label)) counts.set(value, 0)
      if (perNode !== undefined) {
        for (const [i, count] of perNode) {
          const value = labelValue(this.labels[i]!, spread.label)
          if (this.live[i] === 1 && value !== undefined && counts.has(value)) counts.set(value, counts.get(value)! + count)
        }
      }
      let min = Infinity
      for (const count of counts.values()) min = Math.min(min, count)
      return { spread, counts, min: min === Infinity ? 0 : min }
    })
  }

  /**
   * 1 where the task avoids node i, or the job's per-node limit or one of its spreads rules it out:
   * the fast path's form of those two checks of `check`, computed once per
   * decision instead of once per node; undefined when the task has neither.
   */
  limits (task: InstanceDemand, spreads: readonly SpreadCounts[]): Uint8Array | undefined {
    if (task.perNodeMax === undefined && spreads.length === 0 && (task.avoid ?? []).length === 0) return undefined
    const blocked = new Uint8Array(this.size)
    for (const node of task.avoid ?? []) {
      const i = this.index.get(node)
      if (i !== undefined) blocked[i] = 1
    }
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
   * Why node i cannot take the task, or undefined if it can: not live,
   * constraints, avoided, per-node limit, spread, then resources. The fast path of
   * `place` checks the same things inline.
   */
  check (i: number, task: InstanceDemand, spreads: readonly SpreadCounts[]): SkipReason | undefined {
    if (this.live[i] !== 1) return { code: 'not-live' }
    const labels = this.labels[i]!
    const failed = firstFailed(labels, task.constraints ?? NO_CONSTRAINTS)
    if (failed !== undefined) return { code: 'constraint', constraint: failed, actual: labelValue(labels, failed.label) }
    if (task.avoid !== undefined && task.avoid.includes(this.ids[i]!)) return { code: 'avoided' }
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

  /** The values of a label among live nodes that pass the constraints: the domains a spread balances over. */
  private domain (constraints: readonly Constraint[], label: string): Set<string> {
    const key = JSON.stringify(constraints)
    let byLabel = this.domains.get(key)
    if (byLabel === undefined) this.domains.set(key, byLabel = new Map())
    let values = byLabel.get(label)
    if (values === undefined) {
      values = new Set()
      const mask = this.mask(constraints)
      for (let i = 0; i < this.size; i++) {
        const value = labelValue(this.labels[i]!, label)
        if (this.live[i] === 1 && mask[i] === 1 && value !== undefined) values.add(value)
      }
      byLabel.set(label, values)
    }
    return values
  }
}

/**
 * Millicores and bytes are whole numbers up to 2⁵⁰ (a PiB): sums of them are
 * then exact, so a node's free resources do not depend on the order its
 * allocations are listed in.
 */
export const AMOUNT_MAX = 2 ** 50

function amount (value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0 && value <= AMOUNT_MAX
}

/** A constraint or spread list that its schema refuses: checked once per distinct list, where it is first used. */
function checkList (schema: z.ZodType, list: unknown, field: string): void {
  const parsed = schema.safeParse(list)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new PlacementError(`${field} ${JSON.stringify(list)} is invalid: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim())
  }
}

/** Ids hash as UTF-8; a lone surrogate would encode like U+FFFD and collide with it. */
function wellFormed (id: unknown): boolean {
  return typeof id === 'string' && id.length > 0 && id.isWellFormed()
}

function checkNode (node: NodeView): void {
  if (!wellFormed(node.id)) throw new PlacementError(`node id ${JSON.stringify(node.id)} is not a well-formed non-empty string`)
  if (!amount(node.cpuMillis) || !amount(node.memoryBytes)) {
    throw new PlacementError(`node ${node.id} has an invalid capacity (${node.cpuMillis} millicores, ${node.memoryBytes} bytes)`)
  }
}

export function checkDemand (task: InstanceDemand): void {
  if (!wellFormed(task.id)) throw new PlacementError(`task id ${JSON.stringify(task.id)} is not a well-formed non-empty string`)
  if (!amount(task.cpuMillis) || !amount(task.memoryBytes)) {
    throw new PlacementError(`task ${task.id} has an invalid demand (${task.cpuMillis} millicores, ${task.memoryBytes} bytes)`)
  }
  if (task.perNodeMax !== undefined && !(Number.isInteger(task.perNodeMax) && task.perNodeMax >= 1)) {
    throw new PlacementError(`task ${task.id} has an invalid perNodeMax (${task.perNodeMax})`)
  }
  for (const [field, value] of [['constraints', task.constraints], ['spread', task.spread], ['avoid', task.avoid]] as const) {
    if (value !== undefined && !Array.isArray(value)) throw new PlacementError(`task ${task.id}: ${field} must be a list or absent, not ${JSON.stringify(value)}`)
  }
}
