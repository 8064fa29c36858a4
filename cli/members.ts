// `murmur members`: every member the node knows, as a table or one JSON document;
// --watch follows changes as they happen.

import { type Client, type MemberView } from './client.ts'
import { formatAge, formatBytes, formatCpu } from './format.ts'
import { table } from './table.ts'

export async function printMembers (client: Client, json: boolean): Promise<void> {
  const [response, openCluster] = await Promise.all([client.members(), isOpenCluster(client)])
  if (json) {
    process.stdout.write(JSON.stringify({ ...response, openCluster }, null, 2) + '\n')
    return
  }
  process.stdout.write(renderMembers(response.members, openCluster) + '\n')
}

/** Whether the node runs without a cluster key (--insecure-open-cluster): anyone who reaches it can join. */
export async function isOpenCluster (client: Client): Promise<boolean> {
  const info = await client.node()
  return info.openCluster === true
}

export const OPEN_CLUSTER_WARNING = "warning: open cluster: this node runs without a cluster key, so anyone who reaches its port can join and run tasks; make one with 'murmur cluster init' and restart every node with --cluster-key"

export function renderMembers (members: MemberView[], openCluster = false): string {
  const rows = members.map((m) => [
    m.id + (m.self ? ' (self)' : ''),
    m.state,
    String(m.incarnation),
    shortAddr(m.addrs),
    formatCpu(m.meta.cpuMillis),
    formatBytes(m.meta.memoryBytes),
    isolationText(m.meta.isolation),
    Object.entries(m.meta.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
    m.self ? '-' : (m.lastHeardAgoMs === null ? 'never' : `${formatAge(m.lastHeardAgoMs)} ago`),
  ])
  const counts = ['alive', 'suspect', 'dead', 'left'].map((s) => `${members.filter((m) => m.state === s).length} ${s}`).join(', ')
  const unconfined = members.filter((m) => m.meta.isolation === 'none' && m.state !== 'left' && m.state !== 'dead')
  const warning = unconfined.length === 0
    ? ''
    : `\nwarning: ${unconfined.length} node${unconfined.length === 1 ? ' runs' : 's run'} tasks without isolation (no CPU, memory or pid limits): ${unconfined.map((m) => m.id).join(', ')}`
  return table(['MEMBER', 'STATE', 'INC', 'ADDRESS', 'CPU', 'MEMORY', 'ISOLATION', 'LABELS', 'LAST HEARD'], rows) + `\n${members.length} members: ${counts}` + warning +
    (openCluster ? `\n${OPEN_CLUSTER_WARNING}` : '')
}

function isolationText (kind: string | undefined): string {
  if (kind === undefined) return '?'
  return kind === 'none' ? 'NONE' : kind
}

/**
 * Prints the table, then one line per change until the signal aborts. With --json,
 * one JSON document per line: the member list first, then each change.
 */
export async function watchMembers (client: Client, json: boolean, signal: AbortSignal): Promise<void> {
  if (json) process.stdout.write(JSON.stringify(await client.members()) + '\n')
  else await printMembers(client, false)
  await client.events((event) => {
    if (event.type !== 'member') return
    const { member, previous } = event.data
    if (json) {
      process.stdout.write(JSON.stringify(event.data) + '\n')
      return
    }
    const change = previous === null ? 'joined' : previous === member.state ? `updated (incarnation ${member.incarnation})` : `${previous} → ${member.state}`
    process.stdout.write(`${new Date().toISOString()}  ${member.id}  ${change}\n`)
  }, signal)
}

function shortAddr (addrs: string[]): string {
  const first = addrs[0]
  if (first === undefined) return '-'
  return first.replace(/\/p2p\/.*$/, '')
}
