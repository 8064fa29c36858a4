// A node's data dir: a marker that says the dir is murmur's, the node's identity
// (an Ed25519 key, so the peer id survives restarts), and a lock so that two
// processes never share one dir.
//
// The dir is the node's alone: 0711 (others may pass through it to a task's
// alloc dir, never list it), its files 0600 and its dirs 0700, made so and put
// right on every open (an earlier version, or a umask, left them open). Tasks
// run as other users (executor/) and must reach none of it but their own alloc
// dir: not the key, not the state database, not the task records and logs.

import { chmod, lstat, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { z } from 'zod'
import { InputError, MurmurError } from './errors.ts'
import { tryLock } from './pidlock.ts'

const MARKER = 'murmur.json'
const KEY = 'identity.key'
const LOCK = 'node.lock'
/** Runtime facts of the running node (pid, peer id, addresses, API), for tools such as the testnet. */
export const RUNTIME = 'node.json'
const FORMAT_VERSION = 1
/** The executor's dir: it sets its own modes (a task's alloc dir belongs to the task's user). */
const TASKS = 'tasks'
/** Search without read for others: the way to the tasks' alloc dirs, by absolute path (HOME), and no listing. */
const TOP_MODE = 0o711
const DIR_MODE = 0o700
const FILE_MODE = 0o600

const markerSchema = z.object({ format: z.literal('murmur-data-dir'), version: z.number().int(), peerId: z.string() })

export interface DataDir {
  path: string
  privateKey: PrivateKey
  peerId: string
  /** Removes the lock; call once the node has stopped. */
  release: () => Promise<void>
}

export async function openDataDir (path: string, peerIdOf: (key: PrivateKey) => string): Promise<DataDir> {
  const dir = resolve(path)
  try {
    // Dirs made above it get the same mode (whatever the umask): a task must pass through them too.
    const made = await mkdir(dir, { recursive: true, mode: TOP_MODE })
    if (made !== undefined) for (let at = dir; at.startsWith(made); at = dirname(at)) await chmod(at, TOP_MODE)
    await chmod(dir, TOP_MODE)
  } catch (err) {
    throw new InputError('DATA_DIR_UNUSABLE', `cannot create data dir ${dir} with mode 0711: ${(err as Error).message}`)
  }
  const entries = await readdir(dir).catch((err: Error) => {
    throw new InputError('DATA_DIR_UNUSABLE', `cannot read data dir ${dir}: ${err.message}`)
  })
  let privateKey: PrivateKey
  if (entries.includes(MARKER)) {
    privateKey = await loadIdentity(dir)
  } else if (entries.filter((e) => !e.startsWith('.')).length > 0) {
    throw new InputError('DATA_DIR_FOREIGN', `data dir ${dir} is not empty and has no ${MARKER}: it belongs to something else; choose an empty or new dir`)
  } else {
    privateKey = await createIdentity(dir, peerIdOf)
  }
  const peerId = peerIdOf(privateKey)
  // Others may pass through the data dir: what the node makes in it from now on (the state database, which
  // LevelDB makes 0755 and 0644 under the usual umask, a new one after --reset-state) must be its alone from
  // the start. The executor's spawner sets 022 again for the tasks.
  process.umask(0o077)
  const release = await lock(dir)
  await closeUp(dir, true).catch((err: Error) => {
    throw new InputError('DATA_DIR_UNUSABLE', `cannot make data dir ${dir} private (0711, dirs in it 0700, files 0600): ${err.message}; check who owns it`)
  })
  return { path: dir, privateKey, peerId, release }
}

async function loadIdentity (dir: string): Promise<PrivateKey> {
  const corrupt = (what: string): never => {
    throw new InputError('DATA_DIR_CORRUPT', `data dir ${dir} is corrupt (${what}); restore it from a backup or start with a new dir`)
  }
  let marker: z.infer<typeof markerSchema> | undefined
  try {
    const parsed = markerSchema.safeParse(JSON.parse(await readFile(join(dir, MARKER), 'utf8')))
    if (parsed.success) marker = parsed.data
  } catch {}
  if (marker === undefined) return corrupt(`${MARKER} is not a murmur marker`)
  if (marker.version > FORMAT_VERSION) {
    throw new InputError('DATA_DIR_NEWER', `data dir ${dir} was written by a newer murmur (format ${marker.version}); upgrade murmur`)
  }
  let key: PrivateKey | undefined
  try {
    key = privateKeyFromProtobuf(await readFile(join(dir, KEY)))
  } catch {}
  if (key === undefined) return corrupt(`${KEY} is missing or unreadable`)
  return key
}

async function createIdentity (dir: string, peerIdOf: (key: PrivateKey) => string): Promise<PrivateKey> {
  const key = await generateKeyPair('Ed25519')
  await writeFile(join(dir, KEY), privateKeyToProtobuf(key), { mode: 0o600 })
  // The marker goes last and atomically: a dir with a marker always has its key.
  const marker = { format: 'murmur-data-dir', version: FORMAT_VERSION, peerId: peerIdOf(key) }
  await writeFile(join(dir, `${MARKER}.tmp`), JSON.stringify(marker, null, 2) + '\n', { mode: FILE_MODE })
  await rename(join(dir, `${MARKER}.tmp`), join(dir, MARKER))
  return key
}

/**
 * Takes group and others' rights off everything below `dir` but the executor's tasks dir; symlinks are
 * left alone (their modes mean nothing, and what they point to is not the node's to change).
 */
async function closeUp (dir: string, top: boolean): Promise<void> {
  for (const name of await readdir(dir)) {
    if (top && name === TASKS) continue
    const path = join(dir, name)
    const stat = await lstat(path).catch(() => null)
    if (stat === null || stat.isSymbolicLink()) continue
    if (stat.isDirectory()) {
      if ((stat.mode & 0o077) !== 0) await chmod(path, stat.mode & DIR_MODE)
      await closeUp(path, false)
    } else if ((stat.mode & 0o077) !== 0) {
      await chmod(path, stat.mode & FILE_MODE)
    }
  }
}

/** One process per data dir. */
async function lock (dir: string): Promise<() => Promise<void>> {
  const result = await tryLock(join(dir, LOCK))
  if ('heldBy' in result) {
    throw new MurmurError('DATA_DIR_LOCKED', `data dir ${dir} is in use by another murmur node (pid ${result.heldBy}); stop it or choose another --data-dir`)
  }
  return result.release
}

export async function writeRuntime (dir: string, info: object): Promise<void> {
  await writeFile(join(dir, `${RUNTIME}.tmp`), JSON.stringify(info, null, 2) + '\n', { mode: FILE_MODE })
  await rename(join(dir, `${RUNTIME}.tmp`), join(dir, RUNTIME))
}

export async function removeRuntime (dir: string): Promise<void> {
  await rm(join(dir, RUNTIME), { force: true })
}
