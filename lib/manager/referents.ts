// The objects a SyncManager's server holds for its clients (Python's
// managers hold threading's and queue's objects). The server is one
// event-loop thread, so these are plain JavaScript: a wait is a pending
// reply, parked here until its turn comes, its deadline passes, or its
// client's connection closes (then it is dropped unanswered, and what that
// client held is given back; see Caller). Methods a client may call are the
// ones each class lists as exposed; a blocking one returns a Promise.
import { isDeepStrictEqual } from 'node:util';
import { BrokenBarrierError, KeyError, QueueEmpty, QueueFull, SyncError } from '../errors.js';
import { checkInteger, invalidType, outOfRange } from '../args.js';
import { deadlineAfter, deadlineOf, timeLeft, type WaitOptions } from '../waiting.js';
import { coerceElement } from '../value.js';
import { runningServer } from './server.js';

/** A method the server calls on an object it lets go of (its last reference dropped, or the server shut down). */
export const FREED = Symbol('nodemp.manager.freed');

/** One client connection, as the objects it uses see it. */
export interface Caller {
  readonly pid: number;
  /** Runs once when the connection closes, whatever closed it. */
  readonly onClose: Set<() => void>;
  closed: boolean;
}

/** The client whose request is being served (set by the server around each call). */
export let caller: Caller;

export function setCaller(c: Caller): void {
  caller = c;
}

interface Waiter<T> {
  who: Caller;
  // What the waiter brings (a put()'s item), taken when its turn comes.
  payload: unknown;
  resolve(value: T): void;
  timer: ReturnType<typeof setTimeout> | null;
  forget: () => void;
}

// What a closed client's wait becomes: nobody is left to answer.
const FOREVER: Promise<never> = new Promise(() => {});

/** Replies parked in arrival order. */
class WaitQueue<T> {
  readonly #waiters: Waiter<T>[] = [];

  get length(): number {
    return this.#waiters.length;
  }

  /** Parks the current caller until wake() gives it a value, or until `deadline`, when it gets onTimeout(). */
  wait(deadline: number, onTimeout: () => T, payload?: unknown): Promise<T> {
    const who = caller;
    if (who.closed) return FOREVER;
    return new Promise<T>((resolve) => {
      const waiter: Waiter<T> = { who, payload, resolve, timer: null, forget: () => this.#remove(waiter) };
      if (deadline !== Infinity) {
        waiter.timer = setTimeout(
          () => {
            this.#remove(waiter);
            resolve(onTimeout());
          },
          timeLeft(deadline),
        );
      }
      who.onClose.add(waiter.forget);
      this.#waiters.push(waiter);
    });
  }

  /** The next waiter, out of the queue (its reply is the caller's to give), or null. */
  take(): Waiter<T> | null {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return null;
    if (waiter.timer !== null) clearTimeout(waiter.timer);
    waiter.who.onClose.delete(waiter.forget);
    return waiter;
  }

  wakeAll(value: T): void {
    for (let w = this.take(); w !== null; w = this.take()) w.resolve(value);
  }

  #remove(waiter: Waiter<T>): void {
    const at = this.#waiters.indexOf(waiter);
    if (at >= 0) this.#waiters.splice(at, 1);
    if (waiter.timer !== null) clearTimeout(waiter.timer);
    waiter.who.onClose.delete(waiter.forget);
  }
}

function optionsDeadline(what: string, options: unknown): number {
  return deadlineOf(what, (options ?? undefined) as WaitOptions | undefined);
}

// ---- containers ----

function entriesOf(what: string, init: unknown): Iterable<[unknown, unknown]> {
  if (init === undefined || init === null) return [];
  if (init instanceof Map) return init;
  if (Array.isArray(init)) {
    for (const pair of init) if (!Array.isArray(pair) || pair.length !== 2) throw invalidType(what, 'an array of [key, value] pairs', pair);
    return init as [unknown, unknown][];
  }
  if (typeof init === 'object') return Object.entries(init);
  throw invalidType(what, 'a Map, an object, or an array of [key, value] pairs', init);
}

/** Python's dict: keys are compared as a Map compares them (1 and '1' are two keys). */
export class ManagedDict {
  static readonly exposed = ['get', 'set', 'has', 'delete', 'getItem', 'pop', 'popitem', 'setdefault', 'update', 'keys', 'values', 'items', 'len', 'clear', 'copy'];
  readonly map: Map<unknown, unknown>;
  constructor(init?: unknown) {
    this.map = new Map(entriesOf('dict(init)', init));
  }
  get(key: unknown, fallback: unknown = null): unknown {
    return this.map.has(key) ? this.map.get(key) : fallback;
  }
  set(key: unknown, value: unknown): void {
    this.map.set(key, value);
  }
  has(key: unknown): boolean {
    return this.map.has(key);
  }
  delete(key: unknown): boolean {
    return this.map.delete(key);
  }
  getItem(key: unknown): unknown {
    if (!this.map.has(key)) throw missingKey(key);
    return this.map.get(key);
  }
  pop(key: unknown, ...fallback: unknown[]): unknown {
    if (this.map.has(key)) {
      const value = this.map.get(key);
      this.map.delete(key);
      return value;
    }
    if (fallback.length > 0) return fallback[0];
    throw missingKey(key);
  }
  popitem(): [unknown, unknown] {
    let last: [unknown, unknown] | undefined;
    for (const entry of this.map) last = entry;
    if (last === undefined) throw new KeyError('popitem(): the dictionary is empty', undefined);
    this.map.delete(last[0]);
    return last;
  }
  setdefault(key: unknown, fallback: unknown = null): unknown {
    if (!this.map.has(key)) this.map.set(key, fallback);
    return this.map.get(key);
  }
  update(other: unknown): void {
    for (const [k, v] of entriesOf('update(other)', other)) this.map.set(k, v);
  }
  keys(): unknown[] {
    return [...this.map.keys()];
  }
  values(): unknown[] {
    return [...this.map.values()];
  }
  items(): [unknown, unknown][] {
    return [...this.map.entries()];
  }
  len(): number {
    return this.map.size;
  }
  clear(): void {
    this.map.clear();
  }
  copy(): Map<unknown, unknown> {
    return new Map(this.map);
  }
}

function missingKey(key: unknown): KeyError {
  return new KeyError(`no such key: ${typeof key === 'string' ? JSON.stringify(key) : String(key)}`, key);
}

function indexIn(what: string, i: unknown, length: number, forInsert = false): number {
  checkInteger(what, i, -Number.MAX_SAFE_INTEGER);
  let at = i as number;
  if (at < 0) at += length;
  if (forInsert) return Math.min(Math.max(at, 0), length);
  if (at < 0 || at >= length) throw outOfRange(what, `an index from ${-length} to ${length - 1}`, i);
  return at;
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || (typeof a === 'object' && a !== null && isDeepStrictEqual(a, b));
}

/** Python's list; equality (index, count, remove) is deep equality. */
export class ManagedList {
  static readonly exposed = ['get', 'set', 'delete', 'append', 'extend', 'insert', 'pop', 'remove', 'reverse', 'sort', 'index', 'count', 'includes', 'slice', 'len', 'copy'];
  readonly items: unknown[];
  constructor(init?: unknown) {
    if (init !== undefined && init !== null && (typeof init !== 'object' || !(Symbol.iterator in init))) {
      throw invalidType('list(init)', 'an array or another iterable', init);
    }
    this.items = init === undefined || init === null ? [] : [...(init as Iterable<unknown>)];
  }
  get(i: unknown): unknown {
    return this.items[indexIn('get(index)', i, this.items.length)];
  }
  set(i: unknown, value: unknown): void {
    this.items[indexIn('set(index)', i, this.items.length)] = value;
  }
  delete(i: unknown): void {
    this.items.splice(indexIn('delete(index)', i, this.items.length), 1);
  }
  append(value: unknown): void {
    this.items.push(value);
  }
  extend(values: unknown): void {
    if (typeof values !== 'object' || values === null || !(Symbol.iterator in values)) throw invalidType('extend(values)', 'an array or another iterable', values);
    for (const v of values as Iterable<unknown>) this.items.push(v);
  }
  insert(i: unknown, value: unknown): void {
    this.items.splice(indexIn('insert(index)', i, this.items.length, true), 0, value);
  }
  pop(i: unknown = -1): unknown {
    if (this.items.length === 0) throw new RangeError('pop(): the list is empty');
    return this.items.splice(indexIn('pop(index)', i, this.items.length), 1)[0];
  }
  remove(value: unknown): void {
    const at = this.items.findIndex((v) => sameValue(v, value));
    if (at < 0) throw new RangeError('remove(value): the value is not in the list');
    this.items.splice(at, 1);
  }
  reverse(): void {
    this.items.reverse();
  }
  sort(options: unknown = {}): void {
    if (typeof options !== 'object' || options === null) throw invalidType('sort(options)', 'an object like { reverse }', options);
    const { reverse = false } = options as { reverse?: unknown };
    if (typeof reverse !== 'boolean') throw invalidType('sort: options.reverse', 'a boolean', reverse);
    // Python's order for what it can compare: numbers by value, strings by code point.
    this.items.sort((a, b) => {
      if (typeof a !== typeof b || (typeof a !== 'number' && typeof a !== 'string' && typeof a !== 'bigint')) {
        throw invalidType('sort()', 'a list of numbers only or of strings only', a);
      }
      return (a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0;
    });
    if (reverse) this.items.reverse();
  }
  index(value: unknown): number {
    const at = this.items.findIndex((v) => sameValue(v, value));
    if (at < 0) throw new RangeError('index(value): the value is not in the list');
    return at;
  }
  count(value: unknown): number {
    return this.items.filter((v) => sameValue(v, value)).length;
  }
  includes(value: unknown): boolean {
    return this.items.some((v) => sameValue(v, value));
  }
  slice(start?: unknown, end?: unknown): unknown[] {
    if (start !== undefined) checkInteger('slice(start)', start, -Number.MAX_SAFE_INTEGER);
    if (end !== undefined) checkInteger('slice(end)', end, -Number.MAX_SAFE_INTEGER);
    return this.items.slice(start as number | undefined, end as number | undefined);
  }
  len(): number {
    return this.items.length;
  }
  copy(): unknown[] {
    return [...this.items];
  }
}

function checkName(what: string, name: unknown): string {
  if (typeof name !== 'string') throw invalidType(what, 'an attribute name (a string)', name);
  return name;
}

/** Python's Namespace: named attributes. */
export class ManagedNamespace {
  static readonly exposed = ['get', 'set', 'delete', 'has', 'toObject'];
  readonly attributes = new Map<string, unknown>();
  constructor(init?: unknown) {
    if (init === undefined || init === null) return;
    if (typeof init !== 'object' || Array.isArray(init)) throw invalidType('Namespace(init)', 'an object of attributes', init);
    for (const [k, v] of Object.entries(init)) this.attributes.set(k, v);
  }
  get(name: unknown): unknown {
    const key = checkName('get(name)', name);
    if (!this.attributes.has(key)) throw new KeyError(`the namespace has no attribute ${JSON.stringify(key)}`, key);
    return this.attributes.get(key);
  }
  set(name: unknown, value: unknown): void {
    this.attributes.set(checkName('set(name)', name), value);
  }
  delete(name: unknown): void {
    const key = checkName('delete(name)', name);
    if (!this.attributes.delete(key)) throw new KeyError(`the namespace has no attribute ${JSON.stringify(key)}`, key);
  }
  has(name: unknown): boolean {
    return this.attributes.has(checkName('has(name)', name));
  }
  toObject(): Record<string, unknown> {
    return Object.fromEntries(this.attributes);
  }
}

/** Python's manager Value: one value of a typecode. */
export class ManagedValue {
  static readonly exposed = ['get', 'set'];
  readonly typecode: string;
  #value: unknown;
  constructor(typecode: unknown, value: unknown = 0) {
    this.#value = coerceElement('Value(value)', typecode, value);
    this.typecode = typecode as string;
  }
  get(): unknown {
    return this.#value;
  }
  set(value: unknown): void {
    this.#value = coerceElement('set(value)', this.typecode, value);
  }
}

/** Python's manager Array: a fixed number of values of a typecode. */
export class ManagedArray {
  static readonly exposed = ['get', 'set', 'len', 'copy'];
  readonly typecode: string;
  readonly #items: Array<number | bigint>;
  constructor(typecode: unknown, init: unknown) {
    let values: Iterable<unknown>;
    if (typeof init === 'number') values = new Array(checkInteger('Array(size)', init, 0, 1 << 24)).fill(0);
    else if (typeof init === 'object' && init !== null && Symbol.iterator in init) values = init as Iterable<unknown>;
    else throw invalidType('Array(sizeOrInit)', 'a length or an iterable of values', init);
    this.#items = [...values].map((v) => coerceElement('Array(init)', typecode, v));
    this.typecode = typecode as string;
  }
  get(i: unknown): number | bigint {
    return this.#items[indexIn('get(index)', i, this.#items.length)] as number | bigint;
  }
  set(i: unknown, value: unknown): void {
    this.#items[indexIn('set(index)', i, this.#items.length)] = coerceElement('set(value)', this.typecode, value);
  }
  len(): number {
    return this.#items.length;
  }
  copy(): Array<number | bigint> {
    return [...this.#items];
  }
}

// ---- synchronization ----

/**
 * What an acquire replies: whether it got the lock, and the pid of a client
 * that died holding it (0: none), which the new holder is told of.
 */
export type Acquired = [acquired: boolean, diedPid: number];

/** Python's manager Lock (threading.Lock: anyone may release it), released for a client whose connection closes while it holds it. */
export class ManagedLock {
  static readonly exposed = ['acquire', 'release', 'locked'];
  protected owner: Caller | null = null;
  protected died = 0;
  protected readonly queue = new WaitQueue<Acquired>();
  readonly #onOwnerClose = (): void => this.ownerLost();

  acquire(options?: unknown): Acquired | Promise<Acquired> {
    const deadline = optionsDeadline('acquire', options);
    if (this.owner === null) return this.grant(caller);
    if (deadline === -Infinity) return [false, 0];
    return this.queue.wait(deadline, () => [false, 0]);
  }

  release(): void {
    if (this.owner === null) throw new SyncError('ERR_LOCK_NOT_HELD', 'release(): the lock is not held');
    this.handOn();
  }

  locked(): boolean {
    return this.owner !== null;
  }

  protected grant(who: Caller): Acquired {
    this.owner = who;
    who.onClose.add(this.#onOwnerClose);
    const died = this.died;
    this.died = 0;
    return [true, died];
  }

  /** The lock passes to the next waiter, or is free. */
  protected handOn(): void {
    (this.owner as Caller).onClose.delete(this.#onOwnerClose);
    this.owner = null;
    for (let next = this.queue.take(); next !== null; next = this.queue.take()) {
      if (next.who.closed) continue;
      next.resolve(this.grant(next.who));
      return;
    }
  }

  protected ownerLost(): void {
    this.died = (this.owner as Caller).pid;
    this.handOn();
  }

  /** For a Condition: whether `who` may wait and notify. */
  ownedBy(who: Caller): boolean {
    return this.owner === who;
  }

  /** For a Condition's wait(): lets go entirely, returning what restore() needs. */
  saveAndRelease(): number {
    this.handOn();
    return 1;
  }

  /** For a Condition's wait(): takes the lock back for the current caller. */
  restore(_saved: number, deadline: number): Acquired | Promise<Acquired> {
    if (this.owner === null && !caller.closed) return this.grant(caller);
    return this.queue.wait(deadline, () => [false, 0]);
  }
}

/** Python's manager RLock: re-entrant, released only by its owner. */
export class ManagedRLock extends ManagedLock {
  static override readonly exposed = ['acquire', 'release', 'locked', 'depth'];
  #depth = 0;

  override acquire(options?: unknown): Acquired | Promise<Acquired> {
    if (this.owner === caller) {
      optionsDeadline('acquire', options);
      this.#depth += 1;
      return [true, 0];
    }
    return super.acquire(options);
  }

  override release(): void {
    if (this.owner !== caller) {
      throw new SyncError('ERR_NOT_OWNER', this.owner === null ? 'release(): the RLock is not held' : 'release(): the RLock is held by another process');
    }
    this.#depth -= 1;
    if (this.#depth === 0) this.handOn();
  }

  depth(): number {
    return this.owner === caller ? this.#depth : 0;
  }

  protected override grant(who: Caller): Acquired {
    this.#depth = 1;
    return super.grant(who);
  }

  protected override ownerLost(): void {
    this.#depth = 0;
    super.ownerLost();
  }

  override saveAndRelease(): number {
    const depth = this.#depth;
    this.#depth = 0;
    this.handOn();
    return depth;
  }

  override restore(saved: number, deadline: number): Acquired | Promise<Acquired> {
    const restoreDepth = (got: Acquired): Acquired => {
      if (got[0]) this.#depth = saved;
      return got;
    };
    const got = super.restore(saved, deadline);
    return got instanceof Promise ? got.then(restoreDepth) : restoreDepth(got);
  }
}

/**
 * Python's manager Semaphore. Slots a client took and did not give back are
 * given back when its connection closes, and the next taker is told.
 */
export class ManagedSemaphore {
  static readonly exposed = ['acquire', 'release', 'getValue'];
  #value: number;
  #died = 0;
  readonly #queue = new WaitQueue<Acquired>();
  // Slots each client holds: taken minus given back, never below zero.
  readonly #held = new Map<Caller, number>();
  protected readonly initial: number;

  constructor(value: unknown = 1) {
    this.#value = checkInteger('Semaphore(value)', value, 0, 0x7fffffff);
    this.initial = this.#value;
  }

  acquire(options?: unknown): Acquired | Promise<Acquired> {
    const deadline = optionsDeadline('acquire', options);
    if (this.#value > 0) {
      this.#value -= 1;
      return this.#take(caller);
    }
    if (deadline === -Infinity) return [false, 0];
    return this.#queue.wait(deadline, () => [false, 0]);
  }

  release(n: unknown = 1): void {
    const count = checkInteger('release(n)', n, 1, 0x7fffffff);
    this.checkRelease(this.#value, count);
    const mine = this.#held.get(caller) ?? 0;
    if (mine > 0) this.#setHeld(caller, Math.max(0, mine - count));
    this.#give(count);
  }

  getValue(): number {
    return this.#value;
  }

  protected checkRelease(_value: number, _count: number): void {}

  #give(count: number): void {
    let left = count;
    while (left > 0) {
      const next = this.#queue.take();
      if (next === null) break;
      if (next.who.closed) continue;
      next.resolve(this.#take(next.who));
      left -= 1;
    }
    this.#value += left;
  }

  #take(who: Caller): Acquired {
    this.#setHeld(who, (this.#held.get(who) ?? 0) + 1);
    const died = this.#died;
    this.#died = 0;
    return [true, died];
  }

  #setHeld(who: Caller, n: number): void {
    if (n === 0) {
      this.#held.delete(who);
      who.onClose.delete(this.#closers.get(who) as () => void);
      this.#closers.delete(who);
      return;
    }
    if (!this.#held.has(who)) {
      const closer = (): void => {
        const lost = this.#held.get(who) ?? 0;
        this.#held.delete(who);
        this.#closers.delete(who);
        this.#died = who.pid;
        this.#give(lost);
      };
      this.#closers.set(who, closer);
      who.onClose.add(closer);
    }
    this.#held.set(who, n);
  }

  readonly #closers = new Map<Caller, () => void>();
}

export class ManagedBoundedSemaphore extends ManagedSemaphore {
  protected override checkRelease(value: number, count: number): void {
    if (value + count > this.initial) {
      throw new SyncError('ERR_SEMAPHORE_OVERFLOW', `release(): the semaphore would exceed its initial value ${this.initial}`);
    }
  }
}

export class ManagedEvent {
  static readonly exposed = ['isSet', 'set', 'clear', 'wait'];
  #flag = false;
  readonly #queue = new WaitQueue<boolean>();
  isSet(): boolean {
    return this.#flag;
  }
  set(): void {
    this.#flag = true;
    this.#queue.wakeAll(true);
  }
  clear(): void {
    this.#flag = false;
  }
  wait(timeout?: unknown): boolean | Promise<boolean> {
    const deadline = deadlineAfter('wait', timeout);
    if (this.#flag) return true;
    return this.#queue.wait(deadline, () => false);
  }
}

/** Python's manager Condition, on a manager Lock or RLock (a new RLock by default). */
export class ManagedCondition {
  static readonly exposed = ['acquire', 'release', 'wait', 'notify', 'notifyAll'];
  readonly lock: ManagedLock;
  readonly #queue = new WaitQueue<boolean>();
  // The proxy the lock came as: it holds the lock's reference while this condition lives.
  readonly lockProxy: unknown;

  constructor(lock?: unknown) {
    const server = runningServer();
    this.lockProxy = lock;
    const object = typeof lock === 'object' && lock !== null && 'token' in lock && server !== null ? server.objectOf((lock as { token: { id: number } }).token.id) : lock;
    if (object !== undefined && object !== null && !(object instanceof ManagedLock)) {
      throw invalidType('Condition(lock)', "a Lock or RLock proxy of this manager's", lock);
    }
    this.lock = object ?? new ManagedRLock();
  }

  acquire(options?: unknown): Acquired | Promise<Acquired> {
    return this.lock.acquire(options);
  }

  release(): void {
    this.lock.release();
  }

  /** Resolves [notified, diedPid] once notified (or timed out) and the lock is this caller's again. */
  async wait(timeout?: unknown): Promise<[boolean, number]> {
    const deadline = deadlineAfter('wait', timeout);
    this.#checkOwner('wait');
    const who = caller;
    const saved = this.lock.saveAndRelease();
    const notified = await this.#queue.wait(deadline, () => false);
    if (who.closed) return FOREVER;
    setCaller(who);
    const [, died] = await this.lock.restore(saved, Infinity);
    return [notified === true, died];
  }

  notify(n: unknown = 1): void {
    const count = checkInteger('notify(n)', n, 0);
    this.#checkOwner('notify');
    for (let i = 0; i < count; i++) {
      const next = this.#queue.take();
      if (next === null) return;
      next.resolve(true);
    }
  }

  notifyAll(): void {
    this.#checkOwner('notifyAll');
    this.#queue.wakeAll(true);
  }

  #checkOwner(what: string): void {
    if (!this.lock.ownedBy(caller)) throw new SyncError('ERR_NOT_OWNER', `${what}(): the condition's lock is not held by this process`);
  }
}

export class ManagedBarrier {
  static readonly exposed = ['wait', 'reset', 'abort', 'parties', 'nWaiting', 'broken'];
  readonly #parties: number;
  readonly #timeout: number | null;
  #queue = new WaitQueue<number | BrokenBarrierError>();
  #broken = false;

  constructor(parties: unknown, options: unknown = {}) {
    this.#parties = checkInteger('Barrier(parties)', parties, 1, 0x7fffffff);
    if (typeof options !== 'object' || options === null) throw invalidType('Barrier(parties, options)', 'an object like { timeout }', options);
    const { timeout = null, action } = options as { timeout?: unknown; action?: unknown };
    if (action !== undefined && action !== null) throw invalidType('Barrier: options.action', 'nothing: a manager Barrier runs no action (run it in the process that wait() returns 0 in)', action);
    if (timeout !== null) deadlineAfter('Barrier: options.timeout', timeout);
    this.#timeout = timeout as number | null;
  }

  async wait(timeout?: unknown): Promise<number> {
    const deadline = deadlineAfter('wait', timeout ?? this.#timeout);
    if (this.#broken) throw new BrokenBarrierError();
    const index = this.#queue.length;
    if (index === this.#parties - 1) {
      // The last to arrive: the others go, numbered by arrival, this one gets the last index.
      let i = 0;
      for (let w = this.#queue.take(); w !== null; w = this.#queue.take()) w.resolve(i++);
      return index;
    }
    const who = caller;
    const lost = (): void => this.#break();
    who.onClose.add(lost);
    const got = await this.#queue.wait(deadline, () => {
      this.#break();
      return new BrokenBarrierError();
    });
    who.onClose.delete(lost);
    if (got instanceof BrokenBarrierError) throw got;
    return got;
  }

  reset(): void {
    this.#queue.wakeAll(new BrokenBarrierError());
    this.#broken = false;
  }

  abort(): void {
    this.#break();
  }

  parties(): number {
    return this.#parties;
  }

  nWaiting(): number {
    return this.#queue.length;
  }

  broken(): boolean {
    return this.#broken;
  }

  #break(): void {
    this.#broken = true;
    this.#queue.wakeAll(new BrokenBarrierError());
  }
}

// ---- queues ----

export class ManagedQueue {
  static readonly exposed = ['put', 'get', 'putNowait', 'getNowait', 'qsize', 'empty', 'full'];
  readonly #items: unknown[] = [];
  readonly #maxsize: number;
  readonly #getters = new WaitQueue<unknown>();
  readonly #putters = new WaitQueue<boolean>();

  constructor(maxsize: unknown = 0) {
    this.#maxsize = checkInteger('Queue(maxsize)', maxsize, 0);
  }

  put(item: unknown, options?: unknown): void | Promise<void> {
    const deadline = optionsDeadline('put', options);
    if (!this.full()) return this.#store(item);
    if (deadline === -Infinity) throw new QueueFull();
    // The item goes in when a get() makes room, in that get()'s turn, so
    // that no put() handled meanwhile takes the room first.
    return this.#putters.wait(deadline, () => false, item).then((stored) => {
      if (!stored) throw new QueueFull();
    });
  }

  get(options?: unknown): unknown {
    const deadline = optionsDeadline('get', options);
    if (this.#items.length > 0) return this.#takeItem();
    if (deadline === -Infinity) throw new QueueEmpty();
    return this.#getters.wait(deadline, () => NONE).then((item) => {
      if (item === NONE) throw new QueueEmpty();
      return item;
    });
  }

  putNowait(item: unknown): void | Promise<void> {
    return this.put(item, { block: false });
  }

  getNowait(): unknown {
    return this.get({ block: false });
  }

  qsize(): number {
    return this.#items.length;
  }

  empty(): boolean {
    return this.#items.length === 0;
  }

  full(): boolean {
    return this.#maxsize > 0 && this.#items.length >= this.#maxsize;
  }

  /** A get()'s item whose reply could not be sent (its client is gone): back to the front. */
  undelivered(item: unknown): void {
    if (!this.#handToGetter(item)) this.#items.unshift(item);
  }

  protected stored(): void {}

  #store(item: unknown): void {
    this.stored();
    if (!this.#handToGetter(item)) this.#items.push(item);
  }

  #handToGetter(item: unknown): boolean {
    const getter = this.#getters.take();
    if (getter === null) return false;
    getter.resolve(item);
    return true;
  }

  #takeItem(): unknown {
    const item = this.#items.shift();
    for (let putter = this.#putters.take(); putter !== null; putter = this.#putters.take()) {
      if (putter.who.closed) continue;
      this.stored();
      this.#items.push(putter.payload);
      putter.resolve(true);
      break;
    }
    return item;
  }
}

const NONE = Symbol('none');

export class ManagedJoinableQueue extends ManagedQueue {
  static override readonly exposed = [...ManagedQueue.exposed, 'taskDone', 'join'];
  #unfinished = 0;
  readonly #joiners = new WaitQueue<boolean>();

  taskDone(): void {
    if (this.#unfinished === 0) throw new SyncError('ERR_TOO_MANY_TASK_DONE', 'taskDone() called more times than there were items');
    this.#unfinished -= 1;
    if (this.#unfinished === 0) this.#joiners.wakeAll(true);
  }

  join(timeout?: unknown): boolean | Promise<boolean> {
    const deadline = deadlineAfter('join', timeout);
    if (this.#unfinished === 0) return true;
    return this.#joiners.wait(deadline, () => false);
  }

  protected override stored(): void {
    this.#unfinished += 1;
  }
}

/**
 * The server-side classes of SyncManager's types, for a server of one's own:
 * `const queue = new Managed.Queue()` then `register('getQueue', () => queue,
 * { proxytype: QueueProxy })` shares one queue with every client (Python's
 * "shared queue on a server", with queue.Queue).
 */
export const Managed = Object.freeze({
  dict: ManagedDict,
  list: ManagedList,
  Namespace: ManagedNamespace,
  Value: ManagedValue,
  Array: ManagedArray,
  Lock: ManagedLock,
  RLock: ManagedRLock,
  Semaphore: ManagedSemaphore,
  BoundedSemaphore: ManagedBoundedSemaphore,
  Condition: ManagedCondition,
  Event: ManagedEvent,
  Barrier: ManagedBarrier,
  Queue: ManagedQueue,
  JoinableQueue: ManagedJoinableQueue,
});
