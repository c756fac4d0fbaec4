import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BufferTooShort, ClosedError, JoinableQueue, Queue, QueueEmpty, QueueFull, SimpleQueue, SyncError } from '../dist/index.js';
import { native } from '../dist/native.js';
import { putWokeSleeper } from '../dist/queue.js';
import { decodeRange, encodeSmall, SMALL } from '../dist/codec.js';
import { openFds, runScript, shared, shmEntries } from './helpers.js';
import { busySleep, loopTicksDuring, spawnChild } from './sync-helpers.js';

const L = native.layout;
const PUTTING = 1;
const GETTING = 2;

/** The queue's shared header as words, and its slot count. */
function header(q: Queue<unknown>): { w: Int32Array; slots: number } {
  const ring = (q as unknown as Record<symbol, () => { buffer: ArrayBuffer; slots: number }>)[Symbol.for('nodemp.queue.ring')]();
  return { w: new Int32Array(ring.buffer, 0, L.kQueueHeaderSize / 4), slots: ring.slots };
}

/** Writes this process into party row `row` as doing `kind` at `pos`, as put() and get() do. */
function recordParty(w: Int32Array, row: number, kind: number, pos: number): void {
  const base = (L.kQueueParties + row * L.kQueuePartySize) / 4;
  Atomics.store(w, base + L.kQueuePartyPid / 4, process.pid);
  w[base + L.kQueuePartyPos / 4] = pos;
  Atomics.store(w, base + L.kQueuePartyKind / 4, kind);
}

// Who puts once the ring is full: an unbounded queue's feeder thread, or a bounded queue's put() itself.
const PRODUCER_KINDS: [string, number][] = [
  ['unbounded (the feeder thread puts)', 0],
  ['bounded (put itself waits)', 1000],
];

describe('Queue', () => {
  it('round-trips values with their types, and bytes as bytes', () => {
    const q = new Queue();
    const cyclic: Record<string, unknown> = { m: new Map([[1, new Set(['a'])]]) };
    cyclic.self = cyclic;
    const values = [1, -0.5, 'text', null, true, 2n ** 70n, [1, [2, { x: 3 }]], new Date(5), /re/g, new Float32Array([1.5]), new TypeError('boom')];
    for (const v of values) q.putSync(v);
    q.putSync(cyclic);
    q.putSync(Buffer.from('raw bytes'));
    q.putSync(new Uint8Array(0));
    for (const v of values) expect(q.getSync()).toEqual(v);
    const c = q.getSync() as Record<string, unknown>;
    expect(c.self).toBe(c);
    expect(c.m).toEqual(new Map([[1, new Set(['a'])]]));
    expect(Buffer.from(q.getSync() as Uint8Array).toString()).toBe('raw bytes');
    expect((q.getSync() as Uint8Array).length).toBe(0);
    expect(q.empty()).toBe(true);
  });

  it("with { serializer: 'v8' } keeps what node:v8 keeps", () => {
    const q = new Queue({ serializer: 'v8' });
    const v = { m: new Map([['k', [1n]]]), d: new Date(1) };
    q.putSync(v);
    expect(q.getSync()).toEqual(v);
    expect(() => new Queue({ serializer: 'json' as 'v8' })).toThrow(TypeError);
  });

  it('get on an empty queue: QueueEmpty at once, or after about the timeout', async () => {
    const q = new Queue();
    expect(() => q.getNowait()).toThrow(QueueEmpty);
    expect(() => q.getSync({ block: false })).toThrow(QueueEmpty);
    let t0 = performance.now();
    expect(() => q.getSync({ timeout: 100 })).toThrow(QueueEmpty);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
    t0 = performance.now();
    await expect(q.get({ timeout: 100 })).rejects.toThrow(QueueEmpty);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(95);
  });

  it('bounded: full(), QueueFull at once or after the timeout, put waits for room', async () => {
    const q = new Queue<number>({ maxsize: 2 });
    expect(q.maxsize).toBe(2);
    q.putSync(1);
    await q.put(2);
    expect(q.full()).toBe(true);
    expect(q.qsize()).toBe(2);
    expect(() => q.putNowait(3)).toThrow(QueueFull);
    const t0 = performance.now();
    expect(() => q.putSync(3, { timeout: 80 })).toThrow(QueueFull);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(75);
    await expect(q.put(3, { timeout: 30 })).rejects.toThrow(QueueFull);
    const child = spawnChild(() => {
      busySleep(150);
      q.getSync();
    });
    const { ticks } = await loopTicksDuring(q.put(3, { timeout: 10000 }));
    expect(ticks).toBeGreaterThan(3);
    await child.join();
    expect([q.getSync(), q.getSync()]).toEqual([2, 3]);
  });

  it('a large message that a full queue refuses leaves no segment behind', async () => {
    const before = shmEntries();
    const q = new Queue<Uint8Array>({ maxsize: 1, ringSize: 4096 });
    q.putSync(new Uint8Array(1));
    const big = new Uint8Array(8192);
    expect(() => q.putNowait(big)).toThrow(QueueFull);
    expect(() => q.putSync(big, { timeout: 10 })).toThrow(QueueFull);
    await expect(q.put(big, { timeout: 10 })).rejects.toThrow(QueueFull);
    expect(shmEntries()).toEqual(before);
  });

  it('getBytesInto writes each message where it is asked to, whatever its size, target or place in the ring', () => {
    // 64 slots of 64 bytes: the 200-byte messages below wrap around the ring's end.
    const q = new Queue({ ringSize: 4096 });
    const sizes = [0, 3, 64, 65, 200, 255, 256, 257, 900, 1024, 3000];
    const pattern = (size: number, seed: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + seed) & 0xff));
    const pooled = Buffer.allocUnsafe(3100);
    const targets = [
      { view: Buffer.alloc(3100), offset: 0 },
      { view: Buffer.alloc(3100), offset: 5 },
      { view: pooled.subarray(1), offset: 3 },
      { view: new DataView(new ArrayBuffer(3104), 4), offset: 4 },
      { view: new Float64Array(400), offset: 8 },
    ];
    let seed = 0;
    for (let lap = 0; lap < 6; lap++) {
      for (const size of sizes) {
        for (const { view, offset } of targets) {
          const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
          bytes.fill(0xee);
          const message = pattern(size, ++seed);
          q.putSync(message);
          expect(q.getBytesIntoSync(view, offset)).toBe(size);
          expect(Buffer.from(bytes.subarray(offset, offset + size)).equals(message)).toBe(true);
          expect(bytes.subarray(0, offset).every((b) => b === 0xee)).toBe(true);
          expect(bytes.subarray(offset + size).every((b) => b === 0xee)).toBe(true);
        }
      }
    }
    // Larger than a quarter of the ring: through a segment of its own, which is removed.
    const before = shmEntries();
    const big = pattern(5000, 1);
    q.putSync(big);
    const into = new ArrayBuffer(6000);
    expect(q.getBytesIntoSync(into, 1000)).toBe(5000);
    expect(Buffer.from(into, 1000, 5000).equals(big)).toBe(true);
    expect(shmEntries()).toEqual(before);
    expect(q.empty()).toBe(true);
  });

  it('getBytesInto: a message too long is taken and carried by BufferTooShort; a value stays for get()', async () => {
    const q = new Queue();
    q.putSync(Buffer.from('0123456789'));
    q.putSync(Buffer.from('next'));
    const small = Buffer.alloc(8);
    let error: unknown;
    try {
      q.getBytesIntoSync(small, 2);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(BufferTooShort);
    expect((error as BufferTooShort).code).toBe('ERR_BUFFER_TOO_SHORT');
    expect((error as BufferTooShort).data.toString()).toBe('0123456789');
    expect(q.getBytesIntoSync(small)).toBe(4);
    expect(small.subarray(0, 4).toString()).toBe('next');

    q.putSync({ not: 'bytes' });
    expect(() => q.getBytesIntoSync(small)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_QUEUE_NOT_BYTES' }));
    await expect(q.getBytesInto(small)).rejects.toThrow(/put as a value/);
    expect(q.qsize()).toBe(1);
    expect(q.getSync()).toEqual({ not: 'bytes' });

    expect(() => q.getBytesIntoSync('text' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => q.getBytesIntoSync(small, 9)).toThrow(RangeError);
    expect(() => q.getBytesIntoSync(small, 0, { block: false })).toThrow(QueueEmpty);
    await expect(q.getBytesInto(small, 0, { timeout: 20 })).rejects.toThrow(QueueEmpty);
    q.close();
    expect(() => q.getBytesIntoSync(small)).toThrow(ClosedError);
    await expect(q.getBytesInto(small)).rejects.toThrow(ClosedError);
  });

  it('getBytesInto waits for another process without blocking the event loop', async () => {
    const q = new Queue();
    const child = spawnChild(() => {
      busySleep(150);
      q.putSync(Buffer.from('from the child'));
      q.putSync(Buffer.from('and again'));
    });
    const into = Buffer.alloc(32);
    const { value, ticks } = await loopTicksDuring(q.getBytesInto(into, 1));
    expect(ticks).toBeGreaterThan(3);
    expect(into.subarray(1, 1 + value).toString()).toBe('from the child');
    expect(q.getBytesIntoSync(into, 0, { timeout: 10_000 })).toBe(9);
    expect(into.subarray(0, 9).toString()).toBe('and again');
    await child.join();
  });

  it('rejects bad options and arguments', () => {
    expect(() => new Queue({ maxsize: -1 })).toThrow(RangeError);
    expect(() => new Queue({ maxsize: 1.5 })).toThrow(RangeError);
    expect(() => new Queue({ ringSize: 10 })).toThrow(RangeError);
    expect(() => new Queue(5 as unknown as object)).toThrow(TypeError);
    const q = new Queue();
    expect(() => q.getSync({ block: false, timeout: 1 })).toThrow(TypeError);
    expect(() => q.putSync(1, { timeout: -1 })).toThrow(RangeError);
  });

  it('close() ends this process’s use only', () => {
    const q = new Queue();
    q.putSync('before');
    q.close();
    expect(() => q.putSync(1)).toThrow(ClosedError);
    expect(() => q.getSync()).toThrow(/closed in this process/);
    const seen = shared(1);
    const child = spawnChild(() => {
      seen[0] = q.getSync() === 'before' ? 1 : 2;
    });
    child.joinSync();
    expect(seen[0]).toBe(1);
  });

  it('unbounded put never blocks, even far past the ring, and nothing is lost while the producer is blocked', () => {
    const q = new Queue<Buffer>({ ringSize: 4096 });
    const n = 2000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) q.putSync(Buffer.alloc(100, i % 256));
    expect(performance.now() - t0).toBeLessThan(5000);
    // Those that did not fit wait in this process's feeder, and count.
    expect(q.qsize()).toBe(n);
    const sum = shared(2);
    const consumer = spawnChild(() => {
      for (let i = 0; i < n; i++) {
        const b = q.getSync({ timeout: 10000 });
        if (b.length === 100 && b[99] === i % 256) Atomics.add(sum, 0, 1);
      }
    });
    // Blocks this thread: only the feeder thread can deliver the rest.
    consumer.joinSync();
    expect(sum[0]).toBe(n);
    // The feeder thread counts its last message out just after the ring has it,
    // so a consumer may have taken it first: qsize() is exact once it has.
    const settled = performance.now() + 2000;
    while (q.qsize() !== 0 && performance.now() < settled) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    expect(q.qsize()).toBe(0);
    q.putSync(Buffer.from('after'));
    expect(q.getSync().toString()).toBe('after');
  });

  it('messages larger than the ring travel whole, up to 64 MiB, and leave no segment behind', () => {
    const before = shmEntries().filter((n) => n.startsWith('nodemp_'));
    const q = new Queue({ ringSize: 64 * 1024 });
    const big = Buffer.alloc(64 << 20);
    for (let i = 0; i < big.length; i += 4093) big[i] = i & 0xff;
    const digest = createHash('sha256').update(big).digest('hex');
    const ok = shared(1);
    const child = spawnChild(() => {
      const got = q.getSync() as Buffer;
      const text = q.getSync() as string;
      ok[0] = createHash('sha256').update(got).digest('hex') === digest && text.length === 300000 ? 1 : 2;
    });
    q.putSync(big);
    q.putSync('x'.repeat(300000));
    child.joinSync();
    expect(ok[0]).toBe(1);
    expect(shmEntries().filter((n) => n.startsWith('nodemp_') && !before.includes(n))).toEqual([]);
  });

  it.each([
    ['unbounded', 0],
    ['bounded', 4],
  ])('a large message outlives the child that put it, whether it exits or is killed (%s)', (_, maxsize) => {
    // A fresh process, with no segment of its own before the queue: each child
    // then registers its segments with the queue's tracker, not one of its own
    // that would remove them when the child is gone.
    const r = runScript(`
      import { Queue, Process } from NODEMP;
      const q = new Queue({ maxsize: ${maxsize} });
      const exits = new Process({ target: () => q.putSync(Buffer.alloc(600 * 1024, 7)) });
      exits.start();
      exits.joinSync();
      const killed = new Process({ target: () => { q.putSync(Buffer.alloc(700 * 1024, 8)); process.kill(process.pid, 'SIGKILL'); } });
      killed.start();
      killed.joinSync();
      const a = q.getSync({ timeout: 5000 });
      const b = q.getSync({ timeout: 5000 });
      console.log(JSON.stringify([killed.exitCode, a.length, a[0], a[a.length - 1], b.length, b[0]]));
    `);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([-9, 600 * 1024, 7, 7, 700 * 1024, 8]);
  });

  it('8 processes at once: no duplicate, no loss, FIFO per producer (counts and checksums)', () => {
    const q = new Queue<[number, number]>({ ringSize: 16384 });
    const producers = 4;
    const per = 3000;
    const results = shared(16); // per consumer: [count, checksum, order violations]
    const consumers = [0, 1, 2, 3].map((c) =>
      spawnChild(() => {
        const last = [-1, -1, -1, -1];
        let count = 0;
        let checksum = 0;
        let disorder = 0;
        for (;;) {
          const [p, i] = q.getSync({ timeout: 10000 });
          if (p < 0) break;
          if (i <= last[p]) disorder++;
          last[p] = i;
          count++;
          checksum = (checksum + p * 100003 + i) | 0;
        }
        results[c * 3] = count;
        results[c * 3 + 1] = checksum;
        results[c * 3 + 2] = disorder;
      }),
    );
    const makers = Array.from({ length: producers }, (_, p) =>
      spawnChild(() => {
        for (let i = 0; i < per; i++) q.putSync([p, i]);
      }),
    );
    for (const m of makers) m.joinSync();
    for (let c = 0; c < 4; c++) q.putSync([-1, -1]);
    for (const c of consumers) c.joinSync();
    expect([...makers, ...consumers].map((p) => p.exitCode)).toEqual(Array(8).fill(0));
    let count = 0;
    let checksum = 0;
    for (let c = 0; c < 4; c++) {
      count += results[c * 3];
      checksum = (checksum + results[c * 3 + 1]) | 0;
      expect(results[c * 3 + 2]).toBe(0);
    }
    let expected = 0;
    for (let p = 0; p < producers; p++) for (let i = 0; i < per; i++) expected = (expected + p * 100003 + i) | 0;
    expect(count).toBe(producers * per);
    expect(checksum).toBe(expected);
    expect(q.empty()).toBe(true);
  });

  it('get() waits without blocking the event loop', async () => {
    const q = new Queue<string>();
    const child = spawnChild(() => {
      busySleep(200);
      q.putSync('late');
    });
    const { value, ticks } = await loopTicksDuring(q.get({ timeout: 10000 }));
    expect(value).toBe('late');
    expect(ticks).toBeGreaterThan(5);
    await child.join();
  });

  it('a producer that dies between reserving and publishing does not wedge consumers', () => {
    const q = new Queue<string>({ ringSize: 4096 });
    const { w } = header(q);
    // A child reserves a slot the way put() does and is killed before publishing.
    const child = spawnChild(() => {
      const pos = Atomics.load(w, L.kQueueTail / 4);
      recordParty(w, 5, PUTTING, pos);
      Atomics.add(w, L.kQueuePuts / 4, 1);
      Atomics.store(w, L.kQueueTail / 4, pos + 1);
      process.kill(process.pid, 'SIGKILL');
    });
    child.joinSync();
    expect(child.exitCode).toBe(-9);
    q.putSync('after');
    const t0 = performance.now();
    expect(q.getSync({ timeout: 5000 })).toBe('after');
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(q.qsize()).toBe(0);
  });

  it.each(PRODUCER_KINDS)('a consumer that dies holding claimed slots does not wedge producers: %s', (_, maxsize) => {
    const q = new Queue<number>({ ringSize: 4096, maxsize });
    const { w, slots } = header(q);
    q.putSync(1);
    // A child claims the message the way get() does and is killed before handing the slot back.
    const child = spawnChild(() => {
      const pos = Atomics.load(w, L.kQueueHead / 4);
      recordParty(w, 7, GETTING, pos);
      Atomics.store(w, L.kQueueHead / 4, pos + 1);
      process.kill(process.pid, 'SIGKILL');
    });
    child.joinSync();
    // Fill the ring all the way round, onto the dead consumer's slot.
    const drain = shared(1);
    const consumer = spawnChild(() => {
      for (let i = 0; i < slots + 10; i++) if (q.getSync({ timeout: 10000 }) === i) Atomics.add(drain, 0, 1);
    });
    for (let i = 0; i < slots + 10; i++) q.putSync(i);
    consumer.joinSync();
    expect(drain[0]).toBe(slots + 10);
  });

  it.each(PRODUCER_KINDS)('a consumer killed while handing back a long message’s slots does not wedge producers: %s', (_, maxsize) => {
    const q = new Queue<Buffer>({ ringSize: 4096, maxsize });
    const { w, slots } = header(q);
    const ring = (q as unknown as Record<symbol, () => { buffer: ArrayBuffer }>)[Symbol.for('nodemp.queue.ring')]();
    const meta = new Int32Array(ring.buffer, L.kQueueHeaderSize, slots * (L.kQueueMetaSize / 4));
    const metaOf = (p: number): number => (((p % slots) % 8) * (slots / 8) + Math.floor((p % slots) / 8)) * (L.kQueueMetaSize / 4);
    q.putSync(Buffer.alloc(150, 1));
    // A child claims the three-slot message as get() does, hands back its
    // last two slots (get() goes last first) and is killed before the first.
    const child = spawnChild(() => {
      const pos = Atomics.load(w, L.kQueueHead / 4);
      recordParty(w, 9, GETTING, pos);
      Atomics.store(w, L.kQueueHead / 4, pos + 3);
      for (const p of [pos + 2, pos + 1]) Atomics.store(meta, metaOf(p) + L.kQueueMetaSeq / 4, p + slots);
      process.kill(process.pid, 'SIGKILL');
    });
    child.joinSync();
    expect(child.exitCode).toBe(-9);
    const drain = shared(2);
    const consumer = spawnChild(() => {
      for (let i = 0; i < slots * 2; i++) {
        const b = q.getSync({ timeout: 10000 });
        if (b.length === 70 && b[0] === i % 256 && b[69] === i % 256) Atomics.add(drain, 0, 1);
      }
    });
    // Two-slot messages all the way round the ring, twice, over the dead consumer's slots.
    for (let i = 0; i < slots * 2; i++) q.putSync(Buffer.alloc(70, i % 256));
    consumer.joinSync();
    expect(drain[0]).toBe(slots * 2);
    expect(q.qsize()).toBe(0);
  });

  it('survives SIGKILL of producers and consumers mid-stream: the others go on', async () => {
    const q = new Queue<number>({ ringSize: 8192 });
    const victims = [0, 1, 2].map((k) =>
      spawnChild(() => {
        for (let i = 0; ; i++) {
          if (k === 0) q.getSync();
          else q.putSync(i);
        }
      }),
    );
    busySleep(100);
    for (const v of victims) v.kill();
    for (const v of victims) await v.join();
    // Whatever the victims left half-done, a fresh producer and consumer still work.
    const got = shared(1);
    const consumer = spawnChild(() => {
      for (;;) {
        const v = q.getSync({ timeout: 5000 });
        if (v === -1) break;
        if (v >= 1_000_000) Atomics.add(got, 0, 1);
      }
    });
    for (let i = 0; i < 5000; i++) q.putSync(1_000_000 + i);
    q.putSync(-1);
    await consumer.join(20000);
    expect(consumer.exitCode).toBe(0);
    expect(got[0]).toBe(5000);
  });

  it.each([
    ['unbounded', 0],
    ['bounded', 16],
  ])('messages of every size, with consumers and a producer killed mid-stream: the others get nothing twice, out of order or garbled, and go on (%s)', (_, maxsize) => {
    const q = new Queue<Buffer>({ ringSize: 8192, maxsize });
    const stop = shared(1);
    // One to eighty slots, wrapping round the ring, and segments of their own (over 2 KiB).
    const sizes = [0, 5, 63, 64, 65, 128, 500, 1500, 2500, 5000];
    const message = (p: number, i: number): Buffer => {
      const b = Buffer.alloc(8 + sizes[(i * 7 + p) % sizes.length], (i + p) & 0xff);
      b.writeUInt32LE(p, 0);
      b.writeUInt32LE(i, 4);
      return b;
    };
    const END = 0xffffffff;
    const survivors = [1, 2].map((p) =>
      spawnChild(() => {
        let i = 0;
        while (Atomics.load(stop, 0) === 0) q.putSync(message(p, i++));
        const end = Buffer.alloc(8);
        end.writeUInt32LE(p, 0);
        end.writeUInt32LE(END, 4);
        q.putSync(end);
      }),
    );
    const victims = [
      spawnChild(() => {
        for (;;) q.getSync();
      }),
      spawnChild(() => {
        for (;;) q.getSync();
      }),
      spawnChild(() => {
        for (let i = 0; ; i++) q.putSync(message(9, i));
      }),
    ];
    const last = new Map<number, number>();
    const ended = new Set<number>();
    const problems: string[] = [];
    const take = (timeout: number): void => {
      const b = q.getSync({ timeout });
      const p = b.readUInt32LE(0);
      const i = b.readUInt32LE(4);
      if (i === END) ended.add(p);
      else {
        if (!b.equals(message(p, i))) problems.push(`message ${i} of ${p} garbled`);
        if (i <= (last.get(p) ?? -1)) problems.push(`message ${i} of ${p} after ${last.get(p)}`);
        last.set(p, i);
      }
    };
    const until = performance.now() + 150;
    while (performance.now() < until) {
      try {
        take(20);
      } catch (error) {
        if (!(error instanceof QueueEmpty)) throw error;
      }
    }
    for (const v of victims) v.kill('SIGKILL');
    for (const v of victims) v.joinSync();
    // Each survivor goes on after the kills (on a loaded machine one may not have been heard from before them).
    const heard = new Map(last);
    while ([1, 2].some((p) => last.get(p) === heard.get(p))) take(10_000);
    Atomics.store(stop, 0, 1);
    while (ended.size < 2) take(10_000);
    for (const s of survivors) s.joinSync();
    try {
      for (;;) take(300);
    } catch (error) {
      if (!(error instanceof QueueEmpty)) throw error;
    }
    expect(problems).toEqual([]);
    expect(survivors.map((s) => s.exitCode)).toEqual([0, 0]);
    // Both were heard from after the kills (a loaded machine may let one put only its first message before the stop).
    for (const p of [1, 2]) expect(last.get(p)).not.toBe(heard.get(p));
    expect([...ended].sort()).toEqual([1, 2]);
  });

  it('holds no descriptor but its memory', () => {
    // The tracker's pipe, made by the first queue of the process, is the process's.
    native.trackerStart();
    const before = openFds();
    const q = new Queue();
    for (let i = 0; i < 100; i++) q.putSync({ i });
    for (let i = 0; i < 100; i++) q.getSync();
    // The ring's memfd, open while the queue lives: what a spawned child is handed.
    expect(openFds().filter((fd) => !before.includes(fd))).toEqual([expect.stringMatching(/ -> \/memfd:nodemp \(deleted\)$/)]);
  });
});

describe('Queue: small messages (a format of their own, lib/codec.ts)', () => {
  const hole = [1, , 3];
  const ascii255 = 'a'.repeat(255);
  // What fits the small format, and what lies just past one of its limits (msgpack's then).
  const values: unknown[] = [
    0, -0, 1, -7, 2 ** 53, 0.1, 1e-300, -1e300, NaN, Infinity, -Infinity, true, false, null, undefined, '', 'text', ascii255,
    [], hole, [1, 'a', null, undefined, true], [17, 3, 1, [12345, 'x']], [[['deep']]], Array.from({ length: 100 }, (_, i) => i),
    'a'.repeat(256), 'héllo ✓', [[[['four deep']]]], Array.from({ length: 256 }, () => 1), Array.from({ length: 200 }, (_, i) => i), [1, { x: 1 }], [1n], [new Uint8Array([1])],
    {}, { i: 1 }, { a: 1, b: 'x', c: [1, { d: null, e: undefined }] }, { [ascii255]: ascii255 }, [0, { task: 'add', args: [1, 2] }],
    { [ascii255 + 'a']: 1 }, { é: 1 }, { d: new Date(0) }, { a: { b: { c: { d: 1 } } } }, Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`k${i}`, i])),
  ];
  const expected = values.map((v) => (v === hole ? [1, undefined, 3] : v));

  it('arrive from another process as they were put, in and out of the format alike', async () => {
    const q = new Queue();
    const child = spawnChild(() => {
      for (const v of values) q.putSync(v);
    });
    for (const v of expected) {
      const got = await q.get({ timeout: 10_000 });
      if (typeof v === 'number') expect(Object.is(got, v)).toBe(true);
      else expect(got).toEqual(v);
    }
    await child.join();
    expect(child.exitCode).toBe(0);
  });

  it('an object arrives with its keys in their order, and an own "__proto__" key never becomes its prototype (msgpack takes it, as before)', () => {
    const q = new Queue();
    q.putSync({ b: 1, 2: 'two', a: { y: 1, x: 2 }, 1: 'one' });
    const got = q.getSync() as Record<string, Record<string, number>>;
    expect(Object.keys(got)).toEqual(['1', '2', 'b', 'a']);
    expect(Object.keys(got.a)).toEqual(['y', 'x']);
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    q.putSync(JSON.parse('{"__proto__": {"polluted": true}, "k": 1}'));
    const own = q.getSync() as Record<string, unknown>;
    expect(Object.getPrototypeOf(own)).toBe(Object.prototype);
    expect((own as { polluted?: boolean }).polluted).toBeUndefined();
  });

  it('keeps -0 and the type of every element; a hole arrives as undefined', () => {
    const q = new Queue();
    q.putSync([-0, 0, '1', 1, hole]);
    const got = q.getSync() as unknown[];
    expect(Object.is(got[0], -0)).toBe(true);
    expect(Object.is(got[1], 0)).toBe(true);
    expect(got.slice(2, 4)).toEqual(['1', 1]);
    expect(got[4]).toEqual([1, undefined, 3]);
  });

  it('an encoding stays whole while later ones fill and replace its chunk', () => {
    const first = encodeSmall([1, 'first']);
    expect(first).not.toBeNull();
    const { body, start, end } = first as NonNullable<typeof first>;
    const copy = Uint8Array.from(body.subarray(start, end));
    for (let i = 0; i < 20_000; i++) encodeSmall([i, ascii255]);
    expect(body.subarray(start, end)).toEqual(copy);
    expect(decodeRange(SMALL, body, start, end)).toEqual([1, 'first']);
  });

  it('what it cannot hold is left to msgpack; a malformed message is a TypeError, not a wrong value', () => {
    class Point {
      x = 1;
    }
    const refused = [
      1n, 'é', 'a'.repeat(256), [[[[1]]]], () => 1, Symbol('s'), { é: 1 }, { ['a'.repeat(256)]: 1 }, Object.create(null), new Point(), new Date(0),
      { d: new Date(0) }, { a: { b: { c: { d: 1 } } } }, JSON.parse('{"__proto__": 1}'), Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`k${i}`, i])),
    ];
    for (const v of refused) expect(encodeSmall(v)).toBeNull();
    for (const v of [[1, 'ab', [true]], { a: 1, bc: [true, { d: 'e' }] }]) {
      const { body, start, end } = encodeSmall(v) as NonNullable<ReturnType<typeof encodeSmall>>;
      const bytes = Uint8Array.from(body.subarray(start, end));
      expect(decodeRange(SMALL, bytes, 0, bytes.length)).toEqual(v);
      for (let cut = 0; cut < bytes.length; cut++) expect(() => decodeRange(SMALL, bytes, 0, cut)).toThrow(TypeError);
    }
    const { body, start, end } = encodeSmall([1, 'ab', [true]]) as NonNullable<ReturnType<typeof encodeSmall>>;
    const bytes = Uint8Array.from(body.subarray(start, end));
    expect(() => decodeRange(SMALL, Uint8Array.from([...bytes, 3]), 0, bytes.length + 1)).toThrow(/malformed/);
    expect(() => decodeRange(SMALL, Uint8Array.from([99]), 0, 1)).toThrow(/malformed/);
  });
});

describe('Queue: whether a put woke a sleeping consumer (the Pool skips its spin for such an answer)', () => {
  it('says no with no consumer asleep and yes once one sleeps in getSync()', async () => {
    const q = new Queue<string>();
    const back = new Queue<string>();
    q.putSync('nobody waits');
    expect(putWokeSleeper(q)).toBe(false);
    expect(q.getSync()).toBe('nobody waits');
    const child = spawnChild(() => back.putSync(q.getSync()));
    // Asleep in the kernel once it has announced its sleep on the ring's put sequence.
    const { w } = header(q);
    while (Atomics.load(w, L.kQueueGetSleepSeq / 4) !== Atomics.load(w, L.kQueuePutSeq / 4) || child.pid === undefined) busySleep(5);
    busySleep(200);
    q.putSync('wake up');
    expect(putWokeSleeper(q)).toBe(true);
    expect(back.getSync({ timeout: 5000 })).toBe('wake up');
    expect(await child.join()).toBe(0);
  });
});

describe('Queue: one process\'s put() calls on a full bounded queue', () => {
  it('go in call order even when nobody awaits them', async () => {
    const q = new Queue<number>({ maxsize: 4 });
    for (let i = 0; i < 60; i++) void q.put(i);
    const got: number[] = [];
    for (let i = 0; i < 60; i++) got.push(await q.get({ timeout: 5000 }));
    expect(got).toEqual(Array.from({ length: 60 }, (_, i) => i));
  });

  it('go in call order from a child that puts in a loop, as a ported Python program does', async () => {
    const q = new Queue<number>({ maxsize: 8 });
    const child = spawnChild(() => {
      for (let i = 0; i < 300; i++) void q.put(i);
    });
    const got: number[] = [];
    for (let i = 0; i < 300; i++) got.push(await q.get({ timeout: 10000 }));
    expect(got).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(await child.join(10000)).toBe(0);
  });

  it('a put() that times out waiting in turn lets the later ones go on', async () => {
    const q = new Queue<number>({ maxsize: 1 });
    await q.put(0);
    const first = q.put(1, { timeout: 30 });
    const second = q.put(2);
    await expect(first).rejects.toThrow(QueueFull);
    expect(await q.get()).toBe(0);
    await second;
    expect(await q.get()).toBe(2);
  });
});

describe('JoinableQueue', () => {
  it('join() waits for every taskDone(); too many taskDone() throws', async () => {
    const q = new JoinableQueue<number>();
    const worker = spawnChild(async () => {
      for (let i = 0; i < 5; i++) {
        await q.get();
        busySleep(10);
        q.taskDone();
      }
    });
    for (let i = 0; i < 5; i++) q.putSync(i);
    expect(q.joinSync(0)).toBe(false);
    const { value, ticks } = await loopTicksDuring(q.join(10000));
    expect(value).toBe(true);
    expect(ticks).toBeGreaterThan(0);
    await worker.join();
    expect(() => q.taskDone()).toThrow(SyncError);
    expect(q.joinSync()).toBe(true);
  });
});

describe('SimpleQueue', () => {
  it('put, get, empty, close', async () => {
    const q = new SimpleQueue<string>();
    expect(q.empty()).toBe(true);
    const child = spawnChild(() => q.put('from child'));
    expect(await q.get()).toBe('from child');
    q.put('again');
    expect(q.getSync()).toBe('again');
    await child.join();
    q.close();
    expect(() => q.put('x')).toThrow(ClosedError);
  });
});
