// Queue.shutdown() (Python 3.13), which every process sees, and close(),
// which is this process's own.
import { describe, expect, it } from 'vitest';
import { ClosedError, JoinableQueue, Process, Queue, QueueEmpty, ShutDown, SimpleQueue } from '../dist/index.js';
import { shared, shmEntries } from './helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('Queue.shutdown()', () => {
  it('refuses later puts in every process; gets take what is left, then throw ShutDown', async () => {
    const q = new Queue<number>({ maxsize: 10 });
    q.putSync(1);
    q.putSync(2);
    const seen = shared(4);
    // Daemons: should an assertion fail, no child is left blocked behind the test.
    const child = new Process({
      daemon: true,
      target: async () => {
        // Waits for the parent's shutdown, then tries every way in.
        while (!q.isShutDown) await sleep(1);
        for (const put of [() => q.putSync(3), () => q.putNowait(3)]) {
          try {
            put();
          } catch (e) {
            if (e instanceof ShutDown) Atomics.add(seen, 0, 1);
          }
        }
        await q.put(3).catch((e: unknown) => e instanceof ShutDown && Atomics.add(seen, 0, 1));
        Atomics.store(seen, 1, q.getSync());
      },
    });
    child.start();
    q.shutdown();
    expect(await child.join()).toBe(0);
    expect(Atomics.load(seen, 0)).toBe(3);
    expect(Atomics.load(seen, 1)).toBe(1);
    expect(q.isShutDown).toBe(true);
    expect(await q.get()).toBe(2);
    expect(() => q.getSync()).toThrow(ShutDown);
    expect(() => q.getNowait()).toThrow(ShutDown);
    await expect(q.get({ timeout: 10 })).rejects.toThrow(ShutDown);
    await expect(q.put(4)).rejects.toMatchObject({ name: 'ShutDown', code: 'ERR_QUEUE_SHUT_DOWN' });
    expect(() => q.putSync(4, { block: false })).toThrow(ShutDown);
  });

  it('wakes callers blocked in put() and get() in other processes, sync and async', async () => {
    const full = new Queue<number>({ maxsize: 1 });
    full.putSync(0);
    const empty = new Queue<number>();
    const out = shared(8);
    const kinds = [
      () => full.putSync(1),
      () => full.put(1),
      () => empty.getSync(),
      () => empty.get(),
    ];
    const children = kinds.map(
      (call, i) =>
        new Process({
          daemon: true,
          target: async () => {
            Atomics.add(out, 4, 1);
            try {
              await call();
              Atomics.store(out, i, 1);
            } catch (e) {
              Atomics.store(out, i, e instanceof ShutDown ? 2 : 3);
            }
          },
        }),
    );
    for (const c of children) c.start();
    while (Atomics.load(out, 4) < kinds.length) await sleep(5);
    // Long enough that every child is asleep in the kernel, not spinning.
    await sleep(100);
    full.shutdown();
    empty.shutdown();
    for (const c of children) expect(await c.join(10000)).toBe(0);
    expect([...out.subarray(0, 4)]).toEqual([2, 2, 2, 2]);
    expect(full.getSync()).toBe(0);
  });

  it('{ immediate: true } drops what is queued, large messages too, and a JoinableQueue counts it as done', async () => {
    const before = shmEntries();
    const q = new JoinableQueue<unknown>({ ringSize: 4096 });
    q.putSync('a');
    q.putSync(Buffer.alloc(100_000, 1));
    q.putSync('c');
    expect(q.getSync()).toBe('a');
    q.taskDone();
    const joined = q.join(10000);
    q.shutdown({ immediate: true });
    expect(await joined).toBe(true);
    expect(q.qsize()).toBe(0);
    expect(() => q.getSync()).toThrow(ShutDown);
    expect(() => q.putSync('d')).toThrow(ShutDown);
    expect(shmEntries()).toEqual(before);
  });

  it('a plain shutdown after an immediate one does not bring the messages back; bad options throw', () => {
    const q = new Queue();
    q.shutdown({ immediate: true });
    q.shutdown();
    expect(q.isShutDown).toBe(true);
    expect(() => q.getNowait()).toThrow(ShutDown);
    expect(() => new Queue().shutdown({ immediate: 'yes' as unknown as boolean })).toThrow(TypeError);
    expect(() => new Queue().shutdown(null as unknown as { immediate: boolean })).toThrow(TypeError);
  });

  it('QueueEmpty, not ShutDown, while the queue runs', () => {
    const q = new Queue();
    expect(() => q.getNowait()).toThrow(QueueEmpty);
    expect(q.isShutDown).toBe(false);
  });
});

describe('Queue.close()', () => {
  it('every later call in this process throws ClosedError, empty(), qsize() and full() included', async () => {
    for (const q of [new Queue({ maxsize: 2 }), new JoinableQueue()]) {
      q.putSync(1);
      q.close();
      for (const call of [() => q.empty(), () => q.qsize(), () => q.full(), () => q.putSync(2), () => q.getSync(), () => q.getNowait()]) {
        expect(call).toThrow(ClosedError);
      }
      await expect(q.get()).rejects.toThrow(ClosedError);
      expect(() => q.joinThread()).not.toThrow();
    }
  });

  it('SimpleQueue: empty(), put() and get() throw ClosedError naming SimpleQueue; other processes go on', async () => {
    const q = new SimpleQueue<number>();
    q.put(1);
    const child = new Process({ target: () => q.put(q.getSync() + 1), daemon: true });
    q.close();
    expect(() => q.empty()).toThrow(/SimpleQueue\.empty\(\): the queue is closed/);
    expect(() => q.put(2)).toThrow(ClosedError);
    expect(() => q.getSync()).toThrow(ClosedError);
    await expect(q.get()).rejects.toThrow(ClosedError);
    child.start();
    expect(await child.join()).toBe(0);
  });
});
