import { describe, expect, it } from 'vitest';
import { Event } from '../dist/index.js';
import { shared } from './helpers.js';
import { busySleep, loopTicksDuring, spawnChild } from './sync-helpers.js';

describe('Event', () => {
  it('set, isSet, clear', () => {
    const e = new Event();
    expect(e.isSet()).toBe(false);
    e.set();
    e.set();
    expect(e.isSet()).toBe(true);
    e.clear();
    expect(e.isSet()).toBe(false);
  });

  it('waitSync returns true at once when set, false after the timeout when not', () => {
    const e = new Event();
    const t0 = performance.now();
    expect(e.waitSync(100)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    e.set();
    const t1 = performance.now();
    expect(e.waitSync(5000)).toBe(true);
    expect(e.waitSync()).toBe(true);
    expect(performance.now() - t1).toBeLessThan(50);
  });

  it('rejects a bad timeout', async () => {
    const e = new Event();
    expect(() => e.waitSync(-5)).toThrow(RangeError);
    await expect(e.wait('1' as unknown as number)).rejects.toThrow(TypeError);
  });

  it('wakes waiters in every process', () => {
    const e = new Event();
    const ready = shared(4);
    const kids = [0, 1, 2, 3].map((i) =>
      spawnChild(async () => {
        Atomics.store(ready, i, 1);
        const ok = i % 2 === 0 ? e.waitSync(5000) : await e.wait(5000);
        process.exitCode = ok ? 0 : 9;
      }),
    );
    while ([0, 1, 2, 3].some((i) => Atomics.load(ready, i) === 0)) busySleep(1);
    busySleep(50);
    e.set();
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0, 0]);
  });

  it('a waiter still returns true if the event was set and cleared again while it slept', () => {
    const e = new Event();
    const ready = shared(1);
    const child = spawnChild(() => {
      Atomics.store(ready, 0, 1);
      process.exitCode = e.waitSync(5000) ? 0 : 9;
    });
    while (Atomics.load(ready, 0) === 0) busySleep(1);
    busySleep(50);
    e.set();
    e.clear();
    child.joinSync();
    expect(child.exitCode).toBe(0);
  });

  it('wait() keeps the event loop running until another process sets it', async () => {
    const e = new Event();
    const child = spawnChild(() => {
      busySleep(200);
      e.set();
    });
    const { value, ticks } = await loopTicksDuring(e.wait(10000));
    expect(value).toBe(true);
    expect(ticks).toBeGreaterThan(3);
    await child.join();
    expect(await e.wait(0)).toBe(true);
    e.clear();
    expect(await e.wait(30)).toBe(false);
  });
});
