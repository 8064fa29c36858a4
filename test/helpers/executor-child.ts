// One life of a node's executor, for the restart test: opens an Executor on a
// tasks dir, starts the tasks it is given, prints one line once they run, then
// waits to be SIGKILLed, so that the next life finds what it left.
//
//   node test/helpers/executor-child.ts <dir> <nodeId> '<AttemptSpec[] as JSON>' [self]
//
// Prints `running <json>` with each task's id, pid, phase, cgroup and user, or
// `failed <message>` if the executor could not be opened or a start threw.
// With `self`, tasks run as this process's own user (root allowed), as in
// executor.test.ts, whose scripts write into the tasks dir by absolute paths;
// otherwise as the executor's default (a uid per task when root), as a node's would.

import { pino } from 'pino'
import { Executor } from '../../node/executor/executor.ts'
import type { AttemptSpec } from '../../node/executor/types.ts'

const [dir, nodeId, json, as] = process.argv.slice(2)
if (dir === undefined || nodeId === undefined || json === undefined) {
  process.stderr.write('usage: executor-child.ts <dir> <nodeId> <specs json>\n')
  process.exit(2)
}

try {
  const executor = Executor.open({
    nodeId,
    dir,
    capacity: { cpuMillis: 64_000, memoryBytes: 64 * 1024 ** 3 },
    isolation: 'auto',
    log: pino({ level: 'silent' }),
    sampleMs: 100,
    ...(as === 'self' ? { runAs: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }, allowPrivilegedTasks: true } : {}),
  })
  const started = []
  for (const spec of JSON.parse(json) as AttemptSpec[]) {
    const info = await executor.start(spec)
    started.push({ id: info.id, pid: info.pid, phase: info.phase, cgroup: info.cgroup, exit: info.exit, user: info.user ?? null })
  }
  process.stdout.write(`running ${JSON.stringify({ isolation: executor.isolation.kind, tasks: started })}\n`)
} catch (err) {
  process.stdout.write(`failed ${(err as Error).message}\n`)
  process.exit(1)
}

// Stay alive, as a node would, until the test kills this process.
setInterval(() => {}, 60_000)
