// A cluster of real node processes on 127.0.0.1: up, down, status, and the
// faults a tester injects by hand (kill, stop, restart, pause, resume).

import { rm, mkdir } from 'node:fs/promises'
import { isAbsolute, join, relative, resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { connect } from '../../cli/client.ts'
import { type TestnetNode, type TestnetState, DEFAULT_DIR, readState, removeState, writeState } from './state.ts'
import { freePorts, isNodeProcess, processState, readRuntime, signal, sleep, spawnNode, waitForExit } from './process.ts'
import { purgeTasks } from '../../node/executor/executor.ts'

export interface UpOptions {
  nodes: number
  dir?: string
  /** Told what is happening, for progress output. */
  onProgress?: (message: string) => void
  /** How long the whole start may take. */
  timeoutMs?: number
  /** More flags for every `murmur node start`. */
  extraArgs?: string[]
}

export const TESTNET_LIMITS = Object.freeze({
  nodesMax: 64,
  /** A node process that has not written its runtime file by then failed to start. */
  nodeStartMs: 30_000,
  /** SIGTERM gives a node this long to leave before SIGKILL. */
  stopGraceMs: 5_000,
})

export class TestnetError extends Error {
  override name = 'TestnetError'
  readonly exitCode: 1 | 2
  constructor (message: string, exitCode: 1 | 2 = 1) {
    super(message)
    this.exitCode = exitCode
  }
}

export type ProcessStatus = 'running' | 'paused' | 'exited'

export interface NodeStatus extends TestnetNode {
  process: ProcessStatus
}

export async function up (options: UpOptions): Promise<TestnetState> {
  const dir = resolve(options.dir ?? DEFAULT_DIR)
  const progress = options.onProgress ?? (() => {})
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > TESTNET_LIMITS.nodesMax) {
    throw new TestnetError(`--nodes must be a whole number from 1 to ${TESTNET_LIMITS.nodesMax}, got ${options.nodes}`, 2)
  }
  const existing = await readState(dir)
  if (existing !== null) {
    if (existing.nodes.some((n) => isNodeProcess(n.pid, n.dataDir))) {
      throw new TestnetError(`a testnet is already running in ${dir}; run 'murmur testnet down' first`)
    }
    await cleanup(existing)
  }
  await mkdir(dir, { recursive: true })
  const ports = await freePorts(options.nodes * 2)
  const state: TestnetState = { version: 1, dir, createdAt: new Date().toISOString(), nodes: [] }
  for (let i = 0; i < options.nodes; i++) {
    state.nodes.push({
      index: i,
      pid: null,
      port: ports[2 * i]!,
      apiPort: ports[2 * i + 1]!,
      dataDir: join(dir, `node-${i}`),
      logFile: join(dir, `node-${i}.log`),
      peerId: null,
      addrs: [],
      apiUrl: `http://127.0.0.1:${ports[2 * i + 1]!}`,
    })
  }
  await writeState(state)
  const deadline = Date.now() + (options.timeoutMs ?? 60_000)
  try {
    progress(`starting node 0 of ${options.nodes}`)
    await startNode(state, state.nodes[0]!, [], options.extraArgs)
    const seed = state.nodes[0]!.addrs
    progress(`starting nodes 1–${options.nodes - 1}, joining through node 0`)
    // Settled, not all: every spawn has happened (and is in the state file) before we give up.
    const results = await Promise.allSettled(state.nodes.slice(1).map(async (node) => { await startNode(state, node, seed, options.extraArgs) }))
    const failed = results.find((r) => r.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    await waitForConvergence(state, options.nodes, deadline, progress)
  } catch (err) {
    progress(`start failed; stopping what was started (logs kept in ${dir})`)
    await down({ dir, keepData: true })
    throw err
  }
  return state
}

async function startNode (state: TestnetState, node: TestnetNode, seeds: string[], extraArgs: string[] = []): Promise<void> {
  await rm(join(node.dataDir, 'node.json'), { force: true })
  await mkdir(node.dataDir, { recursive: true })
  node.pid = spawnNode({
    dataDir: node.dataDir,
    logFile: node.logFile,
    port: node.port,
    apiPort: node.apiPort,
    join: seeds,
    labels: { 'testnet.index': String(node.index) },
    extraArgs,
  })
  await writeState(state)
  const deadline = Date.now() + TESTNET_LIMITS.nodeStartMs
  while (Date.now() < deadline) {
    const runtime = await readRuntime(node.dataDir)
    if (runtime !== null && runtime.pid === node.pid) {
      node.peerId = runtime.peerId
      node.addrs = runtime.addrs
      node.apiUrl = runtime.apiUrl
      await writeState(state)
      return
    }
    if (!isNodeProcess(node.pid, node.dataDir)) {
      throw new TestnetError(`node ${node.index} exited during start: ${lastLine(node.logFile)} (log: ${node.logFile})`)
    }
    await sleep(50)
  }
  throw new TestnetError(`node ${node.index} did not start within ${TESTNET_LIMITS.nodeStartMs} ms (log: ${node.logFile})`)
}

/** Waits until every running node lists `expected` members alive. */
async function waitForConvergence (state: TestnetState, expected: number, deadline: number, progress: (m: string) => void): Promise<void> {
  let last = -1
  while (Date.now() < deadline) {
    const views = await aliveCounts(state.nodes.map((n) => n.apiUrl))
    const done = views.filter((v) => v === expected).length
    if (done !== last) {
      progress(`${done}/${state.nodes.length} nodes see all ${expected} alive`)
      last = done
    }
    if (done === state.nodes.length) return
    await sleep(100)
  }
  throw new TestnetError(`the nodes did not all see each other in time; see the logs in ${state.dir}`)
}

/** How many members each node lists as alive (-1 for a node that does not answer). */
export async function aliveCounts (apiUrls: string[]): Promise<number[]> {
  return await Promise.all(apiUrls.map(async (url) => {
    try {
      const { members } = await connect(url, { timeoutMs: 2_000 }).members()
      return members.filter((m) => m.state === 'alive').length
    } catch {
      return -1
    }
  }))
}

export interface DownOptions {
  dir?: string
  /** Keep the data dirs and logs (default: remove them). */
  keepData?: boolean
  onProgress?: (message: string) => void
}

/** Stops every node (SIGTERM, then SIGKILL after the grace time) and removes the testnet. */
export async function down (options: DownOptions = {}): Promise<{ stopped: number, killed: number }> {
  const dir = resolve(options.dir ?? DEFAULT_DIR)
  const state = await readState(dir)
  if (state === null) return { stopped: 0, killed: 0 }
  const progress = options.onProgress ?? (() => {})
  const running = state.nodes.filter((n) => isNodeProcess(n.pid, n.dataDir))
  if (running.length > 0) progress(`stopping ${running.length} node(s)`)
  let killed = 0
  await Promise.all(running.map(async (node) => {
    if (!await terminate(node)) killed++
  }))
  if (options.keepData !== true) await cleanup(state)
  await removeState(dir)
  return { stopped: running.length - killed, killed }
}

/** SIGTERM (after SIGCONT, in case it is paused), SIGKILL if it does not go; true if it left by itself. */
async function terminate (node: TestnetNode): Promise<boolean> {
  if (!isNodeProcess(node.pid, node.dataDir)) return true
  const pid = node.pid!
  signal(pid, 'SIGCONT')
  signal(pid, 'SIGTERM')
  if (await waitForExit(pid, node.dataDir, TESTNET_LIMITS.stopGraceMs)) return true
  signal(pid, 'SIGKILL')
  await waitForExit(pid, node.dataDir, TESTNET_LIMITS.stopGraceMs)
  return false
}

async function cleanup (state: TestnetState): Promise<void> {
  for (const node of state.nodes) {
    // Only what the testnet made itself: never a path outside its own dir.
    if (!isInside(node.dataDir, state.dir) || !isInside(node.logFile, state.dir)) continue
    // A node that was killed left its tasks running, for a next life that will not come.
    await purgeTasks(join(node.dataDir, 'tasks')).catch(() => {})
    await rm(node.dataDir, { recursive: true, force: true })
    await rm(node.logFile, { force: true })
  }
}

export async function status (dir: string = DEFAULT_DIR): Promise<{ dir: string, nodes: NodeStatus[] } | null> {
  const state = await readState(resolve(dir))
  if (state === null) return null
  return {
    dir: state.dir,
    nodes: state.nodes.map((n) => ({ ...n, process: processStatus(n) })),
  }
}

function processStatus (node: TestnetNode): ProcessStatus {
  if (!isNodeProcess(node.pid, node.dataDir)) return 'exited'
  return processState(node.pid!) === 'T' ? 'paused' : 'running'
}

async function nodeOf (dir: string, index: number): Promise<{ state: TestnetState, node: TestnetNode }> {
  const state = await readState(resolve(dir))
  if (state === null) throw new TestnetError(`no testnet in ${resolve(dir)}; start one with 'murmur testnet up'`)
  const node = state.nodes[index]
  if (!Number.isInteger(index) || node === undefined) {
    throw new TestnetError(`no node ${index} in the testnet: it has nodes 0–${state.nodes.length - 1}`, 2)
  }
  return { state, node }
}

async function running (dir: string, index: number): Promise<TestnetNode> {
  const { node } = await nodeOf(dir, index)
  if (!isNodeProcess(node.pid, node.dataDir)) throw new TestnetError(`node ${index} is not running; 'murmur testnet restart ${index}' starts it`)
  return node
}

/** SIGKILL: a crash, with no goodbye. */
export async function kill (dir: string, index: number): Promise<void> {
  const node = await running(dir, index)
  signal(node.pid!, 'SIGKILL')
  await waitForExit(node.pid!, node.dataDir, TESTNET_LIMITS.stopGraceMs)
}

/** SIGTERM: the node leaves gracefully. */
export async function stop (dir: string, index: number): Promise<void> {
  const node = await running(dir, index)
  await terminate(node)
}

/** SIGSTOP: the process freezes; its connections stay open and stop answering. */
export async function pause (dir: string, index: number): Promise<void> {
  const node = await running(dir, index)
  signal(node.pid!, 'SIGSTOP')
}

export async function resume (dir: string, index: number): Promise<void> {
  const node = await running(dir, index)
  signal(node.pid!, 'SIGCONT')
}

/** Stops the node if it runs, then starts it again with the same data dir and ports (and `extraArgs`, e.g. --reset-state). */
export async function restart (dir: string, index: number, extraArgs?: string[]): Promise<TestnetNode> {
  const { state, node } = await nodeOf(dir, index)
  await terminate(node)
  const others = state.nodes.filter((n) => n.index !== index && isNodeProcess(n.pid, n.dataDir) && processState(n.pid!) !== 'T')
  await startNode(state, node, others.flatMap((n) => n.addrs.slice(0, 1)).slice(0, 3), extraArgs)
  return node
}

/** Adds one node to a running testnet, joining through up to three running nodes. */
export async function add (dir: string, extraArgs?: string[]): Promise<TestnetNode> {
  const state = await readState(resolve(dir))
  if (state === null) throw new TestnetError(`no testnet in ${resolve(dir)}; start one with 'murmur testnet up'`)
  if (state.nodes.length >= TESTNET_LIMITS.nodesMax) throw new TestnetError(`the testnet has ${state.nodes.length} nodes, the most it may have`)
  const seeds = state.nodes.filter((n) => isNodeProcess(n.pid, n.dataDir) && processState(n.pid!) !== 'T')
  if (seeds.length === 0) throw new TestnetError('no node of the testnet is running to join through; restart one first')
  const [port, apiPort] = await freePorts(2)
  const index = state.nodes.length
  const node: TestnetNode = {
    index,
    pid: null,
    port: port!,
    apiPort: apiPort!,
    dataDir: join(state.dir, `node-${index}`),
    logFile: join(state.dir, `node-${index}.log`),
    peerId: null,
    addrs: [],
    apiUrl: `http://127.0.0.1:${apiPort!}`,
  }
  state.nodes.push(node)
  await writeState(state)
  await startNode(state, node, seeds.flatMap((n) => n.addrs.slice(0, 1)).slice(0, 3), extraArgs)
  return node
}

function isInside (path: string, dir: string): boolean {
  const rel = relative(resolve(dir), resolve(path))
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)
}

function lastLine (file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trim().split('\n')
    const line = lines[lines.length - 1] ?? ''
    try {
      const parsed = JSON.parse(line) as { msg?: string }
      return parsed.msg ?? line
    } catch {
      return line
    }
  } catch {
    return 'no log'
  }
}

