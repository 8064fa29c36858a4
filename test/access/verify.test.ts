// Grants in force or not: chains from the root key, revocations by time (of users,
// of admins, of each other), expiry, the depth of chains, and what roles permit.

import { describe, expect, it } from 'vitest'
import {
  type Grant, type GrantBody, type Revocation, type Signer, type Trust, grantProblem, mayRunAs, newKeyPair, permits, signBytes,
  signGrant, signRevocation, statementBytes, statementProblem,
} from '../../access/index.ts'

const root = newKeyPair()
const rootSigner: Signer = { privateKey: root.privateKey, grant: null }

function trustOf (revocations: Revocation[]): Trust {
  return { rootKey: root.publicKey, revocations: (name) => revocations.filter((r) => r.name === name) }
}

/** A new key and a grant for it, signed by `signer`; returns the user's signer too, for admins. */
function grant (name: string, signer: Signer, body: Partial<GrantBody> = {}): { grant: Grant, signer: Signer } {
  const pair = newKeyPair()
  const g = signGrant({ name, key: pair.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: 100, expiresAt: null, ...body }, signer)
  return { grant: g, signer: { privateKey: pair.privateKey, grant: g } }
}

describe('chains', () => {
  const ada = grant('ada', rootSigner)
  const ann = grant('ann', ada.signer, { role: 'submit', namespaces: ['web'], issuedAt: 200 })

  it('holds a grant signed by root, and one signed by an admin root granted', () => {
    const trust = trustOf([])
    expect(grantProblem(ada.grant, 100, trust)).toBeNull()
    expect(grantProblem(ann.grant, 200, trust)).toBeNull()
  })

  it('refuses a chain under another root key', () => {
    expect(grantProblem(ann.grant, 300, { rootKey: newKeyPair().publicKey, revocations: () => [] })).toMatch(/ann's grant is signed by ada, whose grant was not in force .*: ada's grant is not signed by the root key/)
  })

  it('refuses a grant signed by someone who is not an admin', () => {
    // signGrant refuses to, so sign by hand as a forger would
    const op = grant('oscar', ada.signer, { role: 'operator', issuedAt: 150 })
    const forged: Grant = { type: 'grant', name: 'eve', key: newKeyPair().publicKey, role: 'admin', namespaces: ['*'], runAs: [0], issuedAt: 200, expiresAt: null, by: op.grant, sig: '' }
    forged.sig = signBytes(op.signer.privateKey, statementBytes(forged))
    expect(grantProblem(forged, 300, trustOf([]))).toMatch(/is signed by oscar, who is not an admin/)
  })

  it('needs the issuer in force when it issued, not later', () => {
    const tmp = grant('tim', rootSigner, { expiresAt: 5_000 })
    const before = grant('bea', tmp.signer, { role: 'read', issuedAt: 4_999 })
    const at = grant('cal', tmp.signer, { role: 'read', issuedAt: 5_000 })
    expect(grantProblem(before.grant, 9_000, trustOf([]))).toBeNull()
    expect(grantProblem(at.grant, 9_000, trustOf([]))).toMatch(/cal's grant is signed by tim, whose grant was not in force at .*: tim's grant expired/)
  })
})

describe('time', () => {
  it('holds a grant from issuedAt to just before expiresAt', () => {
    const g = grant('ann', rootSigner, { issuedAt: 1_000, expiresAt: 2_000 }).grant
    const trust = trustOf([])
    expect(grantProblem(g, 999, trust)).toMatch(/ann's grant is issued at 1970-01-01T00:00:01.000Z, after 1970-01-01T00:00:00.999Z/)
    expect(grantProblem(g, 1_000, trust)).toBeNull()
    expect(grantProblem(g, 1_999, trust)).toBeNull()
    expect(grantProblem(g, 2_000, trust)).toMatch(/ann's grant expired at .*; ask an admin to grant it again/)
    expect(grantProblem(g, Number.NaN, trust)).toMatch(/not a time in ms/)
  })
})

describe('revocation', () => {
  it('revokes a user from its time on, and adding them again later holds', () => {
    const ada = grant('ada', rootSigner)
    const ann1 = grant('ann', ada.signer, { role: 'read', issuedAt: 200 }).grant
    const r = signRevocation({ name: 'ann', at: 500 }, ada.signer)
    const trust = trustOf([r])
    expect(statementProblem(r, trust)).toBeNull()
    expect(grantProblem(ann1, 499, trust)).toBeNull()
    expect(grantProblem(ann1, 500, trust)).toMatch(/ann's grant of .* is revoked from 1970-01-01T00:00:00.500Z/)
    expect(grantProblem(ann1, 10_000, trust)).not.toBeNull()
    const ann2 = grant('ann', ada.signer, { role: 'read', issuedAt: 501 }).grant
    expect(grantProblem(ann2, 10_000, trust)).toBeNull()
    // a grant issued at the revocation's very time is revoked too: "issued at or before"
    const ann3 = grant('ann', ada.signer, { role: 'read', issuedAt: 500 }).grant
    expect(grantProblem(ann3, 10_000, trust)).not.toBeNull()
  })

  it('refuses an admin\'s grant issued after its own revocation, and keeps one issued before', () => {
    const ada = grant('ada', rootSigner)
    const r = signRevocation({ name: 'ada', at: 1_000 }, rootSigner)
    const trust = trustOf([r])
    const before = grant('bea', ada.signer, { role: 'read', issuedAt: 999 }).grant
    const after = grant('cal', ada.signer, { role: 'read', issuedAt: 1_000 }).grant
    expect(grantProblem(before, 50_000, trust)).toBeNull()
    expect(grantProblem(after, 50_000, trust)).toMatch(/cal's grant is signed by ada, whose grant was not in force .* revoked/)
    // and a revocation she signs after hers is no revocation at all
    const late = signRevocation({ name: 'bea', at: 2_000 }, ada.signer)
    expect(statementProblem(late, trustOf([r, late]))).toMatch(/the revocation of bea is signed by ada, whose grant was not in force/)
    expect(grantProblem(before, 50_000, trustOf([r, late]))).toBeNull()
  })

  it('lets an admin revoke itself, and refuses revocations by non-admins or of the wrong name', () => {
    const ada = grant('ada', rootSigner)
    const self = signRevocation({ name: 'ada', at: 300 }, ada.signer)
    expect(statementProblem(self, trustOf([self]))).toBeNull()
    expect(grantProblem(ada.grant, 300, trustOf([self]))).not.toBeNull()
    const reader = grant('rob', ada.signer, { role: 'read', issuedAt: 100 })
    const forged: Revocation = { type: 'revoke', name: 'ada', at: 200, by: reader.grant, sig: '' }
    forged.sig = signBytes(reader.signer.privateKey, statementBytes(forged))
    expect(statementProblem(forged, trustOf([forged]))).toMatch(/signed by rob, who is not an admin/)
    expect(grantProblem(ada.grant, 250, trustOf([forged]))).toBeNull()
    // a trust that hands back someone else's revocation does not revoke
    const bob = signRevocation({ name: 'bob', at: 150 }, rootSigner)
    expect(grantProblem(ada.grant, 250, { rootKey: root.publicKey, revocations: () => [bob] })).toBeNull()
  })

  it('settles two admins who revoke each other, and ends', () => {
    const a = grant('aya', rootSigner)
    const b = grant('bo', rootSigner)
    // at the same time: both were in force just before, so both are revoked
    const ab = signRevocation({ name: 'bo', at: 1_000 }, a.signer)
    const ba = signRevocation({ name: 'aya', at: 1_000 }, b.signer)
    expect(grantProblem(a.grant, 2_000, trustOf([ab, ba]))).not.toBeNull()
    expect(grantProblem(b.grant, 2_000, trustOf([ab, ba]))).not.toBeNull()
    expect(grantProblem(a.grant, 999, trustOf([ab, ba]))).toBeNull()
    // the first one wins
    const ba2 = signRevocation({ name: 'aya', at: 1_001 }, b.signer)
    expect(grantProblem(a.grant, 2_000, trustOf([ab, ba2]))).toBeNull()
    expect(grantProblem(b.grant, 2_000, trustOf([ab, ba2]))).not.toBeNull()
  })

  it('ends on long alternations of revocations, the same way every time', () => {
    const a = grant('aya', rootSigner)
    const b = grant('bo', rootSigner)
    const all: Revocation[] = []
    for (let t = 101; t < 1_101; t++) all.push(t % 2 === 1 ? signRevocation({ name: 'bo', at: t }, a.signer) : signRevocation({ name: 'aya', at: t }, b.signer))
    const started = performance.now()
    expect(grantProblem(a.grant, 5_000, trustOf(all))).toBeNull()
    expect(grantProblem(b.grant, 5_000, trustOf(all))).not.toBeNull()
    expect(grantProblem(a.grant, 5_000, trustOf([...all].reverse()))).toBeNull()
    expect(performance.now() - started).toBeLessThan(2_000)
    // beyond the step bound, a refusal, and every node gives the same
    const more = [...all]
    for (let t = 1_101; t < 3_101; t++) more.push(t % 2 === 1 ? signRevocation({ name: 'bo', at: t }, a.signer) : signRevocation({ name: 'aya', at: t }, b.signer))
    const first = grantProblem(a.grant, 5_000, trustOf(more))
    expect(first).toBe('checking aya\'s grant takes more than 1024 steps (too many revocations of revokers); ask an admin to grant it again')
    expect(grantProblem(a.grant, 5_000, trustOf([...more].reverse()))).toBe(first)
  })
})

describe('permits', () => {
  const body = { issuedAt: 1, namespaces: ['web', 'batch'] }
  const as = (role: Grant['role'], namespaces = body.namespaces) => grant('ann', rootSigner, { ...body, role, namespaces }).grant

  it('gives each role its operations', () => {
    const expected: Record<Grant['role'], string[]> = {
      admin: ['read', 'submit', 'operate', 'admin'],
      operator: ['read', 'operate'],
      submit: ['read', 'submit'],
      read: ['read'],
    }
    for (const [role, ops] of Object.entries(expected) as Array<[Grant['role'], string[]]>) {
      const g = as(role)
      for (const op of ['read', 'submit', 'operate', 'admin'] as const) {
        expect(permits(g, op, 'web') === null, `${role} ${op}`).toBe(ops.includes(op))
      }
    }
  })

  it('keeps submit and read to their namespaces, operator and admin to none', () => {
    expect(permits(as('submit'), 'submit', 'prod')).toBe('ann (role submit, namespaces web,batch) may not submit in namespace prod; use one of its namespaces or ask an admin for a grant that adds prod')
    expect(permits(as('read'), 'read', 'prod')).not.toBeNull()
    expect(permits(as('read', ['*']), 'read', 'prod')).toBeNull()
    expect(permits(as('submit', ['*']), 'submit', 'prod')).toBeNull()
    expect(permits(as('operator', []), 'operate', 'prod')).toBeNull()
    expect(permits(as('operator', []), 'read', 'prod')).toBeNull()
    expect(permits(as('admin', []), 'submit', 'prod')).toBeNull()
    expect(permits(as('read'), 'operate')).toBe('ann (role read, namespaces web,batch) may not operate; ask an admin for a grant with role operator')
  })

  it('allows cluster-wide reads to every role, and nothing else without a namespace', () => {
    expect(permits(as('read', []), 'read')).toBeNull()
    expect(permits(as('submit'), 'submit')).toMatch(/may submit only in a namespace/)
    expect(permits(as('operator'), 'operate')).toBeNull()
  })

  it('runs tasks only as the uids the grant lists, root included', () => {
    const g = grant('ann', rootSigner, { runAs: [1000] }).grant
    expect(mayRunAs(g, 1000)).toBe(true)
    expect(mayRunAs(g, 0)).toBe(false)
    expect(mayRunAs(grant('ann', rootSigner, { runAs: [0] }).grant, 0)).toBe(true)
  })
})
