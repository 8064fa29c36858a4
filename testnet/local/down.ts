// Taking a testnet down: every node process it started stopped (a paused one
// continued first), the tasks they left purged (processes and cgroups), their
// data dirs and logs removed, the network namespaces and links of a --netns
// testnet deleted, and the state file last. It trusts the state file only as a hint: the node
// processes are also found by the data dirs on their command lines, so a state
// file that is missing (a crash between spawn and write) or stale (a PID written
// by a command that raced) leaves nothing behind. A data dir is removed only once
// its process is known to be gone: "cannot tell" stops the teardown instead.

import { ADMIN_KEY_NAME, ROOT_KEY_NAME, ROOT_PUB_NAME } from '../../cli/cluster-files.ts'
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { purgeTasks } from '../../node/executor/executor.ts'
import { TestnetError } from './errors.ts'
import { removeNetwork } from './netns.ts'
import { CLUSTER_KEY_NAME, NODE_DIR, findNodeProcesses, isInside, isNodeProcess, signal, waitForExit } from './process.ts'
import { type TestnetState, removeState } from './state.ts'

export const STOP_GRACE_MS = 5_000

export interface TeardownResult {
  /** Nodes that left by themselves after SIGTERM. */
  stopped: number
  /** Nodes that had to be SIGKILLed. */
  killed: number
}

export async function teardown (dir: string, state: TestnetState | null, options: { keepData: boolean, progress: (m: string) => void }): Promise<TeardownResult> {
  const targets = new Map<number, string>()
  for (const node of state?.nodes ?? []) if (node.pid !== null) targets.set(node.pid, node.dataDir)
  for (const found of findNodeProcesses(dir)) {
    if (targets.get(found.pid) !== found.dataDir && state !== null) options.progress(`found node process ${found.pid} (${found.dataDir}) that the state file does not name`)
    targets.set(found.pid, found.dataDir)
  }
  const running = [...targets].filter(([pid, dataDir]) => cannotTellIsFatal(() => isNodeProcess(pid, dataDir), pid))
  if (running.length > 0) options.progress(`stopping ${running.length} node(s)`)
  const outcomes = await Promise.all(running.map(async ([pid, dataDir]) => await terminate(pid, dataDir)))
  const stuck = running.filter((_, i) => outcomes[i] === 'stuck').map(([pid]) => pid)
  if (stuck.length > 0) {
    throw new TestnetError(`node process(es) ${stuck.join(', ')} did not exit even after SIGKILL; nothing was removed: look at them (ps -o pid,stat,args -p ${stuck.join(',')}) and run 'murmur testnet down' again`)
  }
  const dataDirs = new Set<string>([...targets.values(), ...(state?.nodes ?? []).map((n) => n.dataDir)].filter((d) => isInside(d, dir)))
  for (const name of await readdir(dir).catch(() => [] as string[])) if (NODE_DIR.test(name)) dataDirs.add(join(dir, name))
  // A node that was killed left its tasks running, for a next life that will not come.
  for (const dataDir of dataDirs) await purgeTasks(join(dataDir, 'tasks')).catch(() => {})
  if (!options.keepData) {
    for (const dataDir of dataDirs) {
      await rm(dataDir, { recursive: true, force: true })
      await rm(`${dataDir}.log`, { force: true })
    }
    for (const node of state?.nodes ?? []) if (isInside(node.logFile, dir)) await rm(node.logFile, { force: true })
    // The testnet's closed cluster: its network key, root key pair and admin key (cli/cluster-files.ts).
    for (const name of [CLUSTER_KEY_NAME, ROOT_PUB_NAME, ROOT_KEY_NAME, ADMIN_KEY_NAME]) await rm(join(dir, name), { force: true })
  }
  // Namespaces (with their veths, rules, chains and qdiscs) and the bridge: recorded, or found by the testnet's prefix.
  const removed = await removeNetwork(dir, state?.netns ?? null)
  if (removed.length > 0) options.progress(`removed ${removed.length} network namespace(s) and link(s)`)
  await removeState(dir)
  return { stopped: outcomes.filter((o) => o === 'stopped').length, killed: outcomes.filter((o) => o === 'killed').length }
}

/**
 * SIGCONT first (a paused node would sit on its SIGTERM), then SIGTERM, and
 * SIGKILL if it has not left within the grace time.
 */
export async function terminate (pid: number, dataDir: string): Promise<'stopped' | 'killed' | 'stuck'> {
  if (!isNodeProcess(pid, dataDir)) return 'stopped'
  signal(pid, 'SIGCONT')
  signal(pid, 'SIGTERM')
  if (await waitForExit(pid, dataDir, STOP_GRACE_MS)) return 'stopped'
  signal(pid, 'SIGKILL')
  return await waitForExit(pid, dataDir, STOP_GRACE_MS) ? 'killed' : 'stuck'
}

function cannotTellIsFatal (check: () => boolean, pid: number): boolean {
  try {
    return check()
  } catch (err) {
    throw new TestnetError(`cannot tell whether node process ${pid} still runs (${(err as Error).message}); nothing was stopped or removed: run 'murmur testnet down' again`)
  }
}
