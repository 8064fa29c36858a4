// One uid per task: a root node runs each task instance as a uid of its own,
// taken from a range no account of the machine uses, as systemd's DynamicUser
// does. Two tasks then never share a user: neither can signal the other, read
// the other's files or its /proc entries. The uid is held from the start until
// the task's processes are gone, recorded in task.json so that a restarted
// node holds it again for the tasks it adopts. Several nodes on one machine (a
// testnet) share the range: a claim file per uid in a root-only dir of the
// machine (UidClaims) keeps each uid to one task of one node.

import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { InputError } from '../errors.ts'

export interface UidRange {
  first: number
  count: number
}

/**
 * 70000–79999, by default: above login.defs' UID_MAX (60000: the last uid useradd gives a person), above
 * nobody (65534) and above systemd's DynamicUser range (61184–65519); below the subordinate ids given to
 * people for their containers (SUB_UID_MIN 100000). 10,000 tasks at once is more than a node runs.
 */
export const DEFAULT_TASK_UIDS: Readonly<UidRange> = Object.freeze({ first: 70_000, count: 10_000 })

/** The largest id the kernel accepts as a user (2^32 - 1 is "no id"). */
const ID_MAX = 2 ** 32 - 2

/** Throws a one-line InputError for a range that cannot be: bad numbers, root, or past the last uid. */
export function checkUidRange (range: UidRange): UidRange {
  const { first, count } = range
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 1 || count < 1 || first + count - 1 > ID_MAX) {
    throw new InputError('TASK_UIDS_INVALID', `task uids ${first}+${count}: give a first uid from 1 and a count from 1, ending at most at ${ID_MAX} (default ${DEFAULT_TASK_UIDS.first}+${DEFAULT_TASK_UIDS.count})`)
  }
  return { first, count }
}

/** A range as a person writes it, `70000-79999` (both ends in it), for a flag; throws a one-line InputError. */
export function parseUidRange (text: string, flag = '--task-uids'): UidRange {
  const match = /^(\d{1,10})-(\d{1,10})$/.exec(text.trim())
  const first = Number(match?.[1])
  const last = Number(match?.[2])
  if (match === null || last < first) {
    throw new InputError('BAD_FLAG', `${flag} must be a range of uids such as ${DEFAULT_TASK_UIDS.first}-${DEFAULT_TASK_UIDS.first + DEFAULT_TASK_UIDS.count - 1} (first-last), got '${text}'`)
  }
  try {
    return checkUidRange({ first, count: last - first + 1 })
  } catch (err) {
    throw new InputError('BAD_FLAG', `${flag} ${text}: ${(err as Error).message}`)
  }
}

/** The uids and gids that /etc/passwd and /etc/group name: a task must never run as an account's id. */
export function accountIds (files = { passwd: '/etc/passwd', group: '/etc/group' }): Set<number> {
  const ids = new Set<number>()
  for (const file of [files.passwd, files.group]) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      const id = Number(line.split(':')[2])
      if (line !== '' && Number.isInteger(id)) ids.add(id)
    }
  }
  return ids
}

/**
 * The gid a job's `runAs` uid runs with: its primary group, from the first line of /etc/passwd with that uid,
 * or else the uid's own number (as for a task uid of the range), also when the file cannot be read.
 */
export function primaryGid (uid: number, passwd = '/etc/passwd'): number {
  let text = ''
  try {
    text = readFileSync(passwd, 'utf8')
  } catch {
    return uid
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':')
    if (fields.length < 4 || !/^\d+$/.test(fields[2]!) || Number(fields[2]) !== uid) continue
    const gid = /^\d+$/.test(fields[3]!) ? Number(fields[3]) : NaN
    return Number.isSafeInteger(gid) && gid <= ID_MAX ? gid : uid
  }
  return uid
}

/** Who holds a uid, as its claim file says: the task's record, so that a claim outliving its task is seen as such. */
const claimSchema = z.object({ task: z.string(), record: z.string(), at: z.number() })

/**
 * The machine's claims on task uids, one file per uid (`<dir>/<uid>`, made with O_EXCL), shared by every node
 * of the machine. A claim is the holder's until released, or until it is stale: older than `freshMs` and its
 * task's record gone, ended, or naming another uid (a node whose data dir was removed under it, a crash
 * between claim and record). The dir lives in /run: a reboot, which ends every task, clears it.
 */
export class UidClaims {
  readonly dir: string
  private readonly freshMs: number

  /** `freshMs`: how long a claim stands without its task's record (a start writes the record once its process runs). */
  constructor (dir: string, freshMs = 60_000) {
    this.dir = dir
    this.freshMs = freshMs
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  }

  /** Claims the uid for the task whose record is `record`; false if another live claim holds it. */
  claim (uid: number, task: string, record: string): boolean {
    const file = join(this.dir, String(uid))
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, 'wx', 0o600)
        try {
          writeSync(fd, JSON.stringify({ task, record, at: Date.now() }))
        } finally {
          closeSync(fd)
        }
        return true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const holder = this.holder(uid)
      if (holder !== null && holder.record === record && holder.task === task) return true
      if (holder !== null && this.live(uid, holder)) return false
      rmSync(file, { force: true })
    }
    return false
  }

  release (uid: number, record: string): void {
    const holder = this.holder(uid)
    if (holder === null || holder.record === record) rmSync(join(this.dir, String(uid)), { force: true })
  }

  private holder (uid: number): z.infer<typeof claimSchema> | null {
    try {
      const parsed = claimSchema.safeParse(JSON.parse(readFileSync(join(this.dir, String(uid)), 'utf8')))
      return parsed.success ? parsed.data : null
    } catch {
      // Half written (a crash, or a claim being written right now): stale only once old.
      const at = (() => { try { return statSync(join(this.dir, String(uid))).mtimeMs } catch { return 0 } })()
      return Date.now() - at < this.freshMs ? { task: '', record: '', at } : null
    }
  }

  private live (uid: number, holder: z.infer<typeof claimSchema>): boolean {
    if (Date.now() - holder.at < this.freshMs) return true
    try {
      const record = JSON.parse(readFileSync(holder.record, 'utf8')) as { exit?: unknown, user?: { uid?: unknown } | null }
      return record.exit === null && record.user?.uid === uid
    } catch {
      return false
    }
  }
}

/** Where a root node's executor keeps the machine's claims; tmpfs, root's alone. */
export const UID_CLAIMS_DIR = '/run/murmur/task-uids'

export class UidPool {
  readonly range: UidRange
  /** Ids in the range an account of the machine has: never handed out. */
  readonly skipped: number[]
  private readonly held = new Map<number, string>()
  private next = 0

  constructor (range: UidRange, accounts: Set<number> = new Set()) {
    this.range = checkUidRange(range)
    this.skipped = [...accounts].filter((id) => this.contains(id)).sort((a, b) => a - b)
    for (const id of this.skipped) this.held.set(id, '(an account of this machine)')
  }

  contains (uid: number): boolean {
    return uid >= this.range.first && uid < this.range.first + this.range.count
  }

  /** Free uids left. */
  get free (): number {
    return this.range.count - this.held.size
  }

  /**
   * A free uid for the task, or null if every one is held. Taken round the range rather than lowest first,
   * so that a uid just let go is the last to come back: a file the previous holder left somewhere the node
   * does not clean (/tmp, /dev/shm) meets its next holder as late as can be. `available` may turn a uid
   * down (another node of the machine holds it).
   */
  take (task: string, available: (uid: number) => boolean = () => true): number | null {
    for (let i = 0; i < this.range.count; i++) {
      const uid = this.range.first + (this.next + i) % this.range.count
      if (this.held.has(uid) || !available(uid)) continue
      this.held.set(uid, task)
      this.next = (uid - this.range.first + 1) % this.range.count
      return uid
    }
    return null
  }

  /** Holds a recorded uid again (a task of the previous life); false if another task holds it. */
  hold (uid: number, task: string): boolean {
    if (!this.contains(uid)) return true
    const holder = this.held.get(uid)
    if (holder !== undefined && holder !== task) return false
    this.held.set(uid, task)
    return true
  }

  release (uid: number, task: string): void {
    if (this.held.get(uid) === task) this.held.delete(uid)
  }

  holder (uid: number): string | undefined {
    return this.held.get(uid)
  }
}

/**
 * Pids of the processes whose real, effective or saved uid is `uid`, from /proc: without cgroups, what
 * a task left outside its process group (a daemon that made a session of its own) is found by its uid.
 */
export function pidsOfUid (uid: number): number[] {
  const pids: number[] = []
  let names: string[] = []
  try {
    names = readdirSync('/proc')
  } catch {
    return pids
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue
    let status = ''
    try {
      status = readFileSync(`/proc/${name}/status`, 'utf8')
    } catch {
      continue
    }
    const line = status.split('\n').find((l) => l.startsWith('Uid:'))
    const ids = line?.slice(4).trim().split(/\s+/).slice(0, 3).map(Number) ?? []
    if (ids.includes(uid)) pids.push(Number(name))
  }
  return pids
}
