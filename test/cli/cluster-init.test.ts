// `murmur cluster init` as a user runs it: a new key file of mode 0600 (its dir
// 0700), instructions on stdout, never an existing key replaced without --force.

import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readClusterKey } from '../../node/config.ts'
import { murmur, userLines } from '../helpers/cli.ts'

let home = ''
beforeAll(async () => { home = await mkdtemp(join(tmpdir(), 'murmur-init-')) })
afterAll(async () => { await rm(home, { recursive: true, force: true }) })

describe('murmur cluster init', () => {
  it('writes ~/.murmur/cluster.key, mode 0600 in a dir of 0700, and says how to use it', async () => {
    const result = await murmur(['cluster', 'init'], { env: { HOME: home } })
    expect(result.code, result.stderr).toBe(0)
    const file = join(home, '.murmur', 'cluster.key')
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(join(home, '.murmur'))).mode & 0o777).toBe(0o700)
    expect(readClusterKey(file)).toHaveLength(95)
    expect(result.stdout).toContain(`wrote a new cluster key to ${file} (mode 0600)`)
    expect(result.stdout).toContain(`murmur node start --cluster-key ${file}`)
    expect(result.stdout).toMatch(/copy it to every node over a secure channel/i)
  })

  it('refuses to overwrite a key with one line and exit 2; --force replaces it', async () => {
    const file = join(home, 'out', 'prod.key')
    expect((await murmur(['cluster', 'init', '--out', file])).code).toBe(0)
    const before = await readFile(file)
    const again = await murmur(['cluster', 'init', '--out', file])
    expect(again.code).toBe(2)
    expect(userLines(again.stderr)).toEqual([`murmur: ${file} already exists: every node holding it would be locked out by a new key; give another --out, or --force to replace it`])
    expect((await readFile(file)).equals(before)).toBe(true)
    const forced = await murmur(['cluster', 'init', '--out', file, '--force', '--json'])
    expect(forced.code, forced.stderr).toBe(0)
    expect(JSON.parse(forced.stdout)).toEqual({ keyFile: file, mode: '0600' })
    expect((await readFile(file)).equals(before)).toBe(false)
  })
})
