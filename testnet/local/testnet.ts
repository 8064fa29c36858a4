// A cluster of real node processes on 127.0.0.1: up, down, status, the faults a
// tester injects on processes (kill, stop, restart, pause, resume), and on the
// network (partition, cut, delay, loss, heal). Every command that changes the
// testnet holds its lock (state.ts), so that two of them never interleave.
//
// Network faults on loopback need no root: every node is started with
// --fault-injection and takes its rules (node/faults.ts) on its admin endpoint.
// With --netns (root) every node has a network namespace of its own and the
// kernel carries the faults (netns.ts); the nodes' filter only stands in for what
// this kernel lacks. The faults live in testnet.json by node index, so a restarted
// node gets its own again at start, and a paused one when it resumes.

import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { connect, readUserKey } from '../../cli/client.ts'
import { loadConfig, removeContext, saveContext } from '../../cli/context.ts'
import { ADMIN_KEY_NAME, ROOT_KEY_NAME, ROOT_PUB_NAME, writeClusterFiles } from '../../cli/cluster-files.ts'
import { putRules } from './admin.ts'
import { STOP_GRACE_MS, teardown, terminate } from './down.ts'
import { TestnetError } from './errors.ts'
import type { FaultRules } from '../../node/faults.ts'
import {
  type NodeFaults, type TestnetFaults, NO_NETWORK_FAULTS, describeNode, describePartition, hasFaults, reaches, rulesFor,
  withCut, withDelay, withLoss, withPartition,
} from './faults.ts'
import * as netns from './netns.ts'
import { type TestnetNode, type TestnetState, DEFAULT_DIR, readState, withStateLock, writeState } from './state.ts'
import { CLUSTER_KEY_NAME, NODE_DIR, findNodeProcesses, freePorts, isNodeProcess, processState, readRuntime, signal, sleep, spawnNode, waitForExit } from './process.ts'

export { TestnetError } from './errors.ts'
export type { NodeFaults } from './faults.ts'

export interface UpOptions {
  nodes: number
  dir?: string
  /** Told what is happening, for progress output. */
  onProgress?: (message: string) => void
  /** How long the whole start may take. */
  timeoutMs?: number
  /** More flags for every `murmur node start`. */
  extraArgs?: string[]
  /** Every node in a network namespace of its own, on a bridge (root only; netns.ts). */
  netns?: boolean
}

export const TESTNET_LIMITS = Object.freeze({
  nodesMax: 64,
  /** A node process that has not written its runtime file by then failed to start. */
  nodeStartMs: 30_000,
  /** SIGTERM gives a node this long to leave before SIGKILL. */
  stopGraceMs: STOP_GRACE_MS,
})

export type ProcessStatus = 'running' | 'paused' | 'exited'

/** The testnet's cluster key, made by `up` (mode 0600): every node starts with it, and a host without it cannot connect. */
export function clusterKeyFile (dir: string = DEFAULT_DIR): string {
  return join(resolve(dir), CLUSTER_KEY_NAME)
}

/** The testnet's admin user key, made by `up` with its root key (cli/cluster-files.ts): the `key` of its CLI context. */
export function adminKeyFile (dir: string = DEFAULT_DIR): string {
  return join(resolve(dir), ADMIN_KEY_NAME)
}

/**
 * The name of the testnet's context in the user's CLI config (cli/context.ts):
 * `testnet` for the default dir, `testnet-<dir name>` for any other.
 */
export function contextName (dir: string = DEFAULT_DIR): string {
  const root = resolve(dir)
  return root === resolve(DEFAULT_DIR) ? 'testnet' : `testnet-${basename(root)}`
}

/**
 * Writes the testnet's context: every node's API, the admin key; with `makeCurrent`,
 * commands go there from now on. Without, only a context that is this testnet's or
 * missing: another testnet's of the same name stays.
 */
function writeContext (state: TestnetState, makeCurrent: boolean, progress: (m: string) => void): void {
  const name = contextName(state.dir)
  const key = adminKeyFile(state.dir)
  try {
    const existing = loadConfig().contexts[name]
    if (!makeCurrent && existing !== undefined && existing.key !== key) return
    saveContext(name, { api: state.nodes.map((n) => n.apiUrl), key, namespace: existing?.namespace ?? 'default' }, makeCurrent)
    if (makeCurrent) progress(`CLI context '${name}' is current: murmur commands reach this testnet without --api`)
  } catch (err) {
    // The testnet runs all the same; commands then need --api.
    progress(`could not write the CLI context: ${(err as Error).message}`)
  }
}

/** Removes the testnet's context, if it is still this testnet's (another testnet may have taken the name since). */
function dropContext (dir: string, progress: (m: string) => void): void {
  try {
    removeContext(contextName(dir), (ctx) => ctx.key === adminKeyFile(dir))
  } catch (err) {
    progress(`could not remove the CLI context '${contextName(dir)}': ${(err as Error).message}`)
  }
}

export interface NodeStatus extends TestnetNode {
  process: ProcessStatus
}

export async function up (options: UpOptions): Promise<TestnetState> {
  const dir = resolve(options.dir ?? DEFAULT_DIR)
  const progress = options.onProgress ?? (() => {})
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > TESTNET_LIMITS.nodesMax) {
    throw new TestnetError(`--nodes must be a whole number from 1 to ${TESTNET_LIMITS.nodesMax}, got ${options.nodes}`, 2)
  }
  if (options.netns === true) await netns.checkSupport()
  return await withStateLock(dir, async () => {
    const existing = await readStateOrStale(dir, progress)
    if (existing?.nodes.some((n) => isNodeProcess(n.pid, n.dataDir)) === true || findNodeProcesses(dir).length > 0) {
      throw new TestnetError(`a testnet is already running in ${dir}; run 'murmur testnet down' first`)
    }
    // What an earlier testnet left here (data dirs, logs, namespaces, a state file) goes first.
    await teardown(dir, existing, { keepData: false, progress })
    dropContext(dir, progress)
    await mkdir(dir, { recursive: true })
    // A closed cluster of its own: network key, root key (root.pub for the nodes) and an admin for the CLI.
    writeClusterFiles(clusterKeyFile(dir), true)
    const state: TestnetState = { version: 1, dir, createdAt: new Date().toISOString(), nodes: [], faults: { ...NO_NETWORK_FAULTS }, netns: null }
    const deadline = Date.now() + (options.timeoutMs ?? 60_000)
    try {
      if (options.netns === true) {
        await createNetwork(state, options.nodes, progress)
      } else {
        const ports = await freePorts(options.nodes * 2)
        for (let i = 0; i < options.nodes; i++) state.nodes.push(newNode(dir, i, ports[2 * i]!, ports[2 * i + 1]!))
        await writeState(state)
      }
      progress(`starting node 0 of ${options.nodes}`)
      await startNode(state, state.nodes[0]!, [], options.extraArgs)
      const seed = state.nodes[0]!.addrs
      progress(`starting nodes 1–${options.nodes - 1}, joining through node 0`)
      // Settled, not all: every spawn has happened (and is in the state file) before we give up.
      const results = await Promise.allSettled(state.nodes.slice(1).map(async (node) => { await startNode(state, node, seed, options.extraArgs) }))
      const failed = results.find((r) => r.status === 'rejected')
      if (failed !== undefined) throw failed.reason
      // Before the wait: every API URL is known now, and a client that asks the nodes goes with the context's key.
      writeContext(state, true, progress)
      await waitForConvergence(state, options.nodes, deadline, progress)
    } catch (err) {
      progress(`start failed; stopping what was started (logs kept in ${dir})`)
      await teardown(dir, state, { keepData: true, progress })
      dropContext(dir, progress)
      throw err
    }
    return state
  })
}

function newNode (dir: string, index: number, port: number, apiPort: number, network?: netns.NodeNetwork): TestnetNode {
  return {
    index,
    pid: null,
    port,
    apiPort,
    dataDir: join(dir, `node-${index}`),
    logFile: join(dir, `node-${index}.log`),
    peerId: null,
    addrs: [],
    apiUrl: `http://${network?.address ?? '127.0.0.1'}:${apiPort}`,
    rulesPending: false,
    netns: network?.netns ?? null,
    address: network?.address ?? null,
  }
}

/** The bridge, then a namespace per node (each recorded in testnet.json before it is made), then what the kernel offers. */
async function createNetwork (state: TestnetState, nodeCount: number, progress: (m: string) => void): Promise<void> {
  const id = netns.testnetId(state.dir)
  const subnet = await netns.pickSubnet(id)
  const net: netns.Netns = { id, subnet, bridge: `murmur-${id}`, iptables: null, netem: false, namespaces: [], links: [] }
  state.netns = net
  const record = async (): Promise<void> => { await writeState(state) }
  progress(`making a bridge ${net.bridge} on ${subnet}.0/24 and ${nodeCount} network namespaces`)
  await netns.createBridge(net, record)
  for (let i = 0; i < nodeCount; i++) {
    state.nodes.push(newNode(state.dir, i, netns.NETNS_PORTS.peers, netns.NETNS_PORTS.api, await netns.createNodeNetwork(net, i, record)))
    await record()
    if (i > 0) continue
    // Tried in the first namespace, then given to it and to every later one.
    await netns.probeKernel(net, netns.namesOf(id, 0))
    if (net.iptables !== null) await netns.addLossChain(net.iptables, netns.namesOf(id, 0).netns)
  }
  progress(`in the kernel: partitions and cuts (ip rule blackhole)${net.iptables === null ? '' : `, loss (${net.iptables} statistic)`}${net.netem ? ', delay (netem)' : ''}`)
  for (const note of netns.notes(net)) progress(note)
  await record()
}

/** Spawns the node with the fault rules it is under, and waits for its runtime file. */
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
    clusterKeyFile: clusterKeyFile(state.dir),
    faultInjection: true,
    faultRules: hasFaults(state.faults) ? nodeRules(state, node.index) : null,
    ...(node.address === null ? {} : { host: node.address, netns: node.netns }),
  })
  node.rulesPending = false
  await awaitRuntime(state, node)
}

/** Records a node just spawned, and waits for its runtime file: its peer id, addresses and API. */
export async function awaitRuntime (state: TestnetState, node: TestnetNode): Promise<void> {
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
    // As its own admin: a MURMUR_USER_KEY in the shell is some other cluster's user.
    const views = await aliveCounts(state.nodes.map((n) => n.apiUrl), adminKeyFile(state.dir))
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

/**
 * How many members each node lists as alive (-1 for a node that does not answer),
 * asked with `key` (a testnet's admin key file); without it, the key the client finds.
 */
export async function aliveCounts (apiUrls: string[], key?: string): Promise<number[]> {
  return await Promise.all(apiUrls.map(async (url) => {
    try {
      const { members } = await connect(url, { timeoutMs: 2_000, ...(key === undefined ? {} : { key }) }).members()
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

/**
 * Stops every node (a paused one is continued first; SIGTERM, then SIGKILL after
 * the grace time) and removes the testnet: also what a crashed CLI or node left,
 * with the state file missing or stale (down.ts).
 */
export async function down (options: DownOptions = {}): Promise<{ stopped: number, killed: number }> {
  const dir = resolve(options.dir ?? DEFAULT_DIR)
  const progress = options.onProgress ?? (() => {})
  if (!await exists(dir)) {
    dropContext(dir, progress)
    return { stopped: 0, killed: 0 }
  }
  return await withStateLock(dir, async () => {
    const result = await teardown(dir, await readStateOrStale(dir, progress), { keepData: options.keepData === true, progress })
    dropContext(dir, progress)
    return result
  })
}

/**
 * What of the testnet in `dir` is still there: node processes, network namespaces
 * and links, node dirs, logs and the state file. All empty after a `down`.
 */
export async function leftovers (dir: string = DEFAULT_DIR): Promise<{ processes: number[], network: string[], files: string[] }> {
  const root = resolve(dir)
  const network = await netns.networkOf(root, null)
  const files = (await readdir(root).catch(() => [] as string[])).filter((f) => NODE_DIR.test(f.replace(/\.log$/, '')) || f === 'testnet.json' || [CLUSTER_KEY_NAME, ROOT_PUB_NAME, ROOT_KEY_NAME, ADMIN_KEY_NAME].includes(f))
  return { processes: findNodeProcesses(root).map((p) => p.pid), network: network === null ? [] : [...network.namespaces, ...network.links], files }
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

async function requireState (dir: string): Promise<TestnetState> {
  const state = await readState(resolve(dir))
  if (state === null) throw new TestnetError(`no testnet in ${resolve(dir)}; start one with 'murmur testnet up'`)
  return state
}

async function nodeOf (dir: string, index: number): Promise<{ state: TestnetState, node: TestnetNode }> {
  const state = await requireState(dir)
  const node = state.nodes[index]
  if (!Number.isInteger(index) || node === undefined) {
    throw new TestnetError(`no node ${index} in the testnet: it has nodes 0–${state.nodes.length - 1}`, 2)
  }
  return { state, node }
}

async function running (dir: string, index: number): Promise<{ state: TestnetState, node: TestnetNode }> {
  const found = await nodeOf(dir, index)
  if (!isNodeProcess(found.node.pid, found.node.dataDir)) throw new TestnetError(`node ${index} is not running; 'murmur testnet restart ${index}' starts it`)
  return found
}

/** SIGKILL: a crash, with no goodbye. */
export async function kill (dir: string, index: number): Promise<void> {
  await withStateLock(dir, async () => {
    const { node } = await running(dir, index)
    signal(node.pid!, 'SIGKILL')
    await waitForExit(node.pid!, node.dataDir, TESTNET_LIMITS.stopGraceMs)
  })
}

/** SIGTERM: the node leaves gracefully. */
export async function stop (dir: string, index: number): Promise<void> {
  await withStateLock(dir, async () => {
    const { node } = await running(dir, index)
    await terminate(node.pid!, node.dataDir)
  })
}

/** SIGSTOP: the process freezes; its connections stay open and stop answering. */
export async function pause (dir: string, index: number): Promise<void> {
  await withStateLock(dir, async () => {
    const { node } = await running(dir, index)
    signal(node.pid!, 'SIGSTOP')
  })
}

/** SIGCONT; then the fault rules that changed while it was frozen. */
export async function resume (dir: string, index: number): Promise<void> {
  await withStateLock(dir, async () => {
    const { state, node } = await running(dir, index)
    signal(node.pid!, 'SIGCONT')
    if (node.rulesPending) await applyFaults(state, [node])
  })
}

/** Stops the node if it runs, then starts it again with the same data dir and ports (and `extraArgs`, e.g. --reset-state). */
export async function restart (dir: string, index: number, extraArgs?: string[]): Promise<TestnetNode> {
  return await withStateLock(dir, async () => {
    const { state, node } = await nodeOf(dir, index)
    // Judged before the stop: a node that could not join anyone is not stopped either.
    const seeds = seedsFor(state, index)
    if (node.pid !== null) await terminate(node.pid, node.dataDir)
    await startNode(state, node, seeds, extraArgs)
    return node
  })
}

/** Adds one node to a running testnet, joining through up to three running nodes it can reach. */
export async function add (dir: string, extraArgs?: string[]): Promise<TestnetNode> {
  return await withStateLock(dir, async () => {
    const state = await requireState(dir)
    if (state.nodes.length >= TESTNET_LIMITS.nodesMax) throw new TestnetError(`the testnet has ${state.nodes.length} nodes, the most it may have`)
    if (!state.nodes.some(answers)) throw new TestnetError('no node of the testnet is running to join through; restart one first')
    const index = state.nodes.length
    let node: TestnetNode
    if (state.netns !== null) {
      node = newNode(state.dir, index, netns.NETNS_PORTS.peers, netns.NETNS_PORTS.api, await netns.createNodeNetwork(state.netns, index, async () => { await writeState(state) }))
    } else {
      const [port, apiPort] = await freePorts(2)
      node = newNode(state.dir, index, port!, apiPort!)
    }
    state.nodes.push(node)
    await writeState(state)
    const seeds = seedsFor(state, index)
    // In a namespace, the kernel's rules are in place before the node sends its first packet.
    if (state.netns !== null && hasFaults(state.faults)) await applyFaults(state, [node])
    await startNode(state, node, seeds, extraArgs)
    // The others can name it in their rules only now that its peer id is known.
    if (hasFaults(state.faults)) await applyFaults(state, state.nodes.filter((n) => n !== node))
    // Its API joins the context's list; which context is current stays as it is.
    writeContext(state, false, () => {})
    return node
  })
}

/**
 * Up to three running, unpaused nodes that `index` can exchange messages with
 * through the network faults. A node that could reach none would start alone, as
 * a cluster of its own: refused, with what to do instead.
 */
function seedsFor (state: TestnetState, index: number): string[] {
  const n = state.nodes.length
  const others = state.nodes.filter((o) => o.index !== index && answers(o))
  const reachable = others.filter((o) => reaches(state.faults, index, o.index, n) && reaches(state.faults, o.index, index, n))
  if (others.length > 0 && reachable.length === 0) {
    throw new TestnetError(`node ${index} could reach no running node through the network faults (${describePartition(state.faults, n)}); start it after 'murmur testnet heal', or restart a node on its side first`)
  }
  return reachable.flatMap((o) => o.addrs.slice(0, 1)).slice(0, 3)
}

/** Runs and is not paused: it can answer a join or a rule change. */
function answers (node: TestnetNode): boolean {
  return isNodeProcess(node.pid, node.dataDir) && processState(node.pid!) !== 'T'
}

// ---- network faults ------------------------------------------------------------

/** Groups of node indexes that cannot reach each other; indexes not named form one more group. Replaces an earlier partition. */
export async function partition (dir: string, groups: number[][]): Promise<void> {
  await changeFaults(dir, (f, n) => withPartition(f, groups, n))
}

/** One-way: from's messages no longer reach to (to drops them; from still hears to). */
export async function cut (dir: string, from: number, to: number): Promise<void> {
  await changeFaults(dir, (f, n) => withCut(f, from, to, n))
}

/** Removes every network fault (partitions, cuts, delay, loss) on every node. */
export async function heal (dir: string): Promise<void> {
  await changeFaults(dir, () => ({ ...NO_NETWORK_FAULTS }))
}

/** Everything node `index` receives arrives ms ± jitterMs late; 0 removes the delay. */
export async function delay (dir: string, index: number, ms: number, jitterMs = 0): Promise<void> {
  await changeFaults(dir, (f, n) => withDelay(f, index, ms, jitterMs, n))
}

/** Node `index` loses this share of what it receives, in [0, 1); 0 removes the loss. */
export async function loss (dir: string, index: number, rate: number): Promise<void> {
  await changeFaults(dir, (f, n) => withLoss(f, index, rate, n))
}

/** The network faults of every node, by index, as testnet.json records them. */
export async function faults (dir: string): Promise<NodeFaults[]> {
  const state = await requireState(dir)
  return state.nodes.map((n) => describeNode(state.faults, n.index, n.peerId, state.nodes.length))
}

/** The partition in words, "{0,1} | {2,3,4}", for output. */
export async function partitionOf (dir: string): Promise<string> {
  const state = await requireState(dir)
  return describePartition(state.faults, state.nodes.length)
}

/** Records the change in testnet.json first (it outlives the processes), then gives every node its rules. */
async function changeFaults (dir: string, change: (faults: TestnetFaults, nodeCount: number) => TestnetFaults): Promise<void> {
  await withStateLock(dir, async () => {
    const state = await requireState(dir)
    state.faults = change(state.faults, state.nodes.length)
    await writeState(state)
    await applyFaults(state, state.nodes)
  })
}

/**
 * Sends each node its rules. A node that is not running gets them when it starts;
 * a paused one when it resumes. A running node that does not take them fails the
 * command, after the others have theirs.
 */
async function applyFaults (state: TestnetState, nodes: TestnetNode[]): Promise<void> {
  if (state.netns !== null) {
    const addresses = state.nodes.map((n) => n.address ?? '')
    for (const node of nodes) await netns.applyKernelFaults(state.netns, state.faults, node.index, addresses)
  }
  const failures: string[] = []
  // The fault endpoint is for admins: the rules go signed by the testnet's admin.
  const admin = readUserKey(adminKeyFile(state.dir))
  await Promise.all(nodes.map(async (node) => {
    if (!isNodeProcess(node.pid, node.dataDir)) return
    if (processState(node.pid!) === 'T') {
      node.rulesPending = true
      return
    }
    try {
      await putRules(node.apiUrl, nodeRules(state, node.index), admin)
      node.rulesPending = false
    } catch (err) {
      node.rulesPending = true
      failures.push(`node ${node.index}: ${(err as Error).message}`)
    }
  }))
  await writeState(state)
  if (failures.length > 0) throw new TestnetError(`the faults are recorded, but not every node took its rules (${failures.sort().join('; ')}); they are sent again when it resumes or restarts`)
}

/** What node `i` enforces itself: every rule on loopback; in namespaces, only what this kernel cannot do. */
function nodeRules (state: TestnetState, i: number): FaultRules {
  if (state.netns !== null) return netns.fallbackRules(state.netns, state.faults, i, state.nodes.length)
  return rulesFor(state.faults, i, state.nodes.map((n) => n.peerId))
}

/** Lines that say which faults the nodes apply themselves because this kernel cannot (netns testnets only). */
export async function networkNotes (dir: string): Promise<string[]> {
  return netns.notes((await requireState(dir)).netns)
}

/** The state file, or null when there is none or it is not one of ours (down and up then go by the processes). */
async function readStateOrStale (dir: string, progress: (m: string) => void): Promise<TestnetState | null> {
  try {
    return await readState(dir)
  } catch (err) {
    progress(`${(err as Error).message.split(';')[0]}; going by the node processes and dirs found instead`)
    return null
  }
}

async function exists (dir: string): Promise<boolean> {
  return await stat(dir).then(() => true, () => false)
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
