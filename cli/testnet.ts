// `murmur testnet …`: a cluster of real node processes on this machine.

import type { Command } from 'commander'
import * as testnet from '../testnet/local/testnet.ts'
import { DEFAULT_DIR } from '../testnet/local/state.ts'
import { followLogs } from './logs.ts'
import { table } from './table.ts'

interface DirOption { dir: string }

export function registerTestnet (program: Command): void {
  const cmd = program.command('testnet').description('run a whole cluster on this machine and break it on purpose')
  const dirOption = ['--dir <path>', 'where the testnet keeps its state, data dirs and logs', DEFAULT_DIR] as const

  cmd.command('up')
    .description('start N nodes on 127.0.0.1, wait until they all see each other, print their API addresses')
    .option('-n, --nodes <n>', 'how many nodes', '3')
    .option(...dirOption)
    .option('--foreground', 'stay attached: show the merged logs, take everything down on Ctrl-C')
    .action(async (opts: DirOption & { nodes: string, foreground?: boolean }) => {
      const nodes = Number(opts.nodes)
      const progress = (message: string): void => { process.stderr.write(`testnet: ${message}\n`) }
      const started = Date.now()
      const state = await testnet.up({ nodes, dir: opts.dir, onProgress: progress })
      progress(`${nodes} node(s) up in ${((Date.now() - started) / 1000).toFixed(1)} s`)
      process.stdout.write(nodeTable(state.nodes.map((n) => ({ ...n, process: 'running' as const }))) + '\n')
      if (opts.foreground !== true) {
        process.stdout.write(`\nthe nodes run in the background: 'murmur testnet status', 'murmur testnet down'\n`)
        return
      }
      process.stdout.write('\nfollowing the logs; Ctrl-C stops the testnet\n')
      const stopFollowing = followLogs(state.nodes.map((n) => ({ prefix: `n${n.index}`, path: n.logFile })), (line) => { process.stdout.write(line + '\n') })
      await new Promise<void>((resolve) => {
        const shutdown = (): void => {
          process.off('SIGINT', shutdown)
          process.off('SIGTERM', shutdown)
          stopFollowing()
          progress('taking the testnet down')
          void testnet.down({ dir: opts.dir, onProgress: progress }).then((r) => {
            progress(`stopped ${r.stopped} node(s)${r.killed > 0 ? `, killed ${r.killed} that did not stop in time` : ''}`)
          }, (err: Error) => {
            progress(`could not take the testnet down: ${err.message}; run 'murmur testnet down --dir ${opts.dir}'`)
            process.exitCode = 1
          }).finally(resolve)
        }
        process.on('SIGINT', shutdown)
        process.on('SIGTERM', shutdown)
      })
    })

  cmd.command('add')
    .description('start one more node and join it to the testnet')
    .option(...dirOption)
    .action(async (opts: DirOption) => {
      const node = await testnet.add(opts.dir)
      process.stdout.write(nodeTable([{ ...node, process: 'running' }]) + '\n')
    })

  cmd.command('down')
    .description('stop every node of the testnet and remove its data')
    .option(...dirOption)
    .option('--keep-data', 'keep the data dirs and logs')
    .action(async (opts: DirOption & { keepData?: boolean }) => {
      const result = await testnet.down({ dir: opts.dir, keepData: opts.keepData, onProgress: (m) => process.stderr.write(`testnet: ${m}\n`) })
      process.stdout.write(`stopped ${result.stopped} node(s)${result.killed > 0 ? `, killed ${result.killed} that did not stop in time` : ''}\n`)
    })

  cmd.command('status')
    .description("the testnet's nodes: index, PID, process state, peer id, address, API, data dir")
    .option(...dirOption)
    .option('--json', 'print one JSON document')
    .action(async (opts: DirOption & { json?: boolean }) => {
      const result = await testnet.status(opts.dir)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify(result ?? { dir: opts.dir, nodes: [] }, null, 2) + '\n')
        return
      }
      if (result === null) {
        process.stdout.write(`no testnet in ${opts.dir}; start one with 'murmur testnet up'\n`)
        return
      }
      process.stdout.write(nodeTable(result.nodes) + '\n')
    })

  const faults: Array<[string, string, (dir: string, i: number) => Promise<unknown>, string]> = [
    ['kill', 'SIGKILL node i: a crash, no goodbye', testnet.kill, 'killed'],
    ['stop', 'SIGTERM node i: it leaves gracefully', testnet.stop, 'stopped'],
    ['restart', 'start node i again with the same data dir and ports', testnet.restart, 'restarted'],
    ['pause', 'SIGSTOP node i: frozen, its connections stay open', testnet.pause, 'paused'],
    ['resume', 'SIGCONT node i', testnet.resume, 'resumed'],
  ]
  for (const [name, description, run, done] of faults) {
    cmd.command(`${name} <index>`)
      .description(description)
      .option(...dirOption)
      .action(async (index: string, opts: DirOption) => {
        if (!/^\d+$/.test(index)) throw new testnet.TestnetError(`<index> must be a node number such as 0 or 2, got '${index}'`, 2)
        await run(opts.dir, Number(index))
        process.stdout.write(`node ${index} ${done}\n`)
      })
  }
}

function nodeTable (nodes: testnet.NodeStatus[]): string {
  return table(
    ['NODE', 'PID', 'PROCESS', 'PEER ID', 'MULTIADDR', 'API', 'DATA DIR'],
    nodes.map((n) => [String(n.index), String(n.pid ?? '-'), n.process, n.peerId ?? '-', n.addrs[0] ?? '-', n.apiUrl, n.dataDir]),
  )
}
