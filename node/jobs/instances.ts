// Names of task instances and of their attempts, and the ticks of cron jobs. No I/O.
//
// - A batch or service instance is `<job>.<index>`; a cron run's instance is
//   `<job>@<tick>.<index>`, the tick being the scheduled time in UTC
//   (`20261126T013230Z`): whichever node fires a tick, it names the same instance,
//   so the claim rule lets it run once.
// - Each start of an instance on a node is an attempt: `<instance>` first, then
//   `<instance>~<n>` for restart n, so the logs of earlier attempts stay readable.

import { Cron } from 'croner'
import type { JobSpec } from './spec.ts'

export function instanceId (job: string, index: number, tick?: number): string {
  return tick === undefined ? `${job}.${index}` : `${job}@${tickText(tick)}.${index}`
}

export function attemptId (instance: string, restarts: number): string {
  return restarts === 0 ? instance : `${instance}~${restarts}`
}

/** The instance and restart number of an attempt id. */
export function parseAttempt (attempt: string): { instance: string, restarts: number } {
  const match = /^(.*)~(\d+)$/.exec(attempt)
  return match === null ? { instance: attempt, restarts: 0 } : { instance: match[1]!, restarts: Number(match[2]) }
}

/** The job id an instance id names: without its index and, for a cron run, its tick. */
export function jobOfInstance (instance: string): string {
  return instance.replace(/(@\d{8}T\d{6}Z)?\.\d+$/, '')
}

/** The scheduled time of a cron instance, or null for a batch or service instance. */
export function tickOf (instance: string): number | null {
  const match = /@(\d{8}T\d{6}Z)\.\d+$/.exec(instance)
  if (match === null) return null
  const t = match[1]!
  return Date.UTC(Number(t.slice(0, 4)), Number(t.slice(4, 6)) - 1, Number(t.slice(6, 8)), Number(t.slice(9, 11)), Number(t.slice(11, 13)), Number(t.slice(13, 15)))
}

export function tickText (ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
}

const schedules = new Map<string, Cron>()

/** The latest scheduled time at or before `now` (whole seconds), or null if there is none. */
export function latestTick (cron: NonNullable<JobSpec['cron']>, now: number): number | null {
  const key = `${cron.timezone} ${cron.schedule}`
  let schedule = schedules.get(key)
  if (schedule === undefined) {
    if (schedules.size > 1_000) schedules.clear()
    schedule = new Cron(cron.schedule, { paused: true, timezone: cron.timezone })
    schedules.set(key, schedule)
  }
  // previousRuns() looks strictly before its reference (the next whole second): a tick in this second counts.
  const [previous] = schedule.previousRuns(1, new Date(Math.floor(now / 1000) * 1000 + 1000))
  return previous === undefined ? null : previous.getTime()
}
