// One config for the membership state machine: every field optional in `Init`,
// one frozen set of defaults per preset with the reason beside each number, and
// validation that says which field is wrong and why.

export interface MembershipConfig {
  /** How often this node probes one member (round robin over a shuffled list). */
  probeIntervalMs: number
  /** How long a direct probe waits for an ack before asking others to try. */
  probeTimeoutMs: number
  /** How many members are asked to probe indirectly when a direct probe fails. */
  indirectChecks: number
  /** Suspicion timeout floor = suspicionMult × max(1, log10(n)) × probeIntervalMs. */
  suspicionMult: number
  /** Suspicion timeout ceiling = suspicionMaxTimeoutMult × floor (Lifeguard). */
  suspicionMaxTimeoutMult: number
  /**
   * How many members, in expectation, probe a suspect themselves on hearing of the
   * suspicion: independent witnesses that bring the timeout to its floor, and buddy
   * pings that let a live suspect refute at once — without every member probing.
   */
  hearsayProbes: number
  /**
   * A member first seen (or back from the dead) less than this long ago is a
   * newcomer: its suspicion is not shortened by confirmations.
   */
  newcomerGraceMs: number
  /** At most this many members are known; beyond it, newcomers are ignored (a hostile push-pull cannot grow the table without bound). */
  membersMax: number
  /** Local health: timeouts and the probe interval stretch up to this many times. */
  awarenessMax: number
  /** How often pending updates are gossiped without waiting for a probe. */
  gossipIntervalMs: number
  /** How many random members each gossip round goes to. */
  gossipNodes: number
  /** How long a dead member still receives gossip, so that it can learn and refute. */
  gossipToTheDeadMs: number
  /** Each update is sent retransmitMult × ceil(log10(n + 1)) times. */
  retransmitMult: number
  /** At most this many updates ride on one message. */
  piggybackUpdatesMax: number
  /** How often a full state exchange runs with one random member (scaled up above 32 members). */
  pushPullIntervalMs: number
  /** How often one dead member is tried again with a full state exchange, so partitions heal. */
  reconnectIntervalMs: number
  /** How long dead and left members are remembered (and retried) before they are forgotten. */
  deadRetentionMs: number
  /**
   * A gap between two ticks longer than this means this node itself was stalled
   * (paused, starved of CPU): pending timeouts are pushed back by the gap instead of
   * blaming others for answers that may be waiting unread.
   */
  stallMs: number
  /**
   * A member's incarnation rises by one per refutation or change of its offer. A
   * statement more than this far above what this node knows of the member is
   * refused unless the member itself sends it: a relayed jump that large is no
   * member's doing, and would waste the room the member has to refute.
   */
  incarnationJumpMax: number
}

export type MembershipInit = Partial<MembershipConfig>

/**
 * For machines on one LAN: close to memberlist's LAN profile, with a faster probe
 * since our detection target is seconds, not tens of seconds.
 */
export const LAN: Readonly<MembershipConfig> = Object.freeze({
  probeIntervalMs: 500, // one probe per node per 0.5 s: ~2 pings/s per node whatever N is
  probeTimeoutMs: 250, // LAN round trips are < 1 ms; 250 ms leaves room for GC and a busy peer
  indirectChecks: 3, // SWIM paper: k = 3 makes a false positive from one bad link unlikely
  suspicionMult: 4, // floor 2 s at ≤ 10 members, 2.6 s at 20, 4 s at 100
  suspicionMaxTimeoutMult: 4, // without confirmations, at most 4 × the floor
  newcomerGraceMs: 10_000, // a node connects to every member within seconds of joining
  membersMax: 10_000, // ten times the largest cluster we plan for; one push-pull carries at most this many
  hearsayProbes: 4, // ≥ suspicionMult − 2 confirmations come quickly, at a cost of ~4 probes a suspicion
  awarenessMax: 8, // as memberlist: a sick node stretches its timeouts at most 8 ×
  gossipIntervalMs: 200, // news spreads in ~log(n) rounds of 200 ms
  gossipNodes: 3, // fan-out 3: infection-style spread in O(log n) rounds
  gossipToTheDeadMs: 30_000, // a paused node resumed within 30 s hears it was declared dead
  retransmitMult: 4, // enough retransmits to reach everyone with high probability
  piggybackUpdatesMax: 32, // bounds a message to a few KiB
  pushPullIntervalMs: 30_000, // anti-entropy for anything gossip missed
  reconnectIntervalMs: 10_000, // one dead member tried every 10 s: heals partitions
  deadRetentionMs: 3_600_000, // forget the dead after an hour
  stallMs: 1_000, // no tick for 1 s means this process was frozen or starved
  incarnationJumpMax: 1_024, // a member changes its offer or refutes a few times an hour, not a thousand times between two pieces of news
})

/**
 * For a testnet on one machine: loopback round trips are ~0.1 ms, so probes can be
 * frequent; the CPU is shared by every node, so timeouts still leave room for a
 * scheduler delay.
 */
export const LOCAL: Readonly<MembershipConfig> = Object.freeze({
  ...LAN,
  probeIntervalMs: 200, // ~5 pings/s per node: cheap on loopback, finds a hung node in < 1 s
  probeTimeoutMs: 100, // 1000 × a loopback round trip; awareness stretches it under load
  suspicionMult: 3, // floor 0.6 s at ≤ 10 members, 0.78 s at 20
  suspicionMaxTimeoutMult: 5, // ceiling 3.9 s at 20 members when nobody confirms
  gossipIntervalMs: 100,
  // Nodes of a testnet boot together: loading a node takes about a CPU-second, so
  // twenty starting on two cores starve each other for many seconds.
  newcomerGraceMs: 15_000,
  gossipToTheDeadMs: 30_000,
  pushPullIntervalMs: 10_000,
  reconnectIntervalMs: 2_000, // testnet partitions heal within seconds
  deadRetentionMs: 600_000,
  stallMs: 500,
})

/** For the simulator: LAN timing, so that what it proves holds for real deployments. */
export const SIM: Readonly<MembershipConfig> = Object.freeze({ ...LAN })

export const PRESETS = Object.freeze({ lan: LAN, local: LOCAL, sim: SIM })
export type PresetName = keyof typeof PRESETS

export class MembershipConfigError extends Error {
  override name = 'MembershipConfigError'
}

/** Fills in the defaults of a preset and checks every field; throws a one-line error. */
export function membershipConfig (init: MembershipInit = {}, preset: Readonly<MembershipConfig> = LAN): MembershipConfig {
  const config: MembershipConfig = { ...preset }
  for (const [key, value] of Object.entries(init)) {
    if (value === undefined) continue
    if (!(key in preset)) throw new MembershipConfigError(`unknown membership setting '${key}'`)
    ;(config as unknown as Record<string, unknown>)[key] = value
  }
  for (const [key, value] of Object.entries(config)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new MembershipConfigError(`membership setting '${key}' must be a non-negative number, got ${String(value)}`)
    }
  }
  if (config.probeIntervalMs <= 0) throw new MembershipConfigError('probeIntervalMs must be > 0')
  if (config.probeTimeoutMs >= config.probeIntervalMs) {
    throw new MembershipConfigError(`probeTimeoutMs (${config.probeTimeoutMs}) must be less than probeIntervalMs (${config.probeIntervalMs}): the indirect probe needs the rest of the interval`)
  }
  if (config.suspicionMult < 1) throw new MembershipConfigError('suspicionMult must be ≥ 1')
  if (config.suspicionMaxTimeoutMult < 1) throw new MembershipConfigError('suspicionMaxTimeoutMult must be ≥ 1')
  if (config.awarenessMax < 1) throw new MembershipConfigError('awarenessMax must be ≥ 1')
  if (config.gossipIntervalMs <= 0) throw new MembershipConfigError('gossipIntervalMs must be > 0')
  if (config.pushPullIntervalMs <= 0) throw new MembershipConfigError('pushPullIntervalMs must be > 0')
  if (config.reconnectIntervalMs <= 0) throw new MembershipConfigError('reconnectIntervalMs must be > 0')
  if (config.piggybackUpdatesMax < 1) throw new MembershipConfigError('piggybackUpdatesMax must be ≥ 1')
  return config
}

/** The suspicion timeout floor for a cluster of n members (memberlist's formula). */
export function suspicionMinMs (config: MembershipConfig, n: number): number {
  return config.suspicionMult * Math.max(1, Math.log10(Math.max(1, n))) * config.probeIntervalMs
}

/** The suspicion timeout ceiling: what an unconfirmed suspicion waits. */
export function suspicionMaxMs (config: MembershipConfig, n: number): number {
  return config.suspicionMaxTimeoutMult * suspicionMinMs(config, n)
}

/** How many times each update is retransmitted in a cluster of n members. */
export function retransmitLimit (config: MembershipConfig, n: number): number {
  return config.retransmitMult * Math.max(1, Math.ceil(Math.log10(n + 1)))
}

/** memberlist's push-pull scaling: above 32 members the interval grows with log2(n/32). */
export function pushPullIntervalMs (config: MembershipConfig, n: number): number {
  const threshold = 32
  if (n <= threshold) return config.pushPullIntervalMs
  return Math.ceil(config.pushPullIntervalMs * (1 + Math.log2(n / threshold)))
}

/**
 * The time within which every live member declares a crashed member dead, with
 * no message loss:
 * - some member probes it: each member walks a shuffled round of the n − 1 others,
 *   so one member reaches it within 2(n − 1) intervals; with n − 1 members probing
 *   independently, the chance that none has within m intervals is about e^−m, so
 *   we take min(10, 2(n − 1)) intervals (certain for small n, 1 − 5·10⁻⁵ for large);
 * - that probe fails within one interval (direct, then indirect);
 * - the suspicion runs at most its ceiling;
 * - the death spreads by gossip within one retransmit limit of gossip rounds.
 */
export function crashDetectionBoundMs (config: MembershipConfig, n: number, tickMs: number): number {
  const probeRounds = Math.min(10, 2 * Math.max(1, n - 1))
  return (probeRounds + 1) * config.probeIntervalMs +
    suspicionMaxMs(config, n) +
    retransmitLimit(config, n) * config.gossipIntervalMs +
    2 * tickMs
}
