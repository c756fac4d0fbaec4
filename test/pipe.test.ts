import { createHash, randomBytes } from 'node:crypto';
import { readSync, writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BufferTooShort, ClosedError, Connection, DirectionError, EOFError, Lock, OSError, Pipe, Process } from '../dist/index.js';
import { openFds, runScript, shared } from './helpers.js';
import { SMALL, decodeRange } from '../dist/codec.js';
import { native } from '../dist/native.js';
import { busySleep, expectBoundariesKept, loopTicksDuring, sleepMs, spawnChild } from './sync-helpers.js';

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** A value with everything the plain encoder cannot carry: Map, Set, shared references and a cycle. */
function structured(): Record<string, unknown> {
  const shared = { n: 1 };
  const value: Record<string, unknown> = {
    map: new Map<unknown, unknown>([
      ['a', 1],
      [2, { b: [1, 2, 3] }],
    ]),
    set: new Set(['x', 'y']),
    date: new Date('2024-02-29T12:34:56.789Z'),
    big: 2n ** 70n,
    left: shared,
    right: shared,
  };
  value.self = value;
  return value;
}

function checkStructured(v: Record<string, unknown>): void {
  expect(v.map).toEqual(
    new Map<unknown, unknown>([
      ['a', 1],
      [2, { b: [1, 2, 3] }],
    ]),
  );
  expect(v.set).toEqual(new Set(['x', 'y']));
  expect(v.date).toEqual(new Date('2024-02-29T12:34:56.789Z'));
  expect(v.big).toBe(2n ** 70n);
  expect(v.left).toBe(v.right);
  expect(v.self).toBe(v);
}

describe('Pipe: values', () => {
  it('round-trips values in one process, keeping Maps, Sets, Dates, BigInts, cycles and message boundaries', async () => {
    const [a, b] = Pipe();
    const values: unknown[] = ['text', 42, -1.5, null, true, [1, 'two', [3]], { nested: { deep: [null] } }, '', 0n, new Date(0)];
    for (const v of values) a.send(v);
    for (const v of values) expect(b.recvSync()).toEqual(v);
    a.send(undefined);
    expect(b.recvSync()).toBeUndefined();
    b.send(structured());
    checkStructured((await a.recv()) as Record<string, unknown>);
    a.close();
    b.close();
  });

  it("uses node:v8 with { serializer: 'v8' }, and either end decodes both encodings", () => {
    const [a, b] = Pipe({ serializer: 'v8' });
    a.send(structured());
    checkStructured(b.recvSync() as Record<string, unknown>);
    b.send(new Float64Array([1.5, 2.5]));
    expect(a.recvSync()).toEqual(new Float64Array([1.5, 2.5]));
    a.close();
    b.close();
    expect(() => Pipe({ serializer: 'json' as 'v8' })).toThrow(TypeError);
  });

  it('carries values between processes both ways', async () => {
    const [a, b] = Pipe();
    const child = spawnChild(async () => {
      const v = (await b.recv()) as Record<string, unknown>;
      b.send({ echoed: v, kind: v.map instanceof Map && v.self === v ? 'structured' : 'broken' });
    });
    a.send(structured());
    const back = (await a.recv()) as { echoed: Record<string, unknown>; kind: string };
    expect(back.kind).toBe('structured');
    checkStructured(back.echoed);
    expect(await child.join()).toBe(0);
    a.close();
    b.close();
  });

  it('small values (lib/codec.ts) go between the ends of a Pipe in their own format, and arrive from another process as sent', async () => {
    const [r, w] = Pipe({ duplex: false });
    w.send({ i: 1 });
    const head = Buffer.alloc(5);
    expect(readSync(r.fileno(), head, 0, 5, null)).toBe(5);
    expect(head[0]).toBe(SMALL);
    const body = Buffer.alloc(head.readUInt32LE(1));
    readSync(r.fileno(), body, 0, body.length, null);
    expect(decodeRange(SMALL, body, 0, body.length)).toEqual({ i: 1 });
    const values: unknown[] = [{ i: 7 }, [1, 'two', { three: [3] }], -0, 'text', { é: 'non-ASCII key, msgpack' }, { d: new Date(0) }, null, undefined];
    const child = spawnChild(() => {
      for (const v of values) w.send(v);
    });
    for (const v of values) {
      const got = await r.recv();
      if (typeof v === 'number') expect(Object.is(got, v)).toBe(true);
      else expect(got).toEqual(v);
    }
    expect(await child.join()).toBe(0);
    r.close();
    w.close();
  });

  it('a Connection over an adopted descriptor sends msgpack, even for a value the small format holds', () => {
    const [fd0, fd1] = native.connPipe(false);
    const w = new Connection(fd1, { readable: false });
    w.send({ i: 1 });
    const head = Buffer.alloc(5);
    expect(readSync(fd0, head, 0, 5, null)).toBe(5);
    expect(head[0]).not.toBe(SMALL);
    w.close();
    native.connClose(fd0);
  });

  it('a Buffer or Uint8Array sent with send() arrives as a Buffer', () => {
    const [a, b] = Pipe();
    a.send(Buffer.from('raw'));
    a.send(new Uint8Array([1, 2, 3]));
    const first = b.recvSync();
    expect(Buffer.isBuffer(first)).toBe(true);
    expect((first as Buffer).toString()).toBe('raw');
    expect(b.recvSync()).toEqual(Buffer.from([1, 2, 3]));
    a.close();
    b.close();
  });

  it('keeps message boundaries for many small messages sent back to back by another process', async () => {
    const [a, b] = Pipe();
    const count = 20000;
    const child = spawnChild(() => {
      for (let i = 0; i < count; i++) {
        if (i % 3 === 0) b.sendBytes(Buffer.alloc(i % 17, i & 0xff));
        else if (i % 3 === 1) b.send(i);
        else b.send({ i, s: 'x'.repeat(i % 50) });
      }
      b.sendBytes(Buffer.alloc(0));
    });
    b.close();
    for (let i = 0; i < count; i++) {
      // Alternate the receiving forms so both parse the same stream.
      const form = i % 4;
      if (i % 3 === 0) {
        const got = form < 2 ? a.recvBytesSync() : await a.recvBytes();
        expect(got.equals(Buffer.alloc(i % 17, i & 0xff))).toBe(true);
      } else {
        const got = form < 2 ? a.recvSync() : await a.recv();
        expect(got).toEqual(i % 3 === 1 ? i : { i, s: 'x'.repeat(i % 50) });
      }
    }
    expect(a.recvBytesSync().length).toBe(0);
    await child.join();
    expect(() => a.recvSync()).toThrow(EOFError);
    a.close();
  });
});

describe('Pipe: bytes', () => {
  it('sendBytes takes byte offsets and sizes of any view or buffer', () => {
    const [a, b] = Pipe();
    const buf = Buffer.from('0123456789');
    a.sendBytes(buf);
    a.sendBytes(buf, 3);
    a.sendBytes(buf, 2, 4);
    a.sendBytes(buf, 10);
    a.sendBytes(buf.subarray(5), 1, 2);
    const f64 = new Float64Array([1, 2, 3]);
    a.sendBytes(f64, 8, 8);
    a.sendBytes(f64.buffer);
    a.sendBytes(new DataView(buf.buffer, buf.byteOffset + 1, 3));
    const sab = new SharedArrayBuffer(4);
    new Uint8Array(sab).set([9, 8, 7, 6]);
    a.sendBytes(sab, 1, 2);
    expect(b.recvBytesSync().toString()).toBe('0123456789');
    expect(b.recvBytesSync().toString()).toBe('3456789');
    expect(b.recvBytesSync().toString()).toBe('2345');
    expect(b.recvBytesSync().length).toBe(0);
    expect(b.recvBytesSync().toString()).toBe('67');
    expect(new Float64Array(new Uint8Array(b.recvBytesSync()).buffer)).toEqual(new Float64Array([2]));
    expect(new Float64Array(new Uint8Array(b.recvBytesSync()).buffer)).toEqual(new Float64Array([1, 2, 3]));
    expect(b.recvBytesSync().toString()).toBe('123');
    expect([...b.recvBytesSync()]).toEqual([8, 7]);
    a.close();
    b.close();
  });

  it('rejects bad sendBytes arguments with "expected X, got Y" errors', () => {
    const [a, b] = Pipe();
    const buf = Buffer.alloc(8);
    expect(() => a.sendBytes('text' as unknown as Buffer)).toThrow(/sendBytes\(buf\) must be a Buffer, TypedArray, DataView or ArrayBuffer, got 'text'/);
    expect(() => a.sendBytes(buf, -1)).toThrow(RangeError);
    expect(() => a.sendBytes(buf, 9)).toThrow(RangeError);
    expect(() => a.sendBytes(buf, 1.5)).toThrow(RangeError);
    expect(() => a.sendBytes(buf, '1' as unknown as number)).toThrow(TypeError);
    expect(() => a.sendBytes(buf, 4, 5)).toThrow(/sendBytes\(size\) must be an integer from 0 to 4 .*got 5/);
    expect(() => a.sendBytes(buf, 0, -1)).toThrow(RangeError);
    try {
      a.sendBytes(buf, 99);
    } catch (error) {
      expect((error as { code?: string }).code).toBe('ERR_OUT_OF_RANGE');
    }
    // Nothing was sent by the failed calls.
    expect(b.poll()).toBe(false);
    a.close();
    b.close();
  });

  it('recvBytesInto writes at the byte offset and returns the length', async () => {
    const [a, b] = Pipe();
    a.sendBytes(Buffer.from('abc'));
    a.sendBytes(Buffer.from('xyz'));
    a.sendBytes(Buffer.from([1, 0, 0, 0]));
    a.sendBytes(Buffer.alloc(0));
    const target = Buffer.alloc(8, '.');
    expect(b.recvBytesIntoSync(target, 2)).toBe(3);
    expect(target.toString()).toBe('..abc...');
    expect(await b.recvBytesInto(target, 5)).toBe(3);
    expect(target.toString()).toBe('..abcxyz');
    const ints = new Int32Array(2);
    expect(b.recvBytesIntoSync(ints, 4)).toBe(4);
    expect([...ints]).toEqual([0, 1]);
    expect(b.recvBytesIntoSync(new ArrayBuffer(0), 0)).toBe(0);
    expect(() => b.recvBytesIntoSync(target, 9)).toThrow(RangeError);
    await expect(b.recvBytesInto(target, -1)).rejects.toThrow(RangeError);
    await expect(b.recvBytesInto({} as Buffer)).rejects.toThrow(TypeError);
    a.close();
    b.close();
  });

  it('raises BufferTooShort with the whole message for recvBytes(maxLength) and recvBytesInto, and consumes it', async () => {
    const [a, b] = Pipe();
    a.sendBytes(Buffer.from('0123456789'));
    a.sendBytes(Buffer.from('next'));
    let error: unknown;
    try {
      b.recvBytesSync(4);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(BufferTooShort);
    expect((error as BufferTooShort).data.toString()).toBe('0123456789');
    expect(b.recvBytesSync(4).toString()).toBe('next');

    a.sendBytes(Buffer.from('abcdef'));
    const rejected = await b.recvBytes(5).catch((e: unknown) => e);
    expect(rejected).toBeInstanceOf(BufferTooShort);
    expect((rejected as BufferTooShort).data.toString()).toBe('abcdef');

    a.sendBytes(Buffer.from('12345'));
    const small = Buffer.alloc(6);
    const intoError = (() => {
      try {
        b.recvBytesIntoSync(small, 2);
      } catch (e) {
        return e;
      }
    })();
    expect(intoError).toBeInstanceOf(BufferTooShort);
    expect((intoError as BufferTooShort).data.toString()).toBe('12345');
    expect(small.equals(Buffer.alloc(6))).toBe(true);

    // A long message (read into its own buffer) too.
    const long = randomBytes(200 * 1024);
    a.sendBytes(long);
    const longError = await b.recvBytesInto(Buffer.alloc(1024)).catch((e: unknown) => e);
    expect(longError).toBeInstanceOf(BufferTooShort);
    expect((longError as BufferTooShort).data.equals(long)).toBe(true);

    a.send('after');
    expect(b.recvSync()).toBe('after');
    await expect(b.recvBytes(-1)).rejects.toThrow(RangeError);
    expect(() => b.recvBytesSync('3' as unknown as number)).toThrow(TypeError);
    a.close();
    b.close();
  });

  it('round-trips a 16 MiB message both ways between processes', async () => {
    const [a, b] = Pipe();
    const big = randomBytes(16 * 1024 * 1024);
    const digest = sha(big);
    const child = spawnChild(() => {
      const got = b.recvBytesSync();
      b.send(sha(got));
      b.sendBytes(got);
      const obj = b.recvSync() as { payload: Uint8Array; tag: string };
      b.send({ payload: obj.payload, tag: obj.tag.toUpperCase() });
    });
    a.sendBytes(big);
    expect(await a.recv()).toBe(digest);
    const back = await a.recvBytes();
    expect(back.length).toBe(big.length);
    expect(back.equals(big)).toBe(true);
    // A value holding 16 MiB goes through the codec.
    a.send({ payload: big, tag: 'large' });
    const obj = a.recvSync() as { payload: Uint8Array; tag: string };
    expect(obj.tag).toBe('LARGE');
    expect(sha(obj.payload)).toBe(digest);
    expect(await child.join()).toBe(0);
    a.close();
    b.close();
  });
});

describe('Pipe: end of stream, direction, close', () => {
  it('recv raises EOFError once the peer process exited and every copy of its end is closed', async () => {
    const [a, b] = Pipe();
    const child = spawnChild(() => {
      b.send('last words');
    });
    b.close();
    expect(await a.recv()).toBe('last words');
    await expect(a.recv()).rejects.toThrow(EOFError);
    expect(() => a.recvSync()).toThrow(EOFError);
    expect(() => a.recvBytesSync()).toThrow(EOFError);
    // At the end of the stream poll() says a receive will not block.
    expect(a.poll()).toBe(true);
    await child.join();
    a.close();
  });

  it('EOFError after the other end is closed in this process, and for a partial message', () => {
    const [a, b] = Pipe();
    a.send(1);
    a.close();
    expect(b.recvSync()).toBe(1);
    expect(() => b.recvSync()).toThrow(EOFError);
    b.close();

    const [c, d] = Pipe();
    // A header that promises 100 bytes, then 2 of them, then the end.
    writeSync(c.fileno(), Buffer.from([0, 100, 0, 0, 0, 1, 2]));
    // As in Python, poll() says there is data, not that a whole message is there.
    expect(d.poll()).toBe(true);
    c.close();
    expect(() => d.recvBytesSync()).toThrow(/in the middle of a message/);
    d.close();
  });

  it('rejects all pending receives with EOFError when the peer goes away', async () => {
    const [a, b] = Pipe();
    const pending = [a.recv(), a.recvBytes(), a.recvBytesInto(Buffer.alloc(4))];
    const child = spawnChild(() => {
      busySleep(50);
    });
    b.close();
    const results = await Promise.allSettled(pending);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(EOFError);
    await child.join();
    a.close();
  });

  it('a one-way Pipe gives [readEnd, writeEnd] and raises DirectionError the wrong way', async () => {
    const [r, w] = Pipe({ duplex: false });
    expect([r.readable, r.writable, w.readable, w.writable]).toEqual([true, false, false, true]);
    expect(() => r.send(1)).toThrow(DirectionError);
    expect(() => r.sendBytes(Buffer.alloc(1))).toThrow(DirectionError);
    expect(() => w.recvSync()).toThrow(DirectionError);
    expect(() => w.recvBytesSync()).toThrow(DirectionError);
    expect(() => w.recvBytesIntoSync(Buffer.alloc(1))).toThrow(DirectionError);
    expect(() => w.poll()).toThrow(DirectionError);
    await expect(w.recv()).rejects.toThrow(DirectionError);
    await expect(w.recvBytes()).rejects.toThrow(DirectionError);
    w.send({ one: 'way' });
    expect(await r.recv()).toEqual({ one: 'way' });
    const [r2, w2] = Pipe(false);
    expect(r2.writable).toBe(false);
    // Writing to a pipe nobody can read from any more is an OSError (EPIPE).
    r.close();
    let error: unknown;
    try {
      w.send('nobody');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OSError);
    expect((error as OSError).code).toBe('EPIPE');
    w.close();
    r2.close();
    w2.close();
    expect(() => Pipe({ duplex: 'no' as unknown as boolean })).toThrow(TypeError);
    expect(() => Pipe(7 as unknown as boolean)).toThrow(TypeError);
  });

  it('close(): later use raises ClosedError, twice is a no-op, pending receives reject', async () => {
    const [a, b] = Pipe();
    const pending = a.recv();
    expect(a.closed).toBe(false);
    a.close();
    a.close();
    expect(a.closed).toBe(true);
    await expect(pending).rejects.toThrow(ClosedError);
    expect(() => a.send(1)).toThrow(ClosedError);
    expect(() => a.sendBytes(Buffer.alloc(1))).toThrow(ClosedError);
    expect(() => a.recvSync()).toThrow(ClosedError);
    expect(() => a.poll()).toThrow(ClosedError);
    expect(() => a.fileno()).toThrow(ClosedError);
    await expect(a.recv()).rejects.toThrow(ClosedError);
    await expect(a.recvBytes()).rejects.toThrow(ClosedError);
    expect(() => b.recvSync()).toThrow(EOFError);
    b.close();
  });

  it('closing an end in one process leaves the other process its copy', async () => {
    const [a, b] = Pipe();
    const pending = a.recv();
    const out = shared(2);
    const child = spawnChild(async () => {
      // The parent had a receive pending on `a` when it forked; it is not the child's.
      const receiving = a.recv();
      Atomics.store(out, 1, 1);
      const v = await receiving;
      Atomics.store(out, 0, v === 'for the child' ? 1 : 2);
      a.send('reply');
    });
    a.close();
    await expect(pending).rejects.toThrow(ClosedError);
    // Sent once the child waits for it, so the child's own watch must wake it.
    while (Atomics.load(out, 1) === 0) await sleepMs(5);
    await sleepMs(50);
    b.send('for the child');
    expect(await b.recv()).toBe('reply');
    expect(await child.join()).toBe(0);
    expect(Atomics.load(out, 0)).toBe(1);
    b.close();
  });

  it('a child is not kept alive by a receive its parent had pending', async () => {
    const [a, b] = Pipe();
    const pending = a.recv();
    const child = spawnChild(() => undefined);
    expect(await child.join(5000)).toBe(0);
    b.send('still mine');
    expect(await pending).toBe('still mine');
    a.close();
    b.close();
  });

  it('checks Connection arguments', () => {
    expect(() => new Connection(-1)).toThrow(RangeError);
    expect(() => new Connection('3' as unknown as number)).toThrow(TypeError);
    const [a, b] = Pipe();
    expect(() => new Connection(a.fileno(), { readable: false, writable: false })).toThrow(TypeError);
    expect(() => new Connection(a.fileno(), { readable: 1 as unknown as boolean })).toThrow(TypeError);
    a.close();
    b.close();
    let error: unknown;
    try {
      new Connection(1 << 20);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OSError);
    expect((error as OSError).code).toBe('EBADF');
  });
});

describe('Pipe: waiting', () => {
  it('poll() looks without waiting, waits up to a timeout, and says true once a whole message is there', async () => {
    const [a, b] = Pipe();
    expect(a.poll()).toBe(false);
    let t0 = performance.now();
    expect(a.poll(100)).toBe(false);
    let took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(95);
    expect(took).toBeLessThan(2000);
    b.send('here');
    expect(a.poll()).toBe(true);
    expect(a.poll()).toBe(true);
    expect(a.recvSync()).toBe('here');
    expect(a.poll(0)).toBe(false);

    const child = spawnChild(() => {
      busySleep(100);
      b.send('later');
    });
    t0 = performance.now();
    expect(a.poll(10000)).toBe(true);
    took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(50);
    expect(took).toBeLessThan(5000);
    expect(a.recvSync()).toBe('later');
    await child.join();
    expect(() => a.poll(-1)).toThrow(RangeError);
    expect(() => a.poll('1' as unknown as number)).toThrow(TypeError);
    a.close();
    b.close();
  });

  it('recv() keeps the event loop running while another process takes 200 ms to send', async () => {
    const [a, b] = Pipe();
    const child = spawnChild(() => {
      busySleep(200);
      b.send('done');
    });
    const { value, ticks } = await loopTicksDuring(a.recv());
    expect(value).toBe('done');
    expect(ticks).toBeGreaterThan(5);
    await child.join();
    a.close();
    b.close();
  });

  it('several pending receives resolve in the order they were asked for', async () => {
    const [a, b] = Pipe();
    const order: number[] = [];
    const pending = [0, 1, 2, 3, 4].map((i) =>
      (i % 2 === 0 ? a.recv() : a.recvBytes().then((buf) => buf.readUInt8(0))).then((v) => {
        order.push(i);
        return v;
      }),
    );
    const child = spawnChild(async () => {
      for (let i = 0; i < 5; i++) {
        if (i % 2 === 0) b.send(i * 10);
        else b.sendBytes(Buffer.from([i * 10]));
        await sleepMs(20);
      }
    });
    expect(await Promise.all(pending)).toEqual([0, 10, 20, 30, 40]);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    await child.join();
    a.close();
    b.close();
  });

  it('a blocking receive serves the receives already pending first', async () => {
    const [a, b] = Pipe();
    const first = a.recv();
    const second = a.recv();
    b.send('one');
    b.send('two');
    b.send('three');
    expect(a.recvSync()).toBe('three');
    expect(await first).toBe('one');
    expect(await second).toBe('two');
    a.close();
    b.close();
  });
});

function notBytesError(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(TypeError);
    return error as { code?: string; message: string };
  }
  throw new Error('expected ERR_CONNECTION_NOT_BYTES, nothing was thrown');
}

describe('Pipe: a receive takes its one message and nothing else', () => {
  for (const duplex of [false, true]) {
    const kind = duplex ? 'duplex' : 'one-way';

    it(`${kind}: poll(5000) in a child that then exits leaves the messages in the pipe (CPython test_boundaries)`, async () => {
      await expectBoundariesKept(duplex, (conn) => conn.poll(5000));
    });

    it(`${kind}: a child that receives one message leaves the ones after it`, async () => {
      const [r, w] = Pipe({ duplex });
      const out = shared(1);
      w.send({ n: 1 });
      w.sendBytes(Buffer.from('two'));
      w.send('three');
      const child = spawnChild(() => {
        Atomics.store(out, 0, (r.recvSync() as { n: number }).n);
      });
      expect(await child.join()).toBe(0);
      expect(Atomics.load(out, 0)).toBe(1);
      expect(r.poll()).toBe(true);
      expect(r.recvBytesSync().toString()).toBe('two');
      expect(await r.recv()).toBe('three');
      expect(r.poll()).toBe(false);
      r.close();
      w.close();
    });

    it(`${kind}: two processes taking turns on one read end behind a Lock get every message exactly once`, async () => {
      const [r, w] = Pipe({ duplex });
      const lock = new Lock();
      const count = 400;
      const seen = shared(count);
      // Each takes its half, one message per turn, then exits.
      const reader = (): void => {
        for (let k = 0; k < count / 2; k++) {
          lock.acquireSync();
          try {
            Atomics.add(seen, r.recvSync() as number, 1);
          } finally {
            lock.release();
          }
        }
      };
      const children = [spawnChild(reader), spawnChild(reader)];
      for (let i = 0; i < count; i++) w.send(i);
      const codes = [];
      for (const c of children) {
        codes.push(await c.join(10000));
        if (c.isAlive()) c.kill();
      }
      expect(codes).toEqual([0, 0]);
      expect([...seen].filter((n) => n !== 1)).toEqual([]);
      expect(r.poll()).toBe(false);
      r.close();
      w.close();
    });

    it(`${kind}: several-MiB messages go through poll, wait and recv, sync and async`, async () => {
      const [r, w] = Pipe({ duplex });
      const big = randomBytes(6 * 1024 * 1024);
      const digest = sha(big);
      const child = spawnChild(() => {
        w.sendBytes(big);
        w.sendBytes(big);
        w.send({ payload: big, tag: 'obj' });
        w.sendBytes(big);
        w.send({ payload: big, tag: 'async' });
      });
      expect(r.poll(10000)).toBe(true);
      expect(sha(r.recvBytesSync())).toBe(digest);
      expect(r.poll(10000)).toBe(true);
      expect(sha(await r.recvBytes())).toBe(digest);
      const obj = r.recvSync() as { payload: Uint8Array; tag: string };
      expect([obj.tag, sha(obj.payload)]).toEqual(['obj', digest]);
      const into = Buffer.alloc(big.length + 8);
      expect(await r.recvBytesInto(into, 8)).toBe(big.length);
      expect(sha(into.subarray(8))).toBe(digest);
      const last = (await r.recv()) as { payload: Uint8Array; tag: string };
      expect([last.tag, sha(last.payload)]).toEqual(['async', digest]);
      expect(await child.join()).toBe(0);
      r.close();
      w.close();
    });
  }

  it('recvBytes, recvBytesSync, recvBytesInto of a value throw ERR_CONNECTION_NOT_BYTES and leave it for recv() in another process', async () => {
    const [a, b] = Pipe();
    a.send([1, 2.25, null]);
    const sync = notBytesError(() => b.recvBytesSync());
    expect(sync.code).toBe('ERR_CONNECTION_NOT_BYTES');
    expect(sync.message).toMatch(/recvBytesSync\(\): the next message was sent with send\(\) as a value.*take it with recv\(\)/);
    expect(notBytesError(() => b.recvBytesIntoSync(Buffer.alloc(64))).code).toBe('ERR_CONNECTION_NOT_BYTES');
    await expect(b.recvBytes()).rejects.toMatchObject({ code: 'ERR_CONNECTION_NOT_BYTES', name: 'TypeError' });
    await expect(b.recvBytesInto(Buffer.alloc(64))).rejects.toMatchObject({ code: 'ERR_CONNECTION_NOT_BYTES' });
    expect(b.poll()).toBe(true);
    const child = spawnChild(() => {
      b.send({ got: b.recvSync() });
    });
    expect(await a.recv()).toEqual({ got: [1, 2.25, null] });
    expect(await child.join()).toBe(0);
    a.close();
    b.close();
  });

  it('a one-way pipe keeps a value refused as bytes for recv() in this process', async () => {
    const [r, w] = Pipe({ duplex: false });
    w.send({ k: 'v' });
    w.sendBytes(Buffer.from('raw'));
    expect(notBytesError(() => r.recvBytesSync()).code).toBe('ERR_CONNECTION_NOT_BYTES');
    await expect(r.recvBytes()).rejects.toMatchObject({ code: 'ERR_CONNECTION_NOT_BYTES' });
    expect(r.recvSync()).toEqual({ k: 'v' });
    expect((await r.recvBytes()).toString()).toBe('raw');
    r.close();
    w.close();
  });

  it('a one-way pipe is refused the wrong way by the kernel too', () => {
    const [r, w] = Pipe({ duplex: false });
    expect(() => r.send(1)).toThrow(DirectionError);
    expect(() => w.recvSync()).toThrow(DirectionError);
    expect(() => writeSync(r.fileno(), Buffer.from('x'))).toThrow(/EBADF/);
    expect(() => readSync(w.fileno(), Buffer.alloc(4))).toThrow(/EBADF/);
    r.close();
    w.close();
  });
});

describe('Pipe: a message halfway received', () => {
  // A frame's first record written by hand: a header announcing 100 bytes, 10 of them there.
  const header = (tag: number, length: number): Buffer => Buffer.from([tag, length & 0xff, (length >> 8) & 0xff, 0, 0]);

  it("belongs to the process that began it: a child forked meanwhile gets ClosedError on that end, the parent the whole message", async () => {
    const [a, b] = Pipe();
    writeSync(a.fileno(), Buffer.concat([header(0, 100), Buffer.alloc(10, 1)]));
    const pending = b.recvBytes();
    // The receive has taken the first part and waits on the event loop for the rest.
    await new Promise((r) => setTimeout(r, 20));
    const child = new Process({
      target: () => {
        try {
          b.recvSync();
        } catch (e) {
          process.exit(e instanceof ClosedError && /forked while its parent was in the middle/.test((e as Error).message) ? 7 : 8);
        }
      },
    });
    child.start();
    expect(await child.join()).toBe(7);
    writeSync(a.fileno(), Buffer.alloc(90, 2));
    const got = await pending;
    expect(got.length).toBe(100);
    expect([got[0], got[9], got[10], got[99]]).toEqual([1, 1, 2, 2]);
    a.send('next');
    expect(b.recvSync()).toBe('next');
    a.close();
    b.close();
  });

  it('close() while a receive holds part of a message rejects it with ClosedError and leaves the rest unread', async () => {
    const [a, b] = Pipe();
    writeSync(a.fileno(), Buffer.concat([header(0, 100), Buffer.alloc(10)]));
    const pending = b.recvBytes();
    await new Promise((r) => setTimeout(r, 20));
    b.close();
    await expect(pending).rejects.toThrow(ClosedError);
    a.close();
  });
});

describe('Pipe: resources', () => {
  it('leaves no descriptors behind', async () => {
    const before = openFds();
    for (let round = 0; round < 3; round++) {
      const pipes = Array.from({ length: 20 }, (_, i) => Pipe({ duplex: i % 2 === 0 }));
      const child = spawnChild(() => {
        for (const [, w] of pipes) w.send('hi');
      });
      for (const [r, w] of pipes) {
        expect(await r.recv()).toBe('hi');
        r.close();
        w.close();
      }
      await child.join();
    }
    expect(openFds().filter((fd) => !before.includes(fd))).toEqual([]);
  });

  it('closes the descriptor of a Connection that was dropped without close()', () => {
    const r = runScript(
      `
      import { readdirSync } from 'node:fs';
      import { Pipe } from NODEMP;
      const count = () => readdirSync('/proc/self/fd').length;
      const before = count();
      // In a function of its own: a suspended async frame may keep its last values reachable.
      function makeAndDrop() {
        const keep = [];
        for (let i = 0; i < 50; i++) { const [a, b] = Pipe(); a.send(i); b.recvSync(); keep.push(a, b); }
        return count() - before;
      }
      const held = makeAndDrop();
      for (let i = 0; i < 10 && count() - before > 0; i++) {
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      console.log('held', held, 'left', count() - before);
    `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    const [, held, left] = r.stdout.match(/held (\d+) left (-?\d+)/)!.map(Number);
    expect(held).toBeGreaterThanOrEqual(90);
    expect(left).toBeLessThanOrEqual(0);
  });

  it("runs the tutorial's Pipe example: a child sends 'Python', the parent prints it", () => {
    const r = runScript(`
      import { Pipe, Process, currentProcess } from NODEMP;
      function f(conn) {
        console.log('(' + currentProcess().pid + ') starts sending data...');
        conn.send('Python');
      }
      const [parentConn, childConn] = Pipe();
      const p = new Process({ target: f, args: [childConn] });
      p.start();
      console.log('(' + currentProcess().pid + ') starts receiving data...');
      console.log(await parentConn.recv());
      await p.join();
    `);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContain('Python');
    expect(lines.filter((l) => /^\(\d+\) starts (sending|receiving) data\.\.\.$/.test(l))).toHaveLength(2);
  });
});
