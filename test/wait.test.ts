import { writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ClosedError, DirectionError, Pipe, Process, ProcessError, wait, waitSync } from '../dist/index.js';
import { openFds, shared } from './helpers.js';
import { busySleep, expectBoundariesKept, loopTicksDuring, sleepMs, spawnChild } from './sync-helpers.js';

describe('wait() on connections', () => {
  it('returns [] after the timeout when nothing is ready, both forms', async () => {
    const [a, b] = Pipe();
    const [c, d] = Pipe();
    let t0 = performance.now();
    expect(await wait([a, c], 80)).toEqual([]);
    let took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(75);
    expect(took).toBeLessThan(3000);
    t0 = performance.now();
    expect(waitSync([a, c], 80)).toEqual([]);
    took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(75);
    expect(took).toBeLessThan(3000);
    expect(await wait([a, c], 0)).toEqual([]);
    for (const x of [a, b, c, d]) x.close();
  });

  it('returns the connections that have a message, in the order given', async () => {
    const [a, b] = Pipe();
    const [c, d] = Pipe();
    const [e, f] = Pipe();
    d.send('d');
    f.send('f');
    expect(await wait([a, c, e], 1000)).toEqual([c, e]);
    expect(waitSync([e, a, c])).toEqual([e, c]);
    // wait() does not consume.
    expect(c.recvSync()).toBe('d');
    expect(await wait([a, c, e])).toEqual([e]);
    expect(e.recvSync()).toBe('f');
    for (const x of [a, b, c, d, e, f]) x.close();
  });

  it('wakes when another process sends, without blocking the event loop', async () => {
    const [a, b] = Pipe();
    const [c, d] = Pipe();
    const child = spawnChild(() => {
      busySleep(200);
      d.send('second');
    });
    const t0 = performance.now();
    const { value, ticks } = await loopTicksDuring(wait([a, c], 10000));
    expect(value).toEqual([c]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(ticks).toBeGreaterThan(5);
    expect(await c.recv()).toBe('second');
    await child.join();
    for (const x of [a, b, c, d]) x.close();
  });

  it('waitSync wakes when another process sends', async () => {
    const [a, b] = Pipe();
    const child = spawnChild(() => {
      busySleep(100);
      b.sendBytes(Buffer.from('x'));
    });
    const t0 = performance.now();
    expect(waitSync([a], 10000)).toEqual([a]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(50);
    expect(a.recvBytesSync().toString()).toBe('x');
    await child.join();
    a.close();
    b.close();
  });

  it('counts a connection ready once data is there, as Python; the receive then waits for the rest', async () => {
    const [a, b] = Pipe();
    const frame = Buffer.from([0, 3, 0, 0, 0, 7, 8, 9]);
    writeSync(b.fileno(), frame.subarray(0, 6));
    expect(await wait([a], 5000)).toEqual([a]);
    expect(waitSync([a], 5000)).toEqual([a]);
    const receiving = a.recvBytes();
    // The receive took what had come; nothing more is there until the rest is sent.
    expect(waitSync([a], 30)).toEqual([]);
    setTimeout(() => writeSync(b.fileno(), frame.subarray(6)), 50);
    expect([...(await receiving)]).toEqual([7, 8, 9]);
    a.close();
    b.close();
  });

  for (const form of ['wait', 'waitSync'] as const) {
    it(`${form}([r], 5000) in a child that then exits leaves the messages in the pipe (CPython test_boundaries)`, async () => {
      for (const duplex of [false, true]) {
        await expectBoundariesKept(duplex, (conn) => (form === 'wait' ? wait([conn], 5000) : waitSync([conn], 5000)));
      }
    });
  }

  it('a connection with a receive pending is ready only for what that receive leaves', async () => {
    const [a, b] = Pipe();
    const pending = a.recv();
    b.send('for the pending receive');
    expect(waitSync([a], 1000)).toEqual([]);
    expect(await pending).toBe('for the pending receive');
    const second = a.recv();
    b.send(1);
    b.send(2);
    expect(await wait([a], 5000)).toEqual([a]);
    expect(await second).toBe(1);
    expect(a.recvSync()).toBe(2);
    a.close();
    b.close();
  });

  it('counts the end of the stream as ready', async () => {
    const [a, b] = Pipe();
    const child = spawnChild(() => {
      busySleep(100);
    });
    b.close();
    // The child holds the last copy of b until it exits.
    expect(await wait([a], 10000)).toEqual([a]);
    await child.join();
    const [c, d] = Pipe();
    d.close();
    expect(waitSync([c], 10000)).toEqual([c]);
    a.close();
    c.close();
  });

  it('raises for closed and write-only connections and for bad arguments', async () => {
    const [a, b] = Pipe();
    const [r, w] = Pipe({ duplex: false });
    a.close();
    await expect(wait([a])).rejects.toThrow(ClosedError);
    expect(() => waitSync([a])).toThrow(ClosedError);
    await expect(wait([w], 10)).rejects.toThrow(DirectionError);
    await expect(wait(5 as unknown as [])).rejects.toThrow(/wait\(objects\) must be an iterable of Connections and Processes, got 5/);
    expect(() => waitSync([{}] as unknown as [])).toThrow(TypeError);
    await expect(wait([r], -1)).rejects.toThrow(RangeError);
    expect(() => waitSync([r], '5' as unknown as number)).toThrow(TypeError);
    expect(() => waitSync([new Process({ target: () => undefined })])).toThrow(ProcessError);
    // A Set is an iterable too.
    w.send(1);
    expect(waitSync(new Set([r]), 1000)).toEqual([r]);
    b.close();
    r.close();
    w.close();
  });

  it('a connection closed while wait() sleeps makes it reject with ClosedError', async () => {
    const [a, b] = Pipe();
    const waiting = wait([a], 10000);
    setTimeout(() => a.close(), 30);
    await expect(waiting).rejects.toThrow(ClosedError);
    b.close();
  });
});

describe('wait() on processes', () => {
  it('returns a process once it exits, and join() still gets its exit code', async () => {
    const child = spawnChild(() => {
      busySleep(200);
      process.exitCode = 7;
    });
    const t0 = performance.now();
    const { value, ticks } = await loopTicksDuring(wait([child], 10000));
    expect(value).toEqual([child]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(ticks).toBeGreaterThan(5);
    expect(child.exitCode).toBe(7);
    expect(await child.join()).toBe(7);
    expect(child.joinSync()).toBe(7);
    // Already exited: ready at once.
    expect(await wait([child], 0)).toEqual([child]);
    expect(waitSync([child])).toEqual([child]);
  });

  it('waitSync returns a process once it exits', async () => {
    const child = spawnChild(() => {
      busySleep(100);
    });
    const t0 = performance.now();
    expect(waitSync([child], 10000)).toEqual([child]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(50);
    expect(await child.join()).toBe(0);
  });

  it('returns [] on timeout while the process runs', async () => {
    const gate = shared(1);
    const child = spawnChild(() => {
      while (Atomics.load(gate, 0) === 0) busySleep(5);
    });
    expect(await wait([child], 60)).toEqual([]);
    expect(waitSync([child], 60)).toEqual([]);
    expect(child.isAlive()).toBe(true);
    Atomics.store(gate, 0, 1);
    expect(await wait([child], 10000)).toEqual([child]);
    expect(await child.join()).toBe(0);
  });

  it('mixes connections and processes', async () => {
    const [a, b] = Pipe();
    const slow = spawnChild(() => {
      busySleep(300);
    });
    const talker = spawnChild(async () => {
      await sleepMs(50);
      b.send('hello');
      await sleepMs(100);
    });
    expect(await wait([slow, a, talker], 10000)).toEqual([a]);
    expect(await a.recv()).toBe('hello');
    expect(await wait([slow, a, talker], 10000)).toEqual([talker]);
    expect(waitSync([slow, a], 10000)).toEqual([slow]);
    expect(await wait([slow, a, talker], 0)).toEqual([slow, talker]);
    expect(await slow.join()).toBe(0);
    expect(await talker.join()).toBe(0);
    a.close();
    b.close();
  });

  it('leaves no descriptors behind', async () => {
    const before = openFds();
    const [a, b] = Pipe();
    for (let i = 0; i < 5; i++) {
      const child = spawnChild(async () => {
        await sleepMs(150);
      });
      expect(await wait([child, a], 20)).toEqual([]);
      expect(waitSync([child, a], 10)).toEqual([]);
      expect(await wait([child, a], 10000)).toEqual([child]);
      await child.join();
    }
    a.close();
    b.close();
    expect(openFds().filter((fd) => !before.includes(fd))).toEqual([]);
  });
});
