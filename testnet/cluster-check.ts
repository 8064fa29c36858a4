// What a clean cluster is, defined once for the simulator (sim/world.ts) and for
// the reliability suite on real node processes (test/reliability/harness.ts). Each
// world describes what it sees in the neutral terms below — read from its nodes
// in memory, or through their APIs and /proc — and checkCluster says what is
// wrong, in words. A pure function: what is costly to read (a document's digest,
// a job as one node sees it) is asked for only when a check gets to it.
//
//   membership:  every live node sees every live node alive, and no other node alive
//   documents:   every live node holds the same document
//   jobs:        every acknowledged submit, stop and scale is in the documents; each
//                batch finished, each of its instances ran
//   what runs:   each instance that must run is held by one node and has one
//                process; nothing else runs
//   each view:   every node knows every job, sees each batch done and each service
//                instance running on the one live node that claims it
//
// With `quick` it stops after membership, the documents, or what runs (with the
// jobs), whichever finds anything first: while a cluster settles the rest is not
// worth reading, and a job as every node sees it costs the most.

import type { ClaimRecord } from '../crdt/schema.ts'
import type { MemberState } from '../membership/types.ts'
import { instanceId, jobOfInstance, parseAttempt } from '../node/jobs/instances.ts'
import type { HistoryView, JobView } from '../node/jobs/types.ts'

export type ProblemKind = 'membership' | 'documents' | 'placement' | 'batch' | 'acknowledged'

export interface Problem {
  kind: ProblemKind
  detail: string
}

/**
 * What a job's command is known to do, which says what clean is for it:
 * - serves: a service that runs until stopped (each instance has a process);
 * - crashes: a service in a crash loop (held, but without a process between two attempts);
 * - succeeds: a batch whose instances exit 0 (the job completes);
 * - may-fail: a batch whose instances may exit otherwise (it completes or fails).
 */
export type Workload = 'serves' | 'crashes' | 'succeeds' | 'may-fail'

/** What one live node shows of itself. */
export interface NodeFacts {
  /** Its membership view: each member it knows, and the state it sees it in. */
  members: ReadonlyMap<string, MemberState>
  /** Its document's state vector (writer → clock), where the world can read it whole. */
  vector?: ReadonlyMap<number, number>
  /** Its document's digest (the canonical state, hashed). */
  digest: () => string
  /** A job as it sees it (the job's view and every claim, as GET /v1/jobs/<id>/history); null when it does not know the job. */
  job: (id: string) => HistoryView | null
  /** The attempts its executor runs (started and not ended). */
  running: readonly string[]
  /**
   * Whether it holds an instance: runs it, starts it, or waits out a restart's
   * backoff. Where the world cannot tell, it holds what its executor runs.
   */
  holds?: (instance: string) => boolean
}

export interface ClusterFacts {
  /** Every node of the cluster; `live`: its process runs and has not left (those must agree); `status`: what it is otherwise. */
  nodes: ReadonlyArray<{ id: string, live: boolean, status: string }>
  /** How messages name a node. */
  name: (id: string) => string
  /** What each live node shows, or, in words, why it shows nothing ("does not answer: …"). */
  read: ReadonlyMap<string, NodeFacts | string>
  /** The jobs the cluster is held to, with what was acknowledged of them (the latest version, and whether a stop). */
  jobs: ReadonlyArray<{ id: string, acknowledged?: { version: number, stopped: boolean } }>
  /** `jobs` are all the jobs there are: a process or a task of any other job is unwanted too. */
  everyJob: boolean
  workload: (job: JobView) => Workload
  /** The task processes that run now on live nodes: the instance each runs, the node that started it. */
  processes: ReadonlyArray<{ instance: string, node: string, pid?: number }>
  /** Instances that ever started a process, where the world can tell: a batch instance must have. */
  started?: ReadonlySet<string>
}

export interface ClusterCheck {
  problems: Problem[]
  /** Acknowledged work not there: jobs a node does not know (`<job>: unknown to <node>`), service instances without a process, batch instances neither finished nor under way. */
  lost: string[]
  /** Service instances held or run by more than one node. */
  duplicates: string[]
  /**
   * Batch instances finished on more than one node: two claims made while views
   * differed, both run to the end before the claim rule could stop one. At least
   * once allows it; it is no problem, but it is counted.
   */
  reruns: string[]
}

/** Membership disagreements reported: past a few, more lines say nothing new. */
const MEMBERSHIP_LINES = 5

const LIVE_CLAIM = new Set<ClaimRecord['state']>(['claimed', 'starting', 'running', 'restarting'])

export function checkCluster (facts: ClusterFacts, options: { quick?: boolean } = {}): ClusterCheck {
  const quick = options.quick === true
  const problems: Problem[] = []
  const lost = new Set<string>()
  const duplicates = new Set<string>()
  const reruns = new Set<string>()
  const add = (kind: ProblemKind, detail: string): void => { problems.push({ kind, detail }) }
  const done = (): ClusterCheck => ({ problems, lost: [...lost].sort(), duplicates: [...duplicates].sort(), reruns: [...reruns].sort() })
  const { name } = facts
  const status = new Map(facts.nodes.map((n) => [n.id, n.status]))
  const live = facts.nodes.filter((n) => n.live).map((n) => n.id)
  const liveSet = new Set(live)
  const names = (ids: readonly string[]): string => ids.map(name).join(', ')

  // ---- membership ----
  const readable: Array<{ id: string, facts: NodeFacts }> = []
  let seen = 0
  for (const observer of live) {
    const r = facts.read.get(observer) ?? 'shows nothing'
    if (typeof r === 'string') {
      add('membership', `${name(observer)} ${r}`)
      continue
    }
    readable.push({ id: observer, facts: r })
    for (const id of live) {
      const state = r.members.get(id)
      if (state !== 'alive' && seen++ < MEMBERSHIP_LINES) add('membership', `${name(observer)} sees ${name(id)} ${state ?? 'unknown'}`)
    }
    for (const [id, state] of r.members) {
      if (state === 'alive' && !liveSet.has(id) && status.has(id) && seen++ < MEMBERSHIP_LINES) add('membership', `${name(observer)} sees ${name(id)} alive, but it is ${status.get(id)}`)
    }
  }
  if ((quick && problems.length > 0) || readable.length === 0) return done()

  // ---- documents: state vectors first, cheap, and they differ whenever a write has not reached everyone ----
  const [first, ...others] = readable
  const vectors = readable.every((r) => r.facts.vector !== undefined)
  let differing = vectors ? others.filter((r) => !sameVector(first!.facts.vector!, r.facts.vector!)) : []
  if (differing.length === 0) {
    const digest = first!.facts.digest()
    differing = others.filter((r) => r.facts.digest() !== digest)
  }
  if (differing.length > 0) {
    const why = vectors ? `: ${differing.map((r) => vectorDifference(first!, r, name)).join('; ')}` : ''
    add('documents', `${names(differing.map((r) => r.id))} ${differing.length === 1 ? 'holds' : 'hold'} a document other than ${name(first!.id)}'s${why}`)
  }
  if (quick && problems.length > 0) return done()

  // ---- the jobs, as the first node that knows each sees it (the documents are equal once clean) ----
  /** Instances that may run now: a service's on exactly one node, an unfinished batch's on at most one. */
  const mayRun = new Map<string, { rule: 'one' | 'at-most-one', workload: Workload, service: boolean }>()
  const known = new Map<string, { node: string, view: HistoryView }>()
  for (const { id, acknowledged } of facts.jobs) {
    let ref: { node: string, view: HistoryView } | undefined
    for (const r of readable) {
      const view = r.facts.job(id)
      if (view !== null) { ref = { node: r.id, view }; break }
    }
    if (ref === undefined) {
      if (acknowledged !== undefined) add('acknowledged', `job ${id} was acknowledged (version ${acknowledged.version}) but is in no document`)
      continue
    }
    known.set(id, ref)
    const { job } = ref.view
    if (acknowledged !== undefined) {
      // A stop is final: it wins over scales written concurrently, even at higher versions (resolveJob).
      if (job.desired !== 'stopped' && job.version < acknowledged.version) add('acknowledged', `job ${id} is at version ${job.version}; version ${acknowledged.version} was acknowledged`)
      else if (acknowledged.stopped && job.desired !== 'stopped') add('acknowledged', `job ${id}'s stop was acknowledged but it is wanted running`)
    }
    if (job.spec === null) {
      add('placement', `job ${id} has a spec that cannot be read`)
      continue
    }
    if (job.desired !== 'running') continue
    const workload = facts.workload(job)
    const instances = Array.from({ length: job.spec.count }, (_, i) => instanceId(id, i))
    if (job.type === 'batch') {
      if (facts.started !== undefined) for (const i of instances) if (!facts.started.has(i)) add('batch', `${i} never ran`)
      if (job.finishedAt === null) {
        add('batch', `batch job ${id} has not finished`)
        for (const i of instances) mayRun.set(i, { rule: 'at-most-one', workload, service: false })
      }
    } else {
      for (const i of instances) mayRun.set(i, { rule: 'one', workload, service: true })
    }
  }

  // ---- what runs where ----
  const inScope = new Set(facts.jobs.map((j) => j.id))
  const counted = (instance: string): boolean => facts.everyJob || inScope.has(jobOfInstance(instance))
  const copies = new Map<string, Array<{ node: string, pid?: number }>>()
  for (const p of facts.processes) {
    let list = copies.get(p.instance)
    if (list === undefined) copies.set(p.instance, list = [])
    list.push({ node: p.node, ...(p.pid === undefined ? {} : { pid: p.pid }) })
  }
  const running = readable.map((r) => ({ id: r.id, facts: r.facts, instances: new Set(r.facts.running.map((t) => parseAttempt(t).instance)) }))
  for (const [id, { rule, workload, service }] of mayRun) {
    const held = running.filter((r) => r.facts.holds?.(id) ?? r.instances.has(id)).map((r) => r.id)
    const procs = copies.get(id) ?? []
    const nodes = [...new Set(procs.map((p) => p.node))]
    if (held.length > 1 || (rule === 'one' && held.length === 0)) {
      if (service && held.length > 1) duplicates.add(id)
      const claims = known.get(jobOfInstance(id))?.view.tasks.filter((c) => c.id === id) ?? []
      add('placement', `${id} is held by ${held.length === 0 ? 'no node' : names(held)}; it must be held by exactly one (claims: ${claims.map((c) => `${name(c.node)} g${c.generation} ${c.state}`).join(', ') || 'none'})`)
    }
    if (procs.length > 1 || nodes.some((n) => !held.includes(n))) {
      if (service && procs.length > 1) duplicates.add(id)
      add('placement', `${id} has ${procs.length} processes (${procs.map((p) => p.pid === undefined ? `on ${name(p.node)}` : `pid ${p.pid} on ${name(p.node)}`).join(', ')}) but is held by ${names(held) || 'no node'}`)
    }
    if (rule === 'one' && workload === 'serves' && procs.length === 0) {
      lost.add(id)
      add('placement', `${id} has no process on a live node`)
    }
  }
  for (const [id, procs] of copies) {
    if (!mayRun.has(id) && counted(id)) add('placement', `${id} runs on ${names([...new Set(procs.map((p) => p.node))])}, but its job does not want it (stopped, scaled down or finished)`)
  }
  for (const r of running) {
    for (const task of r.facts.running) {
      const { instance } = parseAttempt(task)
      if (!mayRun.has(instance) && counted(instance)) add('placement', `${name(r.id)} still runs ${task}, which no job wants`)
    }
  }
  if (quick && problems.length > 0) return done()

  // ---- every job as every node sees it ----
  for (const { id, acknowledged } of facts.jobs) {
    if (!known.has(id) && acknowledged === undefined) continue
    for (const r of readable) {
      const view = r.facts.job(id)
      if (view === null) {
        lost.add(`${id}: unknown to ${name(r.id)}`)
        add(acknowledged === undefined ? 'documents' : 'acknowledged', `${name(r.id)} does not know job ${id}`)
      } else {
        checkView(r.id, view)
      }
    }
  }
  return done()

  /** One node's view of a job wanted running: a batch done, each service instance held by one live node, where the view says. */
  function checkView (node: string, { job, tasks }: HistoryView): void {
    if (job.desired !== 'running' || job.spec === null) return
    const workload = facts.workload(job)
    const claims = byInstance(tasks)
    const instances = Array.from({ length: job.spec.count }, (_, i) => instanceId(job.id, i))
    if (job.type === 'batch') {
      const finished = workload === 'succeeds' ? ['exited'] : ['exited', 'failed']
      const over = workload === 'succeeds' ? job.status === 'completed' : job.status === 'completed' || job.status === 'failed'
      if (!over) add('batch', `${name(node)} sees batch ${job.id} ${job.status}`)
      for (const id of instances) {
        const of = claims.get(id) ?? []
        // Finished by more than one node: it ran twice.
        if (of.filter((c) => finished.includes(c.state)).length > 1) reruns.add(id)
        // Not finished by anyone, and not under way: lost (at the end of a scenario).
        if (!of.some((c) => finished.includes(c.state) || LIVE_CLAIM.has(c.state))) lost.add(id)
      }
      return
    }
    for (const id of instances) {
      const holders = (claims.get(id) ?? []).filter((c) => LIVE_CLAIM.has(c.state) && liveSet.has(c.node))
      const instance = job.instances.find((x) => x.id === id)
      // A crash loop is between two attempts as often as not: held, in any live state.
      const where = workload === 'crashes' ? instance !== undefined && LIVE_CLAIM.has(instance.state as ClaimRecord['state']) : instance?.state === 'running'
      if (holders.length > 1) {
        duplicates.add(id)
        add('placement', `${name(node)} sees ${id} held by ${holders.map((c) => name(c.node)).join(' and ')}`)
      } else if (holders.length === 0 || !where || instance?.node !== holders[0]!.node) {
        add('placement', `${name(node)} sees ${id} ${instance?.state ?? 'missing'}${instance?.node == null ? '' : ` on ${name(instance.node)}`}`)
      }
    }
  }
}

/** Claims grouped by instance. */
export function byInstance (claims: readonly ClaimRecord[]): Map<string, ClaimRecord[]> {
  const out = new Map<string, ClaimRecord[]>()
  for (const c of claims) {
    let list = out.get(c.id)
    if (list === undefined) out.set(c.id, list = [])
    list.push(c)
  }
  return out
}

function sameVector (a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>): boolean {
  if (a.size !== b.size) return false
  for (const [client, clock] of a) if (b.get(client) !== clock) return false
  return true
}

/** How two nodes' documents differ, in a few words: writers one has more of, or the same writers and other deletions. */
function vectorDifference (a: { id: string, facts: NodeFacts }, b: { id: string, facts: NodeFacts }, name: (id: string) => string): string {
  const sa = a.facts.vector!
  const sb = b.facts.vector!
  const lines: string[] = []
  for (const [client, clock] of sa) if ((sb.get(client) ?? 0) !== clock) lines.push(`writer ${client}: ${name(a.id)} at ${clock}, ${name(b.id)} at ${sb.get(client) ?? 0}`)
  for (const [client, clock] of sb) if (!sa.has(client)) lines.push(`writer ${client}: ${name(a.id)} at 0, ${name(b.id)} at ${clock}`)
  return lines.length > 0 ? lines.slice(0, 3).join(', ') : 'the same writes, other deletions'
}
