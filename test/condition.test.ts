import { describe, expect, it } from 'vitest';
import { Condition, Lock, RLock, RawValue, SyncError } from '../dist/index.js';
import { shared } from './helpers.js';
import { busySleep, loopTicksDuring, sleepMs, spawnChild } from './sync-helpers.js';

/** Children that each register (under the lock) and wait; results[i]: 1 notified, 2 timed out. */
function waiters(c: Condition, count: number, timeoutMs: number) {
  const registered = new RawValue('i', 0);
  const results = shared(count);
  const kids = Array.from({ length: count }, (_, i) =>
    spawnChild(() => {
      c.acquireSync();
      registered.value += 1;
      results[i] = c.waitSync(timeoutMs) ? 1 : 2;
      c.release();
    }),
  );
  const allWaiting = (): boolean => {
    c.acquireSync();
    const n = registered.value;
    c.release();
    return n === count;
  };
  while (!allWaiting()) busySleep(2);
  return { kids, results };
}

const woken = (results: Int32Array): number => [...results].filter((r) => r === 1).length;

describe('Condition', () => {
  it("takes null for its lock as Python's None: a new RLock", () => {
    const c = new Condition(null);
    expect(c.acquireSync()).toBe(true);
    expect(c.acquireSync()).toBe(true);
    c.release();
    c.release();
    expect(() => new Condition(5 as unknown as Lock)).toThrow(/a Lock, an RLock, or null/);
  });

  it('wait and notify require holding the lock', async () => {
    const c = new Condition();
    expect(() => c.waitSync(10)).toThrow(SyncError);
    expect(() => c.notify()).toThrow(/does not hold the condition's lock/);
    expect(() => c.notifyAll()).toThrow(SyncError);
    await expect(c.wait(10)).rejects.toMatchObject({ code: 'ERR_NOT_OWNER' });
    expect(() => new Condition({} as Lock)).toThrow(TypeError);
  });

  it('wait times out with false and holds the lock again', () => {
    const c = new Condition(new Lock());
    c.acquireSync();
    const t0 = performance.now();
    expect(c.waitSync(100)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    expect(c.lock.locked()).toBe(true);
    c.release();
  });

  it('notify(1) wakes exactly one of three waiting processes, notify(2) the other two', async () => {
    const c = new Condition();
    const { kids, results } = waiters(c, 3, 10000);
    c.acquireSync();
    c.notify();
    c.release();
    await sleepMs(300);
    expect(woken(results)).toBe(1);
    c.acquireSync();
    c.notify(2);
    c.release();
    for (const k of kids) k.joinSync();
    expect(woken(results)).toBe(3);
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0]);
  });

  it('notifyAll wakes every waiter; a notify with nobody waiting is not remembered', () => {
    const c = new Condition(new Lock());
    c.acquireSync();
    c.notify(5);
    c.release();
    const { kids, results } = waiters(c, 4, 10000);
    c.acquireSync();
    c.notifyAll();
    c.release();
    for (const k of kids) k.joinSync();
    expect(woken(results)).toBe(4);
    c.acquireSync();
    expect(c.waitSync(50)).toBe(false);
    c.release();
  });

  it('waiting with an RLock held twice releases it fully and restores the depth', () => {
    const r = new RLock();
    const c = new Condition(r);
    const flag = new RawValue('i', 0);
    r.acquireSync();
    r.acquireSync();
    const child = spawnChild(() => {
      c.acquireSync();
      flag.value = 1;
      c.notify();
      c.release();
    });
    expect(c.waitForSync(() => flag.value === 1, 10000)).toBe(true);
    expect(r.depth).toBe(2);
    r.release();
    r.release();
    child.joinSync();
    expect(child.exitCode).toBe(0);
  });

  it('waitFor returns the predicate value, or its last value on timeout', async () => {
    const c = new Condition();
    c.acquireSync();
    expect(c.waitForSync(() => 42, 0)).toBe(42);
    expect(c.waitForSync(() => 0, 60)).toBe(0);
    expect(await c.waitFor(() => '', 60)).toBe('');
    expect(() => c.waitForSync(5 as unknown as () => boolean)).toThrow(TypeError);
    c.release();
  });

  it('wait() (async) keeps the event loop running and returns with the lock held', async () => {
    const c = new Condition();
    const flag = new RawValue('i', 0);
    const child = spawnChild(() => {
      busySleep(150);
      c.acquireSync();
      flag.value = 1;
      c.notifyAll();
      c.release();
    });
    await c.acquire();
    const { value, ticks } = await loopTicksDuring(c.waitFor(() => flag.value === 1, 10000));
    expect(value).toBe(true);
    expect(ticks).toBeGreaterThan(3);
    expect(c.lock.locked()).toBe(true);
    c.release();
    await child.join();
  });

  it('producer/consumer across processes loses no item', () => {
    const c = new Condition(new Lock());
    const slot = new RawValue('i', 0); // 0 empty, else item
    const sum = new RawValue('i', 0);
    const consumer = spawnChild(() => {
      for (let i = 0; i < 300; i++) {
        c.acquireSync();
        c.waitForSync(() => slot.value !== 0);
        sum.value += slot.value;
        slot.value = 0;
        c.notifyAll();
        c.release();
      }
    });
    for (let i = 1; i <= 300; i++) {
      c.acquireSync();
      c.waitForSync(() => slot.value === 0);
      slot.value = i;
      c.notifyAll();
      c.release();
    }
    consumer.joinSync();
    expect(consumer.exitCode).toBe(0);
    expect(sum.value).toBe((300 * 301) / 2);
  });
});
