// Users, namespaces and quotas as the API serves them. Grants, revocations and
// quotas are signed by an admin's CLI (or the root key) before they reach a node;
// the node checks them and stores them in the shared state, where every node
// checks them again. A node that stores a quota change mints the difference into
// its own row of the quota ledger (placement/escrow.ts).

import type { Logger } from 'pino'
import type { z } from 'zod'
import { type Grant, NAMESPACE_RE, grantSchema, quotaSchema, revocationSchema, statementId } from '../access/statements.ts'
import { grantProblem, permits, statementProblem } from '../access/verify.ts'
import type { AccessRecord } from '../crdt/schema.ts'
import type { AccessBook, NamespaceQuota, UserView } from './access.ts'
import type { Caller } from './auth.ts'
import type { Clock } from './clock.ts'
import { InputError, MurmurError } from './errors.ts'
import type { StateService } from './state.ts'
import { type Amount, type Limit, ZERO, mint, withMint } from '../placement/escrow.ts'

export interface NamespaceView {
  name: string
  quota: (NamespaceQuota & { limit: Limit }) | null
  /** What its instances hold now, cluster-wide, as this node sees it. */
  use: Amount
  jobs: number
}

export interface WhoAmI {
  /** False on a node without users: every caller may do everything. */
  users: boolean
  name: string | null
  role: string | null
  namespaces: string[]
  runAs: number[]
  key: string | null
  expiresAt: number | null
  grant: Grant | null
}

export interface UsersBackend {
  whoami: (caller: Caller | null) => WhoAmI
  list: () => { users: UserView[] }
  add: (body: unknown) => Promise<{ user: UserView }>
  revoke: (body: unknown) => Promise<{ revoked: string, grants: number }>
  namespaces: (caller: Caller | null) => { namespaces: NamespaceView[] }
  setQuota: (namespace: string, body: unknown) => Promise<NamespaceView>
}

export interface UsersInit {
  self: string
  book: AccessBook | null
  state: StateService
  clock: Clock
  log: Logger
  /** Every namespace that has jobs, with their count, and what the active instances of each hold. */
  usage: () => Map<string, { jobs: number, use: Amount }>
}


export function usersBackend (init: UsersInit): UsersBackend {
  const { self, state, clock, log } = init
  const book = (): AccessBook => {
    if (init.book === null) throw new MurmurError('NO_USERS', "this node runs without users (no root key); start the nodes with --root-key from 'murmur cluster init'", 1, 409)
    return init.book
  }
  const parse = <T>(schema: z.ZodType<T>, value: unknown, what: string, usage: string): T => {
    const parsed = schema.safeParse(value)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new InputError('BAD_STATEMENT', `${what}: ${issue.path.map(String).join('.') || 'body'}: ${issue.message}; ${usage}`)
    }
    return parsed.data
  }
  const view = (namespace: string, usage: Map<string, { jobs: number, use: Amount }>): NamespaceView => {
    const quota = init.book?.quota(namespace) ?? null
    const u = usage.get(namespace)
    return { name: namespace, quota, use: u?.use ?? ZERO, jobs: u?.jobs ?? 0 }
  }

  return {
    whoami (caller) {
      if (caller === null) return { users: false, name: null, role: null, namespaces: ['*'], runAs: [], key: null, expiresAt: null, grant: null }
      const g = caller.grant
      return { users: true, name: g.name, role: g.role, namespaces: g.namespaces, runAs: g.runAs, key: g.key, expiresAt: g.expiresAt, grant: g }
    },

    list () {
      return { users: book().users(clock.now()) }
    },

    async add (body) {
      const b = book()
      const grant = parse(grantSchema, (body as { grant?: unknown } | undefined)?.grant, 'grant', "send { \"grant\": <a grant signed by an admin> } (the CLI does: 'murmur user add')")
      const problem = grantProblem(grant, clock.now(), b.trust)
      if (problem !== null) throw new InputError('BAD_GRANT', `the grant for ${grant.name} is not in force: ${problem}`)
      await store({ id: `g-${statementId(grant)}`, kind: 'statement', statement: grant })
      log.info({ user: grant.name, role: grant.role, namespaces: grant.namespaces, by: grant.by?.name ?? 'root' }, 'user granted')
      return { user: b.users(clock.now()).find((u) => u.id === statementId(grant))! }
    },

    async revoke (body) {
      const b = book()
      const revocation = parse(revocationSchema, (body as { revocation?: unknown } | undefined)?.revocation, 'revocation', "send { \"revocation\": <signed by an admin> } (the CLI does: 'murmur user revoke')")
      const problem = statementProblem(revocation, b.trust)
      if (problem !== null) throw new InputError('BAD_REVOCATION', `the revocation of ${revocation.name} is refused: ${problem}`)
      const grants = b.grantsNamed(revocation.name).filter((g) => g.issuedAt <= revocation.at).length
      if (grants === 0) throw new MurmurError('NO_SUCH_USER', `no user ${revocation.name} has a grant to revoke; 'murmur user list' lists the users`, 2, 404)
      await store({ id: `r-${statementId(revocation)}`, kind: 'statement', statement: revocation })
      log.warn({ user: revocation.name, grants, by: revocation.by?.name ?? 'root' }, 'user revoked')
      return { revoked: revocation.name, grants }
    },

    namespaces (caller) {
      const usage = init.usage()
      const names = new Set<string>([...usage.keys(), ...(init.book?.namespaces() ?? []), 'default'])
      const readable = [...names].filter((ns) => caller === null || permits(caller.grant, 'read', ns) === null).sort()
      return { namespaces: readable.map((ns) => view(ns, usage)) }
    },

    async setQuota (namespace, body) {
      const b = book()
      if (!NAMESPACE_RE.test(namespace)) throw new InputError('BAD_NAMESPACE', `'${namespace}' is not a namespace name: a DNS label (a-z, 0-9, '-', at most 63)`)
      const quota = parse(quotaSchema, (body as { quota?: unknown } | undefined)?.quota, 'quota', "send { \"quota\": <signed by an admin> } (the CLI does: 'murmur namespace quota')")
      if (quota.namespace !== namespace) throw new InputError('BAD_QUOTA', `the quota is signed for namespace ${quota.namespace}, not ${namespace}`)
      const problem = statementProblem(quota, b.trust)
      if (problem !== null) throw new InputError('BAD_QUOTA', `the quota for ${namespace} is refused: ${problem}`)
      const before = b.quota(namespace)
      if (before !== null && before.setAt >= quota.setAt) throw new MurmurError('STALE_QUOTA', `namespace ${namespace} has a quota set at ${new Date(before.setAt).toISOString()}, later than this one; sign it again`, 2, 409)
      // The rights of the new quota come into being here, in this node's own row: the quota less all minted so far.
      const rows = b.rows(namespace)
      const row = withMint(self, rows.find((r) => r.node === self), mint(rows, { cpuMillis: quota.cpuMillis, memoryBytes: quota.memoryBytes, instances: quota.instances }))
      await state.write((s) => {
        s.putAccess({ id: `q-${namespace}`, kind: 'statement', statement: quota })
        s.putAccess({ id: `share-${namespace}`, kind: 'share', namespace, minted: row.minted, given: row.given })
      })
      b.invalidate()
      log.info({ namespace, cpuMillis: quota.cpuMillis, memoryBytes: quota.memoryBytes, instances: quota.instances, by: quota.by?.name ?? 'root' }, 'namespace quota set')
      return view(namespace, init.usage())
    },
  }

  async function store (record: AccessRecord): Promise<void> {
    await state.write((s) => { s.putAccess(record) })
    init.book?.invalidate()
  }
}

/** Stores a grant a caller presented with a request (the first admin's, signed by the root key) unless the state has it. */
export async function learnGrant (state: StateService, book: AccessBook, grant: Grant): Promise<void> {
  if (book.has(grant)) return
  await state.write((s) => { s.putAccess({ id: `g-${statementId(grant)}`, kind: 'statement', statement: grant }) })
  book.invalidate()
}
