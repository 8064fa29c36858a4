// `murmur cluster init` as a user runs it: a new cluster key of mode 0600 (its dir
// 0700) and beside it root.pub, root.key and admin.key (the first admin, granted by
// the root key), instructions on stdout, never an existing file replaced without --force.

import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parsePublicKey, parseRootKey, parseUserKey } from '../../access/keys.ts'
import { grantProblem } from '../../access/verify.ts'
import { readClusterKey } from '../../node/config.ts'
import { murmur, userLines } from '../helpers/cli.ts'

let home = ''
beforeAll(async () => { home = await mkdtemp(join(tmpdir(), 'murmur-init-')) })
afterAll(async () => { await rm(home, { recursive: true, force: true }) })

describe('murmur cluster init', () => {
  it('writes ~/.murmur/cluster.key, mode 0600 in a dir of 0700, root.pub, root.key and admin.key beside it, and says how to use them', async () => {
    const result = await murmur(['cluster', 'init'], { env: { HOME: home } })
    expect(result.code, result.stderr).toBe(0)
    const dir = join(home, '.murmur')
    const file = join(dir, 'cluster.key')
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(dir)).mode & 0o777).toBe(0o700)
    expect(readClusterKey(file)).toHaveLength(95)
    // The private keys are their owner's alone; the root public key is no secret.
    expect((await stat(join(dir, 'root.key'))).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, 'admin.key'))).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, 'root.pub'))).mode & 0o777).toBe(0o644)
    const rootPub = parsePublicKey(await readFile(join(dir, 'root.pub'), 'utf8'), 'root.pub')
    expect(parseRootKey(await readFile(join(dir, 'root.key'), 'utf8'), 'root.key').publicKey).toBe(rootPub)
    // The first admin: every namespace, its grant signed by that root key.
    const admin = parseUserKey(await readFile(join(dir, 'admin.key'), 'utf8'), 'admin.key')
    expect(admin.name).toBe('admin')
    expect(admin.grant).toMatchObject({ name: 'admin', key: admin.publicKey, role: 'admin', namespaces: ['*'], expiresAt: null })
    expect(grantProblem(admin.grant!, Date.now(), { rootKey: rootPub, revocations: () => [] })).toBeNull()
    expect(result.stdout).toContain(`wrote a new cluster to ${file} and beside it:`)
    expect(result.stdout).toContain(`murmur node start --cluster-key ${file} --root-key ${join(dir, 'root.pub')}`)
    expect(result.stdout).toContain(`murmur --key ${join(dir, 'admin.key')} --api http://<node>:7947 user add`)
    expect(result.stdout).toMatch(/copy the network key over a secure channel/i)
  })

  it('refuses to overwrite a key with one line and exit 2; --force replaces it', async () => {
    const file = join(home, 'out', 'prod.key')
    expect((await murmur(['cluster', 'init', '--out', file])).code).toBe(0)
    const before = await readFile(file)
    const again = await murmur(['cluster', 'init', '--out', file])
    expect(again.code).toBe(2)
    expect(userLines(again.stderr)).toEqual([`murmur: ${file} already exists: every node and user of that cluster would be locked out by new keys; give another --out, or --force to replace them`])
    expect((await readFile(file)).equals(before)).toBe(true)
    // Any one of the files beside it is enough to refuse: a new key would lock out that cluster's users.
    const other = join(home, 'out2', 'prod.key')
    expect((await murmur(['cluster', 'init', '--out', other])).code).toBe(0)
    await rm(other)
    const besides = await murmur(['cluster', 'init', '--out', other])
    expect(besides.code).toBe(2)
    expect(userLines(besides.stderr)).toEqual([`murmur: ${join(home, 'out2', 'root.pub')} already exists: every node and user of that cluster would be locked out by new keys; give another --out, or --force to replace them`])
    const rootBefore = await readFile(join(home, 'out', 'root.pub'), 'utf8')
    const forced = await murmur(['cluster', 'init', '--out', file, '--force', '--json'])
    expect(forced.code, forced.stderr).toBe(0)
    const out = join(home, 'out')
    const rootAfter = await readFile(join(out, 'root.pub'), 'utf8')
    expect(JSON.parse(forced.stdout)).toEqual({ keyFile: file, rootPub: join(out, 'root.pub'), rootKey: join(out, 'root.key'), adminKey: join(out, 'admin.key'), rootPublicKey: rootAfter.trim(), admin: 'admin', mode: '0600' })
    expect((await readFile(file)).equals(before)).toBe(false)
    expect(rootAfter).not.toBe(rootBefore)
  })
})
