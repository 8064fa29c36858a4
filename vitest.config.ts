import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Only in `npm run test:reliability` (vitest.reliability.config.ts): the long reliability scenarios.
    exclude: ['**/node_modules/**', 'test/reliability/**/*.long.test.ts'],
    // End-to-end tests start real node processes on a 2-core machine: run test
    // files one after another so that they do not starve each other's timers.
    fileParallelism: false,
    // Every test file: a CLI config of its own, none of the developer's MURMUR_* settings (test/setup-env.ts).
    setupFiles: ['test/setup-env.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
