// `murmur testnet …`: a cluster of real node processes on this machine.

import type { Command } from 'commander'
import { parseDuration } from '../node/units.ts'
import * as testnet from '../testnet/local/testnet.ts'
import { DEFAULT_DIR } from '../testnet/local/state.ts'
import { configPath, loadConfig } from './context.ts'
import { followLogs } from './logs.ts'
import { table } from './table.ts'

interface DirOption { dir: string }

export function registerTestnet (program: Command): void {
  const cmd = program.command('testnet').description('run a whole cluster on this machine and break it on purpose')
  const dirOption = ['--dir <path>', 'where the testnet keeps its state, data dirs and logs', DEFAULT_DIR] as const

  cmd.command('up')
    .description('start N nodes on 127.0.0.1 (or, with --netns, each in a network namespace), wait until they all see each other, print their API addresses')
    .option('-n, --nodes <n>', 'how many nodes', '3')
    .option(...dirOption)
    .option('--foreground', 'stay attached: show the merged logs, take everything down on Ctrl-C')
    .option('--netns', 'root only: every node in a network namespace of its own on a bridge; the kernel makes the network faults')
    .action(async (opts: DirOption & { nodes: string, foreground?: boolean, netns?: boolean }) => {
      const nodes = Number(opts.nodes)
      const progress = (message: string): void => { process.stderr.write(`testnet: ${message}\n`) }
      const started = Date.now()
      const state = await testnet.up({ nodes, dir: opts.dir, onProgress: progress, netns: opts.netns === true })
      progress(`${nodes} node(s) up in ${((Date.now() - started) / 1000).toFixed(1)} s`)
      process.stdout.write(nodeTable(state.nodes.map((n) => ({ ...n, process: 'running' as const }))) + '\n')
      // A node of one's own joins the testnet only with its key.
      process.stdout.write(`\ncluster key: ${testnet.clusterKeyFile(state.dir)} (give it to another node with --cluster-key)\n`)
      if (isCurrentContext(testnet.contextName(state.dir))) {
        process.stdout.write(`CLI context: ${testnet.contextName(state.dir)}, now current: murmur commands in any shell reach this testnet without --api (${configPath()})\n`)
      }
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
        await run(opts.dir, nodeIndex(index, '<index>'))
        process.stdout.write(`node ${index} ${done}\n`)
      })
  }
  registerNetworkFaults(cmd, dirOption)
}

/** partition, heal, delay, loss and faults: what breaks the network between the nodes, not the nodes. */
function registerNetworkFaults (cmd: Command, dirOption: readonly [string, string, string]): void {
  cmd.command('partition [groups...]')
    .description('split the nodes into groups that cannot reach each other (0,1 2,3,4; nodes not named form one more group), or cut one way with --from and --to')
    .option('--from <index>', "one-way cut: this node's messages no longer reach --to")
    .option('--to <index>', 'the node that stops hearing --from')
    .option(...dirOption)
    .action(async (groups: string[], opts: DirOption & { from?: string, to?: string }) => {
      if (opts.from !== undefined || opts.to !== undefined) {
        if (opts.from === undefined || opts.to === undefined || groups.length > 0) {
          throw new testnet.TestnetError('a one-way cut takes both --from and --to and no groups: murmur testnet partition --from 0 --to 1', 2)
        }
        const from = nodeIndex(opts.from, '--from')
        const to = nodeIndex(opts.to, '--to')
        await testnet.cut(opts.dir, from, to)
        process.stdout.write(`cut: node ${from}'s messages no longer reach node ${to} (node ${to}'s still reach node ${from})\n`)
        return
      }
      if (groups.length === 0) throw new testnet.TestnetError('name the groups, e.g. murmur testnet partition 0,1 2,3,4 (or --from 0 --to 1 for a one-way cut)', 2)
      await testnet.partition(opts.dir, groups.map(group))
      process.stdout.write(`partitioned: ${await testnet.partitionOf(opts.dir)}\n`)
    })

  cmd.command('heal')
    .description('remove every network fault: partitions, cuts, delay and loss, on every node')
    .option(...dirOption)
    .action(async (opts: DirOption) => {
      await testnet.heal(opts.dir)
      process.stdout.write('healed: no network faults\n')
    })

  cmd.command('delay <index> <duration>')
    .description('delay everything node i receives, e.g. 200ms (0 removes it)')
    .option('--jitter <duration>', 'vary each delay by up to this much either way, e.g. 50ms', '0')
    .option(...dirOption)
    .action(async (index: string, duration: string, opts: DirOption & { jitter: string }) => {
      const i = nodeIndex(index, '<index>')
      const ms = durationArg(duration, '<duration>')
      const jitterMs = durationArg(opts.jitter, '--jitter')
      await testnet.delay(opts.dir, i, ms, jitterMs)
      process.stdout.write(ms === 0 ? `node ${i}: no delay\n` : `node ${i}: what it receives arrives ${ms} ms${jitterMs > 0 ? ` ± ${jitterMs} ms` : ''} late\n`)
      if (ms > 0) await note(opts.dir, /netem/)
    })

  cmd.command('loss <index> <rate>')
    .description('lose this share of what node i receives: 20% or 0.2 (0 removes it; below 100%)')
    .option(...dirOption)
    .action(async (index: string, rate: string, opts: DirOption) => {
      const i = nodeIndex(index, '<index>')
      const r = lossRate(rate)
      await testnet.loss(opts.dir, i, r)
      process.stdout.write(r === 0 ? `node ${i}: no loss\n` : `node ${i}: loses ${percent(r)} of what it receives\n`)
      if (r > 0) await note(opts.dir, /iptables/)
    })

  cmd.command('faults')
    .description('the network faults of every node: who it cannot reach, whom it no longer hears, delay and loss')
    .option(...dirOption)
    .option('--json', 'print one JSON document')
    .action(async (opts: DirOption & { json?: boolean }) => {
      const nodes = await testnet.faults(opts.dir)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({ partition: await testnet.partitionOf(opts.dir), notes: await testnet.networkNotes(opts.dir), nodes }, null, 2) + '\n')
        return
      }
      process.stdout.write(`${await testnet.partitionOf(opts.dir)}\n`)
      for (const line of await testnet.networkNotes(opts.dir)) process.stdout.write(`note: ${line}\n`)
      process.stdout.write(table(
        ['NODE', 'PEER ID', 'CANNOT REACH', 'NO LONGER HEARS', 'DELAY', 'LOSS'],
        nodes.map((n) => [String(n.index), n.peerId ?? '-', list(n.blocked), list(n.cutFrom),
          n.delayMs === 0 ? '-' : `${n.delayMs}ms${n.jitterMs > 0 ? ` ±${n.jitterMs}ms` : ''}`, n.lossRate === 0 ? '-' : percent(n.lossRate)]),
      ) + '\n')
    })
}

/** On a --netns testnet whose kernel lacks a mechanism: the one line that says the nodes stand in for it. */
async function note (dir: string, which: RegExp): Promise<void> {
  for (const line of await testnet.networkNotes(dir)) if (which.test(line)) process.stdout.write(`note: ${line}\n`)
}

function nodeIndex (text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new testnet.TestnetError(`${what} must be a node number such as 0 or 2, got '${text}'`, 2)
  return Number(text)
}

/** "0,1,2" → [0, 1, 2]. */
function group (text: string): number[] {
  if (!/^\d+(,\d+)*$/.test(text)) throw new testnet.TestnetError(`'${text}' is not a group of nodes: write node numbers joined by commas, e.g. 0,1 2,3,4`, 2)
  return text.split(',').map(Number)
}

function durationArg (text: string, what: string): number {
  try {
    return parseDuration(text)
  } catch (err) {
    throw new testnet.TestnetError(`${what}: ${(err as Error).message}`, 2)
  }
}

/** "20%" or "0.2" → 0.2. */
function lossRate (text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(text)
  if (match === null) throw new testnet.TestnetError(`<rate> must be a share such as 20% or 0.2, got '${text}'`, 2)
  const rate = match[2] === '%' ? Number(match[1]) / 100 : Number(match[1])
  if (rate >= 1) throw new testnet.TestnetError(`<rate> must be below 100%, got '${text}'; a node that hears nothing is partitioned: murmur testnet partition <index>`, 2)
  return rate
}

function percent (rate: number): string {
  return `${Math.round(rate * 1000) / 10}%`
}

function list (indexes: number[]): string {
  return indexes.length === 0 ? '-' : indexes.join(',')
}

/** Whether `up` could make the testnet's context current (it says why not in its progress if not). */
function isCurrentContext (name: string): boolean {
  try {
    return loadConfig().current === name
  } catch {
    return false
  }
}

function nodeTable (nodes: testnet.NodeStatus[]): string {
  return table(
    ['NODE', 'PID', 'PROCESS', 'PEER ID', 'MULTIADDR', 'API', 'DATA DIR'],
    nodes.map((n) => [String(n.index), String(n.pid ?? '-'), n.process, n.peerId ?? '-', n.addrs[0] ?? '-', n.apiUrl, n.dataDir]),
  )
}
