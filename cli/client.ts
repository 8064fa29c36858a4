// The TypeScript client of a node's HTTP API (`import { connect } from 'murmur/client'`).
// The CLI uses it for everything it asks a node. Every call is bounded in time.

import type { NodeRecord } from '../crdt/schema.ts'
import type { StateChange } from '../crdt/state.ts'
import type { MembersResponse, NodeInfo, StateComparison } from '../node/api.ts'
import type { StateInfo } from '../node/state.ts'
import type { AttemptInfo } from '../node/executor/types.ts'
import type { MemberEvent } from '../membership/types.ts'
import type { ExplainView, HistoryView, JobSummary, JobView, PoolStatus, TaskDetail, TaskView } from '../node/jobs/types.ts'
import type { JobRecord, ClaimRecord } from '../crdt/schema.ts'
import { readFileSync, statSync } from 'node:fs'
import { type UserKey, parseUserKey } from '../access/keys.ts'
import { signRequest } from '../access/request.ts'
import type { Grant, Quota, Revocation } from '../access/statements.ts'
import type { UserView } from '../node/access.ts'
import type { NamespaceView, WhoAmI } from '../node/users.ts'
import { resolveTarget } from './context.ts'

export type { MembersResponse, MemberView, NodeInfo, StateComparison } from '../node/api.ts'
export type { StateInfo, PeerSync } from '../node/state.ts'
export type { NodeRecord } from '../crdt/schema.ts'
export type { AttemptInfo, TaskExit, TaskUsage, Isolation } from '../node/executor/types.ts'
export type { StateChange } from '../crdt/state.ts'
export type { MemberEvent, MemberState } from '../membership/types.ts'
export type { ExplainView, HistoryView, InstanceView, JobStatus, JobSummary, JobView, PoolStatus, TaskDetail, TaskView } from '../node/jobs/types.ts'
export type { JobInput, JobSpec } from '../node/jobs/spec.ts'
export type { JobRecord, ClaimRecord } from '../crdt/schema.ts'
export type { UserKey } from '../access/keys.ts'
export type { Grant, Quota, Revocation } from '../access/statements.ts'
export type { UserView } from '../node/access.ts'
export type { NamespaceView, WhoAmI } from '../node/users.ts'

export type ClusterEvent =
  | { type: 'member', data: MemberEvent }
  | { type: 'state', data: StateChange }
  /** A job's record changed (submitted, stopped, finished). */
  | { type: 'job', data: JobRecord }
  /** A node's claim of a task instance changed (claimed, running, restarting, exited, …). */
  | { type: 'task', data: ClaimRecord }

export interface LogOptions { stream?: 'stdout' | 'stderr', offset?: number, length?: number, tail?: number }

export const DEFAULT_API = 'http://127.0.0.1:7947'

/** The API could not be reached, or it answered with an error. */
export class ApiError extends Error {
  override name = 'ApiError'
  readonly code: string
  readonly status: number | null

  constructor (code: string, message: string, status: number | null) {
    super(message)
    this.code = code
    this.status = status
  }
}

export interface ClientOptions {
  /** Per-request limit; a node that does not answer by then is reported as down. */
  timeoutMs?: number
  /**
   * The user key every request is signed with: a key, the path of a key file, or
   * null to send requests unsigned (a node without users). Absent: MURMUR_USER_KEY,
   * else the key of the CLI context that lists this API (cli/context.ts).
   */
  key?: UserKey | string | null
  /** The namespace of job calls that name none: else MURMUR_NAMESPACE, the context's, or 'default'. */
  namespace?: string
}

export interface Client {
  url: string
  health: () => Promise<{ ok: boolean, id: string }>
  node: () => Promise<NodeInfo>
  members: () => Promise<MembersResponse>
  leave: () => Promise<void>
  /** The node's copy of the shared state: size, records, state vector, syncs. */
  state: () => Promise<StateInfo>
  /** The node records of the shared state. */
  stateNodes: () => Promise<{ nodes: NodeRecord[] }>
  /** Whether the node's copy of the state equals the copy of peer `peer` (a peer id). */
  compareState: (peer: string) => Promise<StateComparison>
  /** Sets and removes labels of the node; resolves once stored, with all its labels. */
  updateLabels: (set: Record<string, string>, remove: string[]) => Promise<{ labels: Record<string, string> }>
  /** The tasks this node runs or ran, as its executor sees them. */
  nodeTasks: () => Promise<{ tasks: AttemptInfo[] }>
  /** A range of one of this node's task's logs, with its logical offsets. */
  taskLogs: (id: string, opts?: { stream?: 'stdout' | 'stderr', offset?: number, length?: number, tail?: number }) => Promise<TaskLogRange>
  /** Follows the cluster's events until the signal aborts; resolves when the stream ends. */
  events: (onEvent: (event: ClusterEvent) => void, signal: AbortSignal) => Promise<void>

  /** The namespace job calls use when they name none. */
  namespace: string
  /** The user key requests are signed with, or null. */
  key: UserKey | null
  /** Submits a job (the spec as a user writes it: see README.md, "Job spec"); resolves once it is stored, with its id. */
  submitJob: (spec: unknown, opts?: NamespaceOption) => Promise<JobView>
  /** The jobs of a namespace ('*': every one the caller may read); finished and stopped ones only with `all`. */
  jobs: (opts?: { all?: boolean } & NamespaceOption) => Promise<{ jobs: JobSummary[] }>
  /** One job, by id or by name (the latest job of that name in the namespace). */
  job: (ref: string, opts?: NamespaceOption) => Promise<JobView>
  /** Stops every instance of a job on every node; resolves once the stop is stored. */
  stopJob: (ref: string, opts?: NamespaceOption) => Promise<JobView>
  /** A service with a new instance count. */
  scaleJob: (ref: string, count: number, opts?: NamespaceOption) => Promise<JobView>
  /** Every claim of every instance of a job, oldest first. */
  jobHistory: (ref: string, opts?: NamespaceOption) => Promise<HistoryView>
  /** The task instances of the cluster: live ones, or with `all` also finished and given-up ones. */
  tasks: (opts?: { job?: string, node?: string, all?: boolean } & NamespaceOption) => Promise<{ tasks: TaskView[] }>
  task: (id: string) => Promise<TaskDetail>
  /** Stops a task where it runs: a service instance gets a replacement, a batch instance counts as failed. */
  killTask: (id: string) => Promise<{ task: string, node: string }>
  /** Why a task runs where it runs, or why it is pending. */
  explainTask: (id: string) => Promise<ExplainView>
  /** The pool: nodes, CPU and memory, tasks and jobs by state, what is degraded. */
  status: () => Promise<PoolStatus>
  /** A range of a task's logs, from whichever node runs (or ran) it. */
  logs: (id: string, opts?: LogOptions) => Promise<TaskLogRange>
  /** Follows a task's logs from wherever it runs until it ends or the signal aborts. */
  followLogs: (id: string, opts: Omit<LogOptions, 'length'>, onData: (data: Buffer) => void, signal: AbortSignal) => Promise<void>

  /** Who the node takes the caller for: user, role, namespaces, and the grant. */
  whoami: () => Promise<WhoAmI>
  /** Every grant in the cluster (admins only). */
  users: () => Promise<{ users: UserView[] }>
  /** Stores a grant an admin signed (access/statements.ts, signGrant). */
  addUser: (grant: Grant) => Promise<{ user: UserView }>
  /** Stores a revocation an admin signed. */
  revokeUser: (revocation: Revocation) => Promise<{ revoked: string, grants: number }>
  /** The namespaces the caller may read, with their quotas and use. */
  namespaces: () => Promise<{ namespaces: NamespaceView[] }>
  /** Stores a quota an admin signed. */
  setQuota: (quota: Quota) => Promise<NamespaceView>
}

export interface NamespaceOption { namespace?: string }

export interface TaskLogRange { data: Buffer, start: number, end: number, first: number, last: number }

/** Reads a user key file: the owner's alone, like an ssh key; one-line errors name the file and the fix. */
export function readUserKey (file: string): UserKey {
  let text: string
  try {
    const stat = statSync(file)
    if (!stat.isFile() || stat.size > 256 * 1024) throw new ApiError('BAD_KEY', `${file} is not a user key file; give the file 'murmur user add' or 'murmur testnet up' wrote`, null)
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      throw new ApiError('BAD_KEY', `${file} is open to other users (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}): anyone on this machine could act as its user; run 'chmod 600 ${file}'`, null)
    }
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if (err instanceof ApiError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw new ApiError('BAD_KEY', `user key ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message}; give --key <file> or MURMUR_USER_KEY, or start a testnet ('murmur testnet up' makes one)`, null)
  }
  try {
    return parseUserKey(text, file)
  } catch (err) {
    throw new ApiError('BAD_KEY', (err as Error).message, null)
  }
}

export function connect (url?: string, options: ClientOptions = {}): Client {
  // What is not given comes from the environment and the CLI's contexts, as the CLI's own flags do.
  const target = url === undefined || options.key === undefined || options.namespace === undefined ? resolveTarget(url === undefined ? {} : { api: url }) : null
  const api = url ?? target!.api
  const base = api.replace(/\/+$/, '')
  if (!/^https?:\/\/[^/]+$/.test(base) || !URL.canParse(base)) {
    throw new ApiError('BAD_API_URL', `--api / MURMUR_API must be a URL such as http://127.0.0.1:7947, got '${api}'`, 400)
  }
  const host = new URL(base).host
  const timeoutMs = options.timeoutMs ?? 5_000
  const keyOption = options.key === undefined ? target!.key : options.key
  const key = keyOption === null ? null : typeof keyOption === 'string' ? readUserKey(keyOption) : keyOption
  const namespace = options.namespace ?? target!.namespace
  /** `?namespace=` for a job call: the one asked for, else the client's. */
  const ns = (opts?: NamespaceOption): string => `namespace=${encodeURIComponent(opts?.namespace ?? namespace)}`

  /** The headers of a request: signed by the user's key when there is one. */
  function headers (method: string, path: string, body: string | undefined): Record<string, string> {
    const out: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' }
    if (key !== null) Object.assign(out, signRequest(key, { method, host, path, body: body ?? '' }, Date.now()))
    return out
  }

  async function request<T> (method: string, path: string, body?: unknown): Promise<T> {
    let response: Response
    const sent = body === undefined ? undefined : JSON.stringify(body)
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers: headers(method, path, sent),
        body: sent,
        signal: AbortSignal.timeout(timeoutMs),
      })
    } catch (err) {
      throw unreachable(base, err as Error, timeoutMs)
    }
    const text = await response.text()
    let parsed: unknown
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      throw new ApiError('BAD_RESPONSE', `${base} answered with something that is not JSON: is it a murmur node?`, response.status)
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: string, message?: string } } | undefined)?.error
      throw new ApiError(error?.code ?? 'HTTP_ERROR', error?.message ?? `${method} ${path} failed with HTTP ${response.status}`, response.status)
    }
    return parsed as T
  }

  return {
    url: base,
    health: async () => await request('GET', '/v1/health'),
    node: async () => await request('GET', '/v1/node'),
    members: async () => await request('GET', '/v1/members'),
    leave: async () => { await request('POST', '/v1/node/leave') },
    state: async () => await request('GET', '/v1/state'),
    stateNodes: async () => await request('GET', '/v1/state/nodes'),
    compareState: async (peer) => await request('GET', `/v1/state/compare/${encodeURIComponent(peer)}`),
    updateLabels: async (set, remove) => await request('PATCH', '/v1/node/labels', { set, remove }),
    nodeTasks: async () => await request('GET', '/v1/node/tasks'),
    taskLogs: async (id, opts = {}) => await readLogs(`/v1/node/tasks/${encodeURIComponent(id)}/logs`, opts),
    events: async (onEvent, signal) => {
      // The answer's headers must come within the timeout; the stream itself then runs until aborted.
      const controller = new AbortController()
      const abort = (): void => { controller.abort() }
      signal.addEventListener('abort', abort, { once: true })
      let timedOut = false
      const timer = setTimeout(() => { timedOut = true; controller.abort() }, timeoutMs)
      let response: Response
      try {
        response = await fetch(`${base}/v1/events`, { headers: headers('GET', '/v1/events', undefined), signal: controller.signal })
      } catch (err) {
        signal.removeEventListener('abort', abort)
        if (signal.aborted) return
        throw unreachable(base, timedOut ? Object.assign(new Error('timeout'), { name: 'TimeoutError' }) : err as Error, timeoutMs)
      } finally {
        clearTimeout(timer)
      }
      if (!response.ok || response.body === null) throw new ApiError('HTTP_ERROR', `event stream failed with HTTP ${response.status}`, response.status)
      const decoder = new TextDecoder()
      let buffer = ''
      try {
        for await (const chunk of response.body) {
          buffer += decoder.decode(chunk as Uint8Array, { stream: true })
          let end: number
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end)
            buffer = buffer.slice(end + 2)
            const event = parseSse(block)
            if (event?.type === 'member') onEvent({ type: 'member', data: JSON.parse(event.data) as MemberEvent })
            else if (event?.type === 'state') onEvent({ type: 'state', data: JSON.parse(event.data) as StateChange })
            else if (event?.type === 'job') onEvent({ type: 'job', data: JSON.parse(event.data) as JobRecord })
            else if (event?.type === 'task') onEvent({ type: 'task', data: JSON.parse(event.data) as ClaimRecord })
          }
        }
      } catch (err) {
        if (!signal.aborted) throw err
      }
    },
    namespace,
    key,
    submitJob: async (spec, opts) => await request('POST', `/v1/jobs?${ns(opts)}`, spec),
    jobs: async (opts = {}) => await request('GET', `/v1/jobs?${ns(opts)}${opts.all === true ? '&all=1' : ''}`),
    job: async (ref, opts) => await request('GET', `/v1/jobs/${encodeURIComponent(ref)}?${ns(opts)}`),
    stopJob: async (ref, opts) => await request('POST', `/v1/jobs/${encodeURIComponent(ref)}/stop?${ns(opts)}`),
    scaleJob: async (ref, count, opts) => await request('POST', `/v1/jobs/${encodeURIComponent(ref)}/scale?${ns(opts)}`, { count }),
    jobHistory: async (ref, opts) => await request('GET', `/v1/jobs/${encodeURIComponent(ref)}/history?${ns(opts)}`),
    tasks: async (opts = {}) => await request('GET', `/v1/tasks?${query({ job: opts.job, node: opts.node, all: opts.all === true ? 1 : undefined, namespace: opts.namespace ?? (opts.job === undefined ? undefined : namespace) })}`),
    task: async (id) => await request('GET', `/v1/tasks/${encodeURIComponent(id)}`),
    killTask: async (id) => await request('POST', `/v1/tasks/${encodeURIComponent(id)}/kill`),
    explainTask: async (id) => await request('GET', `/v1/tasks/${encodeURIComponent(id)}/explain`),
    status: async () => await request('GET', '/v1/status'),
    logs: async (id, opts = {}) => await readLogs(`/v1/tasks/${encodeURIComponent(id)}/logs`, opts),
    followLogs: async (id, opts, onData, signal) => {
      // The answer's headers must come within the timeout; the bytes then flow until the task ends or the caller aborts.
      const controller = new AbortController()
      const abort = (): void => { controller.abort() }
      signal.addEventListener('abort', abort, { once: true })
      const timer = setTimeout(abort, timeoutMs)
      const path = `/v1/tasks/${encodeURIComponent(id)}/logs?${query({ ...opts, follow: 1 })}`
      try {
        let response: Response
        try {
          response = await fetch(`${base}${path}`, { headers: headers('GET', path, undefined), signal: controller.signal })
        } catch (err) {
          if (signal.aborted) return
          throw unreachable(base, controller.signal.aborted ? Object.assign(new Error('timeout'), { name: 'TimeoutError' }) : err as Error, timeoutMs)
        } finally {
          clearTimeout(timer)
        }
        if (!response.ok || response.body === null) throw await errorOf(response, `GET ${path}`)
        try {
          for await (const chunk of response.body) onData(Buffer.from(chunk as Uint8Array))
        } catch (err) {
          if (!signal.aborted) throw err
        }
      } finally {
        signal.removeEventListener('abort', abort)
      }
    },
    whoami: async () => await request('GET', '/v1/whoami'),
    users: async () => await request('GET', '/v1/users'),
    addUser: async (grant) => await request('POST', '/v1/users', { grant }),
    revokeUser: async (revocation) => await request('POST', '/v1/users/revocations', { revocation }),
    namespaces: async () => await request('GET', '/v1/namespaces'),
    setQuota: async (quota) => await request('PUT', `/v1/namespaces/${encodeURIComponent(quota.namespace)}/quota`, { quota }),
  }

  async function readLogs (path: string, opts: LogOptions): Promise<TaskLogRange> {
    const url = `${path}?${query({ ...opts })}`
    let response: Response
    try {
      response = await fetch(`${base}${url}`, { headers: headers('GET', url, undefined), signal: AbortSignal.timeout(timeoutMs) })
    } catch (err) {
      throw unreachable(base, err as Error, timeoutMs)
    }
    if (!response.ok) throw await errorOf(response, `GET ${url}`)
    const header = (name: string): number => Number(response.headers.get(name) ?? 0)
    return { data: Buffer.from(await response.arrayBuffer()), start: header('x-log-start'), end: header('x-log-end'), first: header('x-log-first'), last: header('x-log-last') }
  }
}

function query (params: Record<string, string | number | undefined>): string {
  return new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]): [string, string] => [k, String(v)])).toString()
}

async function errorOf (response: Response, what: string): Promise<ApiError> {
  const error = (await response.json().catch(() => undefined) as { error?: { code?: string, message?: string } } | undefined)?.error
  return new ApiError(error?.code ?? 'HTTP_ERROR', error?.message ?? `${what} failed with HTTP ${response.status}`, response.status)
}

function parseSse (block: string): { type: string, data: string } | null {
  let type = 'message'
  const data: string[] = []
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) type = line.slice(7)
    else if (line.startsWith('data: ')) data.push(line.slice(6))
  }
  return data.length === 0 ? null : { type, data: data.join('\n') }
}

function unreachable (base: string, err: Error, timeoutMs: number): ApiError {
  if (err.name === 'TimeoutError') {
    return new ApiError('API_TIMEOUT', `the murmur node at ${base} did not answer within ${timeoutMs} ms; is it overloaded or paused?`, null)
  }
  return new ApiError('API_UNREACHABLE', `no murmur node answers at ${base}; start one with 'murmur node start' or point --api / MURMUR_API at a running node`, null)
}
