import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // fork() needs V8 without background threads (see README, "Fork safety").
    pool: 'forks',
    execArgv: ['--single-threaded'],
    // Children inherit the worker's console; intercepted output would travel
    // over vitest's IPC channel, which a child must not write to.
    disableConsoleIntercept: true,
    // .ci/run counts results from the JSON report.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    testTimeout: 30000,
    hookTimeout: 30000,
  },
});
