// Placement benchmark: the pure functions of placement/ in this process, on
// synthetic views. Prints figures, each next to its target with "met" or
// "missed"; never fails on time. Usage:
//   npm run bench:placement -- [--only throughput,packing,movement,cost] [--quick] [--json]
//                              [--rounds 5] [--seeds 5]
//
//   throughput  plan() of 100,000 task instances onto 1,000 nodes (allocating as it
//               goes, so free capacity shrinks through the run), and place() of the
//               same instances on the empty pool without allocating; decisions/s for
//               choices 1 and 2; one warm-up round, then --rounds rounds, the
//               configurations interleaved so that a noisy stretch hits them all
//   packing     a seeded stream of mixed tasks placed one by one (place, then
//               allocate) until the first refusal: the share of the pool allocated,
//               for choices 1, 2 and 3, against first-fit decreasing of the same
//               stream; 1,000 and 100 nodes, --seeds seeds
//   movement    100 nodes holding 20,000 instances; one node dies, then a 101st
//               joins: what moves with plan()/displaced() and rebalance(), against
//               modulo hashing
//   cost        rank() and explain() of one task at 1,000 nodes; Pool construction
//               with 100,000 allocations
//
// The full run takes about 1.5 minutes on 2 cores. --quick: 10,000 instances, one
// round, one seed, 5,000 instances for movement (a smoke run of about 6 s; the
// targets are for the full run). --json: one JSON
// document on stdout instead of the tables (progress still goes to stderr).
// One thread, CPU-bound: run it alone. On a shared VM the throughput figures of
// one build differ by 40–60 % between runs; compare medians of runs made together.

import { cpus, loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { table } from '../cli/table.ts'
import {
  displaced, explain, idKey, PLACE_DEFAULTS, place, plan, Pool, rank, rebalance,
  type Allocation, type Constraint, type NodeView, type Placed, type InstanceDemand, type View,
} from '../placement/index.ts'
import { Rng } from '../testnet/sim/rng.ts'
import { COMMON_OPTIONS, Report, log, selectParts } from './report.ts'

const PARTS = ['throughput', 'packing', 'movement', 'cost'] as const
type Part = typeof PARTS[number]

const TARGETS = Object.freeze({
  decisionsPerSecondMin: 50_000,
  /** Share of the pool (its fuller resource) allocated before the first refusal. */
  firstRefusalSharePctMin: 90,
  /** Points below first-fit decreasing over the whole stream. */
  ffdGapPointsMax: 5,
})

// ---- figures and the summary ---------------------------------------------------------

const report = new Report()

const isDefault = (choices: number): string => choices === PLACE_DEFAULTS.choices ? ' (default)' : ''
const count = (x: number): string => Math.round(x).toLocaleString('en-US')
const pct = (x: number): string => `${x.toFixed(1)} %`
const ms = (x: number): string => x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x < 10 ? x.toFixed(2) : Math.round(x)} ms`
const us = (x: number): string => `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x)} µs`
const perSecond = (x: number): string => `${count(x)}/s`

function median (xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const mean = (xs: readonly number[]): number => xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length

// ---- the synthetic cluster and workloads -----------------------------------------------

const GIB = 1024 ** 3
const MIB = 1024 ** 2
const MEMORY_PER_CORE = 4 * GIB
const NODE_CORES = [16, 32, 64] as const
const ZONES = ['z0', 'z1', 'z2', 'z3'] as const

/** Node i: thirds of 16, 32 and 64 cores (interleaved in id order), 4 GiB per core, zones in turn. */
function nodeView (i: number): NodeView {
  const cores = NODE_CORES[i % NODE_CORES.length]!
  return {
    id: `node-${String(i).padStart(4, '0')}`,
    live: true,
    cpuMillis: cores * 1000,
    memoryBytes: cores * MEMORY_PER_CORE,
    labels: { zone: ZONES[i % ZONES.length]! },
  }
}

function cluster (n: number): NodeView[] {
  return Array.from({ length: n }, (_, i) => nodeView(i))
}

function capacity (nodes: readonly NodeView[]): { cpu: number, mem: number } {
  let cpu = 0
  let mem = 0
  for (const n of nodes) if (n.live) { cpu += n.cpuMillis; mem += n.memoryBytes }
  return { cpu, mem }
}

/** Memory in proportion to CPU (4 GiB per core) times a log-uniform factor in [0.5, 2): half the tasks lean to memory, half to CPU. */
function memoryFor (rng: Rng, cpuMillis: number): number {
  return Math.max(MIB, Math.round(cpuMillis / 1000 * MEMORY_PER_CORE * 0.5 * 4 ** rng.next() / MIB) * MIB)
}

/** Per-instance CPU of a job (millicores) and how often: mostly small services. */
const CPU_MENU: ReadonlyArray<readonly [number, number]> = [[100, 35], [200, 25], [250, 15], [500, 17], [1000, 8]]

function cpuFromMenu (rng: Rng): number {
  let roll = rng.next() * CPU_MENU.reduce((a, [, w]) => a + w, 0)
  for (const [millis, w] of CPU_MENU) {
    if (roll < w) return millis
    roll -= w
  }
  return CPU_MENU[0]![0]
}

/**
 * Jobs of 1–100 identical instances until `total` instances: per-instance CPU from
 * CPU_MENU times `cpuScale`, memory by `memoryFor`. 10 % of jobs must run in one
 * zone (zone = zN), 5 % in one of two (zone in (a, b)); 10 % have at most 1 or 2
 * instances per node (perNodeMax), their size capped at half of what their nodes
 * could hold. A job's instances share one constraints array, as the jobs layer's do.
 */
function mixedJobs (rng: Rng, total: number, nodes: number, cpuScale: number): InstanceDemand[] {
  const out: InstanceDemand[] = []
  for (let j = 0; out.length < total; j++) {
    const job = `job-${j.toString(36).padStart(4, '0')}`
    const cpuMillis = Math.max(10, Math.round(cpuFromMenu(rng) * cpuScale))
    const memoryBytes = memoryFor(rng, cpuMillis)
    let instances = rng.between(1, 100)
    const roll = rng.next()
    let extra: { constraints?: readonly Constraint[], perNodeMax?: number } = {}
    if (roll < 0.10) {
      extra = { constraints: [{ label: 'zone', op: 'eq', value: rng.pick(ZONES) }] }
    } else if (roll < 0.15) {
      const a = rng.int(ZONES.length)
      extra = { constraints: [{ label: 'zone', op: 'in', values: [ZONES[a]!, ZONES[(a + 1 + rng.int(ZONES.length - 1)) % ZONES.length]!] }] }
    } else if (roll < 0.25) {
      const perNodeMax = rng.between(1, 2)
      extra = { perNodeMax }
      instances = Math.min(instances, Math.max(1, Math.floor(perNodeMax * nodes / 2)))
    }
    for (let k = 0; k < instances && out.length < total; k++) {
      out.push({ id: `${job}/${k}`, job, cpuMillis, memoryBytes, ...extra })
    }
  }
  return out
}

/**
 * The packing stream: 80 % small tasks (0.1–1 core), 20 % large (2–8 cores),
 * memory by `memoryFor`, until the stream asks for `overfill` times the pool in
 * CPU and in memory.
 */
function packingStream (rng: Rng, seed: number, pool: { cpu: number, mem: number }, overfill: number): InstanceDemand[] {
  const out: InstanceDemand[] = []
  let cpu = 0
  let mem = 0
  while (cpu < pool.cpu * overfill || mem < pool.mem * overfill) {
    const large = rng.chance(0.2)
    const cpuMillis = large ? rng.between(2000, 8000) : rng.between(100, 1000)
    const memoryBytes = memoryFor(rng, cpuMillis)
    out.push({ id: `mix-${seed}/${out.length}`, job: large ? 'mix-large' : 'mix-small', cpuMillis, memoryBytes })
    cpu += cpuMillis
    mem += memoryBytes
  }
  return out
}

/** Allocated share of the pool, in %: CPU, memory, and the fuller of the two (the binding resource). */
interface Share { cpu: number, mem: number, binding: number, resource: 'cpu' | 'mem' }

function shareOf (cpuCap: ArrayLike<number>, cpuFree: ArrayLike<number>, memCap: ArrayLike<number>, memFree: ArrayLike<number>): Share {
  let cc = 0; let cf = 0; let mc = 0; let mf = 0
  for (let i = 0; i < cpuCap.length; i++) { cc += cpuCap[i]!; cf += cpuFree[i]!; mc += memCap[i]!; mf += memFree[i]! }
  const cpu = (1 - cf / cc) * 100
  const mem = (1 - mf / mc) * 100
  return { cpu, mem, binding: Math.max(cpu, mem), resource: cpu >= mem ? 'cpu' : 'mem' }
}

const shareText = (s: Share): string => `${s.binding.toFixed(1)} ${s.resource} (${s.resource === 'cpu' ? `mem ${s.mem.toFixed(1)}` : `cpu ${s.cpu.toFixed(1)}`})`

function poolShare (pool: Pool): Share {
  return shareOf(pool.cpuCap, pool.cpuFree, pool.memCap, pool.memFree)
}

function allocationsOf (tasks: readonly InstanceDemand[], placements: readonly Placed[]): Allocation[] {
  const byId = new Map(tasks.map((t) => [t.id, t]))
  return placements.map((p) => ({ task: byId.get(p.task)!, node: p.node }))
}

// ---- 1. throughput ---------------------------------------------------------------------

interface Config { name: string, choices: number, kind: 'plan' | 'place' }

async function throughput (instances: number, rounds: number): Promise<Allocation[]> {
  const nodes = cluster(1_000)
  const view: View = { nodes, allocations: [] }
  const tasks = mixedJobs(new Rng('throughput'), instances, nodes.length, 1)
  const cap = capacity(nodes)
  const asked = tasks.reduce((a, t) => ({ cpu: a.cpu + t.cpuMillis, mem: a.mem + t.memoryBytes }), { cpu: 0, mem: 0 })
  const constrained = tasks.filter((t) => t.constraints !== undefined).length
  const limited = tasks.filter((t) => t.perNodeMax !== undefined).length
  const describe = `${count(tasks.length)} instances of ${count(new Set(tasks.map((t) => t.job)).size)} jobs (${pct(constrained / tasks.length * 100)} with a zone constraint, ${pct(limited / tasks.length * 100)} with perNodeMax) asking ${pct(asked.cpu / cap.cpu * 100)} of the CPU and ${pct(asked.mem / cap.mem * 100)} of the memory of ${count(nodes.length)} nodes`
  log(`throughput: ${describe}`)

  const loadBefore = loadavg()[0]!
  const configs: Config[] = [
    { name: `plan(), choices 1${isDefault(1)}`, choices: 1, kind: 'plan' },
    { name: `plan(), choices 2${isDefault(2)}`, choices: 2, kind: 'plan' },
    { name: `place() alone, choices 1${isDefault(1)}`, choices: 1, kind: 'place' },
    { name: `place() alone, choices 2${isDefault(2)}`, choices: 2, kind: 'place' },
  ]
  const rates = configs.map((): number[] => [])
  const planned = new Map<number, { placed: number, pending: number, allocations: Allocation[] }>()
  const emptyPool = new Pool(view)
  let sink = 0
  for (let r = 0; r <= rounds; r++) {
    const parts: string[] = []
    for (const [c, config] of configs.entries()) {
      const options = { choices: config.choices }
      const started = performance.now()
      if (config.kind === 'plan') {
        const p = plan(view, tasks, options)
        sink += p.placements.length
        if (r === rounds) planned.set(config.choices, { placed: p.placements.length, pending: p.pending.length, allocations: allocationsOf(tasks, p.placements) })
      } else {
        for (const task of tasks) if (place(emptyPool, task, options).placed) sink++
      }
      const rate = tasks.length / ((performance.now() - started) / 1000)
      if (r > 0) rates[c]!.push(rate)
      parts.push(`${config.kind} c=${config.choices} ${perSecond(rate)}`)
    }
    log(`throughput: ${r === 0 ? 'warm-up' : `round ${r}/${rounds}`}: ${parts.join(', ')}`)
  }

  // Where the time goes: place() alone on the empty pool, by kind of task, and without backups.
  const plain = tasks.filter((t) => t.constraints === undefined && t.perNodeMax === undefined)
  const kinds: Array<{ name: string, tasks: InstanceDemand[], options: { choices: number, candidatesMax?: number } }> = [
    { name: `no constraint, no perNodeMax; choices ${PLACE_DEFAULTS.choices} + ${PLACE_DEFAULTS.candidatesMax} backups (default)`, tasks: plain, options: { ...PLACE_DEFAULTS } },
    { name: 'the same, no backups (candidatesMax 0)', tasks: plain, options: { ...PLACE_DEFAULTS, candidatesMax: 0 } },
    { name: 'the same, choices 1, no backups (the first feasible node)', tasks: plain, options: { choices: 1, candidatesMax: 0 } },
    { name: 'zone constraint; default options', tasks: tasks.filter((t) => t.constraints !== undefined), options: { ...PLACE_DEFAULTS } },
    { name: 'perNodeMax; default options', tasks: tasks.filter((t) => t.perNodeMax !== undefined), options: { ...PLACE_DEFAULTS } },
  ]
  const kindRates = kinds.map((): number[] => [])
  const kindRounds = Math.min(rounds, 3)
  for (let r = 0; r < kindRounds; r++) {
    for (const [k, kind] of kinds.entries()) {
      const started = performance.now()
      for (const task of kind.tasks) if (place(emptyPool, task, kind.options).placed) sink++
      kindRates[k]!.push(kind.tasks.length / ((performance.now() - started) / 1000))
    }
    log(`throughput: by kind of task, round ${r + 1}/${kindRounds}: ${kinds.map((_, k) => perSecond(kindRates[k]!.at(-1)!)).join(', ')}`)
  }
  if (sink < 0) log('unreachable')

  const fills = [...planned].map(([choices, p]) => {
    const pool = new Pool({ nodes, allocations: p.allocations })
    return { choices, placed: p.placed, pending: p.pending, share: poolShare(pool) }
  })
  report.print(`\nthroughput: ${describe}; Node ${process.version} on ${cpus()[0]?.model ?? 'an unknown CPU'} (${cpus().length} cores; 1-minute load average ${loadBefore.toFixed(2)} before, ${loadavg()[0]!.toFixed(2)} after); one warm-up round, then ${rounds}\n`)
  const nsPerNode = (rate: number): string => `${(1e9 / rate / nodes.length).toFixed(1)} ns`
  report.print(table(['DECISIONS', 'MEDIAN', 'BEST', 'PER NODE (MEDIAN)', 'ROUNDS'], configs.map((config, c) => [
    config.name, perSecond(median(rates[c]!)), perSecond(Math.max(...rates[c]!)), nsPerNode(median(rates[c]!)), rates[c]!.map((x) => count(x)).join(', '),
  ])) + '\n')
  for (const f of fills) {
    report.print(`plan() with choices ${f.choices} left the pool at CPU ${pct(f.share.cpu)}, memory ${pct(f.share.mem)} (${count(f.placed)} placed, ${count(f.pending)} pending); place() alone ran on the empty pool\n`)
  }
  report.print(`place() alone on the empty pool by kind of task (median of ${kindRounds} rounds; every decision scans all ${count(nodes.length)} nodes, so per node = 1 s / (decisions/s × nodes)):\n`)
  report.print(table(['TASKS', 'INSTANCES', 'DECISIONS/S', 'PER NODE'], kinds.map((kind, k) => [kind.name, count(kind.tasks.length), perSecond(median(kindRates[k]!)), nsPerNode(median(kindRates[k]!))])) + '\n')
  for (const [c, config] of configs.entries()) {
    const m = median(rates[c]!)
    report.figure('throughput', `${config.name}: decisions/s, median (best)`, `${count(m)} (${count(Math.max(...rates[c]!))})`, `≥ ${count(TARGETS.decisionsPerSecondMin)}`, m >= TARGETS.decisionsPerSecondMin)
  }
  report.results['throughput'] = {
    nodes: nodes.length,
    instances: tasks.length,
    askedCpuPct: asked.cpu / cap.cpu * 100,
    askedMemPct: asked.mem / cap.mem * 100,
    rounds,
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadavg()[0],
    configs: configs.map((config, c) => ({ ...config, medianPerSecond: median(rates[c]!), bestPerSecond: Math.max(...rates[c]!), roundsPerSecond: rates[c]! })),
    planEnd: fills,
    placeByKind: kinds.map((kind, k) => ({ name: kind.name, instances: kind.tasks.length, options: kind.options, medianPerSecond: median(kindRates[k]!), roundsPerSecond: kindRates[k]! })),
  }
  return planned.get(PLACE_DEFAULTS.choices)?.allocations ?? []
}

// ---- 2. packing before the first refusal -----------------------------------------------

interface Packed { placed: number, share: Share, refused?: InstanceDemand }

/** Ours: place() then allocate, in stream order, until the first task no node can take. */
function untilFirstRefusal (nodes: readonly NodeView[], stream: readonly InstanceDemand[], choices: number): Packed {
  const pool = new Pool({ nodes, allocations: [] })
  let placed = 0
  for (const task of stream) {
    const decision = place(pool, task, { choices })
    if (!decision.placed) return { placed, share: poolShare(pool), refused: task }
    pool.allocate({ task, node: decision.node })
    placed++
  }
  return { placed, share: poolShare(pool) }
}

/**
 * The yardstick: offline first-fit decreasing. Handing it only the tasks our
 * placement was offered before its first refusal would not be fair (it would fit
 * them all, having seen where they go), so it gets the whole stream, which asks
 * for 150 % of the pool: the tasks sorted by size, largest first, size = the
 * larger of a task's CPU and memory as shares of a reference node (32 cores,
 * 128 GiB; every node has 4 GiB per core, so any node gives the same order), ties
 * in stream order; each task goes on the first node in id order (the Pool's
 * order) with room for both, and a task that fits nowhere is skipped. Reported:
 * the share allocated after the whole stream (what the gap target compares with)
 * and at its own first refusal.
 */
function firstFitDecreasing (nodes: readonly NodeView[], stream: readonly InstanceDemand[]): { all: Packed, atRefusal: Packed } {
  const sorted = [...nodes].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  const cpuCap = Float64Array.from(sorted, (n) => n.cpuMillis)
  const memCap = Float64Array.from(sorted, (n) => n.memoryBytes)
  const cpuFree = Float64Array.from(cpuCap)
  const memFree = Float64Array.from(memCap)
  const refCpu = 32_000
  const refMem = 32 * MEMORY_PER_CORE
  const order = stream.map((t, k) => ({ t, k, size: Math.max(t.cpuMillis / refCpu, t.memoryBytes / refMem) }))
    .sort((a, b) => b.size - a.size || a.k - b.k)
  let placed = 0
  let atRefusal: Packed | undefined
  for (const { t } of order) {
    let fit = -1
    for (let i = 0; i < cpuFree.length; i++) {
      if (cpuFree[i]! >= t.cpuMillis && memFree[i]! >= t.memoryBytes) { fit = i; break }
    }
    if (fit < 0) {
      atRefusal ??= { placed, share: shareOf(cpuCap, cpuFree, memCap, memFree), refused: t }
      continue
    }
    cpuFree[fit] = cpuFree[fit]! - t.cpuMillis
    memFree[fit] = memFree[fit]! - t.memoryBytes
    placed++
  }
  const all = { placed, share: shareOf(cpuCap, cpuFree, memCap, memFree) }
  return { all, atRefusal: atRefusal ?? all }
}

const CHOICES = [1, 2, 3] as const

async function packing (sizes: readonly number[], seeds: number): Promise<void> {
  const overfill = 1.5
  const out: unknown[] = []
  for (const n of sizes) {
    const nodes = cluster(n)
    const cap = capacity(nodes)
    const rows: string[][] = []
    const ours = new Map<number, Packed[]>(CHOICES.map((c) => [c, []]))
    const gaps = new Map<number, number[]>(CHOICES.map((c) => [c, []]))
    const ffdAll: Packed[] = []
    const ffdFirst: Packed[] = []
    const perSeed: unknown[] = []
    for (let seed = 1; seed <= seeds; seed++) {
      const stream = packingStream(new Rng(`packing/${seed}`), seed, cap, overfill)
      const ffd = firstFitDecreasing(nodes, stream)
      ffdAll.push(ffd.all)
      ffdFirst.push(ffd.atRefusal)
      const mine = CHOICES.map((c) => {
        const p = untilFirstRefusal(nodes, stream, c)
        ours.get(c)!.push(p)
        gaps.get(c)!.push(ffd.all.share.binding - p.share.binding)
        return p
      })
      const refusedText = mine.map((p, k) => `c=${CHOICES[k]} refused #${count(p.placed)} (${p.refused === undefined ? 'none: the stream ran out' : `${(p.refused.cpuMillis / 1000).toFixed(2)} cores, ${(p.refused.memoryBytes / GIB).toFixed(1)} GiB`})`).join('; ')
      log(`packing N=${n} seed ${seed}: ${count(stream.length)} tasks; ${refusedText}; FFD fit ${count(ffd.all.placed)}, first refused at #${count(ffd.atRefusal.placed)}`)
      rows.push([String(seed), count(stream.length), ...mine.map((p) => `${shareText(p.share)} #${count(p.placed)}`), shareText(ffd.atRefusal.share), shareText(ffd.all.share)])
      perSeed.push({ seed, streamTasks: stream.length, ours: mine.map((p, k) => ({ choices: CHOICES[k], placed: p.placed, share: p.share, refused: p.refused })), ffdAll: ffd.all, ffdAtFirstRefusal: ffd.atRefusal })
    }
    const meanShare = (ps: Packed[]): string => `${mean(ps.map((p) => p.share.binding)).toFixed(1)} (cpu ${mean(ps.map((p) => p.share.cpu)).toFixed(1)}, mem ${mean(ps.map((p) => p.share.mem)).toFixed(1)})`
    rows.push(['mean', '', ...CHOICES.map((c) => meanShare(ours.get(c)!)), meanShare(ffdFirst), meanShare(ffdAll)])
    report.print(`\npacking: N=${count(n)} nodes (${count(cap.cpu / 1000)} cores, ${count(cap.mem / GIB)} GiB); per seed a stream asking ${overfill * 100} % of the pool: 80 % small tasks (0.1–1 core), 20 % large (2–8), memory 4 GiB per core × 0.5–2 (log-uniform)\n`)
    report.print('share of the pool allocated, % of its fuller resource (binding resource, the other in brackets); #: tasks placed. Ours: place() + allocate in stream order until the first refusal.\n')
    report.print('FFD: first-fit decreasing of the whole stream (largest first, first node in id order with room, skipping what fits nowhere), at its own first refusal and after all tasks.\n')
    report.print(table(['SEED', 'STREAM', 'OURS CHOICES 1', 'OURS CHOICES 2 (DEFAULT)', 'OURS CHOICES 3', 'FFD AT FIRST REFUSAL', 'FFD ALL TASKS'], rows) + '\n')
    report.print(`gap = FFD after all tasks − ours at its first refusal, in points of each packing's binding share (the target "within ${TARGETS.ffdGapPointsMax} points" is this gap, mean over seeds); vs FFD at its first refusal in brackets\n`)
    report.print(table(['CHOICES', 'SHARE MEAN', 'MIN', 'GAP MEAN', 'GAP MAX', 'GAP TO FFD AT ITS FIRST REFUSAL, MEAN'], CHOICES.map((c) => {
      const ps = ours.get(c)!
      const g = gaps.get(c)!
      return [String(c), pct(mean(ps.map((p) => p.share.binding))), pct(Math.min(...ps.map((p) => p.share.binding))), `${mean(g).toFixed(1)} points`, `${Math.max(...g).toFixed(1)} points`,
        `${mean(ps.map((p, k) => ffdFirst[k]!.share.binding - p.share.binding)).toFixed(1)} points`]
    })) + '\n')
    for (const c of CHOICES) {
      const share = mean(ours.get(c)!.map((p) => p.share.binding))
      const gap = mean(gaps.get(c)!)
      const name = `N=${n}, choices ${c}${isDefault(c)}`
      report.figure('packing', `${name}: pool allocated at first refusal, mean of ${seeds}`, pct(share), `≥ ${TARGETS.firstRefusalSharePctMin} %`, share >= TARGETS.firstRefusalSharePctMin)
      report.figure('packing', `${name}: gap to FFD (all tasks), mean`, `${gap.toFixed(1)} points`, `≤ ${TARGETS.ffdGapPointsMax} points`, gap <= TARGETS.ffdGapPointsMax)
    }
    report.figure('packing', `N=${n}, FFD: after all tasks / at its first refusal, mean`, `${pct(mean(ffdAll.map((p) => p.share.binding)))} / ${pct(mean(ffdFirst.map((p) => p.share.binding)))}`)
    out.push({ nodes: n, overfill, seeds: perSeed })
  }
  report.results['packing'] = { shareIs: 'allocated % of the fuller resource (binding)', gapIs: 'FFD after all tasks minus ours at its first refusal, points', sizes: out }
}

// ---- 3. movement on a death and a join --------------------------------------------------

/** Modulo hashing, the strawman: node = hash(task) mod N over the live nodes sorted by id. */
function moduloHome (taskHash: number, live: readonly string[]): string {
  return live[taskHash % live.length]!
}

function moduloMoved (hashes: ReadonlyMap<string, number>, before: readonly string[], after: readonly string[]): number {
  let moved = 0
  for (const h of hashes.values()) if (moduloHome(h, before) !== moduloHome(h, after)) moved++
  return moved
}

/** Rebalance rounds until one moves nothing: rounds, moves, and moves onto `onto`. */
function rebalanceToRest (nodes: readonly NodeView[], start: readonly Allocation[], fractionMax: number, onto?: string): { rounds: number, moves: number, onto: number, perRound: number[] } {
  const allocations = [...start]
  const index = new Map(allocations.map((a, k) => [a.task.id, k]))
  const perRound: number[] = []
  let total = 0
  let ontoCount = 0
  for (let round = 1; round <= 1_000; round++) {
    const moves = rebalance({ nodes, allocations }, { fractionMax })
    if (moves.length === 0) return { rounds: round, moves: total, onto: ontoCount, perRound }
    for (const m of moves) {
      const k = index.get(m.task)!
      allocations[k] = { task: allocations[k]!.task, node: m.to }
      if (m.to === onto) ontoCount++
    }
    total += moves.length
    perRound.push(moves.length)
    if (round % 10 === 0) log(`movement: rebalance round ${round}, ${count(total)} moves so far`)
  }
  throw new Error('rebalance did not come to rest in 1,000 rounds')
}

async function movement (instances: number): Promise<void> {
  const n = 100
  const nodes = cluster(n)
  // Scaled so that the tasks ask about two thirds of the pool: a death must fit elsewhere.
  const cpuScale = 0.4 * 20_000 / instances
  const tasks = mixedJobs(new Rng('movement'), instances, n, cpuScale)
  const cap = capacity(nodes)
  const p = plan({ nodes, allocations: [] }, tasks)
  const allocations = allocationsOf(tasks, p.placements)
  const home = new Map(allocations.map((a) => [a.task.id, a.node]))
  const planned = new Pool({ nodes, allocations })
  const share = poolShare(planned)
  /** A node's allocated share of its fuller resource, in %. */
  const fill = (i: number): number => Math.max(1 - planned.cpuFree[i]! / planned.cpuCap[i]!, 1 - planned.memFree[i]! / planned.memCap[i]!) * 100
  const fills = nodes.map((x) => fill(planned.indexOf(x.id)!))
  // For comparison only: how evenly the other choice (1, pure rendezvous; or 2, best fit) fills the nodes.
  const other = PLACE_DEFAULTS.choices === 1 ? 2 : 1
  const spread = new Pool({ nodes, allocations: allocationsOf(tasks, plan({ nodes, allocations: [] }, tasks, { choices: other }).placements) })
  const spreadFills = nodes.map((_, i) => Math.max(1 - spread.cpuFree[i]! / spread.cpuCap[i]!, 1 - spread.memFree[i]! / spread.memCap[i]!) * 100)
  const fillText = (fs: number[]): string => `${pct(Math.min(...fs))} to ${pct(Math.max(...fs))}, median ${pct(median(fs))}, ${fs.filter((f) => f >= 99).length} nodes ≥ 99 %, ${fs.filter((f) => f < 10).length} under 10 %`
  const describe = `${count(tasks.length)} instances (the throughput mix at ${cpuScale.toFixed(1)} × its CPU) planned onto ${n} nodes with plan(): CPU ${pct(share.cpu)}, memory ${pct(share.mem)} allocated, ${p.pending.length} pending; ` +
    `nodes filled (fuller resource) from ${fillText(fills)} (with choices ${other}: ${fillText(spreadFills)})`
  log(`movement: ${describe}`)
  const hashes = new Map(tasks.map((t) => [t.id, idKey(t.id).lo]))
  const ids = nodes.map((x) => x.id).sort()

  // A death: one node of each size in turn.
  const deaths: Array<Record<string, unknown>> = []
  const deathRows: string[][] = []
  for (const victimIndex of [48, 49, 50]) {
    const victim = nodes[victimIndex]!
    const view: View = { nodes: nodes.map((x) => x === victim ? { ...x, live: false } : x), allocations }
    const lost = displaced(view)
    const again = plan(view, lost)
    const after = new Map(home)
    for (const t of lost) after.delete(t.id)
    for (const q of again.placements) after.set(q.task, q.node)
    const moved = tasks.filter((t) => after.get(t.id) !== home.get(t.id))
    const onVictim = tasks.filter((t) => home.get(t.id) === victim.id).length
    const exact = moved.length === onVictim && moved.every((t) => home.get(t.id) === victim.id) && again.pending.length === 0
    const modulo = moduloMoved(hashes, ids, ids.filter((id) => id !== victim.id))
    deathRows.push([`${victim.id} (${victim.cpuMillis / 1000} cores)`, pct(fill(planned.indexOf(victim.id)!)), count(onVictim), count(again.placements.length), count(again.pending.length), `${count(moved.length)} (${pct(moved.length / tasks.length * 100)})`, exact ? 'yes' : 'no', `${count(modulo)} (${pct(modulo / tasks.length * 100)})`])
    deaths.push({ node: victim.id, cores: victim.cpuMillis / 1000, fillPct: fill(planned.indexOf(victim.id)!), onNode: onVictim, replaced: again.placements.length, pending: again.pending.length, moved: moved.length, exact, moduloMoved: modulo })
    report.figure('movement', `death of ${victim.id} (${victim.cpuMillis / 1000} cores): moved / its tasks (modulo hashing)`, `${count(moved.length)} / ${count(onVictim)} (${count(modulo)})`, 'exactly its tasks', exact)
  }

  // A join: a 101st node, empty.
  const joiner = nodeView(n)
  const joined = [...nodes, joiner]
  const joinedView: View = { nodes: joined, allocations }
  const replanned = plan(joinedView, displaced(joinedView))
  const movedByPlan = replanned.placements.filter((q) => q.node !== home.get(q.task)).length
  const firstChoice = (pool: Pool, t: InstanceDemand): string | undefined => {
    const d = place(pool, t, { choices: 1, candidatesMax: 0 })
    return d.placed ? d.node : undefined
  }
  const emptyBefore = new Pool({ nodes, allocations: [] })
  const emptyAfter = new Pool({ nodes: joined, allocations: [] })
  const firstChanged = tasks.filter((t) => firstChoice(emptyBefore, t) !== firstChoice(emptyAfter, t)).length
  const joinerShare = joiner.cpuMillis / (cap.cpu + joiner.cpuMillis) * 100
  log('movement: rebalance rounds after the join (fractionMax 0.05), then the same without a join')
  const rebalanced = rebalanceToRest(joined, allocations, 0.05, joiner.id)
  const baseline = rebalanceToRest(nodes, allocations, 0.05)
  const moduloJoin = moduloMoved(hashes, ids, [...ids, joiner.id].sort())

  report.print(`\nmovement: ${describe}\n`)
  report.print('death: the dead node\'s tasks (displaced(view)) re-planned with plan(); moved = instances whose node differs afterwards\n')
  report.print(table(['DEAD NODE', 'ITS FILL', 'ITS TASKS', 'RE-PLACED', 'PENDING', 'MOVED', 'EXACT', 'MODULO HASHING MOVED'], deathRows) + '\n')
  report.print(`join of ${joiner.id} (${joiner.cpuMillis / 1000} cores, ${joiner.labels['zone']}; ${pct(joinerShare)} of the CPU afterwards, 1/101 = ${pct(100 / 101)}):\n`)
  report.print(table(['WHAT', 'TASKS', 'SHARE'], [
    ['moved by plan(displaced(view)) (nothing running moves)', count(movedByPlan), pct(movedByPlan / tasks.length * 100)],
    ['first choice changed (what an eager rebalance would move)', count(firstChanged), pct(firstChanged / tasks.length * 100)],
    [`rebalance(), fractionMax 0.05, to rest: ${rebalanced.rounds} rounds (the last moves nothing)`, count(rebalanced.moves), pct(rebalanced.moves / tasks.length * 100)],
    ['  of which onto the new node', count(rebalanced.onto), pct(rebalanced.onto / tasks.length * 100)],
    [`  the same rebalance with no join: ${baseline.rounds} rounds`, count(baseline.moves), pct(baseline.moves / tasks.length * 100)],
    ['modulo hashing (hash mod 101 instead of mod 100)', count(moduloJoin), pct(moduloJoin / tasks.length * 100)],
  ]) + '\n')
  report.print(`rebalance moves per round after the join: ${rebalanced.perRound.join(', ')}\n`)
  report.print('rebalance() moves a task where place() would put it now, when that node ranks above its home: tasks that plan() placed early, on emptier nodes, may fit better elsewhere now (hence moves with no join); best fit sends little to an empty newcomer.\n')
  report.figure('movement', 'join: moved by plan() (displaced(view) is empty)', count(movedByPlan), '0', movedByPlan === 0)
  report.figure('movement', 'join: first choice changed', `${count(firstChanged)} (${pct(firstChanged / tasks.length * 100)})`, `≈ 1/101 (${pct(100 / 101)})`)
  report.figure('movement', 'join: rebalance() to rest, fractionMax 0.05', `${count(rebalanced.moves)} in ${rebalanced.rounds} rounds (${count(rebalanced.onto)} onto it; ${count(baseline.moves)} with no join)`)
  report.figure('movement', 'join: modulo hashing moved', `${count(moduloJoin)} (${pct(moduloJoin / tasks.length * 100)})`, '≈ 100/101')
  report.results['movement'] = {
    nodes: n, instances: tasks.length, pending: p.pending.length, share, nodeFillPct: fills, nodeFillPctChoices1: spreadFills, deaths,
    join: { node: joiner.id, cpuSharePct: joinerShare, movedByPlan, firstChoiceChanged: firstChanged, rebalance: rebalanced, rebalanceWithoutJoin: baseline, moduloMoved: moduloJoin },
  }
}

// ---- 4. cost of one explanation, and of a Pool ------------------------------------------

function timeEach (batches: number, perBatch: number, run: (k: number) => void): number {
  const each: number[] = []
  for (let b = 0; b <= batches; b++) {
    const started = performance.now()
    for (let k = 0; k < perBatch; k++) run(b * perBatch + k)
    if (b > 0) each.push((performance.now() - started) / perBatch)
  }
  return median(each)
}

async function cost (instances: number, planned: Allocation[] | undefined, quick: boolean): Promise<void> {
  const nodes = cluster(1_000)
  const empty: View = { nodes, allocations: [] }
  const tasks = mixedJobs(new Rng('throughput'), instances, nodes.length, 1)
  let allocations = planned
  if (allocations === undefined || allocations.length === 0) {
    log(`cost: planning ${count(instances)} instances for the allocations`)
    allocations = allocationsOf(tasks, plan(empty, tasks).placements)
  }
  const full: View = { nodes, allocations }
  const pool = new Pool(empty)
  const batches = quick ? 2 : 5
  const rankUs = timeEach(batches, quick ? 200 : 1_000, (k) => { rank(pool, tasks[k % tasks.length]!) }) * 1000
  const explainUs = timeEach(batches, quick ? 50 : 200, (k) => { explain(empty, tasks[k % tasks.length]!) }) * 1000
  const explainFullMs = timeEach(quick ? 1 : 3, 1, (k) => { explain(full, tasks[k % tasks.length]!) })
  const poolEmptyMs = timeEach(batches, 20, () => { new Pool(empty) })
  const poolFullMs = timeEach(quick ? 1 : 5, 1, () => { new Pool(full) })
  report.print(`\ncost: ${count(nodes.length)} nodes; the full view holds the ${count(allocations.length)} allocations of plan() (choices ${PLACE_DEFAULTS.choices})\n`)
  report.print(table(['WHAT', 'TIME'], [
    ['rank() of one task (every node scored and sorted)', us(rankUs)],
    ['explain() of one task, empty view', us(explainUs)],
    [`explain() of one task, view with ${count(allocations.length)} allocations (it builds a Pool)`, ms(explainFullMs)],
    ['new Pool(view), no allocations', ms(poolEmptyMs)],
    [`new Pool(view), ${count(allocations.length)} allocations`, ms(poolFullMs)],
  ]) + '\n')
  report.figure('cost', 'rank() of one task, 1,000 nodes', us(rankUs))
  report.figure('cost', 'explain() of one task, 1,000 nodes, empty view', us(explainUs))
  report.figure('cost', `explain() of one task, ${count(allocations.length)} allocations`, ms(explainFullMs))
  report.figure('cost', `Pool construction, 1,000 nodes, ${count(allocations.length)} allocations`, ms(poolFullMs))
  report.results['cost'] = { nodes: nodes.length, allocations: allocations.length, rankUs, explainEmptyUs: explainUs, explainFullMs, poolEmptyMs, poolFullMs }
}

// ---- main ----------------------------------------------------------------------------

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...COMMON_OPTIONS,
      rounds: { type: 'string' },
      seeds: { type: 'string' },
    },
  })
  const quick = values.quick
  report.json = values.json
  const { selected: parts, unknown } = selectParts(values.only, PARTS)
  const rounds = Number(values.rounds ?? (quick ? 1 : 5))
  const seeds = Number(values.seeds ?? (quick ? 1 : 5))
  if (unknown.length > 0 || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seeds) || seeds < 1) {
    process.stderr.write(`bench: --only takes parts from ${PARTS.join(',')}; --rounds and --seeds whole numbers ≥ 1\n`)
    process.exit(2)
  }
  const instances = quick ? 10_000 : 100_000
  const started = performance.now()
  log(`Node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
  let planned: Allocation[] | undefined
  if (parts.has('throughput')) planned = await throughput(instances, rounds)
  if (parts.has('packing')) await packing([1_000, 100], seeds)
  if (parts.has('movement')) await movement(quick ? 5_000 : 20_000)
  if (parts.has('cost')) await cost(instances, planned, quick)
  const elapsed = performance.now() - started
  if (report.json) {
    process.stdout.write(JSON.stringify({
      bench: 'placement', node: process.version, cpu: cpus()[0]?.model, cores: cpus().length, quick, rounds, seeds,
      elapsedMs: Math.round(elapsed), targets: TARGETS, results: report.results, summary: report.figures,
    }, null, 2) + '\n')
    return
  }
  report.print(`\nsummary${quick ? ' (--quick: smaller runs, the targets are for the full run)' : ''}, Node ${process.version}, ${ms(elapsed)} in all\n`)
  report.print(table(['PART', 'FIGURE', 'MEASURED', 'TARGET', ''], report.rows()) + '\n')
}

await main()
