// Asynchronous waits sleep on native helper threads. They must not hold a
// forked child alive, must not be lost for the parent across a fork, and must
// scale to many waits at once.
import { describe, expect, it } from 'vitest';
import { Event, Process, Semaphore } from '../dist/index.js';
import { openFds } from './helpers.js';
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
});
