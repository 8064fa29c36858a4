// `murmur cluster init`: a new cluster key. Every node of a cluster starts with
// the same key file (--cluster-key); a host without it cannot connect to any of them.

import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { writeClusterKey } from '../node/config.ts'

export const DEFAULT_KEY_FILE = join(homedir(), '.murmur', 'cluster.key')

export function registerCluster (program: Command): void {
  const cluster = program.command('cluster').description('the cluster as a whole: its key')
  cluster.command('init')
    .description('make a new cluster key: only nodes started with it can join the cluster')
    .option('--out <file>', `where to write the key (default: ${DEFAULT_KEY_FILE})`)
    .option('--force', 'replace an existing key file (nodes holding the old key can no longer connect)')
    .option('--json', 'print one JSON document')
    .action((opts: { out?: string, force?: boolean, json?: boolean }) => {
      const file = resolve(opts.out ?? DEFAULT_KEY_FILE)
      writeClusterKey(file, opts.force === true)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({ keyFile: file, mode: '0600' }, null, 2) + '\n')
        return
      }
      process.stdout.write(initText(file) + '\n')
    })
}

export function initText (file: string): string {
  return [
    `wrote a new cluster key to ${file} (mode 0600)`,
    '',
    'Copy it to every node over a secure channel (scp, your secrets manager), keep it',
    'mode 0600, and start each node with it:',
    '',
    `  murmur node start --cluster-key ${file} [--join <multiaddr of a member>]`,
    `  # or: export MURMUR_CLUSTER_KEY_FILE=${file}`,
    '',
    'Anyone who holds this file can join the cluster and run tasks on it.',
  ].join('\n')
}
