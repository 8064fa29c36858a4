// The task RPC of a simulated node: the same requests as node/rpc.ts (checked
// with its schema) carried over the simulated network, and answered by the
// node's own handlers (node/core.ts gives them). A request that gets no answer
// within the RPC's timeout fails as it would over libp2p.

import { z } from 'zod'
import type { Clock } from '../../node/clock.ts'
import type { TaskRpcPart } from '../../node/core.ts'
import { MurmurError } from '../../node/errors.ts'
import type { TaskUsage } from '../../node/executor/types.ts'
import type { ClaimAnswer } from '../../node/reconcile/decide.ts'
import { type LogsAnswer, type LogsRequest, NOT_A_MEMBER, RPC_LIMITS, type RpcHandlers, type RpcRequest, rpcRequestSchema, willRunAnswerSchema } from '../../node/rpc.ts'
import type { Proof } from '../../access/request.ts'

const KIND = { request: 1, reply: 2 } as const

const replySchema = z.union([
  z.object({ id: z.number(), value: z.unknown() }).strict(),
  z.object({ id: z.number(), error: z.object({ code: z.string(), message: z.string(), status: z.number() }) }).strict(),
])

export interface SimRpcInit {
  self: string
  clock: Clock
  send (to: string, bytes: Uint8Array): void
}

export class SimTaskRpc implements TaskRpcPart {
  private readonly init: SimRpcInit
  private nextId = 1
  private readonly waiting = new Map<number, { peer: string, resolve: (value: unknown) => void, reject: (err: Error) => void }>()
  private handlers: RpcHandlers | null = null
  private stopped = false

  constructor (init: SimRpcInit) {
    this.init = init
  }

  async start (handlers: RpcHandlers): Promise<void> {
    this.handlers = handlers
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const w of this.waiting.values()) w.reject(new MurmurError('STOPPING', 'the node is stopping', 1, 503))
    this.waiting.clear()
  }

  async usage (peer: string, tasks: string[]): Promise<Record<string, TaskUsage | null>> {
    return await this.request(peer, { op: 'usage', tasks }) as Record<string, TaskUsage | null>
  }

  async kill (peer: string, task: string, proof?: Proof): Promise<void> {
    await this.request(peer, { op: 'kill', task, ...(proof === undefined ? {} : { proof }) })
  }

  async willRun (peer: string, instances: readonly string[]): Promise<Record<string, ClaimAnswer>> {
    const parsed = willRunAnswerSchema.safeParse(await this.request(peer, { op: 'will-run', tasks: [...instances] }))
    if (!parsed.success) throw new MurmurError('BAD_PEER_REPLY', `${peer} answered a will-run question with something else`, 1, 502)
    return parsed.data
  }

  async logs (peer: string, req: Omit<LogsRequest, 'op'>): Promise<LogsAnswer> {
    if (req.follow === true) throw new MurmurError('NOT_SIMULATED', 'the simulated network carries no log follows', 1, 501)
    const answer = await this.request(peer, { op: 'logs', ...req }) as { range: Extract<LogsAnswer, { range: unknown }>['range'], data: string }
    return { range: answer.range, data: Buffer.from(answer.data, 'base64') }
  }

  /** A message of the RPC's from the network. */
  receive (from: string, bytes: Uint8Array): void {
    if (this.stopped || bytes.length < 1) return
    let body: unknown
    try {
      body = JSON.parse(Buffer.from(bytes.subarray(1)).toString('utf8'))
    } catch {
      return
    }
    if (bytes[0] === KIND.request && this.handlers !== null) void this.answer(this.handlers, from, body)
    else if (bytes[0] === KIND.reply) this.settle(from, body)
  }

  private async request (peer: string, req: RpcRequest): Promise<unknown> {
    if (this.stopped) throw new MurmurError('STOPPING', 'the node is stopping', 1, 503)
    const id = this.nextId++
    return await new Promise((resolve, reject) => {
      const timer = this.init.clock.setTimeout(() => {
        this.waiting.delete(id)
        reject(new MurmurError('NODE_TIMEOUT', `node ${peer} did not answer within ${RPC_LIMITS.timeoutMs} ms`, 1, 504))
      }, RPC_LIMITS.timeoutMs)
      this.waiting.set(id, {
        peer,
        resolve: (value) => { this.init.clock.clearTimeout(timer); resolve(value) },
        reject: (err) => { this.init.clock.clearTimeout(timer); reject(err) },
      })
      this.init.send(peer, encode(KIND.request, { id, req }))
    })
  }

  private async answer (handlers: RpcHandlers, from: string, body: unknown): Promise<void> {
    const id = typeof body === 'object' && body !== null && typeof (body as { id?: unknown }).id === 'number' ? (body as { id: number }).id : undefined
    if (id === undefined) return
    const parsed = rpcRequestSchema.safeParse((body as { req?: unknown }).req)
    let reply: unknown
    try {
      if (!handlers.isMember(from)) throw new MurmurError(NOT_A_MEMBER.error.code, NOT_A_MEMBER.error.message, 1, NOT_A_MEMBER.error.status)
      if (!parsed.success) throw new MurmurError('BAD_REQUEST', `a malformed task request: ${parsed.error.issues[0]?.message ?? 'invalid'}`, 2, 400)
      reply = { id, value: await dispatch(handlers, parsed.data) }
    } catch (err) {
      const e = err instanceof MurmurError ? err : new MurmurError('INTERNAL', (err as Error).message, 1, 500)
      reply = { id, error: { code: e.code, message: e.message, status: e.httpStatus } }
    }
    if (!this.stopped) this.init.send(from, encode(KIND.reply, reply))
  }

  private settle (from: string, body: unknown): void {
    const parsed = replySchema.safeParse(body)
    if (!parsed.success) return
    const waiting = this.waiting.get(parsed.data.id)
    if (waiting === undefined || waiting.peer !== from) return
    this.waiting.delete(parsed.data.id)
    if ('error' in parsed.data) waiting.reject(new MurmurError(parsed.data.error.code, parsed.data.error.message, 1, parsed.data.error.status))
    else waiting.resolve(parsed.data.value)
  }
}

function encode (kind: number, body: unknown): Uint8Array {
  const json = Buffer.from(JSON.stringify(body), 'utf8')
  const out = new Uint8Array(1 + json.length)
  out[0] = kind
  out.set(json, 1)
  return out
}

/** What a node answers to a request: its own handlers, as node/rpc.ts's server calls them. */
async function dispatch (handlers: RpcHandlers, req: RpcRequest): Promise<unknown> {
  switch (req.op) {
    case 'usage': return handlers.usage(req.tasks)
    case 'kill': await handlers.kill(req.task, req.proof as Proof | undefined); return null
    case 'will-run':
      if (handlers.willRun === undefined) throw new MurmurError('NOT_SUPPORTED', 'this node does not answer will-run questions', 1, 501)
      return handlers.willRun(req.tasks)
    case 'logs': {
      const answer = await handlers.logs(req, new AbortController().signal)
      if ('follow' in answer) throw new MurmurError('NOT_SIMULATED', 'the simulated network carries no log follows', 1, 501)
      return { range: answer.range, data: answer.data.toString('base64') }
    }
  }
}
