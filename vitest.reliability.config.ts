import { defineConfig } from 'vitest/config'

// `npm run test:reliability`: every scenario of test/reliability/, the long ones
// (20 s partitions, 30 s of message loss, a rolling restart) included, then the
// table of results (test/reliability/reporter.ts), printed whether or not they pass.
export default defineConfig({
  test: {
    include: ['test/reliability/**/*.test.ts'],
    // Each scenario runs a testnet of real node processes on a 2-core machine: one file at a time.
    fileParallelism: false,
    // Every test file: a CLI config of its own, none of the developer's MURMUR_* settings (test/setup-env.ts).
    setupFiles: ['test/setup-env.ts'],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/reliability/reporter.ts'],
  },
})
