// The durable log of a node's replicated document, in LevelDB (level 10). Bytes only:
// the node applies an update to its in-memory document, then appends the update's
// bytes here, and acknowledges the write once the append resolves. Now and then the
// log is compacted: one atomic batch puts a snapshot of the whole document and deletes
// the updates it covers, so a crash leaves either the old or the new state, never half.
//
// Keys (utf8, sorting as bytes):
//   m:format  the layout version ('2'; a format 1 database is rewritten on open)
//   m:life    a random id written when the database is created: a reset database
//             (moved aside and refilled from the other nodes) is a new life
//   m:seq     the first sequence number after the snapshot (16 hex digits), so that
//             sequence numbers continue after a compaction left the log empty
//   s         the snapshot
//   u<seq>    an update, seq as 16 hex digits
// Values are bytes (valueEncoding 'view'). Since format 2 the snapshot and each update
// start with a CRC-32 (4 bytes, big-endian) over the key and the payload: LevelDB
// does not check its table blocks' checksums when it reads (classic-level offers no
// way to ask), and a damaged block that was stored uncompressed reads back as wrong
// bytes without an error. Wrong bytes applied to the document would stay wrong,
// since the peers sync by state vector and would never send those clocks again.
//
// Damage is looked for on open, and reported rather than refused: LevelDB, finding
// a damaged record in its write-ahead log, drops it and goes on (it says so only in
// the LOG file of the database dir, which we read); a gap in the update sequence
// numbers shows updates lost in the middle; a failed checksum shows a damaged
// record, which is skipped. The node then starts with what is left and its
// peers refill the rest at its start-up sync, as they would after --reset-state
// (which would throw away the intact part as well). Refusing to start would only
// keep the node down until an operator runs that. What no peer had received is lost
// either way; the store says how much it lost, once in the log at error level and in
// stats().damage (so `murmur state --json` shows it), and compacts once the document
// holds what was loaded, so that the gap is not reported again at every start.
//
// Writes go through one queue in call order. Appends that arrive while a write is in
// flight go together into the next batch (group commit), fsynced if any of them asked.

import { randomUUID } from 'node:crypto'
import { readdir, readFile, rename, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { crc32 } from 'node:zlib'
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
  /**
   * What was found missing or damaged: by open for the first load, by this read for
   * a later one (then droppedBytes is 0: LevelDB reports only when it opens). Null
   * when nothing was.
   */
  damage: StoreDamage | null
}

/** What the store found lost when it opened the database. */
export interface StoreDamage {
  /** Bytes LevelDB dropped from its write-ahead log when it opened the database (its LOG file says so). */
  droppedBytes: number
  /**
   * Updates missing from the log: gaps in the sequence numbers. Updates lost at the
   * end of the log leave no gap; droppedBytes counts those. A write that failed and
   * that no snapshot covered afterwards (see writeBatch) leaves a gap too: that update
   * is missing from the disk as well.
   */
  missingUpdates: number
  /** Updates that failed their checksum, skipped. */
  corruptUpdates: number
  /** Whether the snapshot failed its checksum (then it is skipped: the peers refill the document). */
  corruptSnapshot: boolean
  /** LevelDB's own lines about it, at most 5, paths in the database dir made relative. */
  reports: string[]
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
  /** What open found lost or damaged; null when nothing was. */
  damage: StoreDamage | null
}

const FORMAT = 2
/** Bytes of the checksum in front of each stored snapshot and update (format 2). */
const CHECKSUM_BYTES = 4
/** How many of LevelDB's corruption lines a damage report keeps. */
const REPORTS_MAX = 5
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
  /** The sequence number of each of `updates`. */
  seqs: number[]
  /** Gaps in the sequence numbers, failed checksums. */
  missingUpdates: number
  corruptUpdates: number
  corruptSnapshot: boolean
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
  private readonly damage: StoreDamage | null
  /** The log holds a gap or damaged records: compact even if no valid update is in it. */
  private repairPending: boolean

  private constructor (dir: string, db: Level<string, Uint8Array>, options: StateStoreOptions, lifeId: string, scan: Scan, damage: StoreDamage | null) {
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
    this.damage = damage
    this.repairPending = damage !== null && (damage.missingUpdates > 0 || damage.corruptUpdates > 0 || damage.corruptSnapshot)
    this.preloaded = { snapshot: scan.snapshot, updates: scan.updates, lifeId, damage }
  }

  /**
   * Opens (or creates) the database in `dir` and reads it through once, so that a
   * corrupt database fails here with STATE_CORRUPT rather than later. A database
   * that can be read but lost records is opened, and the loss reported (see the top
   * of this file).
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
      const dropped = await leveldbDrops(path)
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
      } else if ((scan.format ?? 1) < FORMAT) {
        await upgrade(db, path, scan)
        options.log.info({ dir: path, from: scan.format ?? 1, to: FORMAT, updates: scan.updates.length }, 'state database upgraded')
      }
      const damage = damageOf(scan, dropped)
      if (damage !== null) {
        options.log.error({ dir: path, ...damage }, `state database damaged: ${describeDamage(damage)}; the node starts with the rest and its peers refill what they have, a write that had reached no peer is lost`)
      }
      return new StateStore(path, db, options, lifeId, scan, damage)
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
    return { snapshot: scan.snapshot, updates: scan.updates, lifeId: this.lifeId, damage: damageOf(scan, { bytes: 0, reports: [] }) }
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
    if (this.repairPending) {
      // The document now holds what was loaded: a snapshot of it replaces the
      // damaged log, so the next open does not report the same loss again.
      this.compact().then(() => {
        this.log.info({ dir: this.dir }, 'state log rewritten after the damage found on open')
      }, (err: Error) => {
        this.log.warn({ dir: this.dir, err: err.message }, 'could not rewrite the damaged state log; the next start will report the damage again')
      })
    }
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
      damage: this.damage,
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
      const key = updateKey(this.nextSeq++)
      ops.push({ type: 'put', key, value: seal(key, pending.update) })
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
    if (this.logUpdates === 0 && !this.repairPending) {
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
      { type: 'put', key: KEY_SNAPSHOT, value: seal(KEY_SNAPSHOT, snapshot) },
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
    this.repairPending = false
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
  const scan: Scan = {
    lifeId: undefined,
    format: undefined,
    snapshot: null,
    updates: [],
    seqs: [],
    missingUpdates: 0,
    corruptUpdates: 0,
    corruptSnapshot: false,
    firstSeq: 0,
    nextSeq: 0,
    logBytes: 0,
    empty: true,
  }
  let seqAfterSnapshot = 0
  let first: number | undefined
  let last: number | undefined
  // The whole key space, so that every table file is read once. The m: keys sort
  // before the snapshot and the updates: the format is known when they are read.
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
      const payload = unseal(key, value, scan.format)
      if (payload === null) scan.corruptSnapshot = true
      else scan.snapshot = payload
    } else if (key.startsWith(UPDATE_PREFIX)) {
      const seq = hexSeq(key.slice(UPDATE_PREFIX.length))
      // Updates follow the snapshot's sequence number, or 0, one by one.
      const expected = last === undefined ? seqAfterSnapshot : last + 1
      if (seq > expected) scan.missingUpdates += seq - expected
      first ??= seq
      last = seq
      const payload = unseal(key, value, scan.format)
      if (payload === null) {
        scan.corruptUpdates++
        continue
      }
      scan.updates.push(payload)
      scan.seqs.push(seq)
      scan.logBytes += payload.byteLength
    }
  }
  scan.nextSeq = Math.max(seqAfterSnapshot, last === undefined ? 0 : last + 1)
  scan.firstSeq = first ?? scan.nextSeq
  return scan
}

/** A stored value: the CRC-32 of key and payload, then the payload. */
function seal (key: string, payload: Uint8Array): Uint8Array {
  const value = new Uint8Array(CHECKSUM_BYTES + payload.byteLength)
  new DataView(value.buffer).setUint32(0, checksum(key, payload))
  value.set(payload, CHECKSUM_BYTES)
  return value
}

/** The payload of a stored value, or null if it fails its checksum. Format 1 values have none. */
function unseal (key: string, value: Uint8Array, format: number | undefined): Uint8Array | null {
  if ((format ?? 1) < 2) return value
  if (value.byteLength < CHECKSUM_BYTES) return null
  const payload = value.subarray(CHECKSUM_BYTES)
  const stored = new DataView(value.buffer, value.byteOffset, CHECKSUM_BYTES).getUint32(0)
  return stored === checksum(key, payload) ? payload : null
}

function checksum (key: string, payload: Uint8Array): number {
  return crc32(payload, crc32(key))
}

/** Rewrites a format 1 database (values without checksums) as format 2, in one atomic batch. */
async function upgrade (db: Level<string, Uint8Array>, path: string, scan: Scan): Promise<void> {
  const ops: Op[] = [{ type: 'put', key: KEY_FORMAT, value: encoder.encode(String(FORMAT)) }]
  if (scan.snapshot !== null) ops.push({ type: 'put', key: KEY_SNAPSHOT, value: seal(KEY_SNAPSHOT, scan.snapshot) })
  scan.seqs.forEach((seq, i) => {
    const key = updateKey(seq)
    ops.push({ type: 'put', key, value: seal(key, scan.updates[i]!) })
  })
  try {
    await db.batch(ops, { sync: true })
  } catch (err) {
    throw new MurmurError('STATE_WRITE_FAILED', `cannot write to the state database in ${path} (${reasonOf(err, path)})`)
  }
}

/**
 * What LevelDB says it dropped while opening the database. It writes a new LOG file
 * at each open (the previous one becomes LOG.old), so this is about this open only.
 * A record torn by a crash at the very end of the log is not reported by LevelDB
 * (it is not corruption); a damaged one anywhere is ('dropping N bytes; Corruption: ...').
 */
async function leveldbDrops (path: string): Promise<{ bytes: number, reports: string[] }> {
  let text: string
  try {
    text = await readFile(join(path, 'LOG'), 'utf8')
  } catch {
    return { bytes: 0, reports: [] }
  }
  let bytes = 0
  const reports: string[] = []
  for (const line of text.split('\n')) {
    if (!line.includes('Corruption')) continue
    const dropped = /dropping (\d+) bytes/.exec(line)
    if (dropped !== null) bytes += Number(dropped[1])
    // '2026/01/02-03:04:05.123456 7f00c0ffee00 (ignoring error) /dir/000005.log: dropping ...'
    const said = line.replace(/^\d{4}\/\d\d\/\d\d-[\d:.]+ [0-9a-f]+ /, '').replace(/^\(ignoring error\) /, '').replaceAll(`${path}/`, '').trim()
    if (reports.length < REPORTS_MAX) reports.push(said.length > 160 ? `${said.slice(0, 157)}...` : said)
  }
  return { bytes, reports }
}

function damageOf (scan: Scan, dropped: { bytes: number, reports: string[] }): StoreDamage | null {
  const damage: StoreDamage = {
    droppedBytes: dropped.bytes,
    missingUpdates: scan.missingUpdates,
    corruptUpdates: scan.corruptUpdates,
    corruptSnapshot: scan.corruptSnapshot,
    reports: dropped.reports,
  }
  const found = damage.droppedBytes > 0 || damage.reports.length > 0 || damage.missingUpdates > 0 || damage.corruptUpdates > 0 || damage.corruptSnapshot
  return found ? damage : null
}

/** The damage in words, one line: 'LevelDB dropped 5760 bytes of its log, 24 updates are missing'. */
function describeDamage (damage: StoreDamage): string {
  const parts: string[] = []
  if (damage.droppedBytes > 0) parts.push(`LevelDB dropped ${damage.droppedBytes} bytes of its log`)
  else if (damage.reports.length > 0) parts.push(`LevelDB reported corruption (${damage.reports[0]})`)
  if (damage.missingUpdates > 0) parts.push(`${damage.missingUpdates} updates are missing`)
  if (damage.corruptUpdates > 0) parts.push(`${damage.corruptUpdates} updates failed their checksum`)
  if (damage.corruptSnapshot) parts.push('the snapshot failed its checksum')
  return parts.join(', ')
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
