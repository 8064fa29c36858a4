// The cgroup file formats and the choice of hierarchy, on texts as the kernel
// writes them (v1 from the development machines, v2 from a systemd host).

import { describe, expect, it } from 'vitest'
import { limitWrites, parseKeyed, parseMounts, parseNumber, parsePids, parseSelfCgroup, planHierarchies } from '../../node/executor/cgroups.ts'

const V1_MOUNTS = `tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`
const V1_SELF = `9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
`
const V2_MOUNTS = `cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
proc /proc proc rw 0 0
`
const V2_SELF = '0::/system.slice/murmur.service\n'

describe('parsers', () => {
  it('reads mounts, with octal escapes in paths', () => {
    const mounts = parseMounts(V1_MOUNTS + 'cgroup /sys/fs/cgroup/a\\040b cgroup rw,cpu,cpuacct 0 0\n')
    expect(mounts.filter((m) => m.fsType === 'cgroup')).toHaveLength(6)
    expect(mounts.at(-1)).toEqual({ fsType: 'cgroup', mountPoint: '/sys/fs/cgroup/a b', options: ['rw', 'cpu', 'cpuacct'] })
  })

  it('reads the process\'s own groups per hierarchy, named ones and the unified one', () => {
    const self = parseSelfCgroup(V1_SELF)
    expect(self.unified).toBe('/')
    expect(self.v1.get('memory')).toBe('/process_api/abc')
    expect(self.v1.get('cpu')).toBe('/')
    expect(self.v1.get('name=systemd')).toBe('/')
    expect(parseSelfCgroup('3:cpu,cpuacct:/x/y:z\n').v1.get('cpuacct')).toBe('/x/y:z')
    expect(parseSelfCgroup(V2_SELF)).toEqual({ unified: '/system.slice/murmur.service', v1: new Map() })
  })

  it('reads keyed files of both versions', () => {
    expect(parseKeyed('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n').get('oom_kill')).toBe(3)
    const events = parseKeyed('low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n')
    expect(events.get('oom_kill')).toBe(1)
    expect(events.get('max')).toBe(12)
    expect(parseKeyed('usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 10\n').get('usage_usec')).toBe(1234567)
    expect(parseKeyed('').size).toBe(0)
  })

  it('reads numbers and max, and refuses anything else', () => {
    expect(parseNumber('9223372036854771712\n')).toBe(9223372036854771712)
    expect(parseNumber('max\n')).toBeNull()
    expect(parseNumber(' 42 ')).toBe(42)
    expect(() => parseNumber('')).toThrow(/expected a number/)
    expect(() => parseNumber('12abc')).toThrow(/expected a number/)
  })

  it('reads pid lists', () => {
    expect(parsePids('12\n345\n\n')).toEqual([12, 345])
    expect(parsePids('')).toEqual([])
  })
})

describe('limits', () => {
  it('v1: quota over a 100 ms period, memory limit before memsw (which may never be below it), pids', () => {
    const writes = limitWrites(1, { cpuMillis: 500, memoryBytes: 64 * 1024 ** 2, pidsMax: 100 })
    expect(writes).toEqual([
      ['cpu', 'cpu.cfs_period_us', '100000'],
      ['cpu', 'cpu.cfs_quota_us', '50000'],
      ['memory', 'memory.limit_in_bytes', String(64 * 1024 ** 2)],
      ['memory', 'memory.memsw.limit_in_bytes', String(64 * 1024 ** 2)],
      ['pids', 'pids.max', '100'],
    ])
  })

  it('v2: cpu.max as "quota period", swap off, pids', () => {
    expect(limitWrites(2, { cpuMillis: 2500, memoryBytes: 1024 ** 3, pidsMax: 1024 })).toEqual([
      ['cpu', 'cpu.max', '250000 100000'],
      ['memory', 'memory.max', String(1024 ** 3)],
      ['memory', 'memory.swap.max', '0'],
      ['pids', 'pids.max', '1024'],
    ])
  })

  it('never asks for a quota below the kernel\'s 1 ms', () => {
    expect(limitWrites(1, { cpuMillis: 1, memoryBytes: 1, pidsMax: 1 })[1]).toEqual(['cpu', 'cpu.cfs_quota_us', '1000'])
    expect(limitWrites(2, { cpuMillis: 5, memoryBytes: 1, pidsMax: 1 })[0]).toEqual(['cpu', 'cpu.max', '1000 100000'])
  })
})

describe('planHierarchies', () => {
  it('takes v1 when the unified hierarchy has no controllers, below the process\'s own group in each', () => {
    const plan = planHierarchies(parseMounts(V1_MOUNTS), parseSelfCgroup(V1_SELF), [])
    expect(plan).toEqual({
      version: 1,
      dirs: {
        cpu: '/sys/fs/cgroup/cpu',
        cpuacct: '/sys/fs/cgroup/cpuacct',
        memory: '/sys/fs/cgroup/memory/process_api/abc',
        pids: '/sys/fs/cgroup/pids',
        freezer: '/sys/fs/cgroup/freezer',
      },
    })
  })

  it('maps co-mounted controllers to one dir, and does without the freezer', () => {
    const mounts = parseMounts('cgroup /c/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /c/memory cgroup rw,memory 0 0\ncgroup /c/pids cgroup rw,pids 0 0\n')
    const plan = planHierarchies(mounts, parseSelfCgroup('3:cpu,cpuacct:/a\n2:memory:/a\n1:pids:/a\n'), null)
    expect(plan).toEqual({ version: 1, dirs: { cpu: '/c/cpu,cpuacct/a', cpuacct: '/c/cpu,cpuacct/a', memory: '/c/memory/a', pids: '/c/pids/a' } })
  })

  it('takes v2 when its group offers cpu, memory and pids', () => {
    const plan = planHierarchies(parseMounts(V2_MOUNTS), parseSelfCgroup(V2_SELF), ['cpuset', 'cpu', 'io', 'memory', 'pids'])
    expect(plan).toEqual({ version: 2, dir: '/sys/fs/cgroup/system.slice/murmur.service' })
  })

  it('says what is missing when nothing is usable', () => {
    const plan = planHierarchies(parseMounts(V2_MOUNTS), parseSelfCgroup(V2_SELF), ['cpu', 'io'])
    expect(plan.version).toBe(0)
    expect(plan).toMatchObject({ why: expect.stringMatching(/lacks the memory, pids controllers.*cgroup v1 lacks the cpu, cpuacct, memory, pids controllers/) })
    const none = planHierarchies([], parseSelfCgroup(''), null)
    expect(none).toMatchObject({ version: 0, why: expect.stringMatching(/no cgroup v2 hierarchy is mounted/) })
  })

  it('honours a preference, and reports why it cannot', () => {
    expect(planHierarchies(parseMounts(V1_MOUNTS), parseSelfCgroup(V1_SELF), [], 'cgroup-v1').version).toBe(1)
    const v2 = planHierarchies(parseMounts(V1_MOUNTS), parseSelfCgroup(V1_SELF), [], 'cgroup-v2')
    expect(v2).toMatchObject({ version: 0, why: expect.stringMatching(/lacks the cpu, memory, pids controllers/) })
    expect(planHierarchies(parseMounts(V2_MOUNTS), parseSelfCgroup(V2_SELF), ['cpu', 'memory', 'pids'], 'cgroup-v1').version).toBe(0)
  })
})
