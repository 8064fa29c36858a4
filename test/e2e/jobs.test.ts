// Jobs on a real 5-node testnet, through the TypeScript client only: submit on
// one node and read the logs through another (the bytes come over libp2p), exit
// codes, refused specs, kill / explain / status, stop everywhere, and 200 jobs
// submitted at once through every node. Every task's command carries a marker,
// so that the last test can check that no task process outlives the testnet.

import { chmod, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ApiError, type Client, type ClusterEvent, type JobView, type LogOptions, type ClaimRecord } from '../../cli/client.ts'
import { byInstance, isLive, marker, markedPids, Net, settled, sh } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const N = 5
const MARK = marker('jobs')
const marks: string[] = []
/** A marker for one job's processes. */
const mark = (tag: string): string => { const m = `${MARK}-${tag}`; marks.push(m); return m }
/** Small tasks: the whole file runs hundreds of them on 2 cores. */
const SMALL = { cpu: '10m', memory: '16M' } as const
const LOOP = 'while :; do sleep 1; done'
/** One line, then two more once the file $1 exists. */
const GATED = 'echo first; while [ ! -e "$1" ]; do sleep 0.1; done; echo second; echo third'

let dir = ''
let net: Net

beforeAll(async () => {
  const started = await startTestnet('jobs', N)
  dir = started.dir
  net = new Net(started.state.nodes)
}, 90_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

const allPeers = (): Set<string> => new Set(net.nodes.map((n) => n.peerId!))

/** Waits until a service runs `count` instances, each with one live claim, as node `i` sees it. */
async function waitSettled (i: number, job: string, count: number, live = allPeers()): Promise<{ view: JobView, claims: ClaimRecord[] }> {
  return await waitUntil(`job ${job} to run ${count} instances, each held once (node ${i})`, async () => {
    const view = await net.client(i).job(job)
    return { view, claims: await net.claims(i, job) }
  }, ({ view, claims }) => settled(view, claims, live, count), 30_000, 100)
}

/** Stops a job and waits until no process of it is left. */
async function stopAndReap (job: string, m: string): Promise<void> {
  await net.client(0).stopJob(job)
  await waitUntil(`the processes of ${job} to end`, async () => markedPids(m), (pids) => pids.length === 0, 20_000)
}

/** A followLogs call under way: what it got, and how it ended. */
class Follow {
  readonly done: Promise<void>
  ended = false
  error: Error | null = null
  private readonly chunks: Buffer[] = []
  private readonly limit = new AbortController()

  constructor (client: Client, id: string, opts: Omit<LogOptions, 'length'>, limitMs = 30_000) {
    const timer = setTimeout(() => { this.limit.abort() }, limitMs)
    this.done = client.followLogs(id, opts, (data) => { this.chunks.push(data) }, this.limit.signal)
      .then(() => { this.ended = !this.limit.signal.aborted }, (err: Error) => { this.error = err })
      .finally(() => { clearTimeout(timer) })
  }

  text (): string { return Buffer.concat(this.chunks).toString() }

  result (): { text: string, error: string | null, ended: boolean, cutOff: boolean } {
    return { text: this.text(), error: this.error === null ? null : `${this.error.name}: ${this.error.message}`, ended: this.ended, cutOff: this.limit.signal.aborted }
  }
}

async function expectRefused (promise: Promise<unknown>, status: number, code: string, message: RegExp): Promise<void> {
  const err = await promise.then(() => { throw new Error('expected the API to refuse') }, (e: unknown) => e)
  expect(err).toBeInstanceOf(ApiError)
  const e = err as ApiError
  expect({ status: e.status, code: e.code }, e.message).toEqual({ status, code })
  expect(e.message).toMatch(message)
  expect(e.message).not.toContain('\n')
}

describe('jobs on a 5-node testnet', () => {
  it('a batch job submitted on node 0 runs elsewhere, and node 3 reads every instance\'s output over libp2p', async () => {
    const m = mark('hello')
    const submitted = await net.client(0).submitJob({
      name: 'hello', ...sh('echo "hello from $0"; echo "to stderr" >&2', m), count: 4, ...SMALL,
      // Never on node 3: each read through node 3 is a remote one.
      constraints: [{ label: 'testnet.index', op: 'ne', value: '3' }],
    })
    expect(submitted).toMatchObject({ name: 'hello', type: 'batch', desired: 'running', submittedBy: net.peer(0) })
    expect(submitted.id).toMatch(/^hello-[0-9a-f]{8}$/)
    const done = await net.job(3, submitted.id, (v) => v.status === 'completed', 'the job to complete')
    expect(done.instances.map((i) => i.id)).toEqual([0, 1, 2, 3].map((k) => `${submitted.id}.${k}`))
    for (const instance of done.instances) {
      expect(instance.state).toBe('exited')
      const holder = net.index(instance.node)
      expect(holder, `${instance.id} ran on a node of the testnet`).toBeGreaterThanOrEqual(0)
      expect(holder).not.toBe(3)
      const out = await net.client(3).logs(instance.id)
      expect(out.data.toString()).toBe(`hello from ${m}\n`)
      expect(out).toMatchObject({ start: 0, end: out.data.length })
      const err = await net.client(3).logs(instance.id, { stream: 'stderr' })
      expect(err.data.toString()).toBe('to stderr\n')
      // The node that ran it answers the same from its own disk.
      expect((await net.client(holder).logs(instance.id)).data.toString()).toBe(`hello from ${m}\n`)
    }
  })

  it('followLogs from another node sees the lines written after it started, and ends with the task', async () => {
    const m = mark('follow')
    const gate = join(dir, 'follow-gate')
    const submitted = await net.client(0).submitJob({ name: 'follow', ...sh(GATED, m, gate), ...SMALL })
    const id = `${submitted.id}.0`
    const { view } = await waitSettled(0, submitted.id, 1)
    const follower = (net.index(view.instances[0]!.node) + 2) % N
    const f = new Follow(net.client(follower), id, { offset: 0 })
    await waitUntil('the follow to show the first line', async () => f.text(), (t) => t.includes('first\n'), 15_000, 50)
    expect(f.text()).toBe('first\n')
    expect(f.ended).toBe(false)
    await writeFile(gate, '')
    await f.done
    expect(f.result()).toEqual({ text: 'first\nsecond\nthird\n', error: null, ended: true, cutOff: false })
    await net.job(follower, submitted.id, (v) => v.status === 'completed', 'the job to complete')
  })

  it('a follow goes on across a service\'s restarts in place, from another node, until the job stops', async () => {
    const m = mark('restarts')
    const submitted = await net.client(0).submitJob({ name: 'restarts', type: 'service', ...sh('echo "attempt $MURMUR_TASK_ID"; exit 1', m), restart: { delay: '100ms', backoff: 1 }, ...SMALL })
    const id = `${submitted.id}.0`
    const holder = await waitUntil('the instance to be claimed', async () => await net.client(0).task(id).catch(() => null), (t) => t !== null, 15_000)
    const f = new Follow(net.client((net.index(holder!.node) + 1) % N), id, { offset: 0 })
    // Each attempt has its own id, so each line names the attempt it came from.
    const lines = await waitUntil('three attempts in one follow', async () => f.text().split('\n').filter((l) => l !== ''), (l) => l.length >= 3, 20_000, 50)
    // The follow began with whichever attempt was current; from there, every next attempt once, in order.
    const attempts = lines.map((l) => {
      const match = new RegExp(`^attempt ${id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:~(\\d+))?$`).exec(l)
      expect(match, l).not.toBeNull()
      return Number(match![1] ?? 0)
    })
    expect(attempts).toEqual(attempts.map((_, k) => attempts[0]! + k))
    expect(f.ended).toBe(false)
    await net.client(1).stopJob(submitted.id)
    await f.done
    expect(f.result()).toMatchObject({ error: null, ended: true, cutOff: false })
  })

  it('a follow from the end of a quiet task outlasts the client\'s request limit', async () => {
    const m = mark('quiet')
    const gate = join(dir, 'quiet-gate')
    const submitted = await net.client(0).submitJob({ name: 'quiet', ...sh(GATED, m, gate), ...SMALL })
    const id = `${submitted.id}.0`
    const { view } = await waitSettled(0, submitted.id, 1)
    const follower = (net.index(view.instances[0]!.node) + 1) % N
    await waitUntil('the first line written', async () => (await net.client(follower).logs(id)).data.toString(), (t) => t === 'first\n')
    // From the end: nothing to send until the gate opens, for longer than the client waits for an answer to begin.
    const f = new Follow(net.client(follower, 2_000), id, {})
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    await writeFile(gate, '')
    await f.done
    expect(f.result()).toEqual({ text: 'second\nthird\n', error: null, ended: true, cutOff: false })
  })

  it('a batch job\'s exit code: failed with 3 after one restart; completed with 0 and a finishedAt', async () => {
    const m = mark('exit')
    const failing = await net.client(0).submitJob({ name: 'exit3', ...sh('exit 3', m), restart: { attempts: 1, delay: '100ms' }, ...SMALL })
    const succeeding = await net.client(1).submitJob({ name: 'exit0', ...sh('exit 0', m), ...SMALL })
    const failed = await net.job(2, failing.id, (v) => v.status === 'failed' || v.status === 'completed', 'the failing job to end')
    expect(failed.status).toBe('failed')
    expect(failed.exitCode).toBe(3)
    expect(failed.instances).toHaveLength(1)
    expect(failed.instances[0]).toMatchObject({ state: 'failed', restarts: 1, exit: { code: 3, signal: null } })
    // The job record is marked finished by the node that finished it.
    await net.job(2, failing.id, (v) => v.finishedAt !== null, 'the failed job to get its finishedAt')

    const completed = await net.job(3, succeeding.id, (v) => v.status === 'completed' && v.finishedAt !== null, 'the succeeding job to complete')
    expect(completed.exitCode).toBe(0)
    expect(completed.instances[0]).toMatchObject({ state: 'exited', restarts: 0, exit: { code: 0, signal: null } })
    expect(completed.finishedAt).toBeGreaterThanOrEqual(completed.submittedAt)
    expect(completed.finishedAt).toBeGreaterThanOrEqual(completed.instances[0]!.finishedAt!)
    // Finished jobs leave the default list and stay in the full one.
    expect((await net.client(3).jobs()).jobs.map((j) => j.id)).not.toContain(succeeding.id)
    const all = (await net.client(3).jobs({ all: true })).jobs
    expect(all.find((j) => j.id === succeeding.id)).toMatchObject({ status: 'completed', count: 1 })
  })

  it('each invalid spec is refused with HTTP 400 and its one-line reason; unknown jobs and tasks give 404', async () => {
    const before = (await net.client(0).jobs({ all: true })).jobs.length
    const base = { name: 'bad', command: 'true', ...SMALL }
    const cases: Array<[string, unknown, string, RegExp]> = [
      ['an unknown field', { ...base, colour: 'red' }, 'BAD_JOB_SPEC', /unknown field 'colour'/],
      ['no command', { name: 'bad', ...SMALL }, 'BAD_JOB_SPEC', /^command: is required/],
      ['a negative cpu', { ...base, cpu: -1 }, 'BAD_JOB_SPEC', /^cpu: .*negative/],
      ['a negative cpu in millicores', { ...base, cpu: '-500m' }, 'BAD_JOB_SPEC', /^cpu: /],
      ['a count of 1,000,000', { ...base, count: 1_000_000 }, 'BAD_JOB_SPEC', /^count: at most 1000 instances/],
      ['more CPU than any node has', { ...base, cpu: 64 }, 'UNSCHEDULABLE', /no node could ever run this job: it asks for cpu 64000m \(the largest node offers \d+m\)/],
      ['a bad cron schedule', { ...base, type: 'cron', schedule: 'every minute' }, 'BAD_JOB_SPEC', /^schedule: 'every minute' is not a cron schedule/],
      ['a bad time zone', { ...base, type: 'cron', schedule: '*/5 * * * *', timezone: 'Mars/Olympus_Mons' }, 'BAD_JOB_SPEC', /^timezone: 'Mars\/Olympus_Mons' is not an IANA time zone/],
      ['a schedule on a batch job', { ...base, schedule: '* * * * *' }, 'BAD_JOB_SPEC', /^schedule: only a cron job/],
      ['not an object', ['true'], 'BAD_JOB_SPEC', /a job spec is an object/],
    ]
    for (const [k, [what, spec, code, message]] of cases.entries()) {
      await expectRefused(net.client(k % N).submitJob(spec), 400, code, message).catch((err: Error) => { throw new Error(`${what}: ${err.message}`) })
    }
    // Nothing of them was stored.
    expect((await net.client(0).jobs({ all: true })).jobs.length).toBe(before)

    const c = net.client(1)
    await expectRefused(c.job('no-such-job'), 404, 'NO_SUCH_JOB', /no job 'no-such-job'/)
    await expectRefused(c.stopJob('no-such-job'), 404, 'NO_SUCH_JOB', /no job 'no-such-job'/)
    await expectRefused(c.jobHistory('no-such-job'), 404, 'NO_SUCH_JOB', /no job 'no-such-job'/)
    await expectRefused(c.tasks({ job: 'no-such-job' }), 404, 'NO_SUCH_JOB', /no job 'no-such-job'/)
    await expectRefused(c.task('no-such-job.0'), 404, 'NO_SUCH_TASK', /no task 'no-such-job\.0'/)
    await expectRefused(c.killTask('no-such-job.0'), 404, 'NO_SUCH_TASK', /no task 'no-such-job\.0'/)
    await expectRefused(c.explainTask('no-such-job.0'), 404, 'NO_SUCH_TASK', /no task 'no-such-job\.0'/)
    await expectRefused(c.logs('no-such-job.0'), 404, 'NO_SUCH_TASK', /no task 'no-such-job\.0'/)
  })

  it('killTask gives a service instance a replacement and records the kill; explain names the holder; status counts the pool', async () => {
    const m = mark('kill')
    const submitted = await net.client(1).submitJob({ name: 'kill-me', type: 'service', ...sh(LOOP, m), count: 3, ...SMALL, grace: '1s' })
    await waitSettled(1, submitted.id, 3)
    await waitUntil('3 task processes', async () => markedPids(m), (p) => p.length === 3, 15_000)
    const pidsBefore = markedPids(m)
    const id = `${submitted.id}.0`
    const before = await net.client(0).task(id)
    const holder = net.index(before.node)
    const killer = (holder + 1) % N
    const observer = (holder + 2) % N

    // Every task record written from now on, as one node receives them.
    const events: ClaimRecord[] = []
    const watching = new AbortController()
    const following = net.client(observer).events((e: ClusterEvent) => { if (e.type === 'task' && e.data.id === id) events.push(e.data) }, watching.signal)
    await waitUntil('the event stream to open', async () => (await net.client(observer).node()).id, () => true)
    try {
      const answer = await net.client(killer).killTask(id)
      expect(answer).toEqual({ task: id, node: before.node })
      const replaced = await waitUntil('a replacement running', async () => await net.client(killer).task(id),
        (t) => t.state === 'running' && t.generation > before.generation, 20_000)
      expect(net.index(replaced.node)).toBeGreaterThanOrEqual(0)
      // The killed process is gone, and a new one runs in its place.
      const pidsAfter = await waitUntil('the killed process replaced', async () => markedPids(m),
        (p) => p.length === 3 && p.filter((pid) => !pidsBefore.includes(pid)).length === 1, 15_000)
      expect(pidsBefore.filter((pid) => !pidsAfter.includes(pid))).toHaveLength(1)
    } finally {
      watching.abort()
      await following
    }
    // The kill is in the shared state: the old claim was recorded `killed` (in the history, or at least on the way there).
    const claims = await net.claims(observer, submitted.id)
    const killed = [...events, ...claims].find((t) => t.id === id && t.node === before.node && t.generation === before.generation && t.state === 'killed')
    expect(killed, `no 'killed' record of ${id} generation ${before.generation} on node ${holder}; events seen: ${JSON.stringify(events.map((e) => [net.index(e.node), e.state, e.generation]))}; claims now: ${JSON.stringify(claims.filter((c) => c.id === id).map((c) => [net.index(c.node), c.state, c.generation]))}`).toBeDefined()

    // explain: who holds it, and how the nodes rank for it.
    const now = await net.client(observer).task(id)
    const explained = await net.client(observer).explainTask(id)
    expect(explained).toMatchObject({ task: id, job: submitted.id, state: 'running', holders: [now.node], pending: null, majority: true })
    expect(explained.explanation.holders).toEqual([now.node])
    const ranking = explained.explanation.ranking
    expect(new Set(ranking.map((r) => r.node))).toEqual(allPeers())
    expect(ranking.map((r) => r.rank)).toEqual([1, 2, 3, 4, 5])
    expect(ranking.every((r) => r.verdict !== 'skipped' && r.text.length > 0)).toBe(true)
    expect(ranking.filter((r) => r.verdict === 'chosen')).toHaveLength(1)

    // status: the pool's nodes, CPU and memory, and the tasks by state (this service's 3 are all that run).
    const capacity = (await net.client(4).stateNodes()).nodes
    const status = await waitUntil('status to count the 3 running tasks', async () => await net.client(4).status(),
      (s) => s.tasks.running === 3 && Object.keys(s.tasks).length === 1 && s.degraded.every((d) => /without isolation/.test(d)))
    expect(status.self).toBe(net.peer(4))
    expect(status.majority).toBe(true)
    expect(status.nodes).toEqual({ total: N, alive: N, suspect: 0, dead: 0, left: 0 })
    expect(status.cpu.totalMillis).toBe(capacity.reduce((s, n) => s + n.cpuMillis, 0))
    expect(status.cpu.claimedMillis).toBe(3 * 10)
    expect(status.memory.totalBytes).toBe(capacity.reduce((s, n) => s + n.memoryBytes, 0))
    expect(status.memory.claimedBytes).toBe(3 * 16 * 1024 ** 2)
    expect(status.jobs.running).toBe(1)
    await stopAndReap(submitted.id, m)
  })

  it('stopJob stops every instance on every node', async () => {
    const m = mark('stop')
    const submitted = await net.client(2).submitJob({ name: 'stop-me', type: 'service', ...sh(LOOP, m), count: 4, ...SMALL, grace: '1s' })
    const { view } = await waitSettled(2, submitted.id, 4)
    await waitUntil('4 task processes', async () => markedPids(m), (p) => p.length === 4, 15_000)
    const holders = new Set(view.instances.map((i) => i.node))

    const stopped = await net.client(4).stopJob(submitted.id)
    expect(stopped).toMatchObject({ id: submitted.id, desired: 'stopped' })
    expect(stopped.version).toBeGreaterThan(view.version)
    for (let i = 0; i < N; i++) {
      const v = await net.job(i, submitted.id, (j) => j.status === 'stopped', 'the job to be stopped')
      expect(v.instances.every((inst) => inst.state === 'killed'), JSON.stringify(v.instances)).toBe(true)
      const claims = await net.claims(i, submitted.id)
      expect(claims.filter(isLive), `live claims seen by node ${i}`).toEqual([])
      expect((await net.client(i).tasks({ job: submitted.id })).tasks).toEqual([])
    }
    await waitUntil('every process of the job to end', async () => markedPids(m), (p) => p.length === 0, 20_000)
    // Each node that ran an instance ended it.
    for (const peer of holders) {
      const { tasks } = await net.client(net.index(peer)).nodeTasks()
      const mine = tasks.filter((t) => t.job === submitted.id)
      expect(mine.length).toBeGreaterThan(0)
      expect(mine.every((t) => t.phase === 'ended')).toBe(true)
    }
    expect((await net.client(1).jobs()).jobs.map((j) => j.id)).not.toContain(submitted.id)
    // Stopping again changes nothing.
    expect(await net.client(3).stopJob(submitted.id)).toMatchObject({ desired: 'stopped', version: stopped.version })
  })

  it('scaleJob grows a service and shrinks it, from any node, by id or name; a batch job or a bad count is refused', async () => {
    const m = mark('scale')
    const submitted = await net.client(1).submitJob({ name: 'scale-me', type: 'service', ...sh(LOOP, m), count: 2, ...SMALL, grace: '1s' })
    const { view } = await waitSettled(1, submitted.id, 2)
    const up = await net.client(3).scaleJob(submitted.id, 4)
    expect(up.spec?.count).toBe(4)
    expect(up.version).toBeGreaterThan(view.version)
    await waitSettled(0, submitted.id, 4)
    await waitUntil('4 task processes', async () => markedPids(m), (p) => p.length === 4, 15_000)
    await net.client(4).scaleJob('scale-me', 1)
    const down = await waitSettled(2, submitted.id, 1)
    expect(down.view.instances.map((i) => i.id)).toEqual([`${submitted.id}.0`])
    await waitUntil('1 task process', async () => markedPids(m), (p) => p.length === 1, 20_000)
    await expectRefused(net.client(0).scaleJob(submitted.id, 0), 400, 'BAD_SCALE', /count must be a whole number from 1/)
    const batch = await net.client(0).submitJob({ name: 'scale-batch', ...sh('true', mark('scale-batch')), ...SMALL })
    await expectRefused(net.client(0).scaleJob(batch.id, 2), 400, 'BAD_SCALE', /only a service can be scaled/)
    await expectRefused(net.client(0).scaleJob('no-such-job', 2), 404, 'NO_SUCH_JOB', /no job 'no-such-job'/)
    await stopAndReap(submitted.id, m)
  })

  it('200 jobs submitted at once through every node all run, each instance finished at least once and none left live, and the states agree', async () => {
    const JOBS = 200
    const m = mark('many')
    const runs = join(dir, 'runs.log')
    // Every task appends to it, each as a user of its own: made here, writable by all.
    await writeFile(runs, '')
    await chmod(runs, 0o666)
    const submitted = await Promise.all(Array.from({ length: JOBS }, async (_, k) =>
      await net.client(k % N, 30_000).submitJob({ name: `many-${k}`, ...sh('echo "$1" >> "$2"', m, `many-${k}`, runs), ...SMALL })))
    const ids = new Set(submitted.map((s) => s.id))
    expect(ids.size).toBe(JOBS)

    for (let i = 0; i < N; i++) {
      await waitUntil(`node ${i} to see all ${JOBS} jobs completed`, async () => (await net.client(i, 15_000).jobs({ all: true })).jobs.filter((j) => ids.has(j.id)),
        (jobs) => jobs.length === JOBS && jobs.every((j) => j.status === 'completed'), 120_000, 500)
    }
    const peers = [1, 2, 3, 4]
    await waitUntil('every node\'s state to equal node 0\'s', async () => await Promise.all(peers.map(async (i) => (await net.client(i, 15_000).compareState(net.peer(0))).equal)),
      (equal) => equal.every(Boolean), 60_000, 250)
    const digests = await Promise.all(net.nodes.map(async (_, i) => (await net.client(i, 15_000).state()).digest))
    expect(new Set(digests).size, JSON.stringify(digests)).toBe(1)

    // Every instance: at least one `exited` claim (a batch runs at least once), none failed, none live.
    // Two exited claims are two claims made while views differed, both done before the claim rule
    // acted: allowed by the promise, and printed.
    const claims = (await net.client(0, 15_000).tasks({ all: true })).tasks.filter((t) => ids.has(t.job))
    const grouped = byInstance(claims as unknown as ClaimRecord[])
    expect(grouped.size).toBe(JOBS)
    const wrong: string[] = []
    const twice: string[] = []
    for (const [id, list] of grouped) {
      const exited = list.filter((c) => c.state === 'exited').length
      const line = `${id}: ${list.map((c) => `${net.index(c.node)}:${c.state}:g${c.generation}`).join(' ')}`
      if (exited === 0 || list.some((c) => c.state === 'failed' || isLive(c))) wrong.push(line)
      else if (exited > 1) twice.push(line)
    }
    expect(wrong, `${wrong.length} instances not finished`).toEqual([])
    if (twice.length > 0) console.log(`200 jobs: ${twice.length} instances finished on two nodes:\n${twice.join('\n')}`)
    // At least once: every job's command ran. A second run by a duplicate claim (views differ for a
    // moment) is allowed, and printed; a run that no claim accounts for is not.
    const lines = readFileSync(runs, 'utf8').split('\n').filter((l) => l !== '')
    const count = new Map<string, number>()
    for (const l of lines) count.set(l, (count.get(l) ?? 0) + 1)
    expect(submitted.filter((s) => (count.get(s.name) ?? 0) === 0).map((s) => s.id)).toEqual([])
    // Nothing runs that the cluster does not know about: each run is a claim's start or restart.
    const unknown = submitted.flatMap((s) => {
      const known = (grouped.get(`${s.id}.0`) ?? []).reduce((n, c) => n + 1 + c.restarts, 0)
      const ran = count.get(s.name) ?? 0
      return ran > known ? [`${s.id} ran ${ran} times, ${known} known: ${(grouped.get(`${s.id}.0`) ?? []).map((c) => `${net.index(c.node)}:${c.state}:g${c.generation}`).join(' ')}`] : []
    })
    expect(unknown, `${unknown.length} jobs ran more often than their claims say`).toEqual([])
    const extra = lines.length - JOBS
    if (extra > 0) console.log(`200 jobs: ${extra} extra runs of ${[...count.values()].filter((n) => n > 1).length} jobs`)
  }, 240_000)

  it('the testnet stops with no task process left', async () => {
    await stopTestnet(dir)
    dir = ''
    await waitUntil('every task process to end', async () => marks.flatMap(markedPids), (p) => p.length === 0, 15_000)
  })
})
