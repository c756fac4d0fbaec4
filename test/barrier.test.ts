import { describe, expect, it } from 'vitest';
import { Barrier, BrokenBarrierError, RawArray, RawValue } from '../dist/index.js';
import { shared } from './helpers.js';
import { busySleep, sleepMs, spawnChild } from './sync-helpers.js';

describe('Barrier', () => {
  it("takes null for action and timeout as Python's None", () => {
    const b = new Barrier(1, { action: null, timeout: null });
    expect(b.waitSync()).toBe(0);
  });

  it('validates its arguments', () => {
    expect(() => new Barrier(0)).toThrow(RangeError);
    expect(() => new Barrier(2, { action: 5 as unknown as () => void })).toThrow(TypeError);
    expect(() => new Barrier(2, { timeout: -1 })).toThrow(RangeError);
    const b = new Barrier(3);
    expect(b.parties).toBe(3);
    expect(b.nWaiting).toBe(0);
    expect(b.broken).toBe(false);
  });

  it('releases all parties together; exactly one gets index 0; the action runs once per pass', () => {
    const actions = new RawValue('i', 0);
    const b = new Barrier(4, { action: () => void (actions.value += 1) });
    const zeros = shared(1);
    const kids = [0, 1, 2].map(() =>
      spawnChild(() => {
        for (let pass = 0; pass < 50; pass++) if (b.waitSync() === 0) Atomics.add(zeros, 0, 1);
      }),
    );
    for (let pass = 0; pass < 50; pass++) if (b.waitSync() === 0) Atomics.add(zeros, 0, 1);
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0]);
    expect(zeros[0]).toBe(50);
    expect(actions.value).toBe(50);
  });

  it('keeps 5 processes in lockstep for 1000 passes', () => {
    const b = new Barrier(5);
    const passOf = new RawArray('i', 5);
    const kids = [0, 1, 2, 3, 4].map((me) =>
      spawnChild(() => {
        for (let pass = 1; pass <= 1000; pass++) {
          passOf.typed[me] = pass;
          b.waitSync();
          for (let j = 0; j < 5; j++) {
            const seen = Atomics.load(passOf.typed, j);
            if (seen !== pass && seen !== pass + 1) process.exit(20);
          }
        }
      }),
    );
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0, 0, 0]);
    expect(passOf.toArray()).toEqual([1000, 1000, 1000, 1000, 1000]);
  });

  it('abort() breaks current waiters with BrokenBarrierError until reset()', async () => {
    const b = new Barrier(3);
    const outcome = shared(2);
    const kids = [0, 1].map((i) =>
      spawnChild(() => {
        try {
          b.waitSync();
          outcome[i] = 1;
        } catch (error) {
          outcome[i] = error instanceof BrokenBarrierError ? 2 : 3;
        }
      }),
    );
    while (b.nWaiting < 2) await sleepMs(5);
    b.abort();
    for (const k of kids) await k.join();
    expect([...outcome]).toEqual([2, 2]);
    expect(b.broken).toBe(true);
    expect(() => b.waitSync()).toThrow(BrokenBarrierError);
    b.reset();
    expect(b.broken).toBe(false);
    const again = spawnChild(() => b.waitSync());
    const again2 = spawnChild(() => b.waitSync());
    expect(await b.wait(10000)).toBeGreaterThanOrEqual(0);
    again.joinSync();
    again2.joinSync();
    expect([again.exitCode, again2.exitCode]).toEqual([0, 0]);
  });

  it('a timeout breaks the barrier for every party', () => {
    const b = new Barrier(3, { timeout: 150 });
    const outcome = shared(1);
    const child = spawnChild(() => {
      try {
        b.waitSync(10000);
      } catch (error) {
        if (error instanceof BrokenBarrierError) outcome[0] = 1;
      }
    });
    while (b.nWaiting < 1) busySleep(2);
    const t0 = performance.now();
    expect(() => b.waitSync()).toThrow(/timed out/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    child.joinSync();
    expect(outcome[0]).toBe(1);
    expect(b.broken).toBe(true);
  });

  it('an action that throws breaks the barrier and reaches the party that ran it', () => {
    const b = new Barrier(2, {
      action: () => {
        throw new Error('action failed');
      },
    });
    const outcome = shared(1);
    const child = spawnChild(() => {
      try {
        b.waitSync(10000);
      } catch (error) {
        outcome[0] = error instanceof BrokenBarrierError ? 1 : (error as Error).message === 'action failed' ? 2 : 3;
      }
    });
    let mine = 0;
    try {
      b.waitSync(10000);
    } catch (error) {
      mine = error instanceof BrokenBarrierError ? 1 : (error as Error).message === 'action failed' ? 2 : 3;
    }
    child.joinSync();
    expect([mine, outcome[0]].sort()).toEqual([1, 2]);
    expect(b.broken).toBe(true);
  });

  it('wait() (async) lets the event loop run', async () => {
    const b = new Barrier(2);
    const child = spawnChild(() => {
      busySleep(100);
      b.waitSync();
    });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const index = await b.wait(10000);
    clearInterval(timer);
    expect([0, 1]).toContain(index);
    expect(ticks).toBeGreaterThan(2);
    await child.join();
  });
});
