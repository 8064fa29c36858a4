// Network namespaces for a testnet (`murmur testnet up --netns`, root only): each
// node in a namespace of its own with one address on a bridge, so that the kernel
// breaks the network the way real machines see it break.
//
//   host: bridge murmur-<id>, 10.213.N.1/24 (the CLI reaches every API through it)
//           └─ veth murmur-<id><ii> ═══ eth0 10.213.N.(i+2)/24 in netns murmur-<id>-<i>
//
//   partition, cut  a policy rule in the receiving namespace drops, silently, what
//                   comes from the peer (ip rule … from <peer> iif eth0 blackhole):
//                   connects and streams time out, as with a pulled cable
//   loss            iptables -m statistic --mode random … -j DROP on the receiving
//                   namespace's INPUT (TCP retransmits: lost packets become late ones)
//   delay           tc netem on the host end of the node's veth: what the node receives
//   fallbacks       no sch_netem in the kernel, or no iptables: delay, or loss, is applied
//                   by the node's own message filter (node/faults.ts), and said so
//
// Every name starts with murmur-<id>, the id a hash of the testnet's dir, and is
// recorded in testnet.json as it is made: `down` removes what is recorded and what
// it finds by that prefix, so a crash halfway through `up` leaves nothing behind.
// Nothing else on the host changes (no forwarding, no host firewall rule).

import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { resolve } from 'node:path'
import { promisify } from 'node:util'
import type { FaultRules } from '../../node/faults.ts'
import { TestnetError } from './errors.ts'
import { type TestnetFaults, describeNode } from './faults.ts'

const run = promisify(execFile)

/** The ports every node uses inside its own namespace (no clash: each has its own stack). */
export const NETNS_PORTS = Object.freeze({ peers: 7946, api: 7947 })
const FIRST_OCTETS = '10.213'
/** Our policy rules sit here, before the local table (moved from 0 to LOCAL_PREF). */
const BLOCK_PREF = 100
const LOCAL_PREF = 1000
const LOSS_CHAIN = 'murmur-loss'

export const NO_NETEM = 'this kernel has no sch_netem; delay is applied by the node\'s message filter'
export const NO_IPTABLES = 'iptables is not installed; loss is applied by the node\'s message filter (apt-get install iptables for loss in the kernel)'

export interface Netns {
  id: string
  /** The first three octets of the testnet's /24, e.g. 10.213.17. */
  subnet: string
  bridge: string
  /** The iptables command that works in the namespaces, or null (loss falls back to the nodes). */
  iptables: string | null
  /** True when the kernel has sch_netem (else delay falls back to the nodes). */
  netem: boolean
  /** Made so far, for `down`. */
  namespaces: string[]
  links: string[]
}

export interface NodeNetwork {
  netns: string
  /** The node's address on the bridge. */
  address: string
  /** The host end of its veth: where netem shapes what it receives. */
  hostLink: string
}

/** The id of the testnet in `dir`: derived from the dir, so `down` finds the namespaces without the state file. */
export function testnetId (dir: string): string {
  return createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 5)
}

export function namesOf (id: string, index: number): { netns: string, hostLink: string, peerLink: string } {
  const ii = String(index).padStart(2, '0')
  // Link names have at most 15 characters: murmur-<5 hex><2 digits> is 14.
  return { netns: `murmur-${id}-${index}`, hostLink: `murmur-${id}${ii}`, peerLink: `murmur-${id}p${ii}` }
}

/** Refuses, with one line, where namespaces cannot be made. */
export async function checkSupport (): Promise<void> {
  if (process.getuid?.() !== 0) throw new TestnetError('murmur testnet up --netns needs root (it makes network namespaces, a bridge and veths); run it as root, or without --netns for a loopback testnet')
  for (const [cmd, args, pkg] of [['ip', ['-V'], 'iproute2'], ['nsenter', ['--version'], 'util-linux']] as const) {
    await run(cmd, [...args]).catch((err: NodeJS.ErrnoException) => {
      throw new TestnetError(err.code === 'ENOENT' ? `murmur testnet up --netns needs the '${cmd}' command (${pkg}); install it, or run without --netns` : `'${cmd}' does not work here: ${oneLine(err)}`)
    })
  }
}

/** A /24 under 10.213 that no address on this host is in yet, starting from one the id picks. */
export async function pickSubnet (id: string): Promise<string> {
  const { stdout } = await sh('ip', ['-4', '-o', 'addr', 'show'])
  const used = new Set([...stdout.matchAll(/inet 10\.213\.(\d+)\./g)].map((m) => Number(m[1])))
  const start = parseInt(id, 16) % 254
  for (let k = 0; k < 254; k++) {
    const third = 1 + (start + k) % 254
    if (!used.has(third)) return `${FIRST_OCTETS}.${third}`
  }
  throw new TestnetError(`every 10.213.x.0/24 is in use on this host; take a netns testnet down first ('ip -4 addr' shows them)`)
}

/** The bridge, with the host's address on it. Recorded in `net.links` before it is made. */
export async function createBridge (net: Netns, record: () => Promise<void>): Promise<void> {
  net.links.push(net.bridge)
  await record()
  await sh('ip', ['link', 'add', net.bridge, 'type', 'bridge'])
  await sh('ip', ['addr', 'add', `${net.subnet}.1/24`, 'dev', net.bridge])
  await sh('ip', ['link', 'set', net.bridge, 'up'])
}

/** Node `index`'s namespace, veth and address; names recorded before they are made. */
export async function createNodeNetwork (net: Netns, index: number, record: () => Promise<void>): Promise<NodeNetwork> {
  const { netns, hostLink, peerLink } = namesOf(net.id, index)
  const address = `${net.subnet}.${index + 2}`
  net.namespaces.push(netns)
  net.links.push(hostLink)
  await record()
  await sh('ip', ['netns', 'add', netns])
  await sh('ip', ['link', 'add', hostLink, 'type', 'veth', 'peer', 'name', peerLink])
  await sh('ip', ['link', 'set', peerLink, 'netns', netns])
  await sh('ip', ['-n', netns, 'link', 'set', peerLink, 'name', 'eth0'])
  await sh('ip', ['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0'])
  await sh('ip', ['-n', netns, 'link', 'set', 'eth0', 'up'])
  await sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up'])
  // The local table is looked up first (rule 0): our drop rules must come before it.
  await sh('ip', ['-n', netns, 'rule', 'add', 'pref', String(LOCAL_PREF), 'lookup', 'local'])
  await sh('ip', ['-n', netns, 'rule', 'del', 'pref', '0'])
  await sh('ip', ['link', 'set', hostLink, 'master', net.bridge])
  await sh('ip', ['link', 'set', hostLink, 'up'])
  if (net.iptables !== null) await addLossChain(net.iptables, netns)
  return { netns, address, hostLink }
}

/** The chain loss rules go into, on what the namespace receives from its eth0. */
export async function addLossChain (iptables: string, netns: string): Promise<void> {
  await sh('ip', ['netns', 'exec', netns, iptables, '-w', '-N', LOSS_CHAIN])
  await sh('ip', ['netns', 'exec', netns, iptables, '-w', '-A', 'INPUT', '-i', 'eth0', '-j', LOSS_CHAIN])
}

/** What the kernel offers for loss and delay, tried in the first node's namespace and on its veth. */
export async function probeKernel (net: Netns, first: { netns: string, hostLink: string }): Promise<void> {
  net.iptables = null
  for (const cmd of ['iptables', 'iptables-legacy']) {
    const ok = await sh('ip', ['netns', 'exec', first.netns, cmd, '-w', '-L', 'INPUT', '-n']).then(() => true, () => false)
    if (ok) {
      net.iptables = cmd
      break
    }
  }
  net.netem = await sh('tc', ['qdisc', 'add', 'dev', first.hostLink, 'root', 'netem', 'delay', '1ms']).then(() => true, () => false)
  if (net.netem) await sh('tc', ['qdisc', 'del', 'dev', first.hostLink, 'root'])
}

/** The part of node `i`'s faults the kernel does not carry here: what its own filter applies. */
export function fallbackRules (net: Netns, faults: TestnetFaults, i: number, nodeCount: number): FaultRules {
  const node = describeNode(faults, i, null, nodeCount)
  return {
    blocked: [],
    cutFrom: [],
    delayMs: net.netem ? 0 : node.delayMs,
    jitterMs: net.netem ? 0 : node.jitterMs,
    lossRate: net.iptables !== null ? 0 : node.lossRate,
  }
}

/** What this testnet's kernel does not do itself, one line each. */
export function notes (net: Netns | null): string[] {
  if (net === null) return []
  return [...(net.netem ? [] : [NO_NETEM]), ...(net.iptables !== null ? [] : [NO_IPTABLES])]
}

/** Sets node `i`'s faults in the kernel: drop rules for its partition and cuts, loss, delay. */
export async function applyKernelFaults (net: Netns, faults: TestnetFaults, i: number, addresses: readonly string[]): Promise<void> {
  const { netns, hostLink } = namesOf(net.id, i)
  const node = describeNode(faults, i, null, addresses.length)
  // Up to one rule per peer is ours: remove them all, then add what holds now.
  for (let k = 0; k <= addresses.length; k++) {
    if (!await sh('ip', ['-n', netns, 'rule', 'del', 'pref', String(BLOCK_PREF)]).then(() => true, () => false)) break
  }
  for (const j of new Set([...node.blocked, ...node.cutFrom])) {
    await sh('ip', ['-n', netns, 'rule', 'add', 'pref', String(BLOCK_PREF), 'from', `${addresses[j]}/32`, 'iif', 'eth0', 'blackhole'])
  }
  if (net.iptables !== null) {
    await sh('ip', ['netns', 'exec', netns, net.iptables, '-w', '-F', LOSS_CHAIN])
    if (node.lossRate > 0) {
      await sh('ip', ['netns', 'exec', netns, net.iptables, '-w', '-A', LOSS_CHAIN, '-m', 'statistic', '--mode', 'random', '--probability', node.lossRate.toFixed(4), '-j', 'DROP'])
    }
  }
  if (net.netem) {
    if (node.delayMs > 0) await sh('tc', ['qdisc', 'replace', 'dev', hostLink, 'root', 'netem', 'delay', `${node.delayMs}ms`, ...(node.jitterMs > 0 ? [`${node.jitterMs}ms`] : [])])
    else await sh('tc', ['qdisc', 'del', 'dev', hostLink, 'root']).catch(() => {})
  }
}

/**
 * Removes the namespaces and links of the testnet in `dir`: those recorded, and
 * any other named with its prefix (made by an `up` that crashed before it could
 * record them). Deleting a namespace deletes its veth, rules, chains and qdiscs;
 * the kernel does that a moment later, and this waits until it has.
 */
export async function removeNetwork (dir: string, recorded: Netns | null): Promise<string[]> {
  const found = await networkOf(dir, recorded)
  if (found === null) return []
  const { namespaces, links } = found
  if (namespaces.length + links.length > 0 && process.getuid?.() !== 0) {
    throw new TestnetError(`the testnet's network namespaces and links (${[...namespaces, ...links].join(', ')}) can only be removed by root; run 'murmur testnet down' as root`)
  }
  for (const name of namespaces) await sh('ip', ['netns', 'del', name])
  const bridge = `murmur-${recorded?.id ?? testnetId(dir)}`
  if (links.includes(bridge)) await delLink(bridge)
  // The host ends of the veths go with their namespaces, a moment later; a half-made one is deleted by hand.
  const deadline = Date.now() + 5_000
  for (let left = links; left.length > 0; left = (await networkOf(dir, recorded))?.links ?? []) {
    if (Date.now() > deadline) {
      for (const link of left) await delLink(link)
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return [...namespaces, ...links]
}

/** The namespaces and links of the testnet in `dir` that exist now (recorded or named with its prefix); null without `ip`. */
export async function networkOf (dir: string, recorded: Netns | null): Promise<{ namespaces: string[], links: string[] } | null> {
  const prefix = `murmur-${recorded?.id ?? testnetId(dir)}`
  const listed = await listNames()
  if (listed === null) return null
  const ours = (name: string, made: string[] | undefined, separator: string): boolean => name.startsWith(`${prefix}${separator}`) || (made ?? []).includes(name)
  return {
    namespaces: listed.namespaces.filter((n) => ours(n, recorded?.namespaces, '-')),
    links: listed.links.filter((l) => ours(l, recorded?.links, '')),
  }
}

async function delLink (name: string): Promise<void> {
  await sh('ip', ['link', 'del', name]).catch((err: Error) => { if (!/Cannot find device/.test(err.message)) throw err })
}

/** Namespace and link names on this host, or null without the ip command. */
async function listNames (): Promise<{ namespaces: string[], links: string[] } | null> {
  try {
    const namespaces = (await sh('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n !== '')
    const links = [...(await sh('ip', ['-o', 'link', 'show'])).stdout.matchAll(/^\d+: ([^:@\s]+)/gm)].map((m) => m[1]!)
    return { namespaces, links }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

async function sh (cmd: string, args: string[]): Promise<{ stdout: string }> {
  try {
    return await run(cmd, args, { timeout: 10_000 })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ENOENT') throw e
    throw new TestnetError(`${cmd} ${args.join(' ')}: ${oneLine(e)}`)
  }
}

function oneLine (err: Error & { stderr?: string }): string {
  return (err.stderr ?? '').trim().split('\n')[0] || err.message.split('\n')[0] || 'failed'
}
