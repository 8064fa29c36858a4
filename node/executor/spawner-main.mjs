// The spawner process: one per node, started by the executor (spawner.ts) and
// talking to it over Node's IPC channel. It does what a task start needs a fork
// for: opens the task's log files, spawns the launch shim (launch.ts), writes its
// pid into the task's cgroups while the shim waits, lets it exec, and reports the
// pid and, later, the exit. A fork copies the page tables of the process that
// forks and makes it take a copy-on-write fault for every page it writes until
// the child has exec'd: this process is a fraction of the node's size, and the
// node's event loop no longer waits for each child to exec.
//
// Plain JavaScript, importing only Node's own modules, and run with V8's lite
// mode: a .ts file would make Node load its TypeScript stripper (a WebAssembly
// module of some 20 MB resident) into the process that every start forks. The
// messages are typed in spawner.ts (SpawnerRequest, SpawnerReply); the shim's
// script and $0 come as arguments from launch.ts, so they are written once.
//
// It exits when the node's end of the channel closes (the node stopped or died);
// the tasks, each in a session of its own, run on, for the next life of the node
// to adopt. Started detached, it hears no terminal's signals.

import { spawn } from 'node:child_process'
import { closeSync, constants, openSync, readFileSync, writeSync } from 'node:fs'

const [SHIM_NAME, SHIM] = process.argv.slice(2)
// The node keeps what it makes private (umask 077, datadir.ts); its tasks get the usual umask, as from a login.
// The log files below have explicit modes either way.
process.umask(0o022)
const LOG_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT
const LOG_MODE = 0o600

/** @param {object} reply */
function send (reply) {
  // With a callback, a failed send (the node's end just closed: EPIPE) is not thrown; 'disconnect' then exits.
  if (process.connected) process.send(reply, () => {})
}

/**
 * Field 22 of /proc/<pid>/stat, the start time in clock ticks since boot (as executor.ts's pidStartTime),
 * read here, where the pid cannot have been reaped and reused yet: the 'exit' below is what reaps it.
 * @param {number} pid
 * @returns {string | null}
 */
function pidStart (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' ? null : fields[19] ?? null
  } catch {
    return null
  }
}

/**
 * Spawns the shim in a new session and process group, moves it into the task's groups while it waits
 * (a failure there kills it before the command ran), then lets it exec.
 * @param {{ seq: number, file: string, args: string[], env: Record<string, string>, cwd: string, user: { uid: number, gid: number } | null, stdout: string, stderr: string, procs: string[] }} req
 */
function spawnTask (req) {
  /** @type {number[]} */
  const fds = []
  try {
    const stdout = openSync(req.stdout, LOG_FLAGS, LOG_MODE)
    fds.push(stdout)
    const stderr = openSync(req.stderr, LOG_FLAGS, LOG_MODE)
    fds.push(stderr)
    // Opened before the spawn, so that the shim waits for a few writes only.
    const procs = req.procs.map((path) => openSync(path, 'w'))
    fds.push(...procs)
    const child = spawn('/bin/sh', ['-c', SHIM, SHIM_NAME, req.file, ...req.args], {
      detached: true,
      stdio: ['ignore', stdout, stderr, 'pipe'],
      env: req.env,
      cwd: req.cwd,
      uid: req.user?.uid,
      gid: req.user?.gid,
    })
    // A spawn that fails (EMFILE, EAGAIN) emits 'error' on the next tick and leaves no stdio:
    // the throw below reports it, so the event must not end this process.
    child.once('error', () => {})
    const gate = child.stdio?.[3] ?? null
    if (child.pid === undefined || gate === null) {
      gate?.destroy()
      throw new Error('spawn failed (the machine may be out of processes or memory)')
    }
    try {
      const line = `${child.pid}\n`
      for (const fd of procs) writeSync(fd, line)
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
    // Exits are reported while the node listens; the channel, not the tasks, keeps this process alive.
    child.unref()
    send({ t: 'started', seq: req.seq, pid: child.pid, pidStart: pidStart(child.pid) })
    child.once('exit', (code, signal) => { send({ t: 'exit', seq: req.seq, code, signal }) })
  } catch (err) {
    send({ t: 'failed', seq: req.seq, message: `cannot start ${req.file}: ${/** @type {Error} */ (err).message}` })
  } finally {
    for (const fd of fds) try { closeSync(fd) } catch {}
  }
}

process.on('message', (/** @type {any} */ message) => {
  if (message?.t === 'spawn') spawnTask(message)
})
process.on('disconnect', () => { process.exit(0) })
// Run by hand, without the channel: nothing to do.
if (!process.connected) process.exit(2)
send({ t: 'ready', pid: process.pid })
