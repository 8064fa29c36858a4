// Reliability: a member forges records. A key holder that joined the cluster the
// proper way (the node's own membership and state code, test/helpers/hostile-member.ts)
// writes, on the gossip topic every node reads, what only other nodes may write:
//   1. another node's own record;
//   2. a job in the space of the node that accepted it, one version higher, with a new command;
//   3. a finished ("exited") claim of an instance another node runs;
//   4. a record that node really signed, moved to another item (a replay);
//   5. a record of its own, under the Yjs client id of another node (which would make
//      replicas that took it drop that node's next write);
//   6. a delete of another node's record (deletes are not signed: the owner writes it back).
// Each must change nothing on any honest node: refused before it is applied, counted,
// the records as they were, every instance running once, the documents equal.

import * as Y from 'yjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { writeSigned } from '../../crdt/signing.ts'
import { parseSpaceKey } from '../../crdt/state.ts'
import { HostileMember } from '../helpers/hostile-member.ts'
import { waitUntil } from '../helpers/wait.ts'
import { currentClusterKey, resultRow, SCENARIO_MS, seconds, steadyService, useCluster } from './harness.ts'

const t = useCluster('records', 4, steadyService(8, { spread: [{ label: 'testnet.index', maxSkew: 1 }] }))
let m: HostileMember

beforeAll(async () => {
  const { net } = t.cluster
  m = await HostileMember.start({ clusterKey: currentClusterKey(), seeds: [net.nodes[0]!.addrs[0]!] })
  // Every honest node takes it for a member, and it has their records: it can lie with full knowledge.
  await waitUntil('every node to list the hostile member as alive', async () => await Promise.all(t.cluster.all().map(async (i) => (await net.client(i).members()).members.find((x) => x.id === m.id)?.state)), (states) => states.every((s) => s === 'alive'), 30_000)
  await waitUntil('the hostile member to have every node\'s record', async () => m.state.records.nodes().length, (n) => n >= net.nodes.length + 1, 30_000)
}, 120_000)
afterAll(async () => { await m?.stop() }, 30_000)

/** What every honest node has dropped from gossip, by reason. */
async function dropped (): Promise<Array<Record<string, number>>> {
  return await Promise.all(t.cluster.all().map(async (i) => (await t.cluster.net.client(i).state()).stats.gossip.dropped))
}

/**
 * Gossips a forged update and waits until every honest node refused it (as one
 * of `reasons`); then the cluster must be clean (every instance running once, the
 * documents equal) and `unchanged` must hold on every node.
 */
async function refusedEverywhere (what: string, row: ReturnType<typeof resultRow>, update: Uint8Array, reasons: string[], unchanged: (node: number) => Promise<void>): Promise<void> {
  const before = await dropped()
  const sentAt = Date.now()
  await m.gossip(update)
  const refusals = (d: Record<string, number>): number => reasons.reduce((n, r) => n + (d[r] ?? 0), 0)
  await waitUntil(`every node to refuse ${what} (${reasons.join(' or ')})`, dropped, (now) => now.every((d, i) => refusals(d) > refusals(before[i]!)), 30_000)
  for (const i of t.cluster.all()) await unchanged(i)
  const end = await t.cluster.finish(row, sentAt, { note: `${what}: refused (${reasons.join(' or ')}) on ${t.cluster.all().length} of ${t.cluster.all().length} nodes` })
  expect(end.problems).toEqual([])
}

/** The writer space of `node` in the hostile member's copy of the document. */
function spaceOf (doc: Y.Doc, kind: 'jobs' | 'tasks', node: string): { key: string, map: Y.Map<unknown> } {
  for (const [key, map] of doc.getMap<Y.Map<unknown>>(kind).entries()) if (parseSpaceKey(key)?.node === node && map instanceof Y.Map) return { key, map }
  throw new Error(`no ${kind} space of ${node}`)
}

describe('reliability', () => {
  it('a member forges another node\'s record', async ({ task }) => {
    const row = resultRow(task, 'hostile member: another node\'s record')
    const { net } = t.cluster
    const victim = net.peer(1)
    const record = async (i: number): Promise<unknown> => (await net.client(i).stateNodes()).nodes.find((n) => n.id === victim)
    const original = await record(0)
    const forged = m.forge((doc) => {
      m.signAsSelf(doc, doc.getMap('nodes'), { kind: 'nodes', space: '' }, victim, { ...original as object, cpuMillis: 0, labels: { owned: 'yes' } })
    })
    await refusedEverywhere('a node record signed by another member', row, forged, ['forged'], async (i) => { expect(await record(i)).toEqual(original) })
    row.recoverMs = 0
  }, SCENARIO_MS)

  it('a member forges a job', async ({ task }) => {
    const row = resultRow(task, 'hostile member: a job, one version higher')
    const { net } = t.cluster
    const job = m.state.records.jobs().find((j) => j.name === 'svc')!
    const accepter = m.state.records.jobRecords(job.id)[0]!.writer
    const view = async (i: number): Promise<unknown> => { const j = await net.client(i).job(job.id); return { version: j.version, spec: j.spec } }
    const original = await view(0)
    const forged = m.forge((doc) => {
      const { key, map } = spaceOf(doc, 'jobs', accepter)
      m.signAsSelf(doc, map, { kind: 'jobs', space: key }, job.id, { ...job, version: job.version + 1, spec: { ...job.spec, command: ['sh', '-c', 'echo owned; sleep 1000'] } })
    })
    await refusedEverywhere('a job in its accepter\'s space, signed by another member', row, forged, ['forged'], async (i) => { expect(await view(i)).toEqual(original) })
    row.recoverMs = 0
  }, SCENARIO_MS)

  it('a member forges a finished claim', async ({ task }) => {
    const row = resultRow(task, 'hostile member: a finished claim of a running instance')
    const { net } = t.cluster
    const owner = net.peer(2)
    const claim = m.state.records.tasks().find((c) => c.node === owner && c.state === 'running')!
    const forged = m.forge((doc) => {
      const { key, map } = spaceOf(doc, 'tasks', owner)
      m.signAsSelf(doc, map, { kind: 'tasks', space: key }, claim.id, { ...claim, state: 'exited', finishedAt: Date.now(), exit: { code: 0, signal: null, reason: 'forged' } })
    })
    const state = async (i: number): Promise<string | undefined> => (await net.client(i).tasks()).tasks.find((x) => x.id === claim.id && x.node === owner)?.state
    await refusedEverywhere('an exited claim in the runner\'s space, signed by another member', row, forged, ['forged'], async (i) => { expect(await state(i)).toBe('running') })
    row.recoverMs = 0
  }, SCENARIO_MS)

  it('a member replays a genuine signature in another item', async ({ task }) => {
    const row = resultRow(task, 'hostile member: a replayed record (genuine signature, another item)')
    const { net } = t.cluster
    const owner = net.peer(3)
    const doc = m.state.records.doc
    const { map: ownerSpace } = spaceOf(doc, 'tasks', owner)
    const [id, envelope] = [...ownerSpace.entries()][0]!
    const claimBefore = async (i: number): Promise<unknown> => (await net.client(i).tasks()).tasks.filter((x) => x.id === id && x.node === owner).map((x) => [x.state, x.generation])
    const before = await claimBefore(0)
    // The owner's own envelope, byte for byte, written again at the same key: a new item it never signed.
    const forged = m.forge((copy) => { spaceOf(copy, 'tasks', owner).map.set(id, envelope) })
    await refusedEverywhere('the owner\'s envelope in a new item', row, forged, ['forged'], async (i) => { expect(await claimBefore(i)).toEqual(before) })
    row.recoverMs = 0
  }, SCENARIO_MS)

  it('a member deletes another node\'s record', async ({ task }) => {
    const row = resultRow(task, 'hostile member: deletes another node\'s record')
    const { net } = t.cluster
    const victim = net.peer(2)
    const original = (await net.client(0).stateNodes()).nodes.find((n) => n.id === victim)
    // A delete names items only, and is signed by nobody: every node applies it, and the owner writes its record back.
    const sentAt = Date.now()
    await m.gossip(m.forge((doc) => { doc.getMap('nodes').delete(victim) }))
    await waitUntil('the record to be back on every node', async () => await Promise.all(t.cluster.all().map(async (i) => (await net.client(i).stateNodes()).nodes.find((n) => n.id === victim))), (records) => records.every((r) => r !== undefined && JSON.stringify({ ...r, updatedAt: 0 }) === JSON.stringify({ ...original, updatedAt: 0 })), 30_000)
    row.notes.push(`back on every node ${seconds(Date.now() - sentAt)} after the delete`)
    await t.cluster.finish(row, sentAt, { note: 'the owner wrote its record back' })
  }, SCENARIO_MS)

  it('a member writes under another node\'s client id', async ({ task }) => {
    const row = resultRow(task, 'hostile member: its own record under another node\'s client id')
    const { net } = t.cluster
    const owner = net.peer(0)
    const doc = m.state.records.doc
    // The client id the owner wrote its newest claim under: the one it goes on with.
    const ownerSpace = spaceOf(doc, 'tasks', owner).map
    const client = [...ownerSpace._map.values()].reduce((a, b) => (a.id.clock > b.id.clock ? a : b)).id.client
    const forged = m.forge((copy) => {
      // Signed by the member itself, in a space of its own (a valid record there), but under the owner's client id.
      const space = new Y.Map<unknown>()
      copy.getMap('jobs').set(`${m.id}/forged`, space)
      const nonce = '0123456789abcdef'
      copy.clientID = client
      writeSigned(space, { kind: 'jobs', space: `${m.id}/forged` }, 'j-forged', { id: 'j-forged' }, { keys: m.keys, nonce })
    }, client)
    // The owner itself takes it for its own client id used by someone else (own-client).
    await refusedEverywhere('a record under another node\'s client id', row, forged, ['forged', 'own-client'], async () => {})
    // The owner writes on under that client id, and every node reads it.
    const at = Date.now()
    await net.client(0).updateLabels({ after: 'forgery' }, [])
    await waitUntil('every node to read the owner\'s next write', async () => await Promise.all(t.cluster.all().map(async (i) => (await net.client(i).stateNodes()).nodes.find((n) => n.id === owner)?.labels.after)), (labels) => labels.every((l) => l === 'forgery'), 30_000)
    row.notes.push(`the owner's next write read everywhere after ${seconds(Date.now() - at)}`)
    row.recoverMs = 0
  }, SCENARIO_MS)
})
