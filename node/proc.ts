// What /proc says of a process, for the executor and the testnet alike.

import { readFileSync } from 'node:fs'

/**
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces
 * and parentheses): index 0 is field 3, the state letter. Null if the process
 * is gone; any other failure to read (EMFILE, ENOMEM) throws, so that "cannot
 * tell" never passes for "gone".
 */
export function statFields (pid: number): string[] | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESRCH') return null
    throw err
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}
