import { describe, expect, it } from 'vitest';
import { Lock, RLock, RawValue, SyncError, TimeoutError } from '../dist/index.js';
import { gate, shared } from './helpers.js';
import { busySleep, loopTicksDuring, spawnChild } from './sync-helpers.js';

describe('Lock', () => {
  it('acquires, reports locked(), releases', () => {
    const lock = new Lock();
    expect(lock.locked()).toBe(false);
    expect(lock.acquireSync()).toBe(true);
    expect(lock.locked()).toBe(true);
    expect(lock.acquireSync({ block: false })).toBe(false);
    lock.release();
    expect(lock.locked()).toBe(false);
  });

  it('throws SyncError when released unlocked, and stays usable', () => {
    const lock = new Lock();
    expect(() => lock.release()).toThrow(SyncError);
    try {
      lock.release();
    } catch (error) {
      expect((error as SyncError).code).toBe('ERR_LOCK_NOT_HELD');
      expect((error as Error).message).toMatch(/not locked/);
    }
    expect(lock.acquireSync({ block: false })).toBe(true);
    lock.release();
  });

  it('times out after about the timeout, holding nothing', () => {
    const lock = new Lock();
    lock.acquireSync();
    const t0 = performance.now();
    expect(lock.acquireSync({ timeout: 120 })).toBe(false);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(115);
    expect(took).toBeLessThan(2000);
    lock.release();
    expect(lock.locked()).toBe(false);
  });

  it('rejects bad options with clear errors', async () => {
    const lock = new Lock();
    lock.acquireSync();
    expect(() => lock.acquireSync({ block: false, timeout: 5 })).toThrow(/timeout cannot be given with \{ block: false \}/);
    // Python's get(block=False, timeout=None): null is no timeout at all.
    expect(lock.acquireSync({ block: false, timeout: null })).toBe(false);
    expect(() => lock.acquireSync({ timeout: -1 })).toThrow(RangeError);
    expect(() => lock.acquireSync({ timeout: '5' as unknown as number })).toThrow(/timeout must be a number of milliseconds, got '5'/);
    expect(() => lock.acquireSync(42 as unknown as object)).toThrow(TypeError);
    await expect(lock.acquire({ timeout: Number.NaN })).rejects.toThrow(RangeError);
    lock.release();
  });

  it('excludes 4 processes from each other: no lost updates', () => {
    const lock = new Lock();
    const counter = new RawValue('i', 0);
    const kids = [0, 1, 2, 3].map(() =>
      spawnChild(() => {
        for (let i = 0; i < 5000; i++) {
          lock.acquireSync();
          const v = counter.value;
          if (i % 500 === 0) busySleep(0);
          counter.value = v + 1;
          lock.release();
        }
      }),
    );
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0, 0]);
    expect(counter.value).toBe(20000);
  });

  it('may be released by another process, as in Python', () => {
    const lock = new Lock();
    lock.acquireSync();
    const child = spawnChild(() => lock.release());
    child.joinSync();
    expect(child.exitCode).toBe(0);
    expect(lock.acquireSync({ block: false })).toBe(true);
    lock.release();
  });

  it('acquire() waits without blocking the event loop and resolves once released elsewhere', async () => {
    const lock = new Lock();
    const held = gate();
    const child = spawnChild(() => {
      lock.acquireSync();
      held.release();
      busySleep(300);
      lock.release();
    });
    held.wait();
    expect(lock.acquireSync({ block: false })).toBe(false);
    const { value, ticks } = await loopTicksDuring(lock.acquire({ timeout: 10000 }));
    expect(value).toBe(true);
    expect(ticks).toBeGreaterThan(5);
    lock.release();
    await child.join();
    expect(child.exitCode).toBe(0);
  });

  it('acquire() resolves false when its timeout passes', async () => {
    const lock = new Lock();
    lock.acquireSync();
    const t0 = performance.now();
    expect(await lock.acquire({ timeout: 100 })).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    expect(await lock.acquire({ block: false })).toBe(false);
    lock.release();
  });

  it('many concurrent acquire() calls in one process are served one at a time', async () => {
    const lock = new Lock();
    lock.acquireSync();
    let inside = 0;
    let maxInside = 0;
    const waiters = Array.from({ length: 20 }, async () => {
      expect(await lock.acquire()).toBe(true);
      inside++;
      maxInside = Math.max(maxInside, inside);
      await new Promise((r) => setImmediate(r));
      inside--;
      lock.release();
    });
    lock.release();
    await Promise.all(waiters);
    expect(maxInside).toBe(1);
    expect(lock.locked()).toBe(false);
  });

  it('hold() releases on dispose and throws TimeoutError when it cannot acquire', () => {
    const lock = new Lock();
    {
      using held = lock.hold();
      expect(lock.locked()).toBe(true);
      expect(() => lock.hold({ timeout: 20 })).toThrow(TimeoutError);
      void held;
    }
    expect(lock.locked()).toBe(false);
    const h = lock.hold();
    h.release();
    h[Symbol.dispose]();
    expect(lock.locked()).toBe(false);
  });
});

describe('RLock', () => {
  it('counts recursion and unlocks at depth 0', () => {
    const r = new RLock();
    expect(r.acquireSync()).toBe(true);
    expect(r.acquireSync()).toBe(true);
    expect(r.depth).toBe(2);
    r.release();
    expect(r.locked()).toBe(true);
    r.release();
    expect(r.locked()).toBe(false);
    expect(() => r.release()).toThrow(/not locked/);
  });

  it('refuses release by a process that does not own it', () => {
    const r = new RLock();
    r.acquireSync();
    const result = shared(2);
    const child = spawnChild(() => {
      result[0] = r.acquireSync({ block: false }) ? 1 : 2;
      try {
        r.release();
      } catch (error) {
        if (error instanceof SyncError && error.code === 'ERR_NOT_OWNER') result[1] = 1;
      }
    });
    child.joinSync();
    expect(child.exitCode).toBe(0);
    expect([...result]).toEqual([2, 1]);
    expect(r.depth).toBe(1);
    r.release();
  });

  it('excludes other processes while held at any depth', async () => {
    const r = new RLock();
    const counter = new RawValue('i', 0);
    const kids = [0, 1, 2].map(() =>
      spawnChild(async () => {
        for (let i = 0; i < 500; i++) {
          await r.acquire();
          r.acquireSync();
          counter.value = counter.value + 1;
          r.release();
          r.release();
        }
      }),
    );
    for (const k of kids) await k.join();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0]);
    expect(counter.value).toBe(1500);
  });
});
