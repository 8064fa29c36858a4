// The durable log of a node's replicated document, in LevelDB (level 10). Bytes only:
// the node applies an update to its in-memory document, then appends the update's
// bytes here, and acknowledges the write once the append resolves. Now and then the
// log is compacted: one atomic batch puts a snapshot of the whole document and deletes
// the updates it covers, so a crash leaves either the old or the new state, never half.
//
// Keys (utf8, sorting as bytes):
//   m:format  the layout version ('1')
//   m:life    a random id written when the database is created: a reset database
//             (moved aside and refilled from the other nodes) is a new life
//   m:seq     the first sequence number after the snapshot (16 hex digits), so that
//             sequence numbers continue after a compaction left the log empty
//   s         the snapshot
//   u<seq>    an update, seq as 16 hex digits
// Values are bytes (valueEncoding 'view').
//
// Writes go through one queue in call order. Appends that arrive while a write is in
// flight go together into the next batch (group commit), fsynced if any of them asked.

import { randomUUID } from 'node:crypto'
import { readdir, rename, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { Level } from 'level'
import type { Logger } from 'pino'
import { MurmurError } from './errors.ts'

export interface StateStoreOptions {
  log: Logger
  /** Compact when the log holds this many updates (default 1000) … */
  compactAfterUpdates?: number
  /** … or this many bytes of updates (default 8 MiB). */
  compactAfterBytes?: number
}

export interface LoadedState {
  snapshot: Uint8Array | null
  updates: Uint8Array[]
  lifeId: string
}

export interface StateStoreStats {
  /** Updates in the log now (since the last snapshot). */
  updates: number
  /** Bytes of those updates. */
  logBytes: number
  snapshotBytes: number
  /** Compactions done by this process. */
  compactions: number
  /** How long the last compaction took, snapshot source included. */
  lastCompactionMs: number | null
  /** Appends written by this process. */
  appends: number
}

const FORMAT = 1
const KEY_FORMAT = 'm:format'
const KEY_LIFE = 'm:life'
const KEY_SEQ = 'm:seq'
const KEY_SNAPSHOT = 's'
const UPDATE_PREFIX = 'u'
/** Past this many bytes a group-commit batch is cut (at least one update per batch). */
const BATCH_BYTES_MAX = 4 * 1024 * 1024
/** After a failed automatic compaction, wait this long before trying again. */
const COMPACT_RETRY_MS = 5_000
/** Files LevelDB may leave in its directory, also before CURRENT exists. */
const LEVELDB_FILE = /^(LOCK|LOG|LOG\.old|CURRENT|MANIFEST-\d+|\d+\.(log|ldb|sst|dbtmp))$/

const encoder = new TextEncoder()
const decoder = new TextDecoder()

interface PendingAppend {
  update: Uint8Array
  durable: boolean
  resolve: () => void
  reject: (err: Error) => void
}

interface Scan {
  lifeId: string | undefined
  format: number | undefined
  snapshot: Uint8Array | null
  updates: Uint8Array[]
  /** The lowest and one past the highest sequence number in the log. */
  firstSeq: number
  nextSeq: number
  logBytes: number
  /** Whether the database holds any key at all. */
  empty: boolean
}

type Op = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

export class StateStore {
  readonly dir: string
  private readonly db: Level<string, Uint8Array>
  private readonly log: Logger
  private readonly compactAfterUpdates: number
  private readonly compactAfterBytes: number
  private readonly lifeId: string
  private source: (() => Uint8Array) | undefined
  private queue: PendingAppend[] = []
  private compactRequests: Array<PromiseWithResolvers<void>> = []
  private idleWaiters: Array<() => void> = []
  private running = false
  private closing: Promise<void> | undefined
  /** What open() read, handed to the first load() if nothing was written since. */
  private preloaded: LoadedState | undefined
  private firstSeq: number
  private nextSeq: number
  private logUpdates: number
  private logBytes: number
  private snapshotBytes: number
  private compactions = 0
  private lastCompactionMs: number | null = null
  private appends = 0
  private autoCompactNotBefore = 0

  private constructor (dir: string, db: Level<string, Uint8Array>, options: StateStoreOptions, lifeId: string, scan: Scan) {
    this.dir = dir
    this.db = db
    this.log = options.log
    this.compactAfterUpdates = options.compactAfterUpdates ?? 1000
    this.compactAfterBytes = options.compactAfterBytes ?? 8 * 1024 * 1024
    this.lifeId = lifeId
    this.firstSeq = scan.firstSeq
    this.nextSeq = scan.nextSeq
    this.logUpdates = scan.updates.length
    this.logBytes = scan.logBytes
    this.snapshotBytes = scan.snapshot?.byteLength ?? 0
    this.preloaded = { snapshot: scan.snapshot, updates: scan.updates, lifeId }
  }

  /**
   * Opens (or creates) the database in `dir` and reads it through once, so that a
   * corrupt database fails here with STATE_CORRUPT rather than later.
   */
  static async open (dir: string, options: StateStoreOptions): Promise<StateStore> {
    const path = resolve(dir)
    await checkDir(path)
    const db = new Level<string, Uint8Array>(path, { valueEncoding: 'view' })
    try {
      await db.open()
    } catch (err) {
      throw openError(path, err)
    }
    try {
      let scan: Scan
      try {
        scan = await readAll(db)
      } catch (err) {
        throw corrupt(path, reasonOf(err, path))
      }
      if (scan.format !== undefined && scan.format > FORMAT) {
        throw new MurmurError('STATE_NEWER', `the state database in ${path} was written by a newer murmur (format ${scan.format}); upgrade murmur`, 2)
      }
      let lifeId = scan.lifeId
      if (lifeId === undefined) {
        if (!scan.empty) throw corrupt(path, 'it holds no murmur life id')
        lifeId = randomUUID()
        try {
          await db.batch([
            { type: 'put', key: KEY_FORMAT, value: encoder.encode(String(FORMAT)) },
            { type: 'put', key: KEY_LIFE, value: encoder.encode(lifeId) },
          ], { sync: true })
        } catch (err) {
          throw new MurmurError('STATE_WRITE_FAILED', `cannot write to the state database in ${path} (${reasonOf(err, path)})`)
        }
        options.log.debug({ dir: path, lifeId }, 'state database created')
      }
      return new StateStore(path, db, options, lifeId, scan)
    } catch (err) {
      await db.close().catch(() => {})
      throw err
    }
  }

  /** Snapshot (if any) and every update appended after it, in append order, and the store's life id. */
  async load (): Promise<LoadedState> {
    if (this.closing !== undefined) throw closedError(this.dir)
    const preloaded = this.preloaded
    if (preloaded !== undefined) {
      this.preloaded = undefined
      return preloaded
    }
    let scan: Scan
    try {
      // One iterator reads one consistent view: a compaction cannot fall between
      // reading the snapshot and reading the log.
      scan = await readAll(this.db)
    } catch (err) {
      if (this.closing !== undefined) throw closedError(this.dir)
      throw corrupt(this.dir, reasonOf(err, this.dir))
    }
    return { snapshot: scan.snapshot, updates: scan.updates, lifeId: this.lifeId }
  }

  /**
   * Appends one update. Resolves once it is written; with durable: true, once it is
   * fsynced (LevelDB sync: true). Appends are written in call order. Do not modify
   * the bytes before the promise settles.
   */
  append (update: Uint8Array, options: { durable: boolean }): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(closedError(this.dir))
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    this.queue.push({ update, durable: options.durable, resolve, reject })
    this.kick()
    return promise
  }

  /**
   * Set once by the node: returns the whole current document (Y.encodeStateAsUpdate).
   * The store calls it when the log has grown past the limits. Set it only once the
   * document holds the loaded state: every update written so far must be in it.
   */
  setSnapshotSource (source: () => Uint8Array): void {
    this.source = source
  }

  /** Compacts now (also used by tests and on clean shutdown). Waits for earlier appends. */
  compact (): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(closedError(this.dir))
    const request = Promise.withResolvers<void>()
    this.compactRequests.push(request)
    this.kick()
    return request.promise
  }

  stats (): StateStoreStats {
    return {
      updates: this.logUpdates,
      logBytes: this.logBytes,
      snapshotBytes: this.snapshotBytes,
      compactions: this.compactions,
      lastCompactionMs: this.lastCompactionMs,
      appends: this.appends,
    }
  }

  /** Waits for queued appends and compactions, then closes the database. Later appends reject with STATE_CLOSED. */
  close (): Promise<void> {
    this.closing ??= (async () => {
      if (this.running) await new Promise<void>((resolve) => { this.idleWaiters.push(resolve) })
      this.preloaded = undefined
      await this.db.close()
    })()
    return this.closing
  }

  private kick (): void {
    if (this.running) return
    this.running = true
    this.run().catch((err: unknown) => {
      // run() settles every promise it was given; this is a bug, not a write failure.
      this.log.error({ err }, 'state store writer failed')
    })
  }

  /** The one writer: batches and compactions, one at a time, in order. */
  private async run (): Promise<void> {
    try {
      // Let the appends of the current tick join the first batch.
      await Promise.resolve()
      for (;;) {
        if (this.compactRequests.length > 0) {
          await this.compactNow(this.compactRequests.splice(0))
          continue
        }
        if (this.queue.length === 0) break
        await this.writeBatch()
        if (this.autoCompactDue()) await this.compactNow([])
      }
    } finally {
      this.running = false
      for (const wake of this.idleWaiters.splice(0)) wake()
    }
  }

  private async writeBatch (): Promise<void> {
    let bytes = 0
    let count = 0
    while (count < this.queue.length) {
      const size = this.queue[count]!.update.byteLength
      if (count > 0 && bytes + size > BATCH_BYTES_MAX) break
      bytes += size
      count++
    }
    const batch = this.queue.splice(0, count)
    const ops: Op[] = []
    let sync = false
    for (const pending of batch) {
      ops.push({ type: 'put', key: updateKey(this.nextSeq++), value: pending.update })
      if (pending.durable) sync = true
    }
    // A failed batch leaves a gap in the sequence: a number that may have been
    // written is never used twice.
    try {
      await this.db.batch(ops, { sync })
    } catch (err) {
      const error = new MurmurError('STATE_WRITE_FAILED', `cannot write to the state database in ${this.dir} (${reasonOf(err, this.dir)})`)
      error.cause = err
      for (const pending of batch) pending.reject(error)
      return
    }
    this.preloaded = undefined
    this.logUpdates += batch.length
    this.logBytes += bytes
    this.appends += batch.length
    for (const pending of batch) pending.resolve()
  }

  private autoCompactDue (): boolean {
    if (this.source === undefined) return false
    if (this.logUpdates < this.compactAfterUpdates && this.logBytes < this.compactAfterBytes) return false
    return Date.now() >= this.autoCompactNotBefore
  }

  /** One atomic batch: the new snapshot in, every update written so far out. */
  private async compactNow (requests: Array<PromiseWithResolvers<void>>): Promise<void> {
    const fail = (error: Error): void => {
      if (requests.length === 0) {
        this.autoCompactNotBefore = Date.now() + COMPACT_RETRY_MS
        this.log.warn({ err: error }, 'state log compaction failed; will try again')
      }
      for (const request of requests) request.reject(error)
    }
    if (this.source === undefined) {
      fail(new MurmurError('STATE_NO_SNAPSHOT_SOURCE', 'cannot compact the state log: no snapshot source is set'))
      return
    }
    if (this.logUpdates === 0) {
      for (const request of requests) request.resolve()
      return
    }
    const started = performance.now()
    let snapshot: Uint8Array
    try {
      snapshot = this.source()
    } catch (err) {
      const error = new MurmurError('STATE_COMPACTION_FAILED', `cannot compact the state log: the snapshot source failed (${reasonOf(err, this.dir)})`)
      error.cause = err
      fail(error)
      return
    }
    const from = this.firstSeq
    const to = this.nextSeq
    const ops: Op[] = [
      { type: 'put', key: KEY_SNAPSHOT, value: snapshot },
      { type: 'put', key: KEY_SEQ, value: encoder.encode(seqHex(to)) },
    ]
    for (let seq = from; seq < to; seq++) ops.push({ type: 'del', key: updateKey(seq) })
    try {
      await this.db.batch(ops, { sync: true })
    } catch (err) {
      const error = new MurmurError('STATE_WRITE_FAILED', `cannot write to the state database in ${this.dir} (${reasonOf(err, this.dir)})`)
      error.cause = err
      fail(error)
      return
    }
    const ms = performance.now() - started
    this.log.debug({
      updates: this.logUpdates,
      logBytes: this.logBytes,
      snapshotBytes: snapshot.byteLength,
      previousSnapshotBytes: this.snapshotBytes,
      seq: to,
      ms: Math.round(ms * 10) / 10,
    }, 'state log compacted')
    this.preloaded = undefined
    this.firstSeq = to
    this.logUpdates = 0
    this.logBytes = 0
    this.snapshotBytes = snapshot.byteLength
    this.compactions++
    this.lastCompactionMs = ms
    for (const request of requests) request.resolve()
  }
}

/** Moves a state database aside (renames dir to `${dir}.reset-<ISO time without colons>`) and returns the new path, or null if there was none. */
export async function resetState (dir: string): Promise<string | null> {
  const path = resolve(dir)
  try {
    await stat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  const stamp = new Date().toISOString().replaceAll(':', '')
  for (let n = 0; ; n++) {
    const target = `${path}.reset-${stamp}${n === 0 ? '' : `-${n}`}`
    try {
      await stat(target)
      continue
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    await rename(path, target)
    return target
  }
}

function seqHex (seq: number): string {
  return seq.toString(16).padStart(16, '0')
}

function updateKey (seq: number): string {
  return UPDATE_PREFIX + seqHex(seq)
}

/** A sequence number as stored: 16 hex digits; anything else is corruption. */
function hexSeq (text: string): number {
  const seq = /^[0-9a-f]{16}$/.test(text) ? parseInt(text, 16) : NaN
  if (!Number.isSafeInteger(seq)) throw new Error(`a sequence number is '${text.slice(0, 20)}'`)
  return seq
}

async function readAll (db: Level<string, Uint8Array>): Promise<Scan> {
  const scan: Scan = { lifeId: undefined, format: undefined, snapshot: null, updates: [], firstSeq: 0, nextSeq: 0, logBytes: 0, empty: true }
  let seqAfterSnapshot = 0
  let first: number | undefined
  let last: number | undefined
  // The whole key space, so that every table file is read once.
  for await (const [key, value] of db.iterator()) {
    scan.empty = false
    if (key === KEY_LIFE) {
      scan.lifeId = decoder.decode(value)
    } else if (key === KEY_FORMAT) {
      scan.format = Number(decoder.decode(value))
      if (!Number.isSafeInteger(scan.format)) throw new Error(`the format marker is '${decoder.decode(value).slice(0, 20)}'`)
    } else if (key === KEY_SEQ) {
      seqAfterSnapshot = hexSeq(decoder.decode(value))
    } else if (key === KEY_SNAPSHOT) {
      scan.snapshot = value
    } else if (key.startsWith(UPDATE_PREFIX)) {
      const seq = hexSeq(key.slice(UPDATE_PREFIX.length))
      first ??= seq
      last = seq
      scan.updates.push(value)
      scan.logBytes += value.byteLength
    }
  }
  scan.nextSeq = Math.max(seqAfterSnapshot, last === undefined ? 0 : last + 1)
  scan.firstSeq = first ?? scan.nextSeq
  return scan
}

/** Refuses a path that is a file, or a directory holding something that is not LevelDB's. */
async function checkDir (path: string): Promise<void> {
  let entries: string[]
  try {
    const info = await stat(path)
    if (!info.isDirectory()) throw corrupt(path, 'it is not a directory')
    entries = await readdir(path)
  } catch (err) {
    if (err instanceof MurmurError) throw err
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw openError(path, err)
  }
  if (entries.includes('CURRENT')) return
  const foreign = entries.find((entry) => !LEVELDB_FILE.test(entry))
  if (foreign !== undefined) throw corrupt(path, `it is not a LevelDB database: no CURRENT file, and it holds ${foreign}`)
}

function openError (path: string, err: unknown): MurmurError {
  const cause = causeOf(err)
  const reason = reasonOf(err, path)
  if (cause.code === 'LEVEL_LOCKED') {
    return new MurmurError('STATE_LOCKED', `the state database in ${path} is in use by another process (${reason}); stop that node or choose another --data-dir`)
  }
  if (cause.code === 'EACCES' || cause.code === 'EPERM' || /permission denied/i.test(reason)) {
    return new MurmurError('STATE_UNUSABLE', `the state database in ${path} cannot be opened (${reason}); check the permissions of the data dir`)
  }
  return corrupt(path, reason)
}

function corrupt (path: string, reason: string): MurmurError {
  return new MurmurError('STATE_CORRUPT', `the state database in ${path} cannot be read (${reason}); start the node with --reset-state to move it aside and refill it from the other nodes`, 2)
}

function closedError (path: string): MurmurError {
  return new MurmurError('STATE_CLOSED', `the state database in ${path} is closed`)
}

/** abstract-level wraps open errors ('Database failed to open'); the cause says why. */
function causeOf (err: unknown): { code?: string, message: string } {
  let e = err as { code?: string, message?: string, cause?: unknown } | undefined
  while (e?.code === 'LEVEL_DATABASE_NOT_OPEN' && e.cause !== undefined) e = e.cause as typeof e
  return { code: e?.code, message: String(e?.message ?? err) }
}

/** The cause's message, one short line, paths inside the database dir made relative. */
function reasonOf (err: unknown, path: string): string {
  const line = causeOf(err).message.split('\n')[0]!.replaceAll(`${path}/`, '').trim()
  return line.length > 160 ? `${line.slice(0, 157)}...` : line
}
