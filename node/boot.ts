// The start of a node's life in the cluster, once its parts run: the same steps,
// in the same order, on a node process (node.ts) and in the simulator
// (testnet/sim/node.ts).
//
//   join ─▶ sync the state with a member ─▶ write this node's record
//        ─▶ judge what the previous life left running ─▶ reconcile
//
// Only after the first sync does the node know what the cluster wants of it, so
// only then does it judge its previous life's tasks (adopt or stop) and start
// acting on the cluster's jobs.

import type { Logger } from 'pino'
import type { NodeRecord } from '../crdt/schema.ts'
import type { StateChange } from '../crdt/state.ts'
import type { Clock } from './clock.ts'
import type { RecoverReport, TaskRunner } from './executor/types.ts'
import { RECONCILE_CONFIG } from './reconcile/config.ts'
import type { ReconcileConfig } from './reconcile/config.ts'
import type { Reconciler } from './reconcile/loop.ts'
import { keepOnRestart } from './recovery.ts'
import type { StateService } from './state.ts'

export interface BootInit {
  self: string
  log: Logger
  clock: Clock
  state: StateService
  executor: Pick<TaskRunner, 'recover'>
  reconciler: Reconciler
  /** Joins the cluster, resolving once this node is a member; absent for a node that founds one. */
  join?: () => Promise<void>
  /** Members seen alive now, other than this node: whom to ask for the state. */
  aliveMembers: () => string[]
  /** This node's record as it should be in the shared state. */
  ownRecord: () => NodeRecord
  /** Runs after the first sync, before the record is written (a node takes back labels it had set). */
  afterSync?: () => void
  /** Subscribes the loop to what should wake it: state changes and membership events. */
  triggers: (listener: (change?: StateChange) => void) => () => void
}

export async function boot (init: BootInit): Promise<RecoverReport> {
  if (init.join !== undefined) {
    await init.join()
    await initialSync(init)
  }
  init.afterSync?.()
  await init.state.write((s) => { s.setNode(init.ownRecord()) })
  const report = await init.executor.recover((task) => keepOnRestart(init.state.records, init.self, task))
  const found = report.adopted.length + report.stopped.length + report.ended.length + report.strays.length
  if (found > 0) init.log.info({ ...report }, `previous life: ${report.adopted.length} tasks adopted, ${report.stopped.length} stopped, ${report.ended.length} had ended, ${report.strays.length} strays removed`)
  init.reconciler.start(init.triggers)
  return report
}

/** One round of anti-entropy with a member, each in turn until one answers, so the node starts with the cluster's state. */
async function initialSync (init: BootInit): Promise<void> {
  const started = init.clock.monotonic()
  for (const member of init.aliveMembers()) {
    const result = await init.state.syncWith(member, 'start')
    if (result.ok) {
      init.log.info({ peer: member, ms: Math.round(init.clock.monotonic() - started), received: result.receivedBytes, ...init.state.records.counts() }, 'state synced with the cluster')
      return
    }
  }
  init.log.warn('could not sync the state with any member yet; it will arrive by gossip and anti-entropy')
}

/** The reconcile loop's settings that follow from other parts' settings, then the overrides. */
export function reconcileConfig (from: { deadRetentionMs: number, taskRetentionMs: number }, overrides: Partial<ReconcileConfig> = {}): Partial<ReconcileConfig> {
  return {
    // "Recently stable": a dead member counts towards the majority for as long as membership remembers it.
    stableWindowMs: from.deadRetentionMs,
    // A missed cron tick is caught up only while its run's records are surely still in the state.
    cronCatchUpMs: Math.min(RECONCILE_CONFIG.cronCatchUpMs, from.taskRetentionMs / 2),
    ...overrides,
  }
}
