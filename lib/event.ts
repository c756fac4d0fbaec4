// Event: one word in shared memory holds the flag in its low bit and a
// generation above it, bumped by every set(). A waiter that wakes to find the
// flag cleared again still knows it was set while it slept: the generation
// moved. Nothing here can be held, so nothing needs recovering if a process dies.
import { native } from './native.js';
import { allocCells, type Cells } from './arena.js';
import { CELL_SIZE, EVENT_CELLS, EVENT_SLEEPERS, EVENT_WAKER_CPU, EVENT_WORD } from './layout.js';
import { deadlineAfter, runAsyncFrom, runSync, sleep, timeLeft, type Steps } from './waiting.js';
import { cpuTag, spinWhileEqual } from './spin.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';

// The cells an event rebuilt in a starting child takes instead of new ones.
let adopting: Cells | null = null;

export class Event {
  readonly #buffer: ArrayBuffer;
  readonly #byteOffset: number;
  readonly #words: Int32Array;

  constructor() {
    const cells = adopting ?? allocCells(EVENT_CELLS);
    this.#buffer = cells.buffer;
    this.#byteOffset = cells.byteOffset;
    this.#words = new Int32Array(cells.buffer, cells.byteOffset, CELL_SIZE / 4);
  }

  [toChild](child: ChildEncoder): State {
    return [child.memory(this.#buffer), this.#byteOffset];
  }

  static [fromParent]([memory, byteOffset]: State, parent: ChildDecoder): Event {
    adopting = { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: EVENT_CELLS * CELL_SIZE };
    try {
      return new Event();
    } finally {
      adopting = null;
    }
  }

  isSet(): boolean {
    return (Atomics.load(this.#words, EVENT_WORD) & 1) === 1;
  }

  /** Sets the flag and wakes every waiter, in every process. */
  set(): void {
    const w = this.#words;
    for (;;) {
      const seen = Atomics.load(w, EVENT_WORD);
      if ((seen & 1) === 1) return;
      // A plain store, ordered before the flag by the compare-and-swap.
      w[EVENT_WAKER_CPU] = cpuTag();
      if (Atomics.compareExchange(w, EVENT_WORD, seen, (seen + 2) | 1) === seen) break;
    }
    if (Atomics.load(w, EVENT_SLEEPERS) > 0) native.futexWake(this.#buffer, this.#byteOffset, 0x7fffffff);
  }

  clear(): void {
    const w = this.#words;
    for (;;) {
      const seen = Atomics.load(w, EVENT_WORD);
      if ((seen & 1) === 0 || Atomics.compareExchange(w, EVENT_WORD, seen, seen & ~1) === seen) return;
    }
  }

  *#waitSteps(deadline: number): Steps<boolean> {
    const w = this.#words;
    const start = Atomics.load(w, EVENT_WORD);
    if ((start & 1) === 1) return true;
    if (deadline !== Infinity && timeLeft(deadline) === 0) return false;
    if (spinWhileEqual(w, EVENT_WORD, start, Atomics.load(w, EVENT_WAKER_CPU)) !== start) return true;
    Atomics.add(w, EVENT_SLEEPERS, 1);
    try {
      for (;;) {
        if (Atomics.load(w, EVENT_WORD) !== start) return true;
        const left = timeLeft(deadline);
        if (left === 0) return false;
        yield sleep(this.#buffer, this.#byteOffset, start, left);
      }
    } finally {
      Atomics.sub(w, EVENT_SLEEPERS, 1);
    }
  }

  /** Blocks until the flag is set (true) or `timeout` ms pass (false). */
  waitSync(timeout?: number): boolean {
    if (this.isSet()) return true;
    return runSync(this.#waitSteps(deadlineAfter('Event.waitSync', timeout)));
  }

  /** Resolves true once the flag is set, false if `timeout` ms pass first; the event loop keeps running. */
  wait(timeout?: number): Promise<boolean> {
    if (this.isSet()) return Promise.resolve(true);
    return runAsyncFrom(() => this.#waitSteps(deadlineAfter('Event.wait', timeout)));
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Event { ${this.isSet() ? 'set' : 'unset'} }`;
  }
}
