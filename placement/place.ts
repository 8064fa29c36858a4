// Where one task goes, and a plan for many: weighted rendezvous ranking, the
// feasibility filters, and a best fit among the first few feasible candidates.

import { idKey, premixedPairHash, taskPrefix, unitDraw, weightedScore } from './hash.ts'
import { checkDemand, Pool, type SpreadCounts } from './pool.ts'
import { constraintText } from './constraints.ts'
import { needAndFree, type SkipCode, type SkipReason } from './reasons.ts'
import { PlacementError, type InstanceDemand, type View } from './types.ts'

export interface PlaceOptions {
  /**
   * Best fit among this many first feasible candidates. 1, the default, is pure
   * rendezvous: the first feasible node (README.md, "Placement and the claim
   * rule"); it spreads by capacity and depends least on free resources, which
   * views disagree on while they converge. 2 packs tighter (more of the pool
   * allocated before the first refusal in `npm run bench:placement`), with nodes
   * filled unevenly and about three times as many decisions differing between
   * slightly different views.
   */
  readonly choices?: number
  /**
   * Backup candidates named after the chosen node: who claims if it does not.
   * 2 by default: each one more costs a decision about a tenth more.
   */
  readonly candidatesMax?: number
}

export const PLACE_DEFAULTS = Object.freeze({ choices: 1, candidatesMax: 2 })
const CHOICES_MAX = 8
const CANDIDATES_MAX = 16

export interface Placed {
  readonly task: string
  readonly node: string
  /** The next feasible nodes in preference order, for claims after a timeout. */
  readonly candidates: readonly string[]
}

export interface Pending {
  readonly task: string
  readonly why: PendingSummary
}

export interface PendingSummary {
  readonly message: string
  readonly nodes: number
  readonly skipped: Readonly<Partial<Record<SkipCode, number>>>
  /** Among the nodes that lacked only resources: the most free of each. */
  readonly largestFree?: { readonly cpu: { node: string, millis: number }, readonly memory: { node: string, bytes: number } }
}

export type Decision = ({ readonly placed: true } & Placed) | ({ readonly placed: false } & Pending)

/**
 * A node's weight for a task: how many such tasks it could hold when empty.
 * Rendezvous then gives each node a share of tasks proportional to the
 * capacity that binds for this task's shape. A node's weight depends on that
 * node alone, so a join or a death leaves every other node's score unchanged.
 */
export function weightFor (cpuCap: number, memCap: number, task: InstanceDemand): number {
  const per = perUnit(task)
  return weightPer(cpuCap, memCap, per.cpu, per.mem)
}

/** 1 / demand for each resource, 0 for one the task does not ask for. */
function perUnit (task: InstanceDemand): { cpu: number, mem: number } {
  return { cpu: task.cpuMillis > 0 ? 1 / task.cpuMillis : 0, mem: task.memoryBytes > 0 ? 1 / task.memoryBytes : 0 }
}

/** `weightFor` with the demand as reciprocals computed once per task: the hot loop and `rank` get bit-identical weights. */
function weightPer (cpuCap: number, memCap: number, perCpu: number, perMem: number): number {
  if (perCpu > 0 && perMem > 0) return Math.min(cpuCap * perCpu, memCap * perMem)
  if (perCpu > 0) return cpuCap * perCpu
  if (perMem > 0) return memCap * perMem
  return cpuCap
}

/** One node's standing for one task. */
export interface Ranked {
  readonly i: number
  readonly score: number
  readonly hash: number
  readonly weight: number
}

/** Score order: higher score, then higher raw hash, then the lower node id (the lower index). */
function before (s: number, h: number, i: number, t: number, g: number, j: number): boolean {
  return s > t || (s === t && (h > g || (h === g && i < j)))
}

/** Every node of the pool ranked for the task, best first, whatever its feasibility. */
export function rank (pool: Pool, task: InstanceDemand): Ranked[] {
  const prefix = taskPrefix(idKey(task.id))
  const per = perUnit(task)
  const out: Ranked[] = []
  for (let i = 0; i < pool.size; i++) {
    const hash = premixedPairHash(prefix, pool.keyLo[i]!, pool.keyHi[i]!)
    const weight = weightPer(pool.cpuCap[i]!, pool.memCap[i]!, per.cpu, per.mem)
    out.push({ i, score: weightedScore(weight, hash), hash, weight })
  }
  return out.sort((a, b) => before(a.score, a.hash, a.i, b.score, b.hash, b.i) ? -1 : 1)
}

/** How many nodes of the pool rank above node i for the task. */
export function positionOf (pool: Pool, task: InstanceDemand, i: number): number {
  const prefix = taskPrefix(idKey(task.id))
  const per = perUnit(task)
  const score = (j: number): number => weightedScore(weightPer(pool.cpuCap[j]!, pool.memCap[j]!, per.cpu, per.mem), premixedPairHash(prefix, pool.keyLo[j]!, pool.keyHi[j]!))
  const s = score(i)
  const h = premixedPairHash(prefix, pool.keyLo[i]!, pool.keyHi[i]!)
  let above = 0
  for (let j = 0; j < pool.size; j++) {
    if (j !== i && before(score(j), premixedPairHash(prefix, pool.keyLo[j]!, pool.keyHi[j]!), j, s, h, i)) above++
  }
  return above
}

/** What is left of node i, as a fraction of its capacity, in its emptier resource, once the task is on it. */
function leftAfter (pool: Pool, i: number, task: InstanceDemand): number {
  const cpu = pool.cpuCap[i]! > 0 ? (pool.cpuFree[i]! - task.cpuMillis) / pool.cpuCap[i]! : 0
  const mem = pool.memCap[i]! > 0 ? (pool.memFree[i]! - task.memoryBytes) / pool.memCap[i]! : 0
  return Math.max(cpu, mem)
}

/**
 * Where the task goes in this pool: the feasible nodes in rendezvous order,
 * and of the first `choices` of them the one the task fills best (ties to the
 * better ranked). Does not allocate.
 */
export function place (pool: Pool, task: InstanceDemand, options: PlaceOptions = {}): Decision {
  checkDemand(task)
  return decide(pool, task, options)
}

/** `place` for a task already checked (`plan` checks each task once, up front). */
function decide (pool: Pool, task: InstanceDemand, options: PlaceOptions): Decision {
  const choices = bounded('choices', options.choices ?? PLACE_DEFAULTS.choices, 1, CHOICES_MAX)
  const backups = bounded('candidatesMax', options.candidatesMax ?? PLACE_DEFAULTS.candidatesMax, 0, CANDIDATES_MAX)
  const top = topFeasible(pool, task, choices + backups)
  if (top.length === 0) return { placed: false, task: task.id, why: pendingSummary(pool, task) }
  let chosen = 0
  let best = leftAfter(pool, top[0]!, task)
  for (let k = 1; k < Math.min(choices, top.length); k++) {
    const left = leftAfter(pool, top[k]!, task)
    if (left < best) { best = left; chosen = k }
  }
  const candidates = top.filter((_, k) => k !== chosen).slice(0, backups).map((i) => pool.ids[i]!)
  return { placed: true, task: task.id, node: pool.ids[top[chosen]!]!, candidates }
}

// Scratch space of topFeasible, which runs to completion without yielding: one
// set for the process instead of three typed arrays per decision.
const topScores = new Float64Array(CHOICES_MAX + CANDIDATES_MAX)
const topHashes = new Float64Array(CHOICES_MAX + CANDIDATES_MAX)
const topIndices = new Int32Array(CHOICES_MAX + CANDIDATES_MAX)

/** The indices of the k best-ranked feasible nodes, best first. The hot loop: typed arrays, no allocation per node. */
function topFeasible (pool: Pool, task: InstanceDemand, k: number): number[] {
  const prefix = taskPrefix(idKey(task.id))
  const mask = pool.candidates(task.constraints)
  const limits = pool.limits(task, pool.spreadCounts(task))
  const c = task.cpuMillis
  const m = task.memoryBytes
  const { cpu: perCpu, mem: perMem } = perUnit(task)
  const scores = topScores
  const hashes = topHashes
  const idx = topIndices
  let n = 0
  // The k-th best score so far: a node must beat it to enter (0 until k are in).
  let threshold = 0
  const { cpuFree, memFree, cpuCap, memCap, keyLo, keyHi, size } = pool
  for (let i = 0; i < size; i++) {
    if (mask[i] === 0 || cpuFree[i]! < c || memFree[i]! < m) continue
    if (limits !== undefined && limits[i] === 1) continue
    const hash = premixedPairHash(prefix, keyLo[i]!, keyHi[i]!)
    const weight = weightPer(cpuCap[i]!, memCap[i]!, perCpu, perMem)
    // −ln(u) ≥ 1 − u, so weight / (1 − u) bounds the score from above: most
    // nodes are ruled out here without the logarithm, which costs more than the hash.
    if (weight < threshold * (1 - unitDraw(hash))) continue
    const score = weightedScore(weight, hash)
    if (n === k && !before(score, hash, i, scores[k - 1]!, hashes[k - 1]!, idx[k - 1]!)) continue
    let j = n < k ? n++ : k - 1
    while (j > 0 && before(score, hash, i, scores[j - 1]!, hashes[j - 1]!, idx[j - 1]!)) {
      scores[j] = scores[j - 1]!; hashes[j] = hashes[j - 1]!; idx[j] = idx[j - 1]!
      j--
    }
    scores[j] = score; hashes[j] = hash; idx[j] = i
    if (n === k) threshold = scores[k - 1]!
  }
  return Array.from(idx.subarray(0, n))
}

export interface Plan {
  readonly placements: readonly Placed[]
  readonly pending: readonly Pending[]
}

/**
 * Place many tasks on one view, one after another, each seeing what the ones
 * before it took. The order is canonical (largest dominant share of the pool
 * first, then job, then id) so every node computes the same plan from the same
 * view whatever order it learned of the tasks in. A task already allocated in
 * the view is released first: the caller passes what must be (re)placed.
 */
export function plan (view: View, tasks: readonly InstanceDemand[], options: PlaceOptions = {}): Plan {
  const pool = new Pool(view)
  const ids = new Set<string>()
  for (const t of tasks) {
    if (ids.has(t.id)) throw new PlacementError(`task ${t.id} appears twice in the plan`)
    ids.add(t.id)
    checkDemand(t)
  }
  for (const t of tasks) pool.release(t.id)
  const placements: Placed[] = []
  const pending: Pending[] = []
  for (const task of canonicalOrder(pool, tasks)) {
    const decision = decide(pool, task, options)
    if (decision.placed) {
      pool.allocate({ task, node: decision.node })
      placements.push({ task: decision.task, node: decision.node, candidates: decision.candidates })
    } else {
      pending.push({ task: decision.task, why: decision.why })
    }
  }
  return { placements, pending }
}

/**
 * The tasks a death displaces: those allocated only on nodes that are not live (dead or left)
 * or no longer in the view, each once. A task that still has a live holder is
 * not displaced.
 */
export function displaced (view: View): InstanceDemand[] {
  const live = new Set(view.nodes.filter((n) => n.live).map((n) => n.id))
  const held = new Set(view.allocations.filter((a) => live.has(a.node)).map((a) => a.task.id))
  const out = new Map<string, InstanceDemand>()
  for (const a of view.allocations) if (!held.has(a.task.id) && !out.has(a.task.id)) out.set(a.task.id, a.task)
  return [...out.values()]
}

function canonicalOrder (pool: Pool, tasks: readonly InstanceDemand[]): InstanceDemand[] {
  let cpu = 0
  let mem = 0
  for (let i = 0; i < pool.size; i++) {
    if (pool.live[i] === 1) { cpu += pool.cpuCap[i]!; mem += pool.memCap[i]! }
  }
  const share = (t: InstanceDemand): number => Math.max(cpu > 0 ? t.cpuMillis / cpu : 0, mem > 0 ? t.memoryBytes / mem : 0)
  return tasks.map((t) => ({ t, s: share(t) }))
    .sort((a, b) => b.s - a.s || compareStrings(a.t.job, b.t.job) || compareStrings(a.t.id, b.t.id))
    .map((x) => x.t)
}

function causeRank (cause: string): number {
  return cause.startsWith('the spread') ? 0 : cause === 'the per-node limit' ? 1 : 2
}

function tally (counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1)
}

function compareStrings (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function bounded (name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new PlacementError(`${name} must be an integer from ${min} to ${max}, not ${value}`)
  return value
}

/** Why no node can take the task, from every node's reason. */
export function pendingSummary (pool: Pool, task: InstanceDemand): PendingSummary {
  const spreads: SpreadCounts[] = pool.spreadCounts(task)
  const skipped: Partial<Record<SkipCode, number>> = {}
  const failures = new Map<string, number>()
  const ruledOutWithRoom = new Map<string, number>()
  let cpu: { node: string, millis: number } | undefined
  let memory: { node: string, bytes: number } | undefined
  let cpuCap: { node: string, millis: number } | undefined
  let memCap: { node: string, bytes: number } | undefined
  let cpuShort = 0
  let memShort = 0
  /** Whether some node that passes the constraints could hold the task when empty. */
  let holdsBoth = false
  for (let i = 0; i < pool.size; i++) {
    const reason: SkipReason | undefined = pool.check(i, task, spreads)
    if (reason === undefined) continue
    skipped[reason.code] = (skipped[reason.code] ?? 0) + 1
    const node = pool.ids[i]!
    switch (reason.code) {
      case 'not-live': continue
      case 'constraint': tally(failures, `fail ${constraintText(reason.constraint)}`); continue
      case 'avoided': tally(failures, 'are avoided (the task failed there)'); break
      case 'per-node': tally(failures, `are at the per-node limit (${reason.max})`); break
      case 'spread': tally(failures, reason.value === undefined ? `lack the label ${reason.label}` : `would unbalance the spread over ${reason.label}`); break
      case 'resources':
        if (reason.cpu !== undefined) cpuShort++
        if (reason.memory !== undefined) memShort++
        if (cpu === undefined || pool.cpuFree[i]! > cpu.millis) cpu = { node, millis: pool.cpuFree[i]! }
        if (memory === undefined || pool.memFree[i]! > memory.bytes) memory = { node, bytes: pool.memFree[i]! }
    }
    // Alive and passing the constraints: a node that could hold the task some day.
    if (cpuCap === undefined || pool.cpuCap[i]! > cpuCap.millis) cpuCap = { node, millis: pool.cpuCap[i]! }
    if (memCap === undefined || pool.memCap[i]! > memCap.bytes) memCap = { node, bytes: pool.memCap[i]! }
    if (pool.cpuCap[i]! >= task.cpuMillis && pool.memCap[i]! >= task.memoryBytes) holdsBoth = true
    if (reason.code !== 'resources' && pool.cpuFree[i]! >= task.cpuMillis && pool.memFree[i]! >= task.memoryBytes) {
      const cause = reason.code === 'spread' ? `the spread over ${reason.label}` : reason.code === 'per-node' ? 'the per-node limit' : 'avoidance'
      ruledOutWithRoom.set(cause, (ruledOutWithRoom.get(cause) ?? 0) + 1)
    }
  }
  const parts: string[] = []
  if (skipped['not-live'] !== undefined) parts.push(`${skipped['not-live']} dead or left`)
  for (const [text, count] of failures) parts.push(`${count} ${text}`)
  if (skipped.resources !== undefined) parts.push(`${skipped.resources} lack free resources`)
  const of = pool.size === 0 ? 'the view has no nodes' : `of ${pool.size} node${pool.size === 1 ? '' : 's'}: ${parts.join(', ')}`
  return {
    message: `${headline(task, { cpu, memory, cpuCap, memCap, cpuShort, memShort, holdsBoth, ruledOutWithRoom })} (${of})`,
    nodes: pool.size,
    skipped,
    ...(cpu !== undefined && memory !== undefined ? { largestFree: { cpu, memory } } : {}),
  }
}

interface Findings {
  cpu?: { node: string, millis: number }
  memory?: { node: string, bytes: number }
  cpuCap?: { node: string, millis: number }
  memCap?: { node: string, bytes: number }
  cpuShort: number
  memShort: number
  holdsBoth: boolean
  ruledOutWithRoom: Map<string, number>
}

/** The one cause a user should hear first: a request no node could ever hold, room ruled out by the job's own rules, or no room. */
function headline (task: InstanceDemand, f: Findings): string {
  const tooBig: string[] = []
  if (f.cpuCap !== undefined && task.cpuMillis > f.cpuCap.millis) {
    const [need, has] = needAndFree(task.cpuMillis, f.cpuCap.millis, 'cpu')
    tooBig.push(`it asks for ${need} CPU and the largest node has ${has} (${f.cpuCap.node})`)
  }
  if (f.memCap !== undefined && task.memoryBytes > f.memCap.bytes) {
    const [need, has] = needAndFree(task.memoryBytes, f.memCap.bytes, 'memory')
    tooBig.push(`it asks for ${need} memory and the largest node has ${has} (${f.memCap.node})`)
  }
  if (tooBig.length > 0) return `no node is large enough: ${tooBig.join('; ')}; ask for less`
  if (f.cpuCap !== undefined && f.memCap !== undefined && !f.holdsBoth) {
    const [cpuNeed] = needAndFree(task.cpuMillis, f.cpuCap.millis, 'cpu')
    const [memNeed] = needAndFree(task.memoryBytes, f.memCap.bytes, 'memory')
    return `no node is large enough: it asks for ${cpuNeed} CPU and ${memNeed} memory together, and no node has both; ask for less`
  }
  if (f.ruledOutWithRoom.size > 0) {
    // A fixed order of causes: the spreads, then the per-node limit, then avoidance.
    const causes = [...f.ruledOutWithRoom].sort(([a], [b]) => causeRank(a) - causeRank(b) || (a < b ? -1 : 1))
    return `the nodes with room are ruled out: ${causes.map(([cause, count]) => `${count} by ${cause}`).join(', ')}`
  }
  if (f.cpu === undefined || f.memory === undefined) return 'no node can take it'
  // Free may be negative on an overcommitted node: printed as it is, never read alike with the need.
  const [cpuNeed, cpuFree] = needAndFree(task.cpuMillis, f.cpu.millis, 'cpu')
  const [memNeed, memFree] = needAndFree(task.memoryBytes, f.memory.bytes, 'memory')
  const cpuPart = `${cpuFree} CPU on ${f.cpu.node}`
  const memPart = `${memFree} on ${f.memory.node}`
  if (f.cpuShort > 0 && f.memShort > 0) return `no node has ${cpuNeed} CPU and ${memNeed} memory free; largest free: ${cpuPart}, ${memPart}`
  if (f.cpuShort > 0) return `no node has ${cpuNeed} CPU free; largest free: ${cpuPart}`
  return `no node has ${memNeed} memory free; largest free: ${memPart}`
}
