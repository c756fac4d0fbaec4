// Condition: a sequence word that every notify bumps, so a waiter that
// released the lock but had not yet gone to sleep cannot miss a notification;
// and a count of notifications granted, so notify(n) lets exactly n waiters
// return true even when more of them wake (a waiter that wakes and finds no
// grant left goes back to sleep). Waiters and grants are counted under the
// condition's lock, which makes the two numbers consistent with each other.
import { native } from './native.js';
import { allocCells, type Cells } from './arena.js';
import { CELL_SIZE, COND_CELLS, COND_SEQ, COND_SLEEPERS, COND_TOKENS, COND_WAITERS } from './layout.js';
import { Lock, RLock, isMine, reacquireSteps, releaseAll, type Held } from './lock.js';
import { SyncError } from './errors.js';
import { invalidType } from './args.js';
import { TIMED_OUT, deadlineAfter, runAsyncFrom, runSync, sleep, timeLeft, type Steps, type WaitOptions } from './waiting.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';

// The cells a condition rebuilt in a starting child takes instead of new ones.
let adopting: Cells | null = null;

export class Condition {
  readonly #buffer: ArrayBuffer;
  readonly #byteOffset: number;
  readonly #words: Int32Array;
  readonly #lock: Lock | RLock;

  /** `lock` defaults to a new RLock, as in Python. */
  constructor(lock?: Lock | RLock | null) {
    if (lock !== undefined && lock !== null && !(lock instanceof Lock) && !(lock instanceof RLock)) {
      throw invalidType('Condition(lock)', 'a Lock, an RLock, or null for a new RLock', lock);
    }
    this.#lock = lock ?? new RLock();
    const cells = adopting ?? allocCells(COND_CELLS);
    this.#buffer = cells.buffer;
    this.#byteOffset = cells.byteOffset;
    this.#words = new Int32Array(cells.buffer, cells.byteOffset, CELL_SIZE / 4);
  }

  /** The lock crosses as itself: the child gets one object for it, however many conditions or values share it. */
  [toChild](child: ChildEncoder): State {
    return [child.memory(this.#buffer), this.#byteOffset, this.#lock];
  }

  static [fromParent]([memory, byteOffset, lock]: State, parent: ChildDecoder): Condition {
    adopting = { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: COND_CELLS * CELL_SIZE };
    try {
      return new Condition(lock as Lock | RLock);
    } finally {
      adopting = null;
    }
  }

  /** The lock this condition waits with. */
  get lock(): Lock | RLock {
    return this.#lock;
  }

  acquireSync(options?: WaitOptions): boolean {
    return this.#lock.acquireSync(options);
  }

  acquire(options?: WaitOptions): Promise<boolean> {
    return this.#lock.acquire(options);
  }

  release(): void {
    this.#lock.release();
  }

  hold(options?: { timeout?: number }): Held {
    return this.#lock.hold(options);
  }

  #mustHold(call: string): void {
    if (!this.#lock[isMine]()) {
      throw new SyncError('ERR_NOT_OWNER', `Condition.${call}: this process does not hold the condition's lock`);
    }
  }

  /** The generator behind wait() and waitSync(); Barrier drives it too. */
  *waitSteps(deadline: number): Steps<boolean> {
    const w = this.#words;
    const lock = this.#lock;
    Atomics.add(w, COND_WAITERS, 1);
    let seq = Atomics.load(w, COND_SEQ);
    let saved = lock[releaseAll]();
    for (;;) {
      let timedOut = timeLeft(deadline) === 0;
      if (!timedOut) {
        Atomics.add(w, COND_SLEEPERS, 1);
        try {
          timedOut = (yield sleep(this.#buffer, this.#byteOffset + COND_SEQ * 4, seq, timeLeft(deadline))) === TIMED_OUT;
        } finally {
          Atomics.sub(w, COND_SLEEPERS, 1);
        }
      }
      yield* lock[reacquireSteps](saved);
      if (Atomics.load(w, COND_TOKENS) > 0) {
        Atomics.sub(w, COND_TOKENS, 1);
        Atomics.sub(w, COND_WAITERS, 1);
        return true;
      }
      if (timedOut) {
        Atomics.sub(w, COND_WAITERS, 1);
        return false;
      }
      // Woken for a notification another waiter took: wait again.
      seq = Atomics.load(w, COND_SEQ);
      saved = lock[releaseAll]();
    }
  }

  /**
   * Releases the lock, sleeps until notified or `timeout` ms pass, and takes
   * the lock back before returning: true if notified, false on timeout.
   */
  waitSync(timeout?: number): boolean {
    this.#mustHold('waitSync()');
    return runSync(this.waitSteps(deadlineAfter('Condition.waitSync', timeout)));
  }

  /** Like waitSync, without blocking the event loop while it waits. */
  wait(timeout?: number): Promise<boolean> {
    return runAsyncFrom(() => {
      this.#mustHold('wait()');
      return this.waitSteps(deadlineAfter('Condition.wait', timeout));
    });
  }

  *waitForSteps<T>(predicate: () => T, deadline: number): Steps<T> {
    let result = predicate();
    while (!result) {
      if (timeLeft(deadline) === 0) break;
      yield* this.waitSteps(deadline);
      result = predicate();
    }
    return result;
  }

  /** Waits until `predicate()` is truthy or `timeout` ms pass; returns the predicate's last value. */
  waitForSync<T>(predicate: () => T, timeout?: number): T {
    this.#mustHold('waitForSync()');
    if (typeof predicate !== 'function') throw invalidType('Condition.waitForSync(predicate)', 'a function', predicate);
    return runSync(this.waitForSteps(predicate, deadlineAfter('Condition.waitForSync', timeout)));
  }

  waitFor<T>(predicate: () => T, timeout?: number): Promise<T> {
    return runAsyncFrom(() => {
      this.#mustHold('waitFor()');
      if (typeof predicate !== 'function') throw invalidType('Condition.waitFor(predicate)', 'a function', predicate);
      return this.waitForSteps(predicate, deadlineAfter('Condition.waitFor', timeout));
    });
  }

  /** Wakes up to `n` waiters (in any process). The caller must hold the lock. */
  notify(n = 1): void {
    this.#mustHold('notify()');
    if (typeof n !== 'number' || !(n >= 0)) throw invalidType('Condition.notify(n)', 'a number >= 0', n);
    const w = this.#words;
    const grant = Math.floor(Math.min(n, Atomics.load(w, COND_WAITERS) - Atomics.load(w, COND_TOKENS)));
    if (grant <= 0) return;
    Atomics.add(w, COND_TOKENS, grant);
    Atomics.add(w, COND_SEQ, 1);
    if (Atomics.load(w, COND_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset + COND_SEQ * 4, grant);
  }

  notifyAll(): void {
    this.notify(Infinity);
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Condition { waiters: ${Atomics.load(this.#words, COND_WAITERS)} }`;
  }
}

