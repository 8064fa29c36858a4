// What the node asks of a task runner, and what it hears back. One real
// implementation runs processes in cgroups (executor.ts); the interface is
// what the reconcile loop and the simulator program against.

import type { LogChunk, LogLimits, LogStream } from './logs.ts'

/** How tasks are contained on this machine: detected at start-up, shown in `murmur members`. */
export type IsolationKind = 'cgroup-v2' | 'cgroup-v1' | 'none'

export interface Isolation {
  kind: IsolationKind
  /** Why it is what it is, in words: which hierarchy, or why nothing is usable. */
  detail: string
}

/** One task instance as the runner needs it: what to run and within which bounds. */
export interface AttemptSpec {
  id: string
  job: string
  command: string
  args: string[]
  env: Record<string, string>
  /** Relative to the task's own dir (MURMUR_ALLOC_DIR), and inside it by its real path; default: that dir. */
  workdir?: string | undefined
  /** The CPU quota, in thousandths of a core. */
  cpuMillis: number
  /** The hard memory limit; swap is off for the task where the machine allows. */
  memoryBytes: number
  /** At most this many processes and threads at once; default RUNNER_DEFAULTS.pidsMax. */
  pidsMax?: number | undefined
  /** Run as this user and group instead of a uid of its own (or runAs); never root unless the node allows privileged tasks, never a uid of the per-task range. */
  user?: { uid: number, gid: number } | undefined
  /**
   * The job's `runAs`: run as this uid (0 included: whether the job may is the API's to check), its gid the
   * uid's primary group in /etc/passwd or else the same number, no supplementary groups, no uid of the range
   * claimed. A node that is not root refuses it (a refusal, not a failed run) unless it is the node's own uid.
   * Not with `user`.
   */
  runAs?: number | undefined
  logs?: LogLimits | undefined
}

/**
 * Why a task ended:
 * - exited: its main process exited on its own (code 0 or not);
 * - signaled: a signal the runner did not send ended it (SIGSEGV, a kill from outside);
 * - killed: stopped on request (`stop()`), by SIGTERM or after the grace period by SIGKILL;
 * - oom: the kernel killed it for exceeding its memory limit, by the cgroup's own counter;
 * - start-failed: it never ran (command not found, permission denied, no such workdir);
 * - lost: it ended while no process of the node was its parent (adopted after a restart, or its spawner died), so its exit code is unknown.
 */
export type ExitReason = 'exited' | 'signaled' | 'killed' | 'oom' | 'start-failed' | 'lost'

export interface TaskExit {
  reason: ExitReason
  code: number | null
  signal: string | null
  /** One line for people: "exited with code 3", "killed for exceeding its memory limit of 64 MiB (OOM)". */
  message: string
  /** Processes of the task the kernel OOM-killed, by the cgroup's counter. */
  oomKills: number
}

export interface TaskUsage {
  /** CPU time used since start, from the cgroup's accounting (the main process's alone without cgroups). */
  cpuSeconds: number
  memoryBytes: number
  memoryPeakBytes: number
  /** Processes and threads now in the task. */
  pids: number
  /** Milliseconds since the epoch. */
  sampledAt: number
}

export type TaskPhase = 'running' | 'stopping' | 'ended'

export interface AttemptInfo {
  id: string
  job: string
  phase: TaskPhase
  /** The main process, also the id of the task's process group; null if it never started. */
  pid: number | null
  /** Milliseconds since the epoch. */
  startedAt: number
  finishedAt: number | null
  exit: TaskExit | null
  usage: TaskUsage | null
  /** The task's cgroup below the hierarchy's root, or null without isolation. */
  cgroup: string | null
  /** The node's dir of the task: task.json, and its logs in `dir/logs`; closed to the task. */
  dir: string
  /** MURMUR_ALLOC_DIR and HOME, the task's own (its uid's, 0700): `<tasks dir>/_alloc/<name>`. */
  alloc?: string | undefined
  /**
   * The uid and gid it runs as, if not the node's (null: the node's own, or not known from an older record);
   * with a `runAs` always the ids it runs as, the node's own included.
   */
  user?: { uid: number, gid: number } | null | undefined
  /** Taken over from a previous life of the node. */
  adopted: boolean
  spec: AttemptSpec
}

/** What a restarted node found of its previous life, for the caller to judge. */
export interface FoundAttempt {
  id: string
  job: string
  spec: AttemptSpec
  startedAt: number
  /** Whether any of its processes still run. */
  alive: boolean
}

export interface RecoverReport {
  adopted: string[]
  stopped: string[]
  /** Tasks that had ended while the node was down. */
  ended: string[]
  /** Cgroups or task dirs that no record explained: their processes killed, the cgroups removed. */
  strays: string[]
}

export interface Signalled { signal?: AbortSignal | undefined }

export interface TaskRunner {
  readonly isolation: Isolation
  /** Starts a task; resolves once its process runs inside its cgroup. */
  start (spec: AttemptSpec, opts?: Signalled): Promise<AttemptInfo>
  /** SIGTERM to its process group, SIGKILL to all its processes after graceMs; resolves once it has ended. */
  stop (id: string, opts?: Signalled & { graceMs?: number | undefined }): Promise<AttemptInfo>
  inspect (id: string): AttemptInfo | undefined
  list (): AttemptInfo[]
  /** After a restart: `decide` says which found tasks to keep; the rest are stopped, strays removed. */
  recover (decide: (task: FoundAttempt) => 'adopt' | 'stop', opts?: Signalled & { graceMs?: number | undefined }): Promise<RecoverReport>
  readLogs (id: string, stream: LogStream, opts?: Signalled & { offset?: number | undefined, length?: number | undefined, tail?: number | undefined }): Promise<LogChunk>
  followLogs (id: string, stream: LogStream, opts?: Signalled & { offset?: number | undefined, tail?: number | undefined }): AsyncIterable<Buffer>
  /** Forgets ended tasks that ended before `before` (ms since the epoch), removing their dirs. */
  prune (before: number, opts?: Signalled): Promise<string[]>
  /** What the running and stopping tasks hold of the node's capacity. */
  committed (): { cpuMillis: number, memoryBytes: number, tasks: number }
  on (event: 'exit', listener: (info: AttemptInfo) => void): unknown
  off (event: 'exit', listener: (info: AttemptInfo) => void): unknown
  /** Stops watching; running tasks keep running, for the next life of the node to adopt. */
  close (): Promise<void>
}
