// One complete simulated node, for one life of its process, built from the
// node's own parts: membership is the real SWIM state machine (driven by the
// cluster), and node/core.ts builds the state service, the reconcile loop, the
// task RPC and the jobs service exactly as node/node.ts does, over the simulated
// network (transport.ts, rpc.ts), a simulated disk and the machine's simulated
// task runner, whose tasks outlive a crash of the node process (as a node's do).
// It boots with node/boot.ts: join, sync, write its record, judge what its
// previous life left running, reconcile. Users' requests go to the jobs service,
// as the API's do: signed by a user (users.ts) and checked by the node's own
// RequestAuth in a cluster with users (a root key), unsigned in one without.

import pino, { type Logger } from 'pino'
import type { Quota, Grant } from '../../access/statements.ts'
import type { JobRecord, NodeRecord } from '../../crdt/schema.ts'
import { derivedKeys } from '../../crdt/signing.ts'
import type { MemberEvent, MemberMeta } from '../../membership/types.ts'
import { AccessBook } from '../../node/access.ts'
import { type Caller, RequestAuth } from '../../node/auth.ts'
import { boot, reconcileConfig } from '../../node/boot.ts'
import { stateConfig } from '../../node/config.ts'
import { type CoreParts, startCore } from '../../node/core.ts'
import type { JobService } from '../../node/jobs/service.ts'
import type { JobView } from '../../node/jobs/types.ts'
import { Lifecycle } from '../../node/lifecycle.ts'
import type { ReconcileConfig } from '../../node/reconcile/config.ts'
import type { Reconciler } from '../../node/reconcile/loop.ts'
import { loadState, type StateService } from '../../node/state.ts'
import { learnGrant, type NamespaceView, type UsersBackend, usersBackend } from '../../node/users.ts'
import type { StateConfig } from '../../node/config.ts'
import type { AppContext, SimApp } from './cluster.ts'
import { SimTaskRpc } from './rpc.ts'
import type { SimRunner } from './runner.ts'
import { type SimDisk, SimStateTransport, SimStorage } from './transport.ts'
import { SIM_HOST, type SignedRequest } from './users.ts'

/** What outlives the node process: its disk, and the tasks running on the machine. */
export interface SimMachine {
  disk: SimDisk
  runner: SimRunner
}

/** How long an append takes to be on the simulated disk (an fsync), drawn in [min, max]. */
const FSYNC_MS = [1, 8] as const
/** The first byte of an app message: which part of the node it is for. */
export const CHANNEL = { state: 1, rpc: 2 } as const

export interface SimNodeInit {
  context: AppContext
  meta: MemberMeta
  machine: SimMachine
  /** The node profile whose settings the node runs with (as `--profile`). */
  profile: 'lan' | 'local'
  /** How long dead members count in the majority (a node uses membership's deadRetentionMs). */
  stableWindowMs: number
  state?: Partial<StateConfig>
  reconcile?: Partial<ReconcileConfig>
  /** pino's level for the node's logs (default silent; SIM_LOG=info shows them). */
  logLevel?: string
  /** The cluster's root public key (users.ts): the node runs with users, as with --root-key. Absent: a cluster without users. */
  rootKey?: string
}

export class SimNode implements SimApp {
  readonly id: string
  readonly runner: SimRunner
  private readonly context: AppContext
  private readonly log: Logger
  private readonly meta: MemberMeta
  private readonly parts = new Lifecycle<CoreParts>()
  private readonly transport: SimStateTransport
  private core: CoreParts | null = null
  private auth: RequestAuth | null = null
  private users: UsersBackend | null = null
  private rpc: SimTaskRpc | null = null
  private readonly memberListeners = new Set<(event: MemberEvent) => void>()
  private closed = false

  constructor (init: SimNodeInit) {
    const { context } = init
    this.id = context.id
    this.context = context
    this.meta = init.meta
    this.runner = init.machine.runner
    this.log = pino({ level: init.logLevel ?? 'silent', base: { node: context.id, life: context.life } })
    const send = (channel: number) => (to: string, bytes: Uint8Array): void => {
      const message = new Uint8Array(bytes.length + 1)
      message[0] = channel
      message.set(bytes, 1)
      context.send(to, message)
    }
    this.transport = new SimStateTransport({
      self: context.id,
      send: send(CHANNEL.state),
      reachable: () => context.swim.list().filter((m) => m.id !== context.id && (m.state === 'alive' || m.state === 'suspect')).map((m) => m.id),
    })
    this.start(init, send(CHANNEL.rpc)).catch((err: Error) => { if (!this.closed) context.report(err) })
  }

  /** The node's parts, once it has built them (null while its process starts). */
  get state (): StateService | undefined { return this.core?.state }
  get reconciler (): Reconciler | undefined { return this.core?.reconciler }
  get jobs (): JobService | undefined { return this.core?.jobs }
  get access (): AccessBook | null | undefined { return this.core?.access }

  private async start (init: SimNodeInit, sendRpc: (to: string, bytes: Uint8Array) => void): Promise<void> {
    const { clock, id, rng, swim } = this.context
    const storage = new SimStorage(init.machine.disk, clock, rng.fork('disk'), FSYNC_MS)
    const random = rng.fork('state')
    // Keys derived from the simulated node's name: every node signs and checks as a real one does.
    const loaded = await loadState({ self: id, keys: derivedKeys(id), storage, log: this.log, random: () => random.next(), where: `the simulated disk of ${id}` })
    if (this.closed) return
    const state = stateConfig(init.profile, init.state)
    const ids = rng.fork('ids')
    const alive = (): string[] => swim.list().filter((m) => m.id !== id && m.state === 'alive').map((m) => m.id)
    const rpc = this.rpc = new SimTaskRpc({ self: id, clock, send: sendRpc })
    // With a root key, as a node started with --root-key: every job must carry its users' signed requests.
    const access = init.rootKey === undefined ? null : new AccessBook(loaded, init.rootKey)
    this.core = await startCore(this.parts, {
      self: id,
      log: this.log,
      clock,
      random: () => random.next(),
      newId: () => ids.uint32().toString(16).padStart(8, '0'),
      loaded,
      storage,
      transport: this.transport,
      members: {
        peers: alive,
        stateOf: (m) => swim.member(m)?.state,
        list: () => swim.list(),
      },
      executor: this.runner,
      state,
      reconcile: reconcileConfig({ deadRetentionMs: init.stableWindowMs, taskRetentionMs: state.taskRetentionMs }, init.reconcile),
      rpc,
      access,
    })
    if (this.closed) return
    const core = this.core
    if (access !== null) {
      this.auth = new RequestAuth({ book: access, now: () => clock.now(), log: this.log, learn: async (grant) => { await learnGrant(core.state, access, grant) } })
    }
    this.users = usersBackend({ self: id, book: access, state: core.state, clock, log: this.log, usage: () => core.jobs.usage() })
    await boot({
      self: id,
      log: this.log,
      clock,
      state: core.state,
      executor: this.runner,
      reconciler: core.reconciler,
      // The cluster drives SWIM's join; the node waits until it is a member (sees another alive). A node of a
      // cluster that has only ever had one member waits until one joins it: with a membership that knows
      // nobody else it must not act on what its disk says.
      join: async () => {
        while (!this.closed && alive().length === 0) await new Promise<void>((resolve) => { clock.setTimeout(resolve, 100) })
      },
      aliveMembers: alive,
      ownRecord: () => this.ownRecord(),
      triggers: (listener) => {
        const onMember = (): void => { listener() }
        core.state.on('change', listener)
        this.memberListeners.add(onMember)
        return () => { core.state.off('change', listener); this.memberListeners.delete(onMember) }
      },
    })
  }

  private ownRecord (): NodeRecord {
    const now = this.context.clock.now()
    const { id } = this.context
    return { id, addrs: [`sim://${id}`], apiUrl: `sim://${id}`, cpuMillis: this.meta.cpuMillis, memoryBytes: this.meta.memoryBytes, labels: this.meta.labels, startedAt: now, updatedAt: now }
  }

  /** Submits a job as `murmur run` would; resolves once it is on this node's disk (the API's answer). */
  async submit (input: unknown): Promise<JobView> {
    return await this.ready().submit(input)
  }

  async stopJob (ref: string): Promise<JobView> {
    return await this.ready().stop(ref)
  }

  async scaleJob (ref: string, count: number): Promise<JobView> {
    return await this.ready().scale(ref, count)
  }

  private ready (): JobService {
    return this.parts.get('jobs')
  }

  /** The user behind a signed request, checked as the API checks it (node/auth.ts): a MurmurError if it does not pass. */
  private caller (req: SignedRequest): Caller {
    if (this.auth === null) throw new Error(`${this.id} runs without users (or has not built its parts yet)`)
    return this.auth.check({
      method: req.method, url: req.path, host: SIM_HOST, localPort: undefined,
      authorization: req.authorization, grantHeader: req.grantHeader, body: Buffer.from(req.body),
    })
  }

  /** POST /v1/jobs?namespace=<ns>, signed by a user. */
  async submitSigned (req: SignedRequest, namespace: string): Promise<JobView> {
    const jobs = this.ready()
    return await jobs.submit(JSON.parse(req.body), this.caller(req), namespace)
  }

  /** POST /v1/jobs/<ref>/stop?namespace=<ns>, signed by a user. */
  async stopSigned (req: SignedRequest, ref: string, namespace: string): Promise<JobView> {
    const jobs = this.ready()
    return await jobs.stop(ref, this.caller(req), namespace)
  }

  /** POST /v1/jobs/<ref>/scale?namespace=<ns>, signed by a user. */
  async scaleSigned (req: SignedRequest, ref: string, count: number, namespace: string): Promise<JobView> {
    const jobs = this.ready()
    return await jobs.scale(ref, count, this.caller(req), namespace)
  }

  /** PUT /v1/namespaces/<ns>/quota: stores an admin's quota, minting its rights in this node's row. */
  async setQuota (namespace: string, quota: Quota): Promise<NamespaceView> {
    if (this.users === null) throw new Error(`${this.id} has not built its parts yet`)
    return await this.users.setQuota(namespace, { quota })
  }

  /** POST /v1/users: stores a grant an admin signed. */
  async addUser (grant: Grant): Promise<void> {
    if (this.users === null) throw new Error(`${this.id} has not built its parts yet`)
    await this.users.add({ grant })
  }

  /** A member writes a job record straight into its state, as a compromised node could: no user signed it. */
  async forge (record: JobRecord): Promise<void> {
    const state = this.parts.get('state')
    await state.write((s) => { s.putJob(record) })
  }

  receive (from: string, bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return
    const body = bytes.subarray(1)
    if (bytes[0] === CHANNEL.state) this.transport.receive(from, body)
    else if (bytes[0] === CHANNEL.rpc) this.rpc?.receive(from, body)
  }

  onMemberEvent (event: MemberEvent): void {
    // A member came (back) alive: a new connection, as libp2p reports it to the state service.
    if (event.member.state === 'alive' && event.member.id !== this.id) this.transport.connected(event.member.id)
    for (const listener of this.memberListeners) listener(event)
  }

  /**
   * The process ends, at once: nothing is stopped in order and nothing more is
   * sent or written (the cluster drops this life's timers and messages); the
   * machine's tasks go on without it.
   */
  close (): void {
    this.closed = true
    this.memberListeners.clear()
    this.runner.detach()
  }
}
