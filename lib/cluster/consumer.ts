// One local process of a `nodemp worker`: it takes ClusterPool jobs with a
// BullMQ Worker of its own and runs their tasks here, as a plain BullMQ
// worker process runs its jobs. A job then costs what BullMQ costs: handing
// each job from one process talking to Redis to another that runs it cost a
// futex wake each way, about 80 µs of CPU apiece on the 2-core VM measured,
// and made a job of one tiny task 1.45x plain BullMQ's time (1.03x for the
// bare hop alone). The `nodemp worker` above these processes supervises them
// (lib/cluster/worker.ts); each says in the in-hand list which jobs it holds,
// so that the supervisor can keep their locks while a long synchronous task
// holds this process's loop, and fail them as a Pool fails the tasks of a
// worker that died if this process dies.
import { hostname } from 'node:os';
import type { Semaphore } from '../semaphore.js';
import { ShareableList } from '../shareable-list.js';
import { setBootstrapping } from '../start/method.js';
import { loadReference } from '../start/reference.js';
import { peers, type RedisOptions } from './bullmq.js';
import { failureState, isJobData, pack, unpack, type FailureProgress, type JobData } from './job.js';
import { workerName } from './worker-name.js';

export interface ConsumerSetup {
  redis: RedisOptions;
  queue: string;
  /** Jobs this process takes at once. */
  concurrency: number;
  lockDuration: number;
  /** The supervisor's in-hand list (a ShareableList) and this process's first item in it; it owns `concurrency` items from there. */
  inHand: string;
  first: number;
  /** Released once this process's BullMQ Worker is connected. */
  ready: Semaphore;
}

/** An in-hand item: the job's id and its lock token, or '' for none. */
export function inHandItem(id: string, token: string): string {
  return `${id} ${token}`;
}

export function parseInHand(item: unknown): { id: string; token: string } | null {
  if (typeof item !== 'string') return null;
  const space = item.indexOf(' ');
  if (space <= 0 || space === item.length - 1) return null;
  return { id: item.slice(0, space), token: item.slice(space + 1) };
}

const isThenable = (v: unknown): v is PromiseLike<unknown> => typeof (v as { then?: unknown } | null)?.then === 'function';

/** A consumer's life: until SIGTERM (from its supervisor), after which it finishes the jobs in hand and returns. */
export async function consume(s: ConsumerSetup): Promise<void> {
  const { bullmq, Redis } = peers();
  const inHand = new ShareableList(null, { name: s.inHand });
  const free = Array.from({ length: s.concurrency }, (_, i) => s.first + s.concurrency - 1 - i);
  // Loaded functions by reference; a module that failed to load is tried
  // again at its next job (it may have been deployed meanwhile).
  const functions = new Map<string, (...args: unknown[]) => unknown>();
  const functionOf = async (data: JobData): Promise<(...args: unknown[]) => unknown> => {
    const key = `${data.fn.module}\n${data.fn.name}\n${data.fn.check ?? ''}`;
    let fn = functions.get(key);
    if (fn === undefined) {
      // Importing the function's module is bootstrapping, as in a Pool's worker: a module that starts processes at its top level gets the guard's error.
      setBootstrapping(true);
      try {
        fn = (await loadReference(data.fn)) as (...args: unknown[]) => unknown;
      } finally {
        setBootstrapping(false);
      }
      functions.set(key, fn);
    }
    return fn;
  };
  const run = async (data: JobData): Promise<unknown> => {
    const fn = await functionOf(data);
    const input = unpack(data.payload);
    if (!Array.isArray(input)) throw new TypeError(`nodemp worker: a ${data.kind} job's payload must be an array, got ${typeof input}`);
    if (data.kind === 'apply') return fn(...input);
    const out = new Array<unknown>(input.length);
    for (let i = 0; i < input.length; i++) {
      let r = data.kind === 'map' ? fn(input[i]) : fn(...(input[i] as unknown[]));
      if (isThenable(r)) r = await r;
      out[i] = r;
    }
    return out;
  };
  const connection = new Redis({ ...s.redis, maxRetriesPerRequest: null });
  const worker = new bullmq.Worker(
    s.queue,
    async (job, token) => {
      if (!isJobData(job.data)) throw new TypeError(`nodemp worker: job ${job.id} (${job.name}) is not a ClusterPool job`);
      const slot = free.pop();
      // A job whose id and token do not fit its item is not recorded: its lock is kept by this process alone.
      let held = false;
      if (slot !== undefined && token !== undefined) {
        try {
          inHand.set(slot, inHandItem(String(job.id), token));
          held = true;
        } catch {}
      }
      try {
        return pack(await run(job.data));
      } catch (error) {
        if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
          const progress: FailureProgress = { nodempError: failureState(error), host: hostname(), pid: process.pid };
          await job.updateProgress(progress as unknown as object);
        }
        throw error instanceof Error ? error : new Error(String(error));
      } finally {
        if (held) inHand.set(slot!, '');
        if (slot !== undefined) free.push(slot);
      }
    },
    {
      connection,
      concurrency: s.concurrency,
      name: workerName(1, hostname(), process.pid),
      lockDuration: s.lockDuration,
      stalledInterval: s.lockDuration,
      // A job whose worker was killed goes to another; one that kills every
      // worker it reaches fails after this many.
      maxStalledCount: 3,
      autorun: false,
    },
  );
  worker.on('error', (error) => {
    // ioredis reconnects on its own; what is worth saying goes to stderr.
    process.stderr.write(`nodemp worker (process ${process.pid}): ${(error as Error).message}\n`);
  });
  await worker.waitUntilReady();
  // A terminal's Ctrl-C reaches the whole process group: the supervisor decides what it means.
  process.on('SIGINT', () => {});
  process.once('SIGTERM', () => void worker.close());
  s.ready.release();
  try {
    await worker.run();
  } finally {
    connection.disconnect();
    inHand.shm.close();
  }
}
