// A node's configuration: raw strings from flags in, one validated NodeConfig
// out, or a one-line InputError naming the flag. Defaults are here, with why.

import { closeSync, fchmodSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs'
import { isIP } from 'node:net'
import { cpus, homedir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import { multiaddr } from '@multiformats/multiaddr'
import { type MembershipConfig, PRESETS, membershipConfig } from '../membership/config.ts'
import { DEFAULT_TASK_UIDS, type UidRange, parseUidRange } from './executor/uids.ts'
import { KEY_PREFIX, parsePublicKey } from '../access/keys.ts'
import { InputError } from './errors.ts'
import { type FaultRules, parseFaultRules } from './faults.ts'
import type { ReconcileConfig } from './reconcile/config.ts'
import { parseCpu, parseDuration, parseSize } from './units.ts'

export interface NodeConfig {
  dataDir: string
  /** libp2p listen address. */
  host: string
  port: number
  apiHost: string
  apiPort: number
  join: string[]
  mdns: boolean
  cpuMillis: number
  memoryBytes: number
  labels: Record<string, string>
  profile: 'lan' | 'local'
  membership: MembershipConfig
  /** How long `--join` may take before the node gives up. */
  joinTimeoutMs: number
  /** How often the membership state machine is ticked: its timing resolution. */
  tickMs: number
  /** How long a dial to a peer may take before it counts as failed. */
  dialTimeoutMs: number
  /** How long a graceful stop may take before the process exits anyway. */
  stopTimeoutMs: number
  state: StateConfig
  /** How tasks are contained: `auto` takes cgroup v2, else v1, else none with a warning. */
  isolation: 'auto' | 'cgroup-v2' | 'cgroup-v1' | 'none'
  /** When the node is root: the uids its tasks run as, one per task (node/executor/uids.ts). */
  taskUids: UidRange
  /** Timing of the reconcile loop (node/reconcile/loop.ts); the defaults suit both profiles. */
  reconcile: Partial<ReconcileConfig>
  /**
   * Testnets only: the node takes network fault rules on /v1/admin/faults
   * (node/faults.ts). Never on unless asked for: anyone who reaches the API could
   * cut the node off.
   */
  faultInjection: boolean
  /** The rules to start with (a testnet restarts a node inside its partition). */
  faultRules: FaultRules | null
  /**
   * The cluster key (a libp2p private network key): only hosts holding it can
   * complete a connection. Checked here; the node reads it again when it builds its host.
   */
  clusterKeyFile: string | null
  /** Started without a cluster key on purpose: anyone who reaches the port can join. */
  insecureOpenCluster: boolean
  /**
   * The cluster's root public key ('ed25519:…'): users and their grants are
   * checked against it (access/). Null only in an open cluster: then the API
   * has no users, and whoever reaches it may do everything.
   */
  rootKey: string | null
}

/** The shared state: how it spreads, and how long what is over is kept. */
export interface StateConfig {
  /** Move the state database aside and start empty; peers fill it. */
  resetState: boolean
  taskRetentionMs: number
  jobRetentionMs: number
  /** A node dead or gone for this long is removed from the state, with its records. */
  nodeRetentionMs: number
  /** Anti-entropy with one random member this often (and on every new connection). */
  syncIntervalMs: number
  /** Local changes within this window go out as one gossip message. */
  gossipBatchMs: number
  /** At most this many gossip messages a second; more changes wait and join the next batch. */
  publishPerSecondMax: number
  /** Retention and compaction of the document run this often. */
  maintainIntervalMs: number
}

/** What the CLI hands over: strings as typed, nothing interpreted yet. */
export interface RawNodeOptions {
  dataDir?: string
  host?: string
  port?: string
  apiHost?: string
  apiPort?: string
  join?: string[]
  mdns?: boolean
  cpu?: string
  memory?: string
  label?: string[]
  profile?: string
  joinTimeout?: string
  resetState?: boolean
  taskRetention?: string
  jobRetention?: string
  nodeRetention?: string
  isolation?: string
  taskUids?: string
  faultInjection?: boolean
  faultRules?: string
  clusterKey?: string
  insecureOpenCluster?: boolean
  /** The root public key ('ed25519:…'), or a file holding it ('murmur cluster init' writes root.pub). */
  rootKey?: string
  /** Allows an --api-host that is not loopback: only for a testnet whose nodes sit in network namespaces of one machine. */
  insecureApiHost?: boolean
}

/** Where the cluster key comes from when no flag names it. */
export const CLUSTER_KEY_ENV = 'MURMUR_CLUSTER_KEY_FILE'
/** Where the root public key comes from when no flag names it. */
export const ROOT_KEY_ENV = 'MURMUR_ROOT_KEY'

export const DEFAULTS = Object.freeze({
  // Root's home is closed to other users, and a root node's tasks run as other users: they
  // could not reach their own dirs (HOME) below it.
  dataDir: process.getuid?.() === 0 ? '/var/lib/murmur/node' : join(homedir(), '.murmur', 'node'),
  host: '0.0.0.0',
  port: 7946, // the port memberlist made familiar for gossip membership
  apiHost: '127.0.0.1', // the API has no authentication yet: local only unless asked
  apiPort: 7947,
  joinTimeoutMs: 10_000, // several dial timeouts: a seed that does not answer by then is down
  tickMs: 20, // 10 × finer than the fastest probe timeout of any preset
  dialTimeoutMs: 2_000, // a LAN dial takes milliseconds; a silent host should not hold a probe long
  stopTimeoutMs: 5_000, // libp2p's stop() has been seen to hang: never wait longer than this
  taskRetentionMs: 60 * 60_000, // an hour to look at a finished task's exit and logs
  jobRetentionMs: 24 * 60 * 60_000, // a day to see what ran and how it ended
  nodeRetentionMs: 24 * 60 * 60_000, // a machine away for a day is gone, not rebooting
  gossipBatchMs: 1, // changes of one turn go as one message; the rate limit batches more under load
  publishPerSecondMax: 50,
  maintainIntervalMs: 10_000,
  /** CPU kept back for the node itself and the OS. */
  cpuReserveMillis: 100,
  /** Memory kept back for the node itself and the OS: the larger of 512 MiB and 10 %. */
  memoryReserveBytes: (total: number) => Math.max(512 * 1024 ** 2, Math.floor(total * 0.1)),
})

/** Beyond these, a node's offer is a typo; they also keep every figure a safe integer on the wire. */
const LIMITS = Object.freeze({
  cpuMillisMax: 100_000_000, // 100,000 cores
  memoryBytesMax: 1024 ** 5, // 1 PiB
})

const LABEL_KEY = /^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$/

export function nodeConfig (raw: RawNodeOptions, env: Record<string, string | undefined> = process.env): NodeConfig {
  const profile = raw.profile ?? 'lan'
  if (profile !== 'lan' && profile !== 'local') throw new InputError('BAD_FLAG', `--profile must be 'lan' or 'local', got '${profile}'`)
  const machineCpu = cpus().length * 1000
  const machineMemory = totalmem()
  const cpuMillis = raw.cpu === undefined
    ? Math.max(100, machineCpu - DEFAULTS.cpuReserveMillis)
    : flag('--cpu', () => parseCpu(raw.cpu!))
  const memoryBytes = raw.memory === undefined
    ? Math.max(64 * 1024 ** 2, machineMemory - DEFAULTS.memoryReserveBytes(machineMemory))
    : flag('--memory', () => parseSize(raw.memory!))
  if (cpuMillis <= 0 || cpuMillis > LIMITS.cpuMillisMax) throw new InputError('BAD_FLAG', `--cpu must be more than 0 and at most ${LIMITS.cpuMillisMax / 1000} cores`)
  if (memoryBytes <= 0 || memoryBytes > LIMITS.memoryBytesMax) throw new InputError('BAD_FLAG', '--memory must be more than 0 and at most 1P')
  if (raw.host !== undefined && isIP(raw.host) === 0) throw new InputError('BAD_FLAG', `--host must be an IP address such as 127.0.0.1 or 0.0.0.0, got '${raw.host}'`)
  const rootKey = readRootKey(raw, env)
  if (raw.apiHost !== undefined) apiHost(raw.apiHost, raw.insecureApiHost === true || rootKey !== null)
  for (const addr of raw.join ?? []) {
    flag('--join', () => {
      const ma = multiaddr(addr)
      if (!ma.getComponents().some((c) => c.name === 'tcp')) throw new Error(`'${addr}' has no /tcp/ part`)
    })
  }
  const isolation = raw.isolation ?? 'auto'
  if (isolation !== 'auto' && isolation !== 'cgroup-v2' && isolation !== 'cgroup-v1' && isolation !== 'none') {
    throw new InputError('BAD_FLAG', `--isolation must be auto, cgroup-v2, cgroup-v1 or none, got '${isolation}'`)
  }
  if (raw.faultRules !== undefined && raw.faultInjection !== true) throw new InputError('BAD_FLAG', '--fault-rules needs --fault-injection (testnets only)')
  // Last: a typo in another flag is worth hearing about before a missing key.
  const clusterKeyFile = clusterKey(raw, env)
  if (clusterKeyFile !== null && rootKey === null) {
    throw new InputError('NO_ROOT_KEY', `a closed cluster has users: give the root public key with --root-key <file> (or ${ROOT_KEY_ENV}); 'murmur cluster init' wrote root.pub beside the cluster key`)
  }
  return {
    isolation,
    taskUids: raw.taskUids === undefined ? DEFAULT_TASK_UIDS : parseUidRange(raw.taskUids),
    dataDir: raw.dataDir ?? DEFAULTS.dataDir,
    host: raw.host ?? DEFAULTS.host,
    port: port('--port', raw.port, DEFAULTS.port),
    apiHost: raw.apiHost ?? DEFAULTS.apiHost,
    apiPort: port('--api-port', raw.apiPort, DEFAULTS.apiPort),
    join: raw.join ?? [],
    mdns: raw.mdns ?? false,
    cpuMillis,
    memoryBytes,
    labels: labels(raw.label ?? []),
    profile,
    membership: membershipConfig({}, PRESETS[profile]),
    joinTimeoutMs: raw.joinTimeout === undefined ? DEFAULTS.joinTimeoutMs : flag('--join-timeout', () => parseDuration(raw.joinTimeout!)),
    tickMs: DEFAULTS.tickMs,
    dialTimeoutMs: DEFAULTS.dialTimeoutMs,
    stopTimeoutMs: DEFAULTS.stopTimeoutMs,
    state: stateConfig(profile, {
      resetState: raw.resetState ?? false,
      taskRetentionMs: retention('--task-retention', raw.taskRetention, DEFAULTS.taskRetentionMs),
      jobRetentionMs: retention('--job-retention', raw.jobRetention, DEFAULTS.jobRetentionMs),
      nodeRetentionMs: retention('--node-retention', raw.nodeRetention, DEFAULTS.nodeRetentionMs),
    }),
    reconcile: {},
    faultInjection: raw.faultInjection ?? false,
    faultRules: raw.faultRules === undefined ? null : faultRules(raw.faultRules),
    clusterKeyFile,
    insecureOpenCluster: clusterKeyFile === null,
    rootKey,
  }
}

/** The root public key: given as it is ('ed25519:…'), or the file that holds it. */
function readRootKey (raw: RawNodeOptions, env: Record<string, string | undefined>): string | null {
  const fromEnv = env[ROOT_KEY_ENV]
  const [name, value] = raw.rootKey !== undefined ? ['--root-key', raw.rootKey] : [ROOT_KEY_ENV, fromEnv === '' ? undefined : fromEnv]
  if (value === undefined) return null
  if (value.startsWith(KEY_PREFIX)) return rootPublicKey(value, name)
  let text: string
  try {
    const stat = statSync(value)
    if (!stat.isFile() || stat.size > 1_024) throw new InputError('BAD_ROOT_KEY', `${name} ${value} is not a root public key file; give the root.pub 'murmur cluster init' wrote`)
    text = readFileSync(value, 'utf8')
  } catch (err) {
    if (err instanceof InputError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw new InputError('BAD_ROOT_KEY', `${name} ${value}: ${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message}; give the root.pub 'murmur cluster init' wrote, or the key itself (ed25519:…)`)
  }
  return rootPublicKey(text, `${name} ${value}`)
}

/** parsePublicKey's refusal already names where the key came from: as an InputError, with no second prefix. */
function rootPublicKey (text: string, where: string): string {
  try {
    return parsePublicKey(text, where)
  } catch (err) {
    throw new InputError('BAD_ROOT_KEY', (err as Error).message)
  }
}

/**
 * A node with users (a root key) checks every request's signature, and may listen
 * on any address. One without (an open cluster) answers whoever reaches it:
 * loopback only (127.0.0.0/8, ::1, localhost), so that reaching it takes a login
 * here (or an ssh tunnel).
 */
function apiHost (value: string, allowed: boolean): void {
  if (value !== 'localhost' && isIP(value) === 0) throw new InputError('BAD_FLAG', `--api-host must be an IP address such as 127.0.0.1 or 0.0.0.0, or localhost, got '${value}'`)
  if (allowed || isLoopback(value)) return
  throw new InputError('BAD_FLAG', `--api-host ${value} would let anyone who reaches it run commands on this machine (an open cluster has no users to check); keep it on 127.0.0.1, or run a closed cluster (--cluster-key and --root-key)`)
}

export function isLoopback (host: string): boolean {
  if (host === 'localhost' || host === '::1') return true
  return isIP(host) === 4 && host.startsWith('127.')
}

/** The key file from --cluster-key or the environment, checked; null only with --insecure-open-cluster. */
function clusterKey (raw: RawNodeOptions, env: Record<string, string | undefined>): string | null {
  const fromEnv = env[CLUSTER_KEY_ENV]
  const [name, file] = raw.clusterKey !== undefined ? ['--cluster-key', raw.clusterKey] : [CLUSTER_KEY_ENV, fromEnv === '' ? undefined : fromEnv]
  if (file === undefined) {
    if (raw.insecureOpenCluster === true) return null
    throw new InputError('NO_CLUSTER_KEY', "no cluster key: make one with 'murmur cluster init', copy it to every node, and start with --cluster-key <file> (or --insecure-open-cluster to let anyone who reaches the port join)")
  }
  if (raw.insecureOpenCluster === true) throw new InputError('BAD_FLAG', `--insecure-open-cluster and ${name} ${file} contradict each other: give one of them`)
  readClusterKey(file, name)
  return file
}

/** A key file is 95 bytes; anything much larger is not one (and is not read whole). */
const CLUSTER_KEY_BYTES_MAX = 1_024
/** What @libp2p/pnet's generateKey writes: two header lines and 64 hex digits. */
const CLUSTER_KEY_FILE_BYTES = 95
const CLUSTER_KEY_FORMAT = /^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n[0-9a-fA-F]{64}\r?\n?$/

/**
 * Reads a cluster key file: a regular file that only its owner may read or
 * change (as ssh wants of a private key), in the format of libp2p's private
 * networks (@libp2p/pnet): `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits.
 * `name` is the flag or variable that named it, for the one-line error.
 */
export function readClusterKey (file: string, name = '--cluster-key'): Uint8Array {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new InputError('BAD_CLUSTER_KEY', `${name} ${file}: no such file; make one with 'murmur cluster init' (once per cluster) and copy it to every node`)
    if (code === 'EACCES') throw new InputError('BAD_CLUSTER_KEY', `${name} ${file}: permission denied; run the node as the user who owns the key file`)
    throw new InputError('BAD_CLUSTER_KEY', `${name} ${file}: cannot open it (${code ?? (err as Error).message})`)
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new InputError('BAD_CLUSTER_KEY', `${name} ${file} is not a file; give the key file 'murmur cluster init' wrote`)
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      throw new InputError('BAD_CLUSTER_KEY', `${name} ${file} is open to other users (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}): anyone on this machine could join the cluster with it; run 'chmod 600 ${file}'`)
    }
    const bytes = Buffer.alloc(Math.min(stat.size, CLUSTER_KEY_BYTES_MAX + 1))
    const read = bytes.length === 0 ? 0 : readSync(fd, bytes, 0, bytes.length, 0)
    if (read > CLUSTER_KEY_BYTES_MAX || !CLUSTER_KEY_FORMAT.test(bytes.subarray(0, read).toString('latin1'))) {
      throw new InputError('BAD_CLUSTER_KEY', `${name} ${file} is not a cluster key (expected the three lines 'murmur cluster init' writes: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)`)
    }
    return new Uint8Array(bytes.subarray(0, read))
  } finally {
    closeSync(fd)
  }
}

/**
 * Writes a new cluster key (32 random bytes, by @libp2p/pnet's generateKey) to
 * `file`, mode 0600, making its dir 0700 if it is missing. Refuses to replace
 * a file unless `force`: the old key would lock every node that holds it out.
 */
export function writeClusterKey (file: string, force = false): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  let fd: number
  try {
    fd = openSync(file, force ? 'w' : 'wx', 0o600)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new InputError('KEY_EXISTS', `${file} already exists: every node holding it would be locked out by a new key; give another --out, or --force to replace it`)
    throw new InputError('BAD_FLAG', `cannot write ${file}: ${code ?? (err as Error).message}`)
  }
  try {
    // An existing file opened with 'w' keeps its mode: make it private before the key goes in.
    if (force) fchmodSync(fd, 0o600)
    const key = new Uint8Array(CLUSTER_KEY_FILE_BYTES)
    generateKey(key)
    writeSync(fd, key)
  } finally {
    closeSync(fd)
  }
}

/** The shared state's settings for a profile; a node and the simulator take them from here. */
export function stateConfig (profile: 'lan' | 'local', overrides: Partial<StateConfig> = {}): StateConfig {
  return {
    resetState: false,
    taskRetentionMs: DEFAULTS.taskRetentionMs,
    jobRetentionMs: DEFAULTS.jobRetentionMs,
    nodeRetentionMs: DEFAULTS.nodeRetentionMs,
    // On one machine a partition heals in a moment; on a LAN, every 5 s is plenty next to gossip.
    syncIntervalMs: profile === 'local' ? 2_000 : 5_000,
    gossipBatchMs: DEFAULTS.gossipBatchMs,
    publishPerSecondMax: DEFAULTS.publishPerSecondMax,
    maintainIntervalMs: DEFAULTS.maintainIntervalMs,
    ...overrides,
  }
}

function faultRules (text: string): FaultRules {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new InputError('BAD_FLAG', `--fault-rules must be JSON such as {"blocked":[],"delayMs":200}, got '${text.slice(0, 80)}'`)
  }
  return parseFaultRules(json, '--fault-rules')
}

function retention (name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const ms = flag(name, () => parseDuration(text))
  if (ms < 1_000) throw new InputError('BAD_FLAG', `${name} must be at least 1s, got '${text}'`)
  return ms
}

function flag<T> (name: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    throw new InputError('BAD_FLAG', `${name}: ${(err as Error).message}`)
  }
}

function port (name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!/^\d+$/.test(text) || value > 65535) throw new InputError('BAD_FLAG', `${name} must be a port number from 0 to 65535, got '${text}'`)
  return value
}

function labels (pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    const key = at < 0 ? pair : pair.slice(0, at)
    if (at < 0 || labelKeyProblem(key) !== null) {
      throw new InputError('BAD_FLAG', `--label '${pair}' must be key=value with a key of letters, digits, '.', '_', '-', '/' (at most 63)`)
    }
    const value = pair.slice(at + 1)
    if (value.length > 255) throw new InputError('BAD_FLAG', `--label '${key}': the value is longer than 255 characters`)
    out[key] = value
  }
  return out
}

/** Why a label key is not allowed, or null: letters and digits at both ends, '.', '_', '-', '/' inside, at most 63. */
export function labelKeyProblem (key: string): string | null {
  return LABEL_KEY.test(key) ? null : "a key is letters, digits, '.', '_', '-', '/' (starting and ending with a letter or digit), at most 63 characters"
}
