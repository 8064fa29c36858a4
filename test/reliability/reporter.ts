// Prints the reliability table at the end of `npm run test:reliability`: one row
// per scenario (each test of test/reliability/), from the result row the test
// attached to its metadata (harness.ts), whether the test passed or not. A test
// that failed before it measured anything still gets its row, with dashes.

import type { Reporter, TestModule } from 'vitest/node'
import type { ResultRow } from './harness.ts'

/** The order of the table: that of README.md's "Reliability" table, whatever order the files ran in. */
const ORDER = ['sigkill', 'partition', 'isolated', 'network', 'rolling', 'kill-all', 'corrupt', 'hostile', 'forged-claims', 'stranger']

function rank (module: TestModule): number {
  const name = /\/test\/reliability\/([^/.]+)[^/]*$/.exec(module.moduleId)?.[1] ?? ''
  const at = ORDER.indexOf(name)
  return at < 0 ? ORDER.length : at
}

export default class ReliabilityTable implements Reporter {
  onTestRunEnd (modules: ReadonlyArray<TestModule>): void {
    const rows: Array<{ result: string, row: ResultRow | undefined, name: string }> = []
    for (const module of [...modules].sort((a, b) => rank(a) - rank(b))) {
      if (!module.moduleId.includes('/test/reliability/')) continue
      for (const test of module.children.allTests()) {
        const state = test.result().state
        rows.push({ name: test.name, result: state === 'passed' ? 'pass' : state === 'failed' ? 'FAIL' : state, row: test.meta().reliability })
      }
    }
    if (rows.length === 0) return
    process.stdout.write(`\n${table(rows)}\n`)
  }
}

function table (rows: ReadonlyArray<{ result: string, row: ResultRow | undefined, name: string }>): string {
  const header = ['scenario', 'result', 'time to recover', 'tasks lost', 'duplicate runs', 'false deaths']
  const body = rows.map(({ result, row, name }) => row === undefined
    ? [name, result, '—', '—', '—', '—']
    : [row.scenario, result, row.recoverMs === null ? 'never' : `${(row.recoverMs / 1000).toFixed(1)} s`, String(row.tasksLost), String(row.duplicateRuns), String(row.falseDeaths)])
  const widths = header.map((h, k) => Math.max(h.length, ...body.map((r) => r[k]!.length)))
  const line = (cells: string[]): string => `| ${cells.map((c, k) => c.padEnd(widths[k]!)).join(' | ')} |`
  const out = [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...body.map(line)]
  const notes = rows.flatMap(({ row }) => row === undefined || row.notes.length === 0 ? [] : [`- ${row.scenario}: ${row.notes.join('; ')}`])
  return [...out, ...(notes.length > 0 ? ['', ...notes] : [])].join('\n')
}
