// A job on a real node (run as root, as a machine's node is) reaches nothing of
// the node: not its identity key, not its live state database, not the records
// of the node's tasks, not the node's process; it runs as a uid of its own and
// writes in its HOME by absolute path; and a workdir that would leave the
// task's own dir is refused at submit. The executor-level tests are in
// test/node/sandbox.test.ts; this one is the whole chain, from the API down.
//
// Only root can switch a task to another user: elsewhere it says why it is skipped.

import { chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ApiError } from '../../cli/client.ts'
import { Net } from '../helpers/jobs.ts'
import { PY_ATTEMPT } from '../helpers/sandbox-probe.ts'
import { startTestnet, stopTestnet } from '../helpers/testnet.ts'

const ROOT = process.getuid?.() === 0

/** Prints one line per attempt: the path, then `ok` or the error's code (EACCES, EPERM, ENOENT). */
const PROBE = String.raw`
import errno, os, sys
${PY_ATTEMPT}
pid = int(sys.argv[1])
for p in sys.argv[2:]:
    print(p, attempt(lambda: os.listdir(p) if p.endswith('/') else open(p, 'rb').read(1)))
print('signal', attempt(lambda: os.kill(pid, 0)))
print('user', os.getuid(), os.getgid(), ' '.join(map(str, os.getgroups())))
os.chdir('/')
print('home', attempt(lambda: open(os.environ['HOME'] + '/f', 'w').write('x')))

`

let dir = ''
let net: Net

beforeAll(async () => {
  if (!ROOT) return
  const started = await startTestnet('sandbox', 1)
  dir = started.dir
  // mkdtemp's 0700 would keep the task out on its own: the data dir's modes are what is tested.
  await chmod(dir, 0o755)
  net = new Net(started.state.nodes)
}, 60_000)
afterAll(async () => { await stopTestnet(dir) }, 60_000)

describe(ROOT ? 'a job on a node run as root' : 'a job on a node run as root (skipped: only root can run tasks as another user)', () => {
  it.skipIf(!ROOT)('cannot read the node\'s key, state database or task records, nor signal the node', async () => {
    const node = net.nodes[0]!
    const data = node.dataDir
    const targets = [join(data, 'identity.key'), join(data, 'state') + '/', join(data, 'state', 'CURRENT'), join(data, 'tasks') + '/', join(data, 'node.json')]
    const submitted = await net.client(0).submitJob({ name: 'probe', command: 'python3', args: ['-c', PROBE, String(node.pid), ...targets], cpu: '50m', memory: '32M' })
    const done = await net.job(0, submitted.id, (v) => v.status === 'completed' || v.status === 'failed', 'the probe to finish')
    const instance = done.instances[0]!
    const out = (await net.client(0).logs(instance.id)).data.toString()
    const err = (await net.client(0).logs(instance.id, { stream: 'stderr' })).data.toString()
    expect(done.status, err).toBe('completed')
    const lines = new Map(out.trim().split('\n').map((l) => { const i = l.lastIndexOf(' '); return [l.slice(0, i), l.slice(i + 1)] as const }))
    for (const target of targets) expect(lines.get(target), target).toBe('EACCES')
    expect(lines.get('signal')).toBe('EPERM')
    // A uid of its own from the node's range, gid the same number, no other group.
    const [, uid, gid, groups] = /^user (\d+) (\d+) ?(.*)$/m.exec(out) ?? []
    expect(Number(uid)).toBeGreaterThanOrEqual(70_000)
    expect(Number(uid)).toBeLessThan(80_000)
    expect(gid).toBe(uid)
    expect(groups === '' || groups === gid, groups).toBe(true)
    expect(lines.get('home')).toBe('ok')
  })

  it.skipIf(!ROOT)('refuses a workdir that leaves the task\'s own dir, in one line naming the field', async () => {
    for (const workdir of ['/etc', '../..']) {
      const err = await net.client(0).submitJob({ name: 'escape', command: 'true', workdir }).then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(ApiError)
      expect((err as ApiError).status).toBe(400)
      expect((err as ApiError).message).toMatch(/^workdir: '.*' (is absolute|leaves the task's own dir)/)
      expect((err as ApiError).message).not.toContain('\n')
    }
  })
})
