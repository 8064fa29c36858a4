// The parts of a node that decide and act, built the same way on a node process
// (node.ts) and in the simulator (testnet/sim/node.ts): the state service, the
// reconcile loop, this node's own tasks, the task RPC and the jobs service, in
// this order. What differs between the two worlds comes in as interfaces: the
// clock, randomness, the store, the transport, membership, the task runner and
// how the task RPC reaches other nodes.

import type { Logger } from 'pino'
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
}

/** Builds and starts the core parts in order; each is stopped in reverse by `parts`. */
export async function startCore (parts: Lifecycle<CoreParts>, init: CoreInit): Promise<CoreParts> {
  const { self, log, clock } = init
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
  }), undefined, async () => { await reconciler.close() })
  const local = new LocalTasks(reconciler, init.executor)
  await parts.add('rpc', rpc, async () => {
    await rpc.start({
      logs: async (req, signal) => await local.logs(req, signal),
      usage: (tasks) => local.usage(tasks),
      kill: async (task) => { reconciler.kill(task) },
      willRun: (instances) => reconciler.answer(instances),
      isMember: (peer) => isLive(init.members.stateOf(peer)),
    })
  }, async () => { await rpc.stop() })
  const jobs = await parts.add('jobs', new JobService({ self, state, reconciler, local, peers: rpc, log: log.child({ component: 'jobs' }), clock, newId: init.newId }))
  return { state, reconciler, rpc, jobs }
}
