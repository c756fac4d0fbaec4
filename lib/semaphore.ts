// Semaphore and BoundedSemaphore: the count of free slots is a futex word in
// shared memory, taken and given back with compare-and-swap from JS; a
// sleeper count lets release() skip the wake system call when nobody sleeps.
//
// A process that dies holding slots must not shrink the semaphore for good.
// Next to the count, a small table records per process how many slots it
// holds; a process that would sleep first gives back the slots of holders
// that have died. A release from a process that holds nothing (the signalling
// pattern: one process acquires, another releases) is booked against another
// holder, so the table never credits more slots than are really out.
import { native } from './native.js';
import { allocCells, type Cells } from './arena.js';
import {
  CELL_SIZE,
  SEM_CELLS,
  SEM_HOLDERS,
  SEM_HOLDER_COUNT,
  SEM_HOLDER_PID,
  SEM_HOLDER_SLOTS,
  SEM_HOLDER_WORDS,
  SEM_SLEEPERS,
  SEM_VALUE,
} from './layout.js';
import { selfPid } from './self.js';
import { SyncError, TimeoutError } from './errors.js';
import { checkInteger } from './args.js';
import { heldUntilReleased, warnOwnerDied, type Held } from './lock.js';
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
import { spinWhileEqual } from './spin.js';

const RECLAIMING = -1;
const NO_SLOT = -1;
const MAX_VALUE = 0x7fffffff;

// The cells a semaphore rebuilt in a starting child takes instead of new ones.
let adopting: Cells | null = null;

export class Semaphore {
  readonly #buffer: ArrayBuffer;
  readonly #byteOffset: number;
  readonly #words: Int32Array;
  readonly #max: number;
  // This process's row in the holder table, found on first use (per pid: a
  // forked child inherits the object but needs a row of its own).
  #row = NO_SLOT;
  #rowPid = 0;
  #ownerDied = false;

  constructor(value = 1) {
    checkInteger(`${new.target.name}(value)`, value, 0, MAX_VALUE);
    const cells = adopting ?? allocCells(SEM_CELLS);
    this.#buffer = cells.buffer;
    this.#byteOffset = cells.byteOffset;
    this.#words = new Int32Array(cells.buffer, cells.byteOffset, (SEM_CELLS * CELL_SIZE) / 4);
    if (adopting === null) this.#words[SEM_VALUE] = value;
    this.#max = new.target === BoundedSemaphore ? value : MAX_VALUE;
  }

  [toChild](child: ChildEncoder): State {
    return [child.memory(this.#buffer), this.#byteOffset, this.#max];
  }

  /** `max` is a BoundedSemaphore's bound (its initial value), and what a Semaphore's constructor ignores. */
  static [fromParent]<T>(this: new (value: number) => T, [memory, byteOffset, max]: State, parent: ChildDecoder): T {
    adopting = { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: SEM_CELLS * CELL_SIZE };
    try {
      return new this(max as number);
    } finally {
      adopting = null;
    }
  }

  /** The number of free slots now (Python's `get_value()`). */
  getValue(): number {
    return Atomics.load(this.#words, SEM_VALUE);
  }

  /** True when the latest acquire gave back slots of a process that had died; an acquire that finds a slot free sets it back to false. */
  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  /** A slot was free: nobody died for this acquire. */
  #takenAtOnce(): true {
    this.#ownerDied = false;
    return true;
  }

  #tryTake(): boolean {
    const w = this.#words;
    for (;;) {
      const value = Atomics.load(w, SEM_VALUE);
      if (value === 0) return false;
      if (Atomics.compareExchange(w, SEM_VALUE, value, value - 1) === value) {
        this.#book(1);
        return true;
      }
    }
  }

  #myRow(): number {
    if (this.#rowPid === selfPid) return this.#row;
    const w = this.#words;
    let row = NO_SLOT;
    for (let i = 0; i < SEM_HOLDER_SLOTS && row === NO_SLOT; i++) {
      if (Atomics.load(w, SEM_HOLDERS + i * SEM_HOLDER_WORDS + SEM_HOLDER_PID) === selfPid) row = i;
    }
    for (let i = 0; i < SEM_HOLDER_SLOTS && row === NO_SLOT; i++) {
      if (Atomics.compareExchange(w, SEM_HOLDERS + i * SEM_HOLDER_WORDS + SEM_HOLDER_PID, 0, selfPid) === 0) row = i;
    }
    // A full table leaves this process's slots untracked: they are still
    // counted correctly, only not given back should it die holding them.
    this.#row = row;
    this.#rowPid = selfPid;
    return row;
  }

  #book(slots: number): void {
    const row = this.#myRow();
    if (row !== NO_SLOT) Atomics.add(this.#words, SEM_HOLDERS + row * SEM_HOLDER_WORDS + SEM_HOLDER_COUNT, slots);
  }

  #unbook(slots: number): void {
    const w = this.#words;
    const mine = this.#myRow();
    for (let left = slots; left > 0; left--) {
      if (mine !== NO_SLOT && decrementIfPositive(w, SEM_HOLDERS + mine * SEM_HOLDER_WORDS + SEM_HOLDER_COUNT)) continue;
      for (let i = 0; i < SEM_HOLDER_SLOTS; i++) {
        if (decrementIfPositive(w, SEM_HOLDERS + i * SEM_HOLDER_WORDS + SEM_HOLDER_COUNT)) break;
      }
    }
  }

  /**
   * Takes back the slots of holders that died, keeping one for this acquire
   * (booked here) and handing the rest to the count. Handing them all to the
   * count would let another process take the dead holder's slot first, and
   * that process would not be told that its holder died. True if one was kept.
   */
  #reclaimDead(): boolean {
    const w = this.#words;
    let kept = false;
    for (let i = 0; i < SEM_HOLDER_SLOTS; i++) {
      const pidIndex = SEM_HOLDERS + i * SEM_HOLDER_WORDS + SEM_HOLDER_PID;
      const pid = Atomics.load(w, pidIndex);
      if (pid <= 0 || pid === selfPid || native.pidAlive(pid)) continue;
      if (Atomics.compareExchange(w, pidIndex, pid, RECLAIMING) !== pid) continue;
      const slots = Atomics.exchange(w, SEM_HOLDERS + i * SEM_HOLDER_WORDS + SEM_HOLDER_COUNT, 0);
      Atomics.store(w, pidIndex, 0);
      if (slots > 0) {
        let give = slots;
        if (!kept) {
          kept = true;
          give--;
          this.#book(1);
        }
        if (give > 0) this.#give(give);
        warnOwnerDied(`${slots === 1 ? 'A slot' : `${slots} slots`} of a ${this.constructor.name}`, pid);
      }
    }
    if (kept) this.#ownerDied = true;
    return kept;
  }

  #give(slots: number): void {
    const w = this.#words;
    for (;;) {
      const value = Atomics.load(w, SEM_VALUE);
      const next = Math.min(value + slots, this.#max);
      if (Atomics.compareExchange(w, SEM_VALUE, value, next) === value) break;
    }
    if (Atomics.load(w, SEM_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset, slots);
  }

  *#acquireSteps(deadline: number): Steps<boolean> {
    const w = this.#words;
    this.#ownerDied = false;
    if (deadline !== -Infinity) spinWhileEqual(w, SEM_VALUE, 0);
    for (;;) {
      if (this.#tryTake()) return true;
      if (deadline === -Infinity || timeLeft(deadline) === 0) return this.#reclaimDead();
      Atomics.add(w, SEM_SLEEPERS, 1);
      let result: number;
      try {
        result = yield sleep(this.#buffer, this.#byteOffset, 0, slice(deadline, OWNER_CHECK_MS));
      } finally {
        Atomics.sub(w, SEM_SLEEPERS, 1);
      }
      if (result === TIMED_OUT && this.#reclaimDead()) return true;
    }
  }

  /** Takes a slot: true once taken; false if `{ block: false }` or `{ timeout }` gave up. */
  acquireSync(options?: WaitOptions): boolean {
    if (this.#tryTake()) return this.#takenAtOnce();
    return runSync(this.#acquireSteps(deadlineOf(`${this.constructor.name}.acquireSync`, options)));
  }

  /** Like acquireSync, without blocking the event loop while it waits. */
  acquire(options?: WaitOptions): Promise<boolean> {
    if (this.#tryTake()) return Promise.resolve(this.#takenAtOnce());
    return runAsyncFrom(() => this.#acquireSteps(deadlineOf(`${this.constructor.name}.acquire`, options)));
  }

  /**
   * Gives back `n` slots (any process may release). The holder table is
   * updated before the count: a process killed between the two then leaves a
   * slot lost, never one counted twice (once free, once held by the dead).
   */
  release(n = 1): void {
    checkInteger(`${this.constructor.name}.release(n)`, n, 1, MAX_VALUE);
    const w = this.#words;
    this.#checkRoom(Atomics.load(w, SEM_VALUE), n);
    this.#unbook(n);
    for (;;) {
      const value = Atomics.load(w, SEM_VALUE);
      if (value + n > this.#max) {
        this.#book(n);
        this.#checkRoom(value, n);
      }
      if (Atomics.compareExchange(w, SEM_VALUE, value, value + n) === value) break;
    }
    if (Atomics.load(w, SEM_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset, n);
  }

  #checkRoom(value: number, n: number): void {
    if (value + n <= this.#max) return;
    throw new SyncError(
      'ERR_SEMAPHORE_OVERFLOW',
      this.#max === MAX_VALUE
        ? `Semaphore.release(${n}): the value would exceed ${MAX_VALUE}`
        : `BoundedSemaphore.release(): released too many times (value ${value}, bound ${this.#max})`,
    );
  }

  /** Takes a slot (blocking) and returns a handle that gives it back on dispose. */
  hold(options?: { timeout?: number }): Held {
    if (!this.acquireSync(options)) {
      throw new TimeoutError(`${this.constructor.name}.hold: no slot within ${options?.timeout} ms`);
    }
    return heldUntilReleased(() => this.release());
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `${this.constructor.name} { value: ${this.getValue()} }`;
  }
}

function decrementIfPositive(w: Int32Array, index: number): boolean {
  for (;;) {
    const n = Atomics.load(w, index);
    if (n <= 0) return false;
    if (Atomics.compareExchange(w, index, n, n - 1) === n) return true;
  }
}

/** A Semaphore that may not be released above its initial value. */
export class BoundedSemaphore extends Semaphore {}
