// The users of a simulated cluster, as `murmur cluster init` and `murmur user add`
// make them: a root key pinned on every node, an admin granted by the root, and a
// few users granted by the admin, each with a namespace or two. Keys come from the
// scenario's seed (Ed25519 from a seeded 32-byte seed), so a run replays exactly,
// signatures included (Ed25519 signs deterministically).
//
// Users sign their requests as the CLI does (access/request.ts signRequest); a sim
// node checks them with the node's own RequestAuth (node/auth.ts), so the proof a
// job carries verifies exactly as on a real node. The admin signs quotas
// (signQuota), which a node stores through the users backend (node/users.ts).

import { createHash } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { publicKeyText, type UserKey } from '../../access/keys.ts'
import { signRequest } from '../../access/request.ts'
import { type Grant, type Quota, type Role, signGrant, signQuota } from '../../access/statements.ts'
import { privateKeyFromSeed } from '../../crdt/signing.ts'
import type { Limit } from '../../placement/escrow.ts'

/** The host every simulated request is signed for (nodes check no port: the sim has no sockets). */
export const SIM_HOST = 'sim'

export interface SimUserSpec { name: string, role: Role, namespaces: string[] }

/** What a user's request looks like on the wire: the headers the CLI sends, the path and the body. */
export interface SignedRequest {
  method: string
  path: string
  body: string
  authorization: string
  grantHeader: string | undefined
}

function keyOf (seed: number, who: string): KeyObject {
  return privateKeyFromSeed(createHash('sha256').update(`murmur-sim/${seed}/${who}`).digest())
}

export class SimUsers {
  readonly rootKey: string
  readonly admin: UserKey
  readonly users: ReadonlyMap<string, UserKey>
  private nonces = 0
  private readonly seed: number

  constructor (seed: number, specs: readonly SimUserSpec[], issuedAt: number) {
    this.seed = seed
    const root = keyOf(seed, 'root')
    this.rootKey = publicKeyText(root)
    const adminKey = keyOf(seed, 'admin')
    const adminGrant = signGrant({ name: 'admin', key: publicKeyText(adminKey), role: 'admin', namespaces: ['*'], runAs: [], issuedAt, expiresAt: null }, { privateKey: root, grant: null })
    this.admin = { name: 'admin', publicKey: adminGrant.key, privateKey: adminKey, grant: adminGrant }
    const users = new Map<string, UserKey>()
    for (const s of specs) {
      const key = keyOf(seed, `user/${s.name}`)
      const grant = signGrant({ name: s.name, key: publicKeyText(key), role: s.role, namespaces: s.namespaces, runAs: [], issuedAt, expiresAt: null }, { privateKey: adminKey, grant: adminGrant })
      users.set(s.name, { name: s.name, publicKey: grant.key, privateKey: key, grant })
    }
    this.users = users
  }

  grants (): Grant[] {
    return [this.admin.grant!, ...[...this.users.values()].map((u) => u.grant!)]
  }

  /** A user who may submit in `namespace` (the first such, by name). */
  userFor (namespace: string): UserKey {
    for (const u of [...this.users.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const g = u.grant!
      if ((g.role === 'submit' || g.role === 'operator' || g.role === 'admin') && (g.role !== 'submit' || g.namespaces.includes('*') || g.namespaces.includes(namespace))) return u
    }
    throw new Error(`no simulated user may submit in namespace ${namespace}`)
  }

  /** A request signed by `user` at `now` (the clock of the node it goes to), with a nonce drawn in order. */
  sign (user: UserKey, method: string, path: string, body: string, now: number): SignedRequest {
    const nonce = createHash('sha256').update(`${this.seed}/${this.nonces++}`).digest('hex').slice(0, 16)
    const headers = signRequest(user, { method, host: SIM_HOST, path, body }, now, nonce)
    return { method, path, body, authorization: headers.authorization!, grantHeader: headers['murmur-grant'] }
  }

  /** A quota for a namespace, signed by the admin. */
  quota (namespace: string, limit: Limit, setAt: number): Quota {
    return signQuota({ namespace, cpuMillis: limit.cpuMillis, memoryBytes: limit.memoryBytes, instances: limit.instances, setAt }, { privateKey: this.admin.privateKey, grant: this.admin.grant })
  }
}
