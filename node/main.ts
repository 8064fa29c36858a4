// `murmur node start`: validate the flags, start a node, print who it is, and
// leave gracefully on SIGINT/SIGTERM or `murmur node leave`.

import type { Logger } from 'pino'
import { type RawNodeOptions, nodeConfig } from './config.ts'
import { createLogger } from './logger.ts'
import { MurmurNode } from './node.ts'

export interface RunNodeOptions extends RawNodeOptions {
  logLevel?: string
  pretty?: boolean
}

/** Runs a node until it is told to stop; resolves with the exit code. Throws MurmurError on bad input. */
export async function runNode (options: RunNodeOptions): Promise<number> {
  const config = nodeConfig(options)
  const pretty = options.pretty === true ? (await import('pino-pretty')).default : undefined
  const log: Logger = createLogger({ level: options.logLevel, pretty })
  const node = await MurmurNode.start(config, log)
  const info = node.runtime()
  process.stdout.write([
    `peer id   ${info.peerId}`,
    ...info.addrs.map((a, i) => `${i === 0 ? 'listening' : '         '} ${a}`),
    `api       ${info.apiUrl}`,
    '',
  ].join('\n'))

  return await new Promise<number>((resolve) => {
    let stopping = false
    const stop = (why: string): void => {
      if (stopping) {
        log.warn('second signal: exiting without a clean stop')
        process.exit(130)
      }
      stopping = true
      log.info({ why }, 'stopping')
      void node.stop().then(() => { resolve(0) }, (err: Error) => {
        log.error({ err: err.message }, 'stop failed')
        resolve(1)
      })
    }
    process.on('SIGINT', () => { stop('SIGINT') })
    process.on('SIGTERM', () => { stop('SIGTERM') })
    node.on('leave', () => { stop('leave requested through the API') })
  })
}
