// A namespace quota on a real 3-node closed testnet: a job that could never fit
// is refused at once on every node (403 OVER_QUOTA, naming quota and use); three
// 1-instance services under a quota of 2 instances never run more than 2 at once
// (watched in every node's task records and in the processes themselves), the
// third waits with a reason naming the quota, and starts once one is stopped. The
// quota is stored through node 0, which mints its rights, while the instances are
// pinned to nodes 1, 2 and 0: the rights must move between the nodes.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { UserKey } from '../../access/keys.ts'
import type { JobSummary, JobView, NamespaceView, TaskView } from '../../cli/client.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import { murmur } from '../helpers/cli.ts'
import { isLive, marker, markedPids, sh } from '../helpers/jobs.ts'
import { markedRoots } from '../helpers/processes.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { addUser, call, expectRefused, setQuota, testnetAdmin } from '../helpers/users.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 3
const NS = 'team'
const MARK = marker('quota')
const marks: string[] = []
const mark = (tag: string): string => { const m = `${MARK}-${tag}`; marks.push(m); return m }
const LOOP = 'while :; do sleep 1; done'
/** 100m each: two fit the quota's 250m, three do not. */
const EACH = { cpu: '100m', memory: '16M' } as const

let dir = ''
let nodes: TestnetNode[] = []
let admin: UserKey
let tm: UserKey

const api = (i: number): string => nodes[i]!.apiUrl
const all = (): number[] => Array.from({ length: N }, (_, i) => i)
const on = (index: number): Record<string, unknown> => ({ constraints: [{ label: 'testnet.index', op: 'eq', value: String(index) }] })

beforeAll(async () => {
  const started = await startTestnet('quota', N)
  dir = started.dir
  nodes = started.state.nodes
  admin = testnetAdmin(dir)
  tm = await addUser(api(0), admin, { name: 'tm', role: 'submit', namespaces: [NS] })
  // Stored through node 0: node 0 mints the namespace's rights.
  await setQuota(api(0), admin, NS, { instances: 2, cpuMillis: 250 })
  await waitUntil(`every node to hold the quota of ${NS}`, async () => await Promise.all(all().map(async (i) => ((await call(api(i), tm, 'GET', '/v1/namespaces')).json.namespaces as NamespaceView[]).find((n) => n.name === NS)?.quota?.limit)), (limits) => limits.every((l) => l?.instances === 2 && l.cpuMillis === 250), 20_000)
}, 90_000)

afterAll(async () => {
  await stopTestnet(dir)
  for (const m of marks) expect(markedPids(m), m).toEqual([])
}, 60_000)

async function teamJobs (i: number): Promise<JobSummary[]> {
  return (await call(api(i), admin, 'GET', `/v1/jobs?namespace=${NS}&all=1`)).json.jobs as JobSummary[]
}

async function jobView (i: number, id: string): Promise<JobView> {
  return (await call(api(i), admin, 'GET', `/v1/jobs/${id}?namespace=${NS}`)).json as JobView
}

describe(`namespace ${NS}: quota 2 instances, cpu 250m`, () => {
  it('a job that could never fit is refused at once on every node, naming the quota and the use', async () => {
    for (const i of all()) {
      const at = `node ${i}`
      expectRefused(await call(api(i), tm, 'POST', `/v1/jobs?namespace=${NS}`, { name: `three-${i}`, type: 'service', ...sh(LOOP, mark('never')), ...EACH, count: 3 }), 403, 'OVER_QUOTA',
        new RegExp(`^namespace ${NS} could never run this job: it asks for cpu \\S+ \\(3 × \\S+\\) of \\S+, 3 instances of 2 \\(quota cpu \\S+, 2 instances; in use now cpu 0, memory [^,]+, 0 instances\\); ask for less, or an admin raises the quota: murmur namespace quota ${NS}`), `${at}: count 3`)
      expectRefused(await call(api(i), tm, 'POST', `/v1/jobs?namespace=${NS}`, { name: `big-${i}`, ...sh('true', mark('never')), cpu: '300m', memory: '16M' }), 403, 'OVER_QUOTA',
        /could never run this job: it asks for cpu \S+ \(1 × \S+\) of \S+ \(quota/, `${at}: cpu 300m`)
    }
    for (const i of all()) expect((await teamJobs(i)).map((j) => j.name), `node ${i}`).toEqual([])
  })

  it('services 1+1+1: never more than 2 running at once, the third pending on the quota until one stops; the rights move between nodes', async () => {
    const peers = nodes.map((n) => n.peerId!)
    const m = { a: mark('a'), b: mark('b'), c: mark('c') }
    // Watched all along: the processes of the namespace, and every node's records of its live instances.
    const seen = { samples: 0, processesMax: 0, recordsMax: [0, 0, 0], over: [] as string[] }
    let watching = true
    const watcher = (async () => {
      while (watching) {
        const pids = [m.a, m.b, m.c].map((x) => markedRoots(x).length)
        const processes = pids.reduce((a, b) => a + b, 0)
        seen.processesMax = Math.max(seen.processesMax, processes)
        if (processes > 2 || pids.some((p) => p > 1)) seen.over.push(`${new Date().toISOString()}: processes a/b/c ${pids.join('/')}`)
        await Promise.all(all().map(async (i) => {
          try {
            const tasks = (await call(api(i), admin, 'GET', `/v1/tasks?namespace=${NS}`)).json.tasks as TaskView[]
            const live = tasks.filter((t) => isLive(t))
            seen.recordsMax[i] = Math.max(seen.recordsMax[i]!, live.length)
            if (live.length > 2) seen.over.push(`${new Date().toISOString()}: node ${i} records ${live.map((t) => `${t.id}@${t.node.slice(-6)}:${t.state}`).join(', ')}`)
          } catch {
            // A node busy for a moment: the next sample counts.
          }
        }))
        seen.samples++
        await new Promise((resolve) => setTimeout(resolve, 150))
      }
    })()
    const started = Date.now()
    const times: string[] = []
    const since = (what: string): void => { times.push(`${what} +${Date.now() - started} ms`) }
    try {
      // a on node 1, b on node 2: each needs a right node 0 minted.
      const a = await call(api(2), tm, 'POST', `/v1/jobs?namespace=${NS}`, { name: 'a', type: 'service', ...sh(LOOP, m.a), ...EACH, ...on(1) })
      expect(a.status, a.message ?? '').toBe(201)
      const aId = (a.json as JobView).id
      await waitUntil('a to run on node 1', async () => await jobView(0, aId), (v) => v.status === 'running' && v.instances[0]?.node === peers[1], 30_000)
      since('a running on node 1')
      const b = await call(api(1), tm, 'POST', `/v1/jobs?namespace=${NS}`, { name: 'b', type: 'service', ...sh(LOOP, m.b), ...EACH, ...on(2) })
      expect(b.status, b.message ?? '').toBe(201)
      const bId = (b.json as JobView).id
      await waitUntil('b to run on node 2', async () => await jobView(0, bId), (v) => v.status === 'running' && v.instances[0]?.node === peers[2], 30_000)
      since('b running on node 2')

      // c on node 0, which stored the quota and has given both its rights away: it waits.
      const c = await call(api(0), tm, 'POST', `/v1/jobs?namespace=${NS}`, { name: 'c', type: 'service', ...sh(LOOP, m.c), ...EACH, ...on(0) })
      expect(c.status, `c is taken (it fits the quota alone): ${c.message ?? ''}`).toBe(201)
      const cId = (c.json as JobView).id
      const reasons = await waitUntil('c to be pending on the quota, as some node says', async () => await Promise.all(all().map(async (i) => (await jobView(i, cId)).instances[0]?.pending ?? null)),
        (r) => r.some((x) => x !== null && /quota/.test(x)), 15_000)
      since('c pending on the quota')
      console.log(`[quota] c pending: ${reasons.map((r, i) => `node ${i}: ${r ?? '-'}`).join(' | ')}`)
      const reason = reasons.find((x) => x !== null && /quota/.test(x))!
      expect(reason).toMatch(new RegExp(`^namespace ${NS}: this node's share of the quota \\(.*\\) is in use; waiting for a share from another node`))
      expect(reason).not.toContain('\n')
      // A scale past the quota is refused at once too.
      expectRefused(await call(api(1), tm, 'POST', `/v1/jobs/${bId}/scale?namespace=${NS}`, { count: 3 }), 403, 'OVER_QUOTA', /could never run this job: .*3 instances of 2/, 'scale b to 3')

      // Held for longer than the escrow's stuck time (10 s): c stays pending, a and b run.
      const holdUntil = Date.now() + 11_000
      while (Date.now() < holdUntil) {
        const view = await jobView(0, cId)
        expect(view.instances[0]?.state, 'c stays pending').toBe('pending')
        expect(markedPids(m.c), 'no process of c').toEqual([])
        await new Promise((resolve) => setTimeout(resolve, 500))
      }
      since('held 11 s')
      const ps = await murmur(['ps', '-A', '--json'], { env: { MURMUR_CONFIG: process.env.MURMUR_CONFIG! } })
      expect(ps.code, ps.stderr).toBe(0)
      const listed = (JSON.parse(ps.stdout) as { tasks: TaskView[] }).tasks.filter((t) => [aId, bId, cId].includes(t.job))
      expect(listed.map((t) => `${t.jobName}@${peers.indexOf(t.node)}:${t.state}`).sort(), 'murmur ps').toEqual(['a@1:running', 'b@2:running'])
      for (const i of all()) {
        const ns = ((await call(api(i), tm, 'GET', '/v1/namespaces')).json.namespaces as NamespaceView[]).find((n) => n.name === NS)!
        expect({ instances: ns.use.instances, storedBy: ns.quota?.storedBy }, `node ${i}: use, and who minted the rights`).toEqual({ instances: 2, storedBy: peers[0] })
      }

      // a stops: its right is free on node 1 once its process has ended, and c starts on node 0.
      const stopped = await call(api(1), tm, 'POST', `/v1/jobs/${aId}/stop?namespace=${NS}`)
      expect(stopped.status, stopped.message ?? '').toBe(200)
      const stopAt = Date.now()
      await waitUntil('a\'s process to end', async () => markedPids(m.a), (p) => p.length === 0, 20_000)
      const aGoneMs = Date.now() - stopAt
      await waitUntil('c to run on node 0', async () => await jobView(1, cId), (v) => v.status === 'running' && v.instances[0]?.node === peers[0], 30_000)
      since('c running on node 0')
      console.log(`[quota] a stopped: its process ended after ${aGoneMs} ms, c ran on node 0 after ${Date.now() - stopAt} ms`)
      await waitUntil('c\'s process', async () => markedRoots(m.c), (p) => p.length === 1, 10_000)
      expect(markedRoots(m.b), 'b still runs').toHaveLength(1)
      // A few more samples with b and c running.
      await new Promise((resolve) => setTimeout(resolve, 2_000))

      for (const id of [bId, cId]) expect((await call(api(2), tm, 'POST', `/v1/jobs/${id}/stop?namespace=${NS}`)).status).toBe(200)
      await waitUntil('b and c to end', async () => [...markedPids(m.b), ...markedPids(m.c)], (p) => p.length === 0, 20_000)
    } finally {
      watching = false
      await watcher
    }
    console.log(`[quota] ${times.join(', ')}; ${seen.samples} samples: at most ${seen.processesMax} processes, at most ${seen.recordsMax.join('/')} live task records on nodes 0/1/2`)
    expect(seen.over, 'never more than 2 instances of the namespace at once').toEqual([])
    expect(seen.processesMax).toBe(2)
  })
})
