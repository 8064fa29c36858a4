// placement/: where tasks go. Pure and deterministic: no I/O, no clock, no randomness.

export { PLACEMENT_HASH_VERSION, idKey, murmur3, pairHash, taskPrefix, unitDraw, weightedScore } from './hash.ts'
export type { IdKey } from './hash.ts'
export {
  CONSTRAINT_LIMITS, constraintSchema, constraintsSchema, constraintText, firstFailed, labelValue, satisfies,
  spreadSchema, spreadsSchema,
} from './constraints.ts'
export type { Constraint, Spread } from './constraints.ts'
export { PlacementError } from './types.ts'
export type { Allocation, NodeView, InstanceDemand, View } from './types.ts'
export { Pool } from './pool.ts'
export { bytesText, cpuText, needAndFree, reasonText } from './reasons.ts'
export type { Shortfall, SkipCode, SkipReason } from './reasons.ts'
export { PLACE_DEFAULTS, displaced, pendingSummary, place, plan, rank, weightFor } from './place.ts'
export type { Decision, Pending, PendingSummary, Placed, PlaceOptions, Plan, Ranked } from './place.ts'
export { explain } from './explain.ts'
export type { Explanation, NodeVerdict, Verdict } from './explain.ts'
export { CLAIM_STATUSES, nextGeneration, resolveClaims } from './claims.ts'
export type { Claim, ClaimOutcome, ClaimStatus } from './claims.ts'
export { rebalance } from './movement.ts'
export type { Move, RebalanceOptions } from './movement.ts'
