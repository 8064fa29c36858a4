// Job records no user asked for, written into the shared state by a member: a key
// holder that joined the proper way (test/helpers/hostile-member.ts) and writes, in
// its own space and signed as itself, what an honest node never would:
//   (a) a job with no signed submission;
//   (b) a copy of a user's running job, same id, its command changed (and a version up);
//   (c) a stop of a user's running job: with no stop proof, and with a genuine stop
//       proof of another job;
//   (d) a job whose proof is a user's signed submission under another namespace: one
//       intercepted on its way (never delivered), the running job's own, and one for a
//       namespace its user may not use.
// None may run anywhere, none may stop anything, and every node must count each as an
// invalid record (GET /v1/state: stats.invalidRecords) and log why (node-<i>.log).
// Then a record that is valid, an exact copy of a user's job, which the member later
// deletes: the job must keep running.

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { UserKey } from '../../access/keys.ts'
import type { JobSummary, JobView, TaskView } from '../../cli/client.ts'
import type { JobRecord } from '../../crdt/schema.ts'
import { newJobRecord } from '../../node/jobs/records.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import { testnetKey } from '../helpers/cluster-key.ts'
import { HostileMember } from '../helpers/hostile-member.ts'
import { marker, markedPids, sh } from '../helpers/jobs.ts'
import { markedRoots } from '../helpers/processes.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { addUser, call, proofOfSigned, signed, testnetAdmin } from '../helpers/users.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 3
const MARK = marker('forged-jobs')
const marks: string[] = []
const mark = (tag: string): string => { const m = `${MARK}-${tag}`; marks.push(m); return m }
const SMALL = { cpu: '10m', memory: '16M' } as const
const LOOP = 'while :; do sleep 1; done'
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

let dir = ''
let nodes: TestnetNode[] = []
let admin: UserKey
let alice: UserKey
let bob: UserKey
let m: HostileMember
/** The node that took alice's submission: its peer id sorts below the member's (see beforeAll). */
let accepter = 0
/** alice's running service, as the member read it out of the shared state. */
let svc: JobRecord
let svcPid: number[] = []
const svcMark = mark('svc')
/** bob's stopped service: its genuine stop proof is the one used on alice's job. */
let bobJob: JobRecord

const api = (i: number): string => nodes[i]!.apiUrl
const all = (): number[] => Array.from({ length: N }, (_, i) => i)

beforeAll(async () => {
  const started = await startTestnet('forged-jobs', N)
  dir = started.dir
  nodes = started.state.nodes
  admin = testnetAdmin(dir)
  alice = await addUser(api(0), admin, { name: 'alice', role: 'submit', namespaces: ['web'] })
  bob = await addUser(api(0), admin, { name: 'bob', role: 'submit', namespaces: ['web'] })
  // A member whose id sorts above some node's: an exact copy of a job it writes then wins a tie
  // against that node's own record (crdt/schema.ts, resolveJob), as the last test needs.
  for (let attempt = 0; attempt < 6; attempt++) {
    const member = await HostileMember.start({ clusterKey: testnetKey(dir), seeds: [nodes[0]!.addrs[0]!] })
    if (nodes.some((n) => n.peerId! < member.id)) { m = member; break }
    await member.stop()
  }
  expect(m, 'a member whose id sorts above some node\'s').toBeDefined()
  accepter = nodes.map((n, i) => ({ id: n.peerId!, i })).filter((n) => n.id < m.id).sort((a, b) => a.id.localeCompare(b.id))[0]!.i
  await waitUntil('every node to take the member for alive', async () => await Promise.all(all().map(async (i) => ((await call(api(i), admin, 'GET', '/v1/members')).json.members as Array<{ id: string, state: string }>).find((x) => x.id === m.id)?.state)), (s) => s.every((x) => x === 'alive'), 30_000)

  const submitted = await call(api(accepter), alice, 'POST', '/v1/jobs?namespace=web', { name: 'svc', type: 'service', ...sh(LOOP, svcMark), ...SMALL, env: { TOKEN: 'alice-token' } })
  expect(submitted.status, submitted.message ?? '').toBe(201)
  const id = (submitted.json as JobView).id
  await waitUntil('alice\'s service to run, as every node sees it', async () => await Promise.all(all().map(async (i) => (await call(api(i), admin, 'GET', `/v1/jobs/${id}`)).json?.status)), (s) => s.every((x) => x === 'running'), 30_000)
  svcPid = await waitUntil('its process', async () => markedRoots(svcMark), (p) => p.length === 1, 10_000)

  const bobs = await call(api(1), bob, 'POST', '/v1/jobs?namespace=web', { name: 'bobsvc', type: 'service', ...sh(LOOP, mark('bob')), ...SMALL })
  expect(bobs.status, bobs.message ?? '').toBe(201)
  const bobId = (bobs.json as JobView).id
  expect((await call(api(2), bob, 'POST', `/v1/jobs/${bobId}/stop?namespace=web`)).status).toBe(200)
  // The member holds both records as the nodes wrote them, proofs and all.
  ;({ svc, bobJob } = await waitUntil('the member to hold both jobs, bob\'s stopped', async () => ({ svc: m.state.records.job(id)!, bobJob: m.state.records.job(bobId)! }), (r) => r.svc !== undefined && r.bobJob?.stop !== undefined, 20_000))
  expect(svc.proof?.grant.name).toBe('alice')
}, 90_000)

afterAll(async () => {
  await m?.stop()
  await stopTestnet(dir)
  for (const x of marks) expect(markedPids(x), x).toEqual([])
}, 60_000)

/** What node `i` logged of the invalid records it skipped: the key and the reason. */
function invalidLogged (i: number): Array<{ key: string, space: string, reason: string }> {
  const out: Array<{ key: string, space: string, reason: string }> = []
  for (const line of readFileSync(nodes[i]!.logFile, 'utf8').split('\n')) {
    if (!line.includes('skipped an invalid record')) continue
    try {
      const entry = JSON.parse(line) as { key: string, space: string, reason: string }
      out.push({ key: entry.key, space: entry.space, reason: entry.reason })
    } catch {
      // A line cut short while the node writes it.
    }
  }
  return out
}

async function invalidCounts (): Promise<number[]> {
  return await Promise.all(all().map(async (i) => (await call(api(i), admin, 'GET', '/v1/state')).json.stats.invalidRecords as number))
}

/** A job record the member writes in its own space, signed as itself, as a node writes the jobs it accepts. */
async function plant (record: JobRecord): Promise<void> {
  await m.state.write((s) => { s.putJob(record) })
}

/** The state of alice's service on every node: it must stay exactly this. */
async function svcEverywhere (): Promise<unknown[]> {
  return await Promise.all(all().map(async (i) => {
    const answer = await call(api(i), admin, 'GET', `/v1/jobs/${svc.id}`)
    if (answer.status !== 200) return { status: `HTTP ${answer.status} ${answer.code ?? ''}` }
    const v = answer.json as JobView
    return { desired: v.desired, status: v.status, version: v.version, namespace: v.namespace, args: v.spec?.args, node: v.instances[0]?.node, restarts: v.instances[0]?.restarts }
  }))
}

describe('forged job records from a member', () => {
  it('no proof, a changed spec, a stop without a valid stop proof, a submission under another namespace: none runs, none stops anything, every node counts and logs each', async () => {
    const before = await invalidCounts()
    const svcBefore = await svcEverywhere()
    expect(svcBefore.every((s) => JSON.stringify(s) === JSON.stringify(svcBefore[0]))).toBe(true)
    const now = Date.now()
    const marksOf = { a: mark('a'), b: mark('b'), d1: mark('d1'), d3: mark('d3') }

    // (d1) alice's submission to web, taken on its way and never delivered; (d3) one to prod, which she may not use.
    const intercepted = signed(api(0), alice, 'POST', '/v1/jobs?namespace=web', { name: 'forged-d1', type: 'service', ...sh(LOOP, marksOf.d1), ...SMALL })
    const d1Proof = { ...proofOfSigned(intercepted, alice), body: intercepted.body! }
    const notHers = signed(api(0), alice, 'POST', '/v1/jobs?namespace=prod', { name: 'forged-d3', type: 'service', ...sh(LOOP, marksOf.d3), ...SMALL })
    const d3Proof = { ...proofOfSigned(notHers, alice), body: notHers.body! }
    const recordOf = (proof: typeof d1Proof, namespace: string): JobRecord => newJobRecord(normalizeJob(JSON.parse(proof.body)), m.id, now, '00000000', { namespace, proof })

    const forged: Array<{ what: string, record: JobRecord, reason: RegExp }> = [
      { what: '(a) no proof', record: { ...newJobRecord(normalizeJob({ name: 'forged-a', type: 'service', ...sh(LOOP, marksOf.a), ...SMALL }), m.id, now, 'deadbeef'), namespace: 'web' }, reason: /^carries no signed submission: no user asked for it$/ },
      { what: '(b) alice\'s job, its command changed, a version up', record: { ...svc, spec: { ...svc.spec, args: ['-c', LOOP, marksOf.b] }, version: svc.version + 1, updatedAt: now }, reason: /^its spec differs from what its users signed$/ },
      { what: '(c1) alice\'s job stopped, no stop proof', record: { ...svc, desired: 'stopped', version: svc.version + 1, finishedAt: now, updatedAt: now }, reason: /^it is stopped, but no user stopped it$/ },
      { what: '(c2) alice\'s job stopped with bob\'s stop of his own job', record: { ...svc, desired: 'stopped', stop: bobJob.stop!, version: bobJob.stop!.t, finishedAt: now, updatedAt: now }, reason: new RegExp(`^stop: the signed request is for /v1/jobs/${bobJob.id}/stop\\?namespace=web, not for this job$`) },
      { what: '(d1) alice\'s intercepted submission to web, under prod', record: recordOf(d1Proof, 'prod'), reason: /^submission: the signed request is for another namespace than prod$/ },
      { what: '(d2) alice\'s running job\'s own submission, under prod', record: { ...svc, namespace: 'prod' }, reason: /^submission: the signed request is for another namespace than prod$/ },
      { what: '(d3) alice\'s submission to prod, where she may not submit', record: recordOf(d3Proof, 'prod'), reason: /^submission: alice \(role submit, namespaces web\) may not submit in namespace prod/ },
    ]
    const watch = { pids: [] as string[], svc: [] as string[] }
    for (const f of forged) {
      const sentAt = Date.now()
      await plant(f.record)
      // Each one reaches every node and is skipped there, for its own reason, before the next replaces it in the member's space.
      const logged = await waitUntil(`every node to skip ${f.what}`, async () => all().map((i) => invalidLogged(i).filter((l) => l.key === f.record.id && l.space.startsWith(`${m.id}/`) && f.reason.test(l.reason))),
        (per) => per.every((l) => l.length > 0), 20_000, 100)
      console.log(`[forged-jobs] ${f.what}: skipped on every node after ${Date.now() - sentAt} ms: ${logged[0]![0]!.reason}`)
    }

    // Twenty reconcile passes and more: nothing of theirs runs, alice's service runs on, untouched.
    const holdUntil = Date.now() + 6_000
    while (Date.now() < holdUntil) {
      for (const [tag, x] of Object.entries(marksOf)) if (markedPids(x).length > 0) watch.pids.push(`${tag}: ${markedPids(x).join(',')}`)
      const roots = markedRoots(svcMark)
      if (JSON.stringify(roots) !== JSON.stringify(svcPid)) watch.svc.push(`svc processes ${roots.join(',')} (was ${svcPid.join(',')})`)
      await sleep(200)
    }
    expect(watch.pids, 'no process of a forged job, ever').toEqual([])
    expect(watch.svc, 'alice\'s service: the same process all along').toEqual([])
    expect(await svcEverywhere(), 'alice\'s service as every node sees it').toEqual(svcBefore)

    const forgedIds = new Set(forged.map((f) => f.record.id).filter((id) => id !== svc.id))
    for (const i of all()) {
      const tasks = (await call(api(i), admin, 'GET', '/v1/tasks?namespace=*&all=1')).json.tasks as TaskView[]
      expect(tasks.filter((t) => forgedIds.has(t.job)).map((t) => t.id), `node ${i}: task records of forged jobs`).toEqual([])
      expect(tasks.filter((t) => t.job === svc.id).map((t) => `${t.id}:${t.state}:${t.generation}`), `node ${i}: alice's service's one instance`).toEqual([`${svc.id}.0:running:1`])
      const jobs = (await call(api(i), admin, 'GET', '/v1/jobs?namespace=*&all=1')).json.jobs as JobSummary[]
      expect(jobs.filter((j) => forgedIds.has(j.id) || j.name.startsWith('forged-')).map((j) => j.id), `node ${i}: forged jobs listed`).toEqual([])
      expect((await call(api(i), admin, 'GET', '/v1/jobs?namespace=prod&all=1')).json.jobs, `node ${i}: namespace prod`).toEqual([])
      expect((await call(api(i), admin, 'GET', '/v1/jobs/forged-a?namespace=default')).status, `node ${i}: forged-a by name`).toBe(404)
    }
    const after = await invalidCounts()
    console.log(`[forged-jobs] invalid records counted (GET /v1/state stats.invalidRecords), before → after: ${all().map((i) => `node ${i} ${before[i]} → ${after[i]}`).join(', ')}`)
    for (const i of all()) expect(after[i]! - before[i]!, `node ${i}: counted each of the ${forged.length} forged records`).toBeGreaterThanOrEqual(forged.length)
    // The member's own copy holds what it wrote (it checks nothing): the records were there to be taken.
    expect(m.state.records.jobRecords(svc.id).some((e) => e.writer === m.id)).toBe(true)
  })

  it('an exact copy of a user\'s job, which the member then deletes: the job runs on', async () => {
    const svcBefore = await svcEverywhere()
    const before = await invalidCounts()
    const copiedAt = Date.now()
    // Valid in every respect: alice signed exactly this. As it sorts above the accepter's own record, it wins the tie.
    await plant({ ...svc })
    // Two maintenance runs of the accepter's (every 10 s) after the copy reached it: does it drop its own record as superseded by the member's?
    const runs = async (): Promise<number> => ((await call(api(accepter), admin, 'GET', '/v1/state')).json.stats as { maintenance: { runs: number } }).maintenance.runs
    const runsAtCopy = await runs()
    const writers = await waitUntil('the accepter to drop its own record of alice\'s job, or to run maintenance twice', async () => {
      const ws = m.state.records.jobRecords(svc.id).map((e) => e.writer)
      return { ws, done: !ws.includes(nodes[accepter]!.peerId!) || await runs() >= runsAtCopy + 2 }
    }, (r) => r.done, 30_000, 250)
    const dropped = !writers.ws.includes(nodes[accepter]!.peerId!)
    console.log(`[forged-jobs] exact copy by the member: the accepter (node ${accepter}) ${dropped ? `dropped its own record after ${Date.now() - copiedAt} ms` : 'kept its own record'}; writers now: ${writers.ws.map((w) => (w === m.id ? 'member' : `node ${nodes.findIndex((n) => n.peerId === w)}`)).join(', ')}`)
    const deletedAt = Date.now()
    await m.state.write((s) => { s.removeJob(svc.id) })
    // Watched for 6 s: when (if) alice's service's process ends.
    let endedAfter: number | null = null
    while (Date.now() - deletedAt < 6_000) {
      if (endedAfter === null && markedRoots(svcMark).length === 0) endedAfter = Date.now() - deletedAt
      await sleep(100)
    }
    const roots = markedRoots(svcMark)
    const views = await svcEverywhere()
    console.log(`[forged-jobs] ${Date.now() - deletedAt} ms after the member deleted its copy: svc processes ${roots.join(',') || `none (ended ${endedAfter} ms after the delete)`}; as nodes see it: ${JSON.stringify(views.map((v) => (v as { status?: string }).status))}`)
    expect(await invalidCounts(), 'an exact copy is no invalid record').toEqual(before)
    // The member's exact copy ties with the accepter's record and may win on writer id; the accepter then replaces
    // its record with the winner (the same) rather than dropping it (crdt/state.ts, expireJobs), so the member's
    // delete of its own copy leaves the job with its other holders: nothing changes.
    expect(views, 'alice\'s service as every node sees it, after the member deleted its copy').toEqual(svcBefore)
    expect(roots, 'alice\'s service: the same process').toEqual(svcPid)
  })
})

describe('clean-up', () => {
  it('an admin stops alice\'s service', async () => {
    const stop = await call(api(2), admin, 'POST', `/v1/jobs/${svc.id}/stop?namespace=web`)
    expect(stop.status, stop.message ?? '').toBe(200)
    await waitUntil('alice\'s service to end', async () => markedPids(svcMark), (p) => p.length === 0, 20_000)
  })
})
