// The HTTP API against what a web page can make a browser send: foreign Host
// headers (DNS rebinding), foreign origins, form posts; the cap on log follows;
// env values kept out of the executor's view. An API in this process on
// 127.0.0.1 with a backend that records what it was asked.

import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { API_LIMITS, type ApiBackend, createApi } from '../../node/api.ts'
import type { AttemptInfo } from '../../node/executor/types.ts'
import { rawRequest } from '../helpers/http.ts'
import { waitUntil } from '../helpers/wait.ts'

interface Answer { status: number, body: string }

let port: number
let app: ReturnType<typeof createApi>
let leaves = 0
/** Follows the backend holds open now, by their signals. */
const follows = new Set<AbortSignal>()

const attempt: AttemptInfo = {
  id: 'secret.0', job: 'secret', phase: 'running', pid: 1, startedAt: 1, finishedAt: null, exit: null, usage: null, cgroup: null, dir: '/tmp/x', adopted: false,
  spec: { id: 'secret.0', job: 'secret', command: 'sleep', args: ['60'], env: { SECRET: 'hunter2', MURMUR_TASK_ID: 'secret.0' }, cpuMillis: 100, memoryBytes: 1 << 26 },
}

function backend (): ApiBackend {
  const unused = (): never => { throw new Error('not used by this test') }
  return {
    id: '12D3KooWTest',
    self: unused,
    members: () => [],
    onMemberEvent: () => () => {},
    leave: () => { leaves++ },
    state: unused,
    stateNodes: () => [],
    compareState: unused,
    onStateChange: () => () => {},
    updateLabels: async (set) => set,
    tasks: () => [attempt],
    auth: null,
    users: unused,
    namespaceOfJob: () => 'default',
    readTaskLogs: unused,
    // A quiet task: no bytes until the client goes away.
    followTaskLogs: (_id, _stream, opts) => ({
      async * [Symbol.asyncIterator] () {
        follows.add(opts.signal)
        try {
          await new Promise((resolve) => { opts.signal.addEventListener('abort', resolve, { once: true }) })
        } finally {
          follows.delete(opts.signal)
        }
        yield * []
      },
    }),
    jobs: unused,
    status: unused,
    jobRecord: () => undefined,
    taskRecords: () => [],
  }
}

/** One request with exactly these headers (fetch would not let a test set Host). */
async function call (method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return await rawRequest({ hostname: '127.0.0.1', port, host: `127.0.0.1:${port}` }, method, path, headers, body, 5_000)
}

/** One request as bytes on a socket: for what an HTTP client would not send. */
async function rawCall (bytes: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => { socket.write(bytes) })
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => { text += d })
    socket.on('error', reject)
    socket.on('close', () => {
      const [head = '', body = ''] = text.split('\r\n\r\n')
      resolve({ status: Number(head.split(' ')[1]), body })
    })
  })
}

/** A log follow whose answer's headers came; `close` abandons it. */
async function openFollow (): Promise<{ status: number, body: () => Promise<string>, close: () => void }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/node/tasks/secret.0/logs?follow=1', headers: { host: `127.0.0.1:${port}` } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      const ended = new Promise<string>((resolve) => { res.on('end', () => { resolve(text) }) })
      resolve({ status: res.statusCode ?? 0, body: async () => await ended, close: () => { req.destroy() } })
    })
    req.on('error', (err) => { if (!req.destroyed) reject(err) })
    req.end()
  })
}

beforeAll(async () => {
  app = createApi(backend(), pino({ level: 'silent' }))
  await app.listen({ host: '127.0.0.1', port: 0 })
  port = (app.server.address() as { port: number }).port
})
afterAll(async () => { await app.close() })

describe('the Host header', () => {
  it('loopback names, with or without the port, are served', async () => {
    for (const host of ['localhost', `localhost:${port}`, '127.0.0.1', `127.0.0.1:${port}`, '127.5.6.7:1', '[::1]', `[::1]:${port}`, 'LOCALHOST']) {
      expect((await call('GET', '/v1/health', { host })).status, host).toBe(200)
    }
  })

  it('any other name is refused with one line (DNS rebinding)', async () => {
    for (const host of ['evil.example', `evil.example:${port}`, 'localhost.evil.example', '127.0.0.1.evil.example', '127.0.0.256', '10.0.0.1', '0.0.0.0', 'localhost:x']) {
      const answer = await call('GET', '/v1/health', { host })
      expect(answer.status, host).toBe(421)
      const error = (JSON.parse(answer.body) as { error: { code: string, message: string } }).error
      expect(error.code).toBe('BAD_HOST')
      expect(error.message).not.toContain('\n')
    }
  })

  it('a request without Host, or with an empty one, is refused in the same format', async () => {
    for (const head of ['GET /v1/health HTTP/1.1', 'GET /v1/health HTTP/1.1\r\nHost: ', 'GET /v1/health HTTP/1.0']) {
      const answer = await rawCall(`${head}\r\nConnection: close\r\n\r\n`)
      expect(answer.status, head).toBe(421)
      expect(JSON.parse(answer.body), head).toMatchObject({ error: { code: 'BAD_HOST' } })
    }
  })

  it('guards the streams too: a log follow and the event stream', async () => {
    expect((await call('GET', '/v1/events', { host: 'evil.example' })).status).toBe(421)
    expect((await call('GET', '/v1/node/tasks/secret.0/logs?follow=1', { host: 'evil.example' })).status).toBe(421)
    expect(follows.size).toBe(0)
  })

  it("the API's own address is a name too, when it has one", async () => {
    const own = createApi({ ...backend(), apiHost: '192.0.2.7' }, pino({ level: 'silent' }))
    await own.listen({ host: '127.0.0.1', port: 0 })
    try {
      const ownPort = (own.server.address() as { port: number }).port
      const get = async (host: string): Promise<number> => await new Promise((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: ownPort, path: '/v1/health', headers: { host } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
      })
      expect(await get(`192.0.2.7:${ownPort}`)).toBe(200)
      expect(await get('localhost')).toBe(200)
      expect(await get('192.0.2.8')).toBe(421)
    } finally {
      await own.close()
    }
  })
})

describe('requests from web pages', () => {
  it('a POST with a foreign Origin is refused, and nothing happens', async () => {
    const before = leaves
    for (const origin of ['http://evil.example', 'null', `http://evil.example:${port}`, 'http://127.0.0.1:1', `https://127.0.0.1:${port}`]) {
      const answer = await call('POST', '/v1/node/leave', { origin })
      expect(answer.status, origin).toBe(403)
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'FOREIGN_ORIGIN' } })
    }
    expect(leaves).toBe(before)
  })

  it('a browser request marked cross-site or same-site is refused, whatever the method', async () => {
    const before = leaves
    expect((await call('POST', '/v1/node/leave', { 'sec-fetch-site': 'cross-site' })).status).toBe(403)
    expect((await call('POST', '/v1/node/leave', { 'sec-fetch-site': 'same-site' })).status).toBe(403)
    expect((await call('GET', '/v1/node/tasks', { 'sec-fetch-site': 'cross-site' })).status).toBe(403)
    expect((await call('GET', '/v1/node/tasks', { origin: 'http://evil.example' })).status).toBe(403)
    expect(leaves).toBe(before)
  })

  it('a form post is refused, with a body or without one', async () => {
    const before = leaves
    for (const type of ['application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain']) {
      const empty = await call('POST', '/v1/node/leave', { 'content-type': type, 'content-length': '0' })
      expect(empty.status, type).toBe(415)
      expect(JSON.parse(empty.body)).toMatchObject({ error: { code: 'BAD_CONTENT_TYPE' } })
      expect((await call('POST', '/v1/node/leave', { 'content-type': type }, 'a=1')).status, type).toBe(415)
    }
    expect((await call('PATCH', '/v1/node/labels', {}, '{"set":{"a":"1"}}')).status).toBe(415)
    expect(leaves).toBe(before)
  })

  it('what programs send passes: no Origin, JSON or no body; the API\'s own origin too', async () => {
    const before = leaves
    expect((await call('POST', '/v1/node/leave')).status).toBe(202)
    expect((await call('POST', '/v1/node/leave', { 'content-length': '0' })).status).toBe(202)
    expect((await call('POST', '/v1/node/leave', { origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' })).status).toBe(202)
    expect((await call('PATCH', '/v1/node/labels', { 'content-type': 'application/json; charset=utf-8' }, '{"set":{"a":"1"}}')).status).toBe(200)
    expect(leaves).toBe(before + 3)
  })
})

describe('the executor view', () => {
  it('shows env keys, never their values', async () => {
    const list = await call('GET', '/v1/node/tasks')
    const one = await call('GET', '/v1/node/tasks/secret.0')
    for (const answer of [list, one]) {
      expect(answer.status).toBe(200)
      expect(answer.body).not.toContain('hunter2')
      expect(answer.body).toContain('"SECRET":"(redacted)"')
    }
    expect(attempt.spec.env.SECRET).toBe('hunter2')
  })
})

describe('log follows', () => {
  it(`at most ${API_LIMITS.logFollowsMax} at once: 429 beyond, and an abandoned follow frees its slot`, async () => {
    const open = []
    for (let i = 0; i < API_LIMITS.logFollowsMax; i++) open.push(await openFollow())
    expect(open.every((f) => f.status === 200)).toBe(true)
    await waitUntil('every follow reached the backend', async () => follows.size, (n) => n === API_LIMITS.logFollowsMax)
    const over = await call('GET', '/v1/node/tasks/secret.0/logs?follow=1')
    expect(over.status).toBe(429)
    expect(JSON.parse(over.body)).toMatchObject({ error: { code: 'TOO_MANY_FOLLOWS' } })
    // Clients that go away without a word: their slots come back, and the backend's follows end.
    for (const f of open.splice(0, 2)) f.close()
    await waitUntil('the abandoned follows ended', async () => follows.size, (n) => n === API_LIMITS.logFollowsMax - 2)
    const again = await openFollow()
    expect(again.status).toBe(200)
    again.close()
    for (const f of open) f.close()
    await waitUntil('every follow ended', async () => follows.size, (n) => n === 0)
  })
})
