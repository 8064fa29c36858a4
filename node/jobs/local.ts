// The tasks this node runs, as the jobs API and the task RPC see them: their use
// and their logs, by instance (the current attempt, or the latest one).

import { setTimeout as sleep } from 'node:timers/promises'
import { MurmurError } from '../errors.ts'
import type { LogStream } from '../executor/logs.ts'
import type { TaskRunner, TaskUsage } from '../executor/types.ts'
import type { Reconciler } from '../reconcile/loop.ts'
import type { LogsAnswer, LogsRequest } from '../rpc.ts'
import { attemptId, parseAttempt } from './instances.ts'

/** How often a log follow looks for the next attempt of a restarting instance. */
const FOLLOW_POLL_MS = 100

export class LocalTasks {
  private readonly reconciler: Pick<Reconciler, 'attempt'>
  private readonly executor: TaskRunner

  constructor (reconciler: Pick<Reconciler, 'attempt'>, executor: TaskRunner) {
    this.reconciler = reconciler
    this.executor = executor
  }

  /** The use of instances this node runs (their current attempts). */
  usage (instances: string[]): Record<string, TaskUsage | null> {
    const out: Record<string, TaskUsage | null> = {}
    for (const id of instances) {
      const attempt = this.reconciler.attempt(id)
      out[id] = attempt === undefined ? null : this.executor.inspect(attempt)?.usage ?? null
    }
    return out
  }

  /** Logs of an instance on this node: its current attempt, or the latest one it ran. */
  async logs (req: LogsRequest, signal: AbortSignal): Promise<LogsAnswer> {
    // The current attempt, unless it has not started yet (a restart waiting out its backoff): then the one before.
    const current = this.reconciler.attempt(req.task)
    const attempt = current !== undefined && this.executor.inspect(current) !== undefined ? current : this.latestAttempt(req.task)
    if (attempt === undefined) throw noTask(req.task)
    const stream: LogStream = req.stream
    if (req.follow === true) return { follow: this.followAttempts(req.task, attempt, stream, { offset: req.offset, tail: req.tail }, signal) }
    const chunk = await this.executor.readLogs(attempt, stream, { offset: req.offset, length: req.length, tail: req.tail, signal })
    const { data, ...range } = chunk
    return { range, data }
  }

  /**
   * Follows an instance's logs across its restarts in place: when one attempt ends
   * and this node starts the next (after its backoff), the next one's bytes follow
   * from their start. Ends when the instance no longer runs here, or on `signal`.
   */
  private async * followAttempts (instance: string, first: string, stream: LogStream, from: { offset?: number | undefined, tail?: number | undefined }, signal: AbortSignal): AsyncIterable<Buffer> {
    let attempt: string | undefined = first
    let opts = from
    while (attempt !== undefined && !signal.aborted) {
      yield * this.executor.followLogs(attempt, stream, { ...opts, signal })
      opts = { offset: 0 }
      // Then the attempt after it, every one in turn (a quick one may have come and gone already),
      // once its start has begun; unless the instance no longer runs here.
      const next = attemptId(instance, parseAttempt(attempt).restarts + 1)
      attempt = undefined
      while (!signal.aborted) {
        if (this.executor.inspect(next) !== undefined) { attempt = next; break }
        if (this.reconciler.attempt(instance) === undefined) break
        await sleep(FOLLOW_POLL_MS, undefined, { signal }).catch(() => {})
      }
    }
  }

  private latestAttempt (instance: string): string | undefined {
    let best: { id: string, restarts: number } | undefined
    for (const t of this.executor.list()) {
      const a = parseAttempt(t.id)
      if (a.instance === instance && (best === undefined || a.restarts > best.restarts)) best = { id: t.id, restarts: a.restarts }
    }
    return best?.id
  }
}

export function noTask (id: string): MurmurError {
  return new MurmurError('NO_SUCH_TASK', `no task '${id}' in the cluster; 'murmur ps --all' lists the tasks`, 2, 404)
}
