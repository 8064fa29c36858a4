// Node processes of a testnet: spawned detached (their own process group, so a
// Ctrl-C in the terminal reaches only the CLI, which then stops them in order),
// signalled only by PID after checking that the PID is still that node.

import { spawn } from 'node:child_process'
import { openSync, closeSync, readFileSync, readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FaultRules } from '../../node/faults.ts'
import { statFields } from '../../node/proc.ts'
import { clusterFilesBeside } from '../../cli/cluster-files.ts'

export const CLI_PATH = resolve(fileURLToPath(new URL('../../cli/bin/murmur.ts', import.meta.url)))

export interface SpawnInit {
  dataDir: string
  logFile: string
  port: number
  apiPort: number
  join: string[]
  labels: Record<string, string>
  extraArgs?: string[]
  /**
   * The cluster key file every node of the testnet shares, with root.pub beside it
   * (cli/cluster-files.ts); null starts the node with --insecure-open-cluster.
   */
  clusterKeyFile: string | null
  /** Testnets: the node takes fault rules on its admin endpoint, starting with these. */
  faultInjection?: boolean
  faultRules?: FaultRules | null
  /** Where it listens for peers and serves its API (default 127.0.0.1). */
  host?: string
  /**
   * Run inside this network namespace: by nsenter --net, which switches only the
   * network (ip netns exec also remounts /sys, and the node would lose its cgroups).
   */
  netns?: string | null
}

export function spawnNode (init: SpawnInit): number {
  const args = [
    // As the murmur bin's shebang: a small young generation keeps idle RSS down.
    '--max-semi-space-size=1',
    CLI_PATH, 'node', 'start',
    '--data-dir', init.dataDir,
    '--host', init.host ?? '127.0.0.1',
    '--port', String(init.port),
    // In a network namespace the API must be on the node's bridge address for the CLI to reach it:
    // a bridge on this machine only, but not loopback, so the node has to be told that it is meant.
    ...(init.host === undefined ? [] : ['--api-host', init.host, '--insecure-api-host']),
    // A testnet's root public key lies beside its cluster key (cli/cluster-files.ts).
    ...(init.clusterKeyFile === null ? ['--insecure-open-cluster'] : ['--cluster-key', init.clusterKeyFile, '--root-key', clusterFilesBeside(init.clusterKeyFile).rootPub]),
    '--api-port', String(init.apiPort),
    '--profile', 'local',
    ...init.join.flatMap((a) => ['--join', a]),
    ...Object.entries(init.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
    ...(init.faultInjection === true ? ['--fault-injection'] : []),
    ...(init.faultRules === null || init.faultRules === undefined ? [] : ['--fault-rules', JSON.stringify(init.faultRules)]),
    ...(init.extraArgs ?? []),
  ]
  const log = openSync(init.logFile, 'a')
  try {
    const [cmd, argv] = init.netns === null || init.netns === undefined
      ? [process.execPath, args]
      : ['nsenter', [`--net=/run/netns/${init.netns}`, '--', process.execPath, ...args]]
    const child = spawn(cmd, argv, { detached: true, stdio: ['ignore', log, log] })
    child.unref()
    if (child.pid === undefined) throw new Error(`could not start a node process for ${init.dataDir}`)
    return child.pid
  } finally {
    closeSync(log)
  }
}

/**
 * True when `pid` runs and is the node of `dataDir` (paused counts: it still
 * runs); false when it is gone, a zombie, or a process the OS has since given
 * the PID to. Throws when /proc cannot tell (EMFILE, ENOMEM): a testnet that took
 * "cannot tell" for "exited" removed the data dir of a node that still ran.
 */
export function isNodeProcess (pid: number | null, dataDir: string): boolean {
  if (pid === null) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    // EPERM: a process of another user, so not a node this testnet started.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH' || (err as NodeJS.ErrnoException).code === 'EPERM') return false
    throw err
  }
  const args = commandLine(pid)
  if (args === null || nodeDataDir(args) !== resolve(dataDir)) return false
  const state = statFields(pid)?.[0]
  return state !== undefined && state !== 'Z'
}

/** The process's arguments, null if it is gone; throws when /proc cannot tell. */
function commandLine (pid: number): string[] | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESRCH') return null
    throw err
  }
  // Empty for a zombie or a process on its way out.
  return text === '' ? null : text.split('\0')
}

/** The resolved --data-dir of a `murmur node start` command line, or null for any other command. */
export function nodeDataDir (args: string[]): string | null {
  const start = args.findIndex((a, i) => a === 'node' && args[i + 1] === 'start')
  const at = args.indexOf('--data-dir')
  if (start < 0 || at < 0 || args[at + 1] === undefined) return null
  return resolve(args[at + 1]!)
}

/**
 * Every `murmur node start` process whose data dir is a node dir of the testnet in
 * `dir` (`<dir>/node-<n>`, as up and add name them): what it may have started,
 * found without its state file (missing after a crash, or stale). Matched by the
 * data dir on the command line, never by a process name.
 */
export function findNodeProcesses (dir: string): Array<{ pid: number, dataDir: string }> {
  const root = resolve(dir)
  const found: Array<{ pid: number, dataDir: string }> = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    if (pid === process.pid) continue
    let args: string[] | null
    try {
      args = commandLine(pid)
    } catch (err) {
      // A process we may not read is another user's, so not ours; anything else means we cannot tell.
      if ((err as NodeJS.ErrnoException).code === 'EACCES' || (err as NodeJS.ErrnoException).code === 'EPERM') continue
      throw err
    }
    const dataDir = args === null ? null : nodeDataDir(args)
    if (dataDir !== null && dirname(dataDir) === root && NODE_DIR.test(basename(dataDir))) found.push({ pid, dataDir })
  }
  return found
}

/** The name of a node's data dir in a testnet's dir (its log is that name with .log). */
export const NODE_DIR = /^node-\d+$/
/** The testnet's cluster key, in its dir beside the node dirs. */
export const CLUSTER_KEY_NAME = 'cluster.key'

export function isInside (path: string, dir: string): boolean {
  const rel = relative(resolve(dir), resolve(path))
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)
}

/** The process's state letter from /proc (R, S, T for stopped, Z for zombie), or null. */
export function processState (pid: number): string | null {
  return gone(() => statFields(pid))?.[0] ?? null
}

/** CPU time the process has used (user + system), in clock ticks of 10 ms. */
export function cpuTicks (pid: number): number {
  const fields = gone(() => statFields(pid))
  return fields === null ? 0 : Number(fields[11]) + Number(fields[12])
}

/** The process's resident memory in bytes. */
export function rssBytes (pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return Number(match?.[1] ?? 0) * 1024
  } catch {
    return 0
  }
}

/** Unreadable counts as gone here: the testnet only asks whether its nodes still run. */
function gone (read: () => string[] | null): string[] | null {
  try {
    return read()
  } catch {
    return null
  }
}

export function signal (pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

/** Waits until the process is gone; true if it went within the time. */
export async function waitForExit (pid: number, dataDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!isNodeProcess(pid, dataDir)) return true
    await sleep(25)
  }
  return !isNodeProcess(pid, dataDir)
}

/** Free TCP ports on 127.0.0.1, found by binding port 0. */
export async function freePorts (count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, async () => await new Promise<import('node:net').Server>((res, rej) => {
    const server = createServer()
    server.once('error', rej)
    server.listen(0, '127.0.0.1', () => { res(server) })
  })))
  const ports = servers.map((s) => (s.address() as import('node:net').AddressInfo).port)
  await Promise.all(servers.map(async (s) => { await new Promise((res) => s.close(res)) }))
  return ports
}

/** The runtime file a started node writes: its peer id, addresses, API URL. */
export async function readRuntime (dataDir: string): Promise<{ pid: number, peerId: string, addrs: string[], apiUrl: string } | null> {
  try {
    return JSON.parse(await readFile(join(dataDir, 'node.json'), 'utf8'))
  } catch {
    return null
  }
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((res) => setTimeout(res, ms))
}
