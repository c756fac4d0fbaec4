// The proxy classes of a SyncManager's types (Python's DictProxy, ListProxy,
// AcquirerProxy, ...). Every method comes in two forms, `name()` returning a
// Promise and `nameSync()` blocking this thread; most are made by
// definePairs() from the server-side class's exposed list, and typed here.
import { deadlineAfter, timeLeft, type WaitOptions } from '../waiting.js';
import { invalidType } from '../args.js';
import type { PutOptions } from '../queue.js';
import { warnOwnerDied } from '../lock.js';
import { referenceOf, type FunctionRefInput } from '../start/reference.js';
import { BaseProxy, definePairs, proxyTypes } from './proxy.js';
import { asyncResultExposed } from './pool.js';
import {
  ManagedArray,
  ManagedBarrier,
  ManagedDict,
  ManagedEvent,
  ManagedJoinableQueue,
  ManagedList,
  ManagedNamespace,
  ManagedQueue,
  ManagedValue,
  type Acquired,
} from './referents.js';

/** `name()` resolving to R, and `nameSync()` returning it. */
type Pair<Name extends string, A extends unknown[], R> = { [K in Name]: (...args: A) => Promise<R> } & { [K in `${Name}Sync`]: (...args: A) => R };

export class DictProxy<K = unknown, V = unknown> extends BaseProxy {}
export interface DictProxy<K = unknown, V = unknown>
  extends Pair<'get', [key: K, fallback?: V], V | null>,
    Pair<'set', [key: K, value: V], void>,
    Pair<'has', [key: K], boolean>,
    Pair<'delete', [key: K], boolean>,
    Pair<'getItem', [key: K], V>,
    Pair<'pop', [key: K, fallback?: V], V>,
    Pair<'popitem', [], [K, V]>,
    Pair<'setdefault', [key: K, fallback?: V], V>,
    Pair<'update', [other: Map<K, V> | Record<string, V> | Array<[K, V]>], void>,
    Pair<'keys', [], K[]>,
    Pair<'values', [], V[]>,
    Pair<'items', [], Array<[K, V]>>,
    Pair<'len', [], number>,
    Pair<'clear', [], void>,
    Pair<'copy', [], Map<K, V>> {}
definePairs(DictProxy, ManagedDict.exposed);

export class ListProxy<T = unknown> extends BaseProxy {}
export interface ListProxy<T = unknown>
  extends Pair<'get', [index: number], T>,
    Pair<'set', [index: number, value: T], void>,
    Pair<'delete', [index: number], void>,
    Pair<'append', [value: T], void>,
    Pair<'extend', [values: Iterable<T>], void>,
    Pair<'insert', [index: number, value: T], void>,
    Pair<'pop', [index?: number], T>,
    Pair<'remove', [value: T], void>,
    Pair<'reverse', [], void>,
    Pair<'sort', [options?: { reverse?: boolean }], void>,
    Pair<'index', [value: T], number>,
    Pair<'count', [value: T], number>,
    Pair<'includes', [value: T], boolean>,
    Pair<'slice', [start?: number, end?: number], T[]>,
    Pair<'len', [], number>,
    Pair<'copy', [], T[]> {}
definePairs(ListProxy, ManagedList.exposed);

export class NamespaceProxy extends BaseProxy {}
export interface NamespaceProxy
  extends Pair<'get', [name: string], unknown>,
    Pair<'set', [name: string, value: unknown], void>,
    Pair<'delete', [name: string], void>,
    Pair<'has', [name: string], boolean>,
    Pair<'toObject', [], Record<string, unknown>> {}
definePairs(NamespaceProxy, ManagedNamespace.exposed);

export class ValueProxy<T = number | bigint> extends BaseProxy {
  /** getSync() and setSync(), as Python's `value` attribute. */
  get value(): T {
    return this.getSync();
  }
  set value(v: T) {
    this.setSync(v);
  }
}
export interface ValueProxy<T = number | bigint> extends Pair<'get', [], T>, Pair<'set', [value: T], void> {}
definePairs(ValueProxy, ManagedValue.exposed);

export class ArrayProxy<T = number | bigint> extends BaseProxy {}
export interface ArrayProxy<T = number | bigint>
  extends Pair<'get', [index: number], T>,
    Pair<'set', [index: number, value: T], void>,
    Pair<'len', [], number>,
    Pair<'copy', [], T[]> {}
definePairs(ArrayProxy, ManagedArray.exposed);

/**
 * A manager Lock, RLock, Semaphore or BoundedSemaphore (Python's
 * AcquirerProxy). As with nodemp's own locks, an acquire that takes over
 * from a process that died holding it sets `ownerDied` and warns.
 */
export class AcquirerProxy extends BaseProxy {
  #ownerDied = false;

  /** Whether the latest acquire here took over from a client that died holding it. */
  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  async acquire(options?: WaitOptions): Promise<boolean> {
    return this.#took((await this.callMethod('acquire', [options])) as Acquired);
  }

  acquireSync(options?: WaitOptions): boolean {
    return this.#took(this.callMethodSync('acquire', [options]) as Acquired);
  }

  #took([acquired, died]: Acquired): boolean {
    if (!acquired) return false;
    this.#ownerDied = died !== 0;
    if (died !== 0) warnOwnerDied(`the manager ${this.token.typeid} #${this.token.id}`, died);
    return true;
  }
}
export interface AcquirerProxy extends Pair<'release', [n?: number], void> {}
definePairs(AcquirerProxy, ['release']);

export class LockProxy extends AcquirerProxy {}
export interface LockProxy extends Pair<'locked', [], boolean> {}
definePairs(LockProxy, ['locked']);

export class RLockProxy extends LockProxy {}
export interface RLockProxy extends Pair<'depth', [], number> {}
definePairs(RLockProxy, ['depth']);

export class SemaphoreProxy extends AcquirerProxy {}
export interface SemaphoreProxy extends Pair<'getValue', [], number> {}
definePairs(SemaphoreProxy, ['getValue']);

/** A manager Condition; waitFor() evaluates its predicate here, as Python's ConditionProxy does. */
export class ConditionProxy extends AcquirerProxy {
  async wait(timeout?: number | null): Promise<boolean> {
    return this.#woke((await this.callMethod('wait', [timeout])) as Acquired);
  }

  waitSync(timeout?: number | null): boolean {
    return this.#woke(this.callMethodSync('wait', [timeout]) as Acquired);
  }

  /** Waits until `predicate()` is truthy (checked with the lock held), or `timeout` ms pass; returns its last value. */
  async waitFor<T>(predicate: () => T, timeout?: number | null): Promise<T> {
    const deadline = waitForDeadline('waitFor', predicate, timeout);
    let result = predicate();
    while (!result) {
      const left = timeLeft(deadline);
      if (left === 0) break;
      await this.wait(left ?? null);
      result = predicate();
    }
    return result;
  }

  waitForSync<T>(predicate: () => T, timeout?: number | null): T {
    const deadline = waitForDeadline('waitForSync', predicate, timeout);
    let result = predicate();
    while (!result) {
      const left = timeLeft(deadline);
      if (left === 0) break;
      this.waitSync(left ?? null);
      result = predicate();
    }
    return result;
  }

  #woke([notified, died]: Acquired): boolean {
    if (died !== 0) warnOwnerDied(`the manager Condition #${this.token.id}'s lock`, died);
    return notified;
  }
}
function waitForDeadline(method: string, predicate: unknown, timeout: unknown): number {
  if (typeof predicate !== 'function') throw invalidType(`ConditionProxy.${method}(predicate)`, 'a function', predicate);
  return deadlineAfter(`ConditionProxy.${method}`, timeout);
}

export interface ConditionProxy extends Pair<'notify', [n?: number], void>, Pair<'notifyAll', [], void> {}
definePairs(ConditionProxy, ['notify', 'notifyAll']);

export class EventProxy extends BaseProxy {}
export interface EventProxy extends Pair<'isSet', [], boolean>, Pair<'set', [], void>, Pair<'clear', [], void>, Pair<'wait', [timeout?: number | null], boolean> {}
definePairs(EventProxy, ManagedEvent.exposed);

export class BarrierProxy extends BaseProxy {}
export interface BarrierProxy
  extends Pair<'wait', [timeout?: number | null], number>,
    Pair<'reset', [], void>,
    Pair<'abort', [], void>,
    Pair<'parties', [], number>,
    Pair<'nWaiting', [], number>,
    Pair<'broken', [], boolean> {}
definePairs(BarrierProxy, ManagedBarrier.exposed);

export class QueueProxy<T = unknown> extends BaseProxy {}
export interface QueueProxy<T = unknown>
  extends Pair<'put', [item: T, options?: PutOptions], void>,
    Pair<'get', [options?: WaitOptions], T>,
    Pair<'putNowait', [item: T], void>,
    Pair<'getNowait', [], T>,
    Pair<'qsize', [], number>,
    Pair<'empty', [], boolean>,
    Pair<'full', [], boolean> {}
definePairs(QueueProxy, ManagedQueue.exposed);

export class JoinableQueueProxy<T = unknown> extends QueueProxy<T> {}
export interface JoinableQueueProxy<T = unknown> extends Pair<'taskDone', [], void>, Pair<'join', [timeout?: number | null], boolean> {}
definePairs(JoinableQueueProxy, ManagedJoinableQueue.exposed);

export class AsyncResultProxy<T = unknown> extends BaseProxy {}
export interface AsyncResultProxy<T = unknown>
  extends Pair<'get', [timeout?: number | null], T>,
    Pair<'wait', [timeout?: number | null], boolean>,
    Pair<'ready', [], boolean>,
    Pair<'successful', [], boolean> {}
definePairs(AsyncResultProxy, asyncResultExposed);

export class IteratorProxy extends BaseProxy {}
export interface IteratorProxy extends Pair<'next', [], [done: boolean, value: unknown]> {}
definePairs(IteratorProxy, ['next']);

type Task = Function | FunctionRefInput;

/**
 * A Pool in the manager's server process (Python's PoolProxy). Task
 * functions go by reference: they must be exports of a module the server
 * may load (the main module of the program that started it, or one in its
 * options.poolModules), as with the spawn start method.
 */
export class PoolProxy extends BaseProxy {
  apply<R = unknown>(fn: Task, args: unknown[] = []): Promise<R> {
    return this.callMethod('apply', [ref(fn), args]) as Promise<R>;
  }
  applySync<R = unknown>(fn: Task, args: unknown[] = []): R {
    return this.callMethodSync('apply', [ref(fn), args]) as R;
  }
  applyAsync<R = unknown>(fn: Task, args: unknown[] = []): Promise<AsyncResultProxy<R>> {
    return this.callMethod('applyAsync', [ref(fn), args]) as Promise<AsyncResultProxy<R>>;
  }
  applyAsyncSync<R = unknown>(fn: Task, args: unknown[] = []): AsyncResultProxy<R> {
    return this.callMethodSync('applyAsync', [ref(fn), args]) as AsyncResultProxy<R>;
  }
  map<R = unknown>(fn: Task, items: Iterable<unknown>, options?: { chunksize?: number }): Promise<R[]> {
    return this.callMethod('map', [ref(fn), [...items], options]) as Promise<R[]>;
  }
  mapSync<R = unknown>(fn: Task, items: Iterable<unknown>, options?: { chunksize?: number }): R[] {
    return this.callMethodSync('map', [ref(fn), [...items], options]) as R[];
  }
  mapAsync<R = unknown>(fn: Task, items: Iterable<unknown>, options?: { chunksize?: number }): Promise<AsyncResultProxy<R[]>> {
    return this.callMethod('mapAsync', [ref(fn), [...items], options]) as Promise<AsyncResultProxy<R[]>>;
  }
  starmap<R = unknown>(fn: Task, items: Iterable<unknown[]>, options?: { chunksize?: number }): Promise<R[]> {
    return this.callMethod('starmap', [ref(fn), [...items], options]) as Promise<R[]>;
  }
  starmapSync<R = unknown>(fn: Task, items: Iterable<unknown[]>, options?: { chunksize?: number }): R[] {
    return this.callMethodSync('starmap', [ref(fn), [...items], options]) as R[];
  }
  starmapAsync<R = unknown>(fn: Task, items: Iterable<unknown[]>, options?: { chunksize?: number }): Promise<AsyncResultProxy<R[]>> {
    return this.callMethod('starmapAsync', [ref(fn), [...items], options]) as Promise<AsyncResultProxy<R[]>>;
  }
  /** Results in order as they come, while later tasks still run. */
  async *imap<R = unknown>(fn: Task, items: Iterable<unknown>, options?: { chunksize?: number }): AsyncGenerator<R> {
    yield* drain<R>((await this.callMethod('imap', [ref(fn), [...items], options])) as IteratorProxy);
  }
  /** Results in the order they finish. */
  async *imapUnordered<R = unknown>(fn: Task, items: Iterable<unknown>, options?: { chunksize?: number }): AsyncGenerator<R> {
    yield* drain<R>((await this.callMethod('imapUnordered', [ref(fn), [...items], options])) as IteratorProxy);
  }
}
export interface PoolProxy extends Pair<'close', [], void>, Pair<'terminate', [], void>, Pair<'join', [], void> {}
definePairs(PoolProxy, ['close', 'terminate', 'join']);

function ref(fn: Task): unknown {
  return referenceOf(fn, 'Pool task function');
}

async function* drain<R>(it: IteratorProxy): AsyncGenerator<R> {
  for (;;) {
    const [done, value] = await it.next();
    if (done) return;
    yield value as R;
  }
}

for (const [typeid, Class] of [
  ['dict', DictProxy],
  ['list', ListProxy],
  ['Namespace', NamespaceProxy],
  ['Value', ValueProxy],
  ['Array', ArrayProxy],
  ['Lock', LockProxy],
  ['RLock', RLockProxy],
  ['Semaphore', SemaphoreProxy],
  ['BoundedSemaphore', SemaphoreProxy],
  ['Condition', ConditionProxy],
  ['Event', EventProxy],
  ['Barrier', BarrierProxy],
  ['Queue', QueueProxy],
  ['JoinableQueue', JoinableQueueProxy],
  ['Pool', PoolProxy],
  ['AsyncResult', AsyncResultProxy],
  ['Iterator', IteratorProxy],
] as const) {
  proxyTypes.set(typeid, Class as never);
}
