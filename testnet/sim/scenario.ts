// What happens to a simulated cluster, as data: a list of timed steps (users'
// requests and faults) drawn from one seed. Being data, a failing list can be
// shrunk step by step (world.ts) and printed as the trace that shows the failure.
// Every step makes sense on its own, whatever was removed before it: a resume of
// a member that is not paused, or a stop of a job never submitted, does nothing.
//
// With users (the default), the cluster runs with a root key: every request is
// signed by a user into a namespace, some namespaces have a quota the admin sets
// before the first step, and, among the faults, the admin sometimes changes one
// on some node, and a member sometimes writes a job no user signed (forge).

import { Rng } from './rng.ts'

/** A job as a user submits it: the simulated runner reads what it does from its command. */
export interface JobInput {
  name: string
  type: 'batch' | 'service'
  command: 'sim'
  args: string[]
  cpu: string
  memory: string
  count: number
  partition?: 'majority' | 'both'
  restart?: { attempts: number, delay: string }
}

/** A namespace's quota: each dimension a bound or null (unlimited), as `murmur namespace quota` sets it. */
export interface QuotaLimit { cpuMillis: number | null, memoryBytes: number | null, instances: number | null }

/** The cluster's users (testnet/sim/users.ts), and the quotas the admin sets before the first step. */
export interface ScenarioUsers {
  /** Namespace → its quota; namespaces not named have none. */
  quotas: Record<string, QuotaLimit>
}

/** The namespaces the simulated users submit into: `default` has no quota, so the other invariants keep their meaning there. */
export const SIM_NAMESPACES = ['default', 'alpha', 'beta'] as const
export const QUOTA_NAMESPACES = ['alpha', 'beta'] as const

/** Members are named by index (n0, n1, …); jobs by the unique name they were submitted with. */
export type Step =
  /** A user submits a job into `namespace` (absent: default) through node n<node>. */
  | { atMs: number, kind: 'submit', node: number, job: JobInput, namespace?: string }
  | { atMs: number, kind: 'stop', node: number, job: string }
  | { atMs: number, kind: 'scale', node: number, job: string, count: number }
  /** The node process dies (SIGKILL); with `machine`, its machine too, and the tasks on it. */
  | { atMs: number, kind: 'crash', node: number, machine?: boolean }
  | { atMs: number, kind: 'restart', node: number, skewMs: number }
  | { atMs: number, kind: 'pause', node: number }
  | { atMs: number, kind: 'resume', node: number }
  | { atMs: number, kind: 'partition', groups: number[][] }
  | { atMs: number, kind: 'cut', from: number, to: number }
  | { atMs: number, kind: 'heal' }
  | { atMs: number, kind: 'link', node: number, delayMs: number, jitterMs: number, lossRate: number }
  | { atMs: number, kind: 'unlink', node: number }
  | { atMs: number, kind: 'network', lossRate: number, duplicateRate: number }
  /** The admin changes a namespace's quota, through n<node> (which mints the difference in its row of the ledger). */
  | { atMs: number, kind: 'quota', node: number, namespace: string, limit: QuotaLimit }
  /** Member n<node> writes a job record into its state that no user signed: no node may run it. */
  | { atMs: number, kind: 'forge', node: number, job: JobInput }

export type StepKind = Step['kind']
export const FAULT_KINDS: ReadonlySet<StepKind> = new Set(['crash', 'restart', 'pause', 'resume', 'partition', 'cut', 'heal', 'link', 'unlink', 'network'])

export interface ScenarioOptions {
  nodes: number
  /** How long faults and requests go on; then everything heals and the cluster settles. */
  chaosMs: number
  /** Mean time between two steps. */
  meanGapMs: number
  /** Whether faults are injected (else requests only). */
  faults: boolean
  /**
   * Every this many seeds, one has no fault even when `faults` is on: a quiet
   * seed, where every batch instance must run exactly once (0: none).
   */
  quietEvery: number
  /** A cluster with users, namespaces and quotas (else one without a root key, as before users existed). */
  users: boolean
}

export const SCENARIO_DEFAULTS: Readonly<Omit<ScenarioOptions, 'nodes'>> = Object.freeze({
  chaosMs: 60_000,
  meanGapMs: 1_500,
  faults: true,
  quietEvery: 8,
  users: true,
})

export interface Scenario {
  seed: number
  nodes: number
  /** Each member's clock skew at the start. */
  skewsMs: number[]
  steps: Step[]
  /** Absent: a cluster without users (traces saved before users existed replay as they did). */
  users?: ScenarioUsers
}

/** Draws a scenario from a seed: the same seed, the same scenario. */
export function generate (seed: number, options: Partial<ScenarioOptions> & { nodes: number }): Scenario {
  const o = { ...SCENARIO_DEFAULTS, ...options }
  if (o.quietEvery > 0 && seed % o.quietEvery === 0) o.faults = false
  const rng = new Rng(seed).fork('scenario')
  const n = o.nodes
  const skewsMs = Array.from({ length: n }, () => rng.chance(0.3) ? rng.between(-1_500, 1_500) : 0)
  const steps: Step[] = []
  // What the generator believes of each member, to draw steps that bite (the list stays valid if shrunk anyway).
  const status: Array<'up' | 'crashed' | 'paused'> = Array.from({ length: n }, () => 'up')
  const services: string[] = []
  const submits: string[] = []
  const later: Step[] = []
  let t = 0
  const upNodes = (): number[] => status.flatMap((s, i) => s === 'up' ? [i] : [])
  while (true) {
    t += Math.round(-Math.log(1 - rng.next()) * o.meanGapMs)
    if (t >= o.chaosMs) break
    for (let i = later.length - 1; i >= 0; i--) {
      if (later[i]!.atMs > t) continue
      const step = later.splice(i, 1)[0]!
      steps.push(step)
      if (step.kind === 'restart' || step.kind === 'resume') status[step.node] = 'up'
    }
    const up = upNodes()
    if (up.length === 0) continue
    const roll = rng.next()
    const workload = !o.faults || roll < 0.55
    if (workload) {
      const node = rng.pick(up)
      const w = rng.next()
      if (w < 0.6 || submits.length === 0) {
        const job = randomJob(rng, steps.length)
        if (job.type === 'service') services.push(job.name)
        submits.push(job.name)
        steps.push({ atMs: t, kind: 'submit', node, job })
      } else if (w < 0.8 && services.length > 0) {
        steps.push({ atMs: t, kind: 'scale', node, job: rng.pick(services), count: rng.between(1, 5) })
      } else {
        steps.push({ atMs: t, kind: 'stop', node, job: rng.pick(submits) })
      }
      continue
    }
    const f = rng.next()
    if (f < 0.2 && up.length > 1) {
      const node = rng.pick(up)
      status[node] = 'crashed'
      steps.push({ atMs: t, kind: 'crash', node, ...(rng.chance(0.4) ? { machine: true } : {}) })
      later.push({ atMs: t + rng.between(2_000, 20_000), kind: 'restart', node, skewMs: rng.chance(0.3) ? rng.between(-1_500, 1_500) : 0 })
    } else if (f < 0.35 && up.length > 1) {
      const node = rng.pick(up)
      status[node] = 'paused'
      steps.push({ atMs: t, kind: 'pause', node })
      later.push({ atMs: t + rng.between(500, 12_000), kind: 'resume', node })
    } else if (f < 0.55) {
      const order = rng.shuffled(Array.from({ length: n }, (_, i) => i))
      const cut = rng.between(1, n - 1)
      steps.push({ atMs: t, kind: 'partition', groups: [order.slice(0, cut), order.slice(cut)] })
      later.push({ atMs: t + rng.between(3_000, 25_000), kind: 'heal' })
    } else if (f < 0.65 && n > 1) {
      const from = rng.int(n)
      const to = (from + 1 + rng.int(n - 1)) % n
      steps.push({ atMs: t, kind: 'cut', from, to })
      later.push({ atMs: t + rng.between(3_000, 15_000), kind: 'heal' })
    } else if (f < 0.85) {
      const node = rng.int(n)
      steps.push({ atMs: t, kind: 'link', node, delayMs: rng.pick([0, 20, 100, 300]), jitterMs: rng.pick([0, 10, 50]), lossRate: rng.pick([0, 0.05, 0.2, 0.5]) })
      later.push({ atMs: t + rng.between(2_000, 20_000), kind: 'unlink', node })
    } else {
      steps.push({ atMs: t, kind: 'network', lossRate: rng.pick([0.01, 0.05, 0.1]), duplicateRate: rng.pick([0, 0.01, 0.1]) })
      later.push({ atMs: t + rng.between(2_000, 20_000), kind: 'network', lossRate: 0, duplicateRate: 0 })
    }
  }
  if (!o.users) return { seed, nodes: n, skewsMs, steps }
  return { seed, nodes: n, skewsMs, steps, users: addUsers(new Rng(seed).fork('users'), steps, o) }
}

/**
 * Users, namespaces and quotas, drawn from their own stream so that the steps
 * above stay those of a cluster without users: each submission goes to a
 * namespace; quotas small enough to bind (a few instances, a few cores, a GiB or
 * two); with faults, a few quota changes on some node (up or down) and sometimes
 * a forged job.
 */
function addUsers (rng: Rng, steps: Step[], o: ScenarioOptions): ScenarioUsers {
  const quotas: Record<string, QuotaLimit> = {}
  for (const ns of QUOTA_NAMESPACES) quotas[ns] = randomLimit(rng, null)
  for (const step of steps) {
    if (step.kind === 'submit') step.namespace = rng.pick(['default', 'alpha', 'alpha', 'beta', 'beta'])
  }
  if (!o.faults) return { quotas }
  const insert = (step: Step): void => {
    let at = steps.length
    while (at > 0 && steps[at - 1]!.atMs > step.atMs) at--
    steps.splice(at, 0, step)
  }
  const changes = rng.between(0, 3)
  for (let i = 0; i < changes; i++) {
    const namespace = rng.pick(QUOTA_NAMESPACES)
    insert({ atMs: rng.between(1_000, o.chaosMs - 1), kind: 'quota', node: rng.int(o.nodes), namespace, limit: randomLimit(rng, quotas[namespace]!) })
  }
  if (rng.chance(0.3)) insert({ atMs: rng.between(1_000, o.chaosMs - 1), kind: 'forge', node: rng.int(o.nodes), job: { ...randomJob(rng, steps.length), name: `forged${steps.length}` } })
  return { quotas }
}

/** A quota that binds the jobs randomJob draws; a change keeps the dimensions the namespace's first quota bounds. */
function randomLimit (rng: Rng, like: QuotaLimit | null): QuotaLimit {
  let dims = like === null ? [rng.chance(0.6), rng.chance(0.6), rng.chance(0.7)] : [like.cpuMillis !== null, like.memoryBytes !== null, like.instances !== null]
  if (!dims.some(Boolean)) dims = [false, false, true]
  return {
    cpuMillis: dims[0] ? rng.pick([1_000, 1_500, 2_000, 3_000]) : null,
    memoryBytes: dims[1] ? rng.pick([512, 1_024, 1_536]) * 1024 ** 2 : null,
    instances: dims[2] ? rng.between(2, 6) : null,
  }
}

function randomJob (rng: Rng, index: number): JobInput {
  const service = rng.chance(0.5)
  const cpu = `${rng.pick([100, 250, 500, 1000])}m`
  const memory = `${rng.pick([64, 128, 256, 512])}Mi`
  const count = rng.between(1, service ? 4 : 6)
  const partition = rng.chance(0.15) ? 'both' as const : undefined
  if (service) {
    const crashy = rng.chance(0.15)
    return { name: `svc${index}`, type: 'service', command: 'sim', args: crashy ? ['crash', String(rng.between(500, 5_000))] : ['serve'], cpu, memory, count, ...(partition !== undefined ? { partition } : {}) }
  }
  const code = rng.chance(0.15) ? 1 : 0
  return {
    name: `batch${index}`, type: 'batch', command: 'sim', args: ['run', String(rng.between(100, 5_000)), String(code)], cpu, memory, count,
    restart: { attempts: rng.between(0, 2), delay: '200ms' },
    ...(partition !== undefined ? { partition } : {}),
  }
}

/** One line per step, for a failure's trace. */
export function describeStep (step: Step, index: number): string {
  const at = `${(step.atMs / 1000).toFixed(3).padStart(8)} s  #${index}`
  switch (step.kind) {
    case 'submit': return `${at} submit on n${step.node}${step.namespace === undefined ? '' : ` into ${step.namespace}`}: ${step.job.type} ${step.job.name} ×${step.job.count} (${step.job.args.join(' ')}, ${step.job.cpu}, ${step.job.memory}${step.job.partition === 'both' ? ', partition: both' : ''})`
    case 'stop': return `${at} stop ${step.job} on n${step.node}`
    case 'scale': return `${at} scale ${step.job} to ${step.count} on n${step.node}`
    case 'crash': return `${at} crash n${step.node}${step.machine === true ? ' and its machine (its tasks end)' : ' (its tasks go on)'}`
    case 'restart': return `${at} restart n${step.node}${step.skewMs !== 0 ? ` (clock off by ${step.skewMs} ms)` : ''}`
    case 'pause': return `${at} freeze n${step.node}`
    case 'resume': return `${at} resume n${step.node}`
    case 'partition': return `${at} partition ${step.groups.map((g) => g.map((i) => `n${i}`).join(',')).join(' | ')}`
    case 'cut': return `${at} cut n${step.from} → n${step.to} (one way)`
    case 'heal': return `${at} heal partitions and cuts`
    case 'link': return `${at} link of n${step.node}: +${step.delayMs} ms ±${step.jitterMs} ms, ${Math.round(step.lossRate * 100)} % loss`
    case 'unlink': return `${at} link of n${step.node} healthy again`
    case 'network': return `${at} network: ${Math.round(step.lossRate * 100)} % loss, ${Math.round(step.duplicateRate * 100)} % duplicated`
    case 'quota': return `${at} quota of ${step.namespace} set to ${limitText(step.limit)} on n${step.node}`
    case 'forge': return `${at} n${step.node} forges job ${step.job.name} (no user signed it)`
  }
}

export function limitText (l: QuotaLimit): string {
  const parts = [l.cpuMillis === null ? null : `cpu ${l.cpuMillis}m`, l.memoryBytes === null ? null : `memory ${Math.round(l.memoryBytes / 1024 ** 2)}Mi`, l.instances === null ? null : `${l.instances} instances`]
  return parts.filter((p) => p !== null).join(', ') || 'unlimited'
}
