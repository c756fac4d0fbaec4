// `nodemp worker`: one machine's share of a ClusterPool. It takes the queue's
// jobs with a BullMQ Worker and runs each on a local nodemp Pool, so a machine
// works at nodemp's local speed; the jobs stay plain BullMQ jobs.
import { hostname } from 'node:os';
import { ClusterError } from '../errors.js';
import { Pool } from '../pool.js';
import { preloadSpecifier, setForkserverPreload } from '../start/forkserver.js';
import { loadReference, type FunctionRef } from '../start/reference.js';
import { peers, redisOptions, type RedisOptions } from './bullmq.js';
import { workerName } from './worker-name.js';
import { failureState, isJobData, pack, ping, unpack, type FailureProgress, type JobData } from './job.js';

export interface WorkerOptions {
  /** Where Redis is: a redis:// URL, a socket path or ioredis options (default redis://127.0.0.1:6379). */
  redis?: string | RedisOptions;
  /** The queue's name, as the ClusterPool's (default 'nodemp'). */
  queue?: string;
  /** Local worker processes (default: the CPUs). */
  processes?: number;
  /** Jobs taken at once (default: 2 × processes, so the local pool has the next one at hand). */
  concurrency?: number;
  /** Modules imported before the first job, here and in the fork server every local worker starts from. */
  preload?: string[];
  /** How long a job's lock lasts without renewal, in ms: a worker killed mid-job has its jobs taken over about this long after (default 5000). */
  lockDuration?: number;
}

/** Runs until SIGTERM or SIGINT: then takes no new job, finishes the ones in hand and resolves. A second signal stops at once. */
export async function runWorker(options: WorkerOptions = {}): Promise<void> {
  const { bullmq, Redis } = peers();
  const queue = options.queue ?? 'nodemp';
  const preload = (options.preload ?? []).map(preloadSpecifier);
  if (preload.length > 0) setForkserverPreload(preload);
  for (const m of preload) await import(m);
  const pool = new Pool({ processes: options.processes ?? null, startMethod: 'forkserver' });
  const processes = pool.processes;
  // Loaded functions by reference; a module that failed to load is tried
  // again at its next job (it may have been deployed meanwhile).
  const functions = new Map<string, Function>();
  const load = async (ref: FunctionRef, key: string): Promise<Function> => {
    const fn = await loadReference(ref);
    functions.set(key, fn);
    return fn;
  };
  const run = async (data: JobData): Promise<unknown> => {
    const key = `${data.fn.module}\n${data.fn.name}\n${data.fn.check ?? ''}`;
    const fn = (functions.get(key) ?? (await load(data.fn, key))) as (...args: unknown[]) => unknown;
    const input = unpack(data.payload);
    if (!Array.isArray(input)) throw new TypeError(`nodemp worker: a ${data.kind} job's payload must be an array, got ${typeof input}`);
    if (data.kind === 'apply') return pool.apply(fn, input);
    // A job of one item (chunksize 1) is one task: apply() skips map's chunking.
    if (input.length === 1) return [await (data.kind === 'map' ? pool.apply(fn, input) : pool.apply(fn, input[0] as unknown[]))];
    if (data.kind === 'map') return pool.map(fn, input);
    return pool.starmap(fn, input as unknown[][]);
  };
  const lockDuration = options.lockDuration ?? 5000;
  // ioredis's own retry goes on for ever: a worker outlives a Redis restart.
  const connection = new Redis({ ...redisOptions(options.redis), maxRetriesPerRequest: null });
  const worker = new bullmq.Worker(
    queue,
    async (job) => {
      if (!isJobData(job.data)) throw new TypeError(`nodemp worker: job ${job.id} (${job.name}) is not a ClusterPool job`);
      try {
        return pack(await run(job.data));
      } catch (error) {
        if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
          const progress: FailureProgress = { nodempError: failureState(error), host: hostname(), pid: process.pid };
          await job.updateProgress(progress as unknown as object);
        }
        throw error instanceof Error ? error : new Error(String(error));
      }
    },
    {
      connection,
      concurrency: options.concurrency ?? processes * 2,
      name: workerName(processes, hostname(), process.pid),
      lockDuration,
      stalledInterval: lockDuration,
      // A job whose worker was killed goes to another; one that kills every
      // worker it reaches fails after this many.
      maxStalledCount: 3,
      autorun: false,
    },
  );
  worker.on('error', (error) => {
    // ioredis reconnects on its own; what is worth saying goes to stderr.
    process.stderr.write(`nodemp worker: ${(error as Error).message}\n`);
  });
  try {
    await worker.waitUntilReady();
  } catch (error) {
    connection.disconnect();
    await pool.terminate();
    throw new ClusterError('ERR_REDIS_UNREACHABLE', `nodemp worker: Redis did not answer: ${(error as Error).message}`, { cause: error });
  }
  await Promise.all(Array.from({ length: processes }, () => pool.apply(ping)));
  let stopping = 0;
  const stop = (): void => {
    stopping++;
    if (stopping === 1) void worker.close();
    else void worker.close(true).then(() => pool.terminate());
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stderr.write(`nodemp worker: queue '${queue}', ${processes} processes, pid ${process.pid}: ready\n`);
  try {
    await worker.run();
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    connection.disconnect();
    pool.close();
    await pool.join();
  }
}

const USAGE = 'usage: nodemp worker --redis URL --queue NAME [--processes N] [--concurrency N] [--preload MODULE]... [--lock-duration MS]';

/** `nodemp worker ...`: parses the arguments, runs the worker, exits 0 once it has stopped (2 on bad arguments, 1 on failure). */
export async function main(argv: readonly string[]): Promise<void> {
  const options: WorkerOptions = { preload: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      return;
    }
    const m = /^--(redis|queue|processes|concurrency|preload|lock-duration)(?:=(.*))?$/.exec(arg);
    const value = m ? (m[2] ?? argv[++i]) : undefined;
    if (!m || value === undefined) {
      process.stderr.write(`nodemp worker: unexpected argument '${arg}'\n${USAGE}\n`);
      process.exit(2);
    }
    const name = m[1]!;
    if (name === 'redis') options.redis = value;
    else if (name === 'queue') options.queue = value;
    else if (name === 'preload') options.preload!.push(value);
    else {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1) {
        process.stderr.write(`nodemp worker: --${name} expects a positive integer, got '${value}'\n`);
        process.exit(2);
      }
      if (name === 'processes') options.processes = n;
      else if (name === 'concurrency') options.concurrency = n;
      else options.lockDuration = n;
    }
  }
  try {
    await runWorker(options);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  }
  process.exit(0);
}
