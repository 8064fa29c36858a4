// `murmur node start`: validate the flags, start a node, print who it is, and
// leave gracefully on SIGINT/SIGTERM or `murmur node leave`.

import type { Logger } from 'pino'
import { type RawNodeOptions, nodeConfig } from './config.ts'
import { InputError } from './errors.ts'
import { createLogger } from './logger.ts'
import { MurmurNode } from './node.ts'

export interface RunNodeOptions extends RawNodeOptions {
  logLevel?: string
  pretty?: boolean
}

/**
 * Runs a node until it is told to stop; resolves with the exit code. Throws
 * MurmurError on bad input or a failed start. The caller should exit the process
 * with the code: a libp2p that did not stop cleanly may leave sockets open.
 */
export async function runNode (options: RunNodeOptions): Promise<number> {
  const config = nodeConfig(options)
  const pretty = options.pretty === true ? (await import('pino-pretty')).default : undefined
  let log: Logger
  try {
    log = createLogger({ level: options.logLevel, pretty })
  } catch (err) {
    throw new InputError('BAD_FLAG', (err as Error).message)
  }

  // Signals are handled from the start: one that arrives while the node is still
  // joining stops it as soon as it is up, with the same clean leave.
  let requested: string | null = null
  let onRequest: ((why: string) => void) | null = null
  const request = (why: string): void => {
    if (requested !== null) {
      log.warn('second signal: exiting without a clean stop')
      process.exit(130)
    }
    requested = why
    onRequest?.(why)
  }
  process.on('SIGINT', () => { request('SIGINT') })
  process.on('SIGTERM', () => { request('SIGTERM') })

  const node = await MurmurNode.start(config, log)
  const info = node.runtime()
  process.stdout.write([
    `peer id   ${info.peerId}`,
    ...info.addrs.map((a, i) => `${i === 0 ? 'listening' : '         '} ${a}`),
    `api       ${info.apiUrl}`,
    '',
  ].join('\n'))

  const why = await new Promise<string>((resolve) => {
    if (requested !== null) resolve(requested)
    onRequest = resolve
    node.on('leave', () => { request('leave requested through the API') })
  })
  log.info({ why }, 'stopping')
  try {
    await node.stop()
    return 0
  } catch (err) {
    log.error({ err: (err as Error).message }, 'stop failed')
    return 1
  }
}
