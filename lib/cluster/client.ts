// The transport under ClusterPool: jobs into a BullMQ queue, answers out of
// its event stream (QueueEvents), which this client reads from the moment
// before its first job, so a job that finishes before add() returns is not
// missed. It loads nothing of nodemp's native side: the worker thread behind
// ClusterPool's blocking forms runs one too, and nodemp's native state belongs
// to one thread of a process.
import { randomBytes } from 'node:crypto';
import { checkInteger, invalidType } from '../args.js';
import { ClusterError, PoolError } from '../errors.js';
import type { FunctionRef } from '../start/reference.js';
import { peers, redisOptions, type Redis, type RedisOptions } from './bullmq.js';
import { isFailureProgress, pack, reviveFailure, unpack, type FailureProgress, type JobData, type JobKind } from './job.js';
import { WORKER_NAME } from './worker-name.js';

export interface ClusterPoolOptions {
  /** Where Redis is: 'redis://[user:password@]host[:port][/db]', 'rediss://...', a Unix socket path, or ioredis options (default redis://127.0.0.1:6379). */
  redis?: string | RedisOptions;
  /** The BullMQ queue's name; workers started with the same --queue take its jobs (default 'nodemp'). */
  queue?: string;
  /** Times a job is tried before its call fails with the task's error (default 1). */
  attempts?: number;
  /** Wait before a retry, in ms, or BullMQ's { type: 'fixed' | 'exponential', delay }. */
  backoff?: number | { type: 'fixed' | 'exponential'; delay: number };
  /** How long a lost Redis connection is retried, in ms, before every call fails with ClusterError 'ERR_REDIS_LOST' (default 10000). */
  reconnectTimeout?: number;
}

interface Part {
  call: Call;
  start: number;
  failure?: FailureProgress;
}

/** One call's jobs: `done` gets each job's answer, `fail` the first failure. */
interface Call {
  jobs: Set<string>;
  done(part: Part, value: unknown): void;
  fail(error: unknown): void;
}

export interface Chunk {
  start: number;
  input: unknown[];
}

/** This client's jobs in Redis at once, at most (see #pump). */
const MAX_QUEUED = 1000;
/**
 * A backlog waits until this few are left before more are added, so that it
 * goes to Redis in batches: refilled at each answer, a long map added its
 * jobs one addBulk() (one Redis transaction) each, which cost the client and
 * Redis more CPU than the job.
 */
const REFILL_AT = MAX_QUEUED / 2;
/** How long the processes behind the queue (for map's default chunksize) are taken as known. */
const CAPACITY_TTL_MS = 1000;

export class JobClient {
  readonly #queueName: string;
  readonly #redis: RedisOptions;
  readonly #jobOptions: Record<string, unknown>;
  readonly #reconnectTimeout: number;
  readonly #uid = randomBytes(6).toString('hex');
  #seq = 0;
  #ending = false;
  #broken: Error | null = null;
  #connecting: Promise<void> | null = null;
  #queue: import('bullmq').Queue | null = null;
  #events: import('bullmq').QueueEvents | null = null;
  #clients: Redis[] = [];
  readonly #parts = new Map<string, Part>();
  /** Jobs of calls made, not yet added (see #pump). */
  #backlog: Array<{ call: Call; ref: FunctionRef; kind: JobKind; chunk: Chunk }> = [];
  #pumping = false;
  readonly #calls = new Set<Call>();
  #idleWaiters: Array<() => void> = [];
  #capacity = { value: 0, at: -Infinity };
  #closed: Promise<void> | null = null;

  constructor(options: ClusterPoolOptions) {
    if (typeof options !== 'object' || options === null) throw invalidType('ClusterPool: options', 'an object', options);
    this.#redis = redisOptions(options.redis);
    const queue = options.queue ?? 'nodemp';
    if (typeof queue !== 'string' || queue === '' || queue.includes(':')) throw invalidType('ClusterPool: queue', "a non-empty name without ':'", queue);
    this.#queueName = queue;
    const attempts = options.attempts ?? 1;
    checkInteger('ClusterPool: attempts', attempts, 1);
    const backoff = options.backoff;
    if (backoff !== undefined && typeof backoff !== 'number' && (typeof backoff !== 'object' || backoff === null || typeof backoff.delay !== 'number')) {
      throw invalidType('ClusterPool: backoff', "a number of ms or { type: 'fixed' | 'exponential', delay }", backoff);
    }
    this.#jobOptions = {
      attempts,
      ...(backoff === undefined ? {} : { backoff: typeof backoff === 'number' ? { type: 'fixed', delay: backoff } : backoff }),
      // Finished jobs leave Redis: the answer travels in the event stream.
      removeOnComplete: true,
      removeOnFail: true,
    };
    this.#reconnectTimeout = options.reconnectTimeout ?? 10_000;
    checkInteger('ClusterPool: reconnectTimeout', this.#reconnectTimeout, 0);
  }

  get queue(): string {
    return this.#queueName;
  }

  async whenIdle(): Promise<void> {
    while (this.#calls.size > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Fails every pending call with `error`. */
  failAll(error: unknown): void {
    for (const call of [...this.#calls]) call.fail(error);
  }

  /**
   * apply: `input` is the arguments, and the value is the answer; map and
   * starmap: `input` is the items, sent in jobs of `chunksize` (checked by the
   * caller; default: about four jobs per process behind the queue), and the
   * answer is their values.
   */
  async run(ref: FunctionRef, kind: JobKind, input: unknown[], options: { chunksize?: number | undefined; signal?: AbortSignal | undefined } = {}): Promise<unknown> {
    if (kind === 'apply') {
      let out: unknown;
      await this.call(ref, kind, [{ start: 0, input }], options.signal, (_, value) => (out = value));
      return out;
    }
    const chunksize = options.chunksize ?? defaultChunksize(input.length, await this.processes().catch(() => 0));
    const out = new Array<unknown>(input.length);
    await this.call(ref, kind, chunk(input, chunksize), options.signal, (start, values) => {
      const list = values as unknown[];
      for (let i = 0; i < list.length; i++) out[start + i] = list[i];
    });
    return out;
  }

  // ---- connections --------------------------------------------------------------

  #connect(): Promise<void> {
    if (this.#connecting === null) {
      const connecting = this.#open();
      this.#connecting = connecting;
      // A Redis that did not answer may answer the next call.
      connecting.catch(() => {
        if (this.#connecting === connecting) this.#connecting = null;
      });
    }
    return this.#connecting;
  }

  async #open(): Promise<void> {
    const { bullmq, Redis } = peers();
    const [main, blocking] = [this.#client(Redis), this.#client(Redis)];
    try {
      await Promise.all([main, blocking].map((c) => this.#ready(c)));
      const queue = new bullmq.Queue(this.#queueName, { connection: main });
      queue.on('error', () => {
        // Reported through the calls that fail, and 'end' below.
      });
      // Read the event stream from where it is now, before the first job.
      const last = (await main.xrevrange(queue.keys.events!, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      const events = new bullmq.QueueEvents(this.#queueName, { connection: blocking, lastEventId: last[0]?.[0] ?? '0-0' });
      events.on('error', () => {
        // As for the queue.
      });
      events.on('completed', ({ jobId, returnvalue }) => this.#completed(jobId, returnvalue));
      events.on('progress', ({ jobId, data }) => this.#progress(jobId, data));
      events.on('failed', ({ jobId, failedReason }) => this.#failed(jobId, failedReason));
      events.on('removed', ({ jobId }) => this.#failed(jobId, 'the job was removed from the queue'));
      await events.waitUntilReady();
      this.#queue = queue;
      this.#events = events;
    } catch (error) {
      for (const c of this.#clients) c.disconnect();
      this.#clients = [];
      throw error instanceof ClusterError ? error : new ClusterError('ERR_REDIS_UNREACHABLE', `ClusterPool: Redis at ${this.#where()}: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * A connection that gives up: before it was ever ready, after three tries
   * (ClusterError 'ERR_REDIS_UNREACHABLE'); once it was, after
   * reconnectTimeout ms of failed retries ('ERR_REDIS_LOST' for every call).
   */
  #client(Redis: ReturnType<typeof peers>['Redis']): Redis {
    let everReady = false;
    let lostAt = 0;
    const client = new Redis({
      ...this.#redis,
      maxRetriesPerRequest: null,
      lazyConnect: false,
      retryStrategy: (times: number) => {
        if (!everReady) return times > 3 ? null : 200;
        if (lostAt === 0) lostAt = Date.now();
        return Date.now() - lostAt > this.#reconnectTimeout ? null : Math.min(100 * times, 1000);
      },
    });
    client.on('ready', () => {
      everReady = true;
      lostAt = 0;
    });
    client.on('error', () => {
      // Each failed attempt; what counts is whether it gives up ('end').
    });
    client.on('end', () => {
      if (everReady && !this.#ending) {
        this.#breakWith(new ClusterError('ERR_REDIS_LOST', `ClusterPool: the connection to Redis at ${this.#where()} was lost and did not come back within ${this.#reconnectTimeout} ms`));
      }
    });
    this.#clients.push(client);
    return client;
  }

  #ready(client: Redis): Promise<void> {
    return new Promise((resolve, reject) => {
      if (client.status === 'ready') return resolve();
      const ready = (): void => {
        client.off('end', end);
        resolve();
      };
      const end = (): void => {
        client.off('ready', ready);
        reject(new ClusterError('ERR_REDIS_UNREACHABLE', `ClusterPool: no Redis answered at ${this.#where()}`));
      };
      client.once('ready', ready);
      client.once('end', end);
    });
  }

  #where(): string {
    const r = this.#redis;
    return r.path !== undefined ? r.path : `${r.host ?? '127.0.0.1'}:${r.port ?? 6379}`;
  }

  #breakWith(error: Error): void {
    if (this.#broken !== null) return;
    this.#broken = error;
    this.failAll(error);
  }

  // ---- answers ------------------------------------------------------------------

  #completed(jobId: string, returnvalue: unknown): void {
    const part = this.#take(jobId);
    if (part === undefined) return;
    let value: unknown;
    try {
      if (typeof returnvalue !== 'string') throw new TypeError(`nodemp: job ${jobId}'s return value is not a ClusterPool answer`);
      value = unpack(returnvalue);
    } catch (error) {
      part.call.fail(error);
      return;
    }
    part.call.done(part, value);
  }

  #progress(jobId: string, data: unknown): void {
    const part = this.#parts.get(jobId);
    if (part !== undefined && isFailureProgress(data)) part.failure = data;
  }

  #failed(jobId: string, reason: string): void {
    const part = this.#take(jobId);
    if (part === undefined) return;
    part.call.fail(part.failure !== undefined ? reviveFailure(part.failure) : new ClusterError('ERR_JOB_FAILED', `ClusterPool: job ${jobId} failed: ${reason}`));
  }

  #take(jobId: string): Part | undefined {
    const part = this.#parts.get(jobId);
    if (part === undefined) return undefined;
    this.#parts.delete(jobId);
    part.call.jobs.delete(jobId);
    if (this.#parts.size <= REFILL_AT) this.#pump();
    return part;
  }

  // ---- calls --------------------------------------------------------------------

  /**
   * Starts a call of `chunks.length` jobs. `onDone(start, value)` gets each
   * job's answer; the returned promise settles when all have answered or one
   * failed, and the call's remaining queued jobs are then taken off.
   */
  call(ref: FunctionRef, kind: JobKind, chunks: Chunk[], signal: AbortSignal | undefined, onDone: (start: number, value: unknown) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let left = chunks.length;
      let settled = false;
      const finish = (error?: unknown): void => {
        if (settled) return;
        settled = true;
        this.#calls.delete(call);
        signal?.removeEventListener('abort', onAbort);
        if (call.jobs.size > 0) this.#cancel(call);
        if (error === undefined) resolve();
        else reject(error);
        if (this.#calls.size === 0) for (const w of this.#idleWaiters.splice(0)) w();
      };
      const call: Call = {
        jobs: new Set(),
        done: (part, value) => {
          if (settled) return;
          onDone(part.start, value);
          if (--left === 0) finish();
        },
        fail: (error) => finish(error),
      };
      const onAbort = (): void => finish(signal!.reason);
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.#broken !== null) return finish(this.#broken);
      if (this.#ending) return finish(new PoolError('ERR_POOL_TERMINATED', 'ClusterPool: its connections to Redis are closed'));
      this.#calls.add(call);
      if (chunks.length === 0) return finish();
      for (const c of chunks) this.#backlog.push({ call, ref, kind, chunk: c });
      this.#pump();
    });
  }

  /**
   * Adds jobs from the backlog while fewer than MAX_QUEUED of this client's
   * are in Redis: answers come from the queue's event stream, which BullMQ
   * trims to its last ~10,000 events, and a flood of jobs must not push an
   * answer out before it is read.
   */
  #pump(): void {
    if (this.#pumping || this.#backlog.length === 0) return;
    this.#pumping = true;
    void this.#pumpNow().finally(() => {
      this.#pumping = false;
      if (this.#backlog.length > 0 && this.#parts.size < MAX_QUEUED && this.#broken === null) this.#pump();
    });
  }

  async #pumpNow(): Promise<void> {
    try {
      await this.#connect();
    } catch (error) {
      for (const { call } of this.#backlog.splice(0)) call.fail(error);
      return;
    }
    while (this.#backlog.length > 0 && this.#parts.size < MAX_QUEUED) {
      const batch = this.#backlog.splice(0, MAX_QUEUED - this.#parts.size).filter(({ call }) => this.#calls.has(call));
      const jobs = batch.map(({ call, ref, kind, chunk: { start, input } }) => {
        const id = `${this.#uid}-${++this.#seq}`;
        this.#parts.set(id, { call, start });
        call.jobs.add(id);
        const data: JobData = { nodemp: 1, fn: ref, kind, payload: pack(input) };
        return { name: ref.name, data, opts: { ...this.#jobOptions, jobId: id } };
      });
      if (jobs.length === 0) continue;
      try {
        await this.#queue!.addBulk(jobs);
      } catch (error) {
        const failure = this.#broken ?? new ClusterError('ERR_REDIS_LOST', `ClusterPool: adding jobs to Redis at ${this.#where()} failed: ${(error as Error).message}`, { cause: error });
        for (const { call } of batch) call.fail(failure);
      }
    }
  }

  /** Takes a call's jobs off the queue where no worker has started them; a started one runs on, and its answer is dropped. */
  #cancel(call: Call): void {
    if (this.#backlog.some((b) => b.call === call)) this.#backlog = this.#backlog.filter((b) => b.call !== call);
    const ids = [...call.jobs];
    for (const id of ids) this.#parts.delete(id);
    call.jobs.clear();
    const queue = this.#queue;
    if (queue === null || this.#broken !== null) return;
    for (const id of ids) queue.remove(id).catch(() => {});
  }

  /** Processes behind the queue now, by the workers' connection names; 0 when none is connected. */
  async processes(): Promise<number> {
    const now = performance.now();
    if (now - this.#capacity.at < CAPACITY_TTL_MS) return this.#capacity.value;
    await this.#connect();
    let total = 0;
    const seen = new Set<string>();
    for (const client of await this.#queue!.getWorkers()) {
      const name = String(client.name ?? '');
      const worker = name.slice(name.indexOf(':w:') + 3);
      const m = WORKER_NAME.exec(worker);
      if (m === null || seen.has(worker)) continue;
      seen.add(worker);
      total += Number(m[1]);
    }
    this.#capacity = { value: total, at: now };
    return total;
  }

  /** Closes the connections (a connection still being opened is waited for, so nothing is left open). */
  close(): Promise<void> {
    this.#ending = true;
    this.#closed ??= (async () => {
      await this.#connecting?.catch(() => {});
      await this.#events?.close().catch(() => {});
      await this.#queue?.close().catch(() => {});
      for (const c of this.#clients) c.disconnect();
      this.#clients = [];
    })();
    return this.#closed;
  }
}

export function chunk(items: unknown[], size: number): Chunk[] {
  const out = [];
  for (let start = 0; start < items.length; start += size) out.push({ start, input: items.slice(start, start + size) });
  return out;
}

/** As Pool's: about four jobs per process, over the processes of the workers connected now (4 when fewer are). */
function defaultChunksize(n: number, processes: number): number {
  return Math.max(1, Math.ceil(n / (Math.max(processes, 4) * 4)));
}
