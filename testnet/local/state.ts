// The testnet's state file: which node processes it started, on which ports,
// with which data dirs. Written after every change, so that `down` can always
// clean up, also after the CLI that started them crashed.

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { tryLock } from '../../node/pidlock.ts'

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
})
const stateSchema = z.object({
  version: z.literal(1),
  dir: z.string(),
  createdAt: z.string(),
  nodes: z.array(nodeSchema),
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

/**
 * Runs `fn` holding the testnet's lock, so that two commands (say `add` and
 * `restart` from two terminals) never read, change and write the state file over
 * each other and lose a PID. A lock left by a process that is gone is taken over.
 */
export async function withStateLock<T> (dir: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(resolve(dir), { recursive: true })
  const path = join(resolve(dir), LOCK)
  const deadline = Date.now() + LOCK_WAIT_MS
  let lock = await tryLock(path)
  while ('heldBy' in lock) {
    if (Date.now() > deadline) throw new Error(`another murmur command (pid ${lock.heldBy}) is changing the testnet in ${resolve(dir)}; wait for it to finish`)
    await new Promise((r) => setTimeout(r, 50))
    lock = await tryLock(path)
  }
  try {
    return await fn()
  } finally {
    await lock.release()
  }
}
