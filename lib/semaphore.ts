// Semaphore and BoundedSemaphore: the count of free slots is a futex word in
// shared memory; a sleeper count lets release() skip the wake system call
// when nobody sleeps.
//
// A process that dies holding slots must not shrink the semaphore for good.
// Next to the count, a small table records per process how many slots it
// holds; a process that would sleep first takes back the slots of holders
// that have died. A release from a process that holds nothing (the signalling
// pattern: one process acquires, another releases) is booked against another
// holder, so the table never credits more slots than are really out.
//
// The count and the table change together, under a bookkeeping lock held for
// a few stores (its word holds the holder's pid). Each change is written as an
// intent first (the row, the count before, the row's count before and after):
// a process killed between its stores leaves the lock to the next one, which
// sees from the count whether the change was made and sets the row to match.
// Without that, a kill between the two stores (a few nanoseconds, found by the
// soak after a few thousand kills) lost a slot for good or counted it twice.
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
  SEM_INTENT_AFTER,
  SEM_INTENT_BEFORE,
  SEM_INTENT_ROW,
  SEM_INTENT_VALUE,
  SEM_LOCK,
  SEM_SLEEPERS,
  SEM_VALUE,
  SEM_WAKER_CPU,
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
import { cpuTag, spinWhileEqual } from './spin.js';

const NO_SLOT = -1;
/** Spins on a busy bookkeeping lock before looking whether its holder lives; then 1 ms sleeps between looks. */
const BOOKS_SPINS = 256;
const MAX_VALUE = 0x7fffffff;

/** Word indices of row `row` of the holder table: its process, and the slots it holds. */
const pidAt = (row: number): number => SEM_HOLDERS + row * SEM_HOLDER_WORDS + SEM_HOLDER_PID;
const countAt = (row: number): number => SEM_HOLDERS + row * SEM_HOLDER_WORDS + SEM_HOLDER_COUNT;

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
    if (Atomics.load(w, SEM_VALUE) === 0) return false;
    this.#lockBooks();
    const took = Atomics.load(w, SEM_VALUE) > 0;
    if (took) this.#move(this.#myRow(), 1);
    this.#unlockBooks();
    return took;
  }

  /**
   * Takes the bookkeeping lock, waiting for a live holder (its hold is a few
   * stores; longer only if it is stopped) and completing the change of a dead
   * one first.
   */
  #lockBooks(): void {
    const w = this.#words;
    for (let spins = 0; ; spins++) {
      const holder = Atomics.compareExchange(w, SEM_LOCK, 0, selfPid);
      if (holder === 0) return;
      if (spins < BOOKS_SPINS) continue;
      if (!native.pidAlive(holder)) {
        if (Atomics.compareExchange(w, SEM_LOCK, holder, selfPid) === holder) {
          this.#completeIntent();
          return;
        }
        continue;
      }
      native.futexWait(this.#buffer, this.#byteOffset + SEM_LOCK * 4, holder, 1);
    }
  }

  #unlockBooks(): void {
    Atomics.store(this.#words, SEM_LOCK, 0);
  }

  /** Under the lock taken from a dead holder: makes its row agree with the count, whichever of the two stores it made. */
  #completeIntent(): void {
    const w = this.#words;
    const rowPlusOne = Atomics.load(w, SEM_INTENT_ROW);
    if (rowPlusOne === 0) return;
    const made = Atomics.load(w, SEM_VALUE) !== Atomics.load(w, SEM_INTENT_VALUE);
    const count = countAt(rowPlusOne - 1);
    Atomics.store(w, count, Atomics.load(w, made ? SEM_INTENT_AFTER : SEM_INTENT_BEFORE));
    Atomics.store(w, SEM_INTENT_ROW, 0);
  }

  /**
   * Under the lock: moves `slots` from the count to row `row` (negative: back
   * to the count). A row of NO_SLOT is a process the table has no room for:
   * only the count changes.
   */
  #move(row: number, slots: number): void {
    const w = this.#words;
    const value = Atomics.load(w, SEM_VALUE);
    if (row === NO_SLOT) {
      Atomics.store(w, SEM_VALUE, value - slots);
      return;
    }
    const count = countAt(row);
    const before = w[count];
    // Plain stores, in program order (x86 keeps it; the seq-cst store of the
    // row number orders them elsewhere): each one seq-cst cost the ping-pong
    // half its speed. A process killed here has run its stores in this order.
    w[SEM_INTENT_VALUE] = value;
    w[SEM_INTENT_BEFORE] = before;
    w[SEM_INTENT_AFTER] = before + slots;
    Atomics.store(w, SEM_INTENT_ROW, row + 1);
    w[SEM_VALUE] = value - slots;
    w[count] = before + slots;
    Atomics.store(w, SEM_INTENT_ROW, 0);
  }

  #myRow(): number {
    if (this.#rowPid === selfPid) return this.#row;
    const w = this.#words;
    let row = NO_SLOT;
    for (let i = 0; i < SEM_HOLDER_SLOTS && row === NO_SLOT; i++) {
      if (Atomics.load(w, pidAt(i)) === selfPid) row = i;
    }
    for (let i = 0; i < SEM_HOLDER_SLOTS && row === NO_SLOT; i++) {
      if (Atomics.compareExchange(w, pidAt(i), 0, selfPid) === 0) row = i;
    }
    // A full table leaves this process's slots untracked: they are still
    // counted correctly, only not given back should it die holding them.
    this.#row = row;
    this.#rowPid = selfPid;
    return row;
  }

  /** Under the lock: gives `slots` back to the count from the rows that hold them, this process's first. */
  #unbook(slots: number): void {
    const w = this.#words;
    const held = (row: number): number => Atomics.load(w, countAt(row));
    let left = slots;
    const mine = this.#myRow();
    if (mine !== NO_SLOT && held(mine) > 0) {
      const n = Math.min(left, held(mine));
      this.#move(mine, -n);
      left -= n;
    }
    for (let i = 0; i < SEM_HOLDER_SLOTS && left > 0; i++) {
      const n = Math.min(left, held(i));
      if (n <= 0) continue;
      this.#move(i, -n);
      left -= n;
    }
    if (left > 0) this.#move(NO_SLOT, -left);
  }

  /**
   * Takes back the slots of holders that died, keeping one for this acquire
   * and handing the rest to the count. Handing them all to the count would
   * let another process take the dead holder's slot first, and that process
   * would not be told that its holder died. True if one was kept.
   */
  #reclaimDead(): boolean {
    const w = this.#words;
    // Looking costs a /proc read per row: done before the lock, whose holders
    // must never wait long.
    const dead: [number, number][] = [];
    for (let i = 0; i < SEM_HOLDER_SLOTS; i++) {
      const pid = Atomics.load(w, pidAt(i));
      if (pid > 0 && pid !== selfPid && !native.pidAlive(pid)) dead.push([i, pid]);
    }
    if (dead.length === 0) return false;
    let kept = false;
    let given = 0;
    this.#lockBooks();
    for (const [i, pid] of dead) {
      if (Atomics.load(w, pidAt(i)) !== pid) continue;
      const slots = Atomics.load(w, countAt(i));
      if (slots > 0 && !kept) {
        // The kept slot changes hands in one store, row and all: killed after
        // it, this process is the dead holder the next one finds. Passed
        // through the count instead, a slot this process was killed before
        // taking went to whoever came next, untold (found by the soak).
        Atomics.store(w, pidAt(i), selfPid);
        this.#adoptRow(i);
        kept = true;
        if (slots > 1) this.#move(i, 1 - slots);
      } else {
        if (slots > 0) this.#move(i, -slots);
        Atomics.store(w, pidAt(i), 0);
      }
      if (slots > 0) {
        const room = this.#max - Atomics.load(w, SEM_VALUE);
        if (room < 0) this.#move(NO_SLOT, -room);
        given += slots;
        warnOwnerDied(`${slots === 1 ? 'A slot' : `${slots} slots`} of a ${this.constructor.name}`, pid);
      }
    }
    this.#unlockBooks();
    if (given > (kept ? 1 : 0) && Atomics.load(w, SEM_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset, given);
    if (kept) this.#ownerDied = true;
    return kept;
  }

  /** Row `row`, just taken over from a dead holder, becomes this process's row unless its own holds slots. */
  #adoptRow(row: number): void {
    const w = this.#words;
    const own = this.#rowPid === selfPid ? this.#row : NO_SLOT;
    if (own !== NO_SLOT && own !== row) {
      if (Atomics.load(w, countAt(own)) > 0) return;
      Atomics.store(w, pidAt(own), 0);
    }
    this.#row = row;
    this.#rowPid = selfPid;
  }

  *#acquireSteps(deadline: number): Steps<boolean> {
    const w = this.#words;
    this.#ownerDied = false;
    if (deadline !== -Infinity) spinWhileEqual(w, SEM_VALUE, 0, Atomics.load(w, SEM_WAKER_CPU));
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

  /** Gives back `n` slots (any process may release). */
  release(n = 1): void {
    checkInteger(`${this.constructor.name}.release(n)`, n, 1, MAX_VALUE);
    const w = this.#words;
    this.#lockBooks();
    const value = Atomics.load(w, SEM_VALUE);
    if (value + n > this.#max) {
      this.#unlockBooks();
      throw new SyncError(
        'ERR_SEMAPHORE_OVERFLOW',
        this.#max === MAX_VALUE
          ? `Semaphore.release(${n}): the value would exceed ${MAX_VALUE}`
          : `BoundedSemaphore.release(): released too many times (value ${value}, bound ${this.#max})`,
      );
    }
    w[SEM_WAKER_CPU] = cpuTag();
    this.#unbook(n);
    this.#unlockBooks();
    if (Atomics.load(w, SEM_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset, n);
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

/** A Semaphore that may not be released above its initial value. */
export class BoundedSemaphore extends Semaphore {}
