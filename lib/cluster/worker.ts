// `nodemp worker`: one machine's share of a ClusterPool. Its local processes
// (lib/cluster/consumer.ts) each take the queue's jobs with a BullMQ Worker
// of their own and run the tasks themselves, so a job costs what a plain
// BullMQ job costs; this process supervises them: it starts them from the
// fork server, replaces one that dies (failing the jobs it held as a Pool
// fails the tasks of a worker that died), keeps the locks of jobs whose task
// holds its process's loop longer than a lock lasts, and stops them on
// SIGTERM. The jobs stay plain BullMQ jobs.
import { hostname } from 'node:os';
import { checkInteger } from '../args.js';
import { ClusterError, WorkerDiedError } from '../errors.js';
import { cpuCount, processClassFor, type Process } from '../process.js';
import { Semaphore } from '../semaphore.js';
import { ShareableList } from '../shareable-list.js';
import { preloadSpecifier, setForkserverPreload } from '../start/forkserver.js';
import { peers, redisOptions, type RedisOptions } from './bullmq.js';
import { parseInHand, type ConsumerSetup } from './consumer.js';
import { failureState, type FailureProgress } from './job.js';

export interface WorkerOptions {
  /** Where Redis is: a redis:// URL, a socket path or ioredis options (default redis://127.0.0.1:6379). */
  redis?: string | RedisOptions;
  /** The queue's name, as the ClusterPool's (default 'nodemp'). */
  queue?: string;
  /** Local worker processes (default: the CPUs). */
  processes?: number;
  /** Jobs taken at once, shared among the processes, at least one each (default: 2 × processes, so each has its next job at hand). */
  concurrency?: number;
  /** Modules imported before the first job, here and in the fork server every local process starts from. */
  preload?: string[];
  /** How long a job's lock lasts without renewal, in ms: a worker killed mid-job has its jobs taken over about this long after (default 5000). */
  lockDuration?: number;
}

/** Room for a job's id and its lock token in the in-hand list (BullMQ's tokens are a UUID and a count). */
const IN_HAND_BYTES = 256;
/** A process that dies sooner than this after its start is replaced only after RESTART_DELAY_MS: one that cannot start does not become a fork loop. */
const YOUNG_MS = 5000;
const RESTART_DELAY_MS = 1000;
const CONSUMER = { module: new URL('./consumer.js', import.meta.url).href, name: 'consume' };

/** Runs until SIGTERM or SIGINT: then takes no new job, finishes the ones in hand and resolves. A second signal stops at once. */
export async function runWorker(options: WorkerOptions = {}): Promise<void> {
  const { bullmq, Redis } = peers();
  const queueName = options.queue ?? 'nodemp';
  const processes = checkInteger('nodemp worker: processes', options.processes ?? cpuCount(), 1, 4096);
  const concurrency = Math.max(checkInteger('nodemp worker: concurrency', options.concurrency ?? 2 * processes, 1), processes);
  const lockDuration = checkInteger('nodemp worker: lockDuration', options.lockDuration ?? 5000, 1);
  const redis = redisOptions(options.redis);
  const preload = (options.preload ?? []).map(preloadSpecifier);
  if (preload.length > 0) setForkserverPreload(preload);
  for (const m of preload) await import(m);
  // ioredis's own retry goes on for ever: a worker outlives a Redis restart.
  const connection = new Redis({ ...redis, maxRetriesPerRequest: null });
  const queue = new bullmq.Queue(queueName, { connection });
  queue.on('error', (error) => {
    // ioredis reconnects on its own; what is worth saying goes to stderr.
    process.stderr.write(`nodemp worker: ${(error as Error).message}\n`);
  });
  try {
    await queue.waitUntilReady();
  } catch (error) {
    connection.disconnect();
    throw new ClusterError('ERR_REDIS_UNREACHABLE', `nodemp worker: Redis did not answer: ${(error as Error).message}`, { cause: error });
  }

  // Each process's share of the jobs taken at once, and its first item in the in-hand list.
  const shares = Array.from({ length: processes }, (_, i) => Math.floor(concurrency / processes) + (i < concurrency % processes ? 1 : 0));
  const firsts = shares.map((_, i) => shares.slice(0, i).reduce((a, b) => a + b, 0));
  const inHand = new ShareableList(Array.from({ length: concurrency }, () => ' '.repeat(IN_HAND_BYTES)));
  for (let k = 0; k < concurrency; k++) inHand.set(k, '');
  const ready = new Semaphore(0);
  const ConsumerProcess = processClassFor('forkserver');
  const running: Array<Process | null> = shares.map(() => null);
  let stopping = 0;
  let connected = false;
  let allEnded: () => void = () => {};
  const ended = new Promise<void>((resolve) => (allEnded = resolve));
  let startFailed: (error: Error) => void = () => {};
  const startFailure = new Promise<never>((_, reject) => (startFailed = reject));

  /** A dead process's jobs in hand fail as a Pool's tasks do when their worker dies, if their locks are still its own. */
  const failJob = async (id: string, token: string, error: WorkerDiedError): Promise<void> => {
    try {
      const job = await bullmq.Job.fromId(queue, id);
      if (job === undefined || (await job.extendLock(token, lockDuration)) !== 1) return;
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
        const progress: FailureProgress = { nodempError: failureState(error), host: hostname(), pid: error.pid };
        await job.updateProgress(progress as unknown as object);
      }
      await job.moveToFailed(error, token, false);
    } catch {
      // Redis is away or the lock lapsed meanwhile: the stalled-job check hands the job on.
    }
  };

  const onEnd = async (i: number, proc: Process, lived: number): Promise<void> => {
    running[i] = null;
    const code = proc.exitCode;
    const how = code === null ? 'ended' : code < 0 ? `was killed by signal ${-code}` : `exited with code ${code}`;
    const lost: Array<Promise<void>> = [];
    for (let k = firsts[i]!; k < firsts[i]! + shares[i]!; k++) {
      const held = parseInHand(inHand.get(k));
      inHand.set(k, '');
      if (held === null) continue;
      const error = new WorkerDiedError(`nodemp worker process ${proc.pid} on ${hostname()} ${how} while running job ${held.id}`, proc.pid!, code);
      lost.push(failJob(held.id, held.token, error));
    }
    await Promise.all(lost);
    if (stopping > 0) {
      if (running.every((p) => p === null)) allEnded();
      return;
    }
    if (!connected) {
      startFailed(new ClusterError('ERR_WORKER_START', `nodemp worker: local process ${proc.pid} ${how} before it connected to Redis`));
      return;
    }
    process.stderr.write(`nodemp worker: local process ${proc.pid} ${how}; starting another\n`);
    setTimeout(() => {
      if (stopping === 0) start(i);
    }, lived < YOUNG_MS ? RESTART_DELAY_MS : 0);
  };

  const start = (i: number): void => {
    const setup: ConsumerSetup = { redis, queue: queueName, concurrency: shares[i]!, lockDuration, inHand: inHand.shm.name, first: firsts[i]!, ready };
    const proc = new ConsumerProcess({ target: CONSUMER, args: [setup] as unknown[], daemon: true, name: `nodemp-worker-${i + 1}` });
    proc.start();
    running[i] = proc;
    const startedAt = performance.now();
    void proc.join().then(() => onEnd(i, proc, performance.now() - startedAt));
  };

  // A task that holds its process's loop for longer than a lock lasts would
  // lose its job to the stalled-job check and run twice: while it runs, this
  // process renews the locks its processes hold (a lock kept by its own
  // process as well is merely renewed twice).
  const keeper = setInterval(() => {
    for (let k = 0; k < concurrency; k++) {
      const held = parseInHand(inHand.get(k));
      if (held === null) continue;
      new bullmq.Job(queue, '', {}, {}, held.id).extendLock(held.token, lockDuration).catch(() => {});
    }
  }, lockDuration / 2);

  const stop = (): void => {
    stopping++;
    for (const proc of running) {
      if (proc === null) continue;
      if (stopping === 1) proc.terminate();
      else proc.kill();
    }
    if (running.every((p) => p === null)) allEnded();
  };
  const close = async (): Promise<void> => {
    clearInterval(keeper);
    await queue.close().catch(() => {});
    connection.disconnect();
    inHand.shm.close();
    inHand.shm.unlink();
  };

  for (let i = 0; i < processes; i++) start(i);
  try {
    await Promise.race([Promise.all(shares.map(() => ready.acquire())), startFailure]);
  } catch (error) {
    stopping = 2;
    stop();
    // The acquires of processes that will never be ready must not stay pending.
    for (let i = 0; i < processes; i++) ready.release();
    await ended;
    await close();
    throw error;
  }
  connected = true;
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stderr.write(`nodemp worker: queue '${queueName}', ${processes} processes, pid ${process.pid}: ready\n`);
  try {
    await ended;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    await close();
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
