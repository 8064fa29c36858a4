// Cluster keys for tests: a fresh key file in a temp dir, and the key of a testnet.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readClusterKey } from '../../node/config.ts'
import { writeClusterFiles } from '../../cli/cluster-files.ts'
import { clusterKeyFile } from '../../testnet/local/testnet.ts'

/**
 * A new cluster in `dir`, or in a temp dir of its own: its key file (mode 0600), and
 * beside it root.pub (`rootPub`, for --root-key), root.key and admin.key (`adminKey`,
 * a user key for the client); remove() deletes what it made.
 */
export async function tempClusterKey (dir?: string): Promise<{ file: string, rootPub: string, adminKey: string, remove: () => Promise<void> }> {
  const home = dir ?? await mkdtemp(join(tmpdir(), 'murmur-key-'))
  const files = writeClusterFiles(join(home, 'cluster.key'), dir !== undefined)
  const made = [files.clusterKey, files.rootPub, files.rootKey, files.adminKey]
  return {
    file: files.clusterKey,
    rootPub: files.rootPub,
    adminKey: files.adminKey,
    remove: async () => {
      if (dir === undefined) await rm(home, { recursive: true, force: true })
      else for (const f of made) await rm(f, { force: true })
    },
  }
}

/** The key bytes every node of the testnet in `dir` holds, for a test host that must be a member's peer. */
export function testnetKey (dir: string): Uint8Array {
  return readClusterKey(clusterKeyFile(dir))
}
