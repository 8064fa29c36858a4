// What `murmur run` and `murmur job run` send: a job as a user writes it (the
// shape of jobInputSchema in node/jobs/spec.ts), built from flags or read from a
// YAML or JSON file. Numbers and units are the node's to check: "0.5", "256M"
// and "10s" go through as written, and a bad one comes back as a 400 naming the
// field. Only what cannot be put into that shape at all is refused here.

import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { parse as parseYaml } from 'yaml'
import type { Constraint } from '../placement/constraints.ts'
import type { JobInput } from './client.ts'

export const JOB_FILE_LIMITS = Object.freeze({
  /** The API takes request bodies up to 1 MiB; a job spec is a few lines. */
  fileBytesMax: 1_048_576,
})

/** The input was wrong: one line on stderr, exit code 2 (see report() in bin/murmur.ts). */
export class InputError extends Error {
  override name = 'InputError'
  readonly exitCode = 2
}

/** The flags of `murmur run`, as commander gives them. */
export interface RunFlags {
  name?: string
  cpu?: string
  mem?: string
  count?: string
  service?: boolean
  cron?: string
  timezone?: string
  env?: string[]
  constraint?: string[]
  restartAttempts?: string
  grace?: string
  partition?: string
  workdir?: string
}

/** The job input of `murmur run [flags] -- command args…`; only the fields given, so the node's defaults apply to the rest. */
export function buildJobInput (argv: readonly string[], flags: RunFlags): JobInput {
  const [command, ...args] = argv
  if (command === undefined || command === '') throw new InputError('name the program to run after --, e.g. murmur run -- python app.py')
  if (flags.service === true && flags.cron !== undefined) throw new InputError('--service and --cron exclude each other: a job is a service or a cron job')
  const input: JobInput = {
    name: flags.name ?? defaultJobName(command),
    type: flags.service === true ? 'service' : flags.cron !== undefined ? 'cron' : 'batch',
    command,
    args,
  }
  if (flags.env !== undefined && flags.env.length > 0) input.env = parseEnvArgs(flags.env)
  if (flags.cpu !== undefined) input.cpu = flags.cpu
  if (flags.mem !== undefined) input.memory = flags.mem
  if (flags.count !== undefined) input.count = wholeNumber('--count', flags.count)
  if (flags.constraint !== undefined && flags.constraint.length > 0) input.constraints = parseConstraintArgs(flags.constraint)
  if (flags.restartAttempts !== undefined) input.restart = { attempts: wholeNumber('--restart-attempts', flags.restartAttempts) }
  if (flags.grace !== undefined) input.grace = flags.grace
  // The node names the allowed values when it refuses another one.
  if (flags.partition !== undefined) input.partition = flags.partition as JobInput['partition']
  if (flags.cron !== undefined) input.schedule = flags.cron
  if (flags.timezone !== undefined) input.timezone = flags.timezone
  if (flags.workdir !== undefined) input.workdir = flags.workdir
  return input
}

/** A job name from a command: its basename, lowercased, cut to the names the node accepts (1–63 of a-z 0-9 . _ -). */
export function defaultJobName (command: string): string {
  const base = command.replace(/\/+$/, '').split('/').pop() ?? ''
  const name = base.toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63)
    .replace(/[^a-z0-9]+$/, '')
  return name === '' ? 'job' : name
}

/** `KEY=value` pairs; the value may hold `=` and may be empty. */
export function parseEnvArgs (pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at < 0) throw new InputError(`--env '${pair}' has no '=': write --env ${pair}=value (or ${pair}= for an empty value)`)
    if (at === 0) throw new InputError(`--env '${pair}' has no name before '=': write --env NAME=value`)
    env[pair.slice(0, at)] = pair.slice(at + 1)
  }
  return env
}

/** `label=value` (the node has the label with that value) and `label!=value` (it does not). */
export function parseConstraintArgs (texts: readonly string[]): Constraint[] {
  return texts.map((text) => {
    const match = /^([^=!]+)(!=|=)(.*)$/.exec(text)
    if (match === null) throw new InputError(`--constraint '${text}' is neither label=value nor label!=value`)
    const [, label, op, value] = match as unknown as [string, string, string, string]
    return op === '=' ? { label, op: 'eq', value } : { label, op: 'ne', value }
  })
}

function wholeNumber (flag: string, text: string): number {
  // A count must travel as a JSON number; its range is the node's to judge.
  if (!/^\d+$/.test(text)) throw new InputError(`${flag} must be a whole number, got '${text}'`)
  return Number(text)
}

/**
 * A job spec from a file (`-` for stdin): JSON when the name ends in .json, YAML
 * otherwise (YAML reads JSON too). A file that cannot be read or parsed is an
 * InputError `<file>: <reason>`.
 */
export async function readJobFile (file: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<Record<string, unknown>> {
  const source = file === '-' ? 'stdin' : file
  let bytes: Buffer
  try {
    bytes = file === '-' ? await readStream(stdin, JOB_FILE_LIMITS.fileBytesMax) : await readFile(file)
  } catch (err) {
    throw new InputError(`${source}: ${readProblem(err as NodeJS.ErrnoException)}`)
  }
  if (bytes.length > JOB_FILE_LIMITS.fileBytesMax) {
    throw new InputError(`${source}: larger than ${JOB_FILE_LIMITS.fileBytesMax / 1_048_576} MiB; a job spec is a few lines`)
  }
  return parseJobText(bytes.toString('utf8'), source, extname(file).toLowerCase() === '.json' ? 'json' : 'yaml')
}

/** The object a job file holds, or an InputError `<source>: <reason>`. */
export function parseJobText (text: string, source: string, format: 'json' | 'yaml'): Record<string, unknown> {
  let value: unknown
  try {
    // logLevel 'error': a parse error throws, warnings (unknown tags) do not clutter stderr.
    value = format === 'json' ? JSON.parse(text) : parseYaml(text, { logLevel: 'error' })
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0]!.replace(/:$/, '')
    throw new InputError(`${source}: not valid ${format === 'json' ? 'JSON' : 'YAML'}: ${reason}`)
  }
  if (value === null || value === undefined) throw new InputError(`${source}: is empty; a job spec needs at least name and command`)
  if (typeof value !== 'object' || Array.isArray(value)) {
    const kind = Array.isArray(value) ? 'a list' : `a ${typeof value}`
    throw new InputError(`${source}: holds ${kind}; a job spec is a mapping with at least name and command`)
  }
  return value as Record<string, unknown>
}

function readProblem (err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT': return 'no such file'
    case 'EISDIR': return 'is a directory, not a job spec'
    case 'EACCES': return 'permission denied'
    default: return err.message
  }
}

async function readStream (stream: NodeJS.ReadableStream, bytesMax: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    chunks.push(b)
    total += b.length
    // One byte past the limit is enough to refuse it; do not read a runaway pipe to its end.
    if (total > bytesMax) break
  }
  return Buffer.concat(chunks)
}

