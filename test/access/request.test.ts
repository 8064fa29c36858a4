// Signed requests and their stored proofs, the replay cache, and dashboard tokens.

import { describe, expect, it } from 'vitest'
import {
  AUTH_SCHEME, GRANT_HEADER, type Proof, REQUEST_WINDOW_MS, ReplayCache, type Trust, type UserKey, bodyDigest, grantSchema, makeToken,
  newKeyPair, parseAuthorization, parseToken, proofOf, proofProblem, proofSchema, requestBytes, requestTimeProblem, signGrant,
  signBytes, signRequest, signRevocation,
} from '../../access/index.ts'

const root = newKeyPair()
const rootSigner = { privateKey: root.privateKey, grant: null }
const adaKey = newKeyPair()
const ada = signGrant({ name: 'ada', key: adaKey.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: 100, expiresAt: null }, rootSigner)
const annKey = newKeyPair()
const annGrant = signGrant({ name: 'ann', key: annKey.publicKey, role: 'submit', namespaces: ['web'], runAs: [1000], issuedAt: 200, expiresAt: null }, { privateKey: adaKey.privateKey, grant: ada })
const ann: UserKey = { name: 'ann', ...annKey, grant: annGrant }
const trust: Trust = { rootKey: root.publicKey, revocations: () => [] }
const NOW = 1_700_000_000_000
const body = '{"name":"web","image":"nginx"}'
const parts = { method: 'post', host: 'Node-1.example:4646', path: '/v1/jobs?ns=web', body }

/** What a node does with a request it received: parse the header, learn the grant, store the proof. */
function received (headers: Record<string, string>, keepBody = true): Proof {
  const header = parseAuthorization(headers.authorization!)
  if (typeof header === 'string') throw new Error(header)
  const grant = grantSchema.parse(JSON.parse(Buffer.from(headers[GRANT_HEADER]!, 'base64url').toString()))
  return proofOf(header, { method: 'POST', host: 'node-1.example:4646', path: '/v1/jobs?ns=web', digest: bodyDigest(body) }, grant, keepBody ? body : undefined)
}

describe('signed requests', () => {
  it('signs a request that a node verifies, and stores a proof that parses', () => {
    const headers = signRequest(ann, parts, NOW, '0123456789abcdef')
    expect(headers.authorization).toMatch(new RegExp(`^${AUTH_SCHEME} key=${ann.publicKey}, t=${NOW}, n=0123456789abcdef, s=[A-Za-z0-9_-]{86}$`))
    const proof = received(headers)
    expect(proofSchema.parse(proof)).toEqual(proof)
    expect(proofProblem(proof, trust)).toBeNull()
    expect(proofProblem(received(headers, false), trust)).toBeNull()
  })

  it('picks a fresh nonce when none is given, and sends no grant header without a grant', () => {
    const a = parseAuthorization(signRequest(ann, parts, NOW).authorization!)
    const b = parseAuthorization(signRequest(ann, parts, NOW).authorization!)
    expect(typeof a !== 'string' && typeof b !== 'string' && a.n !== b.n).toBe(true)
    expect(Object.keys(signRequest({ ...ann, grant: null }, parts, NOW))).toEqual(['authorization'])
  })

  it('breaks whatever field of a proof changes', () => {
    const proof = received(signRequest(ann, parts, NOW, '0123456789abcdef'))
    const other = newKeyPair()
    const changes: Array<Partial<Proof>> = [
      { key: other.publicKey }, { m: 'PUT' }, { h: 'node-2.example:4646' }, { p: '/v1/jobs?ns=prod' }, { d: bodyDigest('{}') },
      { t: NOW + 1 }, { n: '0123456789abcdee' }, { s: (proof.s[0] === 'A' ? 'B' : 'A') + proof.s.slice(1) },
      { grant: { ...annGrant, namespaces: ['*'] } }, { grant: ada }, { body: '{}' },
    ]
    for (const change of changes) expect(proofProblem({ ...proof, ...change }, trust), JSON.stringify(change)).not.toBeNull()
  })

  it('keeps a proof signed before its user\'s revocation, and refuses one signed after', () => {
    const r = signRevocation({ name: 'ann', at: NOW + 1_000 }, { privateKey: adaKey.privateKey, grant: ada })
    const revoked: Trust = { rootKey: root.publicKey, revocations: (n) => n === 'ann' ? [r] : [] }
    expect(proofProblem(received(signRequest(ann, parts, NOW)), revoked)).toBeNull()
    expect(proofProblem(received(signRequest(ann, parts, NOW + 1_000)), revoked)).toMatch(/^ann's request at .*: ann's grant of .* is revoked from/)
  })

  it('signs lines: upper-case method, lower-case host, and refuses line breaks', () => {
    const text = Buffer.from(requestBytes({ m: 'get', h: 'A.B', p: '/x?y=1', d: 'd', t: 5, n: 'n' })).toString()
    expect(text).toBe('murmur/request/1\nGET\na.b\n/x?y=1\nd\n5\nn')
    expect(() => requestBytes({ m: 'GET', h: 'a', p: '/x\nGET', d: 'd', t: 5, n: 'n' })).toThrow(/line breaks/)
  })

  it('answers garbage authorization headers with one line', () => {
    const good = signRequest(ann, parts, NOW, '0123456789abcdef').authorization!
    const garbage = [
      '', 'Bearer abc', 'Murmur', `${good}, x=1`, good.replace('t=', 'T='), good.replace(/t=\d+/, 't=-1'), good.replace(/t=\d+/, 't=1e9'),
      good.replace(/n=\w+/, 'n=xyz'), good.replace(/s=\S+/, 's=abc'), good.replace(/key=\S+,/, 'key=ed25519:abc,'), `${good}, s=again`, good + 'x'.repeat(600),
    ]
    for (const header of garbage) {
      const answer = parseAuthorization(header)
      expect(typeof answer, header.slice(0, 60)).toBe('string')
      expect(answer as string).not.toMatch(/\n/)
    }
    expect(parseAuthorization(good.replace('Murmur', 'murmur'))).toMatchObject({ t: NOW, n: '0123456789abcdef' })
  })

  it('checks the request time against the window', () => {
    expect(requestTimeProblem(NOW - REQUEST_WINDOW_MS, NOW)).toBeNull()
    expect(requestTimeProblem(NOW + REQUEST_WINDOW_MS, NOW)).toBeNull()
    expect(requestTimeProblem(NOW + REQUEST_WINDOW_MS + 1, NOW)).toMatch(/sync the clock \(NTP\) and retry$/)
  })
})

describe('replay cache', () => {
  it('admits a nonce once within the window, per key', () => {
    const cache = new ReplayCache(1_000, 10)
    expect(cache.admit('k', 'n1', 100, 100)).toBe('ok')
    expect(cache.admit('k', 'n1', 100, 500)).toBe('replay')
    expect(cache.admit('k2', 'n1', 100, 500)).toBe('ok')
    expect(cache.admit('k', 'n2', 100, 500)).toBe('ok')
  })

  it('forgets a nonce once its time leaves the window, and calls anything outside it a replay', () => {
    const cache = new ReplayCache(1_000, 10)
    expect(cache.admit('k', 'n', 100, 900)).toBe('ok')
    expect(cache.admit('k', 'n', 100, 1_100)).toBe('replay') // t + window, still inside
    expect(cache.admit('k', 'n', 100, 1_101)).toBe('replay') // outside: the time alone refuses it
    expect(cache.size).toBe(0)
    expect(cache.admit('k', 'n', 1_500, 1_101)).toBe('ok') // same nonce, a new time: a new request
    expect(cache.admit('k', 'x', Number.NaN, 1_101)).toBe('replay')
  })

  it('is full at max entries inside the window, and frees them as they expire', () => {
    const cache = new ReplayCache(1_000, 3)
    // out of t order: the heap expires the oldest t first
    expect(cache.admit('k', 'a', 300, 0)).toBe('ok')
    expect(cache.admit('k', 'b', 0, 0)).toBe('ok')
    expect(cache.admit('k', 'c', 200, 0)).toBe('ok')
    expect(cache.admit('k', 'd', 0, 0)).toBe('full')
    expect(cache.admit('k', 'a', 300, 0)).toBe('replay')
    expect(cache.admit('k', 'd', 1_000, 1_001)).toBe('ok') // b expired
    expect(cache.admit('k', 'e', 1_000, 1_001)).toBe('full')
    expect(cache.admit('k', 'e', 1_250, 1_250)).toBe('ok') // c expired
    expect(cache.size).toBe(3)
  })
})

describe('tokens', () => {
  it('speaks for its key until it expires', () => {
    const token = makeToken(ann, 60_000, NOW)
    expect(token).toMatch(/^mt1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}$/)
    expect(parseToken(token, NOW)).toEqual({ key: ann.publicKey, exp: NOW + 60_000 })
    expect(parseToken(token, NOW + 59_999)).toEqual({ key: ann.publicKey, exp: NOW + 60_000 })
    expect(parseToken(token, NOW + 60_000)).toMatch(/^the token expired at /)
    expect(parseToken(token, NOW - REQUEST_WINDOW_MS - 1)).toMatch(/issued in the future/)
  })

  it('caps the ttl at 24 h', () => {
    expect(() => makeToken(ann, 24 * 3_600_000 + 1, NOW)).toThrow(/a token lives between 1 ms and 24 h/)
    expect(() => makeToken(ann, 0, NOW)).toThrow(/a token lives/)
    expect(typeof parseToken(makeToken(ann, 24 * 3_600_000, NOW), NOW)).toBe('object')
  })

  it('refuses forgeries and garbage', () => {
    const token = makeToken(ann, 60_000, NOW)
    const [, payload, sig] = token.split('.') as [string, string, string]
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
    const longer = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 1 })).toString('base64url')
    const otherKey = Buffer.from(JSON.stringify({ ...claims, k: newKeyPair().publicKey })).toString('base64url')
    expect(parseToken(`mt1.${longer}.${sig}`, NOW)).toMatch(/signature does not match/)
    expect(parseToken(`mt1.${otherKey}.${sig}`, NOW)).toMatch(/signature does not match/)
    // a key signing its own token for longer than a day
    const self = { name: 'eve', ...newKeyPair(), grant: null }
    const day = makeToken(self, 24 * 3_600_000, NOW).split('.')
    const week = JSON.parse(Buffer.from(day[1]!, 'base64url').toString())
    week.exp += 6 * 24 * 3_600_000
    const weekPayload = Buffer.from(JSON.stringify(week)).toString('base64url')
    const weekToken = `mt1.${weekPayload}.${signBytes(self.privateKey, Buffer.from(`murmur/token/1\n${weekPayload}`))}`
    expect(parseToken(weekToken, NOW)).toMatch(/longer than 24 h/)
    for (const garbage of ['', 'mt1', 'mt1..', 'mt2.a.b', `mt1.${payload}`, `mt1.!!.${sig}`, `mt1.${Buffer.from('[]').toString('base64url')}.${sig}`, 'x'.repeat(1_000)]) {
      expect(typeof parseToken(garbage, NOW), garbage.slice(0, 30)).toBe('string')
    }
  })
})
