// The CLI config (cli/context.ts): where a command goes when nothing says so —
// flag, environment, the context that lists the URL, the current context, the
// defaults; a broken file refused in one line; writes whole, 0600, under a lock;
// a testnet's context written by `up`, extended by `add`, removed by `down`; and
// the CLI reaching a testnet with nothing but the config.

import { spawn } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DEFAULT_API } from '../../cli/client.ts'
import { writeClusterFiles } from '../../cli/cluster-files.ts'
import { ContextError, configPath, loadConfig, removeContext, resolveTarget, saveContext } from '../../cli/context.ts'
import { DEFAULT_DIR } from '../../testnet/local/state.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { murmur, userLines } from '../helpers/cli.ts'

const ENV = ['MURMUR_CONFIG', 'XDG_CONFIG_HOME', 'HOME', 'MURMUR_API', 'MURMUR_USER_KEY', 'MURMUR_NAMESPACE', 'MURMUR_CONTEXT'] as const
let saved: Record<string, string | undefined> = {}
let dir = ''
let file = ''

beforeEach(async () => {
  saved = Object.fromEntries(ENV.map((name) => [name, process.env[name]]))
  dir = await mkdtemp(join(tmpdir(), 'murmur-context-'))
  file = join(dir, 'conf', 'config.json')
  process.env.MURMUR_CONFIG = file
})
afterEach(async () => {
  for (const name of ENV) {
    if (saved[name] === undefined) delete process.env[name]
    else process.env[name] = saved[name]
  }
  await rm(dir, { recursive: true, force: true })
})

describe('where the config is', () => {
  it('$MURMUR_CONFIG, else $XDG_CONFIG_HOME/murmur/config.json, else ~/.config/murmur/config.json', () => {
    expect(configPath()).toBe(file)
    delete process.env.MURMUR_CONFIG
    process.env.XDG_CONFIG_HOME = '/xdg'
    expect(configPath()).toBe('/xdg/murmur/config.json')
    process.env.XDG_CONFIG_HOME = 'relative'
    process.env.HOME = '/home/someone'
    expect(configPath()).toBe('/home/someone/.config/murmur/config.json')
    delete process.env.XDG_CONFIG_HOME
    expect(configPath()).toBe('/home/someone/.config/murmur/config.json')
  })

  it('tests run with a config of their own, and none of the shell’s MURMUR_* (test/setup-env.ts)', () => {
    const inherited = saved.MURMUR_CONFIG!
    expect(inherited.startsWith(tmpdir())).toBe(true)
    expect(inherited).not.toContain('.config/murmur')
    for (const name of ['MURMUR_API', 'MURMUR_USER_KEY', 'MURMUR_NAMESPACE', 'MURMUR_CONTEXT']) expect(saved[name]).toBeUndefined()
  })
})

describe('resolveTarget', () => {
  const a = { api: ['http://127.0.0.1:7001', 'http://127.0.0.1:7002'], key: '/keys/a.key', namespace: 'team-a' }
  const b = { api: ['http://127.0.0.1:8001'], key: '/keys/b.key', namespace: 'team-b' }
  const c = { api: ['http://127.0.0.1:9001'], key: null, namespace: 'team-c' }

  it('with no config: the defaults, and the file is not created', async () => {
    expect(resolveTarget()).toEqual({ api: DEFAULT_API, key: null, namespace: 'default', context: null })
    expect(loadConfig()).toEqual({ current: null, contexts: {} })
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('the current context: its first API, its key and namespace', () => {
    saveContext('a', a, true)
    saveContext('b', b, false)
    expect(resolveTarget()).toEqual({ api: 'http://127.0.0.1:7001', key: '/keys/a.key', namespace: 'team-a', context: 'a' })
    expect(resolveTarget({ context: 'b' })).toEqual({ api: 'http://127.0.0.1:8001', key: '/keys/b.key', namespace: 'team-b', context: 'b' })
    process.env.MURMUR_CONTEXT = 'b'
    expect(resolveTarget().context).toBe('b')
    expect(resolveTarget({ context: 'a' }).context).toBe('a')
  })

  it('a given API URL takes key and namespace from the context that lists it; one that none lists, from a named context only', () => {
    saveContext('a', a, true)
    saveContext('b', b, false)
    expect(resolveTarget({ api: 'http://127.0.0.1:8001/' })).toEqual({ api: 'http://127.0.0.1:8001/', key: '/keys/b.key', namespace: 'team-b', context: 'b' })
    expect(resolveTarget({ api: 'http://127.0.0.1:7002' })).toMatchObject({ key: '/keys/a.key', context: 'a' })
    process.env.MURMUR_API = 'http://127.0.0.1:8001'
    expect(resolveTarget()).toMatchObject({ api: 'http://127.0.0.1:8001', key: '/keys/b.key', context: 'b' })
    // Listed by none: another cluster for all we know, so not the current context's key…
    expect(resolveTarget({ api: 'http://127.0.0.1:5555' })).toEqual({ api: 'http://127.0.0.1:5555', key: null, namespace: 'default', context: null })
    // …unless a context is named for it.
    expect(resolveTarget({ api: 'http://127.0.0.1:5555', context: 'b' })).toEqual({ api: 'http://127.0.0.1:5555', key: '/keys/b.key', namespace: 'team-b', context: 'b' })
  })

  it('with api, key and namespace all given it does not read the config, so a broken one does not matter', async () => {
    await writeConfig('not json')
    expect(() => resolveTarget()).toThrow(ContextError)
    expect(resolveTarget({ api: 'http://127.0.0.1:1', key: '/k', namespace: 'n' })).toEqual({ api: 'http://127.0.0.1:1', key: '/k', namespace: 'n', context: null })
  })

  it('flag over environment over context over defaults, for each of api, key and namespace', () => {
    saveContext('c', c, true)
    expect(resolveTarget()).toEqual({ api: 'http://127.0.0.1:9001', key: null, namespace: 'team-c', context: 'c' })
    process.env.MURMUR_API = 'http://127.0.0.1:6001'
    process.env.MURMUR_USER_KEY = '/env/user.key'
    process.env.MURMUR_NAMESPACE = 'from-env'
    expect(resolveTarget()).toEqual({ api: 'http://127.0.0.1:6001', key: '/env/user.key', namespace: 'from-env', context: null })
    delete process.env.MURMUR_NAMESPACE
    expect(resolveTarget()).toEqual({ api: 'http://127.0.0.1:6001', key: '/env/user.key', namespace: 'default', context: null })
    process.env.MURMUR_NAMESPACE = 'from-env'
    expect(resolveTarget({ api: 'http://127.0.0.1:6002', key: 'rel/flag.key', namespace: 'from-flag' }))
      .toEqual({ api: 'http://127.0.0.1:6002', key: resolve('rel/flag.key'), namespace: 'from-flag', context: null })
    // Empty values count as not given.
    process.env.MURMUR_API = ''
    expect(resolveTarget({ key: '' }).api).toBe('http://127.0.0.1:9001')
    expect(resolveTarget({ key: '' }).key).toBe('/env/user.key')
  })

  it('an unknown --context is one line naming the file and the contexts it has', () => {
    saveContext('a', a, true)
    expect(() => resolveTarget({ context: 'nope' })).toThrow(ContextError)
    expect(() => resolveTarget({ context: 'nope' })).toThrow(`no context 'nope' in ${file} (it has 'a')`)
  })

  it('a relative key in the config is relative to the config file', async () => {
    await writeConfig({ current: 'x', contexts: { x: { api: ['http://127.0.0.1:1'], key: 'keys/x.key' } } })
    expect(resolveTarget()).toEqual({ api: 'http://127.0.0.1:1', key: join(dir, 'conf', 'keys', 'x.key'), namespace: 'default', context: 'x' })
  })
})

describe('a config that is not one', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['not JSON', '{ "current": ', /is not a murmur config \(.*JSON.*\)/],
    ['a context without api', JSON.stringify({ current: null, contexts: { x: { key: null } } }), /is not a murmur config \(contexts\.x\.api: /],
    ['a current context it does not have', JSON.stringify({ current: 'gone', contexts: {} }), /"current" is 'gone', which is not one of its contexts \(no contexts\)/],
  ]
  for (const [what, text, reason] of cases) {
    it(`${what}: one line naming the file and the fix`, async () => {
      await writeConfig(text)
      let error: Error | undefined
      try {
        loadConfig()
      } catch (err) {
        error = err as Error
      }
      expect(error).toBeInstanceOf(ContextError)
      expect(error!.message.split('\n')).toHaveLength(1)
      expect(error!.message.startsWith(`${file} is not a murmur config (`)).toBe(true)
      expect(error!.message).toMatch(reason)
      expect(error!.message).toMatch(/; fix it, or move it aside and run 'murmur testnet up' again \(it writes a new one\)$/)
    })
  }

  it('the CLI says so in one line, exit 2; testnet commands do not read it', async () => {
    await writeConfig('not json')
    const env = { MURMUR_CONFIG: file }
    const members = await murmur(['members'], { env })
    expect(members.code).toBe(2)
    expect(userLines(members.stderr)).toHaveLength(1)
    expect(userLines(members.stderr)[0]).toMatch(new RegExp(`^murmur: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not a murmur config \\(`))
    const status = await murmur(['testnet', 'status', '--dir', join(dir, 'no-testnet')], { env })
    expect(status.code, status.stderr).toBe(0)
  })
})

describe('writing the config', () => {
  it('a new file: dir 0700, file 0600, nothing else left in the dir', async () => {
    saveContext('a', { api: ['http://127.0.0.1:7001/'], key: 'rel.key' }, true)
    expect((await stat(join(dir, 'conf'))).mode & 0o777).toBe(0o700)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect(await readdir(join(dir, 'conf'))).toEqual(['config.json'])
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      current: 'a',
      contexts: { a: { api: ['http://127.0.0.1:7001'], key: resolve('rel.key'), namespace: 'default' } },
    })
  })

  it('replaces the file whole (a new inode, 0600 even over a 0644 one) and keeps the fields it does not know', async () => {
    await writeConfig({ current: null, contexts: { old: { api: ['http://127.0.0.1:1'], key: null, namespace: 'default', extra: 1 } }, future: { x: true } })
    await chmod(file, 0o644)
    const before = await stat(file)
    saveContext('new', { api: ['http://127.0.0.1:2'], key: null }, false)
    const after = await stat(file)
    expect(after.ino).not.toBe(before.ino)
    expect(after.mode & 0o777).toBe(0o600)
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      current: null,
      future: { x: true },
      contexts: {
        old: { api: ['http://127.0.0.1:1'], key: null, namespace: 'default', extra: 1 },
        new: { api: ['http://127.0.0.1:2'], key: null, namespace: 'default' },
      },
    })
  })

  it('removeContext: gone, and current cleared if it was; only a context `only` accepts', () => {
    saveContext('a', { api: ['http://127.0.0.1:1'], key: '/a.key' }, false)
    saveContext('b', { api: ['http://127.0.0.1:2'], key: '/b.key' }, true)
    expect(removeContext('b', (ctx) => ctx.key === '/other.key')).toBe(false)
    expect(loadConfig().current).toBe('b')
    expect(removeContext('b')).toBe(true)
    expect(loadConfig()).toEqual({ current: null, contexts: { a: { api: ['http://127.0.0.1:1'], key: '/a.key', namespace: 'default' } } })
    expect(removeContext('a')).toBe(true)
    expect(removeContext('a')).toBe(false)
  })

  it('removing from a missing config creates none', async () => {
    expect(removeContext('a')).toBe(false)
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('processes writing at once lose none of each other’s contexts (the lock)', async () => {
    const module = resolve('cli/context.ts')
    const writers = 8
    await Promise.all(Array.from({ length: writers }, async (_, i) => {
      const code = `import { saveContext } from ${JSON.stringify(module)}; for (let j = 0; j < 10; j++) saveContext('w${i}-' + j, { api: ['http://127.0.0.1:${7000 + i}'], key: null }, true)`
      await new Promise<void>((done, fail) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, MURMUR_CONFIG: file }, stdio: ['ignore', 'ignore', 'pipe'] })
        let stderr = ''
        child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
        child.on('exit', (c) => { c === 0 ? done() : fail(new Error(`writer ${i} exited ${c}: ${stderr}`)) })
      })
    }))
    const config = loadConfig()
    expect(Object.keys(config.contexts)).toHaveLength(writers * 10)
    expect(config.current).toMatch(/^w\d-9$/)
    expect(await readdir(join(dir, 'conf'))).toEqual(['config.json'])
  })
})

describe('a testnet’s context', () => {

  it('is named testnet for the default dir, testnet-<dir name> for another', () => {
    expect(testnet.contextName()).toBe('testnet')
    expect(testnet.contextName(resolve(DEFAULT_DIR))).toBe('testnet')
    expect(testnet.contextName('/tmp/some/where')).toBe('testnet-where')
  })

  it('up writes it and makes it current, add lists the new node, the CLI reaches the testnet with no --api, down removes it', async () => {
    // Another context that stays, and was current before. Its key is a real one: the
    // client reads the key before it sends anything.
    const prodKey = writeClusterFiles(join(dir, 'prod', 'cluster.key')).adminKey
    saveContext('prod', { api: ['http://127.0.0.1:1'], key: prodKey }, true)
    const net = join(dir, 'net')
    const name = 'testnet-net'
    const progress: string[] = []
    try {
      await upAndUse(net, name, progress)
    } finally {
      // Also when it failed: no node outlives the test (afterEach removes the dir).
      await testnet.down({ dir: net })
    }
    const config = loadConfig()
    expect(config.current).toBeNull()
    expect(Object.keys(config.contexts)).toEqual(['prod'])
  })
})

/** up, the CLI with the context alone, add, --context: what the test checks while the testnet runs. */
async function upAndUse (net: string, name: string, progress: string[]): Promise<void> {
  const state = await testnet.up({ nodes: 1, dir: net, onProgress: (m) => { progress.push(m) } })
  expect(progress).toContain(`CLI context '${name}' is current: murmur commands reach this testnet without --api`)
  let config = loadConfig()
  expect(config.current).toBe(name)
  expect(config.contexts[name]).toEqual({ api: [state.nodes[0]!.apiUrl], key: join(net, 'admin.key'), namespace: 'default' })
  expect(Object.keys(config.contexts).sort()).toEqual(['prod', name])

  const members = await murmur(['members', '--json'], { env: { MURMUR_CONFIG: file } })
  expect(members.code, members.stderr).toBe(0)
  const listed = (JSON.parse(members.stdout) as { members: Array<{ id: string }> }).members.map((m) => m.id)
  expect(listed).toEqual([state.nodes[0]!.peerId])

  const added = await testnet.add(net)
  config = loadConfig()
  expect(config.contexts[name]!.api).toEqual([state.nodes[0]!.apiUrl, added.apiUrl])
  expect(config.current).toBe(name)

  // --context takes another context: prod's API answers no one.
  const other = await murmur(['members', '--context', 'prod'], { env: { MURMUR_CONFIG: file } })
  expect(userLines(other.stderr)).toEqual([expect.stringMatching(/^murmur: no murmur node answers at http:\/\/127\.0\.0\.1:1;/)])

}

async function writeConfig (content: unknown): Promise<void> {
  await mkdir(join(dir, 'conf'), { recursive: true })
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content))
}
