// Starting a process that never runs outside its cgroup.
//
// Node cannot run code between fork and exec, so the child starts as a tiny
// shell that blocks reading fd 3. While it waits, its parent (the node's spawner
// process, spawner-main.mjs) writes its pid into the task's cgroups; then one byte
// on fd 3 lets it exec the command, which inherits the groups. If the pipe closes
// without that byte (the spawner died, or the move failed), the shell exits 111
// and the command never runs.

import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, isAbsolute, join, resolve } from 'node:path'

/** $0 of the shim: a failed exec prints "murmur-task: 1: exec: …" on stderr, which tells it from the command's own exit 126/127. */
export const SHIM_NAME = 'murmur-task'
/** The shim's script, run as `sh -c SHIM SHIM_NAME file args…` by the spawner. */
export const SHIM = 'read _ <&3 || exit 111; exec 3<&-; exec "$@"'
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export class StartFailure extends Error {
  override name = 'StartFailure'
}

/**
 * Finds the program as exec would (PATH from the task's env), and checks that
 * the user it runs as may execute it, so that "not found" and "permission
 * denied" are reported as such rather than as a shell's exit code.
 */
export function resolveCommand (command: string, env: Record<string, string>, cwd: string, user?: { uid: number, gid: number }): string {
  const candidates = command.includes('/')
    ? [isAbsolute(command) ? command : resolve(cwd, command)]
    : (env.PATH ?? DEFAULT_PATH).split(delimiter).filter((dir) => dir !== '').map((dir) => join(isAbsolute(dir) ? dir : resolve(cwd, dir), command))
  let denied: string | null = null
  for (const path of candidates) {
    let stat
    try {
      stat = statSync(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') continue
      if (code === 'EACCES') { denied ??= path; continue }
      throw new StartFailure(`cannot start ${command}: ${(err as Error).message}`)
    }
    if (!stat.isFile()) {
      if (command.includes('/')) throw new StartFailure(`cannot start ${command}: it is not a file (EISDIR)`)
      continue
    }
    if (mayExecute(path, stat, user)) return path
    denied ??= path
  }
  if (denied !== null) throw new StartFailure(`cannot start ${command}: permission denied (EACCES) on ${denied}`)
  if (command.includes('/')) throw new StartFailure(`cannot start ${command}: no such file (ENOENT)`)
  throw new StartFailure(`cannot start ${command}: command not found in PATH=${env.PATH ?? DEFAULT_PATH} (ENOENT)`)
}

function mayExecute (path: string, stat: { mode: number, uid: number, gid: number }, user?: { uid: number, gid: number }): boolean {
  if (user === undefined || user.uid === process.getuid?.()) {
    try {
      accessSync(path, constants.X_OK)
      return true
    } catch {
      return false
    }
  }
  // As another user: the owner's, group's or others' x bit, as the kernel checks it (supplementary groups aside).
  if (user.uid === 0) return (stat.mode & 0o111) !== 0
  if (stat.uid === user.uid) return (stat.mode & 0o100) !== 0
  if (stat.gid === user.gid) return (stat.mode & 0o010) !== 0
  return (stat.mode & 0o001) !== 0
}
