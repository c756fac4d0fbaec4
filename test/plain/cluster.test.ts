// ClusterPool (nodemp/cluster) against a real redis-server and `nodemp worker`
// process trees standing in for machines. Runs in a plain `node`, as a
// service using it would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';
import { Pool, RemoteTraceback, SerializationError } from '../../dist/index.js';
import { ClusterError, ClusterPool } from '../../dist/cluster/index.js';
import * as tasks from '../fixtures/cluster/tasks.mjs';
import { leftRunning, startRedis, startWorker } from '../fixtures/cluster/redis.mjs';
import { root } from '../helpers.js';

type Redis = Awaited<ReturnType<typeof startRedis>>;
type Worker = Awaited<ReturnType<typeof startWorker>>;

let redis: Redis;
let local: Pool;
const workers: Worker[] = [];
const pools: ClusterPool[] = [];
let queueSeq = 0;

function pool(options: ConstructorParameters<typeof ClusterPool>[0] = {}): ClusterPool {
  const p = new ClusterPool({ redis: redis.url, queue: 'forms', ...options });
  pools.push(p);
  return p;
}

async function worker(queue: string, options: Parameters<typeof startWorker>[2] = {}): Promise<Worker> {
  const w = await startWorker(redis.url, queue, options);
  workers.push(w);
  return w;
}

async function keysOf(pattern: string): Promise<string[]> {
  const client = new IORedis({ host: '127.0.0.1', port: redis.port });
  try {
    return await client.keys(pattern);
  } finally {
    client.disconnect();
  }
}

const freshQueue = (): string => `q${++queueSeq}-${process.pid}`;

/** Whether `pid` runs (neither gone nor a zombie not yet reaped). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The children of `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

beforeAll(async () => {
  redis = await startRedis();
  local = new Pool({ processes: 2, startMethod: 'forkserver' });
  await Promise.all([worker('forms'), worker('forms')]);
}, 60_000);

afterAll(async () => {
  for (const p of pools) await p.terminate();
  await local?.terminate();
  for (const w of workers) w.proc.kill('SIGKILL');
  await Promise.all(workers.map((w) => w.exited));
  await redis?.stop();
  // Each worker's local processes and fork server end with it.
  const deadline = Date.now() + 5000;
  while (leftRunning().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(leftRunning()).toEqual([]);
}, 60_000);

describe('ClusterPool: the Pool interface across worker machines', () => {
  it('every call form answers as a local Pool does', async () => {
    const cp = pool();
    const xs = Array.from({ length: 200 }, (_, i) => i - 50);
    const pairs = xs.map((x) => [x, x * 3]);
    const want = {
      apply: await local.apply(tasks.add, [2, 40]),
      map: await local.map(tasks.square, xs),
      starmap: await local.starmap(tasks.add, pairs),
    };
    expect(await cp.apply(tasks.add, [2, 40])).toBe(want.apply);
    expect(await cp.map(tasks.square, xs)).toEqual(want.map);
    expect(await cp.map(tasks.square, xs.slice(0, 20), { chunksize: 1 })).toEqual(want.map.slice(0, 20));
    expect(await cp.map(tasks.square, new Set(xs), { chunksize: 7 })).toEqual(want.map);
    expect(await cp.map(tasks.square, [])).toEqual([]);
    expect(await cp.starmap(tasks.add, pairs)).toEqual(want.starmap);
    const called: unknown[] = [];
    const r = cp.applyAsync(tasks.add, [1, 2], { callback: (v) => called.push(v) });
    expect(await r.get(20_000)).toBe(3);
    expect(r.successful()).toBe(true);
    expect(called).toEqual([3]);
    expect(await cp.mapAsync(tasks.square, xs).get()).toEqual(want.map);
    expect(await cp.starmapAsync(tasks.add, pairs).get()).toEqual(want.starmap);
    const ordered: number[] = [];
    for await (const v of cp.imap(tasks.square, xs.slice(0, 30))) ordered.push(v);
    expect(ordered).toEqual(want.map.slice(0, 30));
    const any: number[] = [];
    for await (const v of cp.imapUnordered(tasks.square, xs.slice(0, 30), { chunksize: 4 })) any.push(v);
    expect(any.sort((a, b) => a - b)).toEqual([...want.map.slice(0, 30)].sort((a, b) => a - b));
    // An explicit reference, as a program names a function it does not import.
    expect(await cp.apply({ module: new URL('../fixtures/cluster/tasks.mjs', import.meta.url), name: 'add' }, [5, 5])).toBe(10);
  });

  it('the blocking forms block this thread and answer the same', async () => {
    const cp = pool();
    expect(cp.applySync(tasks.add, [20, 22])).toBe(42);
    expect(cp.mapSync(tasks.square, [1, 2, 3, 4])).toEqual([1, 4, 9, 16]);
    expect(cp.starmapSync(tasks.add, [[1, 1], [2, 2]], { chunksize: 1 })).toEqual([2, 4]);
    let thrown: unknown;
    try {
      cp.mapSync(tasks.failOn, [1, 2, 3]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(RangeError);
    expect((thrown as RangeError).message).toBe('item 3 is bad');
    expect((thrown as Error).cause).toBeInstanceOf(RemoteTraceback);
  });

  it('a task that throws rejects as in Pool: same class, message and fields, the remote stack as cause', async () => {
    const cp = pool();
    const [mine, theirs] = await Promise.all([local.map(tasks.failOn, [1, 2, 3]).catch((e: Error) => e), cp.map(tasks.failOn, [1, 2, 3]).catch((e: Error) => e)]);
    expect(theirs).toBeInstanceOf(RangeError);
    expect(theirs.name).toBe(mine.name);
    expect(theirs.message).toBe(mine.message);
    expect((theirs as Error & { code: string }).code).toBe('ERR_BAD_ITEM');
    expect(theirs.cause).toBeInstanceOf(RemoteTraceback);
    expect(String((theirs.cause as Error).stack)).toMatch(/cluster worker pid \d+[\s\S]*at failOn \(.*tasks\.mjs/);
    const applied = await cp.apply(tasks.failOn, [3, [3]]).catch((e: Error) => e);
    expect(applied).toBeInstanceOf(RangeError);
  });

  it('a job is tried `attempts` times before its call fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemp-flaky-'));
    const once = pool({ attempts: 1 });
    const twice = pool({ attempts: 2, backoff: 10 });
    const failed = await once.apply(tasks.flaky, [join(dir, 'a'), 1, 'x']).catch((e: Error) => e);
    expect(failed).toBeInstanceOf(TypeError);
    expect((failed as Error).message).toBe('run 1 fails on purpose');
    expect(await twice.apply(tasks.flaky, [join(dir, 'b'), 1, 'y'])).toBe('y');
    expect(readFileSync(join(dir, 'b'), 'utf8')).toBe('..');
    const never = await twice.apply(tasks.flaky, [join(dir, 'c'), 5, 'z']).catch((e: Error) => e);
    expect((never as Error).message).toBe('run 2 fails on purpose');
  });

  it('large arguments and results cross intact', async () => {
    const cp = pool();
    const big = Buffer.alloc(8 << 20, 7);
    const r = (await cp.apply(tasks.echoSize, [big, 4 << 20])) as { got: number; out: Uint8Array };
    expect(r.got).toBe(8 << 20);
    expect(r.out.length).toBe(4 << 20);
    expect(r.out.every((b) => b === (8 << 20) % 251)).toBe(true);
    const values = [new Date(5), new Map([[1, 'a']]), new Float64Array([1.5, 2.5]), 10n ** 20n, { nested: [null, undefined, 'é'] }];
    expect(await cp.map(tasks.identity, values)).toEqual(values);
  });

  it('bad input is refused with a named error before anything is queued', async () => {
    const cp = pool();
    const notExported = (x: number): number => x;
    await expect(cp.map(notExported, [1])).rejects.toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_EXPORTED' });
    await expect(cp.map(tasks.square, 5 as never)).rejects.toThrow(TypeError);
    await expect(cp.starmap(tasks.add, [1] as never)).rejects.toThrow(/item 0 must be an array of arguments, got 1/);
    await expect(cp.map(tasks.square, [1], { chunksize: 0 })).rejects.toThrow(RangeError);
    await expect(cp.apply({ module: new URL('../fixtures/cluster/tasks.mjs', import.meta.url), name: 'nope' }, [])).rejects.toBeInstanceOf(SerializationError);
    expect(() => cp.applyAsync(tasks.add, [1, 1], { callback: 5 as never })).toThrow(/ClusterPool: callback/);
    expect(() => new ClusterPool({ queue: 'a:b' })).toThrow(TypeError);
    expect(() => new ClusterPool({ attempts: 0 })).toThrow(RangeError);
    expect(() => new ClusterPool({ redis: 'http://x' })).toThrow(expect.objectContaining({ name: 'ClusterError', code: 'ERR_BAD_URL' }));
    expect(() => new ClusterPool({ redis: 'redis://h/db' })).toThrow(ClusterError);
  });

  it('close() lets calls made finish; after it a call is refused; terminate() rejects pending calls and takes their jobs off', async () => {
    const cp = pool();
    const pending = cp.map(tasks.square, [1, 2, 3]);
    cp.close();
    await expect(cp.apply(tasks.add, [1, 1])).rejects.toMatchObject({ name: 'PoolError', code: 'ERR_POOL_CLOSED' });
    expect(() => cp.applyAsync(tasks.add, [1, 1])).toThrow(expect.objectContaining({ code: 'ERR_POOL_CLOSED' }));
    await cp.join();
    expect(await pending).toEqual([1, 4, 9]);

    const queue = freshQueue();
    const idle = pool({ queue });
    const waiting = idle.map(tasks.square, [1, 2, 3], { chunksize: 1 }).catch((e: Error) => e);
    const plain = new Queue(queue, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(3);
      await idle.terminate();
      expect(await waiting).toMatchObject({ name: 'PoolError', code: 'ERR_POOL_TERMINATED' });
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(0);
    } finally {
      await plain.close();
    }
  });

  it('an aborted call rejects with its reason and its queued jobs leave the queue', async () => {
    const queue = freshQueue();
    const cp = pool({ queue });
    const plain = new Queue(queue, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const ac = new AbortController();
      const call = cp.map(tasks.square, [1, 2, 3, 4], { chunksize: 1, signal: ac.signal }).catch((e: Error) => e);
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(4);
      ac.abort(new Error('enough'));
      expect(await call).toMatchObject({ message: 'enough' });
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(0);
    } finally {
      await plain.close();
    }
  });

  it('jobs are plain BullMQ jobs, and finished ones are removed from Redis', async () => {
    const queue = freshQueue();
    const cp = pool({ queue });
    const plain = new Queue(queue, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const call = cp.map(tasks.square, [1, 2, 3, 4, 5, 6], { chunksize: 3 });
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(2);
      const [job] = await plain.getWaiting();
      expect(job!.name).toBe('square');
      expect(job!.data).toMatchObject({ nodemp: 1, kind: 'map', fn: { name: 'square' } });
      const w = await worker(queue, { processes: 1 });
      expect(await call).toEqual([1, 4, 9, 16, 25, 36]);
      const counts = await plain.getJobCounts();
      expect(Object.values(counts).every((n) => n === 0)).toBe(true);
      const keys = await keysOf(`bull:${queue}:*`);
      // Only the queue's own keys are left (events, id counter, meta...): no job hash.
      expect(keys.filter((k) => /:[0-9a-f]{12}-\d+$/.test(k))).toEqual([]);
      w.proc.kill('SIGTERM');
      expect(await w.exited).toEqual({ code: 0, signal: null });
    } finally {
      await plain.close();
    }
  });

  it('a map of more jobs than a client keeps in Redis (1,000) adds them as answers come, and completes', async () => {
    const queue = freshQueue();
    const cp = pool({ queue });
    const plain = new Queue(queue, { connection: { host: '127.0.0.1', port: redis.port } });
    try {
      const xs = Array.from({ length: 2500 }, (_, i) => i);
      const call = cp.map(tasks.square, xs, { chunksize: 1 });
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBe(1000);
      await worker(queue, { processes: 1 });
      let most = 0;
      let done = false;
      const sampling = (async () => {
        while (!done) {
          const counts = await plain.getJobCounts('waiting', 'active', 'prioritized');
          most = Math.max(most, counts.waiting! + counts.active! + counts.prioritized!);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const got = await call;
      done = true;
      await sampling;
      expect(got).toEqual(xs.map((x) => x * x));
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(1000);
    } finally {
      await plain.close();
    }
  }, 60_000);
});

describe('ClusterPool: failures', () => {
  it('a worker machine SIGKILLed mid-map: its jobs go to the other worker and map completes', async () => {
    const queue = freshQueue();
    const [a, b] = await Promise.all([worker(queue, { processes: 2 }), worker(queue, { processes: 2 })]);
    const cp = pool({ queue });
    const items = Array.from({ length: 40 }, (_, i) => i);
    const slow = cp.starmap(tasks.whoRan, items.map((x) => [x, 150]), { chunksize: 1 });
    // Both machines have jobs in hand by then (each takes 2 × processes at once).
    await new Promise((r) => setTimeout(r, 800));
    a.proc.kill('SIGKILL');
    const results = (await slow) as Array<{ x: number; machine: string }>;
    expect(results.map((r) => r.x)).toEqual(items);
    expect(results.some((r) => r.machine === b.machine)).toBe(true);
    expect(await a.exited).toEqual({ code: null, signal: 'SIGKILL' });
  }, 60_000);

  it('a worker given SIGTERM finishes the jobs in hand and exits 0; the rest wait for another worker', async () => {
    const queue = freshQueue();
    const a = await worker(queue, { processes: 1 });
    const cp = pool({ queue });
    const call = cp.starmap(tasks.whoRan, [0, 1, 2, 3, 4, 5].map((x) => [x, 400]), { chunksize: 1 });
    await new Promise((r) => setTimeout(r, 600));
    a.proc.kill('SIGTERM');
    expect(await a.exited).toEqual({ code: 0, signal: null });
    const b = await worker(queue, { processes: 2 });
    const results = (await call) as Array<{ x: number; machine: string }>;
    expect(results.map((r) => r.x)).toEqual([0, 1, 2, 3, 4, 5]);
    const byA = results.filter((r) => r.machine === a.machine).length;
    expect(byA).toBeGreaterThan(0);
    expect(byA + results.filter((r) => r.machine === b.machine).length).toBe(6);
  }, 60_000);

  it('a task that kills its process fails its call with WorkerDiedError, as in Pool; the worker starts another process and goes on', async () => {
    const queue = freshQueue();
    const w = await worker(queue, { processes: 1 });
    const cp = pool({ queue });
    const [theirs, mine] = await Promise.all([cp.apply(tasks.dieNow, []).catch((e: Error) => e), local.apply(tasks.dieNow, []).catch((e: Error) => e)]);
    expect(mine).toMatchObject({ name: 'WorkerDiedError', code: 'ERR_WORKER_DIED', exitCode: -9 });
    expect(theirs).toMatchObject({ name: mine.name, code: 'ERR_WORKER_DIED', exitCode: -9 });
    expect(theirs.message).toMatch(/^nodemp worker process \d+ on .* was killed by signal 9 while running job /);
    expect(await cp.apply(tasks.add, [2, 3])).toBe(5);
    expect(w.stderr).toMatch(/local process \d+ was killed by signal 9; starting another/);
  }, 60_000);

  it('local processes SIGKILLed at random moments mid-map: each is replaced, its jobs are tried again, and map gives every answer', async () => {
    const queue = freshQueue();
    const w = await worker(queue, { processes: 2 });
    const cp = pool({ queue, attempts: 20 });
    const items = Array.from({ length: 120 }, (_, i) => i);
    const call = cp.starmap(tasks.whoRan, items.map((x) => [x, 15]), { chunksize: 1 });
    // The supervisor's grandchildren are its local processes (its children: the fork server and the tracker).
    let seed = 20261202;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    let settled = false;
    void call.finally(() => (settled = true)).catch(() => {});
    const killed: number[] = [];
    while (!settled && killed.length < 8) {
      await new Promise((r) => setTimeout(r, 100 + 300 * random()));
      const local = childrenOf(w.pid!)
        .flatMap(childrenOf)
        .filter((pid) => !killed.includes(pid) && running(pid));
      if (settled || local.length === 0) continue;
      const victim = local[Math.floor(random() * local.length)]!;
      process.kill(victim, 'SIGKILL');
      killed.push(victim);
    }
    const results = (await call) as Array<{ x: number; pid: number }>;
    expect(results.map((r) => r.x)).toEqual(items);
    expect(killed.length).toBeGreaterThan(2);
    expect(w.stderr.match(/was killed by signal 9; starting another/g)?.length).toBe(killed.length);
    expect(await cp.apply(tasks.add, [1, 2])).toBe(3);
  }, 90_000);

  it('a task that holds its process longer than a job lock lasts runs once: the worker keeps the lock for it', async () => {
    const queue = freshQueue();
    await Promise.all([worker(queue, { processes: 1, lockDuration: 1000 }), worker(queue, { processes: 1, lockDuration: 1000 })]);
    const path = join(mkdtempSync(join(tmpdir(), 'nodemp-long-')), 'runs');
    const cp = pool({ queue });
    expect(await cp.apply(tasks.markThenSpin, [path, 4000])).toBe(1);
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(1);
  }, 60_000);

  it('no Redis at the address: ClusterError ERR_REDIS_UNREACHABLE, within about a second', async () => {
    const cp = new ClusterPool({ redis: 'redis://127.0.0.1:1', queue: 'nowhere' });
    const t0 = Date.now();
    await expect(cp.apply(tasks.add, [1, 2])).rejects.toMatchObject({ name: 'ClusterError', code: 'ERR_REDIS_UNREACHABLE' });
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(() => cp.applySync(tasks.add, [1, 2])).toThrow(expect.objectContaining({ name: 'ClusterError', code: 'ERR_REDIS_UNREACHABLE' }));
    await cp.terminate();
  });

  it('Redis lost with calls pending: they reject with ERR_REDIS_LOST after reconnectTimeout, not hang', async () => {
    const other = await startRedis();
    try {
      const cp = new ClusterPool({ redis: other.url, queue: 'lost', reconnectTimeout: 500 });
      pools.push(cp);
      const call = cp.map(tasks.square, [1, 2, 3]).catch((e: Error) => e);
      const plain = new Queue('lost', { connection: { host: '127.0.0.1', port: other.port } });
      await expect.poll(() => plain.getWaitingCount(), { timeout: 10_000 }).toBeGreaterThan(0);
      await plain.close();
      await other.stop();
      expect(await call).toMatchObject({ name: 'ClusterError', code: 'ERR_REDIS_LOST' });
      await expect(cp.apply(tasks.add, [1, 1])).rejects.toMatchObject({ code: 'ERR_REDIS_LOST' });
    } finally {
      await other.stop();
    }
  });
});

describe('ClusterPool: the README example', () => {
  it('examples/cluster-map.mjs runs against a worker started as the README says', async () => {
    const queue = freshQueue();
    await worker(queue, { processes: 2, extra: ['--preload', './examples/cluster-tasks.mjs'] });
    const r = spawnSync(process.execPath, [join(root, 'examples', 'cluster-map.mjs'), redis.url, queue], { encoding: 'utf8', cwd: root, timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('primes below 100000: 9592\nCollatz steps of 27: 111\n');
    expect(r.status).toBe(0);
  }, 90_000);
});
