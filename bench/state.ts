// Replicated-state benchmark: real node processes on loopback (testnet/local), and
// the crdt alone in this process. Prints figures, each next to its target with
// "met" or "missed"; never fails on time. Usage:
//   npm run bench:state -- [--only propagation,throughput,restart,startup,retention] [--quick]
//                          [--sizes 5,10,20] [--rates 250,500,1000,2000] [--lifecycles 100000,1000000]
//
//   propagation  one label update through the API (PATCH /v1/node/labels) → every
//                other node's event stream shows the change of that node's record;
//                the writer rotates over the nodes; p50 / p99 of "all have it"
//   throughput   every node writes label updates at a combined rate R; achieved
//                rate, lag (write ack → all nodes have it, sampled by probes), and
//                the time from the last ack until every node's digest is equal
//   restart      one node stopped (SIGTERM), 10,000 updates written on the others,
//                the node restarted: time until its digest equals the others'
//   startup      a node's data dir with 100,000 records in its state database:
//                spawn → API answers, → /v1/state shows them all
//   signing      what signed records cost, in this process: 10 replicas of the crdt,
//                each write applied to the 9 others through the checks a node runs on
//                a peer's update (ClusterState.applyRemote); writes/s and per-write
//                time with Ed25519 signatures (real peer ids) against the same code with
//                keys that sign nothing and accept everything, in alternating rounds
//   retention    5 replicas of the crdt run task lifecycles on a simulated clock with
//                retention; document size and heap after 100,000 and 1,000,000
//                lifecycles (one observing replica in a thread of its own gives the
//                heap of one replica alone)
//
// The full run takes about 11 minutes on 2 cores, 7 of them the 1,000,000 lifecycles
// of retention (CPU-bound in the crdt: about 2,200 lifecycles/s); --quick about 1.5.
// Run it alone: it starts up to 20 node processes, and its figures are CPU-bound.

import { createHash, randomUUID } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { MessageChannel, type MessagePort, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import * as Y from 'yjs'
import { type Client, type StateInfo, connect } from '../cli/client.ts'
import { table } from '../cli/table.ts'
import type { ClaimRecord } from '../crdt/schema.ts'
import { ClusterState, ORIGIN } from '../crdt/state.ts'
import { type RecordKeys, derivedKeys } from '../crdt/signing.ts'
import { applyRemote, canonicalState } from '../crdt/sync.ts'
import { writeClusterKey } from '../node/config.ts'
import { nodeKeys } from '../node/keys.ts'
import { StateStore } from '../node/state-store.ts'
import { cpuTicks, freePorts, isNodeProcess, readRuntime, signal, sleep, spawnNode, waitForExit } from '../testnet/local/process.ts'
import type { TestnetNode } from '../testnet/local/state.ts'
import * as testnet from '../testnet/local/testnet.ts'
import { Rng } from '../testnet/sim/rng.ts'
import { percentile } from './report.ts'

const PARTS = ['propagation', 'throughput', 'restart', 'startup', 'retention', 'signing'] as const
type Part = typeof PARTS[number]

// ---- figures and the summary -------------------------------------------------------

interface Figure { part: string, what: string, measured: string, target: string, verdict: string }
const figures: Figure[] = []

/** One line of the summary; `ok` undefined for a figure without a target. */
function figure (part: string, what: string, measured: string, target = '', ok?: boolean): void {
  figures.push({ part, what, measured, target, verdict: ok === undefined ? '' : ok ? 'met' : 'missed' })
}

const ms = (x: number): string => Number.isNaN(x) ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(2)} MB`
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const count = (x: number): string => x.toLocaleString('en-US')

function log (message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

// ---- what this process started, for cleanup (also on Ctrl-C) -------------------------

const testnets = new Set<string>()
const tempDirs = new Set<string>()
const spawned = new Map<number, string>()

async function tempDir (prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `murmur-bench-state-${prefix}-`))
  tempDirs.add(dir)
  return dir
}

async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

async function upTestnet (nodes: number): Promise<{ dir: string, nodes: TestnetNode[] }> {
  const dir = await tempDir(`n${nodes}`)
  testnets.add(dir)
  const state = await testnet.up({ nodes, dir, timeoutMs: 180_000 })
  return { dir, nodes: [...state.nodes] }
}

async function downTestnet (dir: string): Promise<void> {
  await testnet.down({ dir }).catch((err: Error) => { log(`testnet down in ${dir} failed: ${err.message}`) })
  testnets.delete(dir)
  await removeDir(dir)
}

async function cleanupAll (): Promise<void> {
  for (const [pid, dataDir] of spawned) if (isNodeProcess(pid, dataDir)) signal(pid, 'SIGKILL')
  for (const dir of [...testnets]) await downTestnet(dir)
  for (const dir of [...tempDirs]) await removeDir(dir)
}

// ---- following every node's state events -------------------------------------------

type Hook = (observer: string, writer: string, at: number) => void

/** Follows the event streams of nodes; calls the hooks with (observer, writer of a changed node record, arrival time). */
class StateWatcher {
  readonly hooks = new Set<Hook>()
  /** Member events seen by any node that marked another suspect or dead (false alarms: nothing is broken here). */
  suspicions = 0
  deaths = 0
  private readonly controllers = new Map<string, AbortController>()

  follow (node: TestnetNode): void {
    const observer = node.peerId!
    this.controllers.get(observer)?.abort()
    const controller = new AbortController()
    this.controllers.set(observer, controller)
    void connect(node.apiUrl, { timeoutMs: 10_000 }).events((e) => {
      if (e.type === 'member') {
        if (e.data.member.state === 'suspect' && e.data.previous !== 'suspect') this.suspicions++
        if (e.data.member.state === 'dead' && e.data.previous !== 'dead') this.deaths++
        return
      }
      if (e.type !== 'state' || e.data.kind !== 'nodes') return
      const at = performance.now()
      for (const hook of this.hooks) for (const id of e.data.ids) hook(observer, id, at)
    }, controller.signal).catch((err: Error) => { log(`event stream of node ${node.index} ended: ${err.message}`) })
  }

  stop (): void {
    for (const c of this.controllers.values()) c.abort()
    this.controllers.clear()
    this.hooks.clear()
  }

  /**
   * Resolves with the arrival time of writer's next record change at each observer
   * (null where it did not come within the timeout). Register before writing.
   */
  arrivals (writer: string, observers: string[], timeoutMs: number): { done: Promise<Map<string, number | null>> } {
    const got = new Map<string, number | null>()
    const { promise, resolve } = Promise.withResolvers<Map<string, number | null>>()
    const finish = (): void => {
      this.hooks.delete(hook)
      clearTimeout(timer)
      for (const o of observers) if (!got.has(o)) got.set(o, null)
      resolve(got)
    }
    const hook: Hook = (observer, id, at) => {
      if (id !== writer || got.has(observer) || !observers.includes(observer)) return
      got.set(observer, at)
      if (got.size === observers.length) finish()
    }
    this.hooks.add(hook)
    const timer = setTimeout(finish, timeoutMs)
    return { done: promise }
  }
}

/** Waits until a write on the first node shows up on every stream (so every stream is open). */
async function streamsReady (watcher: StateWatcher, nodes: TestnetNode[]): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const wait = watcher.arrivals(nodes[0]!.peerId!, nodes.map((n) => n.peerId!), 3_000)
    await connect(nodes[0]!.apiUrl).updateLabels({ 'bench.warmup': String(attempt) }, [])
    const got = await wait.done
    if ([...got.values()].every((t) => t !== null)) return
  }
  throw new Error('the event streams of the nodes did not all open')
}

async function digests (clients: Client[]): Promise<Array<string | null>> {
  return await Promise.all(clients.map(async (c) => {
    try {
      return (await c.state()).digest
    } catch {
      return null
    }
  }))
}

/** Polls every `everyMs` until all digests are equal; the time that took, or NaN on timeout. */
async function untilEqualDigests (clients: Client[], since: number, everyMs: number, timeoutMs: number): Promise<number> {
  const deadline = since + timeoutMs
  while (performance.now() < deadline) {
    const ds = await digests(clients)
    if (ds[0] !== null && ds.every((d) => d === ds[0])) return performance.now() - since
    await sleep(everyMs)
  }
  return NaN
}

async function until (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await sleep(everyMs)
  }
  throw new Error(`timed out waiting for ${what}`)
}

function gossipTotals (infos: StateInfo[]): { published: number, received: number, applied: number, dropped: number, syncs: number, syncBytes: number } {
  const t = { published: 0, received: 0, applied: 0, dropped: 0, syncs: 0, syncBytes: 0 }
  for (const i of infos) {
    t.published += i.stats.gossip.published
    t.received += i.stats.gossip.received
    t.applied += i.stats.gossip.applied
    t.dropped += Object.values(i.stats.gossip.dropped).reduce((a, b) => a + b, 0)
    t.syncs += i.stats.sync.started
    t.syncBytes += i.stats.sync.appliedBytes
  }
  return t
}

// ---- 1. propagation --------------------------------------------------------------

async function propagation (sizes: number[], samples: number): Promise<void> {
  const rows: string[][] = []
  for (const n of sizes) {
    log(`propagation N=${n}: starting the testnet`)
    const { dir, nodes } = await upTestnet(n)
    const watcher = new StateWatcher()
    try {
      for (const node of nodes) watcher.follow(node)
      await streamsReady(watcher, nodes)
      const clients = nodes.map((node) => connect(node.apiUrl, { timeoutMs: 10_000 }))
      // One write on every node first (not counted), then the cluster's CPU use with nothing written.
      for (const [i, c] of clients.entries()) {
        const wait = watcher.arrivals(nodes[i]!.peerId!, nodes.map((x) => x.peerId!), 5_000)
        await c.updateLabels({ 'bench.seq': 'warm-up' }, [])
        await wait.done
      }
      const idleTicks = nodes.map((node) => cpuTicks(node.pid!))
      const idleFrom = performance.now()
      await sleep(3_000)
      const idleCpu = nodes.reduce((sum, node, i) => sum + cpuTicks(node.pid!) - idleTicks[i]!, 0) / 100 / ((performance.now() - idleFrom) / 1000) * 100
      const statsBefore = gossipTotals(await Promise.all(clients.map(async (c) => await c.state())))
      const alarmsBefore = { suspicions: watcher.suspicions, deaths: watcher.deaths }
      const all: number[] = []
      const firsts: number[] = []
      const acks: number[] = []
      const afterAck: number[] = []
      let missing = 0
      let mismatched = 0
      const slow: string[] = []
      const ticksBefore = nodes.map((node) => cpuTicks(node.pid!))
      const cpuBefore = process.cpuUsage()
      const sampling = performance.now()
      for (let s = 0; s < samples; s++) {
        const w = s % n
        const writer = nodes[w]!.peerId!
        const observers = nodes.filter((_, i) => i !== w).map((x) => x.peerId!)
        const wait = watcher.arrivals(writer, observers, 10_000)
        const started = performance.now()
        await clients[w]!.updateLabels({ 'bench.seq': String(s) }, [])
        const acked = performance.now()
        const got = await wait.done
        const times = [...got.values()]
        if (times.some((t) => t === null)) {
          missing++
        } else {
          const last = Math.max(...(times as number[]))
          all.push(last - started)
          firsts.push(Math.min(...(times as number[])) - started)
          afterAck.push(last - acked)
          if (last - started > 100) {
            const late = [...got].filter(([, t]) => t! - started > 100).map(([o, t]) => `${nodes.findIndex((x) => x.peerId === o)}:${ms(t! - started)}`)
            slow.push(`#${s} from ${w} → ${late.join(' ')}`)
          }
        }
        acks.push(acked - started)
        // Off the clock: every observer's record of the writer holds this very update.
        const records = await Promise.all(clients.filter((_, i) => i !== w).map(async (c) => (await c.stateNodes()).nodes.find((r) => r.id === writer)))
        if (records.some((r) => r?.labels['bench.seq'] !== String(s))) mismatched++
        await sleep(100)
      }
      const elapsedS = (performance.now() - sampling) / 1000
      const nodeCpu = nodes.reduce((sum, node, i) => sum + cpuTicks(node.pid!) - ticksBefore[i]!, 0) / 100 / elapsedS * 100
      const cpu = process.cpuUsage(cpuBefore)
      const benchCpu = (cpu.user + cpu.system) / 1000 / 1000 / elapsedS * 100
      const statsAfter = gossipTotals(await Promise.all(clients.map(async (c) => await c.state())))
      const suspicions = watcher.suspicions - alarmsBefore.suspicions
      const deaths = watcher.deaths - alarmsBefore.deaths
      const p50 = percentile(all, 0.5)
      const p99 = percentile(all, 0.99)
      log(`propagation N=${n}: all nodes p50 ${ms(p50)}, p99 ${ms(p99)}, max ${ms(percentile(all, 1))}; ack p50 ${ms(percentile(acks, 0.5))}, first node p50 ${ms(percentile(firsts, 0.5))}; ${missing} missing, ${mismatched} not verified; CPU of all nodes idle ${Math.round(idleCpu)} %, while sampling ${Math.round(nodeCpu)} % (bench ${Math.round(benchCpu)} %) of a core; ` +
        `while sampling: ${statsAfter.published - statsBefore.published} gossip messages published, ${statsAfter.dropped - statsBefore.dropped} dropped (gaps), ${statsAfter.syncs - statsBefore.syncs} anti-entropy rounds, a live node marked suspect ${suspicions} times and dead ${deaths} times (summed over all nodes' views)`)
      if (slow.length > 0) log(`propagation N=${n}: samples over 100 ms (sample, writer → late observers): ${slow.join('; ')}`)
      rows.push([String(n), String(all.length), ms(percentile(acks, 0.5)), ms(percentile(firsts, 0.5)), ms(percentile(afterAck, 0.5)), ms(p50), ms(p99), ms(percentile(all, 1)), String(missing), String(mismatched), `${Math.round(idleCpu)} %`, `${Math.round(nodeCpu)} %`, String(suspicions)])
      const target = n === 20 ? 'p99 ≤ 100 ms' : ''
      figure('propagation', `N=${n} all nodes have it, p50`, ms(p50))
      figure('propagation', `N=${n} all nodes have it, p99`, ms(p99), target, n === 20 ? p99 <= 100 && missing === 0 : undefined)
      if (missing + mismatched > 0) figure('propagation', `N=${n} samples missing / not verified`, `${missing} / ${mismatched}`, '0', false)
    } finally {
      watcher.stop()
      await downTestnet(dir)
    }
  }
  process.stdout.write(`\npropagation: one label update through the API → the change event on every other node (the writer rotates over the nodes; ${samples} samples per N, 100 ms apart, after one warm-up write per node); CPU = all nodes together, % of one core (the machine has ${cpus().length} cores)\n`)
  process.stdout.write(table(['N', 'SAMPLES', 'ACK p50', 'FIRST p50', 'ACK→ALL p50', 'ALL p50', 'ALL p99', 'ALL max', 'MISSING', 'UNVERIFIED', 'CPU IDLE', 'CPU SAMPLING', 'SUSPECT MARKS'], rows) + '\n')
}

// ---- 2. throughput ---------------------------------------------------------------

/** Writes in flight to one node at most; a write due while a node is at this is shed (not sent). */
const IN_FLIGHT_MAX = 64

interface Probe {
  writer: number
  value: number
  sentAt: number
  ackAt: number | null
  /** Observers that do not have it yet: whether a check is running, and the first event since it began. */
  pending: Map<string, { checking: boolean, dirtySince: number | null }>
  arrivals: number[]
  settled: PromiseWithResolvers<void>
  timer?: NodeJS.Timeout
}

interface LoadResult {
  rate: number
  issued: number
  acked: number
  failed: number
  shed: number
  seconds: number
  lags: number[]
  lagsFromSend: number[]
  ackMs: number[]
  probesMissing: number
  convergeMs: number
  nodeCpuPct: number
  benchCpuPct: number
  gossipPerSec: number
  updatesPerMessage: number
  suspicions: number
  deaths: number
}

async function throughput (n: number, rates: number[], durationMs: number): Promise<void> {
  log(`throughput N=${n}: starting the testnet`)
  const { dir, nodes } = await upTestnet(n)
  const watcher = new StateWatcher()
  const results: LoadResult[] = []
  try {
    for (const node of nodes) watcher.follow(node)
    await streamsReady(watcher, nodes)
    const clients = nodes.map((node) => connect(node.apiUrl, { timeoutMs: 15_000 }))
    const byId = new Map(nodes.map((node, i) => [node.peerId!, clients[i]!]))
    let probeSeq = 0
    const seqs = nodes.map(() => 0)
    for (const rate of rates) {
      log(`throughput N=${n}: ${rate} writes/s for ${ms(durationMs)}`)
      const before = gossipTotals(await Promise.all(clients.map(async (c) => await c.state())))
      const ticksBefore = nodes.map((node) => cpuTicks(node.pid!))
      const cpuBefore = process.cpuUsage()
      const alarmsBefore = { suspicions: watcher.suspicions, deaths: watcher.deaths }
      const inFlight = nodes.map(() => 0)
      const probeOut = nodes.map(() => false)
      const writes = new Set<Promise<void>>()
      const probes: Probe[] = []
      const active = new Set<Probe>()
      const errors = new Map<string, number>()
      let issued = 0
      let acked = 0
      let failed = 0
      let shed = 0
      let lastAck = 0
      const ackMs: number[] = []
      const probeEveryMs = 200

      const check = (probe: Probe, observer: string, at: number): void => {
        const state = probe.pending.get(observer)
        if (state === undefined) return
        state.checking = true
        byId.get(observer)!.stateNodes().then(({ nodes: records }) => {
          const record = records.find((r) => r.id === nodes[probe.writer]!.peerId)
          if (Number(record?.labels['bench.probe'] ?? -1) >= probe.value) {
            arrived(probe, observer, at)
          } else if (state.dirtySince !== null) {
            const next = state.dirtySince
            state.dirtySince = null
            check(probe, observer, next)
          } else {
            state.checking = false
          }
        }, () => { state.checking = false })
      }
      const arrived = (probe: Probe, observer: string, at: number): void => {
        if (!probe.pending.delete(observer)) return
        probe.arrivals.push(at)
        if (probe.pending.size === 0) settle(probe)
      }
      const settle = (probe: Probe): void => {
        clearTimeout(probe.timer)
        active.delete(probe)
        probe.settled.resolve()
      }
      const hook: Hook = (observer, writer, at) => {
        for (const probe of active) {
          if (nodes[probe.writer]!.peerId !== writer) continue
          const state = probe.pending.get(observer)
          if (state === undefined) continue
          if (state.checking) state.dirtySince ??= at
          else check(probe, observer, at)
        }
      }
      watcher.hooks.add(hook)

      const write = (i: number, probe: Probe | null): void => {
        const set: Record<string, string> = { 'bench.w': String(++seqs[i]!) }
        if (probe !== null) set['bench.probe'] = String(probe.value)
        inFlight[i]!++
        const sentAt = performance.now()
        const p = clients[i]!.updateLabels(set, []).then(() => {
          acked++
          lastAck = performance.now()
          ackMs.push(lastAck - sentAt)
          if (probe !== null) probe.ackAt = lastAck
        }, (err: Error & { code?: string }) => {
          failed++
          errors.set(err.code ?? err.message, (errors.get(err.code ?? err.message) ?? 0) + 1)
          if (probe !== null) settle(probe)
        }).finally(() => {
          inFlight[i]!--
          if (probe !== null) probeOut[i] = false
          writes.delete(p)
        })
        writes.add(p)
      }

      const started = performance.now()
      let nextProbe = started + probeEveryMs
      while (performance.now() - started < durationMs) {
        const now = performance.now()
        const due = Math.floor((now - started) * rate / 1000)
        while (issued + shed < due) {
          const i = (issued + shed) % n
          if (inFlight[i]! >= IN_FLIGHT_MAX) {
            shed++
            continue
          }
          let probe: Probe | null = null
          if (now >= nextProbe && !probeOut[i]) {
            probe = {
              writer: i, value: ++probeSeq, sentAt: now, ackAt: null, arrivals: [], settled: Promise.withResolvers<void>(),
              pending: new Map(nodes.filter((_, j) => j !== i).map((x) => [x.peerId!, { checking: false, dirtySince: null }])),
            }
            const made = probe
            probe.timer = setTimeout(() => { settle(made) }, 20_000)
            probeOut[i] = true
            probes.push(probe)
            active.add(probe)
            nextProbe = now + probeEveryMs
          }
          write(i, probe)
          issued++
        }
        await sleep(2)
      }
      await Promise.allSettled([...writes])
      const stoppedAt = lastAck
      // Writes done per second of wall time, until the last one was answered.
      const seconds = (Math.max(stoppedAt, started + durationMs) - started) / 1000
      const convergeMs = await untilEqualDigests(clients, stoppedAt, 50, 60_000)
      const cpu = process.cpuUsage(cpuBefore)
      const elapsedS = (performance.now() - started) / 1000
      const nodeCpuPct = nodes.reduce((sum, node, i) => sum + (cpuTicks(node.pid!) - ticksBefore[i]!), 0) / 100 / elapsedS * 100
      await Promise.all(probes.map(async (p) => { await p.settled.promise }))
      watcher.hooks.delete(hook)
      const after = gossipTotals(await Promise.all(clients.map(async (c) => await c.state())))
      const complete = probes.filter((p) => p.pending.size === 0 && p.ackAt !== null)
      const lags = complete.map((p) => Math.max(...p.arrivals) - p.ackAt!)
      const lagsFromSend = complete.map((p) => Math.max(...p.arrivals) - p.sentAt)
      const published = after.published - before.published
      const result: LoadResult = {
        rate,
        issued,
        acked,
        failed,
        shed,
        seconds,
        lags,
        lagsFromSend,
        ackMs,
        probesMissing: probes.length - lags.length,
        convergeMs,
        nodeCpuPct,
        benchCpuPct: (cpu.user + cpu.system) / 1000 / 1000 / elapsedS * 100,
        gossipPerSec: published / elapsedS,
        updatesPerMessage: published === 0 ? NaN : acked / published,
        suspicions: watcher.suspicions - alarmsBefore.suspicions,
        deaths: watcher.deaths - alarmsBefore.deaths,
      }
      results.push(result)
      log(`throughput R=${rate}: ${count(acked)} acked in ${seconds.toFixed(1)} s (${Math.round(acked / seconds)}/s), ${failed} failed${errors.size > 0 ? ` (${[...errors].map(([k, v]) => `${v} ${k}`).join(', ')})` : ''}, ${shed} shed; ` +
        `ack p50 ${ms(percentile(ackMs, 0.5))} p99 ${ms(percentile(ackMs, 0.99))}; lag from ack p50 ${ms(percentile(lags, 0.5))} p99 ${ms(percentile(lags, 0.99))}, from send p50 ${ms(percentile(lagsFromSend, 0.5))} p99 ${ms(percentile(lagsFromSend, 0.99))} (${lags.length} probes, ${result.probesMissing} missing); equal digests ${ms(convergeMs)} after the last ack; ` +
        `gossip ${Math.round(result.gossipPerSec)} msgs/s published (${result.updatesPerMessage.toFixed(1)} writes each), ${after.received - before.received} received, ${after.dropped - before.dropped} dropped, ${after.syncs - before.syncs} anti-entropy rounds; a live node marked suspect ${result.suspicions} times and dead ${result.deaths} times (all views); ` +
        `CPU nodes ${Math.round(nodeCpuPct)} %, bench ${Math.round(result.benchCpuPct)} % of a core`)
      await sleep(1_000)
    }
  } finally {
    watcher.stop()
    await downTestnet(dir)
  }
  process.stdout.write(`\nthroughput at N=${n}: label updates spread over all nodes at a combined rate R for ${ms(durationMs)}, at most ${IN_FLIGHT_MAX} in flight per node (more are shed); lag = write ack (or send) → every other node has it (a probe every 200 ms); negative: the others had it before the writer's answer came\n`)
  process.stdout.write(table(['R /s', 'ACHIEVED /s', 'FAILED', 'SHED', 'ACK p50', 'ACK p99', 'LAG p50', 'LAG p99', 'FROM SEND p50', 'FROM SEND p99', 'PROBES', 'EQUAL AFTER STOP', 'GOSSIP MSG/S', 'WRITES/MSG', 'CPU NODES', 'CPU BENCH', 'SUSPECT MARKS'], results.map((r) => [
    String(r.rate), String(Math.round(r.acked / r.seconds)), String(r.failed), String(r.shed),
    ms(percentile(r.ackMs, 0.5)), ms(percentile(r.ackMs, 0.99)),
    ms(percentile(r.lags, 0.5)), ms(percentile(r.lags, 0.99)), ms(percentile(r.lagsFromSend, 0.5)), ms(percentile(r.lagsFromSend, 0.99)), `${r.lags.length} (${r.probesMissing} lost)`,
    ms(r.convergeMs), r.gossipPerSec.toFixed(0), r.updatesPerMessage.toFixed(1), `${Math.round(r.nodeCpuPct)} %`, `${Math.round(r.benchCpuPct)} %`, String(r.suspicions),
  ])) + '\n')
  for (const r of results) {
    const achieved = r.acked / r.seconds
    figure('throughput', `R=${r.rate}: achieved writes/s`, String(Math.round(achieved)), r.rate >= 1000 ? `≥ ${r.rate}` : '', r.rate >= 1000 ? achieved >= r.rate * 0.95 : undefined)
    figure('throughput', `R=${r.rate}: ack p50 / p99`, `${ms(percentile(r.ackMs, 0.5))} / ${ms(percentile(r.ackMs, 0.99))}`)
    figure('throughput', `R=${r.rate}: lag from ack p50 / p99`, `${ms(percentile(r.lags, 0.5))} / ${ms(percentile(r.lags, 0.99))}`)
    figure('throughput', `R=${r.rate}: lag from send p50 / p99`, `${ms(percentile(r.lagsFromSend, 0.5))} / ${ms(percentile(r.lagsFromSend, 0.99))}`)
    figure('throughput', `R=${r.rate}: equal digests after stop`, ms(r.convergeMs), '≤ 1 s', r.convergeMs <= 1_000)
  }
  const best = results.filter((r) => r.failed === 0 && r.convergeMs <= 1_000).reduce((m, r) => Math.max(m, r.acked / r.seconds), 0)
  figure('throughput', 'highest rate converged ≤ 1 s', `${Math.round(best)}/s`, '≥ 1,000/s', best >= 1_000)
}

// ---- 3. restart catch-up -----------------------------------------------------------

async function restartCatchUp (updates: number): Promise<void> {
  const n = 5
  log(`restart: starting a testnet of ${n}`)
  const { dir, nodes } = await upTestnet(n)
  try {
    const victim = nodes[n - 1]!
    const live = nodes.slice(0, n - 1)
    const clients = nodes.map((node) => connect(node.apiUrl, { timeoutMs: 15_000 }))
    await testnet.stop(dir, victim.index)
    log(`restart: node ${victim.index} stopped; writing ${count(updates)} label updates on the other ${live.length}`)
    const perNode = 8
    let next = 0
    let failed = 0
    const writeStarted = performance.now()
    await Promise.all(live.flatMap((_, i) => Array.from({ length: perNode }, async () => {
      while (next < updates) {
        const seq = next++
        await clients[i]!.updateLabels({ 'bench.r': String(seq) }, []).catch(() => { failed++ })
      }
    })))
    const writeMs = performance.now() - writeStarted
    const liveEqualMs = await untilEqualDigests(clients.slice(0, n - 1), performance.now(), 50, 60_000)
    log(`restart: ${count(updates)} updates in ${ms(writeMs)} (${Math.round(updates / writeMs * 1000)}/s, ${failed} failed); the live nodes equal ${ms(liveEqualMs)} later`)

    const victimClient = connect(victim.apiUrl, { timeoutMs: 2_000 })
    const restartAt = performance.now()
    let apiAt = NaN
    const apiPoll = (async () => {
      while (performance.now() - restartAt < 60_000) {
        try {
          await victimClient.health()
          apiAt = performance.now()
          return
        } catch {
          await sleep(10)
        }
      }
    })()
    const restarting = testnet.restart(dir, victim.index)
    const equalMs = await untilEqualDigests(clients, restartAt, 50, 60_000)
    const equalAt = restartAt + equalMs
    await apiPoll
    await restarting
    const readyMs = performance.now() - restartAt
    const info = await victimClient.state()
    log(`restart: API answered ${ms(apiAt - restartAt)} after the restart; digests equal ${ms(equalMs)} after the restart (${ms(equalAt - apiAt)} after the API answered); node started (runtime file) by ${ms(readyMs)}; its document ${count(info.bytes)} bytes, ${info.stateVector.clients} Yjs clients`)
    process.stdout.write(`\nrestart catch-up: testnet of ${n}, node ${victim.index} stopped (SIGTERM), ${count(updates)} label updates on the others, then restarted\n`)
    process.stdout.write(table(['UPDATES', 'WRITE RATE', 'RESTART→API', 'RESTART→EQUAL', 'API→EQUAL', 'DOC BYTES'], [[
      count(updates), `${Math.round(updates / writeMs * 1000)}/s`, ms(apiAt - restartAt), ms(equalMs), ms(equalAt - apiAt), count(info.bytes),
    ]]) + '\n')
    figure('restart', `write rate of ${count(updates)} updates (4 nodes)`, `${Math.round(updates / writeMs * 1000)}/s`)
    figure('restart', 'restart → API answers', ms(apiAt - restartAt))
    figure('restart', 'restart → digest equal', ms(equalMs), '≤ 2 s', equalMs <= 2_000)
    figure('restart', 'API answers → digest equal', ms(equalAt - apiAt), '≤ 2 s', equalAt - apiAt <= 2_000)
  } finally {
    await downTestnet(dir)
  }
}

// ---- 4. retention (crdt only, simulated clock) --------------------------------------
//
// Five writer replicas in two worker threads (0–2 and 3–4, so that both cores work)
// and one observing replica in a third, which only receives: each thread's heap is its
// own isolate's, so the observer's growth is what one replica holds. A writer's
// transaction goes at once to the replicas of its thread and, by message, to the
// others (in order per writer, as gossip would bring it).

interface RetentionSetup {
  replicas: number
  ratePerSec: number
  tickMs: number
  retentionMs: number
  maintainEveryMs: number
  startMs: number
}

interface ReplicaMeasure { index: number, docBytes: number, canonicalBytes: number, digest: string, tasks: number, live: number, garbage: number }
interface ThreadMeasure { heapUsed: number, replicas: ReplicaMeasure[], rejected: number }

type SimCommand =
  | { type: 'tick', tick: number }
  | { type: 'flush', id: number }
  | { type: 'measure' }
type SimReply =
  | { type: 'ticked', finished: number, removed: number, rotated: number, transactions: number, liveTasks: number }
  | { type: 'flushed', id: number }
  | { type: 'measured', measure: ThreadMeasure }
  | { type: 'ready' }
type PeerMessage = { type: 'update', update: Uint8Array } | { type: 'marker', id: number }

interface SimWorkerData { role: 'sim', ids: number[], setup: RetentionSetup, peers: MessagePort[], observer: MessagePort }
interface ObserverWorkerData { role: 'observer', inputs: MessagePort[] }

function gcNow (): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:state does)')
  gc()
}

function measureReplica (index: number, state: ClusterState): ReplicaMeasure {
  const canonical = canonicalState(state.doc)
  const own = state.garbage().find((g) => g.kind === 'tasks' && parseOwner(g.space) === state.self)
  return {
    index,
    docBytes: Y.encodeStateAsUpdate(state.doc).byteLength,
    canonicalBytes: canonical.byteLength,
    digest: createHash('sha256').update(canonical).digest('hex'),
    tasks: state.counts().tasks,
    live: own?.live ?? 0,
    garbage: own?.garbage ?? 0,
  }
}

/** A node id as long as a real one (an Ed25519 peer id is 52 characters). */
function simNodeId (i: number): string {
  return `12D3KooW${'SimulatedNode'.repeat(4).slice(0, 40)}${String(i).padStart(4, '0')}`
}

/** A life id shaped like the store's (a UUID). */
function randomUUIDFrom (i: number): string {
  return `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`
}

function parseOwner (space: string): string {
  return space.slice(0, space.lastIndexOf('/'))
}

/** Waits for a marker with `id` on every port; updates before it are applied by then (ports keep order). */
function markers (ports: MessagePort[], onUpdate: (update: Uint8Array) => void): (id: number) => Promise<void> {
  const seen = new Map<number, number>()
  const waiting = new Map<number, () => void>()
  for (const port of ports) {
    port.on('message', (msg: PeerMessage) => {
      if (msg.type === 'update') {
        onUpdate(msg.update)
        return
      }
      seen.set(msg.id, (seen.get(msg.id) ?? 0) + 1)
      if (seen.get(msg.id) === ports.length) waiting.get(msg.id)?.()
    })
  }
  return async (id) => {
    if (seen.get(id) === ports.length) return
    await new Promise<void>((resolve) => { waiting.set(id, resolve) })
  }
}

/** The observing replica: applies what the writers send, measures itself when asked. */
function observerThread (data: ObserverWorkerData): void {
  const port = parentPort!
  gcNow()
  const baseline = process.memoryUsage().heapUsed
  const state = new ClusterState({ self: 'observer', life: 'observer-life', keys: derivedKeys('observer') })
  let rejected = 0
  const markerFrom = markers(data.inputs, (update) => {
    if (!applyRemote(state.doc, update, ORIGIN.remote).ok) rejected++
  })
  port.on('message', (msg: SimCommand) => {
    if (msg.type !== 'flush') return
    void markerFrom(msg.id).then(() => {
      const replica = measureReplica(-1, state)
      gcNow()
      port.postMessage({ type: 'measured', measure: { heapUsed: process.memoryUsage().heapUsed - baseline, replicas: [replica], rejected } } satisfies SimReply)
    })
  })
  port.postMessage({ type: 'ready' } satisfies SimReply)
}

/** Writer replicas: each tick, every one runs its task lifecycles in one transaction. */
function simThread (data: SimWorkerData): void {
  const port = parentPort!
  const { setup, ids } = data
  gcNow()
  const baseline = process.memoryUsage().heapUsed
  const replicas = ids.map((i) => new ClusterState({ self: simNodeId(i), life: randomUUIDFrom(i), keys: derivedKeys(simNodeId(i)) }))
  let rejected = 0
  let transactions = 0
  const applyHere = (update: Uint8Array, except: ClusterState | null): void => {
    for (const r of replicas) if (r !== except && !applyRemote(r.doc, update, ORIGIN.remote).ok) rejected++
  }
  const markerFrom = markers(data.peers, (update) => { applyHere(update, null) })
  const outs = [...data.peers, data.observer]
  for (const r of replicas) {
    r.doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin !== ORIGIN.write && origin !== ORIGIN.maintain) return
      transactions++
      applyHere(update, r)
      for (const out of outs) out.postMessage({ type: 'update', update } satisfies PeerMessage)
    })
  }
  let now = setup.startMs
  for (const [k, r] of replicas.entries()) {
    const i = ids[k]!
    r.setNode({ id: r.self, addrs: [`/ip4/10.0.0.${i + 1}/tcp/7946`], apiUrl: `http://10.0.0.${i + 1}:7947`, cpuMillis: 8000, memoryBytes: 32 * 1024 ** 3, labels: { zone: `z${i % 3}` }, startedAt: now, updatedAt: now })
  }
  const perTick = setup.ratePerSec * setup.tickMs / 1000 / setup.replicas
  const runTicks = Math.max(1, Math.round(10_000 / setup.tickMs))
  const sims = replicas.map((state, k) => ({
    state,
    index: ids[k]!,
    rng: new Rng(4242).fork(`replica-${ids[k]!}`),
    claimed: [] as ClaimRecord[],
    /** Running tasks by the tick they finish in. */
    running: new Map<number, ClaimRecord[]>(),
    owed: 0,
    seq: 0,
    lastMaintain: now,
  }))
  let finished = 0
  let removed = 0
  let rotated = 0

  const tick = (t: number): void => {
    now = setup.startMs + t * setup.tickMs
    for (const sim of sims) {
      const r = sim.state
      r.transact(() => {
        for (const task of sim.running.get(t) ?? []) {
          r.putTask({ ...task, state: 'exited', since: now, finishedAt: now, exit: { code: 0, signal: null, reason: 'exited' } })
          finished++
        }
        sim.running.delete(t)
        for (const task of sim.claimed) {
          const started: ClaimRecord = { ...task, state: 'running', since: now, startedAt: now }
          r.putTask(started)
          const end = t + 1 + sim.rng.int(runTicks)
          const list = sim.running.get(end) ?? []
          list.push(started)
          sim.running.set(end, list)
        }
        sim.claimed = []
        sim.owed += perTick
        for (; sim.owed >= 1; sim.owed--) {
          const seq = sim.seq++
          const record: ClaimRecord = { id: `t-${sim.index}-${seq.toString(36)}`, job: `job-${(seq % 97).toString(36)}`, node: r.self, generation: 1, state: 'claimed', since: now, restarts: 0 }
          r.putTask(record)
          sim.claimed.push(record)
        }
      })
      if (now - sim.lastMaintain >= setup.maintainEveryMs) {
        sim.lastMaintain = now
        const report = r.maintain({ now, taskRetentionMs: setup.retentionMs, jobRetentionMs: 24 * 3_600_000, isGone: () => false })
        removed += report.removedTasks
        rotated += report.rotatedSpaces
      }
    }
  }

  port.on('message', (msg: SimCommand) => {
    if (msg.type === 'tick') {
      tick(msg.tick)
      port.postMessage({ type: 'ticked', finished, removed, rotated, transactions, liveTasks: replicas[0]!.counts().tasks } satisfies SimReply)
    } else if (msg.type === 'flush') {
      for (const out of outs) out.postMessage({ type: 'marker', id: msg.id } satisfies PeerMessage)
      void markerFrom(msg.id).then(() => { port.postMessage({ type: 'flushed', id: msg.id } satisfies SimReply) })
    } else {
      const measured = replicas.map((r, k) => measureReplica(ids[k]!, r))
      gcNow()
      port.postMessage({ type: 'measured', measure: { heapUsed: process.memoryUsage().heapUsed - baseline, replicas: measured, rejected } } satisfies SimReply)
    }
  })
  port.postMessage({ type: 'ready' } satisfies SimReply)
}

/** A worker and a queue of its replies, in order. */
class Thread {
  readonly worker: Worker
  private readonly inbox: SimReply[] = []
  private waiter: ((reply: SimReply) => void) | null = null

  constructor (data: SimWorkerData | ObserverWorkerData, transfer: MessagePort[]) {
    this.worker = new Worker(new URL(import.meta.url), { workerData: data, transferList: transfer, resourceLimits: { maxYoungGenerationSizeMb: 256 } })
    this.worker.on('message', (reply: SimReply) => {
      const waiter = this.waiter
      this.waiter = null
      if (waiter !== null) waiter(reply)
      else this.inbox.push(reply)
    })
    this.worker.on('error', (err) => { log(`a retention thread failed: ${err.stack ?? err.message}`) })
  }

  send (command: SimCommand): void {
    this.worker.postMessage(command)
  }

  async reply<T extends SimReply['type']> (type: T): Promise<Extract<SimReply, { type: T }>> {
    const reply = this.inbox.shift() ?? await new Promise<SimReply>((resolve) => { this.waiter = resolve })
    if (reply.type !== type) throw new Error(`retention thread answered ${reply.type}, expected ${type}`)
    return reply as Extract<SimReply, { type: T }>
  }
}

async function retention (checkpoints: number[], ratePerSec: number, tickMs: number): Promise<void> {
  gcNow()
  const setup: RetentionSetup = { replicas: 5, ratePerSec, tickMs, retentionMs: 60_000, maintainEveryMs: 10_000, startMs: 1_750_000_000_000 }
  const groups = [[0, 1, 2], [3, 4]]
  const between = new MessageChannel()
  const toObserver = groups.map(() => new MessageChannel())
  const observer = new Thread({ role: 'observer', inputs: toObserver.map((c) => c.port2) }, toObserver.map((c) => c.port2))
  const sims = groups.map((ids, g) => {
    const peer = g === 0 ? between.port1 : between.port2
    return new Thread({ role: 'sim', ids, setup, peers: [peer], observer: toObserver[g]!.port1 }, [peer, toObserver[g]!.port1])
  })
  const threads = [...sims, observer]
  try {
    for (const t of threads) await t.reply('ready')
    let tick = 0
    let flushes = 0
    const wallStart = performance.now()
    let lastProgress = wallStart
    const rows: string[][] = []
    const measured: Array<{ at: number, docBytes: number, canonicalBytes: number, heapAll: number, heapOne: number, tasks: number }> = []
    let finished = 0
    let last: Array<Extract<SimReply, { type: 'ticked' }>> = []
    for (const checkpoint of checkpoints) {
      while (finished < checkpoint) {
        tick++
        for (const s of sims) s.send({ type: 'tick', tick })
        last = await Promise.all(sims.map(async (s) => await s.reply('ticked')))
        finished = last.reduce((n, r) => n + r.finished, 0)
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now()
          const wallS = (lastProgress - wallStart) / 1000
          log(`retention: ${count(finished)} lifecycles in ${wallS.toFixed(0)} s (${Math.round(finished / wallS)}/s), simulated ${((tick * tickMs) / 60_000).toFixed(0)} min, ${count(last[0]!.liveTasks)} live task records in replica 0`)
        }
      }
      // Every update sent so far is applied everywhere before anyone measures.
      const id = ++flushes
      for (const s of sims) s.send({ type: 'flush', id })
      for (const s of sims) await s.reply('flushed')
      observer.send({ type: 'flush', id })
      const fromObserver = (await observer.reply('measured')).measure
      const fromSims: ThreadMeasure[] = []
      for (const s of sims) {
        s.send({ type: 'measure' })
        fromSims.push((await s.reply('measured')).measure)
      }
      const all = [...fromSims.flatMap((m) => m.replicas), ...fromObserver.replicas]
      const r0 = all.find((r) => r.index === 0)!
      const equal = all.every((r) => r.digest === r0.digest)
      const rejected = [...fromSims, fromObserver].reduce((n, m) => n + m.rejected, 0)
      const heapAll = fromSims.reduce((n, m) => n + m.heapUsed, 0)
      const heapOne = fromObserver.heapUsed
      const wallS = (performance.now() - wallStart) / 1000
      const removed = last.reduce((n, r) => n + r.removed, 0)
      const rotated = last.reduce((n, r) => n + r.rotated, 0)
      const transactions = last.reduce((n, r) => n + r.transactions, 0)
      measured.push({ at: finished, docBytes: r0.docBytes, canonicalBytes: r0.canonicalBytes, heapAll, heapOne, tasks: r0.tasks })
      log(`retention: after ${count(finished)} lifecycles (${wallS.toFixed(0)} s): document ${mb(r0.docBytes)}, canonical ${mb(r0.canonicalBytes)}, ${count(r0.tasks)} live task records, ` +
        `heap growth ${mib(heapAll)} for the 5 writers (${fromSims.map((m) => mib(m.heapUsed)).join(' + ')}), ${mib(heapOne)} for the observer; replicas equal: ${equal ? 'yes' : 'NO'}; ` +
        `${count(transactions)} transactions, ${rejected} updates refused, ${count(removed)} tasks expired, ${rotated} space rotations; replica 0's own space ${r0.live} live + ${r0.garbage} garbage entries`)
      rows.push([count(finished), `${((tick * tickMs) / 3_600_000).toFixed(2)} h`, mb(r0.docBytes), mb(r0.canonicalBytes), count(r0.tasks), `${Math.round(r0.canonicalBytes / Math.max(1, r0.tasks))} B`,
        mib(heapAll), mib(heapOne), equal ? 'yes' : 'NO', String(rejected), `${wallS.toFixed(0)} s`])
      if (!equal || rejected > 0) figure('retention', `after ${count(finished)}: replicas equal, no update refused`, equal ? `${rejected} refused` : 'replicas differ', 'equal, 0 refused', false)
    }
    process.stdout.write(`\nretention: 5 writer replicas (crdt only), ${ratePerSec} task lifecycles/s cluster-wide (claimed → running → exited after 1–10 s), one transaction per node per ${tickMs} ms tick, maintain every 10 s, task retention 60 s, simulated clock\n`)
    process.stdout.write(table(['LIFECYCLES', 'SIMULATED', 'DOCUMENT', 'CANONICAL', 'LIVE TASKS', 'PER TASK', 'HEAP 5 WRITERS', 'HEAP 1 OBSERVER', 'EQUAL', 'REFUSED', 'WALL'], rows) + '\n')
    process.stdout.write('heap = heapUsed after gc() minus before the replicas existed, per thread: the 5 writers (two threads, with the simulation\'s own bookkeeping) and one observing replica alone (a third thread that only receives)\n')
    const first = measured[0]!
    figure('retention', `after ${count(first.at)}: document bytes`, mb(first.docBytes), '≤ 2 MB', first.docBytes <= 2_000_000)
    figure('retention', `after ${count(first.at)}: canonical bytes`, mb(first.canonicalBytes))
    figure('retention', `after ${count(first.at)}: live task records`, count(first.tasks))
    figure('retention', `after ${count(first.at)}: heap growth, one replica`, mib(first.heapOne), '≤ 50 MB', first.heapOne <= 50 * 1024 * 1024)
    figure('retention', `after ${count(first.at)}: heap growth, 5 writers`, mib(first.heapAll))
    for (const later of measured.slice(1)) {
      const within = (a: number, b: number): boolean => a <= b * 1.1
      figure('retention', `after ${count(later.at)}: document bytes`, mb(later.docBytes), `≤ ${mb(first.docBytes * 1.1)} (+10 %)`, within(later.docBytes, first.docBytes))
      figure('retention', `after ${count(later.at)}: canonical bytes`, mb(later.canonicalBytes))
      figure('retention', `after ${count(later.at)}: live task records`, count(later.tasks))
      figure('retention', `after ${count(later.at)}: heap growth, one replica`, mib(later.heapOne), `≤ ${mib(first.heapOne * 1.1)} (+10 %)`, within(later.heapOne, first.heapOne))
      figure('retention', `after ${count(later.at)}: heap growth, 5 writers`, mib(later.heapAll), `≤ ${mib(first.heapAll * 1.1)} (+10 %)`, within(later.heapAll, first.heapAll))
    }
  } finally {
    for (const t of threads) await t.worker.terminate()
  }
}

// ---- 5. startup with a large state ---------------------------------------------------

async function startup (records: number): Promise<void> {
  const dir = await tempDir('startup')
  const dataDir = join(dir, 'node')
  const logFile = join(dir, 'node.log')
  await mkdir(dataDir, { recursive: true })
  const clusterKeyFile = join(dir, 'cluster.key')
  writeClusterKey(clusterKeyFile)
  const [port, apiPort] = await freePorts(2)
  const apiUrl = `http://127.0.0.1:${apiPort!}`
  const client = connect(apiUrl, { timeoutMs: 30_000 })

  /** Spawns the node; times to API answering, to the runtime file, and to `want` task records. */
  const start = async (want: number): Promise<{ pid: number, healthMs: number, recordsMs: number, readyMs: number, stateCallMs: number }> => {
    const t0 = performance.now()
    const pid = spawnNode({ dataDir, logFile, port: port!, apiPort: apiPort!, join: [], labels: {}, clusterKeyFile })
    spawned.set(pid, dataDir)
    let healthMs = NaN
    let readyMs = NaN
    const ready = (async () => {
      await until('the runtime file', async () => (await readRuntime(dataDir))?.pid === pid || !isNodeProcess(pid, dataDir), 60_000, 10)
      readyMs = performance.now() - t0
    })()
    await until('the API', async () => {
      if (!isNodeProcess(pid, dataDir)) throw new Error(`the node exited during start; see ${logFile}`)
      try {
        await connect(apiUrl, { timeoutMs: 1_000 }).health()
        return true
      } catch {
        return false
      }
    }, 60_000, 10)
    healthMs = performance.now() - t0
    let recordsMs = NaN
    let stateCallMs = NaN
    await until(`${want} records`, async () => {
      const asked = performance.now()
      const info = await client.state()
      stateCallMs = performance.now() - asked
      if (info.records.tasks < want) return false
      recordsMs = performance.now() - t0
      return true
    }, 60_000, 10)
    await ready
    return { pid, healthMs, recordsMs, readyMs, stateCallMs }
  }
  const stopNode = async (pid: number): Promise<void> => {
    signal(pid, 'SIGTERM')
    if (!await waitForExit(pid, dataDir, 10_000)) signal(pid, 'SIGKILL')
    await waitForExit(pid, dataDir, 5_000)
    spawned.delete(pid)
  }

  try {
    log('startup: starting a node on an empty data dir (its identity, and the baseline)')
    const empty = await start(0)
    await stopNode(empty.pid)
    const peerId = (JSON.parse(await readFile(join(dataDir, 'murmur.json'), 'utf8')) as { peerId: string }).peerId

    log(`startup: writing ${count(records)} task records of node ${peerId.slice(-8)} into its state database`)
    const built = performance.now()
    const store = await StateStore.open(join(dataDir, 'state'), { log: pino({ level: 'silent' }), compactAfterUpdates: 1_000_000, compactAfterBytes: 1024 ** 4 })
    let snapshotBytes = 0
    let logUpdates = 0
    let docBytes = 0
    try {
      const loaded = await store.load()
      const doc = new Y.Doc()
      doc.transact(() => {
        if (loaded.snapshot !== null) Y.applyUpdate(doc, loaded.snapshot)
        for (const u of loaded.updates) Y.applyUpdate(doc, u)
      }, ORIGIN.load)
      const state = new ClusterState({ self: peerId, life: loaded.lifeId, doc, keys: derivedKeys(peerId) })
      store.setSnapshotSource(() => Y.encodeStateAsUpdate(doc))
      const appends: Array<Promise<void>> = []
      doc.on('update', (update: Uint8Array) => { appends.push(store.append(update, { durable: false })) })
      const now = Date.now()
      const task = (i: number, over: Partial<ClaimRecord> = {}): ClaimRecord => ({
        id: `task-${i.toString(36).padStart(5, '0')}`, job: `job-${(i % 1000).toString(36)}`, node: peerId, generation: 1,
        state: 'running', since: now, startedAt: now, restarts: 0, ...over,
      })
      for (let i = 0; i < records; i += 1_000) {
        state.transact(() => { for (let j = i; j < Math.min(records, i + 1_000); j++) state.putTask(task(j)) })
      }
      await Promise.all(appends.splice(0))
      await store.compact()
      // Then some updates in the log after the snapshot, as a running node leaves them.
      const rng = new Rng(7)
      for (let k = 0; k < 200; k++) {
        state.transact(() => {
          for (let j = 0; j < 5; j++) {
            const i = rng.int(records)
            state.putTask(task(i, { since: now + k, restarts: 1 }))
          }
        })
      }
      await Promise.all(appends.splice(0))
      const stats = store.stats()
      snapshotBytes = stats.snapshotBytes
      logUpdates = stats.updates
      docBytes = Y.encodeStateAsUpdate(doc).byteLength
      if (state.counts().tasks !== records) throw new Error(`wrote ${state.counts().tasks} task records, not ${records}`)
    } finally {
      await store.close()
    }
    log(`startup: stored in ${ms(performance.now() - built)}: snapshot ${mb(snapshotBytes)} + ${logUpdates} log updates (document ${mb(docBytes)})`)

    log('startup: starting the node on it')
    const full = await start(records)
    const logText = await readFile(logFile, 'utf8').catch(() => '')
    const loads = [...logText.matchAll(/"msg":"state loaded"/g)].length
    const loadLine = logText.split('\n').filter((l) => l.includes('"msg":"state loaded"')).at(-1)
    const loadMs = loadLine === undefined ? NaN : Number((JSON.parse(loadLine) as { ms?: number }).ms)
    await stopNode(full.pid)
    log(`startup: spawn → API ${ms(full.healthMs)} (empty: ${ms(empty.healthMs)}), → ${count(records)} records in /v1/state ${ms(full.recordsMs)}, → started (runtime file) ${ms(full.readyMs)} (empty: ${ms(empty.readyMs)}); the node logged 'state loaded' after ${ms(loadMs)} (${loads} starts in the log); one /v1/state call took ${ms(full.stateCallMs)}`)
    process.stdout.write(`\nstartup: one node, its state database holding ${count(records)} task records (snapshot ${mb(snapshotBytes)} + ${logUpdates} log updates)\n`)
    process.stdout.write(table(['DATA', 'SPAWN→API', 'SPAWN→RECORDS', 'SPAWN→STARTED', 'STATE LOAD (LOG)', '/v1/state CALL'], [
      ['empty', ms(empty.healthMs), '-', ms(empty.readyMs), '-', ms(empty.stateCallMs)],
      [`${count(records)} tasks`, ms(full.healthMs), ms(full.recordsMs), ms(full.readyMs), ms(loadMs), ms(full.stateCallMs)],
    ]) + '\n')
    figure('startup', 'spawn → API, empty data dir', ms(empty.healthMs))
    figure('startup', `spawn → API, ${count(records)} records (state loaded)`, ms(full.healthMs), '≤ 2 s', full.healthMs <= 2_000)
    figure('startup', `spawn → /v1/state shows ${count(records)}`, ms(full.recordsMs), '≤ 2 s', full.recordsMs <= 2_000)
    figure('startup', 'state load inside the node (its log)', ms(loadMs))
  } finally {
    for (const [pid, d] of spawned) if (d === dataDir && isNodeProcess(pid, d)) await stopNode(pid)
    await removeDir(dir)
  }
}

// ---- main ------------------------------------------------------------------------

// ---- signing: the cost of signed records, in this process --------------------------

/** Keys that sign nothing and accept everything: the same code path, without the cryptography. */
const UNSIGNED: RecordKeys = { sign: () => new Uint8Array(64), verify: () => true }

/**
 * One round: `replicas` replicas; writers rotate, each write (a claim changing
 * state, as a running cluster writes most) is applied to every other replica as a
 * peer's update. Returns writes/s and the per-write time (write + sign + apply
 * everywhere), p50 and p99.
 */
async function signingRound (signed: boolean, replicas: number, writes: number): Promise<{ perSec: number, p50: number, p99: number }> {
  const keys = await Promise.all(Array.from({ length: replicas }, async () => await generateKeyPair('Ed25519')))
  const states = keys.map((key) => {
    const self = peerIdFromPrivateKey(key).toString()
    return new ClusterState({ self, life: randomUUID(), keys: signed ? nodeKeys(key) : UNSIGNED })
  })
  const pending: Uint8Array[] = []
  for (const s of states) s.doc.on('update', (u: Uint8Array, origin: unknown) => { if (origin !== ORIGIN.remote) pending.push(u) })
  const times: number[] = []
  const started = performance.now()
  for (let i = 0; i < writes; i++) {
    const t0 = performance.now()
    const writer = states[i % replicas]!
    writer.putTask({ id: `t${i % 200}`, job: 'j', node: writer.self, generation: 1, state: i % 2 === 0 ? 'running' : 'restarting', since: i, restarts: i % 7 })
    for (const update of pending.splice(0)) {
      for (const s of states) if (s !== writer && !s.applyRemote(update).ok) throw new Error('an honest update was refused')
    }
    times.push(performance.now() - t0)
  }
  const elapsed = performance.now() - started
  times.sort((a, b) => a - b)
  return { perSec: writes / (elapsed / 1000), p50: percentile(times, 0.5), p99: percentile(times, 0.99) }
}

async function signing (rounds: number, writes: number): Promise<void> {
  const replicas = 10
  log(`signing: ${rounds} rounds of ${count(writes)} writes on ${replicas} replicas, signed and unsigned in turn`)
  const results: Record<'signed' | 'unsigned', Array<{ perSec: number, p50: number, p99: number }>> = { signed: [], unsigned: [] }
  for (let r = 0; r < rounds; r++) {
    for (const signed of r % 2 === 0 ? [true, false] : [false, true]) results[signed ? 'signed' : 'unsigned'].push(await signingRound(signed, replicas, writes))
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  for (const mode of ['unsigned', 'signed'] as const) {
    const rs = results[mode]
    figure('signing', `${mode}: writes/s, each applied on ${replicas - 1} replicas`, `${count(Math.round(median(rs.map((x) => x.perSec))))}/s`)
    figure('signing', `${mode}: one write, signed and applied everywhere, p50 / p99`, `${ms(median(rs.map((x) => x.p50)))} / ${ms(median(rs.map((x) => x.p99)))}`)
  }
  const cost = median(results.signed.map((x) => 1000 / x.perSec)) - median(results.unsigned.map((x) => 1000 / x.perSec))
  figure('signing', `signatures add per write (1 sign + ${replicas - 1} verifies)`, ms(cost))
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      sizes: { type: 'string' },
      rates: { type: 'string' },
      lifecycles: { type: 'string' },
    },
  })
  const quick = values.quick
  const only = values.only === undefined ? [...PARTS] : values.only.split(',').map((s) => s.trim())
  const unknown = only.filter((p) => !(PARTS as readonly string[]).includes(p))
  const sizes = (values.sizes ?? (quick ? '5' : '5,10,20')).split(',').map(Number)
  const rates = (values.rates ?? (quick ? '250,1000' : '250,500,1000,2000')).split(',').map(Number)
  const lifecycles = (values.lifecycles ?? (quick ? '20000,40000' : '100000,1000000')).split(',').map(Number)
  if (unknown.length > 0 || sizes.some((n) => !Number.isInteger(n) || n < 2 || n > testnet.TESTNET_LIMITS.nodesMax) || rates.some((r) => !Number.isFinite(r) || r <= 0) ||
    lifecycles.some((x, i) => !Number.isInteger(x) || x < 1 || (i > 0 && x <= lifecycles[i - 1]!))) {
    process.stderr.write(`bench: --only takes parts from ${PARTS.join(',')}; --sizes node counts from 2 to ${testnet.TESTNET_LIMITS.nodesMax}; --rates writes per second (e.g. 250,1000); --lifecycles rising checkpoints (e.g. 100000,1000000)\n`)
    process.exit(2)
  }
  const parts = new Set(only as Part[])
  process.once('SIGINT', () => {
    log('interrupted; stopping what was started')
    void cleanupAll().finally(() => process.exit(130))
  })
  const started = performance.now()
  try {
    if (parts.has('propagation')) await propagation(sizes, quick ? 10 : 50)
    if (parts.has('throughput')) await throughput(quick ? 5 : 10, rates, quick ? 3_000 : 10_000)
    if (parts.has('restart')) await restartCatchUp(quick ? 1_000 : 10_000)
    if (parts.has('startup')) await startup(quick ? 10_000 : 100_000)
    if (parts.has('retention')) await retention(lifecycles, 200, 1_000)
    if (parts.has('signing')) await signing(quick ? 2 : 6, quick ? 1_000 : 3_000)
  } finally {
    await cleanupAll()
  }
  process.stdout.write(`\nsummary${quick ? ' (--quick: smaller runs, the targets are for the full run)' : ''}, ${ms(performance.now() - started)} in all\n`)
  process.stdout.write(table(['PART', 'FIGURE', 'MEASURED', 'TARGET', ''], figures.map((f) => [f.part, f.what, f.measured, f.target, f.verdict])) + '\n')
}

if (isMainThread) await main()
else if ((workerData as SimWorkerData | ObserverWorkerData).role === 'sim') simThread(workerData as SimWorkerData)
else observerThread(workerData as ObserverWorkerData)
