import { afterEach, describe, expect, it } from 'vitest';
import {
  AsyncResult,
  Pool,
  PoolError,
  RemoteTraceback,
  SerializationError,
  TimeoutError,
  WorkerDiedError,
  cpuCount,
} from '../dist/index.js';
import { childrenOf, openFds, running, runScript, shared, shmEntries, waitUntil } from './helpers.js';
import { busySleep } from './sync-helpers.js';

const square = (x: number): number => x * x;
const add = (a: number, b: number): number => a + b;
const pid = (): number => process.pid;

let pools: Pool[] = [];
function pool(options?: ConstructorParameters<typeof Pool>[0]): Pool {
  const p = new Pool(options);
  pools.push(p);
  return p;
}

afterEach(async () => {
  for (const p of pools) await p.terminate();
  pools = [];
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const v of it) out.push(v);
  return out;
}

describe('Pool: results', () => {
  it('apply, map, starmap, imap and imapUnordered, in both forms', async () => {
    const p = pool({ processes: 2 });
    expect(await p.apply(add, [2, 3])).toBe(5);
    expect(p.applySync(add, [4, 5])).toBe(9);
    const xs = Array.from({ length: 101 }, (_, i) => i);
    expect(await p.map(square, xs)).toEqual(xs.map(square));
    expect(await p.map(square, new Set([3, 4]), { chunksize: 1 })).toEqual([9, 16]);
    expect(p.mapSync(square, xs, { chunksize: 7 })).toEqual(xs.map(square));
    expect(await p.starmap(add, [[1, 2], [3, 4]])).toEqual([3, 7]);
    expect(p.starmapSync(add, [[5, 6]])).toEqual([11]);
    expect(await collect(p.imap(square, xs, { chunksize: 3 }))).toEqual(xs.map(square));
    expect((await collect(p.imapUnordered(square, xs))).sort((a, b) => a - b)).toEqual(xs.map(square));
    expect(await p.mapAsync(square, [2]).get()).toEqual([4]);
    expect(await p.starmapAsync(add, [[2, 2]]).get()).toEqual([4]);
  });

  it('imap reads an endless input lazily, and stops when the loop does', async () => {
    const p = pool({ processes: 2 });
    let pulled = 0;
    function* naturals(): Generator<number> {
      for (let i = 0; ; i++, pulled++) yield i;
    }
    const got: number[] = [];
    for await (const v of p.imap(square, naturals())) {
      got.push(v);
      if (got.length === 5) break;
    }
    expect(got).toEqual([0, 1, 4, 9, 16]);
    const after = pulled;
    expect(after).toBeLessThan(2000);
    expect(await p.map(square, [3])).toEqual([9]);
    expect(pulled).toBe(after);
  });

  it('an empty input gives an empty result without running anything', async () => {
    const p = pool({ processes: 1 });
    expect(await p.map(square, [])).toEqual([]);
    expect(await p.starmap(add, [])).toEqual([]);
    expect(await collect(p.imap(square, []))).toEqual([]);
    expect(p.pids).toEqual([]);
  });

  it('runs closures, async functions, and functions created after the workers were forked', async () => {
    const p = pool({ processes: 2 });
    const base = 100;
    const addBase = (x: number): number => x + base;
    expect(await p.map(addBase, [1, 2])).toEqual([101, 102]);
    const before = p.pids;
    // A function the workers cannot have: they were forked before it existed.
    const late = new Function('x', 'return x * 3') as (x: number) => number;
    expect(await p.map(late, [1, 2, 3])).toEqual([3, 6, 9]);
    expect(p.pids.some((x) => before.includes(x))).toBe(false);
    expect(await p.apply(async (x: number) => (await Promise.resolve(x)) + 1, [1])).toBe(2);
    // Known functions keep running on the current workers.
    const now = p.pids;
    expect(await p.map(addBase, [1])).toEqual([101]);
    expect(await p.apply(late, [2])).toBe(6);
    expect(p.pids.filter((x) => now.includes(x)).length, `before ${now}, after ${p.pids}`).toBeGreaterThan(0);
  });

  it('a CPU-bound map runs on several workers at once', async () => {
    const p = pool({ processes: 2 });
    const spans = await p.map(
      () => {
        const start = performance.timeOrigin + performance.now();
        let x = 0;
        for (let i = 0; i < 3e7; i++) x = (x + i) % 1000003;
        return { pid: process.pid, start, end: performance.timeOrigin + performance.now(), x };
      },
      [0, 1, 2, 3],
      { chunksize: 1 },
    );
    expect(new Set(spans.map((s) => s.pid)).size).toBe(2);
    const overlap = spans.some((a) => spans.some((b) => a.pid !== b.pid && a.start < b.end && b.start < a.end));
    expect(overlap).toBe(true);
  });

  it('imap streams results while later tasks still run', async () => {
    const p = pool({ processes: 2 });
    const started = shared(1);
    const n = 12;
    let seenAtFirst = -1;
    for await (const _ of p.imap(
      () => {
        Atomics.add(started, 0, 1);
        busySleep(30);
      },
      Array.from({ length: n }, (_, i) => i),
    )) {
      if (seenAtFirst < 0) seenAtFirst = Atomics.load(started, 0);
    }
    expect(seenAtFirst).toBeGreaterThan(0);
    expect(seenAtFirst).toBeLessThan(n);
    expect(Atomics.load(started, 0)).toBe(n);
  });
});

describe('Pool: values', () => {
  it('carries undefined, rejections of async tasks, Buffers and megabyte arguments and results', async () => {
    const shm = shmEntries();
    const p = pool({ processes: 2 });
    const echo = (x: unknown): unknown => x;
    const size = (x: string): number => x.length;
    const make = (n: number): Buffer => Buffer.alloc(n, 7);
    const fail = async (): Promise<never> => {
      await Promise.resolve();
      throw new URIError('async failure');
    };
    const results = await Promise.all([
      p.apply(echo, [undefined]),
      p.apply(size, ['x'.repeat(1 << 20)]),
      p.apply(make, [1 << 20]),
      p.apply(fail).catch((e: unknown) => e),
    ]);
    expect(results[0]).toBeUndefined();
    expect(results[1]).toBe(1 << 20);
    expect(Buffer.isBuffer(results[2]) && results[2].length === 1 << 20 && results[2][12345] === 7).toBe(true);
    expect(results[3]).toBeInstanceOf(URIError);
    expect((results[3] as Error).message).toBe('async failure');
    expect(shmEntries()).toEqual(shm);
  });
});

describe('Pool: AsyncResult', () => {
  it('get, wait, ready, successful, callback and errorCallback', async () => {
    const p = pool({ processes: 1 });
    let called: unknown = null;
    const r = p.applyAsync(add, [1, 2], { callback: (v) => (called = v) });
    expect(r).toBeInstanceOf(AsyncResult);
    expect(await r.get()).toBe(3);
    expect(r.ready()).toBe(true);
    expect(r.successful()).toBe(true);
    expect(called).toBe(3);
    let failed: unknown = null;
    const bad = p.applyAsync(
      () => {
        throw new Error('nope');
      },
      [],
      { errorCallback: (e) => (failed = e) },
    );
    expect(await bad.wait()).toBe(true);
    expect(bad.successful()).toBe(false);
    await expect(bad.get()).rejects.toThrow('nope');
    expect((failed as Error).message).toBe('nope');
    expect(p.applyAsync(add, [3, 4]).getSync()).toBe(7);
  });

  it('times out without losing the result, and successful() before it is ready throws', async () => {
    const p = pool({ processes: 1 });
    const r = p.applyAsync(() => {
      busySleep(300);
      return 'late';
    });
    expect(() => r.successful()).toThrow(PoolError);
    await expect(r.get(20)).rejects.toThrow(TimeoutError);
    expect(await r.wait(10)).toBe(false);
    expect(r.waitSync(10)).toBe(false);
    expect(() => r.getSync(10)).toThrow(TimeoutError);
    expect(await r.get()).toBe('late');
  });
});

describe('Pool: errors', () => {
  it('a task that throws rejects with an error of the same name and message, the worker stack as cause', async () => {
    const p = pool({ processes: 2 });
    const error = await p
      .apply(function explode() {
        throw new RangeError('out of range in the worker');
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toBe('out of range in the worker');
    const cause = (error as Error).cause as Error;
    expect(cause).toBeInstanceOf(RemoteTraceback);
    expect(cause.stack).toContain('explode');
    const custom = await p
      .apply(() => {
        throw Object.assign(new Error('with a code'), { name: 'CustomError', code: 'E_CUSTOM' });
      })
      .catch((e: unknown) => e);
    expect(custom).toMatchObject({ name: 'CustomError', message: 'with a code', code: 'E_CUSTOM' });
    await expect(p.map((x: number) => (x === 3 ? JSON.parse('{') : x), [1, 2, 3, 4], { chunksize: 1 })).rejects.toThrow(SyntaxError);
    // The other tasks went on, and the pool still works.
    expect(await p.map(square, [1, 2, 3])).toEqual([1, 4, 9]);
  });

  it('a worker that dies fails its task with WorkerDiedError and is replaced; nothing hangs', async () => {
    const p = pool({ processes: 2 });
    const exit = await p.apply(() => process.exit(7)).catch((e: unknown) => e);
    expect(exit).toBeInstanceOf(WorkerDiedError);
    expect(exit).toMatchObject({ code: 'ERR_WORKER_DIED', exitCode: 7 });
    const killed = await p.apply(() => process.kill(process.pid, 'SIGKILL')).catch((e: unknown) => e);
    expect(killed).toMatchObject({ name: 'WorkerDiedError', exitCode: -9 });
    expect((killed as Error).message).toMatch(/killed by signal 9/);
    await expect(
      p.map((x: number) => (x === 5 ? process.kill(process.pid, 'SIGKILL') : x), Array.from({ length: 20 }, (_, i) => i), { chunksize: 1 }),
    ).rejects.toThrow(WorkerDiedError);
    expect(() => p.applySync(() => process.exit(1))).toThrow(WorkerDiedError);
    expect(await p.map(square, [1, 2, 3, 4, 5, 6], { chunksize: 1 })).toEqual([1, 4, 9, 16, 25, 36]);
    for (const x of p.pids) expect(running(x)).toBe(true);
  });

  it('over 80 worker generations with workers killed at random, even mid-answer: every task gets its value or WorkerDiedError, nothing hangs', async () => {
    // The results come back on one queue written by every worker; each new
    // worker takes a row of its party table (32 of them), and a worker killed
    // while it puts its answer must not stall the pool (issue #11).
    const p = pool({ processes: 2, maxtasksperchild: 1 });
    const answer = (i: number): Buffer => Buffer.alloc(3000 + (i % 7) * 500, i % 251);
    let killing = true;
    let settledSoFar = 0;
    const killer = (async () => {
      let kills = 0;
      let settledAtKill = -1;
      while (killing) {
        await new Promise((r) => setTimeout(r, 3 + Math.random() * 12));
        // At most one kill per settled task: a killer faster than the pool
        // can start workers kills most of them before they answer, and the
        // test then measures the machine's speed (it took 13 to 31 s here).
        if (settledSoFar === settledAtKill) continue;
        // The workers themselves: p.pids leaves out those retiring after their one task.
        const pids = childrenOf(process.pid);
        if (pids.length === 0) continue;
        settledAtKill = settledSoFar;
        try {
          process.kill(pids[Math.floor(Math.random() * pids.length)], 'SIGKILL');
          kills++;
        } catch {
          // it had just exited, after its one task
        }
      }
      return kills;
    })();
    const settled = await Promise.allSettled(Array.from({ length: 120 }, (_, i) => p.apply(answer, [i]).finally(() => settledSoFar++)));
    killing = false;
    const kills = await killer;
    expect(kills).toBeGreaterThan(0);
    for (const [i, r] of settled.entries()) {
      if (r.status === 'fulfilled') expect(Buffer.compare(r.value as Buffer, answer(i))).toBe(0);
      else expect(r.reason).toBeInstanceOf(WorkerDiedError);
    }
    expect(settled.filter((r) => r.status === 'fulfilled').length).toBeGreaterThan(0);
    expect(await p.map(square, [1, 2, 3], { chunksize: 1 })).toEqual([1, 4, 9]);
  });

  it('tasks queued behind a dying task still run, on other workers', async () => {
    const p = pool({ processes: 1 });
    const results = await Promise.allSettled([
      p.apply(() => {
        busySleep(50);
        process.kill(process.pid, 'SIGKILL');
      }),
      p.apply(add, [1, 1]),
      p.apply(add, [2, 2]),
    ]);
    expect(results[0]).toMatchObject({ status: 'rejected', reason: { name: 'WorkerDiedError' } });
    expect(results.slice(1)).toEqual([
      { status: 'fulfilled', value: 2 },
      { status: 'fulfilled', value: 4 },
    ]);
  });

  it('an error from the input surfaces at its position', async () => {
    const p = pool({ processes: 2 });
    function* items(): Generator<number> {
      yield 1;
      yield 2;
      yield 3;
      throw new Error('input broke at 3');
    }
    await expect(p.map(square, items())).rejects.toThrow('input broke at 3');
    const got: number[] = [];
    const error = await (async () => {
      for await (const v of p.imap(square, items())) got.push(v);
    })().catch((e: unknown) => e);
    expect(got).toEqual([1, 4, 9]);
    expect((error as Error).message).toBe('input broke at 3');
    const failing = p.imap((x: number) => {
      if (x === 2) throw new TypeError('task 2 failed');
      return x;
    }, [0, 1, 2, 3], { chunksize: 4 });
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const v of failing) seen.push(v);
      })(),
    ).rejects.toThrow('task 2 failed');
    expect(seen).toEqual([0, 1]);
  });

  it('unserializable arguments or results give a clear error and keep the worker', async () => {
    const p = pool({ processes: 1 });
    // One function for every call, so that no call needs a fresh worker.
    const probe = (x: unknown): unknown => (x === 'pid' ? process.pid : x === 'fn' ? { f: () => 1 } : x);
    const first = await p.apply(probe, ['pid']);
    await expect(p.apply(probe, [() => 1])).rejects.toThrow(SerializationError);
    await expect(p.map(probe, [1, Symbol('s')])).rejects.toThrow(/symbol/);
    const result = await p.apply(probe, ['fn']).catch((e: unknown) => e);
    expect(result).toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_SERIALIZABLE' });
    expect((result as Error).message).toMatch(/could not be sent back.*function/);
    expect(await p.apply(probe, ['pid'])).toBe(first);
  });

  it("takes null as Python's None: processes, initializer, initargs and maxtasksperchild", async () => {
    const p = pool({ processes: null, initializer: null, initargs: null, maxtasksperchild: null });
    expect(p.processes).toBe(cpuCount());
    expect(await p.apply(add, [1, 2])).toBe(3);
  });

  it('rejects bad arguments with clear errors', () => {
    expect(() => new Pool({ processes: 0 })).toThrow(RangeError);
    expect(() => new Pool({ processes: -1 })).toThrow(RangeError);
    expect(() => new Pool({ processes: 1.5 })).toThrow(RangeError);
    expect(() => new Pool({ processes: '2' as unknown as number })).toThrow(TypeError);
    expect(() => new Pool({ maxtasksperchild: 0 })).toThrow(RangeError);
    expect(() => new Pool({ initializer: 5 as unknown as () => void })).toThrow(TypeError);
    const p = pool({ processes: 1 });
    expect(() => p.applyAsync(5 as unknown as () => void)).toThrow(TypeError);
    expect(() => p.applyAsync(add, 5 as unknown as [])).toThrow(TypeError);
    expect(() => p.mapAsync(square, 5 as unknown as number[])).toThrow(TypeError);
    expect(() => p.mapAsync(square, [1], { chunksize: 0 })).toThrow(RangeError);
    expect(() => p.starmapAsync(add, [5 as unknown as number[]])).toThrow(TypeError);
  });

  it('a program that cannot fork learns it from the constructor of a fork pool (its default is forkserver); a failed fork fails the call, not the program', async () => {
    const r = runScript(
      `
      import { Pool, ForkSafetyError } from NODEMP;
      try { new Pool({ startMethod: 'fork' }); } catch (e) { console.log(e instanceof ForkSafetyError, e.code); }
      const p = new Pool({ processes: 1 });
      console.log(p.startMethod);
      await p.terminate();
    `,
      { nodeArgs: [] },
    );
    expect(r.stdout.trim()).toBe('true ERR_FORK_UNSAFE\nforkserver');
    const p = pool({ processes: 1 });
    // A task that makes a pool of its own: a daemon (a pool worker) cannot have children.
    const inner = await p.apply(() => new Pool({ processes: 1 }).apply(Math.abs, [-1])).catch((e: unknown) => e);
    expect(inner).toMatchObject({ name: 'ProcessError', code: 'ERR_DAEMON_CHILDREN' });
    expect(await p.apply(Math.abs, [-2])).toBe(2);
  });

  it('a replacement worker runs none of the pool owner’s pending work: no job’s handler, no join of its predecessor', () => {
    // Workers die mid-task (the replacement is forked from the exit notice)
    // and retire after each task (forked while the old one's join is due).
    const r = runScript(`
      import { Pool } from NODEMP;
      const owner = process.pid;
      const where = () => (process.pid === owner ? 'owner' : 'worker ' + process.pid);
      const dies = new Pool({ processes: 1 });
      const jobs = [0, 1, 2, 3].map((i) =>
        dies.apply((x) => { if (x % 2 === 0) process.kill(process.pid, 'SIGKILL'); return x; }, [i]).then(
          (v) => console.log(where(), 'ok', v),
          (e) => console.log(where(), 'failed', i, e.name),
        ),
      );
      await Promise.all(jobs);
      await dies.close();
      await dies.join();
      const retires = new Pool({ processes: 2, maxtasksperchild: 2 });
      for (let round = 0; round < 3; round++) console.log(where(), 'round', (await retires.map((x) => x * 2, [1, 2, 3, 4, 5, 6, 7, 8], { chunksize: 1 })).join(','));
      await retires.close();
      await retires.join();
    `);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual([
      'owner failed 0 WorkerDiedError',
      'owner ok 1',
      'owner failed 2 WorkerDiedError',
      'owner ok 3',
      'owner round 2,4,6,8,10,12,14,16',
      'owner round 2,4,6,8,10,12,14,16',
      'owner round 2,4,6,8,10,12,14,16',
    ]);
  });

  it('a worker cannot use the pool it belongs to', async () => {
    const p = pool({ processes: 1 });
    const e = await p.apply(() => p.applySync(square, [2])).catch((x: unknown) => x);
    expect(e).toMatchObject({ name: 'PoolError', code: 'ERR_NOT_POOL_OWNER' });
  });
});

describe('Pool: mailbox and rings', () => {
  // Small tasks for a worker holding none sent through its ring go through
  // its mailbox, and so do their answers; the rest go through the rings.
  // Which path a call takes is invisible to it: these mixes must come back
  // right and run in the order they were sent, whichever way each went.
  type Kind = 'small' | 'bigArg' | 'bigAnswer' | 'object' | 'throws';
  const kinds: Kind[] = ['small', 'bigArg', 'bigAnswer', 'object', 'throws'];

  function mixedTask(order: Int32Array): (seq: number, kind: Kind, pad?: string) => unknown {
    return (seq, kind) => {
      const ran = Atomics.add(order, 0, 1);
      if (ran !== seq) throw new Error(`task ${seq} ran as number ${ran}`);
      if (kind === 'bigAnswer') return 'y'.repeat(5000) + seq;
      if (kind === 'object') return { seq };
      if (kind === 'throws') throw new RangeError(`task ${seq} throws`);
      return seq;
    };
  }

  function expected(seq: number, kind: Kind): unknown {
    if (kind === 'bigAnswer') return 'y'.repeat(5000) + seq;
    if (kind === 'object') return { seq };
    return seq;
  }

  it('a mix of small and large tasks, answers and errors on one worker runs in the order sent, in the async and blocking forms', async () => {
    const order = shared(1);
    const p = pool({ processes: 1 });
    const task = mixedTask(order);
    let seed = 20261202;
    const next = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    let seq = 0;
    for (let round = 0; round < 12; round++) {
      // Bursts sent at once, so that the worker holds several: some mailed, some behind them in its ring.
      const burst = Array.from({ length: 1 + Math.floor(next() * 9) }, () => kinds[Math.floor(next() * kinds.length)]!);
      const calls = burst.map((kind) => {
        const s = seq++;
        return { s, kind, result: p.applyAsync(task, kind === 'bigArg' ? [s, kind, 'x'.repeat(5000)] : [s, kind]) };
      });
      for (const [i, { s, kind, result }] of calls.entries()) {
        if (kind === 'throws') {
          const error = (i % 2 === 0 ? await result.get().catch((e: unknown) => e) : (() => { try { result.getSync(); } catch (e) { return e; } })()) as Error;
          expect(error).toBeInstanceOf(RangeError);
          expect(error.message).toBe(`task ${s} throws`);
        } else {
          expect(i % 2 === 0 ? await result.get() : result.getSync()).toEqual(expected(s, kind));
        }
      }
    }
    expect(order[0]).toBe(seq);
    // All at once: the worker's mailbox slots are reused while answers come both ways.
    const all = Array.from({ length: 1500 }, () => {
      const s = seq++;
      const kind = (['small', 'small', 'object', 'throws', 'bigAnswer'] as const)[Math.floor(next() * 5)]!;
      return { s, kind, result: p.apply(task, [s, kind]).catch((e: unknown) => e) };
    });
    for (const { s, kind, result } of all) {
      if (kind === 'throws') expect(await result).toMatchObject({ name: 'RangeError', message: `task ${s} throws` });
      else expect(await result).toEqual(expected(s, kind));
    }
    expect(order[0]).toBe(seq);
  });

  it('an answer taken by a blocking call also ends an awaiting call, and an idle pool lets the program exit', async () => {
    const p = pool({ processes: 2 });
    const slow = (x: number): number => {
      busySleep(50);
      return x * x;
    };
    const waiting = p.apply(slow, [7]);
    expect(p.applySync(square, [4])).toBe(16);
    expect(p.mapSync(square, [1, 2, 3], { chunksize: 1 })).toEqual([1, 4, 9]);
    expect(await waiting).toBe(49);
    const out = runScript(`
      import { Pool } from NODEMP;
      const p = new Pool({ processes: 2, startMethod: 'fork' });
      const a = p.apply((x) => x + 1, [1]);
      console.log(p.applySync((x) => x * 2, [21]), await a);
    `);
    expect(out.status).toBe(0);
    expect(out.stdout.trim()).toBe('42 2');
  });
});

describe('Pool: scheduling', () => {
  it('long tasks spread over the workers even after tiny ones grew how far ahead they are sent', async () => {
    const p = pool({ processes: 2 });
    const task = (long: boolean): { pid: number; long: boolean } => {
      busySleep(long ? 100 : 5);
      return { pid: process.pid, long };
    };
    // Submitted in one tick, so the workers forked for them know both functions.
    await Promise.all([p.map(square, Array.from({ length: 20_000 }, (_, i) => i), { chunksize: 1 }), p.apply(task, [false])]);
    const ran = await p.map(task, [true, false, true, false, true, false, true, false], { chunksize: 1 });
    const longPerPid = new Map<number, number>();
    for (const r of ran) if (r.long) longPerPid.set(r.pid, (longPerPid.get(r.pid) ?? 0) + 1);
    expect(Math.max(...longPerPid.values())).toBeLessThanOrEqual(3);
  });

  it('a worker that died between tasks is replaced without running a task twice', async () => {
    const p = pool({ processes: 3 });
    await p.map(square, [1, 2], { chunksize: 1 });
    expect(p.pids).toHaveLength(2);
    const [victim] = p.pids;
    process.kill(victim, 'SIGKILL');
    busySleep(100);
    const runs = shared(1);
    const once = (): number => Atomics.add(runs, 0, 1);
    await p.apply(once);
    await waitUntil(() => false, 100);
    expect(Atomics.load(runs, 0)).toBe(1);
    expect(await p.map(square, [5, 6, 7], { chunksize: 1 })).toEqual([25, 36, 49]);
  });
});

describe('Pool: cancellation and limits', () => {
  it('an AbortSignal rejects the call and replaces the worker running it', async () => {
    const p = pool({ processes: 1 });
    const before = await p.apply(pid);
    const ac = new AbortController();
    const call = p.apply(() => busySleep(10_000), [], { signal: ac.signal });
    await waitUntil(() => false, 100);
    ac.abort();
    await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    expect(await waitUntil(() => !running(before))).toBe(true);
    const after = await p.apply(pid);
    expect(after).not.toBe(before);
    await expect(p.apply(pid, [], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await expect(p.map(square, [1, 2], { signal: AbortSignal.abort(new Error('mine')) })).rejects.toThrow('mine');
    expect(await p.apply(pid)).toBe(after);
  });

  it('an imap in progress ends with the error when aborted or when the pool is terminated', async () => {
    const p = pool({ processes: 2 });
    const slow = (x: number): number => {
      busySleep(20);
      return x;
    };
    const ac = new AbortController();
    const seen: number[] = [];
    const aborted = (async () => {
      for await (const v of p.imap(slow, [0, 1, 2, 3, 4, 5, 6, 7], { signal: ac.signal })) {
        seen.push(v);
        if (seen.length === 2) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(await aborted).toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual([0, 1]);
    const q = pool({ processes: 1 });
    const got: number[] = [];
    const ended = (async () => {
      for await (const v of q.imap(slow, [0, 1, 2, 3, 4, 5])) {
        got.push(v);
        if (got.length === 1) void q.terminate();
      }
    })().catch((e: unknown) => e);
    expect(await ended).toMatchObject({ name: 'PoolError', code: 'ERR_POOL_TERMINATED' });
    expect(got).toEqual([0]);
  });

  it('close() during an imap lets it finish', async () => {
    const p = pool({ processes: 2 });
    const out: number[] = [];
    const it = p.imap(square, [1, 2, 3, 4, 5]);
    p.close();
    for await (const v of it) out.push(v);
    expect(out).toEqual([1, 4, 9, 16, 25]);
    await p.join();
  });

  it('maxtasksperchild recycles workers', async () => {
    const p = pool({ processes: 2, maxtasksperchild: 1 });
    const pids = await p.map(pid, [0, 1, 2, 3, 4, 5], { chunksize: 1 });
    expect(new Set(pids).size).toBe(6);
    const q = pool({ processes: 1, maxtasksperchild: 2 });
    const two = await q.map(pid, [0, 1, 2, 3], { chunksize: 1 });
    expect(new Set(two).size).toBe(2);
  });

  it('initializer and initargs run in each worker before its tasks; one that throws breaks the pool', async () => {
    const p = pool({
      processes: 2,
      initializer: (tag: string) => {
        (globalThis as Record<string, unknown>).poolTag = `${tag}:${process.pid}`;
      },
      initargs: ['init'],
    });
    const tags = await p.map(() => (globalThis as Record<string, unknown>).poolTag, [1, 2, 3, 4], { chunksize: 1 });
    for (const t of tags) expect(t).toMatch(/^init:\d+$/);
    expect((globalThis as Record<string, unknown>).poolTag).toBeUndefined();
    const broken = pool({
      processes: 1,
      initializer: () => {
        throw new Error('cannot start');
      },
    });
    const e = await broken.apply(square, [2]).catch((x: unknown) => x);
    expect(e).toMatchObject({ name: 'PoolError', code: 'ERR_POOL_BROKEN' });
    expect((e as Error).message).toContain('cannot start');
    expect(() => broken.applyAsync(square, [2])).toThrow(PoolError);
  });
});

describe('Pool: diagnostics', () => {
  it('the state a soak reports for a slow or hung call shows an exit not yet delivered, and does not deliver it', async () => {
    const p = pool({ processes: 2 });
    await p.map(square, [1, 2, 3, 4], { chunksize: 1 });
    const [first] = p.pids;
    process.kill(first!, 'SIGKILL');
    // Dead, and not yet seen dead by the pool (this thread waits without
    // letting the event loop run).
    const until = Date.now() + 5000;
    while (running(first!) && Date.now() < until) busySleep(1);
    expect(running(first!)).toBe(false);
    type State = { workers: { pid: number; exitWatch: { readable: boolean } | null }[]; pumpAtTurn: boolean; sleeps: unknown[]; guard: object };
    const state = (p as unknown as Record<symbol, () => State>)[Symbol.for('nodemp.pool.state')]!();
    expect(state.workers.map((w) => w.pid)).toContain(first);
    if (process.platform === 'linux') expect(state.workers.find((w) => w.pid === first)!.exitWatch).toMatchObject({ readable: true });
    // Taking the state left the exit to the event loop: the soak takes one
    // while a call is still running, and must not end the wait it looks at.
    expect(p.pids).toContain(first);
    expect(state.pumpAtTurn).toBe(false);
    expect(state.sleeps).toEqual([]);
    // The loop-stall guard's own state rides along, with its latest ticks.
    expect(state.guard).toMatchObject({ canStall: expect.any(Boolean), ticking: expect.any(Boolean), turnWaiters: 0, recentTicks: expect.any(Array) });
    await p.map(square, [5, 6], { chunksize: 1 });
    expect(p.pids).not.toContain(first);
  });
});

describe('Pool: shutting down', () => {
  it('close() lets the work finish, join() waits for the workers; use after close throws', async () => {
    const p = pool({ processes: 2 });
    await expect(p.join()).rejects.toMatchObject({ code: 'ERR_POOL_RUNNING' });
    const work = p.map(square, [1, 2, 3, 4], { chunksize: 1 });
    const workers = p.pids;
    p.close();
    expect(() => p.applyAsync(square, [1])).toThrow(PoolError);
    await expect(p.apply(square, [1])).rejects.toMatchObject({ code: 'ERR_POOL_CLOSED' });
    await p.join();
    expect(await work).toEqual([1, 4, 9, 16]);
    for (const x of workers) expect(running(x)).toBe(false);
    const q = pool({ processes: 1 });
    q.applySync(square, [1]);
    q.close();
    q.joinSync();
    expect(childrenOf(process.pid).filter((x) => running(x))).toEqual([]);
    // A pool that is done leaves no 'exit' listener behind.
    const listeners = process.listenerCount('exit');
    const r = new Pool({ processes: 1 });
    expect(process.listenerCount('exit')).toBe(listeners + 1);
    await r.apply(square, [1]);
    r.close();
    await r.join();
    expect(process.listenerCount('exit')).toBe(listeners);
  });

  it('joinSync() after mapAsync() and close() lets the workers go', () => {
    const p = pool({ processes: 2 });
    const r = p.mapAsync(square, [1, 2, 3, 4, 5, 6, 7, 8], { chunksize: 1 });
    const workers = p.pids;
    p.close();
    p.joinSync();
    expect(r.ready()).toBe(true);
    expect(r.getSync()).toEqual([1, 4, 9, 16, 25, 36, 49, 64]);
    for (const x of [...workers, ...p.pids]) expect(running(x)).toBe(false);
  });

  it('terminate() with large batches still waiting for a hung worker, then process.exit(), ends', () => {
    const r = runScript(
      `
      import { Pool } from NODEMP;
      const task = (s) => { if (s === 'hang') for (;;); return s.length; };
      const pool = new Pool({ processes: 1 });
      // Tiny tasks first, so the worker is sent far ahead; then more 8 KB tasks than its queue holds.
      const items = [...Array(2000).fill('a'), 'hang', ...Array.from({ length: 300 }, (_, i) => String(i).padEnd(8192, 'x'))];
      const work = pool.map(task, items, { chunksize: 1 }).catch((e) => e.code);
      await new Promise((r) => setTimeout(r, 200));
      await pool.terminate();
      console.log('terminated', await work);
      process.exit(0);
    `,
      { timeout: 15000 },
    );
    expect(r.stdout).toContain('terminated ERR_POOL_TERMINATED');
    expect(r.status).toBe(0);
  });

  it('terminate() kills workers even when tasks hang, and rejects what was pending', async () => {
    const p = pool({ processes: 2 });
    const hung = p.map(() => {
      for (;;);
    }, [1, 2], { chunksize: 1 });
    const outcome = hung.catch((e: unknown) => e);
    await waitUntil(() => p.pids.length === 2);
    const workers = p.pids;
    await p.terminate();
    expect(await outcome).toMatchObject({ name: 'PoolError', code: 'ERR_POOL_TERMINATED' });
    for (const x of workers) expect(running(x)).toBe(false);
    expect(() => p.applyAsync(square, [1])).toThrow(PoolError);
    await p.join();
    const q = pool({ processes: 1 });
    const deaf = shared(1);
    const r = q.applyAsync(() => {
      process.on('SIGTERM', () => {});
      Atomics.store(deaf, 0, 1);
      for (;;);
    });
    const rejected = r.get().catch((e: unknown) => e);
    await waitUntil(() => Atomics.load(deaf, 0) === 1);
    const t0 = performance.now();
    q.terminateSync();
    // SIGTERM did nothing; SIGKILL came after the grace period.
    expect(performance.now() - t0).toBeGreaterThan(500);
    expect(await rejected).toBeInstanceOf(PoolError);
  });

  it('Symbol.asyncDispose terminates the pool', async () => {
    const p = new Pool({ processes: 1 });
    const worker = await p.apply(pid);
    await p[Symbol.asyncDispose]();
    expect(running(worker)).toBe(false);
  });

  it('leaves no processes, descriptors or /dev/shm entries behind', async () => {
    // A shared mapping's memfd lives as long as the mapping, until the garbage collector takes the pool's
    // queues: the descriptors that must be gone at once are the rest (sockets, pipes, pidfds).
    const notMemory = (): string[] => openFds().filter((f) => !f.includes('/memfd:'));
    const fds = notMemory().length;
    const shm = shmEntries();
    for (let i = 0; i < 5; i++) {
      const p = new Pool({ processes: 2 });
      await p.map(square, [1, 2, 3], { chunksize: 1 });
      await p.map((x: number) => x + i, [1]);
      await p.terminate();
    }
    expect(childrenOf(process.pid).filter((x) => running(x))).toEqual([]);
    expect(notMemory().length).toBeLessThanOrEqual(fds);
    expect(shmEntries()).toEqual(shm);
  });

  it('workers die with a parent killed by SIGKILL, and a program whose pool is idle exits', () => {
    const r = runScript(`
      import { Pool } from NODEMP;
      const pool = new Pool({ processes: 2 });
      const pids = await pool.map(() => process.pid, [1, 2, 3, 4], { chunksize: 1 });
      console.log('workers', [...new Set(pids)].join(' '));
      if (process.argv[2] === 'kill') process.kill(process.pid, 'SIGKILL');
    `, { args: ['kill'] });
    expect(r.signal).toBe('SIGKILL');
    const killedWorkers = r.stdout.match(/workers ([\d ]+)/)![1].split(' ').map(Number);
    const normal = runScript(`
      import { Pool } from NODEMP;
      const pool = new Pool({ processes: 2 });
      const pids = await pool.map(() => process.pid, [1, 2, 3, 4], { chunksize: 1 });
      console.log('workers', [...new Set(pids)].join(' '));
    `);
    expect(normal.status).toBe(0);
    const exitedWorkers = normal.stdout.match(/workers ([\d ]+)/)![1].split(' ').map(Number);
    return waitUntil(() => [...killedWorkers, ...exitedWorkers].every((x) => !running(x))).then((gone) => expect(gone).toBe(true));
  });
});
