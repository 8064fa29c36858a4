// Statements: what is signed, their schemas and bounds, and that a change to any
// field of a grant, revocation or quota breaks it.

import { describe, expect, it } from 'vitest'
import {
  ACCESS_LIMITS, type Grant, type Revocation, type Trust, AccessError, canonicalJson, grantProblem, grantSchema, newKeyPair, quotaSchema,
  revocationSchema, signGrant, signQuota, signRevocation, statementBytes, statementId, statementProblem, statementSchema,
} from '../../access/index.ts'

const root = newKeyPair()
const rootSigner = { privateKey: root.privateKey, grant: null }
const trust: Trust = { rootKey: root.publicKey, revocations: () => [] }
const adminKey = newKeyPair()
const admin = signGrant({ name: 'ada', key: adminKey.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: 100, expiresAt: null }, rootSigner)
const adminSigner = { privateKey: adminKey.privateKey, grant: admin }
const other = signGrant({ name: 'oto', key: newKeyPair().publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: 100, expiresAt: null }, rootSigner)
const userKey = newKeyPair()
const user = signGrant({ name: 'ann', key: userKey.publicKey, role: 'submit', namespaces: ['web', 'batch'], runAs: [1000, 1001], issuedAt: 200, expiresAt: 10_000 }, adminSigner)

describe('signing', () => {
  it('signs statements that parse and verify', () => {
    expect(grantSchema.parse(user)).toEqual(user)
    expect(statementSchema.parse(user)).toEqual(user)
    expect(grantProblem(user, 300, trust)).toBeNull()
    const r = signRevocation({ name: 'ann', at: 500 }, adminSigner)
    expect(revocationSchema.parse(r)).toEqual(r)
    expect(statementProblem(r, trust)).toBeNull()
    const q = signQuota({ namespace: 'web', cpuMillis: 4000, memoryBytes: null, instances: 10, setAt: 300 }, adminSigner)
    expect(quotaSchema.parse(q)).toEqual(q)
    expect(statementProblem(q, trust)).toBeNull()
  })

  it('signs only the body\'s fields', () => {
    const g = signGrant({ ...admin, extra: 1 } as never, rootSigner)
    expect(Object.keys(g).sort()).toEqual(['by', 'expiresAt', 'issuedAt', 'key', 'name', 'namespaces', 'role', 'runAs', 'sig', 'type'])
  })

  it('refuses to sign with a key that is not the grant\'s, as a non-admin, or a bad body', () => {
    expect(() => signGrant({ ...user, name: 'bob' }, { privateKey: root.privateKey, grant: admin })).toThrow(/the signing key is not ada's/)
    expect(() => signRevocation({ name: 'bob', at: 1 }, { privateKey: userKey.privateKey, grant: user })).toThrow(/ann is a submit, not an admin/)
    expect(() => signGrant({ ...user, name: 'Bob' }, rootSigner)).toThrow(AccessError)
    expect(() => signGrant({ ...user, namespaces: ['Web'] }, rootSigner)).toThrow(/namespaces\.0: /)
    expect(() => signGrant({ ...user, expiresAt: user.issuedAt }, rootSigner)).toThrow(/expires after it is issued/)
    expect(() => signQuota({ namespace: '*', cpuMillis: null, memoryBytes: null, instances: null, setAt: 1 }, rootSigner)).toThrow(AccessError)
  })

  it('signs a domain line and canonical JSON, with by replaced by its signature', () => {
    const text = Buffer.from(statementBytes(user)).toString()
    expect(text.startsWith('murmur/grant/1\n{"by":"' + admin.sig + '","expiresAt":10000,')).toBe(true)
    expect(text).not.toContain(user.sig)
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: null }], e: undefined })).toBe('{"a":[{"c":null,"d":2}],"b":1}')
    expect(statementId(user)).toMatch(/^[0-9a-f]{16}$/)
    expect(statementId(user)).not.toBe(statementId(admin))
  })
})

describe('tampering', () => {
  // Each field changed to another value that still parses.
  const grantChanges: Record<keyof Grant, (g: Grant) => Grant> = {
    type: (g) => ({ ...g, type: 'revoke' } as never),
    name: (g) => ({ ...g, name: 'bob' }),
    key: (g) => ({ ...g, key: newKeyPair().publicKey }),
    role: (g) => ({ ...g, role: g.role === 'admin' ? 'operator' : 'admin' }),
    namespaces: (g) => ({ ...g, namespaces: [...g.namespaces, 'prod'] }),
    runAs: (g) => ({ ...g, runAs: [...g.runAs, 0] }),
    issuedAt: (g) => ({ ...g, issuedAt: g.issuedAt - 1 }),
    expiresAt: (g) => ({ ...g, expiresAt: g.expiresAt === null ? 1_000_000 : null }),
    by: (g) => ({ ...g, by: other }),
    sig: (g) => ({ ...g, sig: (g.sig[0] === 'A' ? 'B' : 'A') + g.sig.slice(1) }),
  }

  it('breaks a grant whatever field changes', () => {
    for (const [field, change] of Object.entries(grantChanges)) {
      expect(grantProblem(change(user), 300, trust), field).not.toBeNull()
    }
    expect(grantProblem({ ...user, by: null }, 300, trust)).toMatch(/not signed by the root key/)
  })

  it('breaks a grant whatever field of its issuer\'s grant changes', () => {
    for (const [field, change] of Object.entries(grantChanges)) {
      if (field === 'sig') continue // a new issuer signature is a different `by` in the user's signed bytes: covered below
      expect(grantProblem({ ...user, by: change(admin) }, 300, trust), field).not.toBeNull()
    }
    expect(grantProblem({ ...user, by: grantChanges.sig(admin) }, 300, trust)).not.toBeNull()
  })

  it('breaks a revocation or a quota whatever field changes', () => {
    const r = signRevocation({ name: 'ann', at: 500 }, adminSigner)
    const revChanges: Array<(r: Revocation) => Revocation> = [
      (x) => ({ ...x, type: 'quota' } as never), (x) => ({ ...x, name: 'bob' }), (x) => ({ ...x, at: 501 }),
      (x) => ({ ...x, by: other }), (x) => ({ ...x, by: null }), (x) => ({ ...x, sig: grantChanges.sig(x as never).sig }),
    ]
    for (const change of revChanges) expect(statementProblem(change(r), trust)).not.toBeNull()
    const q = signQuota({ namespace: 'web', cpuMillis: 4000, memoryBytes: 1 << 30, instances: 10, setAt: 300 }, adminSigner)
    for (const change of [
      { namespace: 'batch' }, { cpuMillis: 4001 }, { cpuMillis: null }, { memoryBytes: 1 }, { instances: null }, { setAt: 301 }, { by: other }, { by: null },
      { sig: grantChanges.sig(q as never).sig }, { type: 'grant' },
    ]) {
      expect(statementProblem({ ...q, ...change } as never, trust), JSON.stringify(change)).not.toBeNull()
    }
  })
})

describe('schemas', () => {
  it('refuses unknown fields and out-of-range values', () => {
    expect(grantSchema.safeParse({ ...user, extra: 1 }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, runAs: [-1] }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, runAs: [1.5] }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, role: 'root' }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, namespaces: Array.from({ length: ACCESS_LIMITS.namespacesMax + 1 }, (_, i) => `n${i}`) }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, by: { ...admin, extra: 1 } }).success).toBe(false)
    expect(grantSchema.safeParse({ ...user, sig: 'x' }).success).toBe(false)
    expect(statementSchema.safeParse({ ...user, type: 'other' }).success).toBe(false)
  })

  it('bounds the chain\'s depth and the statement\'s bytes', () => {
    let g: Grant = admin
    let key = adminKey
    for (let i = 0; i < ACCESS_LIMITS.chainDepthMax; i++) {
      const next = newKeyPair()
      g = signGrant({ name: `a${i}`, key: next.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: 100, expiresAt: null }, { privateKey: key.privateKey, grant: g })
      key = next
    }
    // admin, then 8 more: the last is 8 grants from the root key, which is the limit
    expect(grantSchema.safeParse(g).success).toBe(true)
    expect(grantProblem(g, 300, trust)).toBeNull()
    const tooDeep = { ...user, by: g }
    expect(grantSchema.safeParse(tooDeep).error?.issues[0]?.message).toMatch(/at most 8 grants from the root key/)
    expect(() => signGrant({ ...user, name: 'deep' }, { privateKey: key.privateKey, grant: g })).toThrow(/at most 8 grants/)
    expect(grantProblem(tooDeep, 300, trust)).toMatch(/more than 8 grants from the root key/)
    // a bomb of nesting is refused before the recursive shape walks it
    let bomb: unknown = null
    for (let i = 0; i < 100_000; i++) bomb = { ...user, by: bomb }
    expect(grantSchema.safeParse(bomb).success).toBe(false)
    const wide = { ...user, namespaces: Array.from({ length: 64 }, (_, i) => `n${i}-${'x'.repeat(55)}`) }
    const chain = { ...wide, by: { ...wide, by: { ...wide, by: { ...wide, by: null } } } }
    expect(grantSchema.safeParse(chain).error?.issues[0]?.message).toMatch(/at most 16384 bytes/)
  })
})
