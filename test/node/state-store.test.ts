// The durable log of the replicated document: appends come back in order after a
// restart, group commit, compaction in one atomic batch, nothing acknowledged is lost
// when the process is SIGKILLed, a corrupt database is refused with one line that
// says what to do, and one that lost records (LevelDB dropping part of its log, a
// record that fails its checksum) is opened with the loss reported.
//
// Measured on the development machine (2 cores, ext4 on a VM disk), 100-byte updates,
// durable: true: about 2,000-2,600 appends/s when each waits for the previous one (one
// fsync each); with group commit about 14,000-20,000/s at 8 in flight, 80,000-100,000/s
// at 64 in flight and about 157,000/s when 10,000 are fired at once. Not durable, one
// at a time: about 18,000-33,000/s.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Level } from 'level'
import { pino, type Logger } from 'pino'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { MurmurError } from '../../node/errors.ts'
import { resetState, StateStore, type StateStoreOptions } from '../../node/state-store.ts'
import { damageMiddle } from '../helpers/damage.ts'

const STORE_PATH = fileURLToPath(new URL('../../node/state-store.ts', import.meta.url))
const PINO_PATH = createRequire(import.meta.url).resolve('pino')

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string): Uint8Array => encoder.encode(s)
const text = (u: Uint8Array): string => decoder.decode(u)

const tmpDirs: string[] = []
const stores: StateStore[] = []

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close().catch(() => {})
  for (const dir of tmpDirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function tempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'murmur-state-'))
  tmpDirs.push(dir)
  return dir
}

async function stateDir (): Promise<string> {
  return join(await tempDir(), 'state')
}

async function open (dir: string, options: Partial<StateStoreOptions> = {}): Promise<StateStore> {
  const store = await StateStore.open(dir, { log: pino({ level: 'silent' }), ...options })
  stores.push(store)
  return store
}

/** Every key of a closed database, read with level directly. */
async function rawKeys (dir: string): Promise<string[]> {
  const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
  try {
    return await db.keys().all()
  } finally {
    await db.close()
  }
}

/** The sync option of a spied db.batch call. */
function syncOf (call: unknown[]): boolean | undefined {
  return (call[1] as { sync?: boolean } | undefined)?.sync
}

async function expectCode (promise: Promise<unknown>, code: string): Promise<MurmurError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(MurmurError)
  expect((err as MurmurError).code).toBe(code)
  return err as MurmurError
}

describe('StateStore', () => {
  it('gives back appended updates in order after a reopen, with a stable life id', async () => {
    const dir = await stateDir()
    let store = await open(dir)
    const first = await store.load()
    expect(first.snapshot).toBeNull()
    expect(first.updates).toEqual([])
    expect(first.lifeId).toMatch(/^[0-9a-f-]{36}$/)
    for (let i = 0; i < 50; i++) await store.append(bytes(`update ${i}`), { durable: i % 2 === 0 })
    expect(store.stats()).toMatchObject({ updates: 50, appends: 50, compactions: 0, snapshotBytes: 0 })
    await store.close()

    store = await open(dir)
    const loaded = await store.load()
    expect(loaded.snapshot).toBeNull()
    expect(loaded.updates.map(text)).toEqual(Array.from({ length: 50 }, (_, i) => `update ${i}`))
    expect(loaded.lifeId).toBe(first.lifeId)
    expect(loaded.damage).toBeNull()
    expect(store.stats()).toMatchObject({ updates: 50, appends: 0, damage: null })
    // A second load reads the same again (the first came from what open read).
    await store.append(bytes('update 50'), { durable: false })
    expect((await store.load()).updates.map(text).at(-1)).toBe('update 50')
  })

  it('gets a new life id after resetState moves the database aside', async () => {
    const dir = await stateDir()
    expect(await resetState(dir)).toBeNull()
    const store = await open(dir)
    const { lifeId } = await store.load()
    await store.append(bytes('x'), { durable: true })
    await store.close()

    const aside = await resetState(dir)
    expect(aside).not.toBeNull()
    expect(aside!.startsWith(`${dir}.reset-`)).toBe(true)
    expect(aside!.slice(dir.length)).not.toContain(':')
    expect(existsSync(dir)).toBe(false)
    expect(existsSync(join(aside!, 'CURRENT'))).toBe(true)

    const fresh = await open(dir)
    const loaded = await fresh.load()
    expect(loaded.lifeId).not.toBe(lifeId)
    expect(loaded.updates).toEqual([])
  })

  it('group commit: 1,000 appends fired at once resolve and load back in order, in few batches', async () => {
    const dir = await stateDir()
    const store = await open(dir)
    const db = (store as unknown as { db: Level<string, Uint8Array> }).db
    const batch = vi.spyOn(db, 'batch')
    // One durable append among them: its batch is fsynced.
    const appends = Array.from({ length: 1000 }, (_, i) => store.append(bytes(String(i)), { durable: i === 500 }))
    await Promise.all(appends)
    expect(batch.mock.calls.length).toBeGreaterThanOrEqual(1)
    expect(batch.mock.calls.length).toBeLessThanOrEqual(2)
    expect(batch.mock.calls.some((call) => syncOf(call) === true)).toBe(true)
    expect(store.stats()).toMatchObject({ updates: 1000, appends: 1000 })
    await store.close()

    const reopened = await open(dir)
    expect((await reopened.load()).updates.map(text)).toEqual(Array.from({ length: 1000 }, (_, i) => String(i)))
  })

  it('fsyncs a batch only when one of its appends asked for it', async () => {
    const store = await open(await stateDir())
    const db = (store as unknown as { db: Level<string, Uint8Array> }).db
    const batch = vi.spyOn(db, 'batch')
    await store.append(bytes('a'), { durable: false })
    await Promise.all([store.append(bytes('b'), { durable: false }), store.append(bytes('c'), { durable: true })])
    expect(batch.mock.calls.map(syncOf)).toEqual([false, true])
  })

  it('compacts past the update limit: snapshot plus only later updates; sequence continues after reopen', async () => {
    const dir = await stateDir()
    const lines: Array<Record<string, unknown>> = []
    const log = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
    let store = await open(dir, { log, compactAfterUpdates: 10 })
    const applied: number[] = []
    let sourceCalls = 0
    store.setSnapshotSource(() => {
      sourceCalls++
      return bytes(JSON.stringify(applied))
    })
    for (let i = 0; i < 25; i++) {
      applied.push(i)
      await store.append(bytes(String(i)), { durable: true })
    }
    // The 10th and the 20th append each started a compaction after their batch; the
    // appends that came meanwhile waited behind it.
    expect(sourceCalls).toBe(2)
    const stats = store.stats()
    expect(stats).toMatchObject({ updates: 5, logBytes: 10, compactions: 2, appends: 25 })
    expect(stats.lastCompactionMs).toBeGreaterThanOrEqual(0)

    const loaded = await store.load()
    expect(stats.snapshotBytes).toBe(loaded.snapshot!.byteLength)
    // The source gives the whole document, which may already hold the update whose
    // append is queued behind the compaction: the snapshot covers at least 0..19.
    const snapshot = JSON.parse(text(loaded.snapshot!)) as number[]
    expect(snapshot.slice(0, 20)).toEqual(applied.slice(0, 20))
    expect(snapshot).toEqual(applied.slice(0, snapshot.length))
    expect(loaded.updates.map(text)).toEqual(['20', '21', '22', '23', '24'])

    const compacted = lines.filter((l) => l.msg === 'state log compacted')
    expect(compacted).toHaveLength(2)
    expect(compacted[0]).toMatchObject({ level: 20, updates: 10, logBytes: 10, seq: 10 })
    expect(typeof compacted[0]!.ms).toBe('number')
    expect(typeof compacted[0]!.snapshotBytes).toBe('number')

    // An explicit compaction leaves the log empty; the next update after a restart
    // continues the sequence rather than starting again at 0.
    await store.compact()
    expect(store.stats()).toMatchObject({ updates: 0, logBytes: 0, compactions: 3 })
    await store.close()
    expect((await rawKeys(dir)).filter((k) => k.startsWith('u'))).toEqual([])

    store = await open(dir, { compactAfterUpdates: 10 })
    const reloaded = await store.load()
    expect(JSON.parse(text(reloaded.snapshot!))).toEqual(applied)
    expect(reloaded.updates).toEqual([])
    await store.append(bytes('25'), { durable: true })
    await store.close()
    expect((await rawKeys(dir)).filter((k) => k.startsWith('u'))).toEqual([`u${(25).toString(16).padStart(16, '0')}`])
  })

  it('compacts past the byte limit, and not at all without a snapshot source', async () => {
    const store = await open(await stateDir(), { compactAfterBytes: 100 })
    for (let i = 0; i < 5; i++) await store.append(new Uint8Array(30), { durable: false })
    // No source yet: the log just grows.
    expect(store.stats()).toMatchObject({ updates: 5, logBytes: 150, compactions: 0 })
    await expectCode(store.compact(), 'STATE_NO_SNAPSHOT_SOURCE')
    store.setSnapshotSource(() => new Uint8Array(7))
    // The append resolves after its batch; the compaction it triggers follows.
    await store.append(new Uint8Array(30), { durable: false })
    await vi.waitFor(() => { expect(store.stats()).toMatchObject({ updates: 0, logBytes: 0, snapshotBytes: 7, compactions: 1 }) })
    for (let i = 0; i < 3; i++) await store.append(new Uint8Array(30), { durable: false })
    expect(store.stats()).toMatchObject({ updates: 3, logBytes: 90, compactions: 1 })
    await store.append(new Uint8Array(30), { durable: false })
    await vi.waitFor(() => { expect(store.stats()).toMatchObject({ updates: 0, compactions: 2 }) })
  })

  it('writes appends that arrive during a compaction after it', async () => {
    const store = await open(await stateDir())
    store.setSnapshotSource(() => bytes('snapshot'))
    await store.append(bytes('before'), { durable: false })
    const compaction = store.compact()
    const after = [store.append(bytes('after 1'), { durable: true }), store.append(bytes('after 2'), { durable: false })]
    await Promise.all([compaction, ...after])
    const loaded = await store.load()
    expect(text(loaded.snapshot!)).toBe('snapshot')
    expect(loaded.updates.map(text)).toEqual(['after 1', 'after 2'])
  })

  it('keeps the log when the snapshot source throws', async () => {
    const store = await open(await stateDir())
    store.setSnapshotSource(() => { throw new Error('boom') })
    await store.append(bytes('kept'), { durable: true })
    const err = await expectCode(store.compact(), 'STATE_COMPACTION_FAILED')
    expect(err.message).toContain('boom')
    expect((await store.load()).updates.map(text)).toEqual(['kept'])
    await store.append(bytes('still writable'), { durable: true })
  })

  it('loses nothing acknowledged when the process is SIGKILLed mid-stream, compactions included', async () => {
    const tmp = await tempDir()
    const dir = join(tmp, 'state')
    const script = join(tmp, 'child.mjs')
    await writeFile(script, `
import { pino } from ${JSON.stringify(PINO_PATH)}
import { StateStore } from ${JSON.stringify(STORE_PATH)}
const store = await StateStore.open(process.argv[2], { log: pino({ level: 'silent' }), compactAfterUpdates: 40 })
const applied = []
const encoder = new TextEncoder()
store.setSnapshotSource(() => encoder.encode(JSON.stringify(applied)))
let next = 0
// Four writers, so that group commit and compaction both happen under the kill.
async function writer () {
  for (;;) {
    const n = next++
    applied.push(n)
    await store.append(encoder.encode(String(n)), { durable: true })
    process.stdout.write(n + '\\n')
  }
}
await Promise.all([writer(), writer(), writer(), writer()])
`)
    const child = spawn(process.execPath, ['--no-warnings', script, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
    const acked: number[] = []
    let stderr = ''
    let killed = false
    let rest = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n')
      rest = parts.pop()!
      for (const part of parts) acked.push(Number(part))
      if (!killed && acked.length >= 300) {
        killed = true
        process.kill(child.pid!, 'SIGKILL')
      }
    })
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
      child.on('close', (c, s) => { resolve([c, s]) })
    })
    if (!killed) throw new Error(`the child exited (code ${code}) before 300 appends: ${stderr}`)
    expect(signal).toBe('SIGKILL')
    expect(acked.length).toBeGreaterThanOrEqual(300)

    const store = await open(dir)
    const loaded = await store.load()
    // 300 acknowledged with compaction every 40: there must be a snapshot.
    expect(loaded.snapshot).not.toBeNull()
    const inSnapshot = JSON.parse(text(loaded.snapshot!)) as number[]
    const inLog = loaded.updates.map((u) => Number(text(u)))
    const present = new Set([...inSnapshot, ...inLog])
    const missing = acked.filter((n) => !present.has(n))
    expect(missing).toEqual([])
    // A kill is not damage: nothing reported.
    expect(loaded.damage).toBeNull()
    // The log is in append order.
    expect(inLog).toEqual([...inLog].sort((a, b) => a - b))
    // And the store carries on.
    await store.append(bytes('after the crash'), { durable: true })
    expect((await store.load()).updates.map(text).at(-1)).toBe('after the crash')
  })

  describe('a database that cannot be read', () => {
    /** A closed database with a snapshot, an update log and table files. */
    async function populated (): Promise<{ dir: string, lifeId: string }> {
      const dir = await stateDir()
      const store = await open(dir, { compactAfterUpdates: 100 })
      store.setSnapshotSource(() => new Uint8Array(1000).fill(1))
      for (let i = 0; i < 250; i++) await store.append(new Uint8Array(200).fill(i), { durable: false })
      const { lifeId } = await store.load()
      await store.close()
      const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
      // classic-level's compactRange (not in level's types) writes the table files.
      await (db as unknown as { compactRange: (start: string, end: string) => Promise<void> }).compactRange('\u0000', '\uffff')
      await db.close()
      expect((await readdir(dir)).some((f) => f.endsWith('.ldb'))).toBe(true)
      return { dir, lifeId }
    }

    async function garble (dir: string, match: RegExp): Promise<void> {
      const files = (await readdir(dir)).filter((f) => match.test(f))
      expect(files.length).toBeGreaterThan(0)
      for (const f of files) await writeFile(join(dir, f), 'this is not what LevelDB wrote\x00\xff garbage')
    }

    const cases: Array<[string, () => Promise<{ dir: string, lifeId?: string }>]> = [
      ['garbage in CURRENT', async () => { const p = await populated(); await garble(p.dir, /^CURRENT$/); return p }],
      ['garbage in the MANIFEST', async () => { const p = await populated(); await garble(p.dir, /^MANIFEST-/); return p }],
      ['garbage in the table files', async () => { const p = await populated(); await garble(p.dir, /\.ldb$/); return p }],
      ['garbage in every file', async () => { const p = await populated(); await garble(p.dir, /^(CURRENT|MANIFEST-.*|.*\.ldb|.*\.log)$/); return p }],
      ['a file of junk where the dir should be', async () => {
        const dir = await stateDir()
        await writeFile(dir, 'junk')
        return { dir }
      }],
      ['a dir that holds something else', async () => {
        const dir = await stateDir()
        await mkdir(dir)
        await writeFile(join(dir, 'notes.txt'), 'hello')
        return { dir }
      }],
      ['a LevelDB database that is not murmur\'s', async () => {
        const dir = await stateDir()
        const db = new Level(dir)
        await db.put('some', 'thing')
        await db.close()
        return { dir }
      }],
    ]

    it.each(cases)('%s: open rejects with STATE_CORRUPT; resetState moves it aside and a fresh open works', async (_name, make) => {
      const { dir, lifeId } = await make()
      const err = await expectCode(StateStore.open(dir, { log: pino({ level: 'silent' }) }), 'STATE_CORRUPT')
      expect(err.exitCode).toBe(2)
      expect(err.message).toContain(dir)
      expect(err.message).toContain('--reset-state')
      expect(err.message).not.toContain('\n')
      expect(err.message).toMatch(/^the state database in .* cannot be read \(.+\); start the node with --reset-state/)

      const aside = await resetState(dir)
      expect(aside).not.toBeNull()
      expect(existsSync(aside!)).toBe(true)
      expect(existsSync(dir)).toBe(false)
      const store = await open(dir)
      const loaded = await store.load()
      expect(loaded).toMatchObject({ snapshot: null, updates: [] })
      if (lifeId !== undefined) expect(loaded.lifeId).not.toBe(lifeId)
    })
  })

  describe('damage found when the database is opened', () => {

    function capture (): { log: Logger, lines: Array<Record<string, unknown>> } {
      const lines: Array<Record<string, unknown>> = []
      const log = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
      return { log, lines }
    }

    it('a write-ahead log damaged in the middle: LevelDB drops records; the store says what was lost, and compacts the gap away', async () => {
      const dir = await stateDir()
      let store = await open(dir)
      // 500 updates of 200 bytes: about 120 kB of LevelDB log, four of its 32 kB blocks,
      // so that records after the damaged block survive and leave a gap.
      for (let i = 0; i < 500; i++) await store.append(bytes(`${String(i).padStart(4, '0')} ${'x'.repeat(195)}`), { durable: false })
      await store.close()
      expect(await damageMiddle(dir)).toMatch(/\.log$/)

      const { log, lines } = capture()
      store = await open(dir, { log })
      const loaded = await store.load()
      const kept = loaded.updates.map((u) => Number(text(u).slice(0, 4)))
      expect(kept.length).toBeLessThan(500)
      // What is left is in order, and the tail after the damaged block is there.
      expect(kept).toEqual([...kept].sort((a, b) => a - b))
      expect(kept.at(-1)).toBe(499)
      const damage = store.stats().damage
      expect(damage).not.toBeNull()
      expect(damage!.droppedBytes).toBeGreaterThan(0)
      expect(damage!.missingUpdates).toBe(500 - kept.length)
      expect(damage!.corruptUpdates).toBe(0)
      expect(damage!.corruptSnapshot).toBe(false)
      expect(damage!.reports.length).toBeGreaterThan(0)
      expect(damage!.reports.join('\n')).toMatch(/^\d+\.log: dropping \d+ bytes; Corruption: /m)
      expect(damage!.reports.join('\n')).not.toContain(dir)
      expect(loaded.damage).toEqual(damage)
      const said = lines.filter((l) => l.level === 50)
      expect(said).toHaveLength(1)
      expect(said[0]).toMatchObject({ dir, droppedBytes: damage!.droppedBytes, missingUpdates: 500 - kept.length })
      expect(String(said[0]!.msg)).toMatch(/^state database damaged: LevelDB dropped \d+ bytes of its log, \d+ updates are missing; /)
      expect(String(said[0]!.msg)).not.toContain('\n')

      // Once the document holds what was loaded, the store compacts: the next start
      // does not report the same gap again.
      store.setSnapshotSource(() => bytes(JSON.stringify(kept)))
      await vi.waitFor(() => { expect(store.stats()).toMatchObject({ compactions: 1, updates: 0 }) })
      await store.close()
      store = await open(dir)
      expect(store.stats().damage).toBeNull()
      const reloaded = await store.load()
      expect(reloaded.damage).toBeNull()
      expect(JSON.parse(text(reloaded.snapshot!))).toEqual(kept)
    })

    /** Flips one byte in the middle of `payload` where it is stored in a table file of the closed database in `dir`. */
    async function flipInTable (dir: string, payload: Uint8Array): Promise<void> {
      const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
      await (db as unknown as { compactRange: (start: string, end: string) => Promise<void> }).compactRange('\u0000', '\uffff')
      await db.close()
      for (const f of (await readdir(dir)).filter((name) => name.endsWith('.ldb'))) {
        const data = await readFile(join(dir, f))
        const at = data.indexOf(payload)
        if (at < 0) continue
        const k = at + payload.length / 2
        data[k] = data[k]! ^ 0xff
        await writeFile(join(dir, f), data)
        return
      }
      throw new Error('the payload is in no table file')
    }

    /** Bytes that do not compress: LevelDB stores their table block as is, and does not check its checksum when reading. */
    const noise = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n))

    it('an update whose bytes changed in a table file fails its checksum: skipped and counted, not applied', async () => {
      const dir = await stateDir()
      let store = await open(dir)
      const payloads = Array.from({ length: 100 }, () => noise(200))
      for (const p of payloads) await store.append(p, { durable: false })
      await store.close()
      await flipInTable(dir, payloads[50]!)

      const { log, lines } = capture()
      store = await open(dir, { log })
      const loaded = await store.load()
      const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex')
      expect(loaded.updates.map(hex)).toEqual(payloads.filter((_, i) => i !== 50).map(hex))
      expect(loaded.damage).toEqual({ droppedBytes: 0, missingUpdates: 0, corruptUpdates: 1, corruptSnapshot: false, reports: [] })
      expect(store.stats()).toMatchObject({ updates: 99, damage: loaded.damage })
      expect(lines.filter((l) => l.level === 50).map((l) => l.msg)).toEqual([expect.stringMatching(/^state database damaged: 1 updates failed their checksum; /)])
      // A snapshot replaces the log, the damaged record included.
      store.setSnapshotSource(() => bytes('document'))
      await vi.waitFor(() => { expect(store.stats().compactions).toBe(1) })
      await store.close()
      expect((await rawKeys(dir)).filter((k) => k.startsWith('u'))).toEqual([])
    })

    it('a snapshot whose bytes changed fails its checksum: skipped, and compacted even with an empty log', async () => {
      const dir = await stateDir()
      let store = await open(dir)
      const snapshot = noise(5000)
      store.setSnapshotSource(() => snapshot)
      await store.append(bytes('u'), { durable: false })
      await store.compact()
      await store.close()
      await flipInTable(dir, snapshot)

      store = await open(dir)
      const loaded = await store.load()
      expect(loaded.snapshot).toBeNull()
      expect(loaded.updates).toEqual([])
      expect(loaded.damage).toMatchObject({ corruptSnapshot: true, corruptUpdates: 0, missingUpdates: 0 })
      store.setSnapshotSource(() => bytes('refilled'))
      await vi.waitFor(() => { expect(store.stats().compactions).toBe(1) })
      await store.close()
      store = await open(dir)
      expect(text((await store.load()).snapshot!)).toBe('refilled')
      expect(store.stats().damage).toBeNull()
    })
  })

  it('upgrades a format 1 database (values without checksums) in place', async () => {
    const dir = await stateDir()
    const lifeId = '00000000-0000-4000-8000-000000000001'
    const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
    const seq = (n: number): string => n.toString(16).padStart(16, '0')
    await db.batch([
      { type: 'put', key: 'm:format', value: bytes('1') },
      { type: 'put', key: 'm:life', value: bytes(lifeId) },
      { type: 'put', key: 'm:seq', value: bytes(seq(2)) },
      { type: 'put', key: 's', value: bytes('snapshot') },
      { type: 'put', key: `u${seq(2)}`, value: bytes('two') },
      { type: 'put', key: `u${seq(3)}`, value: bytes('three') },
    ])
    await db.close()

    let store = await open(dir)
    const loaded = await store.load()
    expect({ ...loaded, snapshot: text(loaded.snapshot!), updates: loaded.updates.map(text) }).toEqual({ lifeId, snapshot: 'snapshot', updates: ['two', 'three'], damage: null })
    await store.append(bytes('four'), { durable: true })
    await store.close()
    const raw = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
    expect(text((await raw.get('m:format'))!)).toBe('2')
    expect((await raw.get(`u${seq(2)}`))!.byteLength).toBe(4 + 3)
    await raw.close()

    store = await open(dir)
    const reloaded = await store.load()
    expect({ ...reloaded, snapshot: text(reloaded.snapshot!), updates: reloaded.updates.map(text) }).toEqual({ lifeId, snapshot: 'snapshot', updates: ['two', 'three', 'four'], damage: null })
  })

  it('refuses a database of a newer format with STATE_NEWER', async () => {
    const dir = await stateDir()
    const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' })
    await db.batch([{ type: 'put', key: 'm:format', value: bytes('3') }, { type: 'put', key: 'm:life', value: bytes('x') }])
    await db.close()
    const err = await expectCode(StateStore.open(dir, { log: pino({ level: 'silent' }) }), 'STATE_NEWER')
    expect(err.message).toMatch(/format 3\); upgrade murmur$/)
  })

  it('refuses a database that is already open with STATE_LOCKED', async () => {
    const dir = await stateDir()
    await open(dir)
    const err = await expectCode(StateStore.open(dir, { log: pino({ level: 'silent' }) }), 'STATE_LOCKED')
    expect(err.message).toContain(dir)
    expect(err.message).not.toContain('\n')
  })

  it('close waits for pending appends; later appends, loads and compactions reject with STATE_CLOSED', async () => {
    const dir = await stateDir()
    const store = await open(dir)
    let resolved = 0
    const pending = Array.from({ length: 100 }, (_, i) => store.append(bytes(String(i)), { durable: i % 10 === 0 }).then(() => { resolved++ }))
    await store.close()
    expect(resolved).toBe(100)
    await Promise.all(pending)
    await expectCode(store.append(bytes('late'), { durable: true }), 'STATE_CLOSED')
    await expectCode(store.load(), 'STATE_CLOSED')
    await expectCode(store.compact(), 'STATE_CLOSED')
    await store.close() // twice is fine

    const reopened = await open(dir)
    expect((await reopened.load()).updates.map(text)).toEqual(Array.from({ length: 100 }, (_, i) => String(i)))
  })

  it('rejects only the appends of a batch that fails', async () => {
    const store = await open(await stateDir())
    await store.append(bytes('ok'), { durable: true })
    // The database closed underneath the store.
    await (store as unknown as { db: Level<string, Uint8Array> }).db.close()
    const err = await expectCode(store.append(bytes('lost'), { durable: true }), 'STATE_WRITE_FAILED')
    expect(err.message).not.toContain('\n')
    const again = await expectCode(store.append(bytes('lost too'), { durable: false }), 'STATE_WRITE_FAILED')
    expect(again).not.toBe(err)
    expect(store.stats()).toMatchObject({ appends: 1 })
    await store.close()
  })
})
