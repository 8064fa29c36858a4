// `murmur state`: the node's copy of the shared cluster state — how big it is,
// what it holds, its state vector, when it last synced with each peer — and,
// with --compare, whether it equals a peer's copy.

import type { Client, StateComparison, StateInfo } from './client.ts'
import { formatAge, formatBytes } from './format.ts'
import { table } from './table.ts'

export async function printState (client: Client, json: boolean, compare: string | undefined): Promise<boolean> {
  const [info, comparison] = await Promise.all([client.state(), compare === undefined ? undefined : client.compareState(compare)])
  if (json) {
    process.stdout.write(JSON.stringify(comparison === undefined ? info : { ...info, comparison }, null, 2) + '\n')
  } else {
    process.stdout.write(renderState(info, Date.now()) + '\n')
    if (comparison !== undefined) process.stdout.write('\n' + renderComparison(comparison) + '\n')
  }
  return comparison?.equal ?? true
}

export function renderState (info: StateInfo, now: number): string {
  const sv = info.stateVector
  const lines = [
    `document   ${formatBytes(info.bytes)} (${info.bytes} bytes), digest ${info.digest.slice(0, 16)}`,
    `records    ${info.records.nodes} nodes, ${info.records.jobs} jobs, ${info.records.tasks} tasks in ${info.records.spaces} writer spaces`,
    `writers    ${sv.clients} Yjs clients, clock sum ${sv.clock}` + (sv.top.length > 0 ? ` (largest: ${sv.top.map((t) => `${t.client}:${t.clock}`).join(', ')})` : ''),
    `disk       life ${info.life}, snapshot ${formatBytes(info.store.snapshotBytes)}, log ${info.store.updates} updates (${formatBytes(info.store.logBytes)}), ${info.store.compactions} compactions`,
    `gossip     ${info.stats.gossip.published} sent, ${info.stats.gossip.received} received, ${info.stats.gossip.applied} applied` + dropped(info.stats.gossip.dropped),
    `sync       ${info.stats.sync.started} started, ${info.stats.sync.served} served, ${info.stats.sync.failed} failed` + dropped(info.stats.sync.rejected),
    `retention  ${info.stats.maintenance.removedTasks} tasks, ${info.stats.maintenance.removedJobs} jobs, ${info.stats.maintenance.removedNodes} nodes removed; ${info.stats.maintenance.rotatedSpaces} spaces compacted`,
  ]
  if (info.stats.invalidRecords > 0) lines.push(`invalid    ${info.stats.invalidRecords} records skipped (see the node's log)`)
  const damage = info.store.damage
  if (damage !== null) {
    const parts = []
    if (damage.droppedBytes > 0) parts.push(`${formatBytes(damage.droppedBytes)} dropped by LevelDB`)
    if (damage.missingUpdates > 0) parts.push(`${damage.missingUpdates} updates missing`)
    if (damage.corruptUpdates > 0) parts.push(`${damage.corruptUpdates} updates failed their checksum`)
    if (damage.corruptSnapshot) parts.push('the snapshot failed its checksum')
    lines.push(`damage     found at start: ${parts.join(', ')}; the peers refill what they have (see the node's log)`)
  }
  if (info.syncs.length === 0) return lines.join('\n') + '\n\nno sync with a peer yet'
  const rows = info.syncs.map((s) => [
    s.peer,
    `${formatAge(now - Date.parse(s.at))} ago`,
    s.direction,
    s.reason,
    s.ok ? 'ok' : `failed: ${s.error ?? '?'}`,
    `${formatBytes(s.sentBytes)} / ${formatBytes(s.receivedBytes)}`,
    `${s.ms}ms`,
  ])
  return lines.join('\n') + '\n\n' + table(['PEER', 'LAST SYNC', 'DIR', 'WHY', 'RESULT', 'SENT / RECEIVED', 'TOOK'], rows)
}

export function renderComparison (c: StateComparison): string {
  if (c.equal) return `equal to ${c.peer}: digest ${c.local.digest.slice(0, 16)}, ${c.local.stateVector.clients} writers`
  return [
    `DIFFERENT from ${c.peer}:`,
    `  here   digest ${c.local.digest.slice(0, 16)}, ${c.local.stateVector.clients} writers, clock sum ${c.local.stateVector.clock}`,
    `  there  digest ${c.remote.digest.slice(0, 16)}, ${c.remote.stateVector.clients} writers, clock sum ${c.remote.stateVector.clock}`,
    '  (copies converge within seconds; if this persists, check both nodes\' logs for dropped updates)',
  ].join('\n')
}

function dropped (counts: Record<string, number>): string {
  const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([reason, n]) => `${n} ${reason}`)
  return parts.length === 0 ? '' : `; dropped ${parts.join(', ')}`
}

/** `key=value` sets a label, `key-` removes one (as kubectl does). */
export function parseLabelArgs (args: string[]): { set: Record<string, string>, remove: string[] } {
  const set: Record<string, string> = {}
  const remove: string[] = []
  for (const arg of args) {
    const at = arg.indexOf('=')
    if (at > 0) set[arg.slice(0, at)] = arg.slice(at + 1)
    else if (arg.endsWith('-') && arg.length > 1) remove.push(arg.slice(0, -1))
    else throw Object.assign(new Error(`'${arg}' is neither key=value (set a label) nor key- (remove one)`), { exitCode: 2 })
  }
  return { set, remove }
}
