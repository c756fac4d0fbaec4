// Asynchronous waits sleep through io_uring (Linux 6.7+) or on native helper
// threads. They must not hold a forked child alive, must not be lost for the
// parent across a fork, and must scale to many waits at once, either way.
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Event, Process, Semaphore } from '../dist/index.js';
import { native } from '../dist/native.js';
import { openFds, runScript } from './helpers.js';
import { TIMED_OUT, WOKEN, runAsync, runSync, sleep } from '../dist/waiting.js';
import { busySleep, spawnChild } from './sync-helpers.js';

describe('asynchronous waits', () => {
  it('a pending wait() in the parent neither keeps a forked child alive nor is lost by the fork', async () => {
    const e = new Event();
    const pending = e.wait(10000);
    const child = new Process({ target: () => console.log('child ran') });
    child.start();
    await child.join(10000);
    expect(child.exitCode).toBe(0);
    const setter = spawnChild(() => e.set());
    expect(await pending).toBe(true);
    await setter.join();
  });

  it('a child may wait asynchronously itself after being forked during a parent wait', async () => {
    const a = new Event();
    const b = new Event();
    const pending = a.wait(10000);
    const child = spawnChild(async () => {
      process.exitCode = (await b.wait(10000)) ? 0 : 9;
    });
    busySleep(50);
    b.set();
    await child.join(10000);
    expect(child.exitCode).toBe(0);
    a.set();
    expect(await pending).toBe(true);
  });

  it('200 concurrent waits all resolve, then leave no descriptors behind', async () => {
    const before = openFds();
    const s = new Semaphore(0);
    const results = Array.from({ length: 200 }, () => s.acquire({ timeout: 20000 }));
    const child = spawnChild(() => {
      for (let i = 0; i < 200; i++) s.release();
    });
    expect((await Promise.all(results)).every(Boolean)).toBe(true);
    await child.join();
    expect(s.getValue()).toBe(0);
    expect(openFds()).toEqual(before);
  });

  it('through io_uring where the kernel has it, 2000 waits at once start no helper thread and all end, when woken together', async () => {
    const s = new Semaphore(0);
    const first = s.acquire({ timeout: 20000 });
    if (native.waitMechanism() !== 'io_uring') {
      s.release();
      await first;
      return;
    }
    const threads = readdirSync('/proc/self/task').length;
    // Each wait with a timeout completes twice (the wait and its timer): far more completions at once than the ring holds.
    const results = [first, ...Array.from({ length: 1999 }, () => s.acquire({ timeout: 20000 }))];
    expect(readdirSync('/proc/self/task').length).toBe(threads);
    const child = spawnChild(() => {
      s.release(2000);
    });
    expect((await Promise.all(results)).every(Boolean)).toBe(true);
    await child.join();
  });

  it('a child forked from one wait\'s callback, with more waits done in the same batch, exits cleanly', async () => {
    // Found by the soak ("corrupted double-linked list" in a pool worker): the
    // fork happens inside the native loop that delivers a batch of finished
    // waits; the child came back into that loop and delivered the rest, jobs
    // that are the parent's and that the fork had already freed in it.
    for (let round = 0; round < 5; round++) {
      const s = new Semaphore(0);
      const waits = Array.from({ length: 8 }, () => s.acquire({ timeout: 20000 }));
      const children: Process[] = [];
      void waits[0].then(() => {
        const child = new Process({ target: () => {} });
        child.start();
        children.push(child);
      });
      const releaser = spawnChild(() => s.release(8));
      expect((await Promise.all(waits)).every(Boolean)).toBe(true);
      await releaser.join();
      expect(children).toHaveLength(1);
      expect(await children[0].join(20000)).toBe(0);
    }
  });

  it('a timeout of 10 ms or more, kept by the loop\'s timer on the ring, ends each wait at its own time, never before it, and one woken first comes back woken', async () => {
    const buffer = native.mapShared(16);
    const words = new Int32Array(buffer);
    const wait = (index: number, timeout: number): Promise<[number, number]> => {
      const began = performance.now();
      return new Promise((resolve, reject) =>
        native.waitAsync(buffer, index * 4, 0, timeout, (error, result) => (error ? reject(error) : resolve([result as number, performance.now() - began]))),
      );
    };
    const order: number[] = [];
    const waits = [wait(0, 60), wait(1, 15), wait(2, 35), wait(3, 5000)].map((p, i) => p.then((r) => (order.push(i), r)));
    busySleep(1);
    Atomics.store(words, 3, 1);
    native.futexWake(buffer, 12, 1);
    const [a, b, c, d] = await Promise.all(waits);
    expect([a[0], b[0], c[0], d[0]]).toEqual([TIMED_OUT, TIMED_OUT, TIMED_OUT, WOKEN]);
    expect(a[1]).toBeGreaterThanOrEqual(60);
    expect(b[1]).toBeGreaterThanOrEqual(15);
    expect(c[1]).toBeGreaterThanOrEqual(35);
    expect(order).toEqual([3, 1, 2, 0]);
  });

  it('a process whose last wait, with a long timeout, was woken exits at once: the timeout\'s timer holds nothing', () => {
    const r = runScript(`
      const { native } = await import(NODEMP.replace('index.js', 'native.js'));
      const buffer = native.mapShared(8);
      const began = Date.now();
      native.waitAsync(buffer, 0, 0, 60000, (error, result) => console.log(JSON.stringify({ result })));
      setTimeout(() => { Atomics.store(new Int32Array(buffer), 0, 1); native.futexWake(buffer, 0, 1); }, 20);
      process.on('exit', () => console.log(JSON.stringify({ quick: Date.now() - began < 30000 })));
    `);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([{ result: WOKEN }, { quick: true }]);
  });

  it('on helper threads (NODEMP_IO_URING=0): waits across a fork, timeouts and 100 waits at once', () => {
    const r = runScript(
      `
      const { Event, Process, Semaphore } = await import(NODEMP);
      const { native } = await import(NODEMP.replace('index.js', 'native.js'));
      const e = new Event();
      const pending = e.wait(10000);
      const setter = new Process({ daemon: true, target: () => e.set() });
      setter.start();
      const woken = await pending;
      await setter.join();
      const timedOut = await new Event().wait(50);
      const s = new Semaphore(0);
      const all = Array.from({ length: 100 }, () => s.acquire({ timeout: 20000 }));
      const releaser = new Process({ daemon: true, target: () => { for (let i = 0; i < 100; i++) s.release(); } });
      releaser.start();
      const taken = (await Promise.all(all)).every(Boolean);
      await releaser.join();
      // A child forked from one wait's callback while more waits finished with it (see above).
      const s2 = new Semaphore(0);
      const batch = Array.from({ length: 8 }, () => s2.acquire({ timeout: 20000 }));
      let forked = null;
      batch[0].then(() => { forked = new Process({ target: () => {} }); forked.start(); });
      const releaser2 = new Process({ daemon: true, target: () => s2.release(8) });
      releaser2.start();
      await Promise.all(batch);
      await releaser2.join();
      const forkedExit = await forked.join(20000);
      console.log(JSON.stringify({ mechanism: native.waitMechanism(), woken, timedOut, taken, forkedExit }));
    `,
      { env: { NODEMP_IO_URING: '0' } },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ mechanism: 'threads', woken: true, timedOut: false, taken: true, forkedExit: 0 });
  });
  it('a sleep that cannot be made is thrown into the waiting steps, in both forms: their finally blocks run, and steps that catch it go on', async () => {
    const buffer = native.mapShared(8);
    const cleaned: string[] = [];
    function* gives(form: string): Generator<ReturnType<typeof sleep>, string, number> {
      try {
        // The first sleep ends at once (the word is not 1); the second's word is out of the buffer.
        yield sleep(buffer, 0, 1, 5000);
        yield sleep(buffer, 4096, 0, 10);
        return 'not reached';
      } finally {
        cleaned.push(form);
      }
    }
    expect(() => runSync(gives('sync'))).toThrow(/multiple of 4 inside the buffer/);
    await expect(runAsync(gives('async'))).rejects.toThrow(/multiple of 4 inside the buffer/);
    expect(cleaned).toEqual(['sync', 'async']);
    function* recovers(): Generator<ReturnType<typeof sleep>, number, number> {
      try {
        return yield sleep(buffer, 4096, 0, 10);
      } catch {
        return yield sleep(buffer, 0, 0, 20);
      }
    }
    expect(runSync(recovers())).toBe(TIMED_OUT);
    expect(await runAsync(recovers())).toBe(TIMED_OUT);
  });
});
