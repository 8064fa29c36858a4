// Follows the log files of a testnet's nodes and prints them merged, one short
// human line per pino record, prefixed with the node's index.

import { open, stat } from 'node:fs/promises'

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'node', 'component'])

export function formatLogLine (prefix: string, line: string): string {
  let record: Record<string, unknown>
  try {
    record = JSON.parse(line) as Record<string, unknown>
  } catch {
    return `${prefix} ${line}`
  }
  const time = typeof record.time === 'string' ? record.time.slice(11, 23) : ''
  const level = LEVELS[record.level as number] ?? String(record.level)
  const fields = Object.entries(record)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')
  return `${prefix} ${time} ${level.padEnd(5)} ${String(record.msg ?? '')}${fields === '' ? '' : '  ' + fields}`
}

/** Polls the files and writes new complete lines; returns a function that stops following. */
export function followLogs (files: Array<{ prefix: string, path: string }>, write: (line: string) => void, intervalMs = 200): () => void {
  const offsets = new Map<string, number>()
  const partial = new Map<string, string>()
  let busy = false
  const poll = async (): Promise<void> => {
    if (busy) return
    busy = true
    try {
      for (const { prefix, path } of files) {
        const size = await stat(path).then((s) => s.size, () => 0)
        let offset = offsets.get(path) ?? 0
        if (size < offset) offset = 0 // the file was replaced
        if (size === offset) continue
        const handle = await open(path, 'r')
        try {
          const buffer = Buffer.alloc(size - offset)
          await handle.read(buffer, 0, buffer.length, offset)
          offsets.set(path, size)
          const text = (partial.get(path) ?? '') + buffer.toString('utf8')
          const lines = text.split('\n')
          partial.set(path, lines.pop() ?? '')
          for (const line of lines) if (line.trim() !== '') write(formatLogLine(prefix, line))
        } finally {
          await handle.close()
        }
      }
    } finally {
      busy = false
    }
  }
  const timer = setInterval(() => { void poll() }, intervalMs)
  void poll()
  return () => { clearInterval(timer); void poll() }
}
