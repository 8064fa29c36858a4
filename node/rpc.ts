// Node-to-node requests about tasks, over libp2p: the bytes of a task's logs
// (a range, or followed live), the resource use of the tasks a node runs, a
// kill, and "will you run these instances?". Any node serves `murmur logs`,
// `murmur ps` and `murmur kill` by asking the node that runs the task; a backup
// candidate asks the chosen node before it takes an open instance over
// (reconcile/decide.ts). Frames are length-prefixed; each starts with a tag:
// J (a JSON header or answer), D (log bytes), E (the end, JSON).

import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { z } from 'zod'
import { type Proof, proofSchema } from '../access/request.ts'
import { MurmurError } from './errors.ts'
import type { LogChunk } from './executor/logs.ts'
import type { ClaimAnswer } from './reconcile/decide.ts'
import type { TaskUsage } from './executor/types.ts'
import { type FaultInjector, admitFrame } from './faults.ts'
import type { Host } from './host.ts'
import { isOversized, isStreamGone } from './streams.ts'

export const TASKS_PROTOCOL = '/murmur/tasks/1.0.0'
/** The same requests, for log follows only: long-lived streams get a budget of their own, so they never block a kill. */
export const TASK_FOLLOW_PROTOCOL = '/murmur/tasks-follow/1.0.0'

export const RPC_LIMITS = Object.freeze({
  requestBytesMax: 16 * 1024,
  /** Log bytes per data frame, and any frame's bound. */
  dataFrameBytes: 64 * 1024,
  frameBytesMax: 1024 * 1024,
  usageTasksMax: 10_000,
  /** Instances in one will-run question (the request's byte bound usually binds first: the client splits). */
  willRunTasksMax: 1_000,
  /** A request that has not been answered (the header, for logs) by then fails. */
  timeoutMs: 5_000,
  /** Per connection: short requests (ranges, usage, kill), and log follows. */
  inboundStreamsMax: 32,
  inboundFollowsMax: 64,
})

const id = z.string().min(1).max(256)
export const rpcRequestSchema = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('logs'),
    task: id,
    stream: z.enum(['stdout', 'stderr']),
    offset: z.number().int().nonnegative().optional(),
    length: z.number().int().positive().optional(),
    tail: z.number().int().nonnegative().optional(),
    follow: z.boolean().optional(),
  }).strict(),
  z.object({ op: z.literal('usage'), tasks: z.array(id).max(RPC_LIMITS.usageTasksMax) }).strict(),
  /** `proof`: the user's signed request, which the node that runs the task checks itself (a cluster with users). */
  z.object({ op: z.literal('kill'), task: id, proof: proofSchema.optional() }).strict(),
  z.object({ op: z.literal('will-run'), tasks: z.array(id).max(RPC_LIMITS.willRunTasksMax) }).strict(),
])
export type RpcRequest = z.infer<typeof rpcRequestSchema>
export type LogsRequest = Extract<RpcRequest, { op: 'logs' }>

export type LogsAnswer = { range: Omit<LogChunk, 'data'>, data: Buffer } | { follow: AsyncIterable<Buffer> }

const reason = z.string().max(1_024)
/** A node's answer about one instance, as it comes from the peer: input like any other. `no-answer` is the asker's own. */
export const claimAnswerSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('mine'), state: z.string().max(32) }).strict(),
  z.object({ kind: z.literal('declined'), reason }).strict(),
  z.object({ kind: z.literal('not-mine'), chosen: id.optional() }).strict(),
  z.object({ kind: z.literal('backup'), chosen: id.optional() }).strict(),
  z.object({ kind: z.literal('elsewhere'), holder: id }).strict(),
  z.object({ kind: z.literal('unknown') }).strict(),
])
/** A will-run answer: each instance asked about, answered. */
export const willRunAnswerSchema = z.record(id, claimAnswerSchema)

/** What a node answers with; node.ts provides it. */
export interface RpcHandlers {
  logs: (req: LogsRequest, signal: AbortSignal) => Promise<LogsAnswer>
  usage: (tasks: string[]) => Record<string, TaskUsage | null>
  kill: (task: string, proof?: Proof) => Promise<void>
  /** Whether this node will run each instance (the reconciler's `answer`); without it the op is refused. */
  willRun?: (tasks: string[]) => Record<string, ClaimAnswer>
  /** Whether a peer is a member (alive or suspect): only members are answered. */
  isMember: (peer: string) => boolean
}

/** The answer to a peer that is not a member: nothing about this node's tasks. */
export const NOT_A_MEMBER = Object.freeze({ error: { code: 'NOT_A_MEMBER', message: 'this node answers members of its cluster only', status: 403 } })

interface ErrorBody { code: string, message: string, status: number }

export class TaskRpc {
  private readonly host: Host
  private readonly log: Logger
  private handlers: RpcHandlers | null = null
  private readonly serving = new Set<AbortController>()
  /** Testnet fault rules: every frame received, asked for or served, passes them. */
  private readonly faults: FaultInjector | undefined

  /** Asks other nodes at once; answers them once started with this node's handlers. */
  constructor (host: Host, log: Logger, faults?: FaultInjector) {
    this.host = host
    this.log = log
    this.faults = faults
  }

  async start (handlers: RpcHandlers): Promise<void> {
    this.handlers = handlers
    await this.host.handle(TASKS_PROTOCOL, (stream, connection) => { void this.serve(stream, connection.remotePeer.toString()) }, { maxInboundStreams: RPC_LIMITS.inboundStreamsMax })
    await this.host.handle(TASK_FOLLOW_PROTOCOL, (stream, connection) => { void this.serve(stream, connection.remotePeer.toString()) }, { maxInboundStreams: RPC_LIMITS.inboundFollowsMax })
  }

  async stop (): Promise<void> {
    for (const c of this.serving) c.abort()
    await this.host.unhandle(TASKS_PROTOCOL).catch(() => {})
    await this.host.unhandle(TASK_FOLLOW_PROTOCOL).catch(() => {})
  }

  /** The resource use of tasks on `peer`. */
  async usage (peer: string, tasks: string[], signal?: AbortSignal): Promise<Record<string, TaskUsage | null>> {
    return await this.ask(peer, { op: 'usage', tasks }, signal) as Record<string, TaskUsage | null>
  }

  async kill (peer: string, task: string, proof?: Proof): Promise<void> {
    await this.ask(peer, { op: 'kill', task, ...(proof === undefined ? {} : { proof }) })
  }

  /**
   * Asks `peer` whether it will run each of `tasks` (the reconcile loop's `ask`): one
   * request per slice that fits a request frame, one after the other. Answers that do
   * not follow the schema fail the whole question, as silence would.
   */
  async willRun (peer: string, tasks: readonly string[], signal?: AbortSignal): Promise<Record<string, ClaimAnswer>> {
    const out: Record<string, ClaimAnswer> = {}
    for (const slice of slices(tasks, RPC_LIMITS.requestBytesMax - 64, RPC_LIMITS.willRunTasksMax)) {
      const parsed = willRunAnswerSchema.safeParse(await this.ask(peer, { op: 'will-run', tasks: slice }, signal))
      if (!parsed.success) throw new MurmurError('BAD_PEER_REPLY', `${peer} answered a will-run question with something else`, 1, 502)
      for (const task of slice) if (Object.hasOwn(parsed.data, task)) out[task] = parsed.data[task]!
    }
    return out
  }

  /** A range of a task's logs on `peer`, or with `follow` its bytes as they come until the task ends or `signal` aborts. */
  async logs (peer: string, req: Omit<LogsRequest, 'op'>, signal: AbortSignal): Promise<LogsAnswer> {
    const { lp, raw } = await this.open(peer, signal, req.follow === true ? TASK_FOLLOW_PROTOCOL : TASKS_PROTOCOL)
    const timeout = AbortSignal.any([signal, AbortSignal.timeout(RPC_LIMITS.timeoutMs)])
    let header: unknown
    try {
      await send(lp, 'J', Buffer.from(JSON.stringify({ op: 'logs', ...req })), timeout)
      header = await readJson(lp, 'J', peer, timeout, this.faults)
    } catch (err) {
      raw.abort(err as Error)
      throw remoteError(peer, err)
    }
    if (req.follow !== true) {
      const chunks: Buffer[] = []
      try {
        for (;;) {
          const frame = await readFrame(lp, peer, timeout, this.faults)
          if (frame.tag === 'E') break
          if (frame.tag !== 'D') throw answerError(peer, frame.body)
          chunks.push(frame.body)
        }
      } catch (err) {
        raw.abort(err as Error)
        throw remoteError(peer, err)
      }
      await raw.close().catch(() => {})
      return { range: header as Omit<LogChunk, 'data'>, data: Buffer.concat(chunks) }
    }
    const faults = this.faults
    return {
      follow: (async function * () {
        try {
          for (;;) {
            const frame = await readFrame(lp, peer, signal, faults)
            if (frame.tag === 'E') return
            if (frame.tag !== 'D') throw answerError(peer, frame.body)
            yield frame.body
          }
        } catch (err) {
          if (!signal.aborted) throw remoteError(peer, err)
        } finally {
          raw.abort(new Error('done'))
        }
      })(),
    }
  }

  private async ask (peer: string, req: RpcRequest, signal?: AbortSignal): Promise<unknown> {
    const timeout = AbortSignal.any([AbortSignal.timeout(RPC_LIMITS.timeoutMs), ...(signal === undefined ? [] : [signal])])
    const { lp, raw } = await this.open(peer, timeout)
    try {
      await send(lp, 'J', Buffer.from(JSON.stringify(req)), timeout)
      const answer = await readJson(lp, 'J', peer, timeout, this.faults)
      await raw.close().catch(() => {})
      return answer
    } catch (err) {
      raw.abort(err as Error)
      throw remoteError(peer, err)
    }
  }

  private async open (peer: string, signal: AbortSignal, protocol = TASKS_PROTOCOL): Promise<{ lp: LengthPrefixedStream<Stream>, raw: Stream }> {
    let raw: Stream
    try {
      raw = await this.host.dialProtocol(peerIdFromString(peer), protocol, { signal: AbortSignal.any([signal, AbortSignal.timeout(RPC_LIMITS.timeoutMs)]) })
    } catch (err) {
      throw new MurmurError('NODE_UNREACHABLE', `cannot reach node ${peer}: ${(err as Error).message}`, 1, 503)
    }
    return { lp: lpStream(raw, { maxDataLength: RPC_LIMITS.frameBytesMax }), raw }
  }

  private async serve (raw: Stream, peer: string): Promise<void> {
    const handlers = this.handlers
    if (handlers === null) { raw.abort(new Error('not started')); return }
    const controller = new AbortController()
    this.serving.add(controller)
    raw.addEventListener('close', () => { controller.abort() }, { once: true })
    const lp = lpStream(raw, { maxDataLength: RPC_LIMITS.requestBytesMax })
    const signal = controller.signal
    try {
      const first = await readFrame(lp, peer, AbortSignal.any([signal, AbortSignal.timeout(RPC_LIMITS.timeoutMs)]), this.faults)
      let parsed: ReturnType<typeof rpcRequestSchema.safeParse>
      try {
        parsed = rpcRequestSchema.safeParse(JSON.parse(first.body.toString('utf8')))
      } catch {
        parsed = rpcRequestSchema.safeParse(undefined)
      }
      if (!handlers.isMember(peer)) {
        this.log.debug({ peer }, 'refused a task request from a peer that is not a member')
        await sendJson(lp, 'J', NOT_A_MEMBER, signal)
        return
      }
      if (first.tag !== 'J' || !parsed.success) {
        await sendJson(lp, 'J', { error: { code: 'BAD_REQUEST', message: 'not a task request', status: 400 } }, signal)
        return
      }
      const req = parsed.data
      try {
        if (req.op === 'usage') await sendJson(lp, 'J', handlers.usage(req.tasks), signal)
        else if (req.op === 'kill') { await handlers.kill(req.task, req.proof as Proof | undefined); await sendJson(lp, 'J', { ok: true }, signal) } else if (req.op === 'will-run') {
          if (handlers.willRun === undefined) throw new MurmurError('NOT_SUPPORTED', 'this node does not answer will-run questions', 1, 501)
          await sendJson(lp, 'J', handlers.willRun(req.tasks), signal)
        } else await this.serveLogs(handlers, lp, req, signal)
      } catch (err) {
        const e = err as MurmurError
        if (!signal.aborted) await sendJson(lp, 'J', { error: { code: e.code ?? 'INTERNAL', message: e.message, status: e.httpStatus ?? 500 } }, signal).catch(() => {})
      }
      await raw.close().catch(() => {})
    } catch (err) {
      if (!signal.aborted && !isStreamGone(err)) this.log.debug({ err: (err as Error).message }, 'a task request failed')
      raw.abort(err as Error)
    } finally {
      this.serving.delete(controller)
    }
  }

  private async serveLogs (handlers: RpcHandlers, lp: LengthPrefixedStream<Stream>, req: LogsRequest, signal: AbortSignal): Promise<void> {
    const answer = await handlers.logs(req, signal)
    if ('range' in answer) {
      await sendJson(lp, 'J', answer.range, signal)
      for (let at = 0; at < answer.data.length; at += RPC_LIMITS.dataFrameBytes) await send(lp, 'D', answer.data.subarray(at, at + RPC_LIMITS.dataFrameBytes), signal)
    } else {
      await sendJson(lp, 'J', {}, signal)
      for await (const data of answer.follow) {
        for (let at = 0; at < data.length; at += RPC_LIMITS.dataFrameBytes) await send(lp, 'D', data.subarray(at, at + RPC_LIMITS.dataFrameBytes), signal)
      }
    }
    await sendJson(lp, 'E', {}, signal)
  }
}

/** `items` in order, cut into lists whose JSON stays within `bytes` and `count`. */
function slices (items: readonly string[], bytes: number, count: number): string[][] {
  const out: string[][] = []
  let current: string[] = []
  let size = 0
  for (const item of items) {
    const n = Buffer.byteLength(JSON.stringify(item)) + 1
    if (current.length > 0 && (size + n > bytes || current.length >= count)) { out.push(current); current = []; size = 0 }
    current.push(item)
    size += n
  }
  if (current.length > 0) out.push(current)
  return out
}

async function send (lp: LengthPrefixedStream<Stream>, tag: 'J' | 'D' | 'E', body: Buffer, signal: AbortSignal): Promise<void> {
  await lp.write(Buffer.concat([Buffer.from(tag), body]), { signal })
}

async function sendJson (lp: LengthPrefixedStream<Stream>, tag: 'J' | 'E', value: unknown, signal: AbortSignal): Promise<void> {
  await send(lp, tag, Buffer.from(JSON.stringify(value)), signal)
}

async function readFrame (lp: LengthPrefixedStream<Stream>, peer: string, signal: AbortSignal, faults: FaultInjector | undefined): Promise<{ tag: string, body: Buffer }> {
  let bytes: Uint8Array
  try {
    bytes = (await lp.read({ signal })).subarray()
  } catch (err) {
    if (isOversized(err)) throw new MurmurError('BAD_PEER_REPLY', `${peer} sent a frame over the size limit`, 1, 502)
    throw err
  }
  await admitFrame(faults, peer, 'rpc', signal)
  if (bytes.length === 0) throw new MurmurError('BAD_PEER_REPLY', `${peer} sent an empty frame`, 1, 502)
  return { tag: String.fromCharCode(bytes[0]!), body: Buffer.from(bytes.buffer, bytes.byteOffset + 1, bytes.length - 1) }
}

async function readJson (lp: LengthPrefixedStream<Stream>, tag: 'J', peer: string, signal: AbortSignal, faults: FaultInjector | undefined): Promise<unknown> {
  const frame = await readFrame(lp, peer, signal, faults)
  let value: unknown
  try {
    value = JSON.parse(frame.body.toString('utf8'))
  } catch {
    throw new MurmurError('BAD_PEER_REPLY', `${peer} answered with something that is not JSON`, 1, 502)
  }
  if (frame.tag !== tag) throw new MurmurError('BAD_PEER_REPLY', `${peer} answered out of order`, 1, 502)
  const error = (value as { error?: ErrorBody } | null)?.error
  if (error !== undefined) throw new MurmurError(String(error.code), String(error.message), 1, Number(error.status) || 502)
  return value
}

/** A JSON frame where bytes were expected: the serving node failed midway and says why. */
function answerError (peer: string, body: Buffer): MurmurError {
  let error: Partial<ErrorBody> | undefined
  try { error = (JSON.parse(body.toString('utf8')) as { error?: ErrorBody }).error } catch {}
  return new MurmurError(String(error?.code ?? 'BAD_PEER_REPLY'), String(error?.message ?? `${peer} answered out of order`), 1, Number(error?.status) || 502)
}

function remoteError (peer: string, err: unknown): Error {
  if (err instanceof MurmurError) return err
  const e = err as Error
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return new MurmurError('NODE_TIMEOUT', `node ${peer} did not answer within ${RPC_LIMITS.timeoutMs} ms`, 1, 504)
  return new MurmurError('NODE_UNREACHABLE', `lost node ${peer} while asking it: ${e.message}`, 1, 502)
}
