#!/usr/bin/env -S node --max-semi-space-size=1
// (A small young generation: a node allocates little per second, and the default
// semi-space grows to tens of MB for nothing; see cli/README.md, "Memory".)
// The murmur command. Exit codes: 0 success, 1 the operation failed, 2 the input was wrong.

import { Command, CommanderError, Option } from 'commander'
import { ApiError, DEFAULT_API } from '../client.ts'
import { registerCluster } from '../cluster.ts'
import { applyTarget } from '../context.ts'
import { clientOf, registerJobs } from '../jobs.ts'
import { printMembers, watchMembers } from '../members.ts'
import { parseLabelArgs, printState } from '../state.ts'
import { registerTestnet } from '../testnet.ts'
import { registerUsers } from '../users.ts'

const program = new Command('murmur')
  .description('a data-center operating system without a master')
  // No defaults here: what is not given comes from the context (cli/context.ts, resolveTarget).
  .addOption(new Option('--api <url>', `the node's HTTP API (default: the context's first, else ${DEFAULT_API})`).env('MURMUR_API'))
  .addOption(new Option('--key <file>', "your user key file (default: the context's)").env('MURMUR_USER_KEY'))
  .addOption(new Option('--context <name>', 'use this context of the CLI config, not the current one').env('MURMUR_CONTEXT'))
  // Before a command that talks to a node runs: api, key, namespace and context resolved into program.opts().
  .hook('preAction', (_program, command) => { if (talksToNode(command)) applyTarget(program) })
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()
  .configureOutput({ writeErr: (text) => { process.stderr.write(text) } })

const collect = (value: string, previous: string[]): string[] => [...previous, value]

/**
 * Every command but these talks to a node's API. These do not, and must work
 * whatever the CLI config holds (a broken one included): they never read it.
 */
const OWN_TARGETS = ['node start', 'cluster', 'testnet']
function talksToNode (command: Command): boolean {
  const path: string[] = []
  for (let c: Command | null = command; c !== null && c !== program; c = c.parent) path.unshift(c.name())
  const name = path.join(' ')
  return !OWN_TARGETS.some((prefix) => name === prefix || name.startsWith(`${prefix} `))
}

const node = program.command('node').description('run and manage the node on this machine')
node.command('start')
  .description('start a node; join a cluster with --join, or be the first')
  .option('--data-dir <path>', 'where the node keeps its identity and state (default: ~/.murmur/node)')
  .option('--join <multiaddr>', 'join through this member (repeatable)', collect, [])
  .option('--mdns', 'find other nodes on the LAN by multicast DNS')
  .option('--host <ip>', 'address to listen on for peers (default: 0.0.0.0)')
  .option('--port <port>', 'TCP port for peers, 0 for any free one (default: 7946)')
  // MURMUR_CLUSTER_KEY_FILE is read by the node's config, so that its errors name where the file came from.
  .option('--cluster-key <file>', "the cluster key file ('murmur cluster init'), the same on every node (env: MURMUR_CLUSTER_KEY_FILE)")
  .option('--insecure-open-cluster', 'run without a cluster key: anyone who reaches --port can join and run tasks')
  // MURMUR_ROOT_KEY likewise.
  .option('--root-key <file>', "the root public key ('murmur cluster init' writes root.pub), the same on every node; users are checked against it (env: MURMUR_ROOT_KEY)")
  .option('--api-host <ip>', 'address of the HTTP API (default: 127.0.0.1); any address in a closed cluster, where every request is signed; loopback only in an open one')
  .option('--api-port <port>', 'port of the HTTP API, 0 for any free one (default: 7947)')
  .option('--cpu <cores>', 'CPU to offer, as cores (2) or millicores (1500m) (default: the machine less 0.1)')
  .option('--memory <size>', 'memory to offer, e.g. 4G (default: the machine less a reserve)')
  .option('--label <key=value>', 'a label for placement constraints (repeatable)', collect, [])
  .option('--profile <name>', 'timing profile: lan, or local for many nodes on one machine', 'lan')
  .option('--join-timeout <duration>', 'give up joining after this long', '10s')
  .option('--reset-state', 'move the state database aside and start empty; the other nodes fill it')
  .option('--task-retention <duration>', 'keep finished tasks this long (default: 1h)')
  .option('--job-retention <duration>', 'keep finished and stopped jobs this long (default: 24h)')
  .option('--node-retention <duration>', 'forget nodes dead this long, with their records (default: 24h)')
  .option('--isolation <mode>', 'how to contain tasks: auto, cgroup-v2, cgroup-v1 or none', 'auto')
  .option('--task-uids <first-last>', 'when the node runs as root: the uids its tasks run as, one each (default 70000-79999)')
  .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info')
  .option('--pretty', 'human-readable logs instead of JSON')
  .option('--fault-injection', 'testnets only: take network fault rules (partitions, cuts, delay, loss) on /v1/admin/faults')
  .addOption(new Option('--fault-rules <json>', 'testnets only: the fault rules to start with').hideHelp())
  .addOption(new Option('--insecure-api-host', 'testnets in network namespaces only: allow an --api-host that is not loopback').hideHelp())
  .action(async (opts: Record<string, unknown>) => {
    // The node runtime (libp2p and all) is loaded only for this command.
    const { runNode } = await import('../../node/main.ts')
    const code = await runNode({ ...opts, join: opts.join as string[], label: opts.label as string[] })
    // Exit now: whatever libp2p failed to close within its stop timeout must not keep us alive.
    process.exit(code)
  })
node.command('leave')
  .description('make the node leave the cluster gracefully and stop')
  .action(async () => {
    const client = clientOf(program)
    const info = await client.node()
    await client.leave()
    process.stdout.write(`node ${info.id} is leaving\n`)
  })

node.command('label')
  .description('set (key=value) or remove (key-) labels of the node; they are kept across restarts')
  .argument('<changes...>', 'key=value to set, key- to remove')
  .option('--json', 'print one JSON document')
  .action(async (changes: string[], opts: { json?: boolean }) => {
    const { set, remove } = parseLabelArgs(changes)
    const { labels } = await clientOf(program).updateLabels(set, remove)
    if (opts.json === true) process.stdout.write(JSON.stringify({ labels }, null, 2) + '\n')
    else process.stdout.write((Object.entries(labels).map(([k, v]) => `${k}=${v}`).join('\n') || '(no labels)') + '\n')
  })

program.command('state')
  .description("the node's copy of the cluster state: size, records, state vector, last sync with each peer")
  .option('--compare <peer>', "also say whether it equals this peer's copy (exit 1 if not)")
  .option('--json', 'print one JSON document')
  .action(async (opts: { json?: boolean, compare?: string }) => {
    const equal = await printState(clientOf(program), opts.json === true, opts.compare)
    if (!equal) process.exitCode = 1
  })

program.command('members')
  .description('every member: state, incarnation, address, CPU, memory, labels, last heard')
  .option('--json', 'print one JSON document')
  .option('--watch', 'follow changes as they happen (Ctrl-C to stop)')
  .action(async (opts: { json?: boolean, watch?: boolean }) => {
    const client = clientOf(program)
    if (opts.watch !== true) return await printMembers(client, opts.json === true)
    const controller = new AbortController()
    process.once('SIGINT', () => { controller.abort() })
    await watchMembers(client, opts.json === true, controller.signal)
  })

registerCluster(program)
registerJobs(program)
registerUsers(program, () => clientOf(program))
registerTestnet(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  process.exitCode = report(err)
}

/** One line on stderr for the user, and the exit code it deserves. */
function report (err: unknown): number {
  if (err instanceof CommanderError) {
    // Commander already printed its message; help and version are not failures.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0
    return 2
  }
  const e = err as Error & { exitCode?: number, code?: string }
  process.stderr.write(`murmur: ${e.message}\n`)
  if (err instanceof ApiError) return err.status !== null && err.status >= 400 && err.status < 500 ? 2 : 1
  if (e.exitCode === 2 || e.name === 'InputError') return 2
  return 1
}
