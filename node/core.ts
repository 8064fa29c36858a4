// The parts of a node that decide and act, built the same way on a node process
// (node.ts) and in the simulator (testnet/sim/node.ts): the state service, the
// reconcile loop, this node's own tasks, the task RPC and the jobs service, in
// this order. What differs between the two worlds comes in as interfaces: the
// clock, randomness, the store, the transport, membership, the task runner and
// how the task RPC reaches other nodes.

import type { Logger } from 'pino'
import { REQUEST_WINDOW_MS, ReplayCache, type Proof } from '../access/request.ts'
import { permits, proofProblem } from '../access/verify.ts'
import type { AccessBook } from './access.ts'
import type { Caller } from './auth.ts'
import { MurmurError } from './errors.ts'
import { jobProblem, signersOf } from './jobs/records.ts'
import type { JobRecord } from '../crdt/schema.ts'
import type { ClusterState } from '../crdt/state.ts'
import type { Member } from '../membership/types.ts'
import type { Clock } from './clock.ts'
import type { StateConfig } from './config.ts'
import type { TaskRunner } from './executor/types.ts'
import { LocalTasks } from './jobs/local.ts'
import { JobService, type TaskPeers } from './jobs/service.ts'
import type { Lifecycle } from './lifecycle.ts'
import type { ClaimAnswer } from './reconcile/decide.ts'
import type { ReconcileConfig } from './reconcile/config.ts'
import { Reconciler } from './reconcile/loop.ts'
import type { RpcHandlers } from './rpc.ts'
import { type StateMembers, StateService, type StateStorage, isLive } from './state.ts'
import type { StateTransport } from './state-transport.ts'

/** The task RPC of a world: it asks other nodes at once, and answers them once started with this node's handlers. */
export interface TaskRpcPart extends TaskPeers {
  willRun (peer: string, instances: readonly string[], signal?: AbortSignal): Promise<Record<string, ClaimAnswer>>
  start (handlers: RpcHandlers): Promise<void>
  stop (): Promise<void>
}

export interface CoreParts {
  state: StateService
  reconciler: Reconciler
  rpc: TaskRpcPart
  jobs: JobService
  /** Users, grants and quotas; null on a node without users (no root key). */
  access: AccessBook | null
}

export interface CoreInit {
  self: string
  log: Logger
  clock: Clock
  random: () => number
  /** A fresh job id suffix (8 hex digits); the jobs service's own by default. */
  newId?: () => string
  /** The document, loaded from `storage`. */
  loaded: ClusterState
  storage: StateStorage
  transport: StateTransport
  members: StateMembers & { list (): Member[] }
  executor: TaskRunner
  state: StateConfig
  reconcile: Partial<ReconcileConfig>
  /** The world's task RPC. */
  rpc: TaskRpcPart
  /**
   * The users of the cluster, checked against its root public key (built on
   * `loaded`): with it, every job must carry its users' signed requests. Null: a
   * cluster without users.
   */
  access: AccessBook | null
}

/** Builds and starts the core parts in order; each is stopped in reverse by `parts`. */
export async function startCore (parts: Lifecycle<CoreParts>, init: CoreInit): Promise<CoreParts> {
  const { self, log, clock } = init
  const access = init.access
  /** Kill requests other nodes forwarded, each taken once while fresh. */
  const killReplays = new ReplayCache(REQUEST_WINDOW_MS, 100_000)
  if (access !== null) {
    // From now on a job is a job only if its users signed it (node/jobs/records.ts); again whenever a revocation arrives.
    const admit = (kind: string, record: unknown): string | null => kind === 'jobs' ? jobProblem(record as JobRecord, access.trust) : null
    const started = performance.now()
    init.loaded.readmit(['jobs'], admit)
    access.revocationsChanged()
    log.info({ jobs: init.loaded.jobIds().length, ms: Math.round(performance.now() - started) }, 'job signatures checked')
    init.loaded.onChange((change) => {
      if (change.kind !== 'access') return
      const names = access.revocationsChanged()
      if (names.size === 0) return
      // Only the jobs whose signers' chains name a revoked user can change their verdict.
      const changed = init.loaded.readmit(['jobs'], admit, (record) => signersOf(record as JobRecord).some((name) => names.has(name)))
      log.info({ users: [...names], jobs: changed.length }, 'a revocation arrived: the jobs its users signed were checked again')
    })
  }
  const state = new StateService({
    state: init.loaded,
    storage: init.storage,
    transport: init.transport,
    members: init.members,
    config: init.state,
    log: log.child({ component: 'state' }),
    clock,
    random: init.random,
  })
  await parts.add('state', state, async () => { await state.start() }, async () => { await state.stop() })
  const rpc = init.rpc
  const reconciler = await parts.add('reconciler', new Reconciler({
    self,
    state,
    executor: init.executor,
    members: () => init.members.list(),
    log: log.child({ component: 'reconcile' }),
    config: init.reconcile,
    clock,
    // A backup asks the nodes ranked before it whether they run an instance before it takes it.
    ask: async (node, instances, signal) => await rpc.willRun(node, instances, signal),
    // Namespace quotas, in a cluster with users: each node spends only its share (placement/escrow.ts).
    ...(access === null ? {} : { quota: { limit: (ns: string) => access.limit(ns), rows: (ns: string) => access.rows(ns), namespaces: () => access.ledgers() } }),
  }), undefined, async () => { await reconciler.close() })
  const local = new LocalTasks(reconciler, init.executor)
  await parts.add('rpc', rpc, async () => {
    await rpc.start({
      logs: async (req, signal) => await local.logs(req, signal),
      usage: (tasks) => local.usage(tasks),
      kill: async (task, proof) => {
        if (access !== null) killCheck(task, proof)
        reconciler.kill(task)
      },
      willRun: (instances) => reconciler.answer(instances),
      isMember: (peer) => isLive(init.members.stateOf(peer)),
    })
  }, async () => { await rpc.stop() })
  const jobs = await parts.add('jobs', new JobService({
    self, state, reconciler, local, peers: rpc, log: log.child({ component: 'jobs' }), clock, newId: init.newId, access,
    killOn: async (node: string, task: string, caller: Caller | null) => { await rpc.kill(node, task, caller?.proof ?? undefined) },
  }))
  return { state, reconciler, rpc, jobs, access }

  /**
   * A kill another node asks for on behalf of a user: this node checks the user's
   * signed request itself (a member cannot kill a task no user asked to kill), and
   * each request once, while it is fresh.
   */
  function killCheck (task: string, proof: Proof | undefined): void {
    const refuse = (why: string): never => { throw new MurmurError('FORBIDDEN', `kill of ${task} refused: ${why}`, 1, 403) }
    if (proof === undefined) refuse('no signed request from a user comes with it')
    const problem = proofProblem(proof!, access!.trust)
    if (problem !== null) refuse(problem)
    if (proof!.m !== 'POST' || proof!.p !== `/v1/tasks/${encodeURIComponent(task)}/kill`) refuse(`the signed request is ${proof!.m} ${proof!.p}, not a kill of this task`)
    if (Math.abs(proof!.t - clock.now()) > REQUEST_WINDOW_MS) refuse('the signed request is not fresh')
    if (killReplays.admit(proof!.key, proof!.n, proof!.t, clock.now()) !== 'ok') refuse('the signed request was used before')
    const denied = permits(proof!.grant, 'submit', jobs.namespaceOfTask(task))
    if (denied !== null) refuse(denied)
  }
}
