// npm run test:asan: builds the addon with ASan + UBSan through cmake-js into
// build-asan/, then runs the native-heavy tests against it. Node itself is not
// instrumented, so the sanitizer runtimes are preloaded; leak checking is off
// because Node deliberately leaves memory to the OS at exit.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const run = (cmd, args, env = process.env) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run('npx', ['cmake-js', 'rebuild', '--out', 'build-asan', '--config', 'Debug', '--CDNODEMP_SANITIZE=ON']);
const runtime = (name) => execFileSync('g++', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
const nativeHeavy = [
  'test/native.test.ts',
  'test/process.test.ts',
  'test/inherit.test.ts',
  'test/lifecycle.test.ts',
  'test/waiter.test.ts',
  'test/lock.test.ts',
  'test/owner-death.test.ts',
  'test/shared-memory.test.ts',
  'test/queue.test.ts',
  'test/descriptors.test.ts',
  'test/pipe.test.ts',
  'test/listener.test.ts',
  'test/pool.test.ts',
  'test/wait.test.ts',
];
run('npx', ['vitest', 'run', ...nativeHeavy], {
  ...process.env,
  NODEMP_ADDON: `${root}build-asan/Debug/nodemp.node`,
  LD_PRELOAD: [runtime('libasan.so'), runtime('libubsan.so')].join(':'),
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
});
