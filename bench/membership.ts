// Membership benchmark: real node processes on loopback. Prints figures; never
// fails on time. Usage:
//   npm run bench:membership -- [--nodes 5,10,20] [--trials 3] [--saturate 30s] [--idle 10s]
//
// For each cluster size N it reports, median and max over the trials:
//   join     a new node is ready (it has joined) → every node lists all N alive;
//            also from its spawn, which adds the process's start-up (~1 s of module loading)
//   crash    SIGKILL → the first / the last survivor marks it dead
//   hang     SIGSTOP → the first / the last survivor marks it dead
//   false    suspicions and deaths of live nodes during CPU saturation (busy processes)
//   idle     RSS and CPU % per node, membership bytes sent per node per second

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { connect, type MemberEvent } from '../cli/client.ts'
import { table } from '../cli/table.ts'
import { parseDuration } from '../node/units.ts'
import { cpuTicks, rssBytes } from '../testnet/local/process.ts'
import * as testnet from '../testnet/local/testnet.ts'
import type { TestnetNode } from '../testnet/local/state.ts'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '5,10,20' },
    trials: { type: 'string', default: '3' },
    saturate: { type: 'string', default: '30s' },
    idle: { type: 'string', default: '10s' },
  },
})
const sizes = values.nodes.split(',').map(Number)
const trials = Number(values.trials)
if (sizes.some((n) => !Number.isInteger(n) || n < 3 || n > testnet.TESTNET_LIMITS.nodesMax) || !Number.isInteger(trials) || trials < 1) {
  process.stderr.write(`bench: --nodes takes sizes from 3 to ${testnet.TESTNET_LIMITS.nodesMax} (e.g. 5,10,20) and --trials a whole number ≥ 1\n`)
  process.exit(2)
}
const saturateMs = parseDuration(values.saturate)
const idleMs = parseDuration(values.idle)

interface Seen { observer: string, member: string, state: string, atMs: number }

/** Follows every node's event stream; records when each observer saw each change. */
class Watcher {
  readonly seen: Seen[] = []
  private readonly controllers = new Map<string, AbortController>()

  follow (node: TestnetNode): void {
    const controller = new AbortController()
    this.controllers.get(node.peerId!)?.abort()
    this.controllers.set(node.peerId!, controller)
    void connect(node.apiUrl).events((e) => {
      if (e.type !== 'member') return
      this.seen.push({ observer: node.peerId!, member: e.data.member.id, state: e.data.member.state, atMs: performance.now() })
    }, controller.signal).catch(() => {})
  }

  unfollow (peerId: string): void {
    this.controllers.get(peerId)?.abort()
    this.controllers.delete(peerId)
  }

  stop (): void {
    for (const c of this.controllers.values()) c.abort()
  }

  /** When each observer first saw `member` in `state` after `sinceMs`. */
  times (member: string, state: string, sinceMs: number, observers: string[]): Array<number | null> {
    return observers.map((o) => {
      const hit = this.seen.find((s) => s.observer === o && s.member === member && s.state === state && s.atMs >= sinceMs)
      return hit === undefined ? null : hit.atMs - sinceMs
    })
  }
}

async function until (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function aliveEverywhere (nodes: TestnetNode[], n: number): Promise<boolean> {
  return (await testnet.aliveCounts(nodes.map((node) => node.apiUrl))).every((c) => c === n)
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)]!
}
const max = (xs: number[]): number => xs.length === 0 ? NaN : Math.max(...xs)
const ms = (x: number): string => Number.isNaN(x) ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`
const defined = (xs: Array<number | null>): number[] => xs.filter((x): x is number => x !== null)

interface Row {
  n: number
  join: number[]
  joinFromSpawn: number[]
  crashFirst: number[]
  crashLast: number[]
  hangFirst: number[]
  hangLast: number[]
  falseSuspicions: number
  falseDeaths: number
  rssMb: number[]
  cpuPct: number[]
  bytesPerSec: number[]
}

async function benchSize (n: number): Promise<Row> {
  const dir = await mkdtemp(join(tmpdir(), `murmur-bench-${n}-`))
  current = dir
  const row: Row = { n, join: [], joinFromSpawn: [], crashFirst: [], crashLast: [], hangFirst: [], hangLast: [], falseSuspicions: 0, falseDeaths: 0, rssMb: [], cpuPct: [], bytesPerSec: [] }
  const watcher = new Watcher()
  try {
    log(`N=${n}: starting ${n - 1} nodes`)
    const state = await testnet.up({ nodes: n - 1, dir, timeoutMs: 120_000 })
    const nodes = [...state.nodes]
    for (const node of nodes) watcher.follow(node)

    // Join: each trial adds one node; the cluster grows to N, then the added node leaves again.
    for (let t = 0; t < trials; t++) {
      const spawned = performance.now()
      const node = await testnet.add(dir)
      const ready = performance.now()
      const all = [...nodes, node]
      await until('join convergence', async () => await aliveEverywhere(all, n))
      row.join.push(performance.now() - ready)
      row.joinFromSpawn.push(performance.now() - spawned)
      if (t < trials - 1) {
        await testnet.stop(dir, node.index)
        await until('leave', async () => await aliveEverywhere(nodes, n - 1))
      } else {
        nodes.push(node)
        watcher.follow(node)
      }
    }
    log(`N=${n}: join ${row.join.map((x) => ms(x)).join(', ')}`)

    // Idle cost, measured before anything is broken.
    await new Promise((r) => setTimeout(r, 2_000))
    const before = await Promise.all(nodes.map(async (node) => ({ ticks: cpuTicks(node.pid!), sent: await sentBytes(node) })))
    const started = performance.now()
    await new Promise((r) => setTimeout(r, idleMs))
    const elapsedS = (performance.now() - started) / 1000
    for (const [i, node] of nodes.entries()) {
      row.cpuPct.push(((cpuTicks(node.pid!) - before[i]!.ticks) / 100) / elapsedS * 100)
      row.rssMb.push(rssBytes(node.pid!) / 1024 / 1024)
      row.bytesPerSec.push(((await sentBytes(node)) - before[i]!.sent) / elapsedS)
    }
    log(`N=${n}: idle RSS ${median(row.rssMb).toFixed(0)} MB, CPU ${median(row.cpuPct).toFixed(2)} %`)

    // False alarms under CPU saturation: every live node stays alive.
    if (saturateMs > 0) {
      const busy = saturate(cpus().length * 2)
      const since = performance.now()
      log(`N=${n}: saturating ${cpus().length} cores with ${busy.length} busy processes for ${ms(saturateMs)}`)
      await new Promise((r) => setTimeout(r, saturateMs))
      for (const p of busy) p.kill('SIGKILL')
      await new Promise((r) => setTimeout(r, 3_000)) // let suspicions raised at the end run out
      const during = watcher.seen.filter((s) => s.atMs >= since)
      row.falseSuspicions = during.filter((s) => s.state === 'suspect').length
      row.falseDeaths = during.filter((s) => s.state === 'dead').length
      log(`N=${n}: ${row.falseSuspicions} suspicions, ${row.falseDeaths} deaths under saturation`)
      await until('recovery after saturation', async () => await aliveEverywhere(nodes, n))
    }

    // Crash and hang detection: break a node that is not the seed, then bring it back.
    for (let t = 0; t < trials; t++) {
      for (const fault of ['crash', 'hang'] as const) {
        const victim = nodes[1 + ((t * 2 + (fault === 'hang' ? 1 : 0)) % (nodes.length - 1))]!
        const survivors = nodes.filter((x) => x !== victim)
        const observers = survivors.map((x) => x.peerId!)
        const since = performance.now()
        if (fault === 'crash') {
          watcher.unfollow(victim.peerId!)
          await testnet.kill(dir, victim.index)
        } else {
          await testnet.pause(dir, victim.index)
        }
        await until(`${fault} detection`, () => defined(watcher.times(victim.peerId!, 'dead', since, observers)).length === observers.length)
        const times = defined(watcher.times(victim.peerId!, 'dead', since, observers))
        ;(fault === 'crash' ? row.crashFirst : row.hangFirst).push(Math.min(...times))
        ;(fault === 'crash' ? row.crashLast : row.hangLast).push(Math.max(...times))
        if (fault === 'crash') {
          const restarted = await testnet.restart(dir, victim.index)
          nodes[nodes.indexOf(victim)] = restarted
          watcher.follow(restarted)
        } else {
          await testnet.resume(dir, victim.index)
        }
        await until('recovery', async () => await aliveEverywhere(nodes, n))
      }
    }
    log(`N=${n}: crash last ${row.crashLast.map((x) => ms(x)).join(', ')}; hang last ${row.hangLast.map((x) => ms(x)).join(', ')}`)
  } finally {
    watcher.stop()
    await testnet.down({ dir })
    await rm(dir, { recursive: true, force: true })
    current = null
  }
  return row
}

async function sentBytes (node: TestnetNode): Promise<number> {
  const info = await connect(node.apiUrl).node()
  return (info.membership as { sentBytes: number }).sentBytes
}

function saturate (count: number): ChildProcess[] {
  return Array.from({ length: count }, () => spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }))
}

function log (message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

/** The testnet of the size being measured, taken down on Ctrl-C. */
let current: string | null = null
process.once('SIGINT', () => {
  log('interrupted; taking the testnet down')
  void (current === null ? Promise.resolve() : testnet.down({ dir: current })).finally(() => process.exit(130))
})

const rows: Row[] = []
for (const n of sizes) rows.push(await benchSize(n))

process.stdout.write('\nmembership on loopback, profile local (' + `${trials} trials; median / max)\n`)
process.stdout.write(table(
  ['N', 'JOIN', 'JOIN FROM SPAWN', 'CRASH FIRST', 'CRASH ALL', 'HANG FIRST', 'HANG ALL', 'FALSE SUSP', 'FALSE DEAD', 'RSS MB', 'CPU %', 'BYTES/S'],
  rows.map((r) => [
    String(r.n),
    `${ms(median(r.join))} / ${ms(max(r.join))}`,
    `${ms(median(r.joinFromSpawn))} / ${ms(max(r.joinFromSpawn))}`,
    `${ms(median(r.crashFirst))} / ${ms(max(r.crashFirst))}`,
    `${ms(median(r.crashLast))} / ${ms(max(r.crashLast))}`,
    `${ms(median(r.hangFirst))} / ${ms(max(r.hangFirst))}`,
    `${ms(median(r.hangLast))} / ${ms(max(r.hangLast))}`,
    String(r.falseSuspicions),
    String(r.falseDeaths),
    `${median(r.rssMb).toFixed(0)} / ${max(r.rssMb).toFixed(0)}`,
    `${median(r.cpuPct).toFixed(2)} / ${max(r.cpuPct).toFixed(2)}`,
    `${median(r.bytesPerSec).toFixed(0)} / ${max(r.bytesPerSec).toFixed(0)}`,
  ]),
) + '\n')
process.stdout.write(`targets at N = 20: crash all ≤ 1 s and hang all ≤ 3 s median; join ≤ 0.7 s median, ≤ 2 s max; 0 false deaths; RSS ≤ 120 MB; CPU ≤ 2 %\n`)
