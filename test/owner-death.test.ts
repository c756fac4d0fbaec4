// A process killed while holding a lock or semaphore slot must not leave the
// others stuck: the next acquirer takes it over and is told (ownerDied and an
// OwnerDiedWarning). Python's multiprocessing deadlocks here.
import { describe, expect, it } from 'vitest';
import { Lock, RLock, Semaphore, BoundedSemaphore, Condition, Value, RawArray } from '../dist/index.js';
import { gate, running, waitUntil } from './helpers.js';
import { busySleep, recordWarnings, spawnChild } from './sync-helpers.js';

const warnings = recordWarnings();

/** A child that takes `take()`, says so, and then waits to be killed. */
function holderKilled(take: () => void): number {
  const held = gate();
  const child = spawnChild(() => {
    take();
    held.release();
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  });
  held.wait();
  child.kill();
  // Deliberately not joined yet: the holder stays a zombie while we wait,
  // which must count as dead.
  return child.pid!;
}

function ownerDiedWarnings(): Error[] {
  return warnings().filter((w) => (w as Error & { code?: string }).code === 'NODEMP_OWNER_DIED');
}

describe('owner death', () => {
  it('Lock: acquireSync takes over from a SIGKILLed holder and says so', async () => {
    const lock = new Lock();
    const pid = holderKilled(() => lock.acquireSync());
    const t0 = performance.now();
    expect(lock.acquireSync({ timeout: 5000 })).toBe(true);
    expect(performance.now() - t0).toBeLessThan(4000);
    expect(lock.ownerDied).toBe(true);
    lock.release();
    expect(lock.acquireSync({ block: false })).toBe(true);
    lock.release();
    await new Promise((r) => setImmediate(r));
    const w = ownerDiedWarnings();
    expect(w).toHaveLength(1);
    expect(w[0].name).toBe('OwnerDiedWarning');
    expect(w[0].message).toContain(`process ${pid}`);
  });

  it('Lock: a non-blocking acquire takes over too, once the holder is dead', async () => {
    const lock = new Lock();
    const pid = holderKilled(() => lock.acquireSync());
    expect(await waitUntil(() => !running(pid))).toBe(true);
    expect(lock.acquireSync({ block: false })).toBe(true);
    expect(lock.ownerDied).toBe(true);
    lock.release();
  });

  it('Lock: acquire() (async) takes over', async () => {
    const lock = new Lock();
    holderKilled(() => lock.acquireSync());
    expect(await lock.acquire({ timeout: 5000 })).toBe(true);
    expect(lock.ownerDied).toBe(true);
    lock.release();
  });

  it('RLock: recovered at depth 1 whatever depth the dead holder had', () => {
    const r = new RLock();
    holderKilled(() => {
      r.acquireSync();
      r.acquireSync();
      r.acquireSync();
    });
    expect(r.acquireSync({ timeout: 5000 })).toBe(true);
    expect(r.ownerDied).toBe(true);
    expect(r.depth).toBe(1);
    r.release();
    expect(r.locked()).toBe(false);
  });

  it('ownerDied describes the latest acquire only: the next one, uncontended, says false', async () => {
    const lock = new Lock();
    holderKilled(() => lock.acquireSync());
    expect(lock.acquireSync({ timeout: 5000 })).toBe(true);
    expect(lock.ownerDied).toBe(true);
    lock.release();
    expect(lock.acquireSync()).toBe(true);
    expect(lock.ownerDied).toBe(false);
    lock.release();
    holderKilled(() => lock.acquireSync());
    expect(await lock.acquire({ timeout: 5000 })).toBe(true);
    expect(lock.ownerDied).toBe(true);
    lock.release();
    expect(await lock.acquire()).toBe(true);
    expect(lock.ownerDied).toBe(false);
    lock.release();

    const r = new RLock();
    holderKilled(() => r.acquireSync());
    expect(r.acquireSync({ timeout: 5000 })).toBe(true);
    expect(r.ownerDied).toBe(true);
    expect(r.acquireSync()).toBe(true);
    expect(r.ownerDied).toBe(false);
    r.release();
    r.release();

    const s = new Semaphore(1);
    holderKilled(() => s.acquireSync());
    expect(s.acquireSync({ timeout: 5000 })).toBe(true);
    expect(s.ownerDied).toBe(true);
    s.release();
    expect(s.acquireSync()).toBe(true);
    expect(s.ownerDied).toBe(false);
    s.release();
  });

  it('Value: a holder killed mid-update does not wedge the value lock', () => {
    const v = new Value('i', 0);
    holderKilled(() => {
      v.getLock()!.acquireSync();
      v.value = 7;
    });
    const lock = v.getLock()!;
    expect(lock.acquireSync({ timeout: 5000 })).toBe(true);
    expect(v.value).toBe(7);
    lock.release();
  });

  it('Semaphore: slots of a killed holder come back, the others stay taken', () => {
    const s = new Semaphore(3);
    expect(s.acquireSync()).toBe(true);
    holderKilled(() => {
      s.acquireSync();
      s.acquireSync();
    });
    expect(s.getValue()).toBe(0);
    expect(s.acquireSync({ timeout: 5000 })).toBe(true);
    expect(s.ownerDied).toBe(true);
    // Two came back, this process now holds two, one is free.
    expect(s.getValue()).toBe(1);
    s.release();
    s.release();
    expect(s.getValue()).toBe(3);
  });

  it('Semaphore: the process that takes a dead holder\'s slot is told, even with another one racing for it', () => {
    // Found by the soak: the waiter that found the dead holder gave its slot
    // back to the count, and a process spinning on the count took it first,
    // with ownerDied false, while the finder later said true. Each round: the
    // holder dies, a racer spins on the count, this process finds the death.
    for (let round = 0; round < 8; round++) {
      const s = new Semaphore(1);
      const told = new RawArray('i', 3);
      const take = (): void => {
        const at = 1 + Atomics.add(told.typed, 0, 1);
        told.typed[at] = s.ownerDied ? 1 : 2;
        busySleep(20);
        s.release();
      };
      holderKilled(() => s.acquireSync());
      const racer = spawnChild(() => {
        while (s.getValue() === 0);
        if (s.acquireSync({ timeout: 5000 })) take();
      });
      expect(s.acquireSync({ timeout: 5000 })).toBe(true);
      take();
      expect(racer.joinSync(5000)).toBe(0);
      expect([...told.typed]).toEqual([2, 1, 2]);
    }
  });

  it("Semaphore: a process killed at any point of taking over a dead holder's slot leaves it to one that is told", () => {
    // Found by the soak: the process that found the dead holder gave the slot
    // to the count and then took it from there; killed in between, it left the
    // slot free, and the next process took it with ownerDied false. Here the
    // process taking over is killed before its k-th atomic write, for every k
    // up to the writes its whole acquire makes; then this process acquires.
    const made = new RawArray('i', 1);
    for (let k = 1; ; k++) {
      const s = new Semaphore(1);
      holderKilled(() => s.acquireSync());
      made.typed[0] = 0;
      const child = spawnChild(() => {
        let writes = 0;
        for (const op of ['store', 'compareExchange', 'exchange', 'add', 'sub'] as const) {
          const real = Atomics[op] as (...args: unknown[]) => unknown;
          (Atomics as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => {
            if (++writes === k) process.kill(process.pid, 'SIGKILL');
            return real(...args);
          };
        }
        if (s.acquireSync({ timeout: 0 })) made.typed[0] = writes;
      });
      child.joinSync();
      expect(s.acquireSync({ timeout: 5000 })).toBe(true);
      expect(s.ownerDied).toBe(true);
      s.release();
      expect(s.getValue()).toBe(1);
      if (made.typed[0] !== 0 && k > made.typed[0]) break;
      expect(k).toBeLessThan(100);
    }
  });

  it('Semaphore: processes killed at random moments of acquire and release lose no slot and double none', async () => {
    // Found by the soak after a few thousand kills: a kill between taking a
    // slot and recording who holds it lost the slot for good (or, in release,
    // counted it twice). A tight acquire/release loop spends a fair share of
    // its time in that window: 2000 kills found it in one run of two on the
    // original code, and every time once release had been reordered.
    const s = new Semaphore(1);
    for (let i = 0; i < 2000; i++) {
      const child = spawnChild(() => {
        for (;;) {
          s.acquireSync();
          s.release();
        }
      });
      busySleep(1 + (i % 3));
      child.kill();
      await child.join();
    }
    // A lost slot: this times out; a doubled one: the value reads 2.
    expect(s.acquireSync({ timeout: 5000 })).toBe(true);
    s.release();
    expect(s.getValue()).toBe(1);
    // 2000 forks: about 30 s on a loaded 2-core machine, the default limit.
  }, 120_000);

  it('BoundedSemaphore: recovery never lifts the value above its bound', () => {
    const s = new BoundedSemaphore(1);
    holderKilled(() => s.acquireSync());
    expect(s.acquireSync({ timeout: 5000 })).toBe(true);
    s.release();
    expect(s.getValue()).toBe(1);
    expect(() => s.release()).toThrow(/released too many times/);
  });

  it('Condition: a waiter blocked on a lock held by a dead process recovers', () => {
    const c = new Condition(new Lock());
    holderKilled(() => c.acquireSync());
    expect(c.acquireSync({ timeout: 5000 })).toBe(true);
    expect(c.waitSync(10)).toBe(false);
    c.release();
  });
});
