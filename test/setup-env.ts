// A vitest setup file (vitest.config.ts, vitest.reliability.config.ts): tests never
// read or write the developer's CLI config (cli/context.ts), and never go where the
// developer's shell points the CLI. Every test file gets an empty config of its own
// (MURMUR_CONFIG, in a temp dir removed after the file); child processes (the CLI,
// the nodes) inherit it. A MURMUR_CONFIG from the shell is replaced too: it names
// the developer's own config, which `testnet up` in a test would change.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'

for (const name of ['MURMUR_API', 'MURMUR_USER_KEY', 'MURMUR_NAMESPACE', 'MURMUR_CONTEXT']) delete process.env[name]

const dir = mkdtempSync(join(tmpdir(), `murmur-config-${process.env.VITEST_POOL_ID ?? process.pid}-`))
const file = join(dir, 'config.json')
process.env.MURMUR_CONFIG = file

afterAll(() => {
  if (process.env.MURMUR_CONFIG === file) delete process.env.MURMUR_CONFIG
  rmSync(dir, { recursive: true, force: true })
})
