// The job commands of `murmur`: `run` and `job run` submit (and with --wait
// follow a job until it runs or ends), `job list|status|stop|history` look at
// jobs, `ps`, `logs`, `kill` and `explain` at task instances, `status` at the
// pool. Flags and files become a job input in job-input.ts; text for people is
// made in job-views.ts; here is only what talks to the node and the terminal.

import type { Command } from 'commander'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Client, type JobView, connect } from './client.ts'
import { target } from './context.ts'
import { InputError, buildJobInput, readJobFile, type RunFlags } from './job-input.ts'
import {
  liveInstances, plural, progressText, renderExplain, renderHistory, renderJob, renderJobs, renderStatus, renderTasks,
  shortNode, submittedText, waitOutcome,
} from './job-views.ts'

export { InputError, JOB_FILE_LIMITS, buildJobInput, defaultJobName, parseConstraintArgs, parseEnvArgs, parseJobText, readJobFile } from './job-input.ts'
export type { RunFlags } from './job-input.ts'
export {
  countsText, exitText, instancesText, progressText, renderExplain, renderHistory, renderJob, renderJobs, renderStatus,
  renderTasks, shortNode, submittedText, waitOutcome,
} from './job-views.ts'

export const WAIT_DEFAULTS = Object.freeze({
  /** How often `--wait` asks for the job: quick enough to feel live, one small GET each time. */
  pollIntervalMs: 150,
})

/** The exit code of a wait that Ctrl-C ended (128 + SIGINT), as shells report it. */
const INTERRUPTED_EXIT_CODE = 130

interface JsonFlag { json?: boolean }
interface SubmitFlags extends JsonFlag { wait?: boolean }

// No default value: commander would print "(default: [])" in the help.
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value]

function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}

function print (text: string): void {
  process.stdout.write(text + '\n')
}

/** What a command answers: the value as one JSON document with --json, else its text for people. */
function show (flags: JsonFlag, value: unknown, text: () => string): void {
  if (flags.json === true) printJson(value)
  else print(text())
}

/**
 * The client of the program's target (cli/context.ts): its API, signed with its
 * key, in `namespace` if the command names one, else the target's.
 */
export function clientOf (program: Command, namespace?: string): Client {
  const t = target(program)
  return connect(t.api, { key: t.key, namespace: namespace ?? t.namespace })
}

interface NamespaceFlags { namespace?: string, allNamespaces?: boolean }

export function registerJobs (program: Command): void {
  const client = (flags: NamespaceFlags = {}): Client => clientOf(program, flags.namespace)
  const json = ['--json', 'print one JSON document'] as const
  const namespace = ['-n, --namespace <ns>', "the job's namespace (default: MURMUR_NAMESPACE, the context's, else 'default')"] as const
  const allNamespaces = ['-A, --all-namespaces', 'every namespace you may read'] as const
  /** The namespace a listing asks for: '*' with -A. */
  const listed = (flags: NamespaceFlags): string | undefined => flags.allNamespaces === true ? '*' : undefined

  program.command('run')
    .description('run a command on the pool: a batch job, a service (--service) or a cron job (--cron)')
    .argument('<command...>', 'the program and its arguments, after --')
    .option('--name <name>', "the job's name (default: the program's name)")
    .option('--cpu <cores>', 'CPU per instance, as cores (0.5) or millicores (500m) (default: 0.1)')
    .option('--mem <size>', 'memory per instance, e.g. 256M or 1.5G (default: 128M)')
    .option('--count <n>', 'how many instances (default: 1)')
    .option('--service', 'keep it running: restart it whenever it exits')
    .option('--cron <schedule>', 'run it on a cron schedule, e.g. "*/5 * * * *"')
    .option('--timezone <tz>', 'the time zone of the schedule (default: UTC)')
    .option('--env <key=value>', 'an environment variable (repeatable); the API shows its key, never its value', collect)
    .option('--constraint <label=value>', 'run only on nodes with label=value, or without: label!=value (repeatable)', collect)
    .option('--restart-attempts <n>', 'retries of a failed batch or cron run (default: 3)')
    .option('--grace <duration>', 'time between SIGTERM and SIGKILL on stop (default: 10s)')
    .option('--partition <mode>', 'majority: re-placed by the majority side only; both: on every side of a partition')
    .option('--workdir <dir>', 'the working directory on the node')
    .option('--wait', 'wait until every instance runs (a batch: until it ends, exiting with its code)')
    .option(...namespace)
    .option(...json)
    .action(async (argv: string[], flags: RunFlags & SubmitFlags & NamespaceFlags) => {
      await submit(client(flags), buildJobInput(argv, flags), flags)
    })

  const job = program.command('job').description('submit, look at and stop jobs')

  job.command('run')
    .description('submit the job of a YAML or JSON file (- reads stdin)')
    .argument('<file>', 'file.yaml, file.json, or - for stdin')
    .option('--wait', 'wait until every instance runs (a batch: until it ends, exiting with its code)')
    .option(...namespace)
    .option(...json)
    .action(async (file: string, flags: SubmitFlags & NamespaceFlags) => {
      await submit(client(flags), await readJobFile(file), flags)
    })

  job.command('list')
    .description('the jobs of the cluster: id, name, type, status, instances, age')
    .option('--all', 'also finished and stopped jobs')
    .option(...namespace)
    .option(...allNamespaces)
    .option(...json)
    .action(async (flags: JsonFlag & NamespaceFlags & { all?: boolean }) => {
      const ns = listed(flags)
      const response = await client(flags).jobs({ all: flags.all === true, ...(ns === undefined ? {} : { namespace: ns }) })
      show(flags, response, () => renderJobs(response.jobs, Date.now(), flags.all === true))
    })

  job.command('status')
    .description('a job (by id or name): its spec in short and every instance, where it runs and why not')
    .argument('<job>', 'job id or name')
    .option(...namespace)
    .option(...json)
    .action(async (ref: string, flags: JsonFlag & NamespaceFlags) => {
      const view = await client(flags).job(ref)
      show(flags, view, () => renderJob(view, Date.now()))
    })

  job.command('stop')
    .description('stop every instance of a job, on every node')
    .argument('<job>', 'job id or name')
    .option(...namespace)
    .option(...json)
    .action(async (ref: string, flags: JsonFlag & NamespaceFlags) => {
      const view = await client(flags).stopJob(ref)
      show(flags, view, () => `stopping ${view.id} (${plural(liveInstances(view), 'instance')})`)
    })

  job.command('scale')
    .description("change a service's number of instances: new ones are placed, those past the count stopped")
    .argument('<job>', 'job id or name')
    .argument('<count>', 'the new number of instances')
    .option(...namespace)
    .option(...json)
    .action(async (ref: string, count: string, flags: JsonFlag & NamespaceFlags) => {
      if (!/^\d+$/.test(count)) throw new InputError(`<count> must be a whole number such as 3, got '${count}'`)
      const view = await client(flags).scaleJob(ref, Number(count))
      show(flags, view, () => `${view.id} now wants ${plural(view.spec?.count ?? Number(count), 'instance')}`)
    })

  job.command('history')
    .description('every claim of every instance of a job, oldest first')
    .argument('<job>', 'job id or name')
    .option(...namespace)
    .option(...json)
    .action(async (ref: string, flags: JsonFlag & NamespaceFlags) => {
      const history = await client(flags).jobHistory(ref)
      show(flags, history, () => renderHistory(history))
    })

  program.command('ps')
    .description('the task instances of the cluster: where they run, their state, CPU and memory use')
    .option('--job <job>', 'only the instances of this job (id or name)')
    .option('--node <node>', 'only the instances on this node')
    .option('--all', 'also finished and given-up instances')
    .option(...namespace)
    .option(...allNamespaces)
    .option(...json)
    .action(async (flags: JsonFlag & NamespaceFlags & { job?: string, node?: string, all?: boolean }) => {
      // Without --job: every namespace you may read, unless one is named.
      const ns = flags.allNamespaces === true ? '*' : flags.namespace ?? (flags.job === undefined ? '*' : undefined)
      const response = await client(flags).tasks({ job: flags.job, node: flags.node, all: flags.all === true, ...(ns === undefined ? {} : { namespace: ns }) })
      show(flags, response, () => renderTasks(response.tasks, Date.now(), flags.all === true))
    })

  program.command('logs')
    .description("a task's output, from whichever node runs or ran it")
    .argument('<task>', 'task instance id (see murmur ps)')
    .option('-f, --follow', 'keep printing as the task writes, until it ends (Ctrl-C to stop)')
    .option('--stderr', 'stderr instead of stdout')
    .option('--tail <n>', 'only the last n lines')
    .option('--json', 'print one JSON document with the text and its offsets (not with -f)')
    .action(async (task: string, flags: JsonFlag & { follow?: boolean, stderr?: boolean, tail?: string }) => {
      await printLogs(client(), task, flags)
    })

  program.command('kill')
    .description('stop a task where it runs: a service instance gets a replacement, a batch instance counts as failed')
    .argument('<task>', 'task instance id (see murmur ps)')
    .option(...json)
    .action(async (task: string, flags: JsonFlag) => {
      const result = await client().killTask(task)
      show(flags, result, () => `killed ${result.task} on ${shortNode(result.node)}`)
    })

  program.command('explain')
    .description('why a task runs where it runs, or why it is pending: every node in rank order with its verdict')
    .argument('<task>', 'task instance id (see murmur ps)')
    .option(...json)
    .action(async (task: string, flags: JsonFlag) => {
      const view = await client().explainTask(task)
      show(flags, view, () => renderExplain(view))
    })

  program.command('status')
    .description('the pool: nodes, CPU and memory, tasks and jobs by state, and what needs a look')
    .option(...json)
    .action(async (flags: JsonFlag) => {
      const status = await client().status()
      show(flags, status, () => renderStatus(status))
    })
}

/** Submits; prints the id at once (or, with --json, the job once there is no more to wait for). */
async function submit (client: Client, input: unknown, flags: SubmitFlags): Promise<void> {
  const view = await client.submitJob(input)
  if (flags.json !== true) print(view.id)
  process.stderr.write(submittedText(view, Date.now()) + '\n')
  if (flags.wait !== true) {
    if (flags.json === true) printJson(view)
    return
  }
  const result = await waitForJob(client, view)
  process.stderr.write(result.message + '\n')
  if (flags.json === true) printJson(result.view)
  process.exitCode = result.code
}

/**
 * Polls the job until waitOutcome says it is done, printing a progress line on
 * stderr whenever it changes. Ctrl-C ends the wait, not the job.
 */
async function waitForJob (client: Client, first: JobView): Promise<{ view: JobView, code: number, message: string }> {
  const controller = new AbortController()
  const interrupt = (): void => { controller.abort() }
  process.once('SIGINT', interrupt)
  let view = first
  let shown = ''
  try {
    while (true) {
      const outcome = waitOutcome(view)
      const line = progressText(view)
      // A cron job's instances come with its schedule: there is nothing to show yet.
      if (line !== shown && view.type !== 'cron') {
        process.stderr.write(line + '\n')
        shown = line
      }
      if (outcome !== null) return { view, ...outcome }
      try {
        await sleep(WAIT_DEFAULTS.pollIntervalMs, undefined, { signal: controller.signal })
      } catch {
        break
      }
      view = await client.job(view.id)
      if (controller.signal.aborted) break
    }
    return { view, code: INTERRUPTED_EXIT_CODE, message: `stopped waiting; ${view.id} keeps running (murmur job stop ${view.id} stops it)` }
  } finally {
    process.off('SIGINT', interrupt)
  }
}

async function printLogs (client: Client, task: string, flags: JsonFlag & { follow?: boolean, stderr?: boolean, tail?: string }): Promise<void> {
  const stream = flags.stderr === true ? 'stderr' : 'stdout'
  const tail = flags.tail === undefined ? undefined : lineCount(flags.tail)
  if (flags.follow === true) {
    if (flags.json === true) throw new InputError('logs --json prints one document and cannot follow; drop -f or --json')
    const controller = new AbortController()
    const stop = (): void => { controller.abort() }
    process.once('SIGINT', stop)
    // `murmur logs -f x | head` closes the pipe: stop following rather than crash on EPIPE.
    process.stdout.once('error', stop)
    try {
      await client.followLogs(task, { stream, ...(tail !== undefined ? { tail } : {}) }, (data) => { process.stdout.write(data) }, controller.signal)
    } finally {
      process.off('SIGINT', stop)
      process.stdout.off('error', stop)
    }
    return
  }
  let range = await client.logs(task, { stream, ...(tail !== undefined ? { tail } : {}) })
  const first = range
  const chunks = [range.data]
  // A node answers a bounded range at a time: read on while it says there is more.
  while (range.end < range.last && range.data.length > 0) {
    range = await client.logs(task, { stream, offset: range.end })
    chunks.push(range.data)
  }
  const data = Buffer.concat(chunks)
  if (flags.json === true) printJson({ task, stream, start: first.start, end: range.end, first: first.first, last: range.last, text: data.toString('utf8') })
  else process.stdout.write(data)
}

function lineCount (text: string): number {
  if (!/^\d+$/.test(text)) throw new InputError(`--tail must be a number of lines, got '${text}'`)
  return Number(text)
}
