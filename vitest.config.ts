import { defineConfig } from 'vitest/config';

// Two projects: the suite as it has always run, in single-threaded workers
// (the fork start method needs them; see README, "Fork safety"), and the
// start-method tests again in plain workers, as `node app.js` runs, where
// the default start method is forkserver and fork is refused.
const shared = {
  // Children inherit the worker's console; intercepted output would travel
  // over vitest's IPC channel, which a child must not write to.
  disableConsoleIntercept: true,
  testTimeout: 30000,
  hookTimeout: 30000,
  pool: 'forks' as const,
  // The library and the start-method fixtures are loaded by Node itself, not
  // by vitest's transform: a spawned child imports the same files by URL and
  // finds its targets by export name.
  server: { deps: { external: [/\/dist\//, /\/test\/fixtures\//] } },
};

export default defineConfig({
  test: {
    // .ci/run counts results from the JSON report.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    projects: [
      {
        test: {
          ...shared,
          name: 'single-threaded',
          include: ['test/**/*.test.ts'],
          exclude: ['test/plain/**'],
          execArgv: ['--single-threaded'],
        },
      },
      {
        test: {
          ...shared,
          name: 'plain',
          include: ['test/start-methods.test.ts', 'test/plain/**/*.test.ts'],
          execArgv: [],
        },
      },
    ],
  },
});
