// Counting task processes by their marker without counting a fork twice: a shell
// loop (`while :; do sleep 1; done`) forks for each `sleep`, and until the child
// execs it is a copy of the shell, marker and all. A task instance is the marked
// process whose parent is not marked.

import { readFileSync } from 'node:fs'
import { markedPids } from './jobs.ts'

/** The parent PID of a process, or null if it is gone. */
function parentOf (pid: number): number | null {
  try {
    // The command name (2nd field) may hold spaces and parentheses: read after its last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return null
  }
}

/** The live processes carrying `mark` whose parent does not carry it: one per running task instance. */
export function markedRoots (mark: string): number[] {
  const pids = markedPids(mark)
  const marked = new Set(pids)
  return pids.filter((pid) => { const parent = parentOf(pid); return parent !== null && !marked.has(parent) })
}
