// `murmur cluster init`: a new cluster: its network key, which every node starts
// with (--cluster-key; a host without it cannot connect to any of them), its root
// key, whose public half every node starts with (--root-key), and its first admin
// user (cluster-files.ts).

import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { type ClusterFiles, writeClusterFiles } from './cluster-files.ts'

export const DEFAULT_KEY_FILE = join(homedir(), '.murmur', 'cluster.key')

export function registerCluster (program: Command): void {
  const cluster = program.command('cluster').description('the cluster as a whole: its keys and its first admin')
  cluster.command('init')
    .description('make a new cluster: a network key (only nodes started with it can join), a root key, and the first admin user')
    .option('--out <file>', `where to write the cluster key; the other files go beside it (default: ${DEFAULT_KEY_FILE})`)
    .option('--admin <name>', 'the first admin user\'s name', 'admin')
    .option('--force', 'replace existing files (nodes and users holding the old keys are locked out)')
    .option('--json', 'print one JSON document')
    .action((opts: { out?: string, admin: string, force?: boolean, json?: boolean }) => {
      const files = writeClusterFiles(resolve(opts.out ?? DEFAULT_KEY_FILE), opts.force === true, opts.admin)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({ keyFile: files.clusterKey, rootPub: files.rootPub, rootKey: files.rootKey, adminKey: files.adminKey, rootPublicKey: files.rootPublicKey, admin: opts.admin, mode: '0600' }, null, 2) + '\n')
        return
      }
      process.stdout.write(initText(files, opts.admin) + '\n')
    })
}

export function initText (files: Omit<ClusterFiles, 'rootPublicKey' | 'adminPublicKey'>, admin = 'admin'): string {
  return [
    `wrote a new cluster to ${files.clusterKey} and beside it:`,
    `  ${files.clusterKey}  network key (0600): copy it to every node`,
    `  ${files.rootPub}  root public key: copy it to every node`,
    `  ${files.rootKey}  root private key (0600): keep it offline; it signs admins' grants`,
    `  ${files.adminKey}  the admin user '${admin}' (0600): the key the CLI signs with`,
    '',
    'Copy the network key over a secure channel (scp, your secrets manager), keep it',
    'mode 0600, and start each node with both:',
    '',
    `  murmur node start --cluster-key ${files.clusterKey} --root-key ${files.rootPub} [--join <multiaddr of a member>]`,
    `  # or: export MURMUR_CLUSTER_KEY_FILE=${files.clusterKey} MURMUR_ROOT_KEY=${files.rootPub}`,
    '',
    'Then act as the admin from any machine that reaches a node:',
    '',
    `  murmur --key ${files.adminKey} --api http://<node>:7947 user add alice --namespace web --role submit`,
    '',
    'Anyone who holds the network key can join the cluster; anyone who holds a user key acts as that user.',
  ].join('\n')
}
