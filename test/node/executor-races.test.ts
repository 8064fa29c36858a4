// A stop that overtakes its start: it waits for the process and stops it, rather
// than answering "no such task" while the task starts anyway.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { Executor } from '../../node/executor/executor.ts'
import type { AttemptSpec } from '../../node/executor/types.ts'

const opened: Array<{ executor: Executor, dir: string }> = []

afterEach(async () => {
  for (const { executor, dir } of opened.splice(0)) {
    await executor.stopAll(0)
    await executor.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

function open (): Executor {
  const dir = mkdtempSync(join(tmpdir(), 'murmur-races-'))
  const executor = Executor.open({ nodeId: `test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`, dir, capacity: { cpuMillis: 4_000, memoryBytes: 4 * 1024 ** 3 }, log: pino({ level: 'silent' }) })
  opened.push({ executor, dir })
  return executor
}

const sleeper = (id: string): AttemptSpec => ({ id, job: 'j', command: 'sleep', args: ['60'], env: {}, cpuMillis: 100, memoryBytes: 64 * 1024 ** 2 })

describe('a stop that overtakes its start', () => {
  it('waits for the start and stops the task, without the grace period', async () => {
    const executor = open()
    const starting = executor.start(sleeper('early'))
    const stopped = await executor.stop('early', { graceMs: 30_000 })
    expect(stopped.phase).toBe('ended')
    expect(stopped.exit?.reason).toBe('killed')
    expect(stopped.exit?.message).not.toMatch(/grace/)
    expect((await starting).id).toBe('early')
    expect(executor.committed().tasks).toBe(0)
  })

  it('stopAll() stops starts still in flight', async () => {
    const executor = open()
    const starts = [executor.start(sleeper('a')), executor.start(sleeper('b'))]
    await executor.stopAll(30_000)
    await Promise.all(starts)
    expect(executor.list().map((t) => [t.id, t.phase, t.exit?.reason]).sort()).toEqual([['a', 'ended', 'killed'], ['b', 'ended', 'killed']])
  })
})
