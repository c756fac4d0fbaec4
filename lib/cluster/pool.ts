// ClusterPool: the Pool interface over a BullMQ queue in Redis, so that work
// outgrowing one machine goes to `nodemp worker` processes on many.
//
// Each call becomes jobs (map: one per chunk of items), added in one round
// trip (see client.ts). Functions go by reference (module URL and export
// name, checked against a hash of their source), so every machine must have
// the same code at the same path.
//
// Delivery is at least once: a job whose worker dies mid-way is taken over by
// another worker once its lock lapses, and runs again from the start.
import { setMaxListeners } from 'node:events';
import { MessageChannel, receiveMessageOnPort, Worker as Thread } from 'node:worker_threads';
import { invalidType } from '../args.js';
import { PoolError, RemoteTraceback, reviveError } from '../errors.js';
import { AsyncResult, checkIterable, checkOptions, withCallbacks, type AsyncOptions } from '../pool.js';
import { referenceOf, type FunctionRef, type FunctionRefInput } from '../start/reference.js';
import { JobClient, type ClusterPoolOptions } from './client.js';
import { pack, unpack, type JobKind } from './job.js';
import type { SyncAnswer, SyncRequest } from './sync-thread.js';

export type { ClusterPoolOptions } from './client.js';

export interface ClusterTaskOptions {
  /** Aborting rejects the call and takes its jobs that no worker has started off the queue; started ones run to their end, unanswered. */
  signal?: AbortSignal;
}

export interface ClusterMapOptions extends ClusterTaskOptions {
  /** Items per job (map: about len / (4 × the processes of the workers connected now); imap: 1). */
  chunksize?: number;
}

const RUN = 0;
const CLOSE = 1;
const TERMINATE = 2;
/** Chunks of an imap in the queue at once. */
const IMAP_WINDOW = 64;

export class ClusterPool {
  readonly #client: JobClient;
  readonly #options: ClusterPoolOptions;
  #state = RUN;
  #sync: SyncCaller | null = null;
  /** Calls made and not settled, counted from the moment they are made (a map first asks Redis for the workers). */
  #active = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(options: ClusterPoolOptions = {}) {
    this.#client = new JobClient(options);
    this.#options = options;
  }

  /** The BullMQ queue's name. */
  get queue(): string {
    return this.#client.queue;
  }

  #checkRunning(call: string): void {
    if (this.#state !== RUN) {
      throw new PoolError(this.#state === CLOSE ? 'ERR_POOL_CLOSED' : 'ERR_POOL_TERMINATED', `ClusterPool.${call}: the pool is ${this.#state === CLOSE ? 'closed' : 'terminated'}`);
    }
  }

  async #tracked<T>(work: () => Promise<T>): Promise<T> {
    this.#active++;
    try {
      return await work();
    } finally {
      if (--this.#active === 0) for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  #ref(call: string, fn: unknown): FunctionRef {
    if (typeof fn !== 'function' && (typeof fn !== 'object' || fn === null)) throw invalidType(`ClusterPool.${call}: fn`, 'a function exported by a module, or a { module, name } reference', fn);
    return referenceOf(fn as Function | FunctionRefInput, 'ClusterPool task');
  }

  // ---- the Pool interface -------------------------------------------------------

  /** fn(...args) on a worker machine. */
  async apply<R>(fn: (...args: any[]) => R | Promise<R>, args: unknown[] = [], options: ClusterTaskOptions = {}): Promise<Awaited<R>> {
    this.#checkRunning('apply()');
    const ref = this.#ref('apply()', fn);
    if (!Array.isArray(args)) throw invalidType('ClusterPool.apply(): args', 'an array', args);
    const { signal } = checkOptions('apply()', options, 'ClusterPool');
    return (await this.#tracked(() => this.#client.run(ref, 'apply', args, { signal }))) as Awaited<R>;
  }

  applyAsync<R>(fn: (...args: any[]) => R | Promise<R>, args: unknown[] = [], options: ClusterTaskOptions & AsyncOptions<Awaited<R>> = {}): AsyncResult<Awaited<R>> {
    this.#checkRunning('applyAsync()');
    return this.#async(options, () => this.apply(fn, args, options));
  }

  /** apply(), blocking this thread: the call is made from a worker thread (started on first use) while this one waits. */
  applySync<R>(fn: (...args: any[]) => R, args: unknown[] = []): Awaited<R> {
    this.#checkRunning('applySync()');
    if (!Array.isArray(args)) throw invalidType('ClusterPool.applySync(): args', 'an array', args);
    return this.#syncCaller().call({ kind: 'apply', fn: this.#ref('applySync()', fn), payload: pack(args) }) as Awaited<R>;
  }

  /** fn over every item, in jobs of `chunksize` items; resolves with the values in order, or rejects with the first failure. */
  map<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: ClusterMapOptions = {}): Promise<Awaited<R>[]> {
    return this.#map('map()', 'map', fn, iterable, options) as Promise<Awaited<R>[]>;
  }

  mapAsync<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: ClusterMapOptions & AsyncOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    this.#checkRunning('mapAsync()');
    return this.#async(options, () => this.map(fn, iterable, options));
  }

  /** map(), blocking this thread (see applySync()). */
  mapSync<T, R>(fn: (item: T) => R, iterable: Iterable<T>, options: Omit<ClusterMapOptions, 'signal'> = {}): Awaited<R>[] {
    return this.#mapSync('mapSync()', 'map', fn, iterable, options) as Awaited<R>[];
  }

  /** map() with each item spread as the arguments. */
  starmap<R>(fn: (...args: any[]) => R | Promise<R>, iterable: Iterable<unknown[]>, options: ClusterMapOptions = {}): Promise<Awaited<R>[]> {
    return this.#map('starmap()', 'starmap', fn, iterable, options) as Promise<Awaited<R>[]>;
  }

  starmapAsync<R>(fn: (...args: any[]) => R | Promise<R>, iterable: Iterable<unknown[]>, options: ClusterMapOptions & AsyncOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    this.#checkRunning('starmapAsync()');
    return this.#async(options, () => this.starmap(fn, iterable, options));
  }

  starmapSync<R>(fn: (...args: any[]) => R, iterable: Iterable<unknown[]>, options: Omit<ClusterMapOptions, 'signal'> = {}): Awaited<R>[] {
    return this.#mapSync('starmapSync()', 'starmap', fn, iterable, options) as Awaited<R>[];
  }

  async #map(what: string, kind: JobKind, fn: unknown, iterable: unknown, options: ClusterMapOptions): Promise<unknown[]> {
    this.#checkRunning(what);
    const ref = this.#ref(what, fn);
    const items = itemsOf(what, iterable, kind);
    const { chunksize, signal } = checkOptions(what, options, 'ClusterPool');
    return (await this.#tracked(() => this.#client.run(ref, kind, items, { chunksize, signal }))) as unknown[];
  }

  #mapSync(what: string, kind: JobKind, fn: unknown, iterable: unknown, options: ClusterMapOptions): unknown[] {
    this.#checkRunning(what);
    const items = itemsOf(what, iterable, kind);
    const { chunksize } = checkOptions(what, options, 'ClusterPool');
    return this.#syncCaller().call({ kind, fn: this.#ref(what, fn), payload: pack(items), chunksize }) as unknown[];
  }

  /** Values as they come, in input order; jobs of `chunksize` items (default 1), at most 64 jobs in the queue at once. */
  imap<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: ClusterMapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imap('imap()', fn, iterable, options, true) as AsyncIterableIterator<Awaited<R>>;
  }

  /** imap(), in the order the values come. */
  imapUnordered<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: ClusterMapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imap('imapUnordered()', fn, iterable, options, false) as AsyncIterableIterator<Awaited<R>>;
  }

  #imap(what: string, fn: unknown, iterable: unknown, options: ClusterMapOptions, ordered: boolean): AsyncIterableIterator<unknown> {
    this.#checkRunning(what);
    const ref = this.#ref(what, fn);
    checkIterable(`ClusterPool.${what}`, iterable);
    const { chunksize = 1, signal } = checkOptions(what, options, 'ClusterPool');
    const client = this.#client;
    const it = iterable[Symbol.iterator]();
    const stop = new AbortController();
    const signals = signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
    // One listener for each chunk in flight.
    setMaxListeners(IMAP_WINDOW + 1, signals);
    let exhausted = false;
    type Flight = { values: Promise<unknown[]> };
    const flying: Flight[] = [];
    const launch = (): void => {
      while (!exhausted && flying.length < IMAP_WINDOW) {
        const items: unknown[] = [];
        while (items.length < chunksize) {
          const r = it.next();
          if (r.done === true) {
            exhausted = true;
            break;
          }
          items.push(r.value);
        }
        if (items.length === 0) break;
        let got: unknown[] = [];
        const values = client.call(ref, 'map', [{ start: 0, input: items }], signals, (_, v) => (got = v as unknown[])).then(() => got);
        // Failures are taken when this flight's turn comes; none is left unhandled meanwhile.
        values.catch(() => {});
        flying.push({ values });
      }
    };
    const pool = this;
    async function* run(): AsyncGenerator<unknown> {
      try {
        pool.#checkRunning(what);
        launch();
        while (flying.length > 0) {
          let flight: Flight;
          if (ordered) flight = flying.shift()!;
          else {
            const first = await Promise.race(flying.map((f) => f.values.then(() => f, () => f)));
            flying.splice(flying.indexOf(first), 1);
            flight = first;
          }
          const values = await flight.values;
          launch();
          for (const v of values) yield v;
        }
      } finally {
        stop.abort(new PoolError('ERR_POOL_CLOSED', `ClusterPool.${what}: the iteration ended early`));
      }
    }
    return run();
  }

  /** The call `start` makes, as an AsyncResult; the callbacks are checked before it is made. */
  #async<T>(options: AsyncOptions<T>, start: () => Promise<T>): AsyncResult<T> {
    const result = new AsyncResult<T>(() => {
      throw new TypeError("ClusterPool: an AsyncResult's getSync() and waitSync() cannot wait for a cluster call, whose answer comes through this thread's event loop: use await get() or wait()");
    });
    const settle = withCallbacks(result, options, 'ClusterPool');
    start().then(settle.resolve, settle.reject);
    return result;
  }

  #syncCaller(): SyncCaller {
    this.#sync ??= new SyncCaller(this.#options);
    return this.#sync;
  }

  // ---- the end ------------------------------------------------------------------

  /** No more calls; the ones made finish. */
  close(): void {
    if (this.#state === RUN) this.#state = CLOSE;
  }

  /** Waits for the calls made to finish, then closes the connections; call close() or terminate() first. */
  async join(): Promise<void> {
    if (this.#state === RUN) throw new PoolError('ERR_POOL_RUNNING', 'ClusterPool.join(): call close() or terminate() first');
    while (this.#active > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    await this.#client.whenIdle();
    await this.#shutdown();
  }

  /** Stops at once: pending calls reject with PoolError 'ERR_POOL_TERMINATED' and their queued jobs are taken off. */
  async terminate(): Promise<void> {
    if (this.#state !== TERMINATE) {
      this.#state = TERMINATE;
      this.#client.failAll(new PoolError('ERR_POOL_TERMINATED', 'the pool was terminated before this task finished'));
    }
    await this.#shutdown();
  }

  async #shutdown(): Promise<void> {
    this.#sync?.close();
    this.#sync = null;
    await this.#client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.terminate();
  }
}

function itemsOf(what: string, iterable: unknown, kind: JobKind): unknown[] {
  checkIterable(`ClusterPool.${what}`, iterable);
  const items = [...iterable];
  if (kind === 'starmap') {
    items.forEach((args, i) => {
      if (!Array.isArray(args)) throw invalidType(`ClusterPool.${what}: item ${i}`, 'an array of arguments', args);
    });
  }
  return items;
}

/**
 * The blocking forms: a worker thread with a JobClient of its own makes the
 * call while this thread sleeps on a shared flag, so nothing here needs the
 * event loop. The options must be what structured clone copies (no functions).
 */
class SyncCaller {
  readonly #thread: Thread;
  readonly #port: import('node:worker_threads').MessagePort;
  readonly #flag: Int32Array;

  constructor(options: ClusterPoolOptions) {
    const { port1, port2 } = new MessageChannel();
    this.#flag = new Int32Array(new SharedArrayBuffer(4));
    try {
      this.#thread = new Thread(new URL('./sync-thread.js', import.meta.url), { workerData: { options, port: port2, flag: this.#flag }, transferList: [port2] });
    } catch {
      throw invalidType('ClusterPool: options, for applySync() and mapSync()', 'data a worker thread can be given (no functions)', options);
    }
    this.#thread.unref();
    this.#port = port1;
    port1.unref();
  }

  call(request: SyncRequest): unknown {
    Atomics.store(this.#flag, 0, 0);
    this.#port.postMessage(request);
    Atomics.wait(this.#flag, 0, 0);
    const answer = receiveMessageOnPort(this.#port)!.message as SyncAnswer;
    if (answer.ok) return unpack(answer.value);
    const cause = answer.cause === undefined ? undefined : Object.assign(new RemoteTraceback(''), { message: answer.cause.message, stack: answer.cause.stack });
    throw reviveError(answer.error, cause);
  }

  close(): void {
    void this.#thread.terminate();
  }
}
