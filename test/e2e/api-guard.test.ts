// A real node's API against a web page and against curious eyes: requests a
// browser would send for a page elsewhere are refused and change nothing (even
// signed by an admin: the guard stands on its own), the CLI still works, env
// values are shown only to the job's own user and admins, never to another user
// in any view or command, nor in any event (while the task itself gets them), and
// log follows are capped.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { UserKey } from '../../access/keys.ts'
import { connect, type JobView } from '../../cli/client.ts'
import { API_LIMITS } from '../../node/api.ts'
import type { TestnetNode } from '../../testnet/local/state.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { marker, markedPids } from '../helpers/jobs.ts'
import { adminKey, newUser, signedFetch, signedRawRequest } from '../helpers/signed.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'
import { waitUntil } from '../helpers/wait.ts'

const SECRET = 'hunter2'

let dir = ''
let node: TestnetNode
let api: URL
/** The testnet's admin; alice (submit) runs the job, bob (read) may read it but is not its user. */
let admin: UserKey
let bob: UserKey
let aliceKey = ''
let bobKey = ''
const mark = marker('api-guard')
/** Everything the event stream sent since the start. */
let events = ''
const eventsDone = new AbortController()
let eventsEnded: Promise<void> = Promise.resolve()

beforeAll(async () => {
  const net = await startTestnet('api-guard', 1)
  dir = net.dir
  node = net.state.nodes[0]!
  api = new URL(node.apiUrl)
  admin = adminKey(dir)
  aliceKey = join(dir, 'alice.key')
  bobKey = join(dir, 'bob.key')
  await newUser(node.apiUrl, admin, { name: 'alice', role: 'submit', namespaces: ['default'] }, aliceKey)
  bob = await newUser(node.apiUrl, admin, { name: 'bob', role: 'read', namespaces: ['default'] }, bobKey)
  // An admin's stream: it may read everything, and still no event carries an env value.
  const response = await signedFetch(admin, `${node.apiUrl}/v1/events`, { signal: eventsDone.signal })
  expect(response.status).toBe(200)
  eventsEnded = (async () => {
    const decoder = new TextDecoder()
    try {
      for await (const chunk of response.body!) events += decoder.decode(chunk as Uint8Array, { stream: true })
    } catch {
      // Aborted at the end of the tests.
    }
  })()
}, 60_000)
afterAll(async () => {
  eventsDone.abort()
  await eventsEnded
  await stopTestnet(dir)
  expect(markedPids(mark)).toEqual([])
}, 60_000)

const on = (): string[] => ['--api', node.apiUrl]

/** One request with exactly these headers (fetch would not let a test set Host), signed by `key` (the admin unless another is given) for the Host it sends. */
async function call (method: string, path: string, headers: Record<string, string> = {}, body?: string, key: UserKey = admin): Promise<{ status: number, body: string }> {
  return await signedRawRequest(key, { hostname: api.hostname, port: Number(api.port), host: api.host }, method, path, headers, body)
}

/** Opens a log follow of the job's task and gives the answer's status; the follow stays open until `controller` aborts. */
async function followStatus (controller: AbortController): Promise<number> {
  const response = await signedFetch(admin, `${node.apiUrl}/v1/tasks/${job}.0/logs?follow=1`, { signal: controller.signal })
  if (response.status !== 200) await response.body?.cancel()
  // Held until the follow is aborted: fetch cancels the body of a response the garbage collector takes,
  // which closes the connection and frees the slot (seen when the test process had collected garbage).
  else {
    open.add(response)
    controller.signal.addEventListener('abort', () => { open.delete(response) }, { once: true })
  }
  return response.status
}
const open = new Set<Response>()

async function jobIds (): Promise<string[]> {
  return (await connect(node.apiUrl).jobs({ all: true })).jobs.map((j) => j.id)
}

let job = ''

describe('a job with a secret in its env', () => {
  it('runs with the real value; its own user sees the values, and the CLI flow works as before', async () => {
    const run = await murmur([...on(), '--key', aliceKey, 'run', '--wait', '--json', '--name', 'secret', '--service', '--mem', '32M', '--cpu', '50m', '--env', `SECRET=${SECRET}`, '--env', 'PLAIN=visible',
      // The script makes the value without spelling it: the command and args are shown.
      '--', 'sh', '-c', 'test "$SECRET" = "hunter$((1 + 1))" && echo the task has its secret; exec sleep 600', mark], { timeoutMs: 45_000 })
    expect(run.code, run.stderr).toBe(0)
    const view = JSON.parse(run.stdout) as JobView
    job = view.id
    expect(view.submittedByUser).toBe('alice')
    expect(view.spec?.env).toEqual({ SECRET, PLAIN: 'visible' })
    await waitUntil('the task to say it has its secret', async () => (await murmur([...on(), '--key', aliceKey, 'logs', `${job}.0`])).stdout, (out) => out === 'the task has its secret\n', 20_000)
  })

  it('shows another user its env keys and never a value: every view, every command; no event carries one', async () => {
    const paths = ['/v1/jobs', '/v1/jobs?all=1', `/v1/jobs/${job}`, `/v1/jobs/${job}/history`, '/v1/tasks', '/v1/tasks?all=1', `/v1/tasks/${job}.0`,
      `/v1/tasks/${job}.0/explain`, '/v1/node/tasks', `/v1/node/tasks/${job}.0`, '/v1/status', '/v1/state', '/v1/state/nodes', '/v1/members', '/v1/node']
    for (const path of paths) {
      const answer = await call('GET', path, {}, undefined, bob)
      expect(answer.status, path).toBe(200)
      expect(answer.body, path).not.toContain(SECRET)
    }
    expect((await call('GET', `/v1/jobs/${job}`, {}, undefined, bob)).body).toContain('"SECRET":"(redacted)"')
    expect((await call('GET', `/v1/node/tasks/${job}.0`, {}, undefined, bob)).body).toContain('"SECRET":"(redacted)"')
    // An admin sees the values in the job's view, as its own user does.
    expect((await call('GET', `/v1/jobs/${job}`)).body).toContain(`"SECRET":"${SECRET}"`)

    const bobs = ['--key', bobKey]
    const status = await murmur([...on(), ...bobs, 'job', 'status', job])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/^env\s+SECRET=\(redacted\) PLAIN=\(redacted\)$/m)
    for (const args of [['job', 'status', job, '--json'], ['job', 'history', job, '--json'], ['job', 'list', '--json'], ['ps', '--all', '--json'], ['explain', `${job}.0`, '--json'], ['status', '--json']]) {
      const result = await murmur([...on(), ...bobs, ...args])
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(0)
      expect(result.stdout + result.stderr, args.join(' ')).not.toContain(SECRET)
    }
    await waitUntil('the job record in the event stream', async () => events, (text) => text.includes(`"id":"${job}"`) && text.includes('event: task'), 10_000)
    expect(events).toContain('"SECRET":"(redacted)"')
    expect(events).not.toContain(SECRET)
  })
})

describe('requests a web page could make', () => {
  it('a foreign Host is refused, streams included (DNS rebinding)', async () => {
    for (const path of ['/v1/jobs', `/v1/jobs/${job}`, '/v1/events', `/v1/tasks/${job}.0/logs?follow=1`]) {
      const answer = await call('GET', path, { host: `evil.example:${api.port}` })
      expect(answer.status, path).toBe(421)
      expect(JSON.parse(answer.body), path).toMatchObject({ error: { code: 'BAD_HOST' } })
    }
  })

  it('a stop or a leave from a foreign Origin is refused and does not happen', async () => {
    const stop = await call('POST', `/v1/jobs/${job}/stop`, { origin: 'http://evil.example' })
    expect(stop.status).toBe(403)
    expect(JSON.parse(stop.body)).toMatchObject({ error: { code: 'FOREIGN_ORIGIN' } })
    expect((await call('POST', '/v1/node/leave', { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' })).status).toBe(403)
    expect((await connect(node.apiUrl).job(job)).desired).toBe('running')
    expect((await connect(node.apiUrl).health()).ok).toBe(true)
  })

  it('a form post is refused: no leave, no job', async () => {
    const before = await jobIds()
    const leave = await call('POST', '/v1/node/leave', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' })
    expect(leave.status).toBe(415)
    expect(JSON.parse(leave.body)).toMatchObject({ error: { code: 'BAD_CONTENT_TYPE' } })
    // What fetch(…, { mode: 'no-cors', body: JSON.stringify(spec) }) sends: text/plain.
    const submit = await call('POST', '/v1/jobs', { 'content-type': 'text/plain;charset=UTF-8' }, JSON.stringify({ name: 'planted', command: 'true' }))
    expect(submit.status).toBe(415)
    expect(await jobIds()).toEqual(before)
    expect((await connect(node.apiUrl).health()).ok).toBe(true)
  })
})

describe('log follows', () => {
  it(`at most ${API_LIMITS.logFollowsMax} at once: 429 beyond, one line from the CLI; a follow abandoned frees its slot`, async () => {
    const follows: AbortController[] = []
    try {
      for (let i = 0; i < API_LIMITS.logFollowsMax; i++) {
        const controller = new AbortController()
        follows.push(controller)
        expect(await followStatus(controller)).toBe(200)
      }
      const over = await call('GET', `/v1/tasks/${job}.0/logs?follow=1`)
      expect(over.status).toBe(429)
      expect(JSON.parse(over.body)).toMatchObject({ error: { code: 'TOO_MANY_FOLLOWS' } })
      const cli = await murmur([...on(), 'logs', '-f', `${job}.0`])
      expect(cli.code).not.toBe(0)
      expect(userLines(cli.stderr)).toHaveLength(1)
      expect(userLines(cli.stderr)[0]).toMatch(/at most 64 log follows at once/)

      for (const f of follows.splice(0, 1)) f.abort()
      await waitUntil('a slot freed', async () => {
        const probe = new AbortController()
        const status = await followStatus(probe)
        probe.abort()
        return status
      }, (status) => status === 200, 10_000)
    } finally {
      for (const f of follows) f.abort()
    }
  })

  it('the job stops through the CLI', async () => {
    const stop = await murmur([...on(), 'job', 'stop', job])
    expect(stop.code, stop.stderr).toBe(0)
    await waitUntil('the task processes to end', async () => markedPids(mark), (pids) => pids.length === 0, 20_000)
  })
})
