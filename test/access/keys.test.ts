// Keys: their text, signatures, and key files, round trip and garbage.

import { describe, expect, it } from 'vitest'
import {
  AccessError, KEY_PREFIX, encodeRootKey, encodeUserKey, isPublicKeyText, newKeyPair, parsePublicKey, parseRootKey, parseUserKey,
  publicKeyText, signBytes, signGrant, verifyBytes,
} from '../../access/index.ts'

const bytes = Buffer.from('hello')

describe('public keys and signatures', () => {
  it('writes a public key as ed25519: and 43 base64url characters, one text per key', () => {
    const { publicKey, privateKey } = newKeyPair()
    expect(publicKey).toMatch(/^ed25519:[A-Za-z0-9_-]{43}$/)
    expect(publicKeyText(privateKey)).toBe(publicKey)
    expect(isPublicKeyText(publicKey)).toBe(true)
    expect(isPublicKeyText(publicKey.slice(KEY_PREFIX.length))).toBe(false)
    expect(isPublicKeyText(publicKey + 'A')).toBe(false)
    expect(isPublicKeyText(`${KEY_PREFIX}${'A'.repeat(42)}B`)).toBe(false) // non-canonical last character
  })

  it('verifies its own signatures only', () => {
    const a = newKeyPair()
    const b = newKeyPair()
    const sig = signBytes(a.privateKey, bytes)
    expect(sig).toMatch(/^[A-Za-z0-9_-]{86}$/)
    expect(verifyBytes(a.publicKey, bytes, sig)).toBe(true)
    expect(verifyBytes(b.publicKey, bytes, sig)).toBe(false)
    expect(verifyBytes(a.publicKey, Buffer.from('hellO'), sig)).toBe(false)
  })

  it('answers false, never throws, for malformed keys and signatures', () => {
    const a = newKeyPair()
    const sig = signBytes(a.privateKey, bytes)
    for (const key of ['', 'ed25519:', 'ed25519:!!', a.publicKey.slice(0, -1), a.publicKey.replace('ed25519:', 'rsa:'), `${KEY_PREFIX}${'_'.repeat(43)}`]) {
      expect(verifyBytes(key, bytes, sig)).toBe(false)
    }
    for (const s of ['', 'abc', sig.slice(0, -1), `${sig}=`, sig.slice(0, -2) + '==']) {
      expect(verifyBytes(a.publicKey, bytes, s)).toBe(false)
    }
  })
})

describe('key files', () => {
  const where = '/home/ann/.murmur/ann.key'

  it('round-trips a user key, with and without a grant', () => {
    const root = newKeyPair()
    const pair = newKeyPair()
    const grant = signGrant({ name: 'ann', key: pair.publicKey, role: 'submit', namespaces: ['web'], runAs: [1000], issuedAt: 1, expiresAt: null }, { privateKey: root.privateKey, grant: null })
    for (const g of [null, grant]) {
      const text = encodeUserKey({ name: 'ann', ...pair, grant: g })
      const back = parseUserKey(text, where)
      expect(back.name).toBe('ann')
      expect(back.publicKey).toBe(pair.publicKey)
      expect(back.grant).toEqual(g)
      expect(publicKeyText(back.privateKey)).toBe(pair.publicKey)
      expect(JSON.parse(text).murmur).toBe('user-key/1')
    }
  })

  it('round-trips a root key', () => {
    const root = newKeyPair()
    const back = parseRootKey(encodeRootKey(root), where)
    expect(back.publicKey).toBe(root.publicKey)
    expect(verifyBytes(root.publicKey, bytes, signBytes(back.privateKey, bytes))).toBe(true)
  })

  it('refuses garbage with one line that names the file', () => {
    const pair = newKeyPair()
    const other = newKeyPair()
    const good = JSON.parse(encodeUserKey({ name: 'ann', ...pair, grant: null }))
    const root = newKeyPair()
    const foreignGrant = signGrant({ name: 'bob', key: other.publicKey, role: 'read', namespaces: [], runAs: [], issuedAt: 1, expiresAt: null }, { privateKey: root.privateKey, grant: null })
    const garbage = [
      '', 'not json', '[]', 'null', '{}',
      JSON.stringify({ ...good, murmur: 'user-key/2' }),
      encodeRootKey(root),
      JSON.stringify({ ...good, extra: 1 }),
      JSON.stringify({ ...good, name: 'Ann' }),
      JSON.stringify({ ...good, publicKey: 'ed25519:xyz' }),
      JSON.stringify({ ...good, privateKey: 'short' }),
      JSON.stringify({ ...good, privateKey: JSON.parse(encodeRootKey(other)).privateKey }),
      JSON.stringify({ ...good, grant: { type: 'grant' } }),
      JSON.stringify({ ...good, grant: foreignGrant }),
      'x'.repeat(100_000),
    ]
    for (const text of garbage) {
      let error: unknown
      try {
        parseUserKey(text, where)
      } catch (e) {
        error = e
      }
      expect(error, text.slice(0, 80)).toBeInstanceOf(AccessError)
      const message = (error as AccessError).message
      expect(message.startsWith(`${where}: `)).toBe(true)
      expect(message).not.toMatch(/\n/)
      expect(message.length).toBeLessThan(300)
    }
    expect(() => parseRootKey(encodeUserKey({ name: 'ann', ...pair, grant: null }), where)).toThrow(/not a murmur root key file \(it is a user key\)/)
  })

  it('parses a public key given as text, trimmed', () => {
    const { publicKey } = newKeyPair()
    expect(parsePublicKey(`  ${publicKey}\n`, '--key')).toBe(publicKey)
    expect(() => parsePublicKey('ssh-ed25519 AAAA', '--key')).toThrow(/^--key: "ssh-ed25519 AAAA" is not a murmur public key; /)
  })
})
