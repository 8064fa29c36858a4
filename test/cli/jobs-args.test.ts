// The pure parts of the job commands: the job input that `murmur run` builds from
// its flags, the job files `murmur job run` reads, and what `--wait` decides and
// shows. No node runs here.

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { InstanceView, JobView } from '../../cli/client.ts'
import {
  InputError, buildJobInput, defaultJobName, instancesText, parseConstraintArgs, parseEnvArgs, parseJobText,
  progressText, readJobFile, renderJob, shortNode, waitOutcome,
} from '../../cli/jobs.ts'
import { normalizeJob } from '../../node/jobs/spec.ts'

describe('defaultJobName', () => {
  it.each([
    ['python', 'python'],
    ['/usr/bin/Python3.11', 'python3.11'],
    ['./My Script.sh', 'my-script.sh'],
    ['bin/', 'bin'],
    ['__init__', 'init'],
    ['-x-', 'x'],
    ['日本', 'job'],
    ['.', 'job'],
    ['a'.repeat(80) + '-b', 'a'.repeat(63)],
  ])('%s → %s', (command, name) => {
    expect(defaultJobName(command)).toBe(name)
    expect(name).toMatch(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/)
  })
})

describe('buildJobInput', () => {
  it('builds a batch job with only the fields given, which the node accepts', () => {
    const input = buildJobInput(['python', 'app.py', '--port', '80'], {})
    expect(input).toEqual({ name: 'python', type: 'batch', command: 'python', args: ['app.py', '--port', '80'] })
    expect(normalizeJob(input).type).toBe('batch')
  })

  it('passes units through as written and turns counts into numbers', () => {
    const input = buildJobInput(['/bin/sleep', '60'], {
      name: 'nap', cpu: '0.5', mem: '256M', count: '3', grace: '10s', restartAttempts: '5', partition: 'both', workdir: 'data',
    })
    expect(input).toEqual({
      name: 'nap', type: 'batch', command: '/bin/sleep', args: ['60'],
      cpu: '0.5', memory: '256M', count: 3, grace: '10s', restart: { attempts: 5 }, partition: 'both', workdir: 'data',
    })
    const { spec } = normalizeJob(input)
    expect(spec).toMatchObject({ cpuMillis: 500, memoryBytes: 256 * 2 ** 20, count: 3, graceMs: 10_000, partition: 'both' })
  })

  it('makes a service with --service and a cron job with --cron', () => {
    expect(buildJobInput(['nginx'], { service: true }).type).toBe('service')
    const cron = buildJobInput(['backup'], { cron: '*/5 * * * *', timezone: 'Europe/Berlin' })
    expect(cron).toMatchObject({ type: 'cron', schedule: '*/5 * * * *', timezone: 'Europe/Berlin' })
    expect(normalizeJob(cron).spec.cron).toMatchObject({ schedule: '*/5 * * * *', timezone: 'Europe/Berlin' })
  })

  it('refuses --service with --cron, a missing command and a count that is not a number', () => {
    expect(() => buildJobInput(['x'], { service: true, cron: '* * * * *' })).toThrow(/--service and --cron/)
    expect(() => buildJobInput([], {})).toThrow(/name the program/)
    expect(() => buildJobInput(['x'], { count: 'three' })).toThrow(/--count must be a whole number, got 'three'/)
    expect(() => buildJobInput(['x'], { restartAttempts: '-1' })).toThrow(/--restart-attempts/)
    try {
      buildJobInput(['x'], { count: '1.5' })
      expect.unreachable()
    } catch (err) {
      // report() in bin/murmur.ts turns these into exit code 2.
      expect(err).toBeInstanceOf(InputError)
      expect(err).toMatchObject({ name: 'InputError', exitCode: 2 })
    }
  })

  it('carries env and constraints', () => {
    const input = buildJobInput(['x'], { env: ['A=1', 'B=x=y'], constraint: ['zone=eu', 'disk!=hdd'] })
    expect(input.env).toEqual({ A: '1', B: 'x=y' })
    expect(input.constraints).toEqual([{ label: 'zone', op: 'eq', value: 'eu' }, { label: 'disk', op: 'ne', value: 'hdd' }])
    expect(normalizeJob(input).spec.constraints).toHaveLength(2)
  })
})

describe('parseEnvArgs', () => {
  it('splits at the first = and allows empty values; the last of a name wins', () => {
    expect(parseEnvArgs(['A=1', 'EMPTY=', 'URL=a=b&c=d', 'A=2'])).toEqual({ A: '2', EMPTY: '', URL: 'a=b&c=d' })
  })

  it("says how to fix a pair without '='", () => {
    expect(() => parseEnvArgs(['FOO'])).toThrow("--env 'FOO' has no '=': write --env FOO=value (or FOO= for an empty value)")
    expect(() => parseEnvArgs(['=x'])).toThrow(/no name before '='/)
  })
})

describe('parseConstraintArgs', () => {
  it('reads label=value and label!=value, values may be empty or hold =', () => {
    expect(parseConstraintArgs(['zone=eu-1', 'gpu!=', 'k=a=b'])).toEqual([
      { label: 'zone', op: 'eq', value: 'eu-1' },
      { label: 'gpu', op: 'ne', value: '' },
      { label: 'k', op: 'eq', value: 'a=b' },
    ])
  })

  it('refuses anything else', () => {
    for (const bad of ['zone', '=eu', '!=eu', 'zone<eu']) {
      expect(() => parseConstraintArgs([bad])).toThrow(`--constraint '${bad}' is neither label=value nor label!=value`)
    }
  })
})

describe('job files', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'murmur-jobs-args-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  const write = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name)
    await writeFile(path, text)
    return path
  }

  it('reads YAML and submits it as is', async () => {
    const path = await write('web.yaml', 'name: web\ntype: service\ncommand: python\nargs: [app.py]\ncpu: 0.5\nmemory: 256M\nenv:\n  PORT: "80"\n')
    const spec = await readJobFile(path)
    expect(spec).toEqual({ name: 'web', type: 'service', command: 'python', args: ['app.py'], cpu: 0.5, memory: '256M', env: { PORT: '80' } })
    expect(normalizeJob(spec).spec.cpuMillis).toBe(500)
  })

  it('reads JSON by its extension, and .yml as YAML', async () => {
    expect(await readJobFile(await write('a.json', '{"name":"a","command":"true"}'))).toEqual({ name: 'a', command: 'true' })
    expect(await readJobFile(await write('b.yml', 'name: b\ncommand: "true"\n'))).toEqual({ name: 'b', command: 'true' })
  })

  it('reads stdin for -', async () => {
    expect(await readJobFile('-', Readable.from([Buffer.from('name: s\n'), Buffer.from('command: ls\n')]))).toEqual({ name: 's', command: 'ls' })
  })

  it('says which file is malformed and why, in one line', async () => {
    const yaml = await write('bad.yaml', 'name: web\ncommand: [python\n')
    await expect(readJobFile(yaml)).rejects.toThrow(new RegExp(`^${yaml}: not valid YAML: .*line \\d+`))
    const json = await write('bad.json', '{"name": "web",}')
    await expect(readJobFile(json)).rejects.toThrow(`${json}: not valid JSON: `)
    const duplicate = await write('dup.yaml', 'name: a\nname: b\ncommand: ls\n')
    await expect(readJobFile(duplicate)).rejects.toThrow(/not valid YAML: Map keys must be unique/)
    for (const err of await Promise.all([yaml, json].map(async (f) => await readJobFile(f).catch((e: unknown) => e)))) {
      expect(err).toMatchObject({ name: 'InputError', exitCode: 2 })
      expect((err as Error).message).not.toContain('\n')
    }
  })

  it('refuses a file that is missing, a directory, empty, or not a mapping', async () => {
    await expect(readJobFile(join(dir, 'missing.yaml'))).rejects.toThrow(`${join(dir, 'missing.yaml')}: no such file`)
    await mkdir(join(dir, 'sub'))
    await expect(readJobFile(join(dir, 'sub'))).rejects.toThrow(/is a directory/)
    await expect(readJobFile(await write('empty.yaml', '# nothing\n'))).rejects.toThrow(/is empty/)
    await expect(readJobFile(await write('list.yaml', '- name: a\n'))).rejects.toThrow(/holds a list; a job spec is a mapping/)
    expect(() => parseJobText('42', 'n.json', 'json')).toThrow('n.json: holds a number; a job spec is a mapping with at least name and command')
  })

  it('refuses a file larger than the API takes', async () => {
    const path = await write('big.yaml', `name: big\ncommand: x\n# ${'x'.repeat(1_100_000)}\n`)
    await expect(readJobFile(path)).rejects.toThrow(/larger than 1 MiB/)
  })
})

describe('--wait', () => {
  const instance = (id: string, state: InstanceView['state'], more: Partial<InstanceView> = {}): InstanceView => ({
    id, node: state === 'pending' ? null : '12D3KooWnodeAAAAabcdefgh', state, since: 0, startedAt: null, finishedAt: null,
    restarts: 0, exit: null, pending: null, tick: null, ...more,
  })
  const job = (more: Partial<JobView>): JobView => ({
    id: 'web-1a2b3c4d', name: 'web', type: 'service', desired: 'running', status: 'pending', version: 1, submittedAt: 0,
    submittedBy: '12D3KooWsubmitter', submittedByUser: null, namespace: 'default', finishedAt: null, spec: null, counts: {}, instances: [], nextRun: null, exitCode: null, ...more,
  })

  it('shows running of the count, then the rest with the first reason', () => {
    const view = job({
      instances: [
        instance('web-1a2b3c4d.0', 'running'),
        instance('web-1a2b3c4d.1', 'running'),
        instance('web-1a2b3c4d.2', 'pending', { pending: 'no node has 256 MiB memory free' }),
      ],
    })
    expect(progressText(view)).toBe('web: 2/3 running, 1 pending (no node has 256 MiB memory free)')
    const looping = job({ instances: [instance('web-1a2b3c4d.0', 'restarting', { restarts: 4, exit: { code: 1, signal: null, reason: 'exited with code 1' } })] })
    expect(progressText(looping)).toBe('web: 0/1 running, 1 restarting (exited with code 1; 4 restarts)')
  })

  it('is done for a service when every instance runs', () => {
    expect(waitOutcome(job({ instances: [instance('a.0', 'running'), instance('a.1', 'starting')] }))).toBeNull()
    expect(waitOutcome(job({ instances: [instance('a.0', 'running'), instance('a.1', 'running')] }))).toMatchObject({ code: 0 })
  })

  it('gives up on a service in a crash loop, not before its third restart', () => {
    const exit = { code: 1, signal: null, reason: 'exited with code 1' }
    expect(waitOutcome(job({ instances: [instance('a.0', 'running'), instance('a.1', 'restarting', { restarts: 2, exit })] }))).toBeNull()
    expect(waitOutcome(job({ instances: [instance('a.0', 'running'), instance('a.1', 'restarting', { restarts: 3, exit })] })))
      .toEqual({ code: 1, message: expect.stringMatching(/^a\.1 is in a crash loop \(3 restarts, last: exited with code 1\)/) })
  })

  it('ends a batch with its exit code, a stopped job with 1, a cron job at once', () => {
    expect(waitOutcome(job({ type: 'batch', status: 'running' }))).toBeNull()
    expect(waitOutcome(job({ type: 'batch', status: 'completed', exitCode: 0 }))).toMatchObject({ code: 0 })
    expect(waitOutcome(job({ type: 'batch', status: 'failed', exitCode: 3 }))).toMatchObject({ code: 3 })
    expect(waitOutcome(job({ type: 'batch', status: 'failed', exitCode: null }))).toMatchObject({ code: 1 })
    expect(waitOutcome(job({ status: 'stopped', desired: 'stopped' }))).toMatchObject({ code: 1, message: expect.stringMatching(/stopped/) })
    expect(waitOutcome(job({ type: 'cron', status: 'scheduled' }))).toMatchObject({ code: 0 })
  })

  it('shows crash loops and pending reasons in job status', () => {
    const text = renderJob(job({
      status: 'degraded',
      instances: [
        instance('web-1a2b3c4d.0', 'restarting', { restarts: 7, exit: { code: 1, signal: null, reason: 'exited with code 1' } }),
        instance('web-1a2b3c4d.1', 'pending', { pending: 'no node has 256 MiB memory free' }),
      ],
    }), 5_000)
    expect(text).toMatch(/web-1a2b3c4d\.0\s+abcdefgh\s+restarting\s+5\.0s ago\s+7\s+exited with code 1/)
    expect(text).toMatch(/web-1a2b3c4d\.1\s+-\s+pending\s+5\.0s ago\s+0\s+no node has 256 MiB memory free/)
  })

  it('abbreviates nodes and counts instances', () => {
    expect(shortNode('12D3KooWabcdefgh12345678')).toBe('12345678')
    expect(shortNode(null)).toBe('-')
    expect(instancesText({ running: 3 }, 3)).toBe('3/3 running')
    expect(instancesText({ exited: 2, pending: 1, running: 0 }, 3)).toBe('0/3 running, 1 pending, 2 exited')
  })
})
