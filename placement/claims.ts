// Which claim of a task instance stays, decided from the claims alone. The rule
// and the proofs of its properties are in README.md ("Claims").

import { idKey, pairHash, taskPrefix } from './hash.ts'
import { PlacementError } from './types.ts'

/**
 * - active: the node holds the instance (claimed, starting, running, restarting in place);
 * - releasing: the node is handing it over (a rebalance move) and runs it until another claim holds;
 * - ended: the node gave it up (it failed there, was stopped, or died with the node's previous life);
 * - finished: a batch instance completed: it is done, whoever ran it.
 */
export const CLAIM_STATUSES = ['active', 'releasing', 'ended', 'finished'] as const
export type ClaimStatus = typeof CLAIM_STATUSES[number]

/** One node's claim of one instance: keyed by (task, node), written by that node only. */
export interface Claim {
  readonly node: string
  /** One more than the highest generation of the instance the node had seen when it claimed. */
  readonly generation: number
  readonly status: ClaimStatus
}

export type ClaimOutcome =
  /** Done: no one runs it again. `by` is the finished claim with the lowest generation. */
  | { readonly kind: 'finished', readonly by: Claim }
  /** `holder` keeps it; every other live claim in `duplicates` must stop. */
  | { readonly kind: 'held', readonly holder: Claim, readonly duplicates: readonly Claim[] }
  /** Nobody alive holds it: place it again, claiming with `nextGeneration`. */
  | { readonly kind: 'open', readonly nextGeneration: number }

/**
 * Decide an instance's claims. `isLive(node)` says whether the viewer sees the
 * claiming node alive. Commutative (any order of `claims`), idempotent (a claim
 * given twice counts once), stable (a claim made with knowledge of the holder
 * never displaces it), and it never leaves zero holders while a live claim exists.
 */
export function resolveClaims (task: string, claims: readonly Claim[], isLive: (node: string) => boolean): ClaimOutcome {
  const latest = latestPerNode(claims)
  let finished: Claim | undefined
  for (const c of latest) if (c.status === 'finished' && (finished === undefined || precedes(c, finished, 0, 0))) finished = c
  if (finished !== undefined) return { kind: 'finished', by: finished }
  const prefix = taskPrefix(idKey(task))
  const live = latest.filter((c) => (c.status === 'active' || c.status === 'releasing') && isLive(c.node))
    .map((c) => ({ c, h: pairHash(prefix, ...nodeWords(c.node)) }))
  if (live.length === 0) return { kind: 'open', nextGeneration: nextGeneration(claims) }
  let best = live[0]!
  for (const x of live) if (precedes(x.c, best.c, x.h, best.h)) best = x
  return { kind: 'held', holder: best.c, duplicates: live.filter((x) => x !== best).map((x) => x.c).sort(byNode) }
}

/** The generation a new claim of the instance carries: one above every claim seen, dead or alive. */
export function nextGeneration (claims: readonly Claim[]): number {
  let max = 0
  for (const c of claims) { checkClaim(c); max = Math.max(max, c.generation) }
  return max + 1
}

/**
 * The order of claims: an active claim before a releasing one, then the lower
 * generation (the claim made first, knowing least, has held longest), then the
 * higher pair hash of (task, node), then the lower node id.
 */
function precedes (a: Claim, b: Claim, ha: number, hb: number): boolean {
  const sa = a.status === 'releasing' ? 1 : 0
  const sb = b.status === 'releasing' ? 1 : 0
  if (sa !== sb) return sa < sb
  if (a.generation !== b.generation) return a.generation < b.generation
  if (ha !== hb) return ha > hb
  return a.node < b.node
}

/**
 * A node writes one claim per instance and only raises its generation; if two
 * versions of one node's claim meet (a replica that has not caught up), the
 * later one counts: the higher generation, then the later status.
 */
function latestPerNode (claims: readonly Claim[]): Claim[] {
  const byNode = new Map<string, Claim>()
  for (const c of claims) {
    checkClaim(c)
    const seen = byNode.get(c.node)
    if (seen === undefined || c.generation > seen.generation ||
      (c.generation === seen.generation && STATUS_ORDER[c.status] > STATUS_ORDER[seen.status])) byNode.set(c.node, c)
  }
  return [...byNode.values()]
}

/** Within one generation a node's claim only moves forward: active → releasing → ended or finished. */
const STATUS_ORDER: Readonly<Record<ClaimStatus, number>> = { active: 0, releasing: 1, ended: 2, finished: 3 }

function checkClaim (c: Claim): void {
  if (!Number.isSafeInteger(c.generation) || c.generation < 1) throw new PlacementError(`claim of ${c.node} has an invalid generation ${c.generation}`)
  if (!Object.hasOwn(STATUS_ORDER, c.status)) throw new PlacementError(`claim of ${c.node} has an unknown status ${String(c.status)}`)
}

function nodeWords (node: string): [number, number] {
  const key = idKey(node)
  return [key.lo, key.hi]
}

function byNode (a: Claim, b: Claim): number {
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0
}
