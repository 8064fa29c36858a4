// Starting a process that never runs outside its cgroup.
//
// Node cannot run code between fork and exec, so the child starts as a tiny
// shell that blocks reading fd 3. While it waits, its parent (the node's spawner
// process, spawner-main.ts) writes its pid into the task's cgroups; then one byte
// on fd 3 lets it exec the command, which inherits the groups. If the pipe closes
// without that byte (the spawner died, or the move failed), the shell exits 111
// and the command never runs.

import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, isAbsolute, join, resolve } from 'node:path'

/** $0 of the shim: a failed exec prints "murmur-task: 1: exec: …" on stderr, which tells it from the command's own exit 126/127. */
export const SHIM_NAME = 'murmur-task'
const SHIM = 'read _ <&3 || exit 111; exec 3<&-; exec "$@"'
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export class StartFailure extends Error {
  override name = 'StartFailure'
}

export interface Launch {
  /** An absolute path, from resolveCommand. */
  file: string
  args: string[]
  env: Record<string, string>
  cwd: string
  user?: { uid: number, gid: number } | undefined
  stdout: number
  stderr: number
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

/**
 * Spawns the shim in a new session and process group, calls `place(pid)` while
 * it waits (throwing there kills it before the command ran), then lets it exec.
 */
export function launch (spec: Launch, place: (pid: number) => void): ChildProcess {
  const child = spawn('/bin/sh', ['-c', SHIM, SHIM_NAME, spec.file, ...spec.args], {
    detached: true,
    stdio: ['ignore', spec.stdout, spec.stderr, 'pipe'],
    env: spec.env,
    cwd: spec.cwd,
    uid: spec.user?.uid,
    gid: spec.user?.gid,
  })
  // A spawn that fails (EMFILE, EAGAIN) emits 'error' on the next tick, and leaves no
  // stdio: the failure is reported by the throw below, so the event must not crash the node.
  child.once('error', () => {})
  const gate = (child.stdio as Array<unknown> | undefined)?.[3] as NodeJS.WritableStream & { destroy: () => void } | null | undefined ?? null
  if (child.pid === undefined || gate === null) {
    gate?.destroy()
    throw new StartFailure('cannot start the process: spawn failed (the node may be out of processes or memory)')
  }
  try {
    place(child.pid)
  } catch (err) {
    // The shim is still blocked on fd 3: the command never ran.
    try { process.kill(child.pid, 'SIGKILL') } catch {}
    gate.destroy()
    throw err
  }
  // If the shim dies before reading its byte (stopped at once, killed from outside), the
  // pipe resets: its exit reports what happened, so the error here is not news.
  gate.on('error', () => {})
  gate.end('\n')
  // The node does not wait for its tasks: they outlive it, for the next life to adopt.
  child.unref()
  return child
}
