// The user's CLI config: named contexts, as kubectl's kubeconfig has them, so that
// a second shell reaches a cluster with nothing copied. A context says which node
// APIs to talk to, which user key to sign with (a path only: keys are read and
// parsed elsewhere) and which namespace to work in. `murmur testnet up` writes one
// and makes it current; `murmur testnet down` removes it.
//
//   { "current": "testnet",
//     "contexts": { "testnet": { "api": ["http://127.0.0.1:7947", …], "key": "/abs/admin.key", "namespace": "default" } } }
//
// Where: $MURMUR_CONFIG, else $XDG_CONFIG_HOME/murmur/config.json, else
// ~/.config/murmur/config.json. Its dir is made 0700 and the file is 0600, always
// replaced whole (a temp file, fsynced, renamed over it), under a lock file, so that
// two commands never lose each other's change. Fields it does not know are kept.

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, fchmodSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import type { Command } from 'commander'
import { z } from 'zod'
import { DEFAULT_API } from './client.ts'

export interface Context {
  /** Node API URLs of one cluster; the first is the one commands use. */
  api: string[]
  /** The user key file (an absolute path), or null for none. */
  key: string | null
  namespace: string
}

export interface Config {
  current: string | null
  contexts: Record<string, Context>
}

/** Where a command goes and as whom. `context` names the context that supplied anything, or null. */
export interface Target {
  api: string
  key: string | null
  namespace: string
  context: string | null
}

export interface TargetOptions {
  /** --api */
  api?: string
  /** --key */
  key?: string
  namespace?: string
  /** --context: a context other than the current one. */
  context?: string
}

export const DEFAULT_NAMESPACE = 'default'

/** The config is unusable (not JSON, not a config) or names a context it does not have: exit 2, with what to do. */
export class ContextError extends Error {
  override name = 'ContextError'
  readonly exitCode = 2
}

const contextSchema = z.looseObject({
  api: z.array(z.string().min(1)).min(1),
  key: z.string().min(1).nullable().default(null),
  namespace: z.string().min(1).default(DEFAULT_NAMESPACE),
})
const configSchema = z.looseObject({
  current: z.string().nullable().default(null),
  contexts: z.record(z.string(), contextSchema).default({}),
})

/** $MURMUR_CONFIG, else $XDG_CONFIG_HOME/murmur/config.json, else ~/.config/murmur/config.json. */
export function configPath (): string {
  const explicit = given(process.env.MURMUR_CONFIG)
  if (explicit !== undefined) return resolve(explicit)
  const xdg = given(process.env.XDG_CONFIG_HOME)
  // The XDG spec: a relative $XDG_CONFIG_HOME is invalid and is ignored.
  const base = xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), '.config')
  return join(base, 'murmur', 'config.json')
}

/** The config; a missing file is an empty one. A file that is not a config throws one line naming it and the fix. */
export function loadConfig (): Config {
  const file = configPath()
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { current: null, contexts: {} }
    throw new ContextError(`cannot read the murmur config ${file}: ${(err as Error).message.split('\n')[0]}`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw corrupt(file, (err as Error).message.split('\n')[0]!)
  }
  const parsed = configSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw corrupt(file, `${issue.path.length === 0 ? 'the file' : issue.path.join('.')}: ${issue.message}`)
  }
  const config = parsed.data as Config
  if (config.current !== null && config.contexts[config.current] === undefined) {
    throw corrupt(file, `"current" is '${config.current}', which is not one of its contexts (${names(config)})`)
  }
  return config
}

/** Adds or replaces context `name`; with `makeCurrent`, commands use it from now on. */
export function saveContext (name: string, ctx: { api: string[], key: string | null, namespace?: string }, makeCurrent: boolean): void {
  if (name === '') throw new ContextError('a context needs a name')
  if (ctx.api.length === 0) throw new ContextError(`context '${name}' needs at least one API URL`)
  const context: Context = { api: [...new Set(ctx.api.map(normalizeUrl))], key: ctx.key === null ? null : resolve(ctx.key), namespace: ctx.namespace ?? DEFAULT_NAMESPACE }
  update((config) => {
    // Kept in its place when replaced, so that a file someone reads keeps its order.
    config.contexts[name] = { ...config.contexts[name], ...context }
    if (makeCurrent) config.current = name
    return true
  })
}

/**
 * Removes context `name`, and makes no context current if it was. With `only`,
 * only a context it accepts: a testnet removes its context, not one of the same
 * name that another testnet wrote since. Says whether it removed one.
 */
export function removeContext (name: string, only?: (ctx: Context) => boolean): boolean {
  let removed = false
  update((config) => {
    const ctx = config.contexts[name]
    if (ctx === undefined || (only !== undefined && !only(ctx))) return false
    delete config.contexts[name]
    if (config.current === name) config.current = null
    removed = true
    return true
  })
  return removed
}

/**
 * Where a command goes, each of api, key and namespace from the first of:
 *   1. the explicit flag (`opts`),
 *   2. the environment: MURMUR_API, MURMUR_USER_KEY, MURMUR_NAMESPACE,
 *   3. for key and namespace, when the API URL came from 1 or 2: the context that
 *      lists that URL (the chosen one if it does, else the first that does),
 *   4. the chosen context: `opts.context`, else MURMUR_CONTEXT, else the current one
 *      (for the API: its first URL) — but the current one only for an API URL it
 *      gave or lists: a URL given by hand that no context lists is another cluster
 *      for all we know, and gets none of the current context's key (unlike
 *      kubectl's --server); name a context for it with --context,
 *   5. the defaults: DEFAULT_API, no key, namespace 'default'.
 * Empty values count as not given. A relative key path in the config is relative
 * to the config file's dir; one from a flag or the environment, to the working dir.
 */
export function resolveTarget (opts: TargetOptions = {}): Target {
  const explicitApi = given(opts.api) ?? given(process.env.MURMUR_API)
  const explicitKey = given(opts.key) ?? given(process.env.MURMUR_USER_KEY)
  const explicitNamespace = given(opts.namespace) ?? given(process.env.MURMUR_NAMESPACE)
  // Nothing left to take from a config: do not read it (a broken one does not stop a command that names everything).
  if (explicitApi !== undefined && explicitKey !== undefined && explicitNamespace !== undefined) {
    return { api: explicitApi, key: resolve(explicitKey), namespace: explicitNamespace, context: null }
  }
  const config = loadConfig()
  const chosenName = given(opts.context) ?? given(process.env.MURMUR_CONTEXT)
  if (chosenName !== undefined && config.contexts[chosenName] === undefined) {
    throw new ContextError(`no context '${chosenName}' in ${configPath()} (it has ${names(config)}); name one of those with --context or MURMUR_CONTEXT, or start a testnet: murmur testnet up`)
  }
  const chosen = chosenName ?? config.current
  let source = chosen
  if (explicitApi !== undefined) {
    const url = normalizeUrl(explicitApi)
    const lists = (name: string | null): boolean => name !== null && config.contexts[name]!.api.some((u) => normalizeUrl(u) === url)
    source = lists(chosen) ? chosen : (Object.keys(config.contexts).find(lists) ?? chosenName ?? null)
  }
  const ctx = source === null ? undefined : config.contexts[source]
  const keyOf = (key: string | null): string | null => key === null ? null : resolve(dirname(configPath()), key)
  return {
    api: explicitApi ?? ctx?.api[0] ?? DEFAULT_API,
    key: explicitKey !== undefined ? resolve(explicitKey) : keyOf(ctx?.key ?? null),
    namespace: explicitNamespace ?? ctx?.namespace ?? DEFAULT_NAMESPACE,
    context: ctx === undefined ? null : source,
  }
}

const targets = new WeakMap<Command, Target>()

/**
 * The target of the murmur program (or any of its commands) from its global
 * options --api, --key, --context; resolved once, then the same. `applyTarget`
 * (a preAction hook of the program) also writes it into the program's options, so
 * that `program.opts().api`, `.key` and `.namespace` are the resolved ones.
 */
export function target (command: Command): Target {
  let program = command
  while (program.parent !== null) program = program.parent
  let found = targets.get(program)
  if (found === undefined) {
    const opts = program.opts<{ api?: string, key?: string, namespace?: string, context?: string }>()
    found = resolveTarget({ api: opts.api, key: opts.key, namespace: opts.namespace, context: opts.context })
    targets.set(program, found)
  }
  return found
}

/** Resolves the program's target and puts api, key, namespace and context into its options. */
export function applyTarget (command: Command): Target {
  let program = command
  while (program.parent !== null) program = program.parent
  const resolved = target(program)
  program.setOptionValue('api', resolved.api)
  program.setOptionValue('key', resolved.key ?? undefined)
  program.setOptionValue('namespace', resolved.namespace)
  program.setOptionValue('context', resolved.context ?? undefined)
  return resolved
}

/** "http://127.0.0.1:7947/" and "HTTP://127.0.0.1:7947" are the same API. */
export function normalizeUrl (url: string): string {
  try {
    const parsed = new URL(url)
    return parsed.pathname === '/' && parsed.search === '' && parsed.hash === '' ? parsed.origin : url.replace(/\/+$/, '')
  } catch {
    return url.replace(/\/+$/, '')
  }
}

function given (value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}

function names (config: Config): string {
  const all = Object.keys(config.contexts)
  return all.length === 0 ? 'no contexts' : all.map((n) => `'${n}'`).join(', ')
}

function corrupt (file: string, why: string): ContextError {
  return new ContextError(`${file} is not a murmur config (${why}); fix it, or move it aside and run 'murmur testnet up' again (it writes a new one)`)
}

/** Read, change, write, under the config's lock. `change` says whether it changed anything. */
function update (change: (config: Config) => boolean): void {
  const file = configPath()
  withLock(`${file}.lock`, () => {
    const config = loadConfig()
    if (change(config)) write(file, config)
  })
}

function write (file: string, config: Config): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  try {
    const fd = openSync(temp, 'wx', 0o600)
    try {
      // Whatever the umask: only its owner reads it.
      fchmodSync(fd, 0o600)
      writeSync(fd, JSON.stringify(config, null, 2) + '\n')
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(temp, file)
  } catch (err) {
    rmSync(temp, { force: true })
    throw new ContextError(`cannot write the murmur config ${file}: ${(err as Error).message.split('\n')[0]}`)
  }
}

const LOCK_WAIT_MS = 5_000

/** A lock file holding our PID, taken with O_EXCL; one whose process is gone is taken over. */
function withLock (path: string, fn: () => void): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600)
      try {
        writeSync(fd, String(process.pid))
      } finally {
        closeSync(fd)
      }
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ContextError(`cannot lock the murmur config (${path}): ${(err as Error).message.split('\n')[0]}`)
      const holder = Number(readText(path).trim())
      const named = Number.isInteger(holder) && holder > 0
      // No PID yet: its taker is between open and write, unless that was long ago (it died there).
      if ((named && !isRunning(holder)) || (!named && ageMs(path) > 2_000)) {
        // Gone: take it over. Two takers: O_EXCL decides.
        rmSync(path, { force: true })
        continue
      }
      if (Date.now() > deadline) throw new ContextError(`another murmur command (${named ? `pid ${holder}` : 'one starting'}) holds the lock of the murmur config (${path}); try again when it is done`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
    }
  }
  try {
    fn()
  } finally {
    rmSync(path, { force: true })
  }
}

function readText (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

function ageMs (path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs
  } catch {
    return 0
  }
}

function isRunning (pid: number): boolean {
  if (pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
