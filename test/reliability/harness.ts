// The reliability suite's harness: a testnet of real node processes, the jobs a
// scenario had acknowledged, a watch on every node's membership events, a log of
// the faults the scenario injected, and a census of what runs where, read from
// the nodes' APIs and from the task processes themselves. Each scenario ends with
// one result row (time to recover, tasks lost, duplicate runs, false deaths),
// attached to its test; reporter.ts prints the rows as a table.

import { readFileSync } from 'node:fs'
import { copyFile, mkdir } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { afterAll, beforeAll, expect, type TaskMeta } from 'vitest'
import { connect, type HistoryView, type MemberState } from '../../cli/client.ts'
import { parseAttempt } from '../../node/jobs/instances.ts'
import { checkCluster, type ClusterFacts, type NodeFacts } from '../../testnet/cluster-check.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { readClusterKey } from '../../node/config.ts'
import { marker, markedPids, Net, sh } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'

/** One scenario's figures, as the table shows them. */
export interface ResultRow {
  scenario: string
  /** From the end of the fault (or the heal) to a clean cluster; null if it never got clean. */
  recoverMs: number | null
  /** Acknowledged instances not running (a service) or never finished (a batch) at the end; jobs a node does not know. */
  tasksLost: number
  /** Service instances run by more than one node at the end (live claims, executors or processes), and batch instances finished twice. */
  duplicateRuns: number
  /** Members declared dead (or left) by a node although no fault of the scenario explains it. */
  falseDeaths: number
  /** Other figures worth a line: how long the documents took to agree, and so on. */
  notes: string[]
}

declare module 'vitest' {
  interface TaskMeta {
    reliability?: ResultRow
  }
}

/** Starts a result row on the test's metadata, where the reporter finds it whether or not the test passes. */
export function resultRow (task: { meta: TaskMeta }, scenario: string): ResultRow {
  const row: ResultRow = { scenario, recoverMs: null, tasksLost: 0, duplicateRuns: 0, falseDeaths: 0, notes: [] }
  task.meta.reliability = row
  return row
}

/**
 * A scenario's time limit in vitest: its own waits (60–120 s, each saying what it
 * saw) fail first; this catches only a hang. npm test's default of 60 s is less
 * than one of those waits on a loaded machine.
 */
export const SCENARIO_MS = 300_000

/** Tiny tasks: the suite runs hundreds on 2 cores. */
export const SMALL = { cpu: '10m', memory: '16M' } as const
/** A service that runs until stopped: one process (sh) per instance, carrying the mark. */
export const LOOP = 'while :; do sleep 1; done'

/** A job the API acknowledged (answered 201): it must never be lost. */
export interface Ack {
  id: string
  type: 'service' | 'batch'
  count: number
  /** The version the API answered with. */
  version: number
  mark: string
  /** The node it was submitted on. */
  on: number
  partition: 'majority' | 'both'
}

// ---- faults and deaths --------------------------------------------------------

/**
 * A fault the scenario injected: `members` may be declared dead (or left) by
 * `observers` (every node if null) from `from` until `graceMs` after `to`. A death
 * that no window explains is a false death.
 */
export interface FaultWindow {
  what: string
  members: readonly number[]
  observers: readonly number[] | null
  from: number
  to: number | null
}

/**
 * How long after a fault ends a death it caused can still be declared: a suspicion
 * raised during the fault runs to its timeout (at most 3.9 s on profile `local`,
 * stretched by Lifeguard's local health), and the verdict then spreads by gossip.
 */
export const DEATH_GRACE_MS = 15_000

export interface Death { observer: number, member: number, id: string, state: 'dead' | 'left', at: number }

/**
 * Every membership verdict (dead, left) of every node, from each node's event
 * stream (`GET /v1/events`), reopened whenever a node comes back. A node that does
 * not run sees nothing, and is then no witness.
 */
export class DeathWatch {
  readonly deaths: Death[] = []
  private readonly abort = new AbortController()
  private readonly loops: Array<Promise<void>> = []
  private readonly net: Net

  constructor (net: Net) { this.net = net }

  start (): void {
    for (const node of this.net.nodes) this.loops.push(this.follow(node.index))
  }

  private async follow (i: number): Promise<void> {
    const signal = this.abort.signal
    while (!signal.aborted) {
      try {
        await connect(this.net.nodes[i]!.apiUrl, { timeoutMs: 2_000 }).events((event) => {
          if (event.type !== 'member') return
          const { member, previous } = event.data
          if ((member.state === 'dead' || member.state === 'left') && previous !== member.state) {
            this.deaths.push({ observer: i, member: this.net.index(member.id), id: member.id, state: member.state, at: Date.now() })
          }
        }, signal)
      } catch {
        // The node is down or frozen: try again in a moment.
      }
      if (!signal.aborted) await sleep(250)
    }
  }

  async stop (): Promise<void> {
    this.abort.abort()
    await Promise.allSettled(this.loops)
  }
}

export class FaultLog {
  readonly windows: FaultWindow[] = []

  /** Opens a fault window now; the returned function closes it. */
  open (what: string, members: readonly number[], observers: readonly number[] | null = null): () => void {
    const w: FaultWindow = { what, members, observers, from: Date.now(), to: null }
    this.windows.push(w)
    return () => { w.to ??= Date.now() }
  }

  /** A partition: each group may declare every other group's members dead. */
  partition (what: string, groups: readonly number[][]): () => void {
    const closes = groups.map((g) => this.open(what, groups.filter((o) => o !== g).flat(), g))
    return () => { for (const c of closes) c() }
  }

  explains (d: Death): boolean {
    return this.windows.some((w) => w.members.includes(d.member) &&
      (w.observers === null || w.observers.includes(d.observer)) &&
      d.at >= w.from && d.at <= (w.to ?? Infinity) + DEATH_GRACE_MS)
  }

  /** Deaths of members of the testnet that no fault explains (a member it never had, say one a hostile peer made up, is not counted). */
  falseDeaths (deaths: readonly Death[]): Death[] {
    return deaths.filter((d) => d.member >= 0 && !this.explains(d))
  }
}

// ---- what runs where ------------------------------------------------------------

/** A task process with a mark of ours: which instance it runs, for which node. */
export interface TaskProcess { pid: number, instance: string, node: string }

/**
 * The task processes carrying `mark`, with their instance and node from the
 * environment the node gave them. A task's main process only: a child forked by
 * it (sh forks before it execs `sleep`) carries the mark for a moment too.
 */
export function markedTasks (mark: string): TaskProcess[] {
  const pids = markedPids(mark)
  const marked = new Set(pids)
  const out: TaskProcess[] = []
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (marked.has(ppid)) continue
      const env = new Map(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').map((kv) => {
        const at = kv.indexOf('=')
        return [kv.slice(0, at), kv.slice(at + 1)] as const
      }))
      const task = env.get('MURMUR_TASK_ID')
      const node = env.get('MURMUR_NODE_ID')
      if (task !== undefined && node !== undefined) out.push({ pid, instance: parseAttempt(task).instance, node })
    } catch {
      // It ended while we looked.
    }
  }
  return out
}

/** What one census found: problems in words, and the counts the table shows. */
export interface Census {
  at: number
  /** Clean as testnet/cluster-check.ts defines it (the simulator's definition too), for the jobs of `acks`. */
  clean: boolean
  problems: string[]
  /** Instances (or jobs, as `<job>: unknown to node i`) lost: not running, not finished, not known. */
  lost: string[]
  /** Service instances run by more than one live node (claims, executors or processes). */
  duplicates: string[]
  /**
   * Batch instances finished on more than one node: two claims made while views
   * differed, both run to the end before the claim rule could stop one. At least
   * once allows it; the table counts it as a duplicate run.
   */
  reruns: string[]
  /** Task processes left by nodes that are not live (killed and not back yet). */
  orphans: number
  digestsEqual: boolean
}

/**
 * A cluster under test: the testnet, its clients, the jobs acknowledged so far,
 * the faults injected and the deaths seen.
 */
export class Cluster {
  readonly acks: Ack[] = []
  readonly faults = new FaultLog()
  readonly watch: DeathWatch
  readonly dir: string
  readonly net: Net
  /** When the testnet was up: the origin of the times in messages. */
  readonly startedAt = Date.now()
  private readonly mark: string
  private seq = 0

  private constructor (dir: string, net: Net, name: string) {
    this.dir = dir
    this.net = net
    this.mark = marker(`rel-${name}`)
    this.watch = new DeathWatch(net)
  }

  static async start (name: string, nodes: number): Promise<Cluster> {
    const { dir, state } = await startTestnet(`rel-${name}`, nodes, 90_000)
    const cluster = new Cluster(dir, new Net(state.nodes), name)
    started = cluster
    cluster.watch.start()
    return cluster
  }

  /** The key file every node of this cluster started with (the testnet made it). */
  get clusterKeyFile (): string { return testnet.clusterKeyFile(this.dir) }

  /** The key's bytes, for a host of the test's own that is to be a key holder. */
  clusterKey (): Uint8Array { return readClusterKey(this.clusterKeyFile) }

  /**
   * Waits until every member is past membership's newcomer grace (a suspicion of a
   * newcomer runs to the ceiling, by design): faults then hit a cluster in its
   * steady state, as they would in production.
   */
  async pastNewcomerGrace (): Promise<void> {
    const info = await this.net.client(0).node()
    const graceMs = Number((info.membership.config as { newcomerGraceMs?: number } | undefined)?.newcomerGraceMs ?? 0)
    const startedAt = Math.max(...await Promise.all(this.all().map(async (i) => Date.parse((await this.net.client(i).node()).startedAt))))
    await sleep(Math.max(0, startedAt + graceMs + 1_000 - Date.now()))
  }

  get size (): number { return this.net.nodes.length }
  all (): number[] { return this.net.nodes.map((n) => n.index) }
  except (...away: number[]): number[] { return this.all().filter((i) => !away.includes(i)) }

  /** Every mark of this cluster's jobs (one per job). */
  get marks (): string[] { return this.acks.map((a) => a.mark) }

  /**
   * Submits a job on node `on`; once acknowledged it is held to the promise. Its
   * command carries a mark of its own, so that its processes can be counted.
   */
  async submit (on: number, spec: { name: string, type: 'service' | 'batch', count: number, script?: string, [k: string]: unknown }, timeoutMs = 15_000): Promise<Ack> {
    const mark = `${this.mark}-${spec.name}-${this.seq++}`
    const { script, ...rest } = spec
    const view = await this.net.client(on, timeoutMs).submitJob({ ...SMALL, grace: '1s', ...rest, ...sh(script ?? (spec.type === 'service' ? LOOP : 'true'), mark) })
    const ack: Ack = { id: view.id, type: spec.type, count: spec.count, version: view.version, mark, on, partition: spec.partition === 'both' ? 'both' : 'majority' }
    this.acks.push(ack)
    return ack
  }

  /** A step of the scenario, printed with RELIABILITY_DEBUG=1 (with every census that was not clean). */
  step (what: string): void {
    if (process.env.RELIABILITY_DEBUG !== undefined) console.log(`+${((Date.now() - this.startedAt) / 1000).toFixed(1)} s: ${what}`)
  }

  /** The pids of every task process of this cluster's jobs now. */
  pids (): Set<number> {
    return new Set(this.marks.flatMap((m) => markedTasks(m).map((p) => p.pid)))
  }

  /** Those of `processes` that no longer run. */
  stopped (processes: ReadonlyArray<{ pid: number, node: number }>): string[] {
    const running = this.pids()
    return processes.filter((p) => !running.has(p.pid)).map((p) => `pid ${p.pid} on node ${p.node}`)
  }

  /** Where each instance of a job has a process: its pids, by the index of the node that started it. */
  where (ack: Ack): Map<string, Array<{ pid: number, node: number }>> {
    const out = new Map<string, Array<{ pid: number, node: number }>>()
    for (const p of markedTasks(ack.mark)) {
      let list = out.get(p.instance)
      if (list === undefined) out.set(p.instance, list = [])
      list.push({ pid: p.pid, node: this.net.index(p.node) })
    }
    return out
  }

  /**
   * Splits the cluster into `groups` (the nodes no group names form one more) for
   * `ms`. `during` runs once the split is in place (to submit jobs on each side,
   * say) and returns the check of what must hold while it lasts (see holdsUntil).
   * Heals in any case; notes how long the sides took to do their part.
   */
  async split (row: ResultRow, groups: number[][], ms: number, during: () => Promise<() => Promise<string[]>>): Promise<{ problems: string[], healAt: number }> {
    const rest = this.all().filter((i) => !groups.flat().includes(i))
    const sides = rest.length > 0 ? [...groups, rest] : groups
    const splitAt = Date.now()
    const close = this.faults.partition(`partition ${sides.map((g) => g.join(',')).join(' | ')}`, sides)
    await testnet.partition(this.dir, groups)
    try {
      const check = await during()
      const held = await holdsUntil(check, splitAt, splitAt + ms)
      row.notes.push(`split → each side doing its part ${seconds(held.heldAfterMs)}${held.problems.length === 0 ? '' : ` (${held.problems[0]})`}`)
      return { problems: held.problems, healAt: Date.now() }
    } finally {
      await testnet.heal(this.dir)
      close()
    }
  }

  /** The nodes whose majority flag (GET /v1/node) is not what `expected` says, in words. */
  async majorityProblems (expected: (i: number) => boolean): Promise<string[]> {
    const flags = await Promise.all(this.all().map(async (i) => (await this.net.client(i).node()).reconcile.majority))
    return flags.flatMap((m, i) => m === expected(i) ? [] : [`node ${i} ${m ? 'holds' : 'lacks'} the majority`])
  }

  /** Restarts node `i` (same data dir and ports) and keeps its new record. */
  async restart (i: number, extraArgs?: string[]): Promise<void> {
    this.net.nodes[i] = await testnet.restart(this.dir, i, extraArgs)
  }

  /**
   * What runs where, as the live nodes see it and as the processes show it, held
   * to the definition of a clean cluster (testnet/cluster-check.ts). The jobs of
   * `acks` only; `live` are the nodes that run (others are away).
   */
  async census (live: readonly number[], acks: readonly Ack[] = this.acks): Promise<Census> {
    const livePeers = new Set(live.map((i) => this.net.peer(i)))
    const read = new Map<string, NodeFacts | string>()
    await Promise.all(live.map(async (i) => {
      const client = this.net.client(i, 10_000)
      try {
        const [state, tasks, members, histories] = await Promise.all([
          client.state(),
          client.nodeTasks(),
          client.members(),
          Promise.all(acks.map(async (a) => await client.jobHistory(a.id).catch(() => null))),
        ])
        const jobs = new Map<string, HistoryView | null>(acks.map((a, k) => [a.id, histories[k] ?? null]))
        read.set(this.net.peer(i), {
          members: new Map<string, MemberState>(members.members.map((m) => [m.id, m.state])),
          // The API gives the state vector in summary only: the digests are compared.
          digest: () => state.digest,
          job: (id) => jobs.get(id) ?? null,
          running: tasks.tasks.filter((t) => t.phase !== 'ended').map((t) => t.id),
        })
      } catch (err) {
        read.set(this.net.peer(i), `does not answer: ${(err as Error).message}`)
      }
    }))
    // The task processes of live nodes, found by their marks; those of nodes away are left over from their crash.
    const processes: ClusterFacts['processes'][number][] = []
    let orphans = 0
    for (const a of acks) {
      for (const p of markedTasks(a.mark)) {
        if (livePeers.has(p.node)) processes.push(p)
        else orphans++
      }
    }
    const check = checkCluster({
      nodes: this.net.nodes.map((n) => ({ id: n.peerId!, live: livePeers.has(n.peerId!), status: 'away' })),
      name: (peer) => `node ${this.net.index(peer)}`,
      read,
      jobs: acks.map((a) => ({ id: a.id, acknowledged: { version: a.version, stopped: false } })),
      everyJob: false,
      // The suite's services loop until stopped, and its batches succeed.
      workload: (job) => job.type === 'service' ? 'serves' : 'succeeds',
      processes,
    })
    const problems = check.problems.map((p) => p.detail)
    return {
      at: Date.now(),
      clean: problems.length === 0,
      problems,
      lost: check.lost,
      duplicates: check.duplicates,
      reruns: check.reruns,
      orphans,
      digestsEqual: [...read.values()].every((r) => typeof r !== 'string') && !check.problems.some((p) => p.kind === 'documents'),
    }
  }

  /**
   * Polls the census until the cluster is clean; resolves with the first clean
   * census and how long it took from `since`, or the last census seen when
   * `timeoutMs` runs out (then `ms` is null).
   */
  async waitClean (live: readonly number[], since: number, timeoutMs: number, acks: readonly Ack[] = this.acks): Promise<{ ms: number | null, census: Census }> {
    const deadline = Date.now() + timeoutMs
    let census = await this.census(live, acks)
    while (!census.clean && Date.now() < deadline) {
      if (process.env.RELIABILITY_DEBUG !== undefined) console.log(`+${census.at - since} ms: ${census.problems.length} problems: ${census.problems.slice(0, 4).join('; ')}`)
      await sleep(250)
      census = await this.census(live, acks)
    }
    return { ms: census.clean ? census.at - since : null, census }
  }

  /** Fills the row's counts from a final census and the deaths seen (since `since`); returns the false deaths. */
  score (row: ResultRow, census: Census, since = 0): Death[] {
    row.tasksLost = census.lost.length
    row.duplicateRuns = census.duplicates.length + census.reruns.length
    const reruns = census.reruns.length === 0 ? '' : `${census.reruns.length} batch instance(s) finished twice (at least once allows it)`
    if (reruns !== '' && !row.notes.includes(reruns)) row.notes.push(reruns)
    const falseDeaths = this.faults.falseDeaths(this.watch.deaths).filter((d) => d.at >= since)
    row.falseDeaths = falseDeaths.length
    return falseDeaths
  }

  /**
   * The end of a scenario: waits until the cluster is clean, records on the row
   * the time from `since` (unless `recover` is false), what was lost or run twice
   * and the false deaths (since `deathsSince`), and checks that there are none.
   */
  async finish (row: ResultRow, since: number, opts: { live?: readonly number[], timeoutMs?: number, recover?: boolean, deathsSince?: number, note?: string } = {}): Promise<Census> {
    const end = await this.waitClean(opts.live ?? this.all(), since, opts.timeoutMs ?? 60_000)
    if (opts.recover !== false) row.recoverMs = end.ms
    if (opts.note !== undefined) row.notes.push(`${opts.note} → clean ${seconds(end.ms)}`)
    const falseDeaths = this.score(row, end.census, opts.deathsSince)
    expect(end.census.problems, 'a clean cluster: every acknowledged job known everywhere and running (or done) exactly once, the documents equal').toEqual([])
    expect(end.census.lost, 'acknowledged instances lost').toEqual([])
    expect(end.census.duplicates, 'instances run more than once').toEqual([])
    expect(falseDeaths, describeDeaths(falseDeaths, this.startedAt)).toEqual([])
    return end.census
  }

  /** Stops every job, waits for their processes to end, then stops the testnet. */
  async stop (): Promise<void> {
    await this.watch.stop()
    const keep = process.env.RELIABILITY_KEEP_LOGS
    if (keep !== undefined) {
      // For a look at what the nodes said: their logs, copied out before `down` removes them.
      await mkdir(keep, { recursive: true })
      for (const n of this.net.nodes) await copyFile(n.logFile, join(keep, `${basename(this.dir)}-node-${n.index}.log`)).catch(() => {})
    }
    const marks = this.marks
    await stopTestnet(this.dir)
    // `down` ends the tasks of every node, including killed ones (purgeTasks); anything left is a leak.
    const deadline = Date.now() + 15_000
    while (marks.flatMap(markedPids).length > 0 && Date.now() < deadline) await sleep(100)
    const left = marks.flatMap(markedPids)
    if (left.length > 0) throw new Error(`task processes outlived the testnet: ${left.join(', ')}`)
  }
}

/**
 * A cluster for the tests of one file: started before them (`nodes` nodes, then
 * `setup`), stopped after them, network faults healed first.
 */
/** The cluster this test file started last (each file runs in a module scope of its own). */
let started: Cluster | null = null

/** The key of the cluster this test file started: what a host of the test needs to connect to its nodes. */
export function currentClusterKey (): Uint8Array {
  if (started === null) throw new Error('no cluster started in this file yet: call useCluster() before a helper that needs its key')
  return started.clusterKey()
}

export function useCluster (name: string, nodes: number, setup?: (cluster: Cluster) => Promise<void>): { cluster: Cluster } {
  const holder = {} as { cluster: Cluster }
  beforeAll(async () => {
    holder.cluster = await Cluster.start(name, nodes)
    await setup?.(holder.cluster)
  }, 240_000)
  afterAll(async () => {
    if (holder.cluster === undefined) return
    await testnet.heal(holder.cluster.dir).catch(() => {})
    await holder.cluster.stop()
  }, 60_000)
  return holder
}

/**
 * A `useCluster` setup: one service of `count` instances running, each once, and
 * every member past its newcomer grace: the steady state a fault should hit.
 */
export function steadyService (count: number, spec: Record<string, unknown> = {}): (cluster: Cluster) => Promise<void> {
  return async (cluster) => {
    await cluster.submit(0, { name: 'svc', type: 'service', count, ...spec })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems, 'the service runs before the fault').toEqual([])
    await cluster.pastNewcomerGrace()
  }
}

/**
 * While a fault lasts: waits (until 2 s before `untilMs`) for `check` to find
 * nothing wrong, then checks again every 500 ms until `untilMs`. Returns what
 * the last check found, and how long after `since` it first held.
 */
export async function holdsUntil (check: () => Promise<string[]>, since: number, untilMs: number): Promise<{ problems: string[], heldAfterMs: number | null }> {
  let heldAt: number | null = null
  let problems = await check()
  for (;;) {
    if (problems.length === 0) heldAt ??= Date.now()
    else if (heldAt !== null || Date.now() > untilMs - 2_000) break
    if (Date.now() >= untilMs) break
    await sleep(heldAt === null ? 250 : 500)
    problems = await check()
  }
  return { problems, heldAfterMs: heldAt === null ? null : heldAt - since }
}

/** A duration for a note: "in 1.2 s", or "never". */
export function seconds (ms: number | null): string {
  return ms === null ? 'never' : `in ${(ms / 1000).toFixed(1)} s`
}

/** Describes deaths for an assertion message. */
export function describeDeaths (deaths: readonly Death[], started: number): string {
  return deaths.map((d) => `node ${d.observer} saw node ${d.member} ${d.state} at +${((d.at - started) / 1000).toFixed(1)} s`).join('; ')
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
