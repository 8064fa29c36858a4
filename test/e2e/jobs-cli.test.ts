// The job commands of the real CLI against a real 3-node testnet: what a user
// types and sees — the job id at once, `--wait` returning a batch's exit code,
// a spec file, tables and --json, logs from another node, and one-line refusals
// with exit code 2.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type JobView, type PoolStatus, type TaskView } from '../../cli/client.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { marker, markedPids } from '../helpers/jobs.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

let dir = ''
let specDir = ''
let nodes: TestnetNode[] = []
const mark = marker('cli')

beforeAll(async () => {
  ({ dir, state: { nodes } } = await startTestnet('jobs-cli', 3))
  specDir = await mkdtemp(join(tmpdir(), 'murmur-jobs-cli-spec-'))
}, 60_000)
afterAll(async () => {
  await stopTestnet(dir)
  await rm(specDir, { recursive: true, force: true })
  expect(markedPids(mark)).toEqual([])
}, 60_000)

const on = (i: number): string[] => ['--api', nodes[i]!.apiUrl]

describe('murmur run and job commands', () => {
  it('--wait returns a batch job\'s exit code, after printing its id at once', async () => {
    const failed = await murmur([...on(0), 'run', '--wait', '--name', 'three', '--restart-attempts', '0', '--', 'sh', '-c', 'echo out; exit 3', mark], { timeoutMs: 45_000 })
    expect(failed.code).toBe(3)
    const id = failed.stdout.trim().split('\n')[0]!
    expect(id).toMatch(/^three-[0-9a-f]{8}$/)
    expect(userLines(failed.stderr).join('\n')).toMatch(/failed \(exit code 3\)/)

    const ok = await murmur([...on(1), 'run', '--wait', '--json', '--name', 'fine', '--', 'sh', '-c', 'echo fine', mark], { timeoutMs: 45_000 })
    expect(ok.code).toBe(0)
    const job = JSON.parse(ok.stdout) as JobView
    expect(job.status).toBe('completed')
    expect(job.exitCode).toBe(0)
  })

  it('runs a service from a YAML file, lists it, shows it in ps, reads its logs through another node, and stops it', async () => {
    const file = join(specDir, 'web.yaml')
    await writeFile(file, [
      'name: web',
      'type: service',
      'command: sh',
      `args: ["-c", "echo started $MURMUR_TASK_ID; exec sleep 600", "${mark}"]`,
      'count: 2',
      'memory: 32M',
      'cpu: 50m',
      '',
    ].join('\n'))
    const run = await murmur([...on(2), 'job', 'run', file, '--wait'], { timeoutMs: 45_000 })
    expect(run.code).toBe(0)
    const id = run.stdout.trim()
    expect(id).toMatch(/^web-[0-9a-f]{8}$/)

    const list = await murmur([...on(0), 'job', 'list'])
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(new RegExp(`${id}\\s+web\\s+service\\s+running\\s+2/2 running`))

    const ps = await murmur([...on(1), 'ps', '--job', 'web', '--json'])
    const tasks = (JSON.parse(ps.stdout) as { tasks: TaskView[] }).tasks
    expect(tasks.map((t) => [t.id, t.state])).toEqual([[`${id}.0`, 'running'], [`${id}.1`, 'running']])

    // Read each instance's logs through a node that does not run it, when there is one.
    for (const t of tasks) {
      const reader = nodes.findIndex((n) => n.peerId !== t.node)
      const logs = await murmur([...on(reader), 'logs', t.id])
      expect(logs.code).toBe(0)
      expect(logs.stdout).toBe(`started ${t.id}\n`)
    }

    const status = await murmur([...on(0), 'status', '--json'])
    const pool = JSON.parse(status.stdout) as PoolStatus
    expect(pool.nodes.alive).toBe(3)
    expect(pool.tasks.running).toBeGreaterThanOrEqual(2)

    const scale = await murmur([...on(2), 'job', 'scale', 'web', '3'])
    expect(scale.code, scale.stderr).toBe(0)
    expect(scale.stdout).toMatch(new RegExp(`${id} now wants 3 instances`))
    await waitUntil('a third instance running', async () => await connect(nodes[0]!.apiUrl).job(id), (j) => j.instances.filter((i) => i.state === 'running').length === 3, 20_000)

    const stop = await murmur([...on(1), 'job', 'stop', 'web'])
    expect(stop.code).toBe(0)
    expect(stop.stdout).toMatch(new RegExp(`stopping ${id}`))
    await waitUntil('the service to stop', async () => await connect(nodes[0]!.apiUrl).job(id), (j) => j.status === 'stopped', 20_000)
    await waitUntil('the service processes to end', async () => markedPids(mark), (pids) => pids.length === 0, 20_000)
  })

  it('refuses bad input with one line and exit code 2', async () => {
    const cases: Array<{ args: string[], message: RegExp }> = [
      { args: ['run', '--count', '0', '--', 'true'], message: /^murmur: count: run at least 1 instance$/ },
      { args: ['run', '--cpu', '-1', '--', 'true'], message: /^murmur: cpu: / },
      { args: ['run', '--cpu', '64', '--', 'true'], message: /^murmur: no node could ever run this job: it asks for cpu 64000m/ },
      { args: ['run', '--cron', 'not a schedule', '--', 'true'], message: /^murmur: schedule: 'not a schedule' is not a cron schedule/ },
      { args: ['job', 'status', 'no-such-job'], message: /^murmur: no job 'no-such-job'/ },
      { args: ['logs', 'no-such-task.0'], message: /^murmur: no task 'no-such-task.0'/ },
      { args: ['job', 'scale', 'no-such-job', 'many'], message: /^murmur: <count> must be a whole number such as 3, got 'many'$/ },
      { args: ['job', 'run', join(specDir, 'missing.yaml')], message: /missing\.yaml/ },
    ]
    for (const c of cases) {
      const result = await murmur([...on(0), ...c.args])
      const lines = userLines(result.stderr)
      expect(result.code, c.args.join(' ')).toBe(2)
      expect(lines, c.args.join(' ')).toHaveLength(1)
      expect(lines[0], c.args.join(' ')).toMatch(c.message)
    }
    const file = join(specDir, 'bogus.json')
    await writeFile(file, JSON.stringify({ name: 'bogus', command: 'true', replicas: 3 }))
    const bogus = await murmur([...on(0), 'job', 'run', file])
    expect(bogus.code).toBe(2)
    expect(userLines(bogus.stderr)).toEqual(["murmur: unknown field 'replicas'; check the spelling (the fields are listed in README.md, \"Job spec\")"])
  })
})
