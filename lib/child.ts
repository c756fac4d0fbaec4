// The life of a forked child, from the moment fork() returns 0 to _exit().
import { writeSync } from 'node:fs';
import { inspect } from 'node:util';
import { native } from './native.js';
import { dropInheritedWork, dropParentListeners, dropParentTicks, hasOwnListeners, isLate, workLeft, type Inherited } from './inherit.js';
import { refreshSelfPid, selfPid } from './self.js';
import { phases, stamp } from './start/trace.js';

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

const everyEvent = (): boolean => true;
const isEarly = (event: string): boolean => !isLate(event);

const exitCodeOf = (function exitCodeOf(): number {
  const code = Number(process.exitCode ?? 0);
  return Number.isInteger(code) ? code : 1;
});

const isThenable = (function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function';
});

/**
 * Turns this freshly forked process into the child that runs `run()`. Never
 * returns: the caller's frames are abandoned (not unwound: no catch or
 * finally of the parent's code runs here).
 *
 * With `inline` (the fork start method), the target runs at once, on the
 * stack of start(), where that is safe (native canRunInline()): outside a
 * microtask checkpoint, with no inherited socket to close first. A target
 * that leaves no work behind then ends the process right there, as Python's
 * forked child does, and never pays for the rest: abandoning the caller's
 * frames, repairing Node's async-id stack and starting from the event loop
 * cost more than the fork itself. One that does leave work (a promise, a
 * timer, a socket, a beforeExit listener) goes on in the event loop as any
 * other child, once the caller's frames are abandoned.
 */
export const becomeChild = (function becomeChild(run: () => unknown, label: string, inherited: Inherited, inline = false): never {
  stamp(phases.kTraceChildJs);
  refreshSelfPid();
  dropParentTicks(selfPid);
  const now = inline && native.canRunInline();
  let lateDropped = !now;
  dropParentListeners(inherited, now ? isEarly : everyEvent);
  if (!now) dropInheritedWork(inherited);
  stamp(phases.kTraceDropped);

  // Node's own exit path would join platform threads that were not copied,
  // and the parent may have replaced process.exit (test runners do): the
  // child gets Node's semantics, ending in _exit().
  const exitNow = (function exitNow(code?: number | string | null): never {
    if (code !== undefined && code !== null) process.exitCode = code;
    const state = process as unknown as { _exiting?: boolean };
    if (!state._exiting) {
      state._exiting = true;
      if (!lateDropped && hasOwnListeners(inherited, 'exit')) {
        dropParentListeners(inherited, isLate);
        lateDropped = true;
      }
      if (lateDropped) process.emit('exit', exitCodeOf());
    }
    return native.exit(exitCodeOf());
  });
  process.exit = exitNow;
  const fail = (function fail(error: unknown): never {
    report(label, inspect(error));
    return exitNow(1);
  });
  (process as unknown as { reallyExit(code?: number): never }).reallyExit = (code?: number) =>
    native.exit(typeof code === 'number' ? code : 0);
  if (process.platform === 'darwin') {
    // Pipes are asynchronous on macOS; _exit() must not drop queued output.
    for (const stream of [process.stdout, process.stderr]) {
      (stream as unknown as { _handle?: { setBlocking?(on: boolean): void } })._handle?.setBlocking?.(true);
    }
  }

  process.on(
    'uncaughtException',
    (function onUncaught(error: unknown) {
      if (typeof error === 'object' && error !== null && DETACH in error) return;
      // A handler the child installed itself decides what an error means.
      if (process.listenerCount('uncaughtException') > 1) return;
      fail(error);
    }),
  );

  let pending = false;
  const settle = (function settle(result: unknown): void {
    if (!isThenable(result)) {
      stamp(phases.kTraceTargetDone);
      return;
    }
    pending = true;
    result.then(() => {
      stamp(phases.kTraceTargetDone);
      pending = false;
    }, fail);
  });
  const start = (function start(): unknown {
    try {
      return run();
    } catch (error) {
      return fail(error);
    }
  });
  const loopEmpty = (function loopEmpty(): void {
    process.emit('beforeExit', exitCodeOf());
  });
  const exit = (function exit(): void {
    if (pending) {
      report(label, UNSETTLED);
      exitNow(UNSETTLED_EXIT_CODE);
    }
    exitNow();
  });

  if (!now) {
    native.detach(detachSentinel, () => settle(start()), loopEmpty, exit);
    for (;;) waitForTermination();
  }
  stamp(phases.kTraceLaunch);
  const reqsBefore = native.activeRequests();
  const workBefore = native.loopWork();
  const result = start();
  if (!isThenable(result)) {
    stamp(phases.kTraceTargetDone);
    // What the target queued for this turn: its process.nextTick callbacks
    // and microtasks (outside a checkpoint, as canRunInline() made sure).
    try {
      (process as unknown as { _tickCallback(): void })._tickCallback();
    } catch (error) {
      fail(error);
    }
    if (!workLeft(inherited, workBefore)) exit();
  }
  dropParentListeners(inherited, isLate);
  lateDropped = true;
  dropInheritedWork(inherited);
  native.detach(detachSentinel, isThenable(result) ? () => settle(result) : () => {}, loopEmpty, exit, reqsBefore);
  for (;;) waitForTermination();
});
