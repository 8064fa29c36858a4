// Node processes of a testnet: spawned detached (their own process group, so a
// Ctrl-C in the terminal reaches only the CLI, which then stops them in order),
// signalled only by PID after checking that the PID is still that node.

import { spawn } from 'node:child_process'
import { openSync, closeSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { statFields } from '../../node/proc.ts'

export const CLI_PATH = resolve(fileURLToPath(new URL('../../cli/bin/murmur.ts', import.meta.url)))

export interface SpawnInit {
  dataDir: string
  logFile: string
  port: number
  apiPort: number
  join: string[]
  labels: Record<string, string>
  extraArgs?: string[]
}

export function spawnNode (init: SpawnInit): number {
  const args = [
    // As the murmur bin's shebang: a small young generation keeps idle RSS down.
    '--max-semi-space-size=1',
    CLI_PATH, 'node', 'start',
    '--data-dir', init.dataDir,
    '--host', '127.0.0.1',
    '--port', String(init.port),
    '--api-port', String(init.apiPort),
    '--profile', 'local',
    ...init.join.flatMap((a) => ['--join', a]),
    ...Object.entries(init.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
    ...(init.extraArgs ?? []),
  ]
  const log = openSync(init.logFile, 'a')
  try {
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log] })
    child.unref()
    if (child.pid === undefined) throw new Error(`could not start a node process for ${init.dataDir}`)
    return child.pid
  } finally {
    closeSync(log)
  }
}

/**
 * True when `pid` runs and is the node of `dataDir`: a PID that the OS has since
 * given to another process is never signalled.
 */
export function isNodeProcess (pid: number | null, dataDir: string): boolean {
  if (pid === null) return false
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    const at = cmdline.indexOf('--data-dir')
    return at >= 0 && resolve(cmdline[at + 1] ?? '') === resolve(dataDir) && processState(pid) !== 'Z'
  } catch {
    return false
  }
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
