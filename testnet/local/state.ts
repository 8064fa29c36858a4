// The testnet's state file: which node processes it started, on which ports,
// with which data dirs. Written after every change, so that `down` can always
// clean up, also after the CLI that started them crashed.

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { tryLock } from '../../node/pidlock.ts'
import { NO_NETWORK_FAULTS, testnetFaultsSchema } from './faults.ts'

export const DEFAULT_DIR = '.murmur/testnet'
const FILE = 'testnet.json'

const nodeSchema = z.object({
  index: z.number().int().nonnegative(),
  pid: z.number().int().positive().nullable(),
  port: z.number().int(),
  apiPort: z.number().int(),
  dataDir: z.string(),
  logFile: z.string(),
  peerId: z.string().nullable(),
  addrs: z.array(z.string()),
  apiUrl: z.string(),
  /** The fault rules changed while the node was paused: they are sent on resume. */
  rulesPending: z.boolean().default(false),
  /** With --netns: the node's network namespace and its address on the bridge. */
  netns: z.string().nullable().default(null),
  address: z.string().nullable().default(null),
})
const netnsSchema = z.object({
  id: z.string(),
  subnet: z.string(),
  bridge: z.string(),
  iptables: z.string().nullable(),
  netem: z.boolean(),
  namespaces: z.array(z.string()),
  links: z.array(z.string()),
})
const stateSchema = z.object({
  version: z.literal(1),
  dir: z.string(),
  createdAt: z.string(),
  nodes: z.array(nodeSchema),
  /** The network faults, by node index: they outlive the node processes, as a broken network does. */
  faults: testnetFaultsSchema.default({ ...NO_NETWORK_FAULTS }),
  /** With --netns (testnet/local/netns.ts): the bridge, the namespaces and links made, what the kernel offers. */
  netns: netnsSchema.nullable().default(null),
})

export type TestnetNode = z.infer<typeof nodeSchema>
export type TestnetState = z.infer<typeof stateSchema>

export function stateFile (dir: string): string {
  return join(resolve(dir), FILE)
}

export async function readState (dir: string): Promise<TestnetState | null> {
  let text: string
  try {
    text = await readFile(stateFile(dir), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {}
  const parsed = stateSchema.safeParse(raw)
  if (!parsed.success) throw new Error(`${stateFile(dir)} is not a murmur testnet state file; stop its nodes by PID and remove it by hand`)
  return parsed.data
}

/** Writes of this process, one after another: a later snapshot never loses to an earlier one. */
let writes: Promise<void> = Promise.resolve()

export async function writeState (state: TestnetState): Promise<void> {
  const text = JSON.stringify(state, null, 2) + '\n'
  const write = writes.then(async () => {
    await mkdir(state.dir, { recursive: true })
    const file = stateFile(state.dir)
    await writeFile(`${file}.tmp`, text)
    await rename(`${file}.tmp`, file)
  })
  writes = write.catch(() => {})
  await write
}

export async function removeState (dir: string): Promise<void> {
  await rm(stateFile(dir), { force: true })
}

const LOCK = 'testnet.lock'
/** How long a command waits for another one on the same testnet before giving up. */
const LOCK_WAIT_MS = 90_000

/** The commands of this process on each testnet dir, one after another (the lock file knows processes, not calls). */
const queues = new Map<string, Promise<void>>()

/**
 * Runs `fn` holding the testnet's lock, so that two commands (say `down` and
 * `restart`, from two terminals or from one program) never read, change and
 * write the state file over each other: a `down` that read the state before a
 * concurrent restart wrote its new PID stopped the rest, removed the data dirs and
 * left that node running. A lock left by a process that is gone is taken over.
 */
export async function withStateLock<T> (dir: string, fn: () => Promise<T>): Promise<T> {
  const root = resolve(dir)
  let done!: () => void
  const turn = new Promise<void>((resolve) => { done = resolve })
  const before = queues.get(root) ?? Promise.resolve()
  const mine = before.then(async () => { await turn })
  queues.set(root, mine)
  await before
  try {
    await mkdir(root, { recursive: true })
    const path = join(root, LOCK)
    const deadline = Date.now() + LOCK_WAIT_MS
    let lock = await tryLock(path)
    while ('heldBy' in lock) {
      if (Date.now() > deadline) throw new Error(`another murmur command (pid ${lock.heldBy}) is changing the testnet in ${root}; wait for it to finish`)
      await new Promise((r) => setTimeout(r, 50))
      lock = await tryLock(path)
    }
    try {
      return await fn()
    } finally {
      await lock.release()
    }
  } finally {
    done()
    if (queues.get(root) === mine) queues.delete(root)
  }
}
