import { describe, expect, it } from 'vitest';
import { Semaphore, BoundedSemaphore, SyncError } from '../dist/index.js';
import { gate, shared } from './helpers.js';
import { busySleep, loopTicksDuring, spawnChild } from './sync-helpers.js';

describe('Semaphore', () => {
  it('counts slots: getValue, acquire, release, non-blocking failure', () => {
    const s = new Semaphore(2);
    expect(s.getValue()).toBe(2);
    expect(s.acquireSync()).toBe(true);
    expect(s.acquireSync()).toBe(true);
    expect(s.getValue()).toBe(0);
    expect(s.acquireSync({ block: false })).toBe(false);
    s.release();
    expect(s.getValue()).toBe(1);
    s.release(3);
    expect(s.getValue()).toBe(4);
    expect(new Semaphore().getValue()).toBe(1);
    expect(new Semaphore(0).getValue()).toBe(0);
  });

  it('rejects a bad initial value or release count', () => {
    expect(() => new Semaphore(-1)).toThrow(RangeError);
    expect(() => new Semaphore(1.5)).toThrow(/integer/);
    expect(() => new Semaphore('2' as unknown as number)).toThrow(TypeError);
    expect(() => new Semaphore(1).release(0)).toThrow(RangeError);
  });

  it('times out after about the timeout', async () => {
    const s = new Semaphore(0);
    let t0 = performance.now();
    expect(s.acquireSync({ timeout: 100 })).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    t0 = performance.now();
    expect(await s.acquire({ timeout: 100 })).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    expect(s.getValue()).toBe(0);
  });

  it('never lets more than `value` of 5 processes in at once', () => {
    const s = new Semaphore(2);
    const stats = shared(3); // [inside now, most inside at once, started]
    const kids = [0, 1, 2, 3, 4].map(() =>
      spawnChild(() => {
        // All at once: on a loaded machine the first could be done before the last is forked.
        Atomics.add(stats, 2, 1);
        while (Atomics.load(stats, 2) < 5);
        for (let i = 0; i < 200; i++) {
          s.acquireSync();
          const inside = Atomics.add(stats, 0, 1) + 1;
          for (let seen = Atomics.load(stats, 1); inside > seen; seen = Atomics.load(stats, 1)) {
            Atomics.compareExchange(stats, 1, seen, inside);
          }
          if (i % 50 === 0) busySleep(1);
          Atomics.sub(stats, 0, 1);
          s.release();
        }
      }),
    );
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0, 0, 0]);
    expect(stats[1]).toBe(2);
    expect(s.getValue()).toBe(2);
  });

  it('signals between processes: one releases, the other acquires (async, loop free)', async () => {
    const s = new Semaphore(0);
    const child = spawnChild(() => {
      busySleep(200);
      s.release();
    });
    const { value, ticks } = await loopTicksDuring(s.acquire({ timeout: 10000 }));
    expect(value).toBe(true);
    expect(ticks).toBeGreaterThan(3);
    await child.join();
    expect(s.getValue()).toBe(0);
  });

  it('wakes as many sleepers as slots released', () => {
    const s = new Semaphore(0);
    const ready = shared(4);
    const kids = [0, 1, 2].map((i) =>
      spawnChild(() => {
        Atomics.store(ready, i, 1);
        process.exitCode = s.acquireSync({ timeout: 5000 }) ? 0 : 9;
      }),
    );
    while (Atomics.load(ready, 0) + Atomics.load(ready, 1) + Atomics.load(ready, 2) < 3) busySleep(1);
    busySleep(50);
    s.release(3);
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0]);
  });

  it('hold() gives the slot back on dispose', () => {
    const s = new Semaphore(1);
    {
      using slot = s.hold();
      void slot;
      expect(s.getValue()).toBe(0);
    }
    expect(s.getValue()).toBe(1);
  });
});

describe('BoundedSemaphore', () => {
  it('throws on release past its initial value, and stays consistent', () => {
    const s = new BoundedSemaphore(2);
    expect(() => s.release()).toThrow(SyncError);
    try {
      s.release();
    } catch (error) {
      expect((error as SyncError).code).toBe('ERR_SEMAPHORE_OVERFLOW');
    }
    expect(s.getValue()).toBe(2);
    s.acquireSync();
    s.release();
    expect(() => s.release()).toThrow(/released too many times/);
  });

  it('is enforced across processes', () => {
    const s = new BoundedSemaphore(1);
    const result = shared(1);
    const go = gate();
    const child = spawnChild(() => {
      go.wait();
      try {
        s.release();
      } catch (error) {
        if (error instanceof SyncError) result[0] = 1;
      }
    });
    go.release();
    child.joinSync();
    expect(result[0]).toBe(1);
    expect(s.getValue()).toBe(1);
  });
});
