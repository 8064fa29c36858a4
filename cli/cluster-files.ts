// The files that make a closed cluster, written once by `murmur cluster init` (and
// by `murmur testnet up` for each testnet), side by side in one dir:
//   cluster.key  the network key every node holds (only they can connect)
//   root.pub     the root public key every node is started with (--root-key)
//   root.key     the root private key: it signs the first admin's grant; keep it offline
//   admin.key    the first admin user's key, with its grant signed by the root key

import { closeSync, existsSync, fchmodSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { encodeRootKey, encodeUserKey, newKeyPair } from '../access/keys.ts'
import { signGrant } from '../access/statements.ts'
import { InputError } from '../node/errors.ts'
import { writeClusterKey } from '../node/config.ts'

export const ROOT_PUB_NAME = 'root.pub'
export const ROOT_KEY_NAME = 'root.key'
export const ADMIN_KEY_NAME = 'admin.key'

export interface ClusterFiles {
  clusterKey: string
  rootPub: string
  rootKey: string
  adminKey: string
  rootPublicKey: string
  adminPublicKey: string
}

/** Where the files of a cluster whose network key is `clusterKeyFile` are. */
export function clusterFilesBeside (clusterKeyFile: string): Omit<ClusterFiles, 'rootPublicKey' | 'adminPublicKey'> {
  const dir = dirname(clusterKeyFile)
  return { clusterKey: clusterKeyFile, rootPub: join(dir, ROOT_PUB_NAME), rootKey: join(dir, ROOT_KEY_NAME), adminKey: join(dir, ADMIN_KEY_NAME) }
}

/**
 * Writes a new cluster: network key, root key pair, and the first admin (`adminName`,
 * every namespace, no expiry). Refuses to replace any of the files unless `force`:
 * every node and user of the old cluster would be locked out.
 */
export function writeClusterFiles (clusterKeyFile: string, force = false, adminName = 'admin', now = Date.now()): ClusterFiles {
  const files = clusterFilesBeside(clusterKeyFile)
  if (!force) {
    for (const file of [files.clusterKey, files.rootPub, files.rootKey, files.adminKey]) {
      if (existsSync(file)) throw new InputError('KEY_EXISTS', `${file} already exists: every node and user of that cluster would be locked out by new keys; give another --out, or --force to replace them`)
    }
  }
  writeClusterKey(files.clusterKey, force)
  const root = newKeyPair()
  const admin = newKeyPair()
  const grant = signGrant({ name: adminName, key: admin.publicKey, role: 'admin', namespaces: ['*'], runAs: [], issuedAt: now, expiresAt: null }, { privateKey: root.privateKey, grant: null })
  writePrivate(files.rootKey, encodeRootKey(root))
  writePrivate(files.adminKey, encodeUserKey({ name: adminName, publicKey: admin.publicKey, privateKey: admin.privateKey, grant }))
  writeFile(files.rootPub, `${root.publicKey}\n`, 0o644)
  return { ...files, rootPublicKey: root.publicKey, adminPublicKey: admin.publicKey }
}

/** A file only its owner may read (a key). */
export function writePrivate (file: string, text: string, exclusive = false): void {
  writeFile(file, text, 0o600, exclusive)
}

function writeFile (file: string, text: string, mode: number, exclusive = false): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  let fd: number
  try {
    fd = openSync(file, exclusive ? 'wx' : 'w', mode)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new InputError('KEY_EXISTS', `${file} already exists; give another --out, or remove it first`)
    throw new InputError('BAD_FLAG', `cannot write ${file}: ${code ?? (err as Error).message}`)
  }
  try {
    // An existing file keeps its mode when opened with 'w': set it before the secret goes in.
    fchmodSync(fd, mode)
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
}
