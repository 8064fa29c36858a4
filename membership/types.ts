// The words of SWIM: members, their states and incarnations, the messages that
// carry probes and gossip, and the effects the state machine asks its caller to
// perform. Nothing here does I/O.

/** alive → suspect → dead is failure detection; left is a member that said goodbye. */
export type MemberState = 'alive' | 'suspect' | 'dead' | 'left'

/** What a member offers the pool; it travels with every alive update. */
export interface MemberMeta {
  /** CPU the member offers, in millicores (1000 = one core). */
  cpuMillis: number
  /** Memory the member offers, in bytes. */
  memoryBytes: number
  labels: Record<string, string>
  /** The member's HTTP API, so that any node can point a user at any other. */
  apiUrl?: string | undefined
  /** How the member contains its tasks; `none` means without limits, which users should see. */
  isolation?: 'cgroup-v2' | 'cgroup-v1' | 'none' | undefined
}

/** A member as one node sees it. */
export interface Member {
  id: string
  addrs: string[]
  incarnation: number
  state: MemberState
  meta: MemberMeta
  /** When this node last changed the member's state (ms, the caller's clock). */
  stateSinceMs: number
  /** When this node last received a message from the member itself or an ack for it. */
  lastHeardMs: number | null
}

/**
 * Membership changes, disseminated by gossip. `alive` and `left` are the
 * member's own statements: `sig` is its signature over them (statements.ts), so
 * that anyone may relay them and nobody can forge them. Each names the member, the
 * incarnation it is about, and (for suspicions) who raised it, so that
 * independent confirmations can be counted (Lifeguard).
 */
export type Update =
  | { kind: 'alive', id: string, incarnation: number, addrs: string[], meta: MemberMeta, sig?: string | undefined }
  | { kind: 'suspect', id: string, incarnation: number, from: string }
  | { kind: 'dead', id: string, incarnation: number, from: string }
  | { kind: 'left', id: string, incarnation: number, sig?: string | undefined }

/** A member's record in a full-state exchange (push-pull). */
export interface MemberRecord {
  id: string
  addrs: string[]
  incarnation: number
  state: MemberState
  meta: MemberMeta
  /**
   * The member's signature over its latest statement about itself at this
   * incarnation: `left` for a member that left, `alive` (with these addrs and
   * meta) otherwise — a suspicion or a death is another's word, at the
   * incarnation the member itself last stated.
   */
  sig?: string | undefined
}

export type Message =
  /** Are you alive? Answered by an ack with the same seq. */
  | { type: 'ping', seq: number, updates: Update[] }
  | { type: 'ack', seq: number, updates: Update[] }
  /** Probe `target` for me; answer with an ack if it answers, a nack if it does not in time. */
  | { type: 'ping-req', seq: number, target: string, targetAddrs: string[], updates: Update[] }
  /** Lifeguard: the helper is alive but the target did not answer it. */
  | { type: 'nack', seq: number, updates: Update[] }
  /** Gossip without a probe. */
  | { type: 'gossip', updates: Update[] }
  /** Full state exchange; `reply` asks the receiver to answer with its own. */
  | { type: 'push-pull', join: boolean, reply: boolean, members: MemberRecord[] }

/** Where a message goes: a known member, or (joining) only an address. */
export interface Outbound {
  /** The member's id, or null when only an address is known (a seed to join through). */
  to: string | null
  addrs: string[]
  message: Message
}

/** A change to one member, as this node sees it. */
export interface MemberEvent {
  member: Member
  /** The state before, or null for a member this node had not known. */
  previous: MemberState | null
  /** The incarnation before, or null for a new member. */
  previousIncarnation: number | null
}

/** Why a statement or message from a peer was not taken. */
export type RefusalReason =
  /** Above the incarnation cap: nobody could outbid it. */
  | 'incarnation-cap'
  /** Too far above what this node knows of the member, and not from the member itself. */
  | 'incarnation-jump'
  /** A suspicion or death at an incarnation the member never stated. */
  | 'incarnation-unstated'
  /** A statement about a member that does not carry the member's valid signature. */
  | 'bad-signature'
  /** A goodbye for another, unsigned, from a sender this node does not hold alive. */
  | 'unverified-left'
  /** A message other than a push-pull (or a ping, answered bare) from a peer that is no member. */
  | 'stranger'

/** A refusal, for the caller to count and log: the peer that sent it, and what it was about. */
export interface Refusal {
  from: string
  reason: RefusalReason
  /** The member the statement was about, when it was one. */
  id?: string
  incarnation?: number
  kind: Update['kind'] | Message['type']
}

/** What the caller must do after feeding the state machine: send, then report. */
export interface Effects {
  messages: Outbound[]
  events: MemberEvent[]
  refused: Refusal[]
}

/** The member this node is, as given at construction. */
export interface SelfInit {
  id: string
  addrs: string[]
  meta: MemberMeta
}
