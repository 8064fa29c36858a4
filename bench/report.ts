// What every benchmark prints: progress on stderr, text for people on stdout
// (unless --json), and a summary of figures, each next to its target with "met"
// or "missed" — never a failure on time.

export interface Figure { part: string, what: string, measured: string, target: string, verdict: string }

export class Report {
  readonly figures: Figure[] = []
  /** The raw results by part, for --json. */
  readonly results: Record<string, unknown> = {}
  json = false

  /** One line of the summary; `ok` undefined for a figure without a target. */
  figure (part: string, what: string, measured: string, target = '', ok?: boolean): void {
    this.figures.push({ part, what, measured, target, verdict: ok === undefined ? '' : ok ? 'met' : 'missed' })
  }

  print (text: string): void {
    if (!this.json) process.stdout.write(text)
  }

  /** The summary's rows, for table(). */
  rows (): string[][] {
    return this.figures.map((f) => [f.part, f.what, f.measured, f.target, f.verdict])
  }
}

export function log (message: string): void {
  process.stderr.write(`bench: ${message}\n`)
}

/** The flags every benchmark takes; spread into parseArgs' options beside its own. */
export const COMMON_OPTIONS = {
  only: { type: 'string' },
  quick: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
} as const

/** The parts `--only` names (default: all), and those it names that do not exist. */
export function selectParts<P extends string> (only: string | undefined, parts: readonly P[]): { selected: Set<P>, unknown: string[] } {
  const named = only === undefined ? [...parts] : only.split(',').map((s) => s.trim())
  return { selected: new Set(named.filter((p): p is P => (parts as readonly string[]).includes(p))), unknown: named.filter((p) => !(parts as readonly string[]).includes(p)) }
}
