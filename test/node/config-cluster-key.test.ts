// The node config's cluster key, root key and API address rules: where the key file
// comes from (flag, then environment), what makes a key file unusable (missing, open
// to other users, not a key), a start without one, a closed cluster's root key, and
// an API kept on loopback when there are no users to check.
// Every refusal is one line naming the flag or variable and the fix.

import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { preSharedKey } from '@libp2p/pnet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RawNodeOptions, nodeConfig, readClusterKey, writeClusterKey } from '../../node/config.ts'
import { InputError } from '../../node/errors.ts'
import { writeClusterFiles } from '../../cli/cluster-files.ts'

let dir = ''
let key = ''
/** The root.pub beside `key`, and the key it holds. */
let rootPub = ''
let rootPublicKey = ''
const noEnv = {}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'murmur-config-'))
  const files = writeClusterFiles(join(dir, 'cluster.key'))
  key = files.clusterKey
  rootPub = files.rootPub
  rootPublicKey = files.rootPublicKey
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** The one-line InputError nodeConfig throws for these options. */
function refusal (raw: RawNodeOptions, env: Record<string, string | undefined> = noEnv): string {
  try {
    nodeConfig(raw, env)
  } catch (err) {
    expect(err).toBeInstanceOf(InputError)
    const message = (err as Error).message
    expect(message).not.toContain('\n')
    return message
  }
  throw new Error('nodeConfig accepted it')
}

describe('the cluster key in the node config', () => {
  it('is taken from --cluster-key', () => {
    const config = nodeConfig({ clusterKey: key, rootKey: rootPub }, noEnv)
    expect(config.clusterKeyFile).toBe(key)
    expect(config.insecureOpenCluster).toBe(false)
    expect(config.rootKey).toBe(rootPublicKey)
  })

  it('is taken from MURMUR_CLUSTER_KEY_FILE when no flag names one; the flag wins', () => {
    expect(nodeConfig({ rootKey: rootPub }, { MURMUR_CLUSTER_KEY_FILE: key }).clusterKeyFile).toBe(key)
    expect(nodeConfig({ clusterKey: key, rootKey: rootPub }, { MURMUR_CLUSTER_KEY_FILE: join(dir, 'nowhere') }).clusterKeyFile).toBe(key)
  })

  it('is required: without one the node refuses, saying how to make one', () => {
    expect(refusal({})).toBe("no cluster key: make one with 'murmur cluster init', copy it to every node, and start with --cluster-key <file> (or --insecure-open-cluster to let anyone who reaches the port join)")
    expect(refusal({}, { MURMUR_CLUSTER_KEY_FILE: '' })).toMatch(/^no cluster key/)
  })

  it('--insecure-open-cluster runs without one, and not with one', () => {
    const config = nodeConfig({ insecureOpenCluster: true }, noEnv)
    expect(config.clusterKeyFile).toBeNull()
    expect(config.insecureOpenCluster).toBe(true)
    expect(refusal({ insecureOpenCluster: true, clusterKey: key })).toBe(`--insecure-open-cluster and --cluster-key ${key} contradict each other: give one of them`)
  })

  it('a missing file is named with the flag or the variable that named it', () => {
    const missing = join(dir, 'missing.key')
    expect(refusal({ clusterKey: missing })).toBe(`--cluster-key ${missing}: no such file; make one with 'murmur cluster init' (once per cluster) and copy it to every node`)
    expect(refusal({}, { MURMUR_CLUSTER_KEY_FILE: missing })).toMatch(new RegExp(`^MURMUR_CLUSTER_KEY_FILE ${missing}: no such file`))
  })

  it('a key file other users may read or change is refused, as ssh refuses a private key', async () => {
    const open = join(dir, 'open.key')
    writeClusterKey(open)
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      await chmod(open, mode)
      expect(refusal({ clusterKey: open })).toBe(`--cluster-key ${open} is open to other users (mode 0${mode.toString(8)}): anyone on this machine could join the cluster with it; run 'chmod 600 ${open}'`)
    }
    await chmod(open, 0o400)
    expect(nodeConfig({ clusterKey: open, rootKey: rootPub }, noEnv).clusterKeyFile).toBe(open)
  })

  it('a file that is not a key is refused', async () => {
    const cases: Record<string, string | Uint8Array> = {
      'empty.key': '',
      'short.key': '/key/swarm/psk/1.0.0/\n/base16/\nabcd\n',
      'codec.key': `/key/swarm/psk/1.0.0/\n/base64/\n${'a'.repeat(64)}\n`,
      'junk.key': `/key/swarm/psk/1.0.0/\n/base16/\n${'g'.repeat(64)}\n`,
      'huge.key': new Uint8Array(1024 * 1024),
    }
    for (const [name, content] of Object.entries(cases)) {
      const file = join(dir, name)
      await writeFile(file, content, { mode: 0o600 })
      expect(refusal({ clusterKey: file })).toBe(`--cluster-key ${file} is not a cluster key (expected the three lines 'murmur cluster init' writes: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)`)
    }
    const sub = join(dir, 'a-dir')
    await mkdir(sub, { mode: 0o700 })
    expect(refusal({ clusterKey: sub })).toBe(`--cluster-key ${sub} is not a file; give the key file 'murmur cluster init' wrote`)
  })

  it('is checked after the other flags: a typo elsewhere is reported first', () => {
    expect(refusal({ cpu: 'lots' })).toMatch(/^--cpu: /)
  })
})

describe('the root key in the node config', () => {
  it('is required with a cluster key: a closed cluster has users', () => {
    const noRoot = "a closed cluster has users: give the root public key with --root-key <file> (or MURMUR_ROOT_KEY); 'murmur cluster init' wrote root.pub beside the cluster key"
    expect(refusal({ clusterKey: key })).toBe(noRoot)
    expect(refusal({}, { MURMUR_CLUSTER_KEY_FILE: key })).toBe(noRoot)
    expect(refusal({ clusterKey: key }, { MURMUR_ROOT_KEY: '' })).toBe(noRoot)
  })

  it('is read from root.pub, taken as it is (ed25519:…), or from MURMUR_ROOT_KEY; the flag wins', () => {
    expect(nodeConfig({ clusterKey: key, rootKey: rootPublicKey }, noEnv).rootKey).toBe(rootPublicKey)
    expect(nodeConfig({ clusterKey: key }, { MURMUR_ROOT_KEY: rootPub }).rootKey).toBe(rootPublicKey)
    expect(nodeConfig({ clusterKey: key, rootKey: rootPub }, { MURMUR_ROOT_KEY: join(dir, 'nowhere') }).rootKey).toBe(rootPublicKey)
  })

  it('an open cluster has none: no users', () => {
    expect(nodeConfig({ insecureOpenCluster: true }, noEnv).rootKey).toBeNull()
  })

  it('a missing file or one that holds no public key is refused, naming the flag or the variable', async () => {
    const missing = join(dir, 'missing.pub')
    expect(refusal({ clusterKey: key, rootKey: missing })).toBe(`--root-key ${missing}: no such file; give the root.pub 'murmur cluster init' wrote, or the key itself (ed25519:…)`)
    expect(refusal({ clusterKey: key }, { MURMUR_ROOT_KEY: missing })).toMatch(new RegExp(`^MURMUR_ROOT_KEY ${missing}: no such file`))
    const junk = join(dir, 'junk.pub')
    await writeFile(junk, 'not a key\n')
    expect(refusal({ clusterKey: key, rootKey: junk })).toMatch(new RegExp(`^--root-key ${junk}: "not a key" is not a murmur public key`))
    // A key given as it is, but damaged: named once, with the flag.
    expect(refusal({ clusterKey: key, rootKey: 'ed25519:short' })).toBe('--root-key: "ed25519:short" is not a murmur public key; give one as printed by its owner, like ed25519:<43 base64url characters>')
  })
})

describe('writeClusterKey', () => {
  it('writes a key libp2p takes, mode 0600, in a new dir of mode 0700', async () => {
    const file = join(dir, 'new', 'deeper', 'cluster.key')
    writeClusterKey(file)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, 'new', 'deeper'))).mode & 0o777).toBe(0o700)
    const bytes = readClusterKey(file)
    expect(bytes).toHaveLength(95)
    expect(() => preSharedKey({ psk: bytes })()).not.toThrow()
  })

  it('makes a different key every time', () => {
    const a = join(dir, 'a.key')
    const b = join(dir, 'b.key')
    writeClusterKey(a)
    writeClusterKey(b)
    expect(Buffer.from(readClusterKey(a)).equals(Buffer.from(readClusterKey(b)))).toBe(false)
  })

  it('refuses to replace a key unless forced; forced, the file is private again', async () => {
    const file = join(dir, 'kept.key')
    writeClusterKey(file)
    const before = readClusterKey(file)
    expect(() => { writeClusterKey(file) }).toThrow(`${file} already exists: every node holding it would be locked out by a new key; give another --out, or --force to replace it`)
    expect(Buffer.from(readClusterKey(file)).equals(Buffer.from(before))).toBe(true)
    await chmod(file, 0o644)
    writeClusterKey(file, true)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect(Buffer.from(readClusterKey(file)).equals(Buffer.from(before))).toBe(false)
  })
})

describe('--api-host', () => {
  const withKey = { clusterKey: '', rootKey: '' }
  const open = { insecureOpenCluster: true }
  beforeAll(() => { withKey.clusterKey = key; withKey.rootKey = rootPub })
  const others = ['0.0.0.0', '10.1.2.3', '192.168.0.7', '::', 'fe80::1']

  it('takes loopback addresses, with users or without', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) {
      expect(nodeConfig({ ...withKey, apiHost: host }, noEnv).apiHost).toBe(host)
      expect(nodeConfig({ ...open, apiHost: host }, noEnv).apiHost).toBe(host)
    }
  })

  it('takes any address in a closed cluster: every request is signed by a user', () => {
    for (const host of others) expect(nodeConfig({ ...withKey, apiHost: host }, noEnv).apiHost).toBe(host)
  })

  it('refuses any other address in an open cluster: it has no users to check', () => {
    for (const host of others) {
      expect(refusal({ ...open, apiHost: host })).toBe(`--api-host ${host} would let anyone who reaches it run commands on this machine (an open cluster has no users to check); keep it on 127.0.0.1, or run a closed cluster (--cluster-key and --root-key)`)
    }
  })

  it('refuses what is no address at all', () => {
    for (const raw of [withKey, open]) {
      expect(refusal({ ...raw, apiHost: 'localhost:80' })).toBe("--api-host must be an IP address such as 127.0.0.1 or 0.0.0.0, or localhost, got 'localhost:80'")
      expect(refusal({ ...raw, apiHost: 'example.com' })).toMatch(/^--api-host must be an IP address/)
    }
  })

  it('takes another address in an open cluster only when told it is meant (a testnet in network namespaces)', () => {
    expect(nodeConfig({ ...open, apiHost: '10.1.2.3', insecureApiHost: true }, noEnv).apiHost).toBe('10.1.2.3')
  })
})
