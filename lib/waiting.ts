// How the synchronization classes wait. Each blocking algorithm is written
// once, as a generator that yields the futex sleeps it needs; runSync()
// performs them on this thread, runAsync() on a native helper thread, so
// `xSync()` and `x()` share every line of logic and differ only in how they
// sleep.
import { native } from './native.js';
import { invalidType, invalidValue, outOfRange } from './args.js';
import { addStallPoller, guardLoop, LOOP_CAN_STALL } from './loop-stall.js';
import { selfPid } from './self.js';
import { noteWoken, setLoopWait } from './spin.js';

export const WOKEN = 0;
export const TIMED_OUT = 2;

/** One futex sleep: until the word at byteOffset is woken or no longer equals `expected`. */
export interface Sleep {
  buffer: ArrayBuffer;
  byteOffset: number;
  expected: number;
  timeout: number | undefined;
}

export type Steps<T> = Generator<Sleep, T, number>;

/**
 * How long a sleeper waits before it checks whether the holder it waits for is
 * still alive: the bound on how long a dead holder can stall anyone.
 */
export const OWNER_CHECK_MS = 100;

export function sleep(buffer: ArrayBuffer, byteOffset: number, expected: number, timeout: number | undefined): Sleep {
  return { buffer, byteOffset, expected, timeout };
}

/** Takes `steps` on this thread. A sleep that cannot be made is thrown into them, so that their finally blocks (a sleeper count) run. */
export function runSync<T>(steps: Steps<T>): T {
  let step = steps.next();
  while (!step.done) {
    const s = step.value;
    let result: number;
    try {
      result = native.futexWait(s.buffer, s.byteOffset, s.expected, s.timeout);
    } catch (error) {
      step = steps.throw(error);
      continue;
    }
    if (result === WOKEN) noteWoken();
    step = steps.next(result);
  }
  return step.value;
}

/**
 * An async sleep not yet answered, for the loop-stall guard: when it began,
 * how to end it, and where it is in the list. A list with each record's
 * place, not a Set of records with a closure each: with those, the guard's
 * records cost a Queue await get() ping-pong on one CPU 1.3 us a round trip
 * (two sleeps); with these, 0.4.
 */
class PendingSleep {
  index = -1;
  readonly began = performance.now();
  constructor(
    readonly sleep: Sleep,
    readonly end: (result: number) => void,
  ) {}

  get deadline(): number {
    return this.sleep.timeout === undefined ? Infinity : this.began + this.sleep.timeout;
  }
}

const pending: PendingSleep[] = [];

// A forked child inherits the list, but the waits and the work awaiting them are the parent's.
let pendingPid = selfPid;

function pendingHere(): PendingSleep[] {
  if (pendingPid !== selfPid) {
    pendingPid = selfPid;
    pending.length = 0;
  }
  return pending;
}

function watch(p: PendingSleep): void {
  const list = pendingHere();
  p.index = list.length;
  list.push(p);
}

/** Takes `p` off the list: false if it was not on it (the guard or the wait's callback ended it first). */
function unwatch(p: PendingSleep): boolean {
  const at = p.index;
  if (at < 0) return false;
  const last = pending.pop() as PendingSleep;
  if (last !== p) {
    pending[at] = last;
    last.index = at;
  }
  p.index = -1;
  return true;
}

/** Whether the sleep's word no longer holds the value it sleeps on: its wake-up is due, or came. */
function wordMoved(s: Sleep): boolean {
  return Atomics.load(new Int32Array(s.buffer, s.byteOffset, 1), 0) >>> 0 !== s.expected >>> 0;
}

// On a loop that has stopped polling (lib/loop-stall.ts) the kernel has ended
// these waits, but their completions are not read: a sleep whose word has
// moved on, or whose time is up, ends here. Ending one early is always safe:
// every caller looks again after a wake-up, as after a spurious one.
addStallPoller({
  active: () => pendingHere().length > 0,
  poll() {
    const now = performance.now();
    // A copy: ending a sleep may take its wait's next step at once, which may add a sleep.
    for (const p of [...pendingHere()]) {
      const result = wordMoved(p.sleep) ? WOKEN : now >= p.deadline ? TIMED_OUT : -1;
      if (result !== -1 && unwatch(p)) p.end(result);
    }
  },
});

/**
 * For diagnosis (a Pool's state): the async sleeps not yet answered, each as
 * [ms since it began, whether its word has moved, ms past its deadline].
 */
export function pendingSleeps(): Array<[number, boolean, number]> {
  const now = performance.now();
  return [...pendingHere()].map((p) => [
    Math.round(now - p.began),
    wordMoved(p.sleep),
    p.deadline === Infinity ? 0 : Math.max(0, Math.round(now - p.deadline)),
  ]);
}

/**
 * One futex sleep on a helper thread (the io_uring ring, or a thread of the
 * addon's): `then` gets WOKEN or TIMED_OUT from the event loop, `fail` the
 * error of a wait the kernel refused. Throws for a bad word, at once.
 */
export function sleepThen(s: Sleep, then: (result: number) => void, fail: (error: Error) => void): void {
  let p: PendingSleep | null = null;
  native.waitAsync(s.buffer, s.byteOffset, s.expected, s.timeout, (error, result) => {
    // Already ended by the loop-stall guard.
    if (p !== null && !unwatch(p)) return;
    if (error) fail(error);
    else {
      if (result === WOKEN) noteWoken();
      then(result as number);
    }
  });
  // Its callback comes from the loop, after this.
  if (LOOP_CAN_STALL) {
    p = new PendingSleep(s, then);
    watch(p);
    guardLoop();
  }
}

/** One futex sleep on a helper thread: resolves with WOKEN or TIMED_OUT. */
export function sleepAsync(s: Sleep): Promise<number> {
  return new Promise((resolve, reject) => sleepThen(s, resolve, reject));
}

/** The next of `steps`, taken as the event loop's wait (lib/spin.ts spinLimitFor). */
function loopStep<T>(steps: Steps<T>, result?: number): IteratorResult<Sleep, T> {
  const was = setLoopWait(true);
  try {
    return result === undefined ? steps.next() : steps.next(result);
  } finally {
    setLoopWait(was);
  }
}

/** loopStep() for a sleep that failed: its error is thrown into `steps`. */
function loopThrow<T>(steps: Steps<T>, error: unknown): IteratorResult<Sleep, T> {
  const was = setLoopWait(true);
  try {
    return steps.throw(error);
  } finally {
    setLoopWait(was);
  }
}

/** Takes `steps` on the event loop; a sleep that cannot be made is thrown into them, as in runSync(). */
export async function runAsync<T>(steps: Steps<T>): Promise<T> {
  let step = loopStep(steps);
  while (!step.done) {
    let result: number;
    try {
      result = await sleepAsync(step.value);
    } catch (error) {
      step = loopThrow(steps, error);
      continue;
    }
    step = loopStep(steps, result);
  }
  return step.value;
}

/** runAsync() of the steps `make` returns; what `make` throws (a bad argument) becomes the rejection. */
export function runAsyncFrom<T>(make: () => Steps<T>): Promise<T> {
  try {
    return runAsync(make());
  } catch (error) {
    return Promise.reject(error);
  }
}

export interface WaitOptions {
  /** false: do not wait at all (Python's `block=False`). */
  block?: boolean;
  /** Milliseconds; absent, undefined or Infinity: wait as long as it takes. */
  timeout?: number | null;
}

/** Validates a timeout in milliseconds; returns the deadline on performance.now()'s clock (Infinity: none). */
export function deadlineAfter(what: string, timeout: unknown): number {
  if (timeout === undefined || timeout === null) return Infinity;
  if (typeof timeout !== 'number') throw invalidType(`${what}: timeout`, 'a number of milliseconds', timeout);
  if (!(timeout >= 0)) throw outOfRange(`${what}: timeout`, 'a number of milliseconds >= 0', timeout);
  return performance.now() + timeout;
}

/** The deadline for a call taking `{ block, timeout }`; -Infinity: must not wait. */
export function deadlineOf(what: string, options: WaitOptions | undefined): number {
  if (options === undefined) return Infinity;
  if (typeof options !== 'object' || options === null) throw invalidType(`${what}: options`, 'an object like { block, timeout }', options);
  const { block = true, timeout } = options;
  if (typeof block !== 'boolean') throw invalidType(`${what}: options.block`, 'a boolean', block);
  if (!block) {
    if (timeout !== undefined && timeout !== null) throw invalidValue(`${what}: a timeout cannot be given with { block: false }`);
    return -Infinity;
  }
  return deadlineAfter(what, timeout);
}

/** Milliseconds left before `deadline` (undefined: no deadline), never negative. */
export function timeLeft(deadline: number): number | undefined {
  if (deadline === Infinity) return undefined;
  return Math.max(0, deadline - performance.now());
}

/** The next sleep's timeout: what is left, but no longer than `slice`. */
export function slice(deadline: number, sliceMs: number): number {
  const left = timeLeft(deadline);
  return left === undefined ? sliceMs : Math.min(left, sliceMs);
}
