// Task ids as file and cgroup names: plain ids stay, anything else is encoded,
// never colliding with the executor's own files, never longer than a name may be.

import { describe, expect, it } from 'vitest'
import { dirName, pidStartTime } from '../../node/executor/executor.ts'

describe('dirName', () => {
  it('keeps plain ids', () => {
    expect(dirName('web-1.a_b')).toBe('web-1.a_b')
  })

  it('encodes ids that are not plain names, or could pass for the executor\'s own files', () => {
    for (const id of ['../etc', 'a/b', '.hidden', 'cgroups.json', 'task.tmp', 'x-abc', 'ünïcode', ' ', 'a'.repeat(129)]) {
      const name = dirName(id)
      expect(name).toMatch(/^x-[A-Za-z0-9_-]+$|^x-h-[A-Za-z0-9_-]+$/)
      expect(name).not.toBe(id)
    }
  })

  it('is one-to-one on short ids and bounded on long ones', () => {
    const ids = ['a/b', 'a/c', 'ab', 'a_b', 'x-a/b', 'é'.repeat(60)]
    expect(new Set(ids.map(dirName)).size).toBe(ids.length)
    const long = 'ü'.repeat(128)
    expect(Buffer.byteLength(dirName(long))).toBeLessThanOrEqual(255)
    expect(dirName(long)).not.toBe(dirName(long.slice(1) + 'a'))
  })
})

describe('pidStartTime', () => {
  it('reads this process\'s start, and null for a pid that does not exist', () => {
    expect(pidStartTime(process.pid)).toMatch(/^\d+$/)
    expect(pidStartTime(2 ** 22 + 1)).toBeNull()
  })
})
