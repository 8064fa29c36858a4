// The spawner process: one per node, started by the executor (spawner.ts) and
// talking to it over Node's IPC channel. It does what a task start needs a fork
// for: opens the task's log files, spawns the launch shim, writes its pid into
// the task's cgroups while the shim waits, lets it exec, and reports the pid and,
// later, the exit. A fork copies the page tables of the process that forks and
// makes it take a copy-on-write fault for every page it writes until the child
// has exec'd; this process is a few tens of MB, the node a few hundred, and
// the node's event loop no longer waits for each child to exec.
//
// It imports nothing but Node's own modules (through launch.ts), so that it
// starts in tens of milliseconds and stays small. It exits when the node's end of
// the channel closes (the node stopped or died); the tasks, each in a session of
// its own, run on, for the next life of the node to adopt.

import { closeSync, constants, openSync, writeSync } from 'node:fs'
import { statFields } from '../proc.ts'
import { StartFailure, launch } from './launch.ts'
import type { SpawnerReply, SpawnerRequest } from './spawner.ts'

const LOG_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT
const LOG_MODE = 0o640

function send (reply: SpawnerReply): void {
  // With a callback, a failed send (the node's end just closed: EPIPE) is not thrown; 'disconnect' then exits.
  if (process.connected) process.send!(reply, () => {})
}

function spawnTask (req: SpawnerRequest): void {
  const fds: number[] = []
  try {
    const stdout = openSync(req.stdout, LOG_FLAGS, LOG_MODE)
    fds.push(stdout)
    const stderr = openSync(req.stderr, LOG_FLAGS, LOG_MODE)
    fds.push(stderr)
    // Opened before the spawn, so that the shim waits for a few writes only.
    const procs = req.procs.map((path) => openSync(path, 'w'))
    fds.push(...procs)
    const child = launch({ file: req.file, args: req.args, env: req.env, cwd: req.cwd, user: req.user ?? undefined, stdout, stderr }, (pid) => {
      const line = `${pid}\n`
      for (const fd of procs) writeSync(fd, line)
    })
    // Read here, where the pid cannot have been reaped and reused yet: the exit below is what reaps it.
    let pidStart: string | null = null
    try {
      const fields = statFields(child.pid!)
      if (fields !== null && fields[0] !== 'Z') pidStart = fields[19] ?? null
    } catch {}
    send({ t: 'started', seq: req.seq, pid: child.pid!, pidStart })
    child.once('exit', (code, signal) => { send({ t: 'exit', seq: req.seq, code, signal }) })
  } catch (err) {
    const message = err instanceof StartFailure ? err.message : `cannot start ${req.file}: ${(err as Error).message}`
    send({ t: 'failed', seq: req.seq, message })
  } finally {
    for (const fd of fds) try { closeSync(fd) } catch {}
  }
}

process.on('message', (message: SpawnerRequest) => {
  if (message?.t === 'spawn') spawnTask(message)
})
process.on('disconnect', () => { process.exit(0) })
// Started detached, it hears no terminal's signals; one sent to it on purpose still ends it.
if (!process.connected) process.exit(2)
send({ t: 'ready', pid: process.pid })
