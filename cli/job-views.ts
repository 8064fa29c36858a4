// How the job commands show jobs, tasks and the pool to people. Pure: every
// function takes the API's answer (and `now` where it shows ages) and returns text.

import { constraintText } from '../placement/constraints.ts'
import type { ExplainView, HistoryView, InstanceView, JobSpec, JobSummary, JobView, PoolStatus, ClaimRecord, TaskView } from './client.ts'
import { formatAge, formatBytes, formatCpu } from './format.ts'
import { table } from './table.ts'

/** States in the order people read them: what runs, what waits, what ended. */
const STATE_ORDER = ['running', 'pending', 'claimed', 'starting', 'restarting', 'exited', 'failed', 'killed', 'lost']
/** What the API shows for every env value (node/jobs/service.ts): values are often passwords. */
const REDACTED = '(redacted)'
/** The states in which a node holds an instance: what `job stop` has to stop. */
const LIVE_STATES = new Set(['claimed', 'starting', 'running', 'restarting'])

/** A peer id as the tables show it: its last 8 characters, which tell the nodes of a cluster apart. */
export function shortNode (id: string | null): string {
  if (id === null) return '-'
  return id.length > 8 ? id.slice(-8) : id
}

function ago (now: number, at: number | null): string {
  return at === null ? '-' : `${formatAge(now - at)} ago`
}

export function plural (n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

/** `2 running, 1 pending`, states in reading order, zeros left out. */
export function countsText (counts: Record<string, number>): string {
  const states = Object.keys(counts).sort((a, b) => rankOf(a) - rankOf(b) || a.localeCompare(b))
  return states.filter((s) => (counts[s] ?? 0) > 0).map((s) => `${counts[s]} ${s}`).join(', ')
}

function rankOf (state: string): number {
  const i = STATE_ORDER.indexOf(state)
  return i < 0 ? STATE_ORDER.length : i
}

/** `3/3 running`, then whatever else there is: `1/3 running, 2 pending`. */
export function instancesText (counts: Record<string, number>, count: number): string {
  const others = countsText({ ...counts, running: 0 })
  return `${counts.running ?? 0}/${count} running${others === '' ? '' : `, ${others}`}`
}

export function exitText (exit: ClaimRecord['exit'] | null | undefined): string {
  if (exit === null || exit === undefined) return '-'
  if (exit.reason !== '') return exit.reason
  return exit.code !== null ? `exit code ${exit.code}` : exit.signal ?? '-'
}

function instanceCount (view: JobView): number {
  return view.spec?.count ?? view.instances.length
}

/** The stderr line after a submit: what was accepted and how to follow it. */
export function submittedText (view: JobView, now: number): string {
  const what = view.type === 'cron'
    ? `cron "${view.spec?.cron?.schedule ?? '?'}"${view.nextRun === null ? '' : `, next run in ${formatAge(view.nextRun - now)}`}`
    : `${view.type}, ${plural(instanceCount(view), 'instance')}`
  return `submitted ${view.id} (${what}); follow it with: murmur job status ${view.id}`
}

/** One short line of a job's progress, for `--wait`: `web: 2/3 running, 1 pending (no node has 256 MiB memory free)`. */
export function progressText (view: JobView): string {
  const counts: Record<string, number> = {}
  for (const i of view.instances) counts[i.state] = (counts[i.state] ?? 0) + 1
  const total = Math.max(instanceCount(view), view.instances.length)
  const parts = [`${counts.running ?? 0}/${total} running`]
  for (const state of Object.keys(counts).sort((a, b) => rankOf(a) - rankOf(b))) {
    if (state === 'running') continue
    parts.push(`${counts[state]} ${state}${whyText(view.instances.find((i) => i.state === state))}`)
  }
  return `${view.name}: ${parts.join(', ')}`
}

/** Why the first instance in a state is there, in parentheses, if anything says so. */
function whyText (instance: InstanceView | undefined): string {
  if (instance === undefined) return ''
  if (instance.pending !== null) return ` (${instance.pending})`
  if (instance.state === 'restarting' || instance.state === 'failed') {
    const restarts = instance.restarts > 0 ? `; ${plural(instance.restarts, 'restart')}` : ''
    return instance.exit === null ? '' : ` (${exitText(instance.exit)}${restarts})`
  }
  return ''
}

/** When `--wait` is done, the exit code and the line that says why; null while there is more to wait for. */
/** Restarts after which `--wait` gives up on a service instance (the node's status calls it degraded from here). */
const CRASH_LOOP_RESTARTS = 3

export function waitOutcome (view: JobView): { code: number, message: string } | null {
  if (view.desired === 'stopped' || view.status === 'stopping' || view.status === 'stopped') {
    return { code: 1, message: `${view.id} was stopped while waiting` }
  }
  // A cron job has nothing to wait for until its schedule fires.
  if (view.type === 'cron') return { code: 0, message: `${view.id} is scheduled` + (view.nextRun === null ? '' : `; next run at ${new Date(view.nextRun).toISOString()}`) }
  if (view.type === 'service') {
    const all = view.instances.length >= instanceCount(view) && view.instances.length > 0 && view.instances.every((i) => i.state === 'running')
    if (all) return { code: 0, message: `${view.id}: ${plural(view.instances.length, 'instance')} running` }
    // A service in a crash loop would be waited for in vain: it keeps restarting (see job status).
    const looping = view.instances.find((i) => i.state === 'restarting' && i.restarts >= CRASH_LOOP_RESTARTS)
    if (looping !== undefined) return { code: 1, message: `${looping.id} is in a crash loop (${looping.restarts} restarts, last: ${looping.exit?.reason ?? 'unknown'}); it keeps restarting with backoff: see murmur job status ${view.id}, stop it with murmur job stop ${view.id}` }
    return null
  }
  if (view.status === 'completed') return { code: view.exitCode ?? 0, message: `${view.id} completed` }
  if (view.status === 'failed') {
    const code = view.exitCode === null || view.exitCode === 0 ? 1 : view.exitCode
    return { code, message: `${view.id} failed (exit code ${code}); see murmur job status ${view.id}` }
  }
  return null
}

export function renderJobs (jobs: JobSummary[], now: number, all: boolean): string {
  if (jobs.length === 0) return all ? 'no jobs' : 'no jobs running (finished and stopped ones with --all)'
  const rows = jobs.map((j) => [j.id, j.name, j.type, j.status, instancesText(j.counts, j.count), ago(now, j.submittedAt)])
  return table(['ID', 'NAME', 'TYPE', 'STATUS', 'INSTANCES', 'SUBMITTED'], rows)
}

export function renderJob (view: JobView, now: number): string {
  const lines = [
    `job          ${view.id} (${view.name}), ${view.type}, ${view.status}${view.desired === 'stopped' ? ' (stop requested)' : ''}`,
    `submitted    ${ago(now, view.submittedAt)} on ${shortNode(view.submittedBy)}` + (view.finishedAt === null ? '' : `; finished ${ago(now, view.finishedAt)}`),
    ...specLines(view, now),
  ]
  if (view.instances.length === 0) return lines.join('\n') + '\n\nno instances'
  const rows = view.instances.map((i) => [
    i.id,
    shortNode(i.node),
    i.state,
    ago(now, i.since),
    String(i.restarts),
    i.pending ?? exitText(i.exit),
  ])
  return lines.join('\n') + '\n\n' + table(['INSTANCE', 'NODE', 'STATE', 'SINCE', 'RESTARTS', 'EXIT/PENDING'], rows)
}

function specLines (view: JobView, now: number): string[] {
  const spec = view.spec
  // A node of a newer version may have written a spec this one cannot read.
  if (spec === null) return ['spec         (unreadable by this node)']
  const lines = [
    `command      ${[spec.command, ...spec.args].map(shellWord).join(' ')}`,
    `resources    ${formatCpu(spec.cpuMillis)} CPU, ${formatBytes(spec.memoryBytes)} memory, ${plural(spec.count, 'instance')}`,
    `restart      ${restartText(spec, view.type)}; grace ${formatAge(spec.graceMs)}`,
    `partition    ${spec.partition === 'both' ? 'both: re-placed on every side of a partition' : 'majority: re-placed by the majority side only'}`,
  ]
  if (spec.constraints.length > 0) lines.push(`constraints  ${spec.constraints.map(constraintText).join(', ')}`)
  const env = Object.entries(spec.env)
  if (env.length > 0) lines.push(`env          ${env.map(([key, value]) => `${key}=${value === REDACTED ? value : shellWord(value)}`).join(' ')}`)
  if (spec.cron !== undefined) {
    const next = view.nextRun === null ? 'no next run' : `next run ${new Date(view.nextRun).toISOString()} (in ${formatAge(view.nextRun - now)})`
    lines.push(`schedule     "${spec.cron.schedule}" (${spec.cron.timezone}), ${next}`)
  }
  return lines
}

function restartText (spec: JobSpec, type: JobView['type']): string {
  const r = spec.restart
  // A service is restarted without end; attempts count for batch and cron runs only.
  const how = type === 'service' ? 'always' : `up to ${plural(r.attempts, 'attempt')}`
  return `${how}, after ${formatAge(r.delayMs)} ×${r.backoff} up to ${formatAge(r.maxDelayMs)}`
}

function shellWord (word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`
}

export function renderHistory (history: HistoryView): string {
  if (history.tasks.length === 0) return `${history.job.id}: no claims yet`
  const rows = history.tasks.map((t) => [
    new Date(t.since).toISOString(),
    t.id,
    shortNode(t.node),
    t.state,
    String(t.generation),
    String(t.restarts),
    exitText(t.exit),
  ])
  return table(['TIME', 'INSTANCE', 'NODE', 'STATE', 'GENERATION', 'RESTARTS', 'EXIT'], rows)
}

export function renderTasks (tasks: TaskView[], now: number, all: boolean): string {
  if (tasks.length === 0) return all ? 'no tasks' : 'no tasks running (finished ones with --all)'
  const rows = tasks.map((t) => [
    t.id,
    t.jobName,
    shortNode(t.node),
    t.state,
    ago(now, t.since),
    t.usage === null ? '-' : `${t.usage.cpuSeconds.toFixed(1)}s`,
    t.usage === null ? '-' : mebibytes(t.usage.memoryBytes),
    String(t.restarts),
  ])
  return table(['TASK', 'JOB', 'NODE', 'STATE', 'SINCE', 'CPU', 'MEM', 'RESTARTS'], rows)
}

function mebibytes (bytes: number): string {
  const mib = bytes / 1_048_576
  return `${mib < 10 ? mib.toFixed(1) : Math.round(mib)} MiB`
}

export function renderExplain (view: ExplainView): string {
  const e = view.explanation
  const lines = [
    `task       ${view.task} (job ${view.job})`,
    `state      ${view.state}`,
    `holders    ${view.holders.length === 0 ? 'none' : view.holders.map(shortNode).join(', ')}`,
  ]
  if (view.pending !== null) lines.push(`pending    ${view.pending}`)
  lines.push(view.majority
    ? 'majority   yes: this side re-places the tasks of unreachable nodes'
    : 'majority   no: this side holds no majority; it keeps what it runs but does not take over tasks of unreachable nodes')
  lines.push(e.node !== undefined
    ? `placement  would put it on ${shortNode(e.node)} now` + (e.candidates.length > 1 ? ` (backups: ${e.candidates.filter((c) => c !== e.node).map(shortNode).join(', ')})` : '')
    : `placement  no node can take it: ${e.pending?.message ?? 'no node is feasible'}`)
  if (e.ranking.length === 0) return lines.join('\n') + '\n\nno nodes in the view'
  const rows = e.ranking.map((r) => [String(r.rank), shortNode(r.node), r.verdict, r.text])
  return lines.join('\n') + '\n\n' + table(['RANK', 'NODE', 'VERDICT', 'WHY'], rows)
}

export function renderStatus (s: PoolStatus): string {
  const n = s.nodes
  const lines = [
    `seen from  ${shortNode(s.self)}`,
    `nodes      ${n.alive} alive, ${n.suspect} suspect, ${n.dead} dead, ${n.left} left of ${n.total}`,
    `cpu        ${formatCpu(s.cpu.totalMillis)} cores, ${formatCpu(s.cpu.claimedMillis)} claimed, ${s.cpu.usedMillis === null ? 'use unknown' : `${formatCpu(s.cpu.usedMillis)} used`}`,
    `memory     ${formatBytes(s.memory.totalBytes)}, ${formatBytes(s.memory.claimedBytes)} claimed, ${s.memory.usedBytes === null ? 'use unknown' : `${formatBytes(s.memory.usedBytes)} used`}`,
    `tasks      ${countsText(s.tasks) || 'none'}`,
    `jobs       ${countsText(s.jobs) || 'none'}`,
  ]
  for (const line of s.degraded) lines.push(`warning: ${line}`)
  if (!s.majority) lines.push('this side holds no majority of the cluster: it keeps running its tasks and accepts new jobs, but does not take over the tasks of unreachable nodes')
  return lines.join('\n')
}

/** The instances `job stop` has to stop. */
export function liveInstances (view: JobView): number {
  return view.instances.filter((i) => LIVE_STATES.has(i.state)).length
}
