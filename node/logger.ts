// Structured logs: pino JSON on stderr, or pino-pretty for people. Loggers are
// scoped with child() by component and node id.

import { pino, type Logger } from 'pino'
import type PinoPretty from 'pino-pretty'

export interface LoggerInit {
  level?: string
  /** pino-pretty's factory, when people read the log (loaded only then: it costs memory). */
  pretty?: typeof PinoPretty
  /** Defaults to stderr: stdout is for what the user asked to see. */
  destination?: number
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function createLogger (init: LoggerInit = {}): Logger {
  const level = init.level ?? 'info'
  if (!LEVELS.includes(level)) throw new Error(`--log-level must be one of ${LEVELS.join(', ')}, got '${level}'`)
  const fd = init.destination ?? 2
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }
  if (init.pretty !== undefined) {
    return pino(options, init.pretty({ destination: fd, sync: true, colorize: process.stderr.isTTY, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }))
  }
  return pino(options, pino.destination({ fd, sync: false }))
}
