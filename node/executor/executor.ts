// The task runner over cgroups: one process group per task in its own cgroup,
// logs in files, exits with their reasons, usage sampled, admission by the
// node's own capacity, and a restart that adopts or stops what the previous life
// of the node left running.
//
// On disk, below the node's data dir (files 0600, all the node's but each alloc
// dir, which is its task's user's):
//   tasks/                        0711: passed through, never listed
//   tasks/cgroups.json            where this node's cgroup root is (for the next life)
//   tasks/<task>/                 0700: the node's record of the task
//   tasks/<task>/task.json        the spec, pid, start, user, and once over the exit
//   tasks/<task>/logs/            stdout.log, stderr.log and their rotations
//   tasks/_alloc/                 0711 (no task dir is named so: dirName never starts with _)
//   tasks/_alloc/<task>/          0700, the task's uid's: MURMUR_ALLOC_DIR, HOME, the default working dir
//
// When the node is root each task runs as a uid of its own (uids.ts), never as
// the node's: the path to its alloc dir is open to it by absolute path and only
// the last step is its alone; it cannot read the node's key, its state database,
// its task records, any task's logs or another task's files, cannot signal the
// node or another task, and cannot write a cgroup's procs file (they stay
// root's) to leave its group. A job's `runAs` names the uid itself instead (no
// uid of the range is taken; its gid is the uid's primary group): the alloc dir
// is that uid's, and what else the task reaches is what that uid reaches. A node
// that is not root refuses any runAs but its own uid.

import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { chmodSync, chownSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { dirname, isAbsolute, join, resolve, sep } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import { bytesText, cpuText } from '../../placement/reasons.ts'
import { InputError, MurmurError } from '../errors.ts'
import { type CgroupCounters, CgroupRoot, type HierarchyPlan, type TaskCgroup, detectHierarchies } from './cgroups.ts'
import { DEFAULT_PATH, SHIM_NAME, StartFailure, resolveCommand } from './launch.ts'
import { statFields } from '../proc.ts'
import { LOG_DEFAULTS, type LogChunk, type LogStream, TaskLogs } from './logs.ts'
import { type SpawnedExit, Spawner } from './spawner.ts'
import { DEFAULT_TASK_UIDS, UID_CLAIMS_DIR, UidClaims, UidPool, type UidRange, accountIds, checkUidRange, pidsOfUid, primaryGid } from './uids.ts'
import type { FoundAttempt, Isolation, RecoverReport, Signalled, TaskExit, AttemptInfo, TaskRunner, AttemptSpec, TaskUsage } from './types.ts'

export const RUNNER_DEFAULTS = Object.freeze({
  /** Enough for a shell pipeline or a JVM's threads; a fork bomb stops here. */
  pidsMax: 1024,
  /** Kubernetes' and Nomad's default grace period between SIGTERM and SIGKILL. */
  graceMs: 10_000,
  /** Usage, log rotation and adopted tasks' liveness are looked at this often. */
  sampleMs: 1_000,
})

export const SPEC_LIMITS = Object.freeze({
  /** Below this the kernel's own charges for a process OOM-kill it before it runs. */
  memoryBytesMin: 4 * 1024 ** 2,
  argsMax: 4_096,
  envMax: 1_024,
  pidsMax: 4_194_304,
})

export type IsolationWanted = 'auto' | 'cgroup-v2' | 'cgroup-v1' | 'none'

/** The alloc dirs' dir in the tasks dir: a name dirName never gives a task. */
export const ALLOC_DIR = '_alloc'

/** Which user this executor's tasks run as, for the node's status. */
export interface TaskUser {
  /** One user for every task (`runAs`, or the node's own); null when each task gets a uid of its own from `uids`. */
  uid: number | null
  gid: number | null
  /** The range each task's own uid (and gid, the same number) is taken from; null when tasks share one user. */
  uids: UidRange | null
  /** Whether tasks run as another user than the node's: false when the node is not root and so cannot switch. */
  separate: boolean
  /**
   * Which job `runAs` this node honours: `any` uid (it is root and switches users), or only this one, its own
   * (it cannot switch; a start with another is refused, and another node takes the task).
   */
  runAs: 'any' | number
  /** In words, for people: who the tasks run as and what follows. */
  detail: string
}

export interface ExecutorOptions {
  nodeId: string
  /** The node's tasks dir, `<data dir>/tasks`. */
  dir: string
  /** What the node offers; starts beyond it are refused. */
  capacity: { cpuMillis: number, memoryBytes: number }
  isolation?: IsolationWanted | undefined
  log: Logger
  sampleMs?: number | undefined
  graceMs?: number | undefined
  /**
   * When the node is root, each task runs as a uid of its own from this range (gid the same number, no
   * supplementary groups), held while the task runs; default DEFAULT_TASK_UIDS. Ignored by a node that
   * is not root, and when `runAs` is given.
   */
  taskUids?: UidRange | undefined
  /** Where the nodes of this machine claim task uids, so that two never give one to two tasks; default UID_CLAIMS_DIR. */
  uidClaimsDir?: string | undefined
  /**
   * One uid and gid for every task when the node is root, instead of a uid per task: tasks can then signal
   * each other and reach each other's files. A node that is not root cannot switch users: its tasks run as
   * its own uid (and this, if given, must be that uid).
   */
  runAs?: { uid: number, gid: number } | undefined
  /**
   * Lets tasks run as root (uid or gid 0), through `runAs` or a spec's own `user`: the task can then read the
   * node's key and leave its cgroup. Off by default; for machines whose tasks must administer them.
   */
  allowPrivilegedTasks?: boolean | undefined
}

const specSchema = z.object({
  id: z.string().min(1).max(128),
  job: z.string().min(1).max(128),
  command: z.string().min(1).max(4_096).refine((c) => !c.includes('\0'), 'must not contain NUL'),
  args: z.array(z.string().max(128 * 1024).refine((a) => !a.includes('\0'), 'must not contain NUL')).max(SPEC_LIMITS.argsMax),
  env: z.record(z.string().min(1).max(1_024).regex(/^[^=\0]+$/, 'must not contain = or NUL'), z.string().max(128 * 1024).refine((v) => !v.includes('\0'), 'must not contain NUL'))
    .refine((env) => Object.keys(env).length <= SPEC_LIMITS.envMax, `at most ${SPEC_LIMITS.envMax} variables`),
  workdir: z.string().min(1).max(4_096).optional(),
  cpuMillis: z.number().int().min(1).max(100_000_000),
  memoryBytes: z.number().int().min(SPEC_LIMITS.memoryBytesMin, `must be at least ${SPEC_LIMITS.memoryBytesMin / 1024 ** 2} MiB`).max(2 ** 50),
  pidsMax: z.number().int().min(1).max(SPEC_LIMITS.pidsMax).optional(),
  user: z.object({ uid: z.number().int().min(0).max(2 ** 32 - 2), gid: z.number().int().min(0).max(2 ** 32 - 2) }).strict().optional(),
  runAs: z.number().int().min(0).max(2 ** 32 - 2).optional(),
  logs: z.object({ maxBytes: z.number().int().min(4_096).max(2 ** 40), files: z.number().int().min(1).max(100) }).strict().optional(),
}).strict().refine((spec) => spec.user === undefined || spec.runAs === undefined, { message: 'give user or runAs, not both', path: ['runAs'] })

const exitSchema = z.object({
  reason: z.enum(['exited', 'signaled', 'killed', 'oom', 'start-failed', 'lost']),
  code: z.number().int().nullable(),
  signal: z.string().nullable(),
  message: z.string(),
  oomKills: z.number().int().nonnegative(),
})

const recordSchema = z.object({
  format: z.literal('murmur-task'),
  spec: specSchema,
  pid: z.number().int().positive().nullable(),
  /** The pid's start time in clock ticks since boot (/proc/<pid>/stat): a reused pid has another. */
  pidStart: z.string().nullable(),
  startedAt: z.number(),
  finishedAt: z.number().nullable(),
  exit: exitSchema.nullable(),
  cgroup: z.string().nullable(),
  /** Who it runs as; absent in records of older nodes, whose tasks all ran as one user. */
  user: z.object({ uid: z.number().int(), gid: z.number().int() }).nullable().optional(),
})
type TaskRecordFile = z.infer<typeof recordSchema>

const rootsSchema = z.object({ version: z.union([z.literal(1), z.literal(2)]), dirs: z.record(z.string(), z.string()) })

interface Entry {
  info: AttemptInfo
  name: string
  cgroup: TaskCgroup | null
  logs: TaskLogs
  /** Its exit will be reported (by the spawner, its parent); otherwise the sampler watches its pid or group. */
  watched: boolean
  pidStart: string | null
  /** Set by stop(): the end is "killed", with the signal that did it. */
  stop: { at: number, kill: 'SIGTERM' | 'SIGKILL', graceMs: number } | null
  ended: Promise<AttemptInfo>
  markEnded: (info: AttemptInfo) => void
  /** Set once the end is being recorded, so it is recorded once. */
  finishing: boolean
  cpuBase: number
  /** The uid it runs as if it is not the node's; `pooled`: taken from the executor's range, given back at its end. */
  user: { uid: number, gid: number } | null
  pooled: boolean
}

export class Executor extends EventEmitter<{ exit: [AttemptInfo] }> implements TaskRunner {
  readonly isolation: Isolation
  /** Who tasks run as (unless a spec names its own user). */
  readonly taskUser: TaskUser
  private readonly opts: ExecutorOptions
  private readonly log: Logger
  /** The node's own uid and gid: only root (0) can run a task as another user. */
  private readonly self = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
  private readonly root: CgroupRoot | null
  /** Each task's own uid, when the node is root and no `runAs` is given. */
  private readonly uids: UidPool | null
  /** The machine's claims on them, shared with the other nodes of the machine; null if they cannot be kept. */
  private readonly claims: UidClaims | null
  /** Roots of earlier lives that sat elsewhere (the node was started from another cgroup): searched on recover, then removed. */
  private readonly oldRoots: CgroupRoot[]
  private readonly entries = new Map<string, Entry>()
  /** Starts admitted but not yet entered (their logs open): counted by committed() and the duplicate check. */
  private readonly starting = new Map<string, AttemptSpec>()
  /** Starts in flight, until their process runs (or failed): a stop waits for them. */
  private readonly launching = new Map<string, Promise<AttemptInfo>>()
  /** Forks for the starts: the node's own fork was the largest cost of a start (see spawner.ts). */
  private readonly spawner: Spawner
  private readonly sampler: NodeJS.Timeout
  private sampling = false
  private closed = false

  private constructor (opts: ExecutorOptions, isolation: Isolation, taskUser: TaskUser, root: CgroupRoot | null, oldRoots: CgroupRoot[]) {
    super()
    this.uids = taskUser.uids === null ? null : new UidPool(taskUser.uids, accountIds())
    this.claims = null
    if (this.uids !== null) {
      try {
        this.claims = new UidClaims(opts.uidClaimsDir ?? UID_CLAIMS_DIR)
      } catch (err) {
        opts.log.warn({ err: (err as Error).message }, 'cannot keep the machine\'s claims on task uids: another node on this machine with the same range could give a task\'s uid to one of its own')
      }
    }
    this.opts = opts
    this.log = opts.log
    this.isolation = isolation
    this.taskUser = taskUser
    this.root = root
    this.oldRoots = oldRoots
    this.spawner = new Spawner(opts.log)
    this.sampler = setInterval(() => { void this.sample() }, opts.sampleMs ?? RUNNER_DEFAULTS.sampleMs).unref()
  }

  /**
   * Finds what the machine offers and makes the node's cgroup root. Without a
   * usable hierarchy tasks still run, unconfined, and the node says so loudly.
   */
  static open (opts: ExecutorOptions): Executor {
    const taskUser = taskUserOf(opts)
    // Passed through to reach an alloc dir, never listed: the names of the tasks and their records stay the node's.
    mkdirSync(opts.dir, { recursive: true, mode: 0o711 })
    chmodSync(opts.dir, 0o711)
    mkdirSync(join(opts.dir, ALLOC_DIR), { mode: 0o711, recursive: true })
    chmodSync(join(opts.dir, ALLOC_DIR), 0o711)
    const wanted = opts.isolation ?? 'auto'
    const rootName = `murmur-${opts.nodeId}`
    const rootsFile = join(opts.dir, 'cgroups.json')
    const oldRoots: CgroupRoot[] = []
    try {
      const recorded = rootsSchema.safeParse(JSON.parse(readFileSync(rootsFile, 'utf8')))
      const old = recorded.success ? CgroupRoot.reopen(recorded.data.version, recorded.data.dirs) : null
      if (old !== null) oldRoots.push(old)
    } catch {}
    let root: CgroupRoot | null = null
    let isolation: Isolation
    const plan: HierarchyPlan = wanted === 'none' ? { version: 0, why: 'isolation is off (--isolation none)' } : detectHierarchies(wanted)
    if (plan.version === 0) {
      isolation = { kind: 'none', detail: plan.why }
    } else {
      try {
        root = CgroupRoot.create(plan, rootName)
        isolation = { kind: root.version === 2 ? 'cgroup-v2' : 'cgroup-v1', detail: root.detail }
      } catch (err) {
        isolation = { kind: 'none', detail: `cannot make cgroups: ${(err as Error).message}` }
      }
    }
    if (wanted !== 'auto' && wanted !== 'none' && isolation.kind !== wanted) {
      throw new MurmurError('ISOLATION_UNAVAILABLE', `--isolation ${wanted} is not available here: ${isolation.detail}`)
    }
    if (root !== null) {
      writeJsonSync(rootsFile, { version: root.version, dirs: root.dirs })
      const same = oldRoots.findIndex((old) => JSON.stringify(old.dirs) === JSON.stringify(root.dirs))
      if (same >= 0) oldRoots.splice(same, 1)
    }
    const executor = new Executor(opts, isolation, taskUser, root, oldRoots)
    executor.spawner.warm()
    executor.holdRecordedUids()
    if (taskUser.separate) opts.log.info({ uid: taskUser.uid, gid: taskUser.gid, uids: taskUser.uids }, `tasks run as ${taskUser.detail}`)
    else opts.log.warn({ uid: taskUser.uid, gid: taskUser.gid }, `tasks run as ${taskUser.detail}`)
    if (executor.uids !== null && executor.uids.skipped.length > 0) {
      opts.log.warn({ skipped: executor.uids.skipped }, `${executor.uids.skipped.length} uid(s) of the task range belong to accounts of this machine (/etc/passwd, /etc/group): never given to a task; choose a range no account uses`)
    }
    if (taskUser.separate) {
      const closed = closedAncestor(opts.dir)
      if (closed !== null) opts.log.warn({ dir: closed }, `tasks cannot reach HOME or MURMUR_ALLOC_DIR by absolute path: ${closed} is closed to other users; give them search on it (chmod o+x ${closed}) or put the data dir below a dir that is (such as /var/lib/murmur)`)
    }
    if (isolation.kind === 'none') {
      opts.log.warn({ isolation }, `tasks will run WITHOUT isolation (no CPU, memory or pid limits): ${isolation.detail}`)
    } else {
      opts.log.info({ isolation }, `tasks run in ${isolation.detail}`)
    }
    return executor
  }

  /** The spawner process that forks for this executor's starts (null until it said it is ready, or after it died), and its counts. */
  spawnerInfo (): { pid: number | null, spawners: number, spawned: number, failed: number, died: number } {
    return { pid: this.spawner.pid, ...this.spawner.stats }
  }

  committed (): { cpuMillis: number, memoryBytes: number, tasks: number } {
    let cpuMillis = 0
    let memoryBytes = 0
    let tasks = 0
    for (const spec of this.starting.values()) {
      cpuMillis += spec.cpuMillis
      memoryBytes += spec.memoryBytes
      tasks++
    }
    for (const entry of this.entries.values()) {
      if (entry.info.phase === 'ended') continue
      cpuMillis += entry.info.spec.cpuMillis
      memoryBytes += entry.info.spec.memoryBytes
      tasks++
    }
    return { cpuMillis, memoryBytes, tasks }
  }

  async start (input: AttemptSpec, opts: Signalled = {}): Promise<AttemptInfo> {
    const requested = performance.now()
    if (this.closed) throw new MurmurError('EXECUTOR_CLOSED', 'the node is stopping; it starts no more tasks', 1, 503)
    const parsed = specSchema.safeParse(input)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new InputError('BAD_TASK_SPEC', `task spec: ${issue.path.join('.') || 'spec'}: ${issue.message}`)
    }
    const spec = parsed.data as AttemptSpec
    this.checkUser(spec)
    this.checkRunAs(spec)
    opts.signal?.throwIfAborted()
    const existing = this.entries.get(spec.id)
    if (this.starting.has(spec.id)) throw new MurmurError('TASK_EXISTS', `task ${spec.id} is already starting here`, 1, 409)
    if (existing !== undefined && existing.info.phase !== 'ended') {
      throw new MurmurError('TASK_EXISTS', `task ${spec.id} is already ${existing.info.phase} here (pid ${existing.info.pid})`, 1, 409)
    }
    this.admit(spec)
    // Held from here until the entry exists, so that concurrent starts see it (capacity, same id).
    this.starting.set(spec.id, spec)
    const launched = this.launchTask(spec, existing, requested)
    this.launching.set(spec.id, launched)
    try {
      return await launched
    } finally {
      this.starting.delete(spec.id)
      this.launching.delete(spec.id)
    }
  }

  private async launchTask (spec: AttemptSpec, existing: Entry | undefined, requested: number): Promise<AttemptInfo> {
    if (existing !== undefined) {
      this.entries.delete(spec.id)
      await existing.logs.close().catch(() => {})
      rmSync(existing.info.dir, { recursive: true, force: true })
      rmSync(existing.info.alloc!, { recursive: true, force: true })
    }

    const name = dirName(spec.id)
    const dir = join(this.opts.dir, name)
    const allocs = join(this.opts.dir, ALLOC_DIR)
    const alloc = join(allocs, name)
    try {
      mkdirSync(dir, { mode: 0o700 })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EEXIST' && code !== 'ENOENT') throw err
      // EEXIST: left by nothing this executor knows (a start before recover(), a removal that failed): a new
      // task starts anew. ENOENT: the tasks dir itself was removed under the node.
      if (code === 'EEXIST') rmSync(dir, { recursive: true, force: true })
      mkdirSync(dir, { recursive: true, mode: 0o700 })
    }
    if (!isDir(allocs)) {
      mkdirSync(allocs, { recursive: true, mode: 0o711 })
      chmodSync(allocs, 0o711)
    }
    // Left by nothing this executor knows, like a task dir above: a new task starts with an empty one.
    rmSync(alloc, { recursive: true, force: true })
    mkdirSync(alloc, { mode: 0o700 })
    const logs = await TaskLogs.open(join(dir, 'logs'), spec.logs ?? LOG_DEFAULTS, { fresh: true })
    const entry = this.newEntry(spec, name, dir, alloc, logs, Date.now())
    this.entries.set(spec.id, entry)
    this.starting.delete(spec.id)

    const env: Record<string, string> = {
      PATH: DEFAULT_PATH,
      HOME: alloc,
      ...spec.env,
      MURMUR_TASK_ID: spec.id,
      MURMUR_JOB_ID: spec.job,
      MURMUR_NODE_ID: this.opts.nodeId,
      MURMUR_ALLOC_DIR: alloc,
    }
    let cgroup: TaskCgroup | null = null
    try {
      // Taken once the entry exists: its end, whatever it is, gives the uid back. (admit() saw one free.)
      const user = this.takeUser(entry)
      if (user !== undefined) chownSync(alloc, user.uid, user.gid)
      const cwd = workdirOf(spec, alloc)
      const file = resolveCommand(spec.command, env, cwd, user)
      if (this.root !== null) {
        // A group of this name left over (an earlier run whose group could not be removed) goes first.
        const leftover = this.root.openTask(name)
        if (leftover !== null) {
          await leftover.killAll()
          await leftover.remove()
        }
        cgroup = this.root.createTask(name, { cpuMillis: spec.cpuMillis, memoryBytes: spec.memoryBytes, pidsMax: spec.pidsMax ?? RUNNER_DEFAULTS.pidsMax })
      }
      // The spawner reports the exit after this start's continuation has run; held here in case it ever came first.
      let early: SpawnedExit | undefined
      let placed = false
      const onExit = (exit: SpawnedExit): void => {
        if (placed) this.spawnedExit(entry, exit)
        else early = exit
      }
      const paths = logs.writerPaths()
      const spawned = await this.spawner.spawn({ file, args: spec.args, env, cwd, user, stdout: paths.stdout, stderr: paths.stderr, procs: cgroup?.procsFiles() ?? [] }, onExit)
      entry.watched = true
      entry.cgroup = cgroup
      entry.info.pid = spawned.pid
      entry.info.cgroup = cgroup?.path ?? null
      entry.pidStart = spawned.pidStart
      placed = true
      if (early !== undefined) this.spawnedExit(entry, early)
    } catch (err) {
      // A spawner that died after placing the shim may leave it in the group (the command never ran).
      if (cgroup !== null) {
        if (safely(() => cgroup!.pids().length > 0, true)) await cgroup.killAll().catch(() => {})
        await cgroup.remove().catch(() => {})
      }
      const message = err instanceof StartFailure ? err.message : `cannot start ${spec.command}: ${(err as Error).message}`
      await this.record(entry, { reason: 'start-failed', code: null, signal: null, message, oomKills: 0 })
      this.log.warn({ task: spec.id, job: spec.job, err: message }, 'task failed to start')
      return snapshot(entry)
    }
    try {
      this.persist(entry, true)
    } catch (err) {
      // It runs, and is stoppable; only a next life of the node will not know it (and remove it as a stray).
      this.log.error({ task: spec.id, err: (err as Error).message }, 'could not record the started task on disk')
    }
    this.log.info({ task: spec.id, job: spec.job, pid: entry.info.pid, cgroup: entry.info.cgroup, ms: round(performance.now() - requested) }, 'task started')
    return snapshot(entry)
  }

  /**
   * The user a task runs as, recorded in its entry: its spec's own, else a uid of its own from the range, else
   * the executor's one task user; undefined: the node's own (it cannot switch). A StartFailure when every uid
   * of the range is held.
   */
  private takeUser (entry: Entry): { uid: number, gid: number } | undefined {
    const spec = entry.info.spec
    let user: { uid: number, gid: number } | undefined
    if (spec.runAs !== undefined && this.self.uid !== 0) {
      // Its own uid (checkRunAs refused any other): it runs as the node, which the attempt says by number.
      entry.user = { ...this.self }
      entry.info.user = entry.user
      return undefined
    }
    if (spec.runAs !== undefined) {
      // No uid of the range: the job names its own. Nor given back, or killed by uid, at its end: the uid may be a person's.
      user = { uid: spec.runAs, gid: primaryGid(spec.runAs) }
    } else if (spec.user !== undefined) {
      user = spec.user
    } else if (this.uids !== null) {
      const record = join(entry.info.dir, 'task.json')
      const uid = this.uids.take(spec.id, (candidate) => safely(() => this.claims?.claim(candidate, spec.id, record) ?? true, true))
      if (uid === null) {
        const { first, count } = this.uids.range
        throw new StartFailure(`cannot start ${spec.command}: no task uid is free: the ${count} task uids (${first}–${first + count - 1}) are all held by tasks of this node or of other nodes on this machine; stop some, or give each node a range of its own (taskUids)`)
      }
      entry.pooled = true
      user = { uid, gid: uid }
    } else if (this.taskUser.separate) {
      user = { uid: this.taskUser.uid!, gid: this.taskUser.gid! }
    }
    entry.user = user ?? null
    entry.info.user = entry.user
    return user
  }

  /**
   * At a task's end, once its processes are gone, its uid goes back to the range. Its alloc dir becomes
   * root's first, so that the uid's next holder meets nothing of this task's there. Without a cgroup, what
   * the task left outside its process group is found by its uid and killed (best effort: one pass).
   */
  private giveBackUser (entry: Entry): void {
    if (!entry.pooled || entry.user === null || this.uids === null) return
    entry.pooled = false
    const { uid } = entry.user
    if (entry.cgroup === null) {
      for (const pid of pidsOfUid(uid)) {
        try { process.kill(pid, 'SIGKILL') } catch {}
      }
    }
    try {
      chownSync(entry.info.alloc!, 0, 0)
      chmodSync(entry.info.alloc!, 0o700)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        // Kept held: a later task given this uid would find the dir its own.
        this.log.error({ task: entry.info.id, uid, err: (err as Error).message }, 'could not take back the task\'s alloc dir; its uid stays held')
        return
      }
    }
    this.uids.release(uid, entry.info.id)
    try {
      this.claims?.release(uid, join(entry.info.dir, 'task.json'))
    } catch (err) {
      // Stale once the record says the task ended: another node takes it over then.
      this.log.warn({ task: entry.info.id, uid, err: (err as Error).message }, 'could not release the machine\'s claim on the task\'s uid')
    }
  }

  /** The uids recorded by tasks of a previous life that may still run: held before any start can take them. */
  private holdRecordedUids (): void {
    if (this.uids === null) return
    for (const name of safely(() => readdirSync(this.opts.dir), [])) {
      if (name === ALLOC_DIR) continue
      const record = readRecord(join(this.opts.dir, name))
      const uid = record?.user?.uid
      if (record === null || record.exit !== null || uid === undefined) continue
      if (!this.uids.hold(uid, record.spec.id)) this.log.error({ task: record.spec.id, uid, holder: this.uids.holder(uid) }, 'two task records hold one uid')
      if (this.uids.contains(uid) && safely(() => this.claims?.claim(uid, record.spec.id, join(this.opts.dir, name, 'task.json')) ?? true, true) === false) {
        this.log.error({ task: record.spec.id, uid }, 'another node of this machine claims the uid of a task this node still runs: give each node a range of its own (taskUids)')
      }
    }
  }

  /** The spawner's word on a task it started: its exit, or that it died first (then the sampler watches the task's pid). */
  private spawnedExit (entry: Entry, exit: SpawnedExit): void {
    if (exit === null) entry.watched = false
    else void this.finish(entry, exit)
  }

  /** A spec's own user may not be root (nor the node's uid, which is root when users can be switched), unless allowed. */
  private checkUser (spec: AttemptSpec): void {
    const user = spec.user
    if (user === undefined || !this.taskUser.separate) return
    if (this.uids?.contains(user.uid) === true || this.uids?.contains(user.gid) === true) {
      throw new InputError('TASK_USER_REFUSED', `task ${spec.id} asks to run as uid ${user.uid}, gid ${user.gid}, in the range this node gives each task a uid of its own from: it would share another task's; leave the user out`)
    }
    if (this.opts.allowPrivilegedTasks === true) return
    if (user.uid === 0 || user.gid === 0) {
      throw new InputError('TASK_USER_REFUSED', `task ${spec.id} asks to run as uid ${user.uid}, gid ${user.gid}: tasks never run as root on this node; leave the user out (tasks run as ${this.taskUser.detail})`)
    }
  }

  /**
   * A job's `runAs` this node cannot honour is refused before admission, as a start beyond its capacity is, so
   * that the cluster leaves the task to another node instead of counting a failed run: a node that is not
   * root cannot switch users (it runs only its own uid), and a root node never runs a task as a uid of its
   * per-task range (it would share a running task's, and a later task would get it).
   */
  private checkRunAs (spec: AttemptSpec): void {
    const uid = spec.runAs
    if (uid === undefined) return
    if (this.self.uid !== 0) {
      if (uid === this.self.uid) return
      throw new MurmurError('RUN_AS_UNAVAILABLE', `task ${spec.id} runs as uid ${uid} (its job's runAs), and this node cannot switch users: it runs as uid ${this.self.uid}, not root, so it runs only tasks with no runAs or with runAs ${this.self.uid}; a node that runs as root can take it`, 1, 409)
    }
    if (this.uids?.contains(uid) === true) {
      const { first, count } = this.uids.range
      throw new MurmurError('RUN_AS_REFUSED', `task ${spec.id} runs as uid ${uid} (its job's runAs), which is in the range this node gives each task a uid of its own from (${first}–${first + count - 1}): it would share another task's uid; choose a uid outside the range`, 1, 409)
    }
  }

  /** Refuses a start that would commit more CPU or memory than the node has, whatever placement believed. */
  private admit (spec: AttemptSpec): void {
    const used = this.committed()
    const { cpuMillis, memoryBytes } = this.opts.capacity
    const short: string[] = []
    if (used.cpuMillis + spec.cpuMillis > cpuMillis) short.push(`${cpuText(spec.cpuMillis)} CPU (${cpuText(Math.max(0, cpuMillis - used.cpuMillis))} of ${cpuText(cpuMillis)} free)`)
    if (used.memoryBytes + spec.memoryBytes > memoryBytes) short.push(`${bytesText(spec.memoryBytes)} memory (${bytesText(Math.max(0, memoryBytes - used.memoryBytes))} of ${bytesText(memoryBytes)} free)`)
    if (short.length === 0) {
      this.admitUid(spec)
      return
    }
    throw new MurmurError('ADMISSION_REFUSED', `task ${spec.id} does not fit on this node: it needs ${short.join(' and ')}, with ${used.tasks} task${used.tasks === 1 ? '' : 's'} running`, 1, 409)
  }

  /**
   * Refuses a start when every uid of the range is held (starts admitted but not yet given theirs counted):
   * a refusal, not a failed run, so that the cluster places the task elsewhere instead of counting a failure.
   */
  private admitUid (spec: AttemptSpec): void {
    if (this.uids === null || spec.user !== undefined || spec.runAs !== undefined) return
    const waiting = [...this.starting.values()].filter((s) => s.user === undefined && s.runAs === undefined).length
    if (this.uids.free > waiting) return
    const { first, count } = this.uids.range
    throw new MurmurError('ADMISSION_REFUSED', `task ${spec.id} does not fit on this node: all its ${count} task uids (${first}–${first + count - 1}) are held by its running tasks; stop some, or give the node a larger range (taskUids)`, 1, 409)
  }

  private newEntry (spec: AttemptSpec, name: string, dir: string, alloc: string, logs: TaskLogs, startedAt: number): Entry {
    let markEnded!: (info: AttemptInfo) => void
    const ended = new Promise<AttemptInfo>((resolve) => { markEnded = resolve })
    return {
      info: { id: spec.id, job: spec.job, phase: 'running', pid: null, startedAt, finishedAt: null, exit: null, usage: null, cgroup: null, dir, alloc, user: null, adopted: false, spec },
      name,
      cgroup: null,
      logs,
      watched: false,
      pidStart: null,
      stop: null,
      ended,
      markEnded,
      finishing: false,
      cpuBase: 0,
      user: null,
      pooled: false,
    }
  }

  async stop (id: string, opts: Signalled & { graceMs?: number | undefined } = {}): Promise<AttemptInfo> {
    // A stop that overtakes its start waits until there is a process to signal.
    const launching = this.launching.get(id)
    if (launching !== undefined) await abortable(launching.catch(() => undefined), opts.signal)
    const entry = this.entries.get(id)
    if (entry === undefined) throw new MurmurError('NO_SUCH_TASK', `no task ${id} on this node`, 1, 404)
    if (entry.info.phase === 'ended') return snapshot(entry)
    const graceMs = opts.graceMs ?? RUNNER_DEFAULTS.graceMs
    // Already ending by itself: its end is being recorded, with its own reason.
    if (entry.stop === null && !entry.finishing) {
      entry.stop = { at: Date.now(), kill: 'SIGTERM', graceMs }
      entry.info.phase = 'stopping'
      this.log.info({ task: id, pid: entry.info.pid, graceMs }, 'stopping task')
      this.signalGroup(entry, 'SIGTERM')
      const timer = setTimeout(() => {
        if (entry.finishing) return
        entry.stop!.kill = 'SIGKILL'
        this.log.warn({ task: id, graceMs }, 'task did not stop within its grace period: SIGKILL')
        void this.killAll(entry)
      }, graceMs)
      void entry.ended.then(() => { clearTimeout(timer) })
    }
    return await abortable(entry.ended, opts.signal)
  }

  private signalGroup (entry: Entry, signal: NodeJS.Signals): void {
    if (entry.info.pid === null) return
    try {
      process.kill(-entry.info.pid, signal)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.log.warn({ task: entry.info.id, err: (err as Error).message }, `could not send ${signal}`)
    }
  }

  /** SIGKILL to everything of the task: the whole cgroup, or the process group without one. */
  private async killAll (entry: Entry): Promise<void> {
    if (entry.cgroup === null) {
      this.signalGroup(entry, 'SIGKILL')
      return
    }
    try {
      await entry.cgroup.killAll()
    } catch (err) {
      this.log.error({ task: entry.info.id, err: (err as Error).message }, 'could not empty the task\'s cgroup')
    }
    // An adopted task has no parent to report the end: it ends when its group is empty.
    if (!entry.watched) await this.finish(entry, null)
  }

  inspect (id: string): AttemptInfo | undefined {
    const entry = this.entries.get(id)
    return entry === undefined ? undefined : snapshot(entry)
  }

  list (): AttemptInfo[] {
    return [...this.entries.values()].map(snapshot).sort((a, b) => a.startedAt - b.startedAt || (a.id < b.id ? -1 : 1))
  }

  /**
   * The end of a task: its main process exited (`status`), or, for an adopted
   * task, its group emptied (`status` null). Whatever is left of it is killed,
   * the reason worked out, the cgroup removed and the exit recorded, once.
   */
  private async finish (entry: Entry, status: { code: number | null, signal: NodeJS.Signals | null } | null): Promise<void> {
    if (entry.finishing) return
    entry.finishing = true
    // Whether a stop caused the end is decided now, not after the awaits below.
    const stop = entry.stop === null ? null : { ...entry.stop }
    let oomKills = 0
    if (entry.cgroup !== null) {
      oomKills = this.takeUsage(entry)?.oomKills ?? 0
      // The task is its main process: when that ends, the rest of the group goes with it.
      try {
        if (entry.cgroup.pids().length > 0) await entry.cgroup.killAll()
        await entry.cgroup.remove()
      } catch (err) {
        this.log.error({ task: entry.info.id, err: (err as Error).message }, 'could not remove the task\'s cgroup')
      }
    } else if (status !== null) {
      // Without a cgroup the process group is all there is to clean up.
      this.signalGroup(entry, 'SIGKILL')
    }
    const exit = await this.exitOf(entry, status, oomKills, stop)
    await this.record(entry, exit)
    const level = exit.reason === 'exited' && exit.code === 0 ? 'info' : exit.reason === 'killed' ? 'info' : 'warn'
    this.log[level]({ task: entry.info.id, job: entry.info.job, reason: exit.reason, code: exit.code, signal: exit.signal, oomKills }, `task ended: ${exit.message}`)
  }

  private async exitOf (entry: Entry, status: { code: number | null, signal: NodeJS.Signals | null } | null, oomKills: number, stop: Entry['stop']): Promise<TaskExit> {
    const code = status?.code ?? null
    const signal = status?.signal ?? null
    const base = { code, signal, oomKills }
    const limit = bytesText(entry.info.spec.memoryBytes)
    if (oomKills > 0 && (signal === 'SIGKILL' || status === null) && stop?.kill !== 'SIGKILL') {
      return { ...base, reason: 'oom', message: `killed for exceeding its memory limit of ${limit} (OOM)` }
    }
    if (stop !== null) {
      const how = stop.kill === 'SIGKILL'
        ? `killed with SIGKILL after its grace period of ${seconds(stop.graceMs)}`
        : signal !== null ? `ended by ${signal}` : code !== null ? `exited with code ${code}` : 'ended'
      return { ...base, reason: 'killed', message: `stopped on request: ${how}` }
    }
    if (status === null) {
      return { ...base, reason: 'lost', message: 'ended while the node was not watching it as its parent (adopted after a restart, or its spawner died): its exit code is unknown' }
    }
    if ((code === 126 || code === 127) && Date.now() - entry.info.startedAt < 60_000) {
      const failure = await this.execFailure(entry)
      if (failure !== null) return { ...base, reason: 'start-failed', message: `cannot start ${entry.info.spec.command}: ${failure}` }
    }
    if (signal !== null) return { ...base, reason: 'signaled', message: `killed by ${signal}${oomKills > 0 ? ` (and ${oomKills} of its processes by the OOM killer)` : ''}` }
    return { ...base, reason: 'exited', message: `exited with code ${code}${oomKills > 0 ? ` (${oomKills} of its processes were OOM-killed)` : ''}` }
  }

  /** The shim's own complaint when exec failed after the checks (a bad binary, a permission only the kernel knew). */
  private async execFailure (entry: Entry): Promise<string | null> {
    try {
      const tail = await entry.logs.read('stderr', { tail: 1_024 })
      const lines = tail.data.toString('utf8').trimEnd().split('\n')
      const last = lines[lines.length - 1] ?? ''
      const prefix = `${SHIM_NAME}: `
      return last.startsWith(prefix) ? last.slice(prefix.length).replace(/^\d+: exec: /, '') : null
    } catch {
      return null
    }
  }

  private async record (entry: Entry, exit: TaskExit): Promise<void> {
    this.giveBackUser(entry)
    entry.info.exit = exit
    entry.info.finishedAt = Date.now()
    entry.info.phase = 'ended'
    entry.logs.end()
    try {
      this.persist(entry)
    } catch (err) {
      this.log.error({ task: entry.info.id, err: (err as Error).message }, 'could not record the task\'s exit on disk')
    }
    const info = snapshot(entry)
    entry.markEnded(info)
    try {
      this.emit('exit', info)
    } catch (err) {
      this.log.error({ task: info.id, err: (err as Error).message }, 'a listener of task exits failed')
    }
  }

  /**
   * Writes task.json. The first write (`fresh`) goes straight to the file: a crash in the middle leaves a
   * record that does not parse, which the next life treats as it treats no record (a stray), as it would
   * a crash just before the write. Later ones replace it whole.
   */
  private persist (entry: Entry, fresh = false): void {
    const record: TaskRecordFile = {
      format: 'murmur-task',
      spec: entry.info.spec as TaskRecordFile['spec'],
      pid: entry.info.pid,
      pidStart: entry.pidStart,
      startedAt: entry.info.startedAt,
      finishedAt: entry.info.finishedAt,
      exit: entry.info.exit,
      cgroup: entry.info.cgroup,
      user: entry.user,
    }
    const file = join(entry.info.dir, 'task.json')
    // The spec holds the job's environment: the node's alone (0600).
    if (fresh) writeFileSync(file, JSON.stringify(record) + '\n', { mode: 0o600 })
    else writeJsonSync(file, record)
  }

  /** Reads the task's accounting into its usage; keeps the peak where the kernel keeps none. Returns the group's counters, if read. */
  private takeUsage (entry: Entry): CgroupCounters | null {
    const previous = entry.info.usage
    let usage: TaskUsage | null = null
    let c: CgroupCounters | null = null
    if (entry.cgroup !== null) {
      c = safely(() => entry.cgroup!.counters(), null)
      if (c !== null) {
        usage = {
          cpuSeconds: c.cpuNanos / 1e9,
          memoryBytes: c.memoryBytes,
          memoryPeakBytes: Math.max(c.memoryPeakBytes ?? 0, c.memoryBytes, previous?.memoryPeakBytes ?? 0),
          pids: c.pids,
          sampledAt: Date.now(),
        }
      }
    } else if (entry.info.pid !== null) {
      const p = processUsage(entry.info.pid)
      if (p !== null) usage = { ...p, memoryPeakBytes: Math.max(p.memoryBytes, previous?.memoryPeakBytes ?? 0), sampledAt: Date.now() }
    }
    if (usage !== null) entry.info.usage = usage
    return c
  }

  private async sample (): Promise<void> {
    if (this.sampling) return
    this.sampling = true
    try {
      for (const entry of this.entries.values()) {
        if (entry.info.phase === 'ended') continue
        this.takeUsage(entry)
        await entry.logs.rotateIfNeeded().catch((err: Error) => { this.log.warn({ task: entry.info.id, err: err.message }, 'could not rotate the task\'s logs') })
        // A start in flight has no pid to watch yet.
        if (!entry.watched && !this.launching.has(entry.info.id) && !this.alive(entry)) await this.finish(entry, null)
      }
    } finally {
      this.sampling = false
    }
  }

  /**
   * An adopted task lives while its main process does, as one the node started
   * would (the rest of its group then goes with it); with no record of that
   * process, while its group holds any.
   */
  private alive (entry: Entry): boolean {
    // Cannot tell (out of fds, say): alive, and asked again at the next sample.
    if (entry.info.pid !== null && entry.pidStart !== null) return safely(() => pidStartTime(entry.info.pid!) === entry.pidStart, true)
    return entry.cgroup !== null && safely(() => entry.cgroup!.pids().length > 0, true)
  }

  async recover (decide: (task: FoundAttempt) => 'adopt' | 'stop', opts: Signalled & { graceMs?: number | undefined } = {}): Promise<RecoverReport> {
    const report: RecoverReport = { adopted: [], stopped: [], ended: [], strays: [] }
    // Starts in flight have no task.json yet: never strays.
    const known = new Set([...[...this.entries.values()].map((e) => e.name), ...[...this.starting.keys()].map(dirName)])
    const roots = [...(this.root === null ? [] : [this.root]), ...this.oldRoots]
    const stops: Array<Promise<unknown>> = []
    for (const name of readdirSync(this.opts.dir).sort()) {
      opts.signal?.throwIfAborted()
      const dir = join(this.opts.dir, name)
      if (name === ALLOC_DIR || known.has(name) || !isDir(dir)) continue
      const record = readRecord(dir)
      if (record === null || dirName(record.spec.id) !== name) {
        // Not a task dir this node wrote: whatever runs in a group of that name is killed with the strays below.
        rmSync(dir, { recursive: true, force: true })
        rmSync(join(this.opts.dir, ALLOC_DIR, name), { recursive: true, force: true })
        report.strays.push(name)
        continue
      }
      known.add(name)
      const spec = record.spec as AttemptSpec
      let logs: TaskLogs
      try {
        logs = await TaskLogs.open(join(dir, 'logs'), spec.logs ?? LOG_DEFAULTS)
      } catch (err) {
        // One unreadable dir must not stop the node; its task is left as it is, and said so.
        this.log.error({ task: spec.id, dir, err: (err as Error).message }, 'cannot reopen a task of the previous life; left alone')
        continue
      }
      const entry = this.newEntry(spec, name, dir, join(this.opts.dir, ALLOC_DIR, name), logs, record.startedAt)
      entry.info.pid = record.pid
      entry.pidStart = record.pidStart
      entry.info.cgroup = record.cgroup
      entry.user = record.user ?? null
      entry.info.user = entry.user
      // Held since open() (holdRecordedUids) while it may run; given back at its end as any task's.
      entry.pooled = record.exit === null && entry.user !== null && this.uids?.holder(entry.user.uid) === spec.id
      this.entries.set(spec.id, entry)
      if (record.exit !== null) {
        entry.finishing = true
        entry.info.exit = record.exit
        entry.info.finishedAt = record.finishedAt
        entry.info.phase = 'ended'
        entry.logs.end()
        entry.markEnded(snapshot(entry))
        continue
      }
      entry.cgroup = roots.map((root) => root.openTask(name)).find((c) => c !== null) ?? null
      if (entry.cgroup === null && record.cgroup !== null) {
        // Its group is gone (the machine rebooted, or someone removed it): so are its processes.
        entry.info.cgroup = null
        entry.pidStart = null
      }
      const found: FoundAttempt = { id: spec.id, job: spec.job, spec, startedAt: record.startedAt, alive: this.alive(entry) }
      if (!found.alive) {
        await this.finish(entry, null)
        report.ended.push(spec.id)
        continue
      }
      entry.info.adopted = true
      this.takeUsage(entry)
      if (decide(found) === 'adopt') {
        report.adopted.push(spec.id)
        this.log.info({ task: spec.id, job: spec.job, pid: record.pid }, 'adopted a task of the node\'s previous life')
      } else {
        report.stopped.push(spec.id)
        this.log.info({ task: spec.id, job: spec.job, pid: record.pid }, 'stopping a task of the node\'s previous life: the cluster does not assign it here')
        stops.push(this.stop(spec.id, opts))
      }
    }
    for (const root of roots) {
      for (const name of safely(() => root.taskNames(), [])) {
        if (known.has(name)) continue
        const group = root.openTask(name)
        if (group === null) continue
        this.log.warn({ cgroup: group.path, pids: safely(() => group.pids(), []) }, 'removing a cgroup no task record explains, with its processes')
        try {
          await group.killAll()
          await group.remove()
        } catch (err) {
          this.log.error({ cgroup: group.path, err: (err as Error).message }, 'could not remove a stray cgroup')
        }
        if (!report.strays.includes(name)) report.strays.push(name)
      }
    }
    // Alloc dirs no task explains (their task dir was a stray, or is gone).
    for (const name of safely(() => readdirSync(join(this.opts.dir, ALLOC_DIR)), [])) {
      if (known.has(name)) continue
      rmSync(join(this.opts.dir, ALLOC_DIR, name), { recursive: true, force: true })
      if (!report.strays.includes(name)) report.strays.push(name)
    }
    await Promise.all(stops)
    for (const old of this.oldRoots) if (old.remove()) this.log.info({ dirs: old.dirs }, 'removed the cgroup root of an earlier life')
    return report
  }

  async readLogs (id: string, stream: LogStream, opts: Signalled & { offset?: number | undefined, length?: number | undefined, tail?: number | undefined } = {}): Promise<LogChunk> {
    return await this.entry(id).logs.read(stream, opts)
  }

  followLogs (id: string, stream: LogStream, opts: Signalled & { offset?: number | undefined, tail?: number | undefined } = {}): AsyncIterable<Buffer> {
    return this.entry(id).logs.follow(stream, opts)
  }

  private entry (id: string): Entry {
    const entry = this.entries.get(id)
    if (entry === undefined) throw new MurmurError('NO_SUCH_TASK', `no task ${id} on this node`, 1, 404)
    return entry
  }

  async prune (before: number, opts: Signalled = {}): Promise<string[]> {
    const pruned: string[] = []
    for (const entry of [...this.entries.values()]) {
      opts.signal?.throwIfAborted()
      if (entry.info.phase !== 'ended' || (entry.info.finishedAt ?? 0) >= before) continue
      this.entries.delete(entry.info.id)
      await entry.logs.close()
      await rm(entry.info.dir, { recursive: true, force: true })
      await rm(entry.info.alloc!, { recursive: true, force: true })
      pruned.push(entry.info.id)
    }
    return pruned
  }

  /**
   * Stops every task (a node that leaves the cluster hands its work back), then
   * closes. Tasks of a node that dies instead keep running for the next life.
   */
  async stopAll (graceMs?: number): Promise<void> {
    await Promise.allSettled([...this.launching.values()])
    await Promise.all([...this.entries.values()].filter((e) => e.info.phase !== 'ended').map(async (e) => await this.stop(e.info.id, { graceMs })))
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.sampler)
    // Starts still in flight are answered (or failed) before the spawner goes.
    await Promise.allSettled([...this.launching.values()])
    await this.spawner.close()
    for (const entry of this.entries.values()) {
      await entry.logs.close().catch(() => {})
    }
    // The root goes only if nothing is left in it.
    if (this.root !== null && this.committed().tasks === 0) this.root.remove()
  }
}

/**
 * Kills everything a node's tasks dir left behind (its tasks' processes and
 * cgroups, and its cgroup root), for a node that will not come back: the
 * testnet's `down` after a node was killed. Returns how many tasks it ended.
 */
export async function purgeTasks (dir: string): Promise<number> {
  let ended = 0
  let root: CgroupRoot | null = null
  try {
    const recorded = rootsSchema.safeParse(JSON.parse(readFileSync(join(dir, 'cgroups.json'), 'utf8')))
    if (recorded.success) root = CgroupRoot.reopen(recorded.data.version, recorded.data.dirs)
  } catch {}
  const names = new Set(root === null ? [] : safely(() => root.taskNames(), []))
  for (const name of safely(() => readdirSync(dir), [])) {
    const record = readRecord(join(dir, name))
    if (record === null || record.exit !== null) continue
    // Without a cgroup the process group is all there is, if the pid is still the same process.
    if (!names.has(name) && record.pid !== null && record.pidStart !== null && safely(() => pidStartTime(record.pid!), null) === record.pidStart) {
      try { process.kill(-record.pid, 'SIGKILL') } catch {}
      ended++
    }
  }
  for (const name of names) {
    const group = root!.openTask(name)
    if (group === null) continue
    if (group.pids().length > 0) ended++
    await group.killAll()
    await group.remove()
  }
  root?.remove()
  return ended
}

/** A task id as a file and cgroup name: itself when plain, else an unambiguous encoding. */
export function dirName (id: string): string {
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id) && !id.startsWith('x-') && !id.endsWith('.tmp') && !id.endsWith('.json')) return id
  const encoded = Buffer.from(id, 'utf8').toString('base64url')
  // A file name has at most 255 bytes: long ids are named by a hash (task.json keeps the id).
  return encoded.length <= 200 ? `x-${encoded}` : `x-h-${createHash('sha256').update(id).digest('base64url')}`
}

function readRecord (dir: string): TaskRecordFile | null {
  try {
    const parsed = recordSchema.safeParse(JSON.parse(readFileSync(join(dir, 'task.json'), 'utf8')))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}

function snapshot (entry: Entry): AttemptInfo {
  return structuredClone(entry.info)
}

/**
 * Who tasks run as on this node, from the options and the node's own uid and gid; throws for what cannot be.
 * A root node gives each task a uid of its own (`taskUids`), or runs them all as `runAs`; another node runs
 * them as itself.
 */
export function taskUserOf (opts: Pick<ExecutorOptions, 'runAs' | 'allowPrivilegedTasks' | 'taskUids'>, node = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }): TaskUser {
  const nodeUid = node.uid
  const nodeGid = node.gid
  const wanted = opts.runAs
  if (nodeUid !== 0) {
    if (wanted !== undefined && (wanted.uid !== nodeUid || wanted.gid !== nodeGid)) {
      throw new InputError('TASK_USER_UNAVAILABLE', `tasks cannot run as ${wanted.uid}:${wanted.gid}: the node runs as uid ${nodeUid}, not root, and cannot switch users; start the node as root, or leave the task user out`)
    }
    return { uid: nodeUid, gid: nodeGid, uids: null, separate: false, runAs: nodeUid, detail: `the node's own uid ${nodeUid} (the node is not root and cannot switch users): a task can read the node's data dir and signal it; a job's runAs other than ${nodeUid} is refused here` }
  }
  if (wanted === undefined) {
    const { first, count } = checkUidRange(opts.taskUids ?? DEFAULT_TASK_UIDS)
    return { uid: null, gid: null, uids: { first, count }, separate: true, runAs: 'any', detail: `a uid of its own each, from ${first}–${first + count - 1} (gid the same number), without the node's groups: the node's data dir and the other tasks are closed to them` }
  }
  for (const [what, id] of [['uid', wanted.uid], ['gid', wanted.gid]] as const) {
    if (!Number.isInteger(id) || id < 0 || id > 2 ** 32 - 2) throw new InputError('TASK_USER_INVALID', `task ${what} ${id} is not a ${what}; give a number from 1 to ${2 ** 32 - 2}`)
  }
  if ((wanted.uid === 0 || wanted.gid === 0) && opts.allowPrivilegedTasks !== true) {
    throw new InputError('TASK_USER_REFUSED', `tasks would run as ${wanted.uid}:${wanted.gid}, which is root: they could read the node's key and leave their cgroups; choose an unprivileged uid and gid, or leave runAs out (a uid per task)`)
  }
  if (wanted.uid === 0) return { ...wanted, uids: null, separate: false, runAs: 'any', detail: `root, as the node (allowed by the node's configuration): a task can do what the node can` }
  return { ...wanted, uids: null, separate: true, runAs: 'any', detail: `uid ${wanted.uid}, gid ${wanted.gid}, all of them, without the node's groups: the node's data dir is closed to them, but one task can signal another` }
}

/**
 * The first dir above `dir` that other users cannot search (no o+x), or null: a task's uid would stop there
 * on the way to its alloc dir by absolute path.
 */
export function closedAncestor (dir: string): string | null {
  for (let at = dirname(resolve(dir)); ; at = dirname(at)) {
    const mode = safely(() => statSync(at).mode, 0o755)
    if ((mode & 0o001) === 0) return at
    if (at === dirname(at)) return null
  }
}

/**
 * The task's working dir, inside its alloc dir: a spec's workdir is relative to it and must stay in it, by its
 * real path (a peer's record is untrusted, and a symlink could point out). Throws a StartFailure otherwise.
 */
export function workdirOf (spec: Pick<AttemptSpec, 'command' | 'workdir'>, alloc: string): string {
  if (spec.workdir === undefined) return alloc
  const fail = (why: string): never => { throw new StartFailure(`cannot start ${spec.command}: working dir ${spec.workdir}: ${why}`) }
  if (isAbsolute(spec.workdir)) fail('is absolute; a working dir is relative to the task\'s own dir (MURMUR_ALLOC_DIR)')
  let real = ''
  try {
    real = realpathSync(resolve(alloc, spec.workdir))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    fail(code === 'ENOENT' ? 'does not exist in the task\'s own dir (ENOENT)' : (err as Error).message)
  }
  const root = realpathSync(alloc)
  if (real !== root && !real.startsWith(root + sep)) fail('leaves the task\'s own dir; give a path inside it')
  if (!isDir(real)) fail('is not a directory (ENOTDIR)')
  return real
}

function isDir (path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

/**
 * Field 22 of /proc/<pid>/stat, the start time in clock ticks since boot; null
 * if the process is gone or a zombie. A failure to read throws (see statFields).
 */
export function pidStartTime (pid: number): string | null {
  const fields = statFields(pid)
  if (fields === null || fields[0] === 'Z') return null
  return fields[19] ?? null
}

/** Without cgroups: the main process's own CPU time and resident memory. */
function processUsage (pid: number): { cpuSeconds: number, memoryBytes: number, pids: number } | null {
  const fields = safely(() => statFields(pid), null)
  if (fields === null) return null
  // utime and stime (fields 14, 15) in clock ticks of 1/100 s on Linux; rss (field 24) in pages of 4 KiB.
  return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, memoryBytes: Number(fields[21]) * 4096, pids: Number(fields[17]) }
}

/** Replaces a file whole: a crash leaves the old content or the new, never half. */
function writeJsonSync (file: string, value: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(value) + '\n', { mode: 0o600 })
  renameSync(`${file}.tmp`, file)
}

function safely<T> (read: () => T, fallback: T): T {
  try {
    return read()
  } catch {
    return fallback
  }
}

async function abortable<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  signal.throwIfAborted()
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then((value) => {
      signal.removeEventListener('abort', onAbort)
      resolve(value)
    }, reject)
  })
}

function round (ms: number): number {
  return Math.round(ms * 100) / 100
}

function seconds (ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`
}

