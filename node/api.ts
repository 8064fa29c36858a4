// The node's HTTP API, versioned under /v1/: JSON in and out, errors as
// { error: { code, message } }, and a server-sent-events stream of cluster events.

import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { Logger } from 'pino'
import { z } from 'zod'
import { type StateChange, StateError } from '../crdt/state.ts'
import type { NodeRecord } from '../crdt/schema.ts'
import type { Member, MemberEvent } from '../membership/types.ts'
import { labelKeyProblem } from './config.ts'
import { InputError, MurmurError } from './errors.ts'
import { type FaultRules, type FaultsView, parseFaultRules } from './faults.ts'
import type { StateInfo } from './state.ts'
import type { LogChunk, LogStream } from './executor/logs.ts'
import type { TaskUser } from './executor/executor.ts'
import type { Isolation, AttemptInfo } from './executor/types.ts'
import { type JobService, redactAttempt, redactJobRecord } from './jobs/service.ts'
import { NAMESPACE_RE } from '../access/statements.ts'
import { permits } from '../access/verify.ts'
import type { PoolStatus } from './jobs/types.ts'
import type { JobRecord, ClaimRecord } from '../crdt/schema.ts'
import type { LogsAnswer } from './rpc.ts'
import { type Caller, RequestAuth } from './auth.ts'
import type { UsersBackend } from './users.ts'

/** What the API serves; node.ts provides it. */
export interface ApiBackend {
  /** This node's peer id (cheap, for endpoints polled often). */
  id: string
  /**
   * The address the API listens on (`--api-host`): requests may name it in their
   * Host header besides the loopback names. Default: the loopback names only.
   */
  apiHost?: string | undefined
  self: () => NodeInfo
  members: () => Member[]
  /** Subscribe to member events; returns the unsubscribe function. */
  onMemberEvent: (listener: (event: MemberEvent) => void) => () => void
  leave: () => void
  state: () => StateInfo
  /** The node records of the shared state. */
  stateNodes: () => NodeRecord[]
  compareState: (peer: string) => Promise<StateComparison>
  onStateChange: (listener: (change: StateChange) => void) => () => void
  /** Sets and removes labels of this node; resolves with all its labels once stored. */
  updateLabels: (set: Record<string, string>, remove: string[]) => Promise<Record<string, string>>
  /** The tasks this node runs or ran (its executor's view). */
  tasks: () => AttemptInfo[]
  readTaskLogs: (id: string, stream: LogStream, opts: { offset?: number | undefined, length?: number | undefined, tail?: number | undefined, signal: AbortSignal }) => Promise<LogChunk>
  followTaskLogs: (id: string, stream: LogStream, opts: { offset?: number | undefined, tail?: number | undefined, signal: AbortSignal }) => AsyncIterable<Buffer>
  /** The jobs and tasks of the cluster (throws 503 while the node starts). */
  jobs: () => JobService
  status: () => Promise<PoolStatus>
  /** The records behind a state change, for the event stream. */
  jobRecord: (id: string) => JobRecord | undefined
  taskRecords: (id: string) => ClaimRecord[]
  /** Checks who signed each request; null on a node without users (no root key: every caller may do everything). */
  auth: RequestAuth | null
  /** Users, namespaces and quotas (the /v1/users and /v1/namespaces routes). */
  users: () => UsersBackend
  /** The namespace of a job, if this node knows the job (for filtering what a caller may read). */
  namespaceOfJob: (job: string) => string | undefined
  /** Testnet fault rules; only a node started with --fault-injection has them (and the /v1/admin routes). */
  faults?: {
    get: () => FaultsView
    /** Replaces every rule; throws InputError for a rule the node cannot take. */
    set: (rules: FaultRules) => FaultsView
  } | undefined
}

const tasksQuery = z.object({
  namespace: z.string().min(1).max(63).optional(),
  job: z.string().min(1).max(256).optional(),
  node: z.string().min(1).max(128).optional(),
  all: z.enum(['0', '1', 'true', 'false']).optional(),
}).strict()

const namespaceParam = z.string().refine((ns) => ns === '*' || NAMESPACE_RE.test(ns), "a namespace is a DNS label (a-z, 0-9, '-'), or '*' for every namespace you may read")
const jobsQuery = z.object({ all: z.enum(['0', '1', 'true', 'false']).optional(), namespace: namespaceParam.optional() }).strict()
const nsQuery = z.object({ namespace: namespaceParam.optional() }).strict()

const logsQuery = z.object({
  stream: z.enum(['stdout', 'stderr']).default('stdout'),
  offset: z.coerce.number().int().nonnegative().optional(),
  length: z.coerce.number().int().positive().optional(),
  tail: z.coerce.number().int().nonnegative().optional(),
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
}).strict().refine((q) => q.offset === undefined || q.tail === undefined, 'give offset or tail, not both')

export interface StateComparison {
  peer: string
  equal: boolean
  local: { stateVector: StateInfo['stateVector'], digest: string }
  remote: { stateVector: StateInfo['stateVector'], digest: string }
}

const labelsBody = z.object({
  set: z.record(z.string(), z.string().max(255)).default({}),
  remove: z.array(z.string()).max(64).default([]),
}).strict()

export interface NodeInfo {
  id: string
  addrs: string[]
  apiUrl: string
  profile: string
  startedAt: string
  /** Lifeguard local health: 0 healthy, higher means this node doubts itself. */
  health: number
  membership: Record<string, unknown>
  /** How this node contains its tasks; kind `none` means no limits at all. */
  isolation: Isolation
  /** Who its tasks run as: a uid of their own each when the node is root, else the node's own user. */
  taskUser: TaskUser
  /** True when the node runs without a cluster key (--insecure-open-cluster). */
  openCluster: boolean
  /** What the tasks running here hold of the node's capacity. */
  tasks: { cpuMillis: number, memoryBytes: number, tasks: number }
  /** The reconcile loop: passes run, claims, starts, stops and restarts made, the last pass's duration. */
  reconcile: { passes: number, claims: number, starts: number, stops: number, restarts: number, lastPassMs: number, majority: boolean }
  process: { pid: number, rssBytes: number, heapUsedBytes: number, uptimeMs: number }
}

/** A member as the API shows it: with how long ago it was last heard from. */
export interface MemberView extends Member {
  lastHeardAgoMs: number | null
  stateAgeMs: number
  self: boolean
}

export interface MembersResponse {
  self: string
  members: MemberView[]
}

export const API_LIMITS = Object.freeze({
  /** Requests carry small JSON documents; nothing larger is needed. */
  bodyBytesMax: 1_048_576,
  /** Event streams open at once; each holds a socket. */
  eventStreamsMax: 64,
  /** Log follows open at once (a node's own tasks' and the cluster's); each holds a socket, and a remote one a libp2p stream. */
  logFollowsMax: 64,
  /** A refused request is logged at most this often per reason: a hostile web page may send thousands. */
  refusalLogIntervalMs: 10_000,
  /** An idle event stream gets a comment line this often, so proxies keep it open. */
  eventKeepAliveMs: 15_000,
  /** Unsent event bytes one stream may hold before its client is cut off as too slow. */
  eventBufferBytesMax: 1_048_576,
})

/** Bodies as sent, and the callers of requests, while the requests last. */
const rawBodies = new WeakMap<FastifyRequest, Buffer>()
const callers = new WeakMap<FastifyRequest, Caller>()

function headerText (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

export function createApi (backend: ApiBackend, log: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: log.child({ component: 'api' }) as FastifyBaseLogger, bodyLimit: API_LIMITS.bodyBytesMax,
    // Requests are logged by the handlers that matter; the CLI polls, and would drown the log.
    logController: new LogController({ disableRequestLogging: true }),
    // A request without Host is refused by the guard below, in the API's error format, not by Node's bare 400.
    http: { requireHostHeader: false },
  })
  /** Open event streams: ended on close, or fastify's close() would wait for their clients forever. */
  const eventStreams = new Set<() => void>()
  /** Log follows end with their task; a closing API ends them first. */
  const logFollows = new Set<AbortController>()
  app.addHook('onRequest', guard(backend.apiHost, log))
  // JSON bodies are kept as sent as well: a signed request's signature covers their bytes.
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body: Buffer, done) => {
    rawBodies.set(request, body)
    if (body.length === 0) { done(null, undefined); return }
    try {
      done(null, JSON.parse(body.toString('utf8')) as unknown)
    } catch {
      done(new InputError('BAD_JSON', 'the body is not JSON; send a JSON document with Content-Type: application/json'), undefined)
    }
  })
  const auth = backend.auth
  if (auth !== null) {
    app.addHook('preHandler', async (request) => {
      if (request.routeOptions.url === '/v1/health') return
      callers.set(request, auth.check({
        method: request.method,
        url: request.url,
        host: request.headers.host,
        localPort: request.raw.socket.localPort,
        authorization: request.headers.authorization,
        grantHeader: headerText(request.headers['murmur-grant']),
        body: rawBodies.get(request),
      }))
    })
  }
  /** The caller of a request (null on a node without users). */
  const callerOf = (request: FastifyRequest): Caller | null => auth === null ? null : callers.get(request) ?? null
  const need = (request: FastifyRequest, op: 'read' | 'operate' | 'admin' | 'submit', namespace?: string): Caller | null => {
    const caller = callerOf(request)
    RequestAuth.need(caller, op, namespace)
    return caller
  }
  /** Whether the caller may read what is in a namespace (a node's tasks and events show only those). */
  const mayRead = (caller: Caller | null, job: string): boolean => {
    if (caller === null) return true
    // A job this node has no record of (gone with retention) is the default namespace's.
    return permits(caller.grant, 'read', backend.namespaceOfJob(job) ?? 'default') === null
  }
  app.addHook('preClose', async () => {
    for (const end of [...eventStreams]) end()
    for (const follow of [...logFollows]) follow.abort()
  })

  /** Answers a logs request: a range with its offsets in headers, or the bytes as they come (follow). */
  async function serveLogs (task: string, query: unknown, raw: IncomingMessage, reply: FastifyReply, get: (q: LogsQuery, signal: AbortSignal) => Promise<LogsAnswer>): Promise<FastifyReply> {
    const parsed = parseQuery(logsQuery, query, 'stream=stdout|stderr, offset, length, tail, follow=1', 'logs')
    const q = { ...parsed, follow: parsed.follow === '1' || parsed.follow === 'true' }
    if (q.follow && logFollows.size >= API_LIMITS.logFollowsMax) {
      return await reply.code(429).send(errorBody('TOO_MANY_FOLLOWS', `at most ${API_LIMITS.logFollowsMax} log follows at once on this node; end one (a 'murmur logs -f') and retry`))
    }
    const aborted = new AbortController()
    raw.on('close', () => { aborted.abort() })
    // A follow holds its slot from now until it ends, fails, or its client goes away.
    if (q.follow) {
      logFollows.add(aborted)
      aborted.signal.addEventListener('abort', () => { logFollows.delete(aborted) }, { once: true })
    }
    let answer: LogsAnswer
    try {
      answer = await get(q, aborted.signal)
    } catch (err) {
      logFollows.delete(aborted)
      throw err
    }
    if ('range' in answer) {
      logFollows.delete(aborted)
      return await reply
        .header('content-type', 'application/octet-stream')
        .header('x-log-start', String(answer.range.start)).header('x-log-end', String(answer.range.end))
        .header('x-log-first', String(answer.range.first)).header('x-log-last', String(answer.range.last))
        .send(answer.data)
    }
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-cache' })
    // The headers go now: a quiet task may write nothing for a long time, and the client waits for them.
    reply.raw.flushHeaders()
    try {
      for await (const data of answer.follow) {
        if (!reply.raw.write(data)) await once(reply.raw, 'drain', { signal: aborted.signal })
      }
    } catch (err) {
      if (!aborted.signal.aborted) log.warn({ task, err: (err as Error).message }, 'log follow ended with an error')
    }
    logFollows.delete(aborted)
    reply.raw.end()
    return reply
  }

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody('NOT_FOUND', `no such endpoint: ${request.method} ${request.url}`))
  })
  app.setErrorHandler((err: Error & { statusCode?: number, code?: string }, _request, reply) => {
    // A write the shared state refuses (schema, size, writer rule) is the caller's input.
    const status = err instanceof MurmurError ? err.httpStatus : err instanceof StateError ? 400 : (err.statusCode ?? 500)
    if (status >= 500) log.error({ err }, 'API request failed')
    void reply.code(status).send(errorBody(err.code ?? (status >= 500 ? 'INTERNAL' : 'BAD_REQUEST'), err.message))
  })

  app.get('/v1/health', async () => ({ ok: true, id: backend.id }))
  app.get('/v1/node', async (request) => { need(request, 'read'); return backend.self() })
  app.get('/v1/members', async (request): Promise<MembersResponse> => {
    need(request, 'read')
    const now = Date.now()
    const self = backend.id
    const members = backend.members()
      .map((m) => ({
        ...m,
        self: m.id === self,
        lastHeardAgoMs: m.id === self ? 0 : (m.lastHeardMs === null ? null : now - m.lastHeardMs),
        stateAgeMs: now - m.stateSinceMs,
      }))
      .sort((a, b) => a.id.localeCompare(b.id))
    return { self, members }
  })
  app.post('/v1/node/leave', async (request, reply) => {
    need(request, 'operate')
    backend.leave()
    return await reply.code(202).send({ leaving: true })
  })
  app.get('/v1/state', async (request) => { need(request, 'read'); return backend.state() })
  app.get('/v1/state/nodes', async (request) => { need(request, 'read'); return { nodes: backend.stateNodes() } })
  app.get<{ Params: { peer: string } }>('/v1/state/compare/:peer', async (request) => {
    need(request, 'read')
    const peer = request.params.peer
    if (!/^[1-9A-HJ-NP-Za-km-z]{40,128}$/.test(peer) || peer === backend.id) {
      throw new InputError('BAD_PEER', `'${peer}' is not the peer id of another node; see 'murmur members' for the ids`)
    }
    return await backend.compareState(peer)
  })
  app.patch('/v1/node/labels', async (request) => {
    need(request, 'operate')
    const parsed = labelsBody.safeParse(request.body ?? {})
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new InputError('BAD_LABELS', `labels: ${issue.path.join('.') || 'body'}: ${issue.message}; send { "set": { "key": "value" }, "remove": ["key"] }`)
    }
    for (const key of [...Object.keys(parsed.data.set), ...parsed.data.remove]) {
      const problem = labelKeyProblem(key)
      if (problem !== null) throw new InputError('BAD_LABELS', `label '${key}': ${problem}`)
    }
    return { labels: await backend.updateLabels(parsed.data.set, parsed.data.remove) }
  })
  app.get('/v1/node/tasks', async (request) => {
    const caller = need(request, 'read')
    return { tasks: backend.tasks().filter((t) => mayRead(caller, t.job)).map(redactAttempt) }
  })
  app.get<{ Params: { id: string } }>('/v1/node/tasks/:id', async (request) => {
    const caller = need(request, 'read')
    const task = backend.tasks().find((t) => t.id === request.params.id && mayRead(caller, t.job))
    if (task === undefined) throw new MurmurError('NO_SUCH_TASK', `no task ${request.params.id} on this node; 'murmur ps' lists the tasks`, 1, 404)
    return redactAttempt(task)
  })
  // The bytes as written; the logical range in headers, so a reader can go on from `x-log-end`.
  app.get<{ Params: { id: string } }>('/v1/node/tasks/:id/logs', async (request, reply) => {
    const caller = need(request, 'read')
    const task = backend.tasks().find((t) => t.id === request.params.id)
    if (task !== undefined && !mayRead(caller, task.job)) throw new MurmurError('NO_SUCH_TASK', `no task ${request.params.id} on this node; 'murmur ps' lists the tasks`, 1, 404)
    return await serveLogs(request.params.id, request.query, request.raw, reply, async (q, signal) => {
      if (q.follow) return { follow: backend.followTaskLogs(request.params.id, q.stream, { offset: q.offset, tail: q.tail, signal }) }
      const { data, ...range } = await backend.readTaskLogs(request.params.id, q.stream, { offset: q.offset, length: q.length, tail: q.tail, signal })
      return { range, data }
    })
  })

  // --- jobs and tasks of the cluster ---------------------------------------------
  // Jobs live in namespaces (`?namespace=`, 'default' when absent); each call checks the caller's grant for the job's.
  const nsOf = (request: FastifyRequest): string | undefined => parseQuery(nsQuery, request.query, 'namespace=<namespace>').namespace
  app.post('/v1/jobs', async (request, reply) => await reply.code(201).send(await backend.jobs().submit(request.body, callerOf(request), nsOf(request))))
  app.get('/v1/jobs', async (request) => {
    const q = parseQuery(jobsQuery, request.query, 'all=1, namespace=<namespace> or *')
    return { jobs: backend.jobs().jobs(q.all === '1' || q.all === 'true', callerOf(request), q.namespace) }
  })
  app.get<{ Params: { ref: string } }>('/v1/jobs/:ref', async (request) => backend.jobs().job(request.params.ref, callerOf(request), nsOf(request)))
  app.post<{ Params: { ref: string } }>('/v1/jobs/:ref/stop', async (request) => await backend.jobs().stop(request.params.ref, callerOf(request), nsOf(request)))
  app.post<{ Params: { ref: string }, Body: { count?: unknown } | undefined }>('/v1/jobs/:ref/scale', async (request) => await backend.jobs().scale(request.params.ref, request.body?.count, callerOf(request), nsOf(request)))
  app.get<{ Params: { ref: string } }>('/v1/jobs/:ref/history', async (request) => backend.jobs().history(request.params.ref, callerOf(request), nsOf(request)))
  app.get('/v1/tasks', async (request) => {
    const q = parseQuery(tasksQuery, request.query, 'job=<job>, node=<node id or its end>, all=1, namespace=<namespace> or *')
    return { tasks: await backend.jobs().tasks({ job: q.job, node: q.node, all: q.all === '1' || q.all === 'true', namespace: q.namespace }, callerOf(request)) }
  })
  app.get<{ Params: { id: string } }>('/v1/tasks/:id', async (request) => backend.jobs().task(request.params.id, callerOf(request)))
  app.post<{ Params: { id: string } }>('/v1/tasks/:id/kill', async (request) => await backend.jobs().kill(request.params.id, callerOf(request)))
  app.get<{ Params: { id: string } }>('/v1/tasks/:id/explain', async (request) => await backend.jobs().explain(request.params.id, callerOf(request)))
  app.get<{ Params: { id: string } }>('/v1/tasks/:id/logs', async (request, reply) => {
    const caller = callerOf(request)
    backend.jobs().task(request.params.id, caller)
    return await serveLogs(request.params.id, request.query, request.raw, reply, async (q, signal) =>
      await backend.jobs().logs(request.params.id, { stream: q.stream, offset: q.offset, length: q.length, tail: q.tail, follow: q.follow }, signal))
  })
  app.get('/v1/status', async (request) => { need(request, 'read'); return await backend.status() })

  // --- users, namespaces and quotas ---------------------------------------------------
  app.get('/v1/whoami', async (request) => backend.users().whoami(callerOf(request)))
  app.get('/v1/users', async (request) => { need(request, 'admin'); return backend.users().list() })
  app.post('/v1/users', async (request, reply) => { need(request, 'admin'); return await reply.code(201).send(await backend.users().add(request.body)) })
  app.post('/v1/users/revocations', async (request, reply) => { need(request, 'admin'); return await reply.code(201).send(await backend.users().revoke(request.body)) })
  app.get('/v1/namespaces', async (request) => backend.users().namespaces(callerOf(request)))
  app.put<{ Params: { ns: string } }>('/v1/namespaces/:ns/quota', async (request) => {
    need(request, 'admin')
    return await backend.users().setQuota(request.params.ns, request.body)
  })

  // --- testnet only: network faults (node/faults.ts) ---------------------------------
  const faults = backend.faults
  if (faults !== undefined) {
    app.get('/v1/admin/faults', async (request) => { need(request, 'admin'); return faults.get() })
    app.put('/v1/admin/faults', async (request) => { need(request, 'admin'); return faults.set(parseFaultRules(request.body, 'faults')) })
  }

  app.get('/v1/events', async (request, reply) => {
    const caller = need(request, 'read')
    if (eventStreams.size >= API_LIMITS.eventStreamsMax) {
      return await reply.code(429).send(errorBody('TOO_MANY_STREAMS', `at most ${API_LIMITS.eventStreamsMax} event streams at once; close one and retry`))
    }
    openEventStream(reply)
    const send = (type: string, data: unknown): void => {
      // A client that does not read gets no unbounded buffer: it is cut off.
      if (reply.raw.writableLength > API_LIMITS.eventBufferBytesMax) end()
      else reply.raw.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`)
    }
    const unsubscribers = [
      backend.onMemberEvent((event) => { send('member', event) }),
      backend.onStateChange((change) => {
        send('state', change)
        // The records themselves for jobs and tasks, so a client can follow them without asking back.
        if (change.kind === 'jobs') for (const id of change.ids.slice(0, 1_000)) { const job = backend.jobRecord(id); if (job !== undefined && mayRead(caller, job.id)) send('job', redactJobRecord(job)) }
        if (change.kind === 'tasks') for (const id of change.ids.slice(0, 1_000)) for (const task of backend.taskRecords(id)) if (mayRead(caller, task.job)) send('task', task)
      }),
    ]
    const keepAlive = setInterval(() => reply.raw.write(': keep-alive\n\n'), API_LIMITS.eventKeepAliveMs)
    const end = (): void => {
      if (!eventStreams.delete(end)) return
      clearInterval(keepAlive)
      for (const unsubscribe of unsubscribers) unsubscribe()
      reply.raw.end()
    }
    eventStreams.add(end)
    request.raw.on('close', end)
    return reply
  })
  return app
}

// --- who may call: this machine's own programs, never a web page ---------------------

/**
 * Refuses what a web page could make a browser send, before any handler runs
 * (the API has no users yet, so these checks are all that stands between a
 * page and the cluster):
 * - a Host header that is no loopback name nor the API's own address (421):
 *   a page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding)
 *   could otherwise read and write the API as if it were its own;
 * - an Origin that is not this API itself, or `Sec-Fetch-Site` cross-site or
 *   same-site (403): a page elsewhere, whatever the method. Programs (the CLI,
 *   curl, node's fetch) send neither;
 * - on a POST, PUT, PATCH or DELETE, a body or a Content-Type that is not
 *   `application/json` (415): a form can post without Origin checks in older
 *   browsers, but cannot send that type without a preflight, which this API never grants.
 */
function guard (apiHost: string | undefined, log: Logger): (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined> {
  const own = apiHost === undefined ? null : hostOfAddress(apiHost)
  const lastLoggedMs = new Map<string, number>()
  // The hook returns the reply it answered, so that fastify runs nothing further for the request.
  const refuse = (request: FastifyRequest, reply: FastifyReply, status: number, code: string, message: string): FastifyReply => {
    const now = Date.now()
    if (now - (lastLoggedMs.get(code) ?? 0) >= API_LIMITS.refusalLogIntervalMs) {
      lastLoggedMs.set(code, now)
      log.warn({ code, method: request.method, url: request.url, host: request.headers.host, origin: request.headers.origin }, 'API request refused: it may come from a web page')
    }
    return reply.code(status).send(errorBody(code, message))
  }
  return async (request, reply) => {
    const host = request.headers.host
    const name = host === undefined ? null : hostNameOf(host)
    if (name === null || !isAllowedHost(name, own)) {
      return refuse(request, reply, 421, 'BAD_HOST', `this API answers only requests for localhost, 127.0.0.1 or [::1]${own === null ? '' : ` or ${own}`}, not ${host === undefined ? 'a request without Host' : `'${clip(host)}'`}; use --api http://127.0.0.1:<port>`)
    }
    const origin = request.headers.origin
    if (origin !== undefined && !isOwnOrigin(origin, own, request.raw.socket.localPort)) {
      return refuse(request, reply, 403, 'FOREIGN_ORIGIN', `requests from web pages are refused (Origin '${clip(origin)}'); use the murmur CLI or a program on this machine`)
    }
    const site = request.headers['sec-fetch-site']
    if (site === 'cross-site' || site === 'same-site') {
      return refuse(request, reply, 403, 'FOREIGN_ORIGIN', `requests from web pages are refused (Sec-Fetch-Site ${site}); use the murmur CLI or a program on this machine`)
    }
    if (!CHANGING_METHODS.has(request.method)) return undefined
    const type = request.headers['content-type']
    const media = type?.split(';')[0]!.trim().toLowerCase()
    const hasBody = Number(request.headers['content-length'] ?? 0) > 0 || request.headers['transfer-encoding'] !== undefined
    if ((type !== undefined && media !== 'application/json') || (type === undefined && hasBody)) {
      return refuse(request, reply, 415, 'BAD_CONTENT_TYPE', `a ${request.method} takes a JSON body with Content-Type: application/json, or no body at all; got ${type === undefined ? 'a body without Content-Type' : `'${clip(type)}'`}`)
    }
    return undefined
  }
}

const CHANGING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** A header as an error quotes it: headers run to kilobytes, an error line should not. */
function clip (header: string): string {
  return header.length > 100 ? `${header.slice(0, 100)}…` : header
}

/** The host name of a Host header, lowercased and without its port; null if it is no host[:port]. */
function hostNameOf (header: string): string | null {
  const match = /^(\[[0-9a-f:.]+\]|[^:[\]/@\s]+)(?::\d{1,5})?$/i.exec(header)
  return match === null ? null : match[1]!.toLowerCase()
}

/** An address as a Host header names it ([…] around IPv6); null for a wildcard, which no client names. */
function hostOfAddress (address: string): string | null {
  const lower = address.toLowerCase()
  if (lower === '0.0.0.0' || lower === '::' || lower === '[::]') return null
  return lower.includes(':') && !lower.startsWith('[') ? `[${lower}]` : lower
}

/** Loopback names (localhost, [::1], 127.0.0.0/8) and the API's own address. */
function isAllowedHost (name: string, own: string | null): boolean {
  if (name === 'localhost' || name === '[::1]' || name === own) return true
  const octets = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(name)
  return octets !== null && octets.slice(1).every((o) => Number(o) <= 255)
}

/** Whether an Origin is this API itself: http, an allowed host, and the port the request came in on. */
function isOwnOrigin (origin: string, own: string | null, localPort: number | undefined): boolean {
  if (!URL.canParse(origin)) return false
  const url = new URL(origin)
  if (url.protocol !== 'http:' || url.origin !== origin.toLowerCase()) return false
  return isAllowedHost(url.hostname, own) && Number(url.port === '' ? 80 : url.port) === localPort
}

type LogsQuery = Omit<z.infer<typeof logsQuery>, 'follow'> & { follow: boolean }

/** A query string through its schema, or a BAD_QUERY that names the parameter (after `what`, if given) and the usage. */
function parseQuery<T extends z.ZodType> (schema: T, query: unknown, usage: string, what?: string): z.infer<T> {
  const parsed = schema.safeParse(query ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new InputError('BAD_QUERY', `${what === undefined ? '' : `${what}: `}${issue.path.join('.') || 'query'}: ${issue.message}; use ${usage}`)
  }
  return parsed.data
}

function openEventStream (reply: FastifyReply): void {
  reply.hijack()
  reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
  reply.raw.write(': murmur events\n\n')
}

export function errorBody (code: string, message: string): { error: { code: string, message: string } } {
  return { error: { code, message } }
}
