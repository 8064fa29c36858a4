// The reconcile loop's settings: one object of defaults, each with its reason.
// `decide` (pure) reads the ones it needs from its input and falls back to these;
// the loop passes it its own. node/boot.ts derives two from other parts' settings.

export interface ReconcileConfig {
  /** A pass at least this often, for cron ticks and claim timeouts (changes trigger one at once). */
  intervalMs: number
  /** How long backup k leaves an open instance (k × this) before it asks the nodes ranked before it whether they run it. */
  claimTimeoutMs: number
  /** Backup k claims after k × this without evidence: the last resort against a node that is alive and never claims. */
  claimBoundMs: number
  /** How long an asked node has to answer "will you run it?" before its silence counts as evidence. */
  askTimeoutMs: number
  /** How long an answer stands; asked again after that if the instance is still open. */
  answerTtlMs: number
  /** At most one question to a node per this (each carrying up to ASK_INSTANCES_MAX instances), and one at a time. */
  askIntervalMs: number
  /** With `missed: skip`, a cron tick not fired within this long after its time is skipped. */
  cronDeadlineMs: number
  /** How long a dead member still counts in the membership a majority is taken of (`majority`). */
  stableWindowMs: number
  /** A restart in place after a run at least this long starts the backoff from the beginning. */
  backoffResetMs: number
  /** How long this node leaves an instance to others after its executor refused it, or a user killed it here. */
  holdOffMs: number
  /** With `missed: run-once`, how old a missed cron tick may be and still run (keep it under the task retention). */
  cronCatchUpMs: number
  /**
   * How long a member seen alive without a record in the shared state holds off this node's
   * claims as the chosen node: placement cannot choose a node whose record has not arrived.
   */
  recordWaitMs: number
  /**
   * How long this node must see its copy of an instance as a duplicate before it stops it: a node
   * coming back from a crash shows its old claims as live for a moment, until it has judged them.
   */
  duplicateGraceMs: number
}

/** How long a claim may take to reach the other nodes of a loaded cluster: the unit of the claim timers below. */
const CLAIM_SPREAD_MS = 2_000

export const RECONCILE_CONFIG: Readonly<ReconcileConfig> = Object.freeze({
  intervalMs: 250,
  /**
   * Backup k asks after k × this. Never a reason to claim by itself: under load a chosen
   * node's claim can take seconds to arrive, and a backup that claimed on this timer
   * alone ran the instance a second time (15 of 500 batch instances on a loaded 5-node
   * testnet).
   */
  claimTimeoutMs: CLAIM_SPREAD_MS,
  /**
   * The last resort: backup k claims after k × this without evidence, so that a chosen
   * node that is alive and never claims (it does not receive the job, or its view
   * differs for good) cannot block an instance forever. Far above the seconds a claim
   * takes to spread on a loaded cluster. A node that answers that it holds the instance
   * holds it off even past this.
   */
  claimBoundMs: 30_000,
  // The task RPC's own request timeout: a node that cannot answer in it is not going to run the instance soon.
  askTimeoutMs: 5_000,
  answerTtlMs: CLAIM_SPREAD_MS,
  askIntervalMs: 500,
  cronDeadlineMs: 10_000,
  // node/boot.ts sets it to membership's deadRetentionMs: dead members count as long as SWIM remembers them.
  stableWindowMs: 600_000,
  backoffResetMs: 60_000,
  holdOffMs: 5_000,
  // Below the task retention (node/boot.ts takes half of it): a missed run's records must still be there.
  cronCatchUpMs: 30 * 60_000,
  duplicateGraceMs: CLAIM_SPREAD_MS,
  // A new node writes its record within its first second (join, sync, record); a member that never
  // writes one (not a cluster node) holds placement off only this long after it is first seen.
  recordWaitMs: 5_000,
})
