// Barrier: Python's threading.Barrier algorithm (fill, drain, reset, broken)
// with its state and count in shared memory and a shared Condition, so the
// parties may be any processes forked after the barrier was made.
import { allocCells, type Cells } from './arena.js';
import { BARRIER_CELLS, BARRIER_COUNT, BARRIER_STATE, CELL_SIZE } from './layout.js';
import { Condition } from './condition.js';
import { Lock, acquireSteps } from './lock.js';
import { BrokenBarrierError } from './errors.js';
import { checkInteger, invalidType } from './args.js';
import { deadlineAfter, runAsyncFrom, runSync, type Steps } from './waiting.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';

const FILLING = 0;
const DRAINING = 1;
const RESETTING = -1;
const BROKEN = -2;

export interface BarrierOptions {
  /** Run by one of the parties (the last to arrive) each time the barrier opens. */
  action?: (() => void) | null;
  /** Default timeout in ms for wait(); a wait that times out breaks the barrier. */
  timeout?: number | null;
}

// What a barrier rebuilt in a starting child takes instead of new ones.
let adopting: { cells: Cells; cond: Condition } | null = null;

export class Barrier {
  readonly #words: Int32Array;
  readonly #cond: Condition;
  readonly #parties: number;
  readonly #action: (() => void) | undefined;
  readonly #timeout: number | undefined;

  constructor(parties: number, options: BarrierOptions = {}) {
    checkInteger('Barrier(parties)', parties, 1, 0x7fffffff);
    const { action, timeout } = options;
    if (action !== undefined && action !== null && typeof action !== 'function') throw invalidType('Barrier options.action', 'a function or null', action);
    deadlineAfter('Barrier options', timeout);
    this.#parties = parties;
    this.#action = action ?? undefined;
    this.#timeout = timeout ?? undefined;
    this.#cond = adopting?.cond ?? new Condition(new Lock());
    const cells = adopting?.cells ?? allocCells(BARRIER_CELLS);
    this.#words = new Int32Array(cells.buffer, cells.byteOffset, CELL_SIZE / 4);
  }

  [toChild](child: ChildEncoder): State {
    const action = this.#action === undefined ? null : child.reference(this.#action, 'Barrier action');
    return [child.memory(this.#words.buffer as ArrayBuffer), this.#words.byteOffset, this.#parties, action, this.#timeout ?? null, this.#cond];
  }

  static [fromParent]([memory, byteOffset, parties, action, timeout, cond]: State, parent: ChildDecoder): Barrier {
    const cells = { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: BARRIER_CELLS * CELL_SIZE };
    adopting = { cells, cond: cond as Condition };
    try {
      return new Barrier(parties as number, {
        action: action === null ? null : (parent.reference(action as number) as () => void),
        timeout: timeout as number | null,
      });
    } finally {
      adopting = null;
    }
  }

  get parties(): number {
    return this.#parties;
  }

  /** How many parties are waiting now. */
  get nWaiting(): number {
    return Atomics.load(this.#words, BARRIER_STATE) === FILLING ? Atomics.load(this.#words, BARRIER_COUNT) : 0;
  }

  get broken(): boolean {
    return Atomics.load(this.#words, BARRIER_STATE) === BROKEN;
  }

  #state(): number {
    return Atomics.load(this.#words, BARRIER_STATE);
  }

  #setState(state: number): void {
    Atomics.store(this.#words, BARRIER_STATE, state);
  }

  #break(): void {
    this.#setState(BROKEN);
    this.#cond.notifyAll();
  }

  *#waitSteps(deadline: number): Steps<number> {
    const cond = this.#cond;
    const w = this.#words;
    yield* cond.lock[acquireSteps](Infinity);
    try {
      // A previous pass is still draining, or a reset is under way.
      while (this.#state() === DRAINING || this.#state() === RESETTING) yield* cond.waitSteps(Infinity);
      if (this.#state() < 0) throw new BrokenBarrierError();
      const index = Atomics.add(w, BARRIER_COUNT, 1);
      try {
        if (index + 1 === this.#parties) {
          try {
            this.#action?.();
          } catch (error) {
            this.#break();
            throw error;
          }
          this.#setState(DRAINING);
          cond.notifyAll();
        } else {
          const opened = yield* cond.waitForSteps(() => this.#state() !== FILLING, deadline);
          if (!opened) {
            this.#break();
            throw new BrokenBarrierError('the barrier timed out and is now broken');
          }
          if (this.#state() < 0) throw new BrokenBarrierError();
        }
        return index;
      } finally {
        // The last party out lets the next pass (or a pending reset) begin.
        if (Atomics.sub(w, BARRIER_COUNT, 1) === 1 && (this.#state() === DRAINING || this.#state() === RESETTING)) {
          this.#setState(FILLING);
          cond.notifyAll();
        }
      }
    } finally {
      cond.release();
    }
  }

  #deadline(what: string, timeout: number | undefined): number {
    return deadlineAfter(what, timeout === undefined ? this.#timeout : timeout);
  }

  /**
   * Waits until all parties have called wait(); returns this party's arrival
   * index (0 for the first). Throws BrokenBarrierError if the barrier is or
   * becomes broken (abort(), a timeout, or a throwing action).
   */
  waitSync(timeout?: number): number {
    return runSync(this.#waitSteps(this.#deadline('Barrier.waitSync', timeout)));
  }

  wait(timeout?: number): Promise<number> {
    return runAsyncFrom(() => this.#waitSteps(this.#deadline('Barrier.wait', timeout)));
  }

  /** Returns the barrier to its empty state; parties waiting now get BrokenBarrierError. */
  reset(): void {
    const cond = this.#cond;
    cond.acquireSync();
    try {
      if (Atomics.load(this.#words, BARRIER_COUNT) > 0) {
        if (this.#state() === FILLING || this.#state() === BROKEN) this.#setState(RESETTING);
      } else {
        this.#setState(FILLING);
      }
      cond.notifyAll();
    } finally {
      cond.release();
    }
  }

  /** Breaks the barrier: current and future waiters get BrokenBarrierError until reset(). */
  abort(): void {
    const cond = this.#cond;
    cond.acquireSync();
    try {
      this.#break();
    } finally {
      cond.release();
    }
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Barrier { parties: ${this.#parties}, waiting: ${this.nWaiting}${this.broken ? ', broken' : ''} }`;
  }
}
