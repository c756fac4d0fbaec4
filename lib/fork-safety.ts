import { isMainThread, type Worker } from 'node:worker_threads';
import inspector from 'node:inspector';

// Workers live on threads that a fork() does not copy. process 'worker' is the
// one public signal that a Worker was created; workers made before nodemp was
// first imported are not seen.
const liveWorkers = new Set<Worker>();
process.on('worker', (worker: Worker) => {
  liveWorkers.add(worker);
  worker.once('exit', () => liveWorkers.delete(worker));
});

const HOW_TO_RUN = [
  'Run the program with V8 in single-threaded mode, one of:',
  '  npx nodemp app.js [args]                      (the launcher adds the flag)',
  '  node --single-threaded app.js [args]',
  '  #!/usr/bin/env -S node --single-threaded      (as the script\'s first line)',
  'Under vitest, give the forks pool execArgv: [\'--single-threaded\'].',
  'The flag cannot go in NODE_OPTIONS, and v8.setFlagsFromString() after start-up is too late.',
  "Or use the 'forkserver' or 'spawn' start method, which work in any Node process (forkserver is the default in one",
  "like this): setStartMethod('forkserver') or getContext('forkserver'), with targets exported by a module.",
].join('\n');

export function isSingleThreaded(argv: readonly string[] = process.execArgv): boolean {
  let on = false;
  for (const arg of argv) {
    if (arg === '--single-threaded' || arg === '--single_threaded') on = true;
    else if (arg === '--no-single-threaded' || arg === '--no-single_threaded') on = false;
  }
  return on;
}

/** Why this process cannot fork safely right now, or null if it can. */
export function forkSafetyProblem(): string | null {
  if (!isMainThread) {
    return 'Process.start() was called in a worker thread. Only the main thread of a process can fork; start processes from the main thread.';
  }
  if (!isSingleThreaded()) {
    return (
      'This process runs V8 with background threads, and a forked child would deadlock on its first garbage collection ' +
      '(fork copies only the calling thread).\n' + HOW_TO_RUN
    );
  }
  if (liveWorkers.size > 0) {
    return (
      `${liveWorkers.size} worker_threads Worker(s) are running. A forked child would inherit their half-copied state. ` +
      'Terminate them before start(), or start the processes first and the workers afterwards.'
    );
  }
  if (inspector.url() !== undefined) {
    return (
      'An inspector is listening (--inspect); its thread does not survive a fork and the child would hang on a debugger message. ' +
      'Run without --inspect, or call inspector.close() before start().'
    );
  }
  return null;
}
