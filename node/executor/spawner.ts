// The executor's end of the spawner process (spawner-main.mjs): starts it, sends
// it one request per task start, and hands each task's exit to the executor.
//
// Forking the node itself for every start cost the node a few milliseconds of
// CPU each (its page tables copied, then a copy-on-write fault for every page it
// wrote until the child had exec'd) and held its event loop until the child
// exec'd; under load that was the largest single share of a node's time in a
// start. The spawner forks instead, from a process a fraction of the node's size.
//
// If the spawner dies, the starts it had not answered fail (their shims, if any,
// exit once the gate closes: the command never ran), the tasks it had started are
// handed back as unwatched (the executor then watches them as it watches adopted
// ones, by their pid), and the next start starts a new spawner.

import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { SHIM, SHIM_NAME, StartFailure } from './launch.ts'

const MAIN = fileURLToPath(new URL('./spawner-main.mjs', import.meta.url))
/**
 * A small young generation, as the node's own, and V8's lite mode (no optimizing compiler): the spawner
 * runs a few lines of JavaScript per start, and every page it does not map is one its forks do not copy.
 */
const EXEC_ARGV = ['--max-semi-space-size=1', '--lite-mode']
/** How long close() waits for the spawner to go after the channel closed. */
const CLOSE_WAIT_MS = 2_000

export interface SpawnRequest {
  /** An absolute path, from resolveCommand. */
  file: string
  args: string[]
  env: Record<string, string>
  cwd: string
  user?: { uid: number, gid: number } | undefined
  /** The task's log files, opened O_APPEND by the spawner for the child's fds 1 and 2. */
  stdout: string
  stderr: string
  /** cgroup.procs of each of the task's groups: the pid is written there before the command runs. */
  procs: string[]
}

/** The messages of the channel, as spawner-main.mjs takes and sends them. */
export type SpawnerRequest = Omit<SpawnRequest, 'user'> & { t: 'spawn', seq: number, user: { uid: number, gid: number } | null }

export type SpawnerReply =
  | { t: 'ready', pid: number }
  /** pidStart: field 22 of /proc/<pid>/stat (see executor.ts's pidStartTime), null if it had exited already. */
  | { t: 'started', seq: number, pid: number, pidStart: string | null }
  | { t: 'failed', seq: number, message: string }
  | { t: 'exit', seq: number, code: number | null, signal: NodeJS.Signals | null }

/** How a task started by the spawner ended; null: the spawner died first, so its exit will not be known this way. */
export type SpawnedExit = { code: number | null, signal: NodeJS.Signals | null } | null

export interface Spawned { pid: number, pidStart: string | null }

interface Waiting {
  resolve: (spawned: Spawned) => void
  reject: (err: Error) => void
  onExit: (exit: SpawnedExit) => void
}

export class Spawner {
  private readonly log: Logger
  private child: ChildProcess | null = null
  private seq = 0
  /** Requests sent and not answered yet. */
  private readonly waiting = new Map<number, Waiting>()
  /** Started tasks whose exit the spawner has not reported yet. */
  private readonly watching = new Map<number, (exit: SpawnedExit) => void>()
  private closed = false
  /** The spawner's pid once it said it is ready (for people and the benchmarks). */
  pid: number | null = null
  readonly stats = { spawners: 0, spawned: 0, failed: 0, died: 0 }

  constructor (log: Logger) {
    this.log = log
  }

  /** Starts the spawner now rather than at the first task start, which would wait for it to boot. */
  warm (): void {
    if (!this.closed) this.ensure()
  }

  /**
   * Spawns the launch shim for a task, places it in its cgroups and lets it exec.
   * Resolves with its pid once it runs in its groups; rejects with StartFailure
   * when the command never ran. `onExit` is called once, after the promise settled.
   */
  async spawn (req: SpawnRequest, onExit: (exit: SpawnedExit) => void): Promise<Spawned> {
    if (this.closed) throw new StartFailure('cannot start the process: the executor is closed')
    const child = this.ensure()
    const seq = ++this.seq
    const message: SpawnerRequest = { ...req, user: req.user ?? null, t: 'spawn', seq }
    return await new Promise<Spawned>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject, onExit })
      this.holdOpen()
      try {
        child.send(message, (err) => { if (err != null) this.answer(seq, new StartFailure(`cannot start the process: the spawner did not take the request (${err.message})`)) })
      } catch (err) {
        this.answer(seq, new StartFailure(`cannot start the process: the spawner did not take the request (${(err as Error).message})`))
      }
    })
  }

  /** Lets the spawner go: it exits once the channel closes. Tasks keep running; their exits are no longer reported. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const child = this.child
    if (child === null) return
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve()
      else child.once('exit', () => { resolve() })
    })
    if (child.connected) child.disconnect()
    const timer = setTimeout(() => { try { child.kill('SIGKILL') } catch {} }, CLOSE_WAIT_MS)
    await exited
    clearTimeout(timer)
  }

  private ensure (): ChildProcess {
    if (this.child !== null) return this.child
    // Detached: a Ctrl-C meant for the node must not end the spawner before the node has stopped its tasks.
    const child = fork(MAIN, [SHIM_NAME, SHIM], { execArgv: EXEC_ARGV, stdio: ['ignore', 'ignore', 'inherit', 'ipc'], detached: true, serialization: 'json' })
    this.child = child
    this.stats.spawners++
    child.on('message', (reply: SpawnerReply) => { this.onReply(reply) })
    child.on('error', (err) => {
      // A fork that failed (EAGAIN, ENOMEM) has no process to exit: it is gone now. A failed send is answered by its callback.
      if (child.pid === undefined) this.onGone(child, null, null, err.message)
      else this.log.warn({ err: err.message }, 'spawner process error')
    })
    child.once('exit', (code, signal) => { this.onGone(child, code, signal) })
    this.letGo()
    return child
  }

  private onReply (reply: SpawnerReply): void {
    switch (reply.t) {
      case 'ready':
        this.pid = reply.pid
        return
      case 'started': {
        const w = this.waiting.get(reply.seq)
        if (w === undefined) return
        this.stats.spawned++
        this.watching.set(reply.seq, w.onExit)
        this.answer(reply.seq, { pid: reply.pid, pidStart: reply.pidStart })
        return
      }
      case 'failed':
        this.stats.failed++
        this.answer(reply.seq, new StartFailure(reply.message))
        return
      case 'exit': {
        const onExit = this.watching.get(reply.seq)
        if (onExit === undefined) return
        this.watching.delete(reply.seq)
        // After the start's own continuation: the executor records the pid before it hears of the exit.
        setImmediate(() => { onExit({ code: reply.code, signal: reply.signal }) })
      }
    }
  }

  private answer (seq: number, result: Spawned | Error): void {
    const w = this.waiting.get(seq)
    if (w === undefined) return
    this.waiting.delete(seq)
    if (result instanceof Error) w.reject(result)
    else w.resolve(result)
    if (this.waiting.size === 0) this.letGo()
  }

  private onGone (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, error?: string): void {
    if (this.child !== child) return
    this.child = null
    this.pid = null
    const how = error !== undefined ? `could not be started (${error})` : signal === null ? `exited with code ${code}` : `was killed by ${signal}`
    if (!this.closed) {
      this.stats.died++
      this.log.error({ code, signal, err: error, starting: this.waiting.size, watched: this.watching.size }, `the spawner process ${how}; the next start starts a new one, and the tasks it started are watched by their pids`)
    }
    const why = `cannot start the process: the spawner process ${how} before it answered`
    for (const seq of [...this.waiting.keys()]) this.answer(seq, new StartFailure(why))
    const orphans = [...this.watching.values()]
    this.watching.clear()
    setImmediate(() => { for (const onExit of orphans) onExit(null) })
  }

  /** While a start waits for its answer, the channel keeps the process alive; otherwise it does not, as a task never did. */
  private holdOpen (): void {
    this.child?.channel?.ref()
  }

  private letGo (): void {
    this.child?.unref()
    this.child?.channel?.unref()
  }
}
