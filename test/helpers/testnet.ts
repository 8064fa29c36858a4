// A testnet of real node processes in a fresh temp dir, for end-to-end tests,
// and its teardown: every process stopped, every file removed.

import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestnetState } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'

export async function startTestnet (name: string, nodes: number, timeoutMs?: number): Promise<{ dir: string, state: TestnetState }> {
  const dir = await mkdtemp(join(tmpdir(), `murmur-${name}-`))
  // Tests keep their tasks' marks and gate files here, and tasks run as users of their own
  // when the node is root: anyone may make a file, only its owner remove it (as /tmp).
  await chmod(dir, 0o1777)
  return { dir, state: await testnet.up({ nodes, dir, ...(timeoutMs === undefined ? {} : { timeoutMs }) }) }
}

export async function stopTestnet (dir: string | undefined): Promise<void> {
  if (dir === undefined || dir === '') return
  await testnet.down({ dir })
  await rm(dir, { recursive: true, force: true })
}
