// One uid per task: a root node runs each task instance as a uid of its own,
// taken from a range no account of the machine uses, as systemd's DynamicUser
// does. Two tasks then never share a user: neither can signal the other, read
// the other's files or its /proc entries. The uid is held from the start until
// the task's processes are gone, recorded in task.json so that a restarted
// node holds it again for the tasks it adopts.

import { readFileSync, readdirSync } from 'node:fs'
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
   * does not clean (/tmp, /dev/shm) meets its next holder as late as can be.
   */
  take (task: string): number | null {
    for (let i = 0; i < this.range.count; i++) {
      const uid = this.range.first + (this.next + i) % this.range.count
      if (this.held.has(uid)) continue
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
