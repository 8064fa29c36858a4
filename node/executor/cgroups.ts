// Cgroups as the executor uses them: find what the machine offers (v2, v1, or
// nothing usable), make one murmur-owned group per node and one group per task
// below it, set limits, name the files a process is moved in by (the spawner
// writes there), read the accounting, kill all, remove.
//
// The file formats are parsed by pure functions (tested on their own); the rest
// is thin I/O on the cgroup file systems. Everything is synchronous: each call is
// one small read or write on a virtual file system that answers in microseconds.

import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/** The controllers a task group needs, by hierarchy version. */
const V1_REQUIRED = ['cpu', 'cpuacct', 'memory', 'pids'] as const
/** Used when present: it lets a kill catch every process at once. */
const V1_OPTIONAL = ['freezer'] as const
const V2_REQUIRED = ['cpu', 'memory', 'pids'] as const

/** CFS period: 100 ms, the kernel's default, fine enough for a quota of 1 % of a core. */
export const CPU_PERIOD_US = 100_000
/** The kernel refuses a quota below 1 ms. */
const CPU_QUOTA_MIN_US = 1_000

export interface CgroupLimits {
  cpuMillis: number
  memoryBytes: number
  pidsMax: number
}

export interface CgroupCounters {
  /** CPU time of every process that ever ran in the group. */
  cpuNanos: number
  memoryBytes: number
  /** The high-water mark where the kernel keeps one, else null (the sampler keeps its own). */
  memoryPeakBytes: number | null
  pids: number
  oomKills: number
}

// ---------------------------------------------------------------------------
// Pure parsers

export interface Mount { fsType: string, mountPoint: string, options: string[] }

/** /proc/self/mounts: device, mount point, type, options, … (octal escapes in paths). */
export function parseMounts (text: string): Mount[] {
  const mounts: Mount[] = []
  for (const line of text.split('\n')) {
    const fields = line.split(' ')
    if (fields.length < 4) continue
    mounts.push({ fsType: fields[2]!, mountPoint: unescapeMount(fields[1]!), options: fields[3]!.split(',') })
  }
  return mounts
}

function unescapeMount (path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

export interface SelfCgroup {
  /** The unified (v2) path, from the `0::` line. */
  unified: string | null
  /** v1: controller → path (named hierarchies such as name=systemd included as written). */
  v1: Map<string, string>
}

/** /proc/self/cgroup: `id:controllers:path` per hierarchy. */
export function parseSelfCgroup (text: string): SelfCgroup {
  const result: SelfCgroup = { unified: null, v1: new Map() }
  for (const line of text.split('\n')) {
    const first = line.indexOf(':')
    const second = line.indexOf(':', first + 1)
    if (first < 0 || second < 0) continue
    const controllers = line.slice(first + 1, second)
    const path = line.slice(second + 1)
    if (line.slice(0, first) === '0' && controllers === '') result.unified = path
    else for (const c of controllers.split(',')) if (c !== '') result.v1.set(c, path)
  }
  return result
}

/** A flat-keyed file: `key value` per line (cpu.stat, memory.stat, memory.events, memory.oom_control, pids.events). */
export function parseKeyed (text: string): Map<string, number> {
  const map = new Map<string, number>()
  for (const line of text.split('\n')) {
    const space = line.indexOf(' ')
    if (space <= 0) continue
    const value = Number(line.slice(space + 1).trim())
    if (Number.isFinite(value)) map.set(line.slice(0, space), value)
  }
  return map
}

/** A single number, or `max` (v2's "no limit"), as null. */
export function parseNumber (text: string): number | null {
  const trimmed = text.trim()
  if (trimmed === 'max') return null
  const value = Number(trimmed)
  if (trimmed === '' || !Number.isFinite(value)) throw new Error(`expected a number, read '${trimmed}'`)
  return value
}

/** cgroup.procs: one pid per line. */
export function parsePids (text: string): number[] {
  const pids: number[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const pid = Number(line)
    if (Number.isInteger(pid) && pid > 0) pids.push(pid)
  }
  return pids
}

/** The limit files' contents for one task, by version (swap off: memsw = limit in v1, swap.max = 0 in v2). */
export function limitWrites (version: 1 | 2, limits: CgroupLimits): Array<[controller: string, file: string, value: string]> {
  const quota = Math.max(CPU_QUOTA_MIN_US, Math.round(limits.cpuMillis * CPU_PERIOD_US / 1000))
  if (version === 1) {
    return [
      ['cpu', 'cpu.cfs_period_us', String(CPU_PERIOD_US)],
      ['cpu', 'cpu.cfs_quota_us', String(quota)],
      // A new group's limits are unlimited, so the memory limit goes first: memsw may never be below it.
      ['memory', 'memory.limit_in_bytes', String(limits.memoryBytes)],
      ['memory', 'memory.memsw.limit_in_bytes', String(limits.memoryBytes)],
      ['pids', 'pids.max', String(limits.pidsMax)],
    ]
  }
  return [
    ['cpu', 'cpu.max', `${quota} ${CPU_PERIOD_US}`],
    ['memory', 'memory.max', String(limits.memoryBytes)],
    ['memory', 'memory.swap.max', '0'],
    ['pids', 'pids.max', String(limits.pidsMax)],
  ]
}

export type HierarchyPlan =
  | { version: 2, dir: string }
  | { version: 1, dirs: Record<string, string> }
  | { version: 0, why: string }

/**
 * Where the node's own groups go, from the mounts and the process's own groups:
 * below the node's own group in each hierarchy, so that whatever contains the
 * node also contains its tasks. v2 needs cpu, memory and pids enabled there;
 * `v2Controllers` is what that group's cgroup.controllers lists.
 */
export function planHierarchies (mounts: Mount[], self: SelfCgroup, v2Controllers: string[] | null, prefer: 'auto' | 'cgroup-v2' | 'cgroup-v1' = 'auto'): HierarchyPlan {
  const why: string[] = []
  if (prefer !== 'cgroup-v1') {
    const unified = mounts.find((m) => m.fsType === 'cgroup2')
    if (unified === undefined || self.unified === null) why.push('no cgroup v2 hierarchy is mounted')
    else {
      const missing = V2_REQUIRED.filter((c) => !(v2Controllers ?? []).includes(c))
      if (missing.length === 0) return { version: 2, dir: under(unified.mountPoint, self.unified) }
      why.push(`cgroup v2 at ${unified.mountPoint} lacks the ${missing.join(', ')} controller${missing.length > 1 ? 's' : ''}`)
    }
  }
  if (prefer !== 'cgroup-v2') {
    const dirs: Record<string, string> = {}
    const missing: string[] = []
    for (const controller of [...V1_REQUIRED, ...V1_OPTIONAL]) {
      const mount = mounts.find((m) => m.fsType === 'cgroup' && m.options.includes(controller))
      const path = self.v1.get(controller)
      if (mount === undefined || path === undefined) {
        if ((V1_REQUIRED as readonly string[]).includes(controller)) missing.push(controller)
        continue
      }
      dirs[controller] = under(mount.mountPoint, path)
    }
    if (missing.length === 0) return { version: 1, dirs }
    why.push(`cgroup v1 lacks the ${missing.join(', ')} controller${missing.length > 1 ? 's' : ''}`)
  }
  return { version: 0, why: why.join('; ') }
}

/** A group's dir: the mount point joined with the group's path, without a trailing slash for the root. */
function under (mountPoint: string, path: string): string {
  const dir = join(mountPoint, path)
  return dir.length > 1 && dir.endsWith('/') ? dir.slice(0, -1) : dir
}

// ---------------------------------------------------------------------------
// I/O

/** Where each counter is, by version: [controller, file]. */
const COUNTER_FILES = {
  1: { cpu: ['cpuacct', 'cpuacct.usage'], memory: ['memory', 'memory.usage_in_bytes'], peak: ['memory', 'memory.max_usage_in_bytes'], pids: ['pids', 'pids.current'], oom: ['memory', 'memory.oom_control'] },
  2: { cpu: ['cpu', 'cpu.stat'], memory: ['memory', 'memory.current'], peak: ['memory', 'memory.peak'], pids: ['pids', 'pids.current'], oom: ['memory', 'memory.events'] },
} as const

/** A node's murmur-owned group (one per hierarchy in v1), below which every task group lives. */
export class CgroupRoot {
  readonly version: 1 | 2
  /** controller → the root's dir in that controller's hierarchy (v2: every controller maps to one dir). */
  readonly dirs: Readonly<Record<string, string>>
  readonly detail: string

  private constructor (version: 1 | 2, dirs: Record<string, string>, detail: string) {
    this.version = version
    this.dirs = dirs
    this.detail = detail
  }

  /**
   * Makes (or finds, after a restart) the node's root group `name` per the plan.
   * Throws with the OS error when the groups cannot be made or written (read-only, not root).
   */
  static create (plan: Exclude<HierarchyPlan, { version: 0 }>, name: string): CgroupRoot {
    if (plan.version === 2) {
      const dir = join(plan.dir, name)
      // The node's own group must hand the controllers down; that fails if it holds
      // processes and is not the root (v2's no-internal-processes rule).
      enableControllers(plan.dir)
      mkdirSync(dir, { recursive: true })
      enableControllers(dir)
      const dirs = Object.fromEntries(V2_REQUIRED.map((c) => [c, dir]))
      return new CgroupRoot(2, dirs, `cgroup v2 at ${dir}`)
    }
    const dirs: Record<string, string> = {}
    for (const [controller, parent] of Object.entries(plan.dirs)) {
      dirs[controller] = join(parent, name)
      mkdirSync(dirs[controller], { recursive: true })
    }
    const freezer = dirs.freezer === undefined ? ', no freezer' : ''
    return new CgroupRoot(1, dirs, `cgroup v1 (${Object.keys(dirs).join(', ')}${freezer}) at ${dirs.memory}`)
  }

  /** Reopens a root recorded by an earlier life of the node, if its groups still exist. */
  static reopen (version: 1 | 2, dirs: Record<string, string>): CgroupRoot | null {
    if (!Object.values(dirs).every((dir) => existsSync(dir))) return null
    return new CgroupRoot(version, { ...dirs }, `cgroup v${version} at ${dirs.memory}`)
  }

  /** The distinct dirs of this root (v2: one; v1: one per mounted hierarchy). */
  private hierarchies (): string[] {
    return [...new Set(Object.values(this.dirs))]
  }

  /** Makes a task's group with its limits. The group exists in every hierarchy before this returns. */
  createTask (name: string, limits: CgroupLimits): TaskCgroup {
    const made: string[] = []
    try {
      for (const dir of this.hierarchies()) {
        mkdirSync(join(dir, name))
        made.push(join(dir, name))
      }
      for (const [controller, file, value] of limitWrites(this.version, limits)) {
        const path = join(this.dirs[controller]!, name, file)
        // Without swap accounting (v1 booted without swapaccount=1, v2 without swap) there is nothing to turn off.
        if ((file === 'memory.memsw.limit_in_bytes' || file === 'memory.swap.max') && !existsSync(path)) continue
        writeFileSync(path, value)
      }
      return new TaskCgroup(this, name)
    } catch (err) {
      for (const dir of made) try { rmdirSync(dir) } catch {}
      throw err
    }
  }

  openTask (name: string): TaskCgroup | null {
    if (!this.hierarchies().every((dir) => existsSync(join(dir, name)))) {
      // A group half there (a crash between two mkdirs) is still ours to remove.
      if (!this.hierarchies().some((dir) => existsSync(join(dir, name)))) return null
    }
    return new TaskCgroup(this, name)
  }

  /** The names of the task groups below the root, in any hierarchy. */
  taskNames (): string[] {
    const names = new Set<string>()
    for (const dir of this.hierarchies()) {
      for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) names.add(entry.name)
    }
    return [...names].sort()
  }

  /** Removes the root groups once empty; false if any still holds a task group. */
  remove (): boolean {
    let all = true
    for (const dir of this.hierarchies()) {
      try { rmdirSync(dir) } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') all = false }
    }
    return all
  }

  /** The dir of one controller's hierarchy for a task group. */
  dir (controller: string, name: string): string | null {
    const root = this.dirs[controller]
    return root === undefined ? null : join(root, name)
  }

  allDirs (name: string): string[] {
    return this.hierarchies().map((dir) => join(dir, name))
  }
}

function enableControllers (dir: string): void {
  const available = readFileSync(join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/)
  const enabled = readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').trim().split(/\s+/)
  const wanted = V2_REQUIRED.filter((c) => available.includes(c) && !enabled.includes(c))
  if (wanted.length > 0) writeFileSync(join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '))
}

/** One task's group: move processes in, read its accounting, kill everything in it, remove it. */
export class TaskCgroup {
  readonly root: CgroupRoot
  readonly name: string

  constructor (root: CgroupRoot, name: string) {
    this.root = root
    this.name = name
  }

  /** The group's path below the hierarchy's root, for people. */
  get path (): string {
    return this.root.dir('memory', this.name)!
  }

  /** cgroup.procs of every hierarchy: writing a pid to each moves that process into the group. */
  procsFiles (): string[] {
    return this.root.allDirs(this.name).map((dir) => join(dir, 'cgroup.procs'))
  }

  /** Every process in the group (the memory hierarchy's view in v1; the pids one if memory is gone). */
  pids (): number[] {
    const seen = new Set<number>()
    for (const dir of this.root.allDirs(this.name)) {
      try {
        for (const pid of parsePids(readFileSync(join(dir, 'cgroup.procs'), 'utf8'))) seen.add(pid)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
    return [...seen]
  }

  counters (): CgroupCounters {
    const read = (controller: string, file: string): string | null => {
      const dir = this.root.dir(controller, this.name)
      if (dir === null) return null
      try {
        return readFileSync(join(dir, file), 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
        throw err
      }
    }
    const files = COUNTER_FILES[this.root.version]
    const text = (key: keyof typeof files): string | null => read(files[key][0], files[key][1])
    const cpu = text('cpu')
    const number = (key: 'memory' | 'pids'): number => { const t = text(key); return t === null ? 0 : parseNumber(t) ?? 0 }
    const peak = text('peak')
    const oom = text('oom')
    return {
      // v1: nanoseconds in cpuacct.usage; v2: usage_usec in cpu.stat.
      cpuNanos: cpu === null ? 0 : this.root.version === 1 ? parseNumber(cpu) ?? 0 : (parseKeyed(cpu).get('usage_usec') ?? 0) * 1000,
      memoryBytes: number('memory'),
      memoryPeakBytes: peak === null ? null : parseNumber(peak),
      pids: number('pids'),
      // Both count OOM kills as `oom_kill N`: v1 in memory.oom_control, v2 in memory.events.
      oomKills: oom === null ? 0 : parseKeyed(oom).get('oom_kill') ?? 0,
    }
  }

  /**
   * SIGKILL to every process in the group, with the group frozen so that none
   * can fork a new one in between; resolves once the group is empty (or throws
   * after timeoutMs, naming what is left).
   */
  async killAll (timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    if (this.root.version === 2) {
      const kill = join(this.root.dir('memory', this.name)!, 'cgroup.kill')
      if (existsSync(kill)) {
        writeFileSync(kill, '1')
        await this.waitEmpty(deadline)
        return
      }
    }
    for (let round = 0; ; round++) {
      const thaw = await this.freeze(deadline)
      try {
        for (const pid of this.pids()) try { process.kill(pid, 'SIGKILL') } catch {}
      } finally {
        thaw()
      }
      if (await this.waitEmpty(Math.min(deadline, Date.now() + 200), false)) return
      if (Date.now() >= deadline) throw new Error(`processes ${this.pids().join(', ')} are still in cgroup ${this.path} after SIGKILL`)
    }
  }

  /** Freezes the group if the machine can; returns the thaw. */
  private async freeze (deadline: number): Promise<() => void> {
    const v1 = this.root.dir('freezer', this.name)
    const file = this.root.version === 1 ? (v1 === null ? null : join(v1, 'freezer.state')) : join(this.root.dir('memory', this.name)!, 'cgroup.freeze')
    if (file === null || !existsSync(file)) return () => {}
    const [frozen, thawed] = this.root.version === 1 ? ['FROZEN', 'THAWED'] : ['1', '0']
    try {
      writeFileSync(file, frozen)
    } catch (err) {
      // Removed meanwhile (the task's end and a stop raced): nothing is left to freeze.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return () => {}
      throw err
    }
    // v1 reports FREEZING until every task has stopped; v2 sets `frozen 1` in cgroup.events.
    const events = join(this.root.dir('memory', this.name)!, 'cgroup.events')
    while (Date.now() < deadline) {
      let state: string
      try {
        state = this.root.version === 1 ? readFileSync(file, 'utf8').trim() : (parseKeyed(readFileSync(events, 'utf8')).get('frozen') === 1 ? '1' : '0')
      } catch {
        break
      }
      if (state === frozen) break
      await sleep(1)
    }
    return () => { try { writeFileSync(file, thawed) } catch {} }
  }

  /** Waits until no process is left; throws at the deadline unless `orThrow` is false. */
  async waitEmpty (deadline: number, orThrow = true): Promise<boolean> {
    for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
      if (this.pids().length === 0) return true
      if (Date.now() >= deadline) {
        if (!orThrow) return false
        throw new Error(`processes ${this.pids().join(', ')} are still in cgroup ${this.path}`)
      }
      await sleep(wait)
    }
  }

  /** Removes the group from every hierarchy; it must be empty. Retries while the kernel still tears exited processes down. */
  async remove (timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (const dir of this.root.allDirs(this.name)) {
      for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
        try {
          rmdirSync(dir)
          break
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'ENOENT') break
          if (code !== 'EBUSY' || Date.now() >= deadline) throw new Error(`cannot remove cgroup ${dir}: ${(err as Error).message}`)
          await sleep(wait)
        }
      }
    }
  }
}

/** What this machine offers, read from /proc. */
export function detectHierarchies (prefer: 'auto' | 'cgroup-v2' | 'cgroup-v1' = 'auto'): HierarchyPlan {
  let mounts: Mount[]
  let self: SelfCgroup
  try {
    mounts = parseMounts(readFileSync('/proc/self/mounts', 'utf8'))
    self = parseSelfCgroup(readFileSync('/proc/self/cgroup', 'utf8'))
  } catch (err) {
    return { version: 0, why: `cannot read /proc: ${(err as Error).message}` }
  }
  let v2Controllers: string[] | null = null
  const unified = mounts.find((m) => m.fsType === 'cgroup2')
  if (unified !== undefined && self.unified !== null) {
    try {
      v2Controllers = readFileSync(join(unified.mountPoint, self.unified, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter((c) => c !== '')
    } catch {}
  }
  return planHierarchies(mounts, self, v2Controllers, prefer)
}
