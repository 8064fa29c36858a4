// A task's stdout and stderr: files the task appends to itself, capped by
// copy-truncate rotation, read back as one logical byte stream per stream.
//
// The task's fds 1 and 2 are these files, opened O_APPEND (no pipe through the
// node), so the task keeps logging while the node restarts. The node caps the
// size by copying the live file aside and truncating it; the task's next append
// lands at offset 0. The offset of a byte is the number of bytes before it since
// the task began, so offsets stay put across rotations and node restarts:
//
//   dir/stdout.log      live, [base, base + size): the task appends here
//   dir/stdout.log.1    the newest rotated bytes, [base - size(.1), base)
//   dir/stdout.log.2    the bytes just before those, and so on up to `files`
//   dir/logs.json       base per stream, and the inode of the .1 it goes with
//
// Rotation is driven from outside (the executor's sampler, about once a second),
// so a stream holds at most maxBytes after each rotateIfNeeded() and can exceed
// it by what the task writes until the next call.

import { closeSync, constants, type FSWatcher, fstatSync, ftruncateSync, mkdirSync, openSync, read, readSync, watch, write, writeSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

export type LogStream = 'stdout' | 'stderr'

export interface LogLimits {
  /** Per stream, the live file and the rotated ones together, after each rotateIfNeeded(); between calls the task's writes add to it. */
  maxBytes: number
  /** Rotated files kept per stream (>= 1). */
  files: number
}

export const LOG_DEFAULTS: Readonly<LogLimits> = Object.freeze({
  /** Hours of a quiet service's output and the whole context of a crash, while a thousand tasks still fit in 20 GiB. */
  maxBytes: 10 * 1024 * 1024,
  /** A quarter of the budget goes at a time: history shrinks in steps of 2.5 MiB, not all at once. */
  files: 3,
})

export interface LogChunk {
  data: Buffer
  /** The logical range of `data`. */
  start: number
  end: number
  /** The oldest logical offset still kept. */
  first: number
  /** The logical end of what is written now. */
  last: number
}

export interface LogReadOptions {
  offset?: number | undefined
  length?: number | undefined
  tail?: number | undefined
  signal?: AbortSignal | undefined
}

export interface LogFollowOptions {
  offset?: number | undefined
  tail?: number | undefined
  signal?: AbortSignal | undefined
}

/** One read returns at most this much: one API response's worth, and a follower's step. */
const READ_BYTES_MAX = 1024 * 1024
const COPY_CHUNK_BYTES = 1024 * 1024
/** Passes copying what the task wrote during the copy before truncating anyway; a writer faster than a memory copy loses the rest. */
const CATCH_UP_ROUNDS_MAX = 4
/** A follower looks again this often when fs.watch runs (a net for missed events), and when it could not be started. */
const FOLLOW_POLL_WATCHED_MS = 250
const FOLLOW_POLL_UNWATCHED_MS = 100
const FILE_MODE = 0o600
const STATE_FILE = 'logs.json'
const STREAMS: readonly LogStream[] = ['stdout', 'stderr']

interface Rotated { size: number, ino: string }

interface StreamFiles {
  readonly name: LogStream
  readonly path: string
  /** O_RDWR, for fstat, pread and ftruncate; the node never writes through it. */
  readonly fd: number
  /** The logical offset of the live file's first byte. */
  base: number
  /** Newest first: rotated[0] is `.1`. */
  rotated: Rotated[]
}

interface SavedState { stdout: { base: number, rotatedIno: string | null }, stderr: { base: number, rotatedIno: string | null } }

interface Follower { stream: LogStream, dirty: boolean, wake: (() => void) | null }

const readAsync = promisify(read)
const writeAsync = promisify(write)

export class TaskLogs {
  readonly dir: string
  private readonly limits: LogLimits
  private readonly streams: Record<LogStream, StreamFiles>
  private writers: { stdout: number, stderr: number } | null = null
  /** Rotation, reads and disk accounting run one at a time, so a read never sees half a rotation. */
  private queue: Promise<unknown> = Promise.resolve()
  private readonly followers = new Set<Follower>()
  private watcher: FSWatcher | null = null
  private watchFailed = false
  private ended = false
  private closed = false

  private constructor (dir: string, limits: LogLimits, streams: Record<LogStream, StreamFiles>) {
    this.dir = dir
    this.limits = limits
    this.streams = streams
  }

  /**
   * Opens the logs in `dir`, picking up what an earlier life wrote there; `fresh`: makes `dir`, which must not
   * exist yet, for a task that starts now (nothing to read back, so no reads of the dir).
   */
  static async open (dir: string, limits: LogLimits = LOG_DEFAULTS, opts: { fresh?: boolean } = {}): Promise<TaskLogs> {
    checkLimits(limits)
    if (opts.fresh === true) return TaskLogs.create(dir, limits)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const saved = await loadState(dir)
    const stdout = await openStream(dir, 'stdout', saved)
    let stderr: Awaited<ReturnType<typeof openStream>>
    try {
      stderr = await openStream(dir, 'stderr', saved)
    } catch (err) {
      closeSync(stdout.files.fd)
      throw err
    }
    const logs = new TaskLogs(dir, { maxBytes: limits.maxBytes, files: limits.files }, { stdout: stdout.files, stderr: stderr.files })
    // A new dir's record would say what its absence says (base 0, nothing rotated): it is written at the first
    // rotation instead, which saves every task start a file, a rename and an fsync.
    const guessed = saved === null && (stdout.files.rotated.length > 0 || stderr.files.rotated.length > 0)
    if (guessed || stdout.recovered || stderr.recovered) await logs.persist()
    return logs
  }

  private static create (dir: string, limits: LogLimits): TaskLogs {
    mkdirSync(dir, { mode: 0o700 })
    // No record until the first rotation: a missing one says the same (base 0, nothing rotated).
    const stream = (name: LogStream): StreamFiles => {
      const path = join(dir, `${name}.log`)
      return { name, path, fd: openSync(path, constants.O_RDWR | constants.O_CREAT, FILE_MODE), base: 0, rotated: [] }
    }
    const stdout = stream('stdout')
    let stderr: StreamFiles
    try {
      stderr = stream('stderr')
    } catch (err) {
      closeSync(stdout.fd)
      throw err
    }
    return new TaskLogs(dir, { maxBytes: limits.maxBytes, files: limits.files }, { stdout, stderr })
  }

  /** The live files a child process appends to (opened O_WRONLY|O_APPEND|O_CREAT, mode 0o600, as openWriters() does). */
  writerPaths (): { stdout: string, stderr: string } {
    return { stdout: this.streams.stdout.path, stderr: this.streams.stderr.path }
  }

  /** Opens (O_WRONLY|O_APPEND|O_CREAT, mode 0o600) the write ends for a child process; the caller passes them as stdio and then calls closeWriters(). */
  openWriters (): { stdout: number, stderr: number } {
    if (this.closed) throw new Error(`the logs in ${this.dir} are closed`)
    if (this.writers !== null) throw new Error(`the log writers in ${this.dir} are already open: call closeWriters() first`)
    const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT
    const stdout = openSync(this.streams.stdout.path, flags, FILE_MODE)
    try {
      this.writers = { stdout, stderr: openSync(this.streams.stderr.path, flags, FILE_MODE) }
    } catch (err) {
      closeSync(stdout)
      throw err
    }
    return { ...this.writers }
  }

  closeWriters (): void {
    if (this.writers === null) return
    const { stdout, stderr } = this.writers
    this.writers = null
    closeSync(stdout)
    closeSync(stderr)
  }

  /**
   * Rotates any stream whose live file is over maxBytes / (files + 1), then drops
   * the oldest rotated files while the stream holds more than maxBytes. When
   * nothing is to be done this is one fstat per stream.
   */
  async rotateIfNeeded (): Promise<void> {
    if (this.closed) return
    await this.serial(async () => {
      let changed = false
      for (const name of STREAMS) {
        if (this.closed) break
        const s = this.streams[name]
        if (fstatSync(s.fd).size > this.shareBytes()) {
          await this.rotate(s)
          this.notify(name)
          changed = true
        }
        if (await this.trim(s)) changed = true
      }
      if (changed) await this.persist()
    })
  }

  /**
   * offset: logical start (default: first kept); tail: instead, the last `tail`
   * bytes; length: at most this many bytes (default and cap 1 MiB; a tail longer
   * than that gives its last 1 MiB). Offsets before `first` start at first; beyond
   * `last` give empty data at the offset asked for.
   */
  async read (stream: LogStream, opts: LogReadOptions = {}): Promise<LogChunk> {
    checkStream(stream)
    checkPosition(opts.offset, opts.tail)
    checkBytes('length', opts.length)
    opts.signal?.throwIfAborted()
    return await this.serial(async () => {
      opts.signal?.throwIfAborted()
      if (this.closed) throw new Error(`the logs in ${this.dir} are closed`)
      return await this.readAt(this.streams[stream], opts)
    })
  }

  /**
   * Yields bytes from `offset` (default: the current end; or `tail` bytes before
   * it) as they are written, in order, without gaps except bytes rotated away
   * before the follower read them (then it jumps to `first`). Ends when the
   * signal aborts (without throwing), when the logs are closed, or after end()
   * once all bytes are yielded. To stop it while it waits for bytes, abort.
   */
  follow (stream: LogStream, opts: LogFollowOptions = {}): AsyncIterable<Buffer> {
    checkStream(stream)
    checkPosition(opts.offset, opts.tail)
    return this.followFrom(stream, opts)
  }

  /** The task has ended: no more bytes will come. Followers drain and finish. */
  end (): void {
    this.ended = true
    this.notify()
  }

  /** Removes nothing; closes anything open, and ends the followers. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.notify()
    this.stopWatching()
    await this.queue
    this.closeWriters()
    for (const name of STREAMS) closeSync(this.streams[name].fd)
  }

  /** Bytes on disk for both streams, all files. */
  async diskBytes (): Promise<number> {
    return await this.serial(async () => {
      let total = 0
      for (const file of await readdir(this.dir)) {
        if (!/^(stdout|stderr)\.log(\.\d+)?$/.test(file)) continue
        total += (await stat(join(this.dir, file)).catch(() => ({ size: 0 }))).size
      }
      return total
    })
  }

  private async serial<T> (work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work)
    this.queue = run.catch(() => {})
    return await run
  }

  private shareBytes (): number {
    return Math.floor(this.limits.maxBytes / (this.limits.files + 1))
  }

  /**
   * Copies the live file to .1 and truncates it while the task keeps appending.
   * Bytes the task writes after the copy's last look and before the truncate are
   * lost, and not counted in offsets. To keep that window small, the bulk is
   * copied asynchronously, then what came meanwhile is copied synchronously, and
   * the truncate follows the last fstat with no await and no other work between.
   */
  private async rotate (s: StreamFiles): Promise<void> {
    const size = fstatSync(s.fd).size
    // A burst bigger than all rotated files may hold keeps only its newest part;
    // the older rotated files would then not be contiguous with it, so they go.
    const from = Math.max(0, size - (this.limits.maxBytes - this.shareBytes()))
    const target = rotatedPath(s, 1)
    let out = -1
    let truncated = false
    try {
      await this.drop(s, from > 0 ? s.rotated.length : s.rotated.length - (this.limits.files - 1))
      for (let index = s.rotated.length; index >= 1; index--) await rename(rotatedPath(s, index), rotatedPath(s, index + 1))
      out = openSync(target, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, FILE_MODE)
      s.base += catchUpAndTruncate(s.fd, out, await copyRange(s.fd, out, from, size))
      truncated = true
    } finally {
      if (out >= 0) closeSync(out)
      // Failed before the truncate: the live file still holds every byte, so the partial copy goes.
      if (!truncated && out >= 0) await unlink(target).catch(() => {})
      s.rotated = await findRotated(this.dir, s.name)
    }
  }

  /** Drops the oldest rotated files while there are more than `files` or the stream holds more than maxBytes. */
  private async trim (s: StreamFiles): Promise<boolean> {
    const live = fstatSync(s.fd).size
    let count = 0
    while (count < s.rotated.length) {
      const kept = s.rotated.slice(0, s.rotated.length - count)
      if (kept.length <= this.limits.files && live + sum(kept) <= this.limits.maxBytes) break
      count++
    }
    await this.drop(s, count)
    return count > 0
  }

  private async drop (s: StreamFiles, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      await unlink(rotatedPath(s, s.rotated.length)).catch(ignoreMissing)
      s.rotated.pop()
    }
  }

  private async persist (): Promise<void> {
    const state: SavedState = {
      stdout: { base: this.streams.stdout.base, rotatedIno: this.streams.stdout.rotated[0]?.ino ?? null },
      stderr: { base: this.streams.stderr.base, rotatedIno: this.streams.stderr.rotated[0]?.ino ?? null },
    }
    const tmp = join(this.dir, `${STATE_FILE}.tmp`)
    const file = await open(tmp, 'w', FILE_MODE)
    try {
      await file.writeFile(`${JSON.stringify({ version: 1, ...state })}\n`)
      await file.sync()
    } finally {
      await file.close()
    }
    await rename(tmp, join(this.dir, STATE_FILE))
  }

  private async readAt (s: StreamFiles, opts: LogReadOptions): Promise<LogChunk> {
    const live = fstatSync(s.fd).size
    const first = s.base - sum(s.rotated)
    const last = s.base + live
    const length = Math.min(opts.length ?? READ_BYTES_MAX, READ_BYTES_MAX)
    const start = opts.tail !== undefined
      ? Math.max(first, last - Math.min(opts.tail, length))
      : Math.max(first, opts.offset ?? first)
    const end = Math.min(last, start + length)
    if (end <= start) return { data: Buffer.alloc(0), start, end: start, first, last }

    const data = Buffer.allocUnsafe(end - start)
    let filled = 0
    let lo = first
    // Oldest first: .n … .1, then the live file.
    for (let index = s.rotated.length; index >= 0 && start + filled < end; index--) {
      const size = index === 0 ? live : s.rotated[index - 1]!.size
      const hi = lo + size
      if (start + filled < hi) {
        opts.signal?.throwIfAborted()
        const at = start + filled - lo
        const want = Math.min(end, hi) - (start + filled)
        const got = index === 0 ? await readFd(s.fd, data, filled, want, at) : await readRotated(rotatedPath(s, index), data, filled, want, at)
        filled += got
        if (got < want) break
      }
      lo = hi
    }
    return { data: data.subarray(0, filled), start, end: start + filled, first, last }
  }

  private async * followFrom (stream: LogStream, opts: LogFollowOptions): AsyncGenerator<Buffer> {
    const { signal } = opts
    const stopped = (): boolean => signal?.aborted === true || this.closed
    if (stopped()) return
    const follower: Follower = { stream, dirty: false, wake: null }
    this.addFollower(follower)
    try {
      const s = this.streams[stream]
      let position = opts.offset ?? await this.serial(async () => {
        const { first, last } = await this.readAt(s, { length: 0 })
        return Math.max(first, last - (opts.tail ?? 0))
      })
      while (!stopped()) {
        follower.dirty = false
        const ended = this.ended
        const chunk = await this.serial(async () => this.closed ? null : await this.readAt(s, { offset: position }))
        if (chunk === null || stopped()) return
        // chunk.start > position when the bytes there were rotated away: carry on from `first`.
        position = chunk.end
        if (chunk.data.length > 0) {
          yield chunk.data
          continue
        }
        if (ended) return
        await this.waitForBytes(follower, signal)
      }
    } finally {
      this.removeFollower(follower)
    }
  }

  private async waitForBytes (follower: Follower, signal: AbortSignal | undefined): Promise<void> {
    if (follower.dirty || signal?.aborted === true) return
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        follower.wake = null
        resolve()
      }
      const timer = setTimeout(done, this.watcher !== null ? FOLLOW_POLL_WATCHED_MS : FOLLOW_POLL_UNWATCHED_MS)
      signal?.addEventListener('abort', done, { once: true })
      follower.wake = done
    })
  }

  private notify (stream?: LogStream): void {
    for (const follower of this.followers) {
      if (stream !== undefined && follower.stream !== stream) continue
      follower.dirty = true
      follower.wake?.()
    }
  }

  private addFollower (follower: Follower): void {
    this.followers.add(follower)
    if (this.watcher !== null || this.watchFailed) return
    try {
      // inotify sees the task's appends through its own fds; the poll covers file systems where it does not.
      // Persistent like the poll timer beside it: a follower is work in progress, and a leaked watcher shows.
      this.watcher = watch(this.dir, { persistent: true }, (_event, file) => {
        if (file === 'stdout.log' || file === 'stderr.log') this.notify(file === 'stdout.log' ? 'stdout' : 'stderr')
        else if (file === null) this.notify()
      })
      this.watcher.on('error', () => {
        this.watchFailed = true
        this.stopWatching()
      })
    } catch {
      this.watchFailed = true
    }
  }

  private removeFollower (follower: Follower): void {
    this.followers.delete(follower)
    if (this.followers.size === 0) this.stopWatching()
  }

  private stopWatching (): void {
    this.watcher?.close()
    this.watcher = null
  }
}

function rotatedPath (s: StreamFiles, index: number): string {
  return `${s.path}.${index}`
}

function sum (rotated: Rotated[]): number {
  return rotated.reduce((total, r) => total + r.size, 0)
}

function ignoreMissing (err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err
}

/** A stream's files as the last life left them; `recovered` when the record had to be corrected. */
async function openStream (dir: string, name: LogStream, saved: SavedState | null): Promise<{ files: StreamFiles, recovered: boolean }> {
  const rotated = await findRotated(dir, name)
  const known = saved?.[name]
  // No record: the best guess is that the kept bytes began with the task.
  let base = known?.base ?? sum(rotated)
  // A .1 the record does not know: the node stopped between a rotation's truncate and its record.
  const newest = rotated[0]
  const recovered = known !== undefined && newest !== undefined && newest.ino !== known.rotatedIno
  if (recovered) base += newest.size
  const path = join(dir, `${name}.log`)
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, FILE_MODE)
  return { files: { name, path, fd, base, rotated }, recovered }
}

/** The rotated files of a stream, newest first, renumbered .1, .2, … if a stop mid-rotation left a gap. */
async function findRotated (dir: string, name: LogStream): Promise<Rotated[]> {
  const pattern = new RegExp(`^${name}\\.log\\.(\\d+)$`)
  const indexes = (await readdir(dir))
    .map((file) => pattern.exec(file)?.[1])
    .filter((index) => index !== undefined)
    .map(Number)
    .sort((a, b) => a - b)
  const rotated: Rotated[] = []
  for (const [i, index] of indexes.entries()) {
    const path = join(dir, `${name}.log.${i + 1}`)
    if (index !== i + 1) await rename(join(dir, `${name}.log.${index}`), path)
    const st = await stat(path, { bigint: true })
    rotated.push({ size: Number(st.size), ino: String(st.ino) })
  }
  return rotated
}

/** The saved state, or null when there is none or it cannot be understood (logs are not worth refusing to start over). */
async function loadState (dir: string): Promise<SavedState | null> {
  let text: string
  try {
    text = await readFile(join(dir, STATE_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>
    const stream = (value: unknown): { base: number, rotatedIno: string | null } => {
      const v = value as { base?: unknown, rotatedIno?: unknown } | null
      if (typeof v?.base !== 'number' || !Number.isSafeInteger(v.base) || v.base < 0) throw new Error('bad base')
      if (v.rotatedIno !== null && typeof v.rotatedIno !== 'string') throw new Error('bad rotatedIno')
      return { base: v.base, rotatedIno: v.rotatedIno }
    }
    return { stdout: stream(parsed.stdout), stderr: stream(parsed.stderr) }
  } catch {
    return null
  }
}

async function copyRange (from: number, to: number, start: number, end: number): Promise<number> {
  const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK_BYTES, Math.max(1, end - start)))
  let position = start
  while (position < end) {
    const { bytesRead } = await readAsync(from, buffer, 0, Math.min(buffer.length, end - position), position)
    if (bytesRead === 0) break
    for (let written = 0; written < bytesRead;) written += (await writeAsync(to, buffer, written, bytesRead - written)).bytesWritten
    position += bytesRead
  }
  return position
}

/** Copies what the task appended during the bulk copy, then truncates right after the last look. Returns the live file's length at the truncate. */
function catchUpAndTruncate (live: number, out: number, copied: number): number {
  let buffer: Buffer | null = null
  for (let round = 0; round < CATCH_UP_ROUNDS_MAX; round++) {
    const size = fstatSync(live).size
    if (size <= copied) break
    buffer ??= Buffer.allocUnsafe(COPY_CHUNK_BYTES)
    while (copied < size) {
      const got = readSync(live, buffer, 0, Math.min(buffer.length, size - copied), copied)
      if (got === 0) break
      for (let written = 0; written < got;) written += writeSync(out, buffer, written, got - written)
      copied += got
    }
  }
  ftruncateSync(live, 0)
  return copied
}

async function readFd (fd: number, into: Buffer, at: number, length: number, position: number): Promise<number> {
  let got = 0
  while (got < length) {
    const { bytesRead } = await readAsync(fd, into, at + got, length - got, position + got)
    if (bytesRead === 0) break
    got += bytesRead
  }
  return got
}

async function readRotated (path: string, into: Buffer, at: number, length: number, position: number): Promise<number> {
  const file = await open(path, 'r')
  try {
    let got = 0
    while (got < length) {
      const { bytesRead } = await file.read(into, at + got, length - got, position + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    return got
  } finally {
    await file.close()
  }
}

function checkLimits (limits: LogLimits): void {
  if (!Number.isSafeInteger(limits.files) || limits.files < 1) throw new Error(`log files must be a whole number >= 1, not ${limits.files}`)
  if (!Number.isSafeInteger(limits.maxBytes) || limits.maxBytes < limits.files + 1) {
    throw new Error(`log maxBytes must be a whole number >= files + 1 (${limits.files + 1}), not ${limits.maxBytes}`)
  }
}

function checkStream (stream: unknown): void {
  if (stream !== 'stdout' && stream !== 'stderr') throw new Error(`unknown log stream '${String(stream)}': use stdout or stderr`)
}

function checkBytes (name: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) throw new Error(`log ${name} must be a whole number of bytes >= 0, not ${value}`)
}

function checkPosition (offset: number | undefined, tail: number | undefined): void {
  checkBytes('offset', offset)
  checkBytes('tail', tail)
  if (offset !== undefined && tail !== undefined) throw new Error('give a log offset or a tail, not both')
}
