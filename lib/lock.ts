// Lock and RLock: one 32-bit word in shared memory holds the holder's pid, and
// a bit that says someone sleeps on it. Uncontended acquire and release are a
// single compare-and-swap from JS; only a contended acquire sleeps in the
// kernel, and only a release that sees the sleeper bit wakes anyone.
//
// Keeping the pid in the word itself (rather than next to it) means a holder
// can never die between taking the lock and recording who it is: a waiter that
// finds the holder dead takes the word over with one compare-and-swap.
import { native } from './native.js';
import { allocCells, type Cells } from './arena.js';
import { LOCK_CELLS, LOCK_DEPTH, LOCK_WORD, PID_MASK, WAITERS_BIT, CELL_SIZE } from './layout.js';
import { selfPid } from './self.js';
import { SyncError, TimeoutError } from './errors.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';
import {
  OWNER_CHECK_MS,
  TIMED_OUT,
  deadlineOf,
  runAsyncFrom,
  runSync,
  sleep,
  slice,
  timeLeft,
  type Steps,
  type WaitOptions,
} from './waiting.js';
import { SPIN_LIMIT, spinPays, spinWhileNotEqual } from './spin.js';

// Re-reads of a held lock before asking whether the machine allows more. More
// than other waits make: a lock is held for a few instructions, most often by
// a process that is running, and a futex sleep and wake costs a hundred times
// a read even when the cores are all taken.
const LOCK_FIRST_READS = SPIN_LIMIT > 0 ? 200 : 0;

/** The internal protocol Condition uses to wait with any lock. */
export const acquireSteps = Symbol('nodemp.acquireSteps');
export const isMine = Symbol('nodemp.isMine');
export const releaseAll = Symbol('nodemp.releaseAll');
export const reacquireSteps = Symbol('nodemp.reacquireSteps');

/** Tells the process that it took over something a dead process held. */
export function warnOwnerDied(what: string, pid: number): void {
  process.emitWarning(
    `${what} was held by process ${pid}, which died without releasing it; this process (${selfPid}) has taken it over. ` +
      'Data it guarded may be half-updated.',
    { type: 'OwnerDiedWarning', code: 'NODEMP_OWNER_DIED' },
  );
}

/** What `hold()` returns: releases the lock when disposed (`using held = lock.hold()`). */
export interface Held extends Disposable {
  release(): void;
}

/** A Held whose release runs `release` once, however often it is called. */
export function heldUntilReleased(release: () => void): Held {
  let released = false;
  const once = (): void => {
    if (released) return;
    released = true;
    release();
  };
  return { release: once, [Symbol.dispose]: once };
}

// The cells a lock rebuilt in a starting child takes instead of new ones.
let adopting: Cells | null = null;

abstract class LockBase {
  readonly #buffer: ArrayBuffer;
  readonly #byteOffset: number;
  protected readonly words: Int32Array;
  #ownerDied = false;

  constructor() {
    const cells = adopting ?? allocCells(LOCK_CELLS);
    this.#buffer = cells.buffer;
    this.#byteOffset = cells.byteOffset;
    this.words = new Int32Array(cells.buffer, cells.byteOffset, CELL_SIZE / 4);
  }

  /**
   * True when the latest acquire took the lock over from a holder that had
   * died (a warning of type OwnerDiedWarning is emitted too); an acquire that
   * finds the lock free sets it back to false.
   */
  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  /** The lock was taken without waiting: nobody died for this acquire. */
  protected takenAtOnce(): true {
    this.#ownerDied = false;
    return true;
  }

  /** Whether any process holds the lock now. */
  locked(): boolean {
    return Atomics.load(this.words, LOCK_WORD) !== 0;
  }

  protected abstract get kind(): string;
  protected abstract tookOver(): void;

  /** Blocks until the lock is taken, the deadline passes (false) or the options forbid waiting (false). */
  protected acquireSlowSync(options: WaitOptions | undefined): boolean {
    if (options === undefined && this.#spinAndTake()) return true;
    return runSync(this[acquireSteps](deadlineOf(`${this.kind}.acquireSync`, options)));
  }

  // Most contended acquires find the lock free within a few microseconds;
  // taking it here spares them the generator that a sleep needs.
  #spinAndTake(): boolean {
    const w = this.words;
    this.#ownerDied = false;
    let limit = LOCK_FIRST_READS;
    for (let i = 0; i < limit; i++) {
      if (Atomics.load(w, LOCK_WORD) === 0 && Atomics.compareExchange(w, LOCK_WORD, 0, selfPid) === 0) return true;
      if (i === LOCK_FIRST_READS - 1 && spinPays()) limit = SPIN_LIMIT;
    }
    return false;
  }

  protected acquireSlow(options: WaitOptions | undefined): Promise<boolean> {
    if (options === undefined && this.#spinAndTake()) return Promise.resolve(true);
    return runAsyncFrom(() => this[acquireSteps](deadlineOf(`${this.kind}.acquire`, options)));
  }

  *[acquireSteps](deadline: number): Steps<boolean> {
    const w = this.words;
    this.#ownerDied = false;
    if (deadline !== -Infinity) spinWhileNotEqual(w, LOCK_WORD, 0);
    let slept = false;
    for (;;) {
      let seen = Atomics.load(w, LOCK_WORD);
      if (seen === 0) {
        // A sleeper that was woken cannot know whether others still sleep,
        // so it keeps the bit set; one that never slept leaves it to them.
        if (Atomics.compareExchange(w, LOCK_WORD, 0, slept ? selfPid | WAITERS_BIT : selfPid) === 0) return true;
        continue;
      }
      if (deadline === -Infinity || timeLeft(deadline) === 0) return this.#takeOverIfDead(seen);
      if ((seen & WAITERS_BIT) === 0) {
        if (Atomics.compareExchange(w, LOCK_WORD, seen, seen | WAITERS_BIT) !== seen) continue;
        seen |= WAITERS_BIT;
      }
      const result = yield sleep(this.#buffer, this.#byteOffset, seen, slice(deadline, OWNER_CHECK_MS));
      slept = true;
      if (result === TIMED_OUT && this.#takeOverIfDead(seen)) return true;
    }
  }

  #takeOverIfDead(seen: number): boolean {
    const holder = seen & PID_MASK;
    if (holder === selfPid || native.pidAlive(holder)) return false;
    if (Atomics.compareExchange(this.words, LOCK_WORD, seen, selfPid | WAITERS_BIT) !== seen) return false;
    this.#ownerDied = true;
    this.tookOver();
    warnOwnerDied(`${this.kind} ${this.describeCell()}`, holder);
    return true;
  }

  protected describeCell(): string {
    return `at shared offset ${this.#byteOffset}`;
  }

  protected wake(): void {
    native.futexWake(this.#buffer, this.#byteOffset, 1);
  }

  // A plain read is enough to recognise our own pid: only this process
  // writes it, and only this process removes it.
  [isMine](): boolean {
    return (this.words[LOCK_WORD] & PID_MASK) === selfPid;
  }

  [toChild](child: ChildEncoder): State {
    return [child.memory(this.#buffer), this.#byteOffset];
  }

  static [fromParent]<T>(this: new () => T, [memory, byteOffset]: State, parent: ChildDecoder): T {
    adopting = { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: LOCK_CELLS * CELL_SIZE };
    try {
      return new this();
    } finally {
      adopting = null;
    }
  }

  abstract acquireSync(options?: WaitOptions): boolean;
  abstract release(): void;
  abstract [releaseAll](): number;
  abstract [reacquireSteps](saved: number): Steps<void>;

  /**
   * Acquires (blocking, like acquireSync) and returns a handle that releases
   * on dispose: `using held = lock.hold();`. A timeout that passes throws
   * TimeoutError, since there is nothing to release.
   */
  hold(options?: { timeout?: number }): Held {
    if (!this.acquireSync(options)) {
      throw new TimeoutError(`${this.kind}.hold: not acquired within ${options?.timeout} ms`);
    }
    return heldUntilReleased(() => this.release());
  }
}

/**
 * A non-recursive lock shared by every process forked after its creation.
 * As in Python, any process may release it, and releasing it unlocked throws.
 */
export class Lock extends LockBase {
  protected get kind(): string {
    return 'Lock';
  }

  protected tookOver(): void {}

  /** true once acquired; false if `{ block: false }` or `{ timeout }` gave up. */
  acquireSync(options?: WaitOptions): boolean {
    if (Atomics.compareExchange(this.words, LOCK_WORD, 0, selfPid) === 0) return this.takenAtOnce();
    return this.acquireSlowSync(options);
  }

  /** Like acquireSync, without blocking the event loop while it waits. */
  acquire(options?: WaitOptions): Promise<boolean> {
    if (Atomics.compareExchange(this.words, LOCK_WORD, 0, selfPid) === 0) return Promise.resolve(this.takenAtOnce());
    return this.acquireSlow(options);
  }

  release(): void {
    // One exchange serves every case: any process may release a Lock, so
    // whatever the word held, it is now free (and it was free already if 0).
    const seen = Atomics.exchange(this.words, LOCK_WORD, 0);
    if (seen === selfPid) return;
    if (seen === 0) throw new SyncError('ERR_LOCK_NOT_HELD', 'Lock.release(): the lock is not locked');
    if ((seen & WAITERS_BIT) !== 0) this.wake();
  }

  [releaseAll](): number {
    this.release();
    return 1;
  }

  *[reacquireSteps](): Steps<void> {
    yield* this[acquireSteps](Infinity);
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const seen = Atomics.load(this.words, LOCK_WORD);
    return `Lock { ${seen === 0 ? 'unlocked' : `locked by ${seen & PID_MASK}`} }`;
  }
}

/**
 * A recursive lock: the holding process may acquire it again, and must
 * release it as many times. Only the holder may release it.
 */
export class RLock extends LockBase {
  protected get kind(): string {
    return 'RLock';
  }

  protected tookOver(): void {
    this.words[LOCK_DEPTH] = 1;
  }

  acquireSync(options?: WaitOptions): boolean {
    const w = this.words;
    if (Atomics.compareExchange(w, LOCK_WORD, 0, selfPid) === 0) {
      w[LOCK_DEPTH] = 1;
      return this.takenAtOnce();
    }
    if (this[isMine]()) {
      w[LOCK_DEPTH]++;
      return this.takenAtOnce();
    }
    if (!this.acquireSlowSync(options)) return false;
    w[LOCK_DEPTH] = 1;
    return true;
  }

  acquire(options?: WaitOptions): Promise<boolean> {
    const w = this.words;
    if (Atomics.compareExchange(w, LOCK_WORD, 0, selfPid) === 0) {
      w[LOCK_DEPTH] = 1;
      return Promise.resolve(this.takenAtOnce());
    }
    if (this[isMine]()) {
      w[LOCK_DEPTH]++;
      return Promise.resolve(this.takenAtOnce());
    }
    return this.acquireSlow(options).then((taken) => {
      if (taken) w[LOCK_DEPTH] = 1;
      return taken;
    });
  }

  release(): void {
    const w = this.words;
    const seen = w[LOCK_WORD];
    if ((seen & PID_MASK) !== selfPid) {
      throw new SyncError(
        'ERR_NOT_OWNER',
        seen === 0
          ? 'RLock.release(): the lock is not locked'
          : `RLock.release(): the lock is held by process ${seen & PID_MASK}, not by this process (${selfPid})`,
      );
    }
    if (--w[LOCK_DEPTH] > 0) return;
    if ((Atomics.exchange(w, LOCK_WORD, 0) & WAITERS_BIT) !== 0) this.wake();
  }

  /** How many times the holder has acquired it (0 when unlocked or held elsewhere). */
  get depth(): number {
    return this[isMine]() ? this.words[LOCK_DEPTH] : 0;
  }

  [releaseAll](): number {
    const depth = this.words[LOCK_DEPTH];
    if (this[isMine]()) this.words[LOCK_DEPTH] = 1;
    this.release();
    return depth;
  }

  *[reacquireSteps](saved: number): Steps<void> {
    yield* this[acquireSteps](Infinity);
    this.words[LOCK_DEPTH] = saved;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const seen = Atomics.load(this.words, LOCK_WORD);
    return `RLock { ${seen === 0 ? 'unlocked' : `held by ${seen & PID_MASK}, depth ${this.words[LOCK_DEPTH]}`} }`;
  }
}
