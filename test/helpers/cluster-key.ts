// Cluster keys for tests: a fresh key file in a temp dir, and the key of a testnet.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readClusterKey, writeClusterKey } from '../../node/config.ts'
import { clusterKeyFile } from '../../testnet/local/testnet.ts'

/** A new cluster key file (mode 0600) in `dir`, or in a temp dir of its own; remove() deletes what it made. */
export async function tempClusterKey (dir?: string): Promise<{ file: string, remove: () => Promise<void> }> {
  const home = dir ?? await mkdtemp(join(tmpdir(), 'murmur-key-'))
  const file = join(home, 'cluster.key')
  writeClusterKey(file)
  return { file, remove: async () => { await rm(dir === undefined ? home : file, { recursive: true, force: true }) } }
}

/** The key bytes every node of the testnet in `dir` holds, for a test host that must be a member's peer. */
export function testnetKey (dir: string): Uint8Array {
  return readClusterKey(clusterKeyFile(dir))
}
