// A task's log files: what a real child writes through the fds comes back byte for
// byte at stable logical offsets; copy-truncate rotation keeps each stream near its
// cap without gaps in what is kept; offsets survive a new TaskLogs on the same dir;
// followers see live bytes in order, across rotations, and stop on end() or abort.

import { type ChildProcess, spawn } from 'node:child_process'
import { getEventListeners, once } from 'node:events'
import { appendFileSync, copyFileSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { LOG_DEFAULTS, type LogLimits, type LogStream, TaskLogs } from '../../node/executor/logs.ts'
import { waitUntil } from '../helpers/wait.ts'

/** share = 4 KiB: a few KiB of writes rotate several times. */
const SMALL: LogLimits = { maxBytes: 16_384, files: 3 }
const SHARE = SMALL.maxBytes / (SMALL.files + 1)
const LOGS_URL = new URL('../../node/executor/logs.ts', import.meta.url).href

const dirs: string[] = []
const opened: TaskLogs[] = []
const children: ChildProcess[] = []

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
  }
  for (const logs of opened.splice(0)) await logs.close()
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function tempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'murmur-logs-'))
  dirs.push(dir)
  return join(dir, 'logs')
}

async function openLogs (dir: string, limits: LogLimits = SMALL): Promise<TaskLogs> {
  const logs = await TaskLogs.open(dir, limits)
  opened.push(logs)
  return logs
}

/** A child that copies each line it reads to stdout, and "err <line>" to stderr, through the log fds. */
function echoer (logs: TaskLogs): ChildProcess & { stdin: NodeJS.WritableStream } {
  const fds = logs.openWriters()
  const child = spawn('sh', ['-c', 'while IFS= read -r l; do printf "%s\\n" "$l"; printf "err %s\\n" "$l" >&2; done'], { stdio: ['pipe', fds.stdout, fds.stderr] })
  logs.closeWriters()
  children.push(child)
  return child as ChildProcess & { stdin: NodeJS.WritableStream }
}

/** A 100-byte line with its number, so any misplaced byte shows. */
function line (n: number): string {
  const head = `line ${String(n).padStart(6, '0')} `
  return `${head}${String.fromCharCode(97 + (n % 26)).repeat(99 - head.length)}\n`
}

function lines (from: number, count: number): string {
  return Array.from({ length: count }, (_, i) => line(from + i)).join('')
}

async function waitForLast (logs: TaskLogs, stream: LogStream, last: number): Promise<void> {
  await waitUntil(`${stream} to reach ${last} bytes`, async () => (await logs.read(stream, { length: 0 })).last, (n) => n >= last, 5_000, 5)
}

function rotatedFiles (dir: string, stream: LogStream): string[] {
  return readdirSync(dir).filter((f) => f.startsWith(`${stream}.log.`)).sort()
}

async function collect (iterable: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const part of iterable) parts.push(part)
  return Buffer.concat(parts)
}

describe('reading what a task wrote', () => {
  it('returns every byte a child process and direct writes appended, by offset, length and tail', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir, LOG_DEFAULTS)
    const fds = logs.openWriters()
    const child = spawn('sh', ['-c', 'i=1; while [ $i -le 300 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done'], { stdio: ['ignore', fds.stdout, fds.stderr] })
    children.push(child)
    logs.closeWriters()
    const [code] = await once(child, 'exit') as [number]
    expect(code).toBe(0)
    appendFileSync(join(dir, 'stdout.log'), 'direct write\n')

    const numbered = (prefix: string): string => Array.from({ length: 300 }, (_, i) => `${prefix} ${i + 1}\n`).join('')
    const out = Buffer.from(`${numbered('out')}direct write\n`)
    const err = Buffer.from(numbered('err'))

    const all = await logs.read('stdout')
    expect(all).toMatchObject({ start: 0, end: out.length, first: 0, last: out.length })
    expect(all.data.equals(out)).toBe(true)
    expect((await logs.read('stderr')).data.equals(err)).toBe(true)

    const middle = await logs.read('stdout', { offset: 100, length: 50 })
    expect(middle).toMatchObject({ start: 100, end: 150 })
    expect(middle.data.equals(out.subarray(100, 150))).toBe(true)

    const tail = await logs.read('stdout', { tail: 30 })
    expect(tail).toMatchObject({ start: out.length - 30, end: out.length })
    expect(tail.data.toString()).toBe(out.subarray(-30).toString())

    const beyond = await logs.read('stdout', { offset: out.length + 10 })
    expect(beyond).toMatchObject({ start: out.length + 10, end: out.length + 10, last: out.length })
    expect(beyond.data.length).toBe(0)
    expect(await logs.diskBytes()).toBe(out.length + err.length)
  })

  it('caps one read at 1 MiB', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir, LOG_DEFAULTS)
    const big = Buffer.alloc(1.5 * 1024 * 1024, 'y')
    appendFileSync(join(dir, 'stderr.log'), big)
    const chunk = await logs.read('stderr', { length: 2 * 1024 * 1024 })
    expect(chunk).toMatchObject({ start: 0, end: 1024 * 1024, last: big.length })
    const rest = await logs.read('stderr', { offset: chunk.end })
    expect(rest).toMatchObject({ start: 1024 * 1024, end: big.length })
    expect((await logs.read('stderr', { tail: 2 * 1024 * 1024 })).start).toBe(big.length - 1024 * 1024)
  })

  it('refuses bad arguments with one line, and an aborted read throws the reason', async () => {
    const logs = await openLogs(await tempDir())
    await expect(logs.read('stdin' as LogStream)).rejects.toThrow(/^unknown log stream 'stdin'/)
    await expect(logs.read('stdout', { offset: -1 })).rejects.toThrow(/offset must be a whole number/)
    await expect(logs.read('stdout', { offset: 1, tail: 1 })).rejects.toThrow(/not both/)
    expect(() => logs.follow('stdout', { tail: -5 })).toThrow(/tail must be a whole number/)
    expect(() => logs.follow('nope' as LogStream)).toThrow(/unknown log stream/)
    const reason = new Error('client went away')
    await expect(logs.read('stdout', { signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    await expect(TaskLogs.open(await tempDir(), { maxBytes: 10, files: 0 })).rejects.toThrow(/files must be/)
  })
})

describe('rotation', () => {
  it('keeps each stream within maxBytes plus one step, with the newest bytes contiguous', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    const fds = logs.openWriters()
    const step = 10 // lines of 100 bytes: 1000 bytes, which does not divide the 4 KiB share
    let written = ''
    for (let i = 0; i < 60; i++) {
      const text = lines(i * step, step)
      writeSync(fds.stdout, text)
      written += text
      expect(await logs.diskBytes()).toBeLessThanOrEqual(SMALL.maxBytes + text.length)
      await logs.rotateIfNeeded()
      expect(await logs.diskBytes()).toBeLessThanOrEqual(SMALL.maxBytes)
      expect(rotatedFiles(dir, 'stdout').length).toBeLessThanOrEqual(SMALL.files)

      const chunk = await logs.read('stdout')
      expect(chunk.last).toBe(written.length)
      expect(chunk.start).toBe(chunk.first)
      expect(chunk.end).toBe(chunk.last)
      expect(chunk.data.toString()).toBe(written.slice(chunk.first))
    }
    logs.closeWriters()
    const { first, last } = await logs.read('stdout', { length: 0 })
    expect(first).toBeGreaterThan(0)
    // Whole files go, never single bytes: at least the live share and two rotated files are kept.
    expect(last - first).toBeGreaterThanOrEqual(2 * SHARE)
    expect(rotatedFiles(dir, 'stdout')).toEqual(['stdout.log.1', 'stdout.log.2', 'stdout.log.3'])
    expect(rotatedFiles(dir, 'stderr')).toEqual([])
    const live = readFileSync(join(dir, 'stdout.log'))
    expect(live.toString()).toBe(written.slice(written.length - live.length))
  })

  it('lets a child that keeps writing after the truncate append at offset 0, without a sparse gap', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    const child = echoer(logs)
    const before = lines(0, 50) // 5000 bytes: over the 4 KiB share
    child.stdin.write(before)
    await waitForLast(logs, 'stdout', before.length)
    await waitForLast(logs, 'stderr', before.length + 50 * 4)
    await logs.rotateIfNeeded()
    expect(readFileSync(join(dir, 'stdout.log')).length).toBe(0)
    expect(readFileSync(join(dir, 'stdout.log.1')).toString()).toBe(before)

    child.stdin.write(line(50))
    await waitForLast(logs, 'stdout', before.length + 100)
    await waitForLast(logs, 'stderr', 5100 + 51 * 4)
    const live = readFileSync(join(dir, 'stdout.log'))
    expect(live.includes(0)).toBe(false)
    expect(live.toString()).toBe(line(50))
    const chunk = await logs.read('stdout')
    expect(chunk).toMatchObject({ first: 0, last: 5100 })
    expect(chunk.data.toString()).toBe(before + line(50))
    expect((await logs.read('stdout', { offset: 4990, length: 20 })).data.toString()).toBe((before + line(50)).slice(4990, 5010))
    const err = await logs.read('stderr')
    expect(err).toMatchObject({ first: 0, last: 5100 + 51 * 4 })
    expect(err.data.toString()).toBe(lines(0, 51).replace(/^/gm, 'err ').replace(/err $/, ''))
  })

  it('keeps only the newest bytes of a burst bigger than the cap', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    appendFileSync(join(dir, 'stdout.log'), lines(0, 50))
    await logs.rotateIfNeeded()
    const burst = lines(50, 400) // 40,000 bytes at once
    appendFileSync(join(dir, 'stdout.log'), burst)
    await logs.rotateIfNeeded()
    const chunk = await logs.read('stdout')
    const kept = SMALL.maxBytes - SHARE
    expect(chunk).toMatchObject({ first: 45_000 - kept, last: 45_000 })
    expect(chunk.data.toString()).toBe(burst.slice(-kept))
    expect(rotatedFiles(dir, 'stdout')).toEqual(['stdout.log.1'])
    expect(await logs.diskBytes()).toBe(kept)
  })
})

describe('offsets across a node restart', () => {
  it('continues where the last TaskLogs on the dir left off', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    let written = ''
    for (let i = 0; i < 20; i++) {
      written += lines(i * 10, 10)
      appendFileSync(join(dir, 'stdout.log'), lines(i * 10, 10))
      await logs.rotateIfNeeded()
    }
    const before = await logs.read('stdout')
    expect(before.first).toBeGreaterThan(0)
    await logs.close()

    const again = await openLogs(dir)
    const after = await again.read('stdout')
    expect(after).toMatchObject({ first: before.first, last: written.length })
    expect(after.data.equals(before.data)).toBe(true)
    appendFileSync(join(dir, 'stdout.log'), lines(200, 50))
    written += lines(200, 50)
    await again.rotateIfNeeded()
    const more = await again.read('stdout')
    expect(more.last).toBe(written.length)
    expect(more.data.toString()).toBe(written.slice(more.first))
  })

  it('counts a rotation the node did not live to record', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    appendFileSync(join(dir, 'stdout.log'), lines(0, 50))
    await logs.rotateIfNeeded()
    appendFileSync(join(dir, 'stdout.log'), lines(50, 30))
    await logs.close()
    // What a rotation does up to its truncate, without the record after it.
    renameSync(join(dir, 'stdout.log.1'), join(dir, 'stdout.log.2'))
    copyFileSync(join(dir, 'stdout.log'), join(dir, 'stdout.log.1'))
    truncateSync(join(dir, 'stdout.log'), 0)

    const again = await openLogs(dir)
    const chunk = await again.read('stdout')
    expect(chunk).toMatchObject({ first: 0, last: 8000 })
    expect(chunk.data.toString()).toBe(lines(0, 80))
    await again.close()

    // Without its record, the kept bytes are taken to have begun with the task.
    rmSync(join(dir, 'logs.json'))
    const guessed = await openLogs(dir)
    expect(await guessed.read('stdout', { length: 0 })).toMatchObject({ first: 0, last: 8000 })
  })
})

describe('following', () => {
  it('yields a writer process\'s bytes in order across rotations, and ends after end()', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    const child = echoer(logs)
    const followed = collect(logs.follow('stdout', { offset: 0 }))
    let expected = ''
    for (let batch = 0; batch < 10; batch++) {
      const text = lines(batch * 10, 10)
      expected += text
      child.stdin.write(text)
      await waitForLast(logs, 'stdout', expected.length)
      await logs.rotateIfNeeded()
    }
    expect(rotatedFiles(dir, 'stdout').length).toBeGreaterThanOrEqual(2)
    child.stdin.end()
    await once(child, 'exit')
    logs.end()
    expect((await followed).toString()).toBe(expected)
  })

  it('notices new bytes at once, starts at the end by default, and ends on abort without throwing', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    const fds = logs.openWriters()
    writeSync(fds.stderr, 'old\n')
    const controller = new AbortController()
    const iterator = logs.follow('stderr', { signal: controller.signal })[Symbol.asyncIterator]()
    const latenciesMs: number[] = []
    for (let i = 0; i < 6; i++) {
      const next = iterator.next()
      await new Promise((resolve) => setTimeout(resolve, 20)) // so that the follower is waiting
      const wrote = performance.now()
      writeSync(fds.stderr, `new ${i}\n`)
      expect((await next).value?.toString()).toBe(`new ${i}\n`)
      latenciesMs.push(performance.now() - wrote)
    }
    // fs.watch wakes the follower within milliseconds; its safety-net poll alone would take ~230 ms here.
    expect(Math.max(...latenciesMs)).toBeLessThan(150)
    // Each wait takes its abort listener with it.
    expect(getEventListeners(controller.signal, 'abort').length).toBeLessThanOrEqual(1)

    const waiting = iterator.next()
    const aborted = performance.now()
    controller.abort(new Error('gone'))
    expect(await waiting).toEqual({ done: true, value: undefined })
    expect(performance.now() - aborted).toBeLessThan(1_000)
    logs.closeWriters()
  })


  it('starts `tail` bytes before the end, and jumps to `first` past bytes rotated away', async () => {
    const dir = await tempDir()
    const logs = await openLogs(dir)
    appendFileSync(join(dir, 'stdout.log'), 'abcdefghij')
    const iterator = logs.follow('stdout', { tail: 4 })[Symbol.asyncIterator]()
    expect((await iterator.next()).value?.toString()).toBe('ghij')
    appendFileSync(join(dir, 'stdout.log'), 'klm')
    expect((await iterator.next()).value?.toString()).toBe('klm')
    logs.end()
    expect((await iterator.next()).done).toBe(true)

    appendFileSync(join(dir, 'stdout.log'), lines(0, 400))
    await logs.rotateIfNeeded()
    const { first, last } = await logs.read('stdout', { length: 0 })
    expect(first).toBeGreaterThan(0)
    const all = await collect(logs.follow('stdout', { offset: 0 }))
    expect(all.length).toBe(last - first)
    expect(all.equals((await logs.read('stdout', { offset: first })).data)).toBe(true)
  })

  it('leaves no watcher or timer behind once followers finish', async () => {
    // In a process of its own, where nothing else holds timers: once the followers
    // are done, no handle of theirs is left, and the process ends by itself.
    const script = `
      const { TaskLogs } = await import(${JSON.stringify(LOGS_URL)})
      const logs = await TaskLogs.open(${JSON.stringify(await tempDir())})
      const drain = async (iterable) => { for await (const _ of iterable) {} }
      const controller = new AbortController()
      const followers = [
        drain(logs.follow('stdout', { signal: controller.signal })),
        drain(logs.follow('stderr', { signal: controller.signal })),
        drain(logs.follow('stdout', { offset: 0 })),
      ]
      await new Promise((resolve) => setTimeout(resolve, 30))
      const during = process.getActiveResourcesInfo()
      controller.abort()
      logs.end()
      await Promise.all(followers)
      await new Promise((resolve) => setTimeout(resolve, 10))
      const after = process.getActiveResourcesInfo()
      await logs.close()
      console.log(JSON.stringify({ during, after }))`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    let output = ''
    child.stdout.on('data', (data: Buffer) => { output += data.toString() })
    const [code] = await once(child, 'exit') as [number]
    expect(code).toBe(0)
    const { during, after } = JSON.parse(output) as { during: string[], after: string[] }
    const held = (resources: string[]): string[] => resources.filter((r) => r === 'FSEventWrap' || r === 'Timeout').sort()
    expect(held(during)).toEqual(['FSEventWrap', 'Timeout', 'Timeout', 'Timeout'])
    expect(held(after)).toEqual([])
  })
})
