// Who may do what, as this node's copy of the shared state says: the grants,
// revocations and quotas in it, checked against the root key the node was
// started with, and each node's row of the quota ledger. No I/O: the API asks it
// about requests, the jobs service and the reconcile loop about namespaces.

import type { Grant, Quota, Revocation, Statement } from '../access/statements.ts'
import { statementId } from '../access/statements.ts'
import { type Trust, grantProblem, statementProblem } from '../access/verify.ts'
import type { AccessRecord } from '../crdt/schema.ts'
import type { ClusterState } from '../crdt/state.ts'
import type { Amount, Limit, ShareRow } from '../placement/escrow.ts'

/** A user as `murmur user list` shows them: one line per grant. */
export interface UserView {
  name: string
  key: string
  role: Grant['role']
  namespaces: string[]
  runAs: number[]
  issuedAt: number
  expiresAt: number | null
  /** 'root', or the admin who signed the grant. */
  issuer: string
  /** In force now, revoked, expired, or not yet valid (its signer was not in force when it signed). */
  status: 'active' | 'revoked' | 'expired' | 'invalid'
  /** Why it is not active, in a line. */
  reason: string | null
  id: string
}

export interface NamespaceQuota {
  namespace: string
  limit: Limit
  setAt: number
  setBy: string
  /** The node that stored it (and minted its rights). */
  storedBy: string
}

/**
 * An index of the access records, rebuilt when they change (they change seldom: a
 * user added, a quota set; quota shares move more often, and are read straight
 * from the state).
 */
export class AccessBook {
  readonly rootKey: string
  /** What every check of a signature chain needs: the root key, and the revocations of a name. */
  readonly trust: Trust
  private readonly state: ClusterState
  private dirty = true
  private grants = new Map<string, Grant>()
  private revocationsByName = new Map<string, Revocation[]>()
  private quotas = new Map<string, Array<{ quota: Quota, writer: string }>>()
  /** The revocations of each name, as the last call of revocationsChanged saw them. */
  private revocationDigests = new Map<string, string>()

  constructor (state: ClusterState, rootKey: string) {
    this.state = state
    this.rootKey = rootKey
    this.trust = { rootKey, revocations: (name) => { this.refresh(); return this.revocationsByName.get(name) ?? [] } }
    state.onChange((change) => { if (change.kind === 'access') this.dirty = true })
  }

  /** Marks the index stale: the state's access records changed. */
  invalidate (): void { this.dirty = true }

  /**
   * The names whose revocations changed since the last call (a revocation arrived):
   * the jobs their users signed must be admitted again. Empty when none did.
   */
  revocationsChanged (): Set<string> {
    this.refresh()
    const changed = new Set<string>()
    const now = new Map<string, string>()
    for (const [name, list] of this.revocationsByName) now.set(name, list.map((r) => r.sig).sort().join(','))
    for (const name of new Set([...now.keys(), ...this.revocationDigests.keys()])) {
      if (now.get(name) !== this.revocationDigests.get(name)) changed.add(name)
    }
    this.revocationDigests = now
    return changed
  }

  /** The grants of a public key that are in force at `now`, newest first. */
  grantsOf (key: string, now: number): Grant[] {
    this.refresh()
    return [...this.grants.values()].filter((g) => g.key === key && grantProblem(g, now, this.trust) === null)
      .sort((a, b) => b.issuedAt - a.issuedAt)
  }

  /** Whether the state holds this grant already (by its signature). */
  has (grant: Grant): boolean {
    this.refresh()
    return this.grants.has(statementId(grant))
  }

  grantsNamed (name: string): Grant[] {
    this.refresh()
    return [...this.grants.values()].filter((g) => g.name === name)
  }

  users (now: number): UserView[] {
    this.refresh()
    const out: UserView[] = []
    for (const grant of this.grants.values()) {
      const problem = grantProblem(grant, now, this.trust)
      const revoked = problem !== null && (this.revocationsByName.get(grant.name) ?? []).some((r) => r.at >= grant.issuedAt && r.at <= now)
      const expired = grant.expiresAt !== null && now >= grant.expiresAt
      out.push({
        name: grant.name,
        key: grant.key,
        role: grant.role,
        namespaces: grant.namespaces,
        runAs: grant.runAs,
        issuedAt: grant.issuedAt,
        expiresAt: grant.expiresAt,
        issuer: grant.by === null ? 'root' : grant.by.name,
        status: problem === null ? 'active' : revoked ? 'revoked' : expired ? 'expired' : 'invalid',
        reason: problem,
        id: statementId(grant),
      })
    }
    return out.sort((a, b) => a.name.localeCompare(b.name) || b.issuedAt - a.issuedAt)
  }

  /** The quota in force for a namespace: the latest valid one any node stored. */
  quota (namespace: string): NamespaceQuota | null {
    this.refresh()
    let best: { quota: Quota, writer: string } | undefined
    for (const q of this.quotas.get(namespace) ?? []) {
      if (best === undefined || q.quota.setAt > best.quota.setAt || (q.quota.setAt === best.quota.setAt && q.quota.sig > best.quota.sig)) best = q
    }
    if (best === undefined) return null
    const { quota, writer } = best
    return {
      namespace,
      limit: { cpuMillis: quota.cpuMillis, memoryBytes: quota.memoryBytes, instances: quota.instances },
      setAt: quota.setAt,
      setBy: quota.by === null ? 'root' : quota.by.name,
      storedBy: writer,
    }
  }

  limit (namespace: string): Limit | null { return this.quota(namespace)?.limit ?? null }

  /** Namespaces with a quota. */
  namespaces (): string[] {
    this.refresh()
    return [...this.quotas.keys()].filter((ns) => this.quota(ns) !== null).sort()
  }

  /** Namespaces with a quota ledger (a row of any node's): those whose rights a leaving node hands over. */
  ledgers (): string[] {
    const out = new Set<string>()
    for (const { record } of this.state.accessRecords()) if (record.kind === 'share') out.add(record.namespace)
    return [...out].sort()
  }

  /** Every node's row of the quota ledger of a namespace (placement/escrow.ts). */
  rows (namespace: string): ShareRow[] {
    const out: ShareRow[] = []
    const byNode = new Map<string, ShareRow>()
    for (const { writer, record } of this.state.accessEntries(`share-${namespace}`)) {
      if (record.kind !== 'share') continue
      // A node's rows of its earlier lives are moved into its current one by maintenance; until then, the largest counts.
      const known = byNode.get(writer)
      byNode.set(writer, known === undefined ? { node: writer, minted: record.minted, given: record.given } : larger(known, record))
    }
    for (const row of byNode.values()) out.push(row)
    return out.sort((a, b) => a.node.localeCompare(b.node))
  }

  private refresh (): void {
    if (!this.dirty) return
    this.dirty = false
    const grants = new Map<string, Grant>()
    const revocations = new Map<string, Revocation[]>()
    const quotas = new Map<string, Array<{ quota: Quota, writer: string }>>()
    const seenRevocations = new Set<string>()
    for (const { writer, record } of this.state.accessRecords()) {
      if (record.kind !== 'statement') continue
      const s = record.statement as Statement
      if (s.type === 'grant') grants.set(statementId(s), s)
      else if (s.type === 'revoke') {
        const id = statementId(s)
        if (seenRevocations.has(id)) continue
        seenRevocations.add(id)
        let list = revocations.get(s.name)
        if (list === undefined) revocations.set(s.name, list = [])
        list.push(s)
      } else {
        let list = quotas.get(s.namespace)
        if (list === undefined) quotas.set(s.namespace, list = [])
        list.push({ quota: s, writer })
      }
    }
    this.grants = grants
    this.revocationsByName = revocations
    // A quota whose signer was not in force when it was set is no quota (checked once the revocations are in).
    for (const [ns, list] of quotas) quotas.set(ns, list.filter((q) => statementProblem(q.quota, this.trust) === null))
    this.quotas = quotas
  }
}

/** Two rows of one node (two lives): the larger of each counter, which only grow but `minted`. */
function larger (a: ShareRow, b: Extract<AccessRecord, { kind: 'share' }>): ShareRow {
  const given: Record<string, Amount> = { ...a.given }
  for (const [node, amount] of Object.entries(b.given)) given[node] = given[node] === undefined ? amount : maxAmount(given[node], amount)
  return { node: a.node, minted: maxAmount(a.minted, b.minted), given }
}

function maxAmount (a: Amount, b: Amount): Amount {
  return { cpuMillis: Math.max(a.cpuMillis, b.cpuMillis), memoryBytes: Math.max(a.memoryBytes, b.memoryBytes), instances: Math.max(a.instances, b.instances) }
}
