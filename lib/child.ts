// The life of a forked child, from the moment fork() returns 0 to _exit().
import { writeSync } from 'node:fs';
import { inspect } from 'node:util';
import { native } from './native.js';
import { dropInheritedWork } from './inherit.js';
import { refreshSelfPid } from './self.js';

// Identifies the one error native detach() raises on purpose (see fork.cc).
const DETACH = Symbol('nodemp.detach');
const detachSentinel = Object.freeze({ [DETACH]: true });

// Node's code for a program that ended with its top-level await unsettled.
export const UNSETTLED_EXIT_CODE = 13;
export const UNSETTLED = 'the promise returned by run() never settled, and nothing is left that could settle it';

/** A child's failure on its stderr under `Process <name>:`, as Python prints it (a spawned child's too). */
export function report(label: string, text: string): void {
  try {
    writeSync(2, `Process ${label}:\n${text}\n`);
  } catch {
    // stderr closed: the exit code still tells the parent.
  }
}

// Calling a function makes V8 check for interrupts, which raises the
// termination detach() requested; the loop around it is never left.
function waitForTermination(): void {}

function exitCodeOf(): number {
  const code = Number(process.exitCode ?? 0);
  return Number.isInteger(code) ? code : 1;
}

/**
 * Turns this freshly forked process into the child that runs `run()`. Never
 * returns: the caller's frames are abandoned (not unwound: no catch or
 * finally of the parent's code runs here).
 */
export function becomeChild(run: () => unknown, label: string): never {
  refreshSelfPid();
  Object.defineProperty(process, 'pid', { value: native.getpid(), writable: false, enumerable: true, configurable: true });
  Object.defineProperty(process, 'ppid', { get: () => native.getppid(), enumerable: true, configurable: true });
  dropInheritedWork();

  // Node's own exit path would join platform threads that were not copied,
  // and the parent may have replaced process.exit (test runners do): the
  // child gets Node's semantics, ending in _exit().
  const exitNow = (code?: number | string | null): never => {
    if (code !== undefined && code !== null) process.exitCode = code;
    const state = process as unknown as { _exiting?: boolean };
    if (!state._exiting) {
      state._exiting = true;
      process.emit('exit', exitCodeOf());
    }
    return native.exit(exitCodeOf());
  };
  process.exit = exitNow;
  const fail = (error: unknown): never => {
    report(label, inspect(error));
    return exitNow(1);
  };
  (process as unknown as { reallyExit(code?: number): never }).reallyExit = (code?: number) =>
    native.exit(typeof code === 'number' ? code : 0);
  if (process.platform === 'darwin') {
    // Pipes are asynchronous on macOS; _exit() must not drop queued output.
    for (const stream of [process.stdout, process.stderr]) {
      (stream as unknown as { _handle?: { setBlocking?(on: boolean): void } })._handle?.setBlocking?.(true);
    }
  }

  process.on('uncaughtException', (error: unknown) => {
    if (typeof error === 'object' && error !== null && DETACH in error) return;
    // A handler the child installed itself decides what an error means.
    if (process.listenerCount('uncaughtException') > 1) return;
    fail(error);
  });

  let pending = false;
  const launch = (): void => {
    let result: unknown;
    try {
      result = run();
    } catch (error) {
      fail(error);
    }
    if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
      pending = true;
      (result as PromiseLike<unknown>).then(
        () => {
          pending = false;
        },
        fail,
      );
    }
  };
  const loopEmpty = (): void => {
    process.emit('beforeExit', exitCodeOf());
  };
  const exit = (): void => {
    if (pending) {
      report(label, UNSETTLED);
      exitNow(UNSETTLED_EXIT_CODE);
    }
    exitNow();
  };

  native.detach(detachSentinel, launch, loopEmpty, exit);
  for (;;) waitForTermination();
}
