// Issue #11: a Queue survives processes killed mid-operation again and again,
// not just once. Each scenario below wedged (or lost or duplicated messages)
// before the recovery protocol of native/layout.h ("Queue recovery").
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Process, Queue, QueueFull } from '../dist/index.js';
import { native } from '../dist/native.js';
import { runScript, shared, shmEntries, waitUntil } from './helpers.js';
import { busySleep, spawnChild } from './sync-helpers.js';

const L = native.layout;
const W = (byteOffset: number): number => byteOffset / 4;

/** The queue's shared header as words, and its slot count. */
function header(q: Queue<unknown>): { w: Int32Array; slots: number } {
  const ring = (q as unknown as Record<symbol, () => { buffer: ArrayBuffer; slots: number }>)[Symbol.for('nodemp.queue.ring')]();
  return { w: new Int32Array(ring.buffer, 0, L.kQueueHeaderSize / 4), slots: ring.slots };
}

const rowWord = (row: number, field: number): number => W(L.kQueueParties + row * L.kQueuePartySize + field);

/** Rows whose owner word holds `pid`. */
function rowsOf(w: Int32Array, pid: number): number[] {
  const rows: number[] = [];
  for (let i = 0; i < L.kQueuePartySlots; i++) if (Atomics.load(w, rowWord(i, L.kQueuePartyPid)) === pid) rows.push(i);
  return rows;
}

/** Writes `kind` at `pos` into row `row`, as put() and get() do (taking the row for this pid if `own`). */
function mark(w: Int32Array, row: number, kind: number, pos: number, own = false): void {
  if (own) Atomics.store(w, rowWord(row, L.kQueuePartyPid), process.pid);
  w[rowWord(row, L.kQueuePartyPos)] = pos;
  Atomics.store(w, rowWord(row, L.kQueuePartyKind), kind);
}

/** A reservation of one slot at the tail, counted, and never published: what a producer killed mid-put leaves. */
function reserveAndDie(w: Int32Array, row: number | undefined): never {
  const pos = Atomics.load(w, W(L.kQueueTail));
  if (row !== undefined) mark(w, row, L.kQueueKindPutting, pos);
  Atomics.add(w, W(L.kQueuePuts), 1);
  Atomics.store(w, W(L.kQueueTail), pos + 1);
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

describe('Queue recovery under repeated kills', () => {
  it('the feeder finds a row after more than 32 producer generations, and a feeder killed mid-put does not wedge consumers', () => {
    const q = new Queue<number | string>({ ringSize: 4096 });
    const { w, slots } = header(q);
    const n = slots * 3;
    // One producer at a time, each putting three rings' worth before anyone
    // takes a message, so that its feeder thread puts most of them.
    for (let generation = 0; generation < 40; generation++) {
      const put = shared(1);
      const child = spawnChild(() => {
        for (let i = 0; i < n; i++) q.putSync(i);
        Atomics.store(put, 0, 1);
      });
      while (Atomics.load(put, 0) === 0) busySleep(1);
      for (let i = 0; i < n; i++) expect(q.getSync({ timeout: 10000 })).toBe(i);
      child.joinSync();
      expect(child.exitCode).toBe(0);
    }
    const rows = shared(2);
    const last = spawnChild(() => {
      for (let i = 0; i < n; i++) q.putSync(i);
      const mine = rowsOf(w, process.pid);
      Atomics.store(rows, 0, mine.length);
      Atomics.store(rows, 1, 1);
      q.joinThread();
      // What a feeder killed between reserving and publishing leaves: its
      // row (the one taken after the JS thread's) says so, if it has one.
      reserveAndDie(w, mine.length > 1 ? mine[mine.length - 1] : undefined);
    });
    while (Atomics.load(rows, 1) === 0) busySleep(1);
    for (let i = 0; i < n; i++) expect(q.getSync({ timeout: 10000 })).toBe(i);
    last.joinSync();
    expect(last.exitCode).toBe(-9);
    expect(rows[0]).toBe(2);
    q.putSync('after');
    expect(q.getSync({ timeout: 5000 })).toBe('after');
    expect(q.qsize()).toBe(0);
  });

  it('rows left busy by processes killed while waiting are reused: 40 of them, then a producer killed mid-put', () => {
    const q = new Queue<string>({ ringSize: 4096, maxsize: 100 });
    const { w } = header(q);
    // Each child takes a row, leaves it marked busy at a position it gave
    // up on (as get() did after losing the race for it), then waits on the
    // empty queue and is killed there.
    for (let k = 0; k < 40; k++) {
      const waiting = shared(2);
      const child = spawnChild(() => {
        q.putSync('x');
        while (Atomics.load(waiting, 1) === 0) busySleep(1);
        const row = rowsOf(w, process.pid)[0];
        mark(w, row, L.kQueueKindGetting, Atomics.load(w, W(L.kQueueHead)));
        Atomics.store(waiting, 0, 1);
        q.getSync();
        q.getSync();
      });
      expect(q.getSync({ timeout: 5000 })).toBe('x');
      Atomics.store(waiting, 1, 1);
      while (Atomics.load(waiting, 0) === 0) busySleep(1);
      child.kill('SIGKILL');
      child.joinSync();
    }
    const rowFound = shared(1);
    const producer = spawnChild(() => {
      q.putSync('y');
      const mine = rowsOf(w, process.pid);
      Atomics.store(rowFound, 0, mine.length);
      reserveAndDie(w, mine[0]);
    });
    expect(q.getSync({ timeout: 5000 })).toBe('y');
    producer.joinSync();
    expect(rowFound[0]).toBe(1);
    q.putSync('after');
    expect(q.getSync({ timeout: 5000 })).toBe('after');
    expect(q.qsize()).toBe(0);
  });

  it('a consumer idle on an empty queue wakes seldom, and still mends a reservation a producer died with', async () => {
    const q = new Queue<string>({ ringSize: 4096 });
    const { w } = header(q);
    const out = shared(2);
    // Times this thread has been put on a CPU (schedstat's third field): its wake-ups.
    const runs = (): number => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[2]);
    const consumer = spawnChild(() => {
      const before = runs();
      try {
        q.getSync({ timeout: 5000 });
        Atomics.store(out, 1, 1);
      } catch {
        // QueueEmpty: nothing was ever published
      }
      Atomics.store(out, 0, runs() - before);
    });
    // Two seconds into the consumer's wait, a producer dies between its reservation and its publish.
    const producer = spawnChild(() => {
      busySleep(2000);
      mark(w, 0, L.kQueueKindPutting, Atomics.load(w, W(L.kQueueTail)), true);
      reserveAndDie(w, 0);
    });
    await producer.join();
    expect(await consumer.join()).toBe(0);
    expect(out[1]).toBe(0);
    // The consumer's checks skipped the dead reservation.
    expect(Atomics.load(w, W(L.kQueueHead))).toBe(Atomics.load(w, W(L.kQueueTail)));
    expect(q.qsize()).toBe(0);
    // Checks every 100 ms would be 50 wake-ups in the 5 s; coming further apart, a handful.
    expect(out[0]).toBeLessThan(20);
  });

  it('await get() behind a reservation a producer died with mends it at its first owner check and takes the message put after it', async () => {
    const q = new Queue<string>({ ringSize: 4096 });
    const { w } = header(q);
    const producer = spawnChild(() => {
      mark(w, 0, L.kQueueKindPutting, Atomics.load(w, W(L.kQueueTail)), true);
      reserveAndDie(w, 0);
    });
    await producer.join();
    q.putSync('after');
    const out = shared(1);
    const consumer = spawnChild(async () => {
      const got = await q.get({ timeout: 10_000 });
      Atomics.store(out, 0, got === 'after' ? 1 : 2);
    });
    expect(await consumer.join()).toBe(0);
    expect(out[0]).toBe(1);
    expect(Atomics.load(w, W(L.kQueueHead))).toBe(Atomics.load(w, W(L.kQueueTail)));
    expect(q.qsize()).toBe(0);
  });

  it.each([
    ['unbounded', 0],
    ['bounded', 1000],
  ])('two producers blocked together take a dead consumer’s slots back once, and never a message nobody took (%s)', (_, maxsize) => {
    const q = new Queue<number>({ ringSize: 4096, maxsize });
    const { w, slots } = header(q);
    for (let i = 0; i < slots; i++) q.putSync(i);
    // One consumer claims message 0 and dies holding it; another is killed
    // after marking message 1 and before claiming it.
    const claimed = spawnChild(() => {
      const pos = Atomics.load(w, W(L.kQueueHead));
      mark(w, 20, L.kQueueKindGetting, pos, true);
      Atomics.store(w, W(L.kQueueHead), pos + 1);
      process.kill(process.pid, 'SIGKILL');
    });
    claimed.joinSync();
    const meant = spawnChild(() => {
      mark(w, 21, L.kQueueKindGetting, Atomics.load(w, W(L.kQueueHead)), true);
      process.kill(process.pid, 'SIGKILL');
    });
    meant.joinSync();
    // Two producers wait on the full ring and time out together, each ready to recover.
    const producers = [1000, 2000].map((base) =>
      spawnChild(() => {
        for (let i = 0; i < 3; i++) q.putSync(base + i);
      }),
    );
    // The first recovery lets one message in; the consumer starts after it.
    for (let t = 0; t < 1000 && ((Atomics.load(w, W(L.kQueueTail)) - slots) | 0) <= 0; t++) busySleep(10);
    const got = shared(slots + 8);
    const consumer = spawnChild(() => {
      for (let i = 0; i < slots + 5; i++) Atomics.store(got, i, q.getSync({ timeout: 5000 }));
      Atomics.store(got, slots + 5, 1);
    });
    consumer.joinSync(15000);
    if (consumer.exitCode === null) consumer.kill('SIGKILL');
    consumer.joinSync();
    for (const p of producers) {
      p.joinSync(10000);
      if (p.exitCode === null) p.kill('SIGKILL');
      p.joinSync();
    }
    expect(producers.map((p) => p.exitCode)).toEqual([0, 0]);
    expect(got[slots + 5]).toBe(1);
    const taken = Array.from(got.subarray(0, slots + 5));
    expect(taken.slice(0, slots - 1)).toEqual(Array.from({ length: slots - 1 }, (_, i) => i + 1));
    expect(taken.slice(slots - 1).sort((a, b) => a - b)).toEqual([1000, 1001, 1002, 2000, 2001, 2002]);
    expect(Atomics.load(w, W(L.kQueueHead))).toBe(Atomics.load(w, W(L.kQueueTail)));
    expect(Atomics.load(w, W(L.kQueuePuts))).toBe(Atomics.load(w, W(L.kQueueGets)));
    expect(q.qsize()).toBe(0);
  });

  // Three producers and two consumers, one of them SIGKILLed and replaced
  // every 5-30 ms. Each producer generation numbers its messages; the
  // consumers mark each in a shared bitmap and check it is intact and in
  // that generation's order. A message reached the ring if it or a later
  // one of its generation arrived (a generation's messages go in order);
  // those all arrive exactly once, but for at most one per killed consumer.
  const KILL_SCRIPT = `
    import { Process, Queue, QueueEmpty } from NODEMP;
    import { native } from ${JSON.stringify(new URL('../dist/native.js', import.meta.url).pathname)};
    const maxsize = Number(process.argv[2]);
    const q = new Queue({ maxsize, ringSize: 64 * 1024 });
    const GENS = 4096, PER = 1 << 14;
    const mem = new Int32Array(native.mapShared(4 * (16 + GENS + (GENS * PER) / 32)));
    // mem[0] next generation, [1] garbled, [2] duplicates, [3] out of order, [4] taken; [16 + g] highest index of g taken + 1
    const SEEN = 16 + GENS;
    const body = (g, i) => {
      const len = 8 + ((i * 7919 + g * 104729) % 5 === 0 ? (i * 131) % 40000 : (i * 31) % 300);
      const b = Buffer.alloc(len, (g + i) & 0xff);
      b.writeUInt32LE(g, 0);
      b.writeUInt32LE(i, 4);
      return b;
    };
    const check = (b, last) => {
      const g = b.readUInt32LE(0), i = b.readUInt32LE(4);
      if (g >= GENS || i >= PER || !b.equals(body(g, i))) { Atomics.add(mem, 1, 1); return; }
      const bit = g * PER + i;
      if (Atomics.or(mem, SEEN + (bit >>> 5), 1 << (bit & 31)) & (1 << (bit & 31))) Atomics.add(mem, 2, 1);
      if (i <= (last.get(g) ?? -1)) Atomics.add(mem, 3, 1);
      last.set(g, i);
      for (;;) { const h = Atomics.load(mem, 16 + g); if (h > i || Atomics.compareExchange(mem, 16 + g, h, i + 1) === h) break; }
      Atomics.add(mem, 4, 1);
    };
    const producer = () => {
      const g = Atomics.add(mem, 0, 1);
      for (let i = 0; i < PER; i++) q.putSync(body(g, i));
      for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    };
    const consumer = () => { const last = new Map(); for (;;) check(q.getSync(), last); };
    const start = (f) => { const p = new Process({ target: f, daemon: true }); p.start(); return p; };
    const roles = [producer, producer, producer, consumer, consumer];
    const procs = roles.map(start);
    let kills = 0, consumerKills = 0;
    const until = Date.now() + Number(process.argv[3]);
    while (Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 25));
      const k = Math.floor(Math.random() * procs.length);
      procs[k].kill('SIGKILL');
      await procs[k].join();
      procs[k] = start(roles[k]);
      kills++;
      if (roles[k] === consumer) consumerKills++;
    }
    for (let k = 0; k < procs.length; k++) { procs[k].kill('SIGKILL'); if (roles[k] === consumer) consumerKills++; }
    for (const p of procs) await p.join();
    const last = new Map();
    try { for (;;) check(q.getSync({ timeout: 1000 }), last); } catch (e) { if (!(e instanceof QueueEmpty)) throw e; }
    let lost = 0;
    for (let g = 0; g < Atomics.load(mem, 0); g++) {
      for (let i = 0; i < mem[16 + g]; i++) { const bit = g * PER + i; if (!(mem[SEEN + (bit >>> 5)] & (1 << (bit & 31)))) lost++; }
    }
    q.putSync(Buffer.from('after'), { timeout: 5000 });
    const after = Buffer.from(q.getSync({ timeout: 5000 })).toString();
    console.log(JSON.stringify({ kills, consumerKills, taken: mem[4], garbled: mem[1], duplicates: mem[2], outOfOrder: mem[3], lost, after, qsize: q.qsize() }));
  `;

  it.each([
    ['bounded', 16],
    ['unbounded', 0],
  ])('producers and consumers SIGKILLed and replaced at random: every message that reached the ring arrives once, intact, in order, and the queue works on (%s)', async (_, maxsize) => {
    const before = new Set(shmEntries());
    const r = runScript(KILL_SCRIPT, { args: [String(maxsize), '5000'], timeout: 30000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, number | string>;
    expect(out.kills).toBeGreaterThan(50);
    expect(out.taken).toBeGreaterThan(1000);
    expect({ garbled: out.garbled, duplicates: out.duplicates, outOfOrder: out.outOfOrder }).toEqual({ garbled: 0, duplicates: 0, outOfOrder: 0 });
    expect(out.lost).toBeLessThanOrEqual(out.consumerKills as number);
    expect(out.after).toBe('after');
    expect(out.qsize).toBe(0);
    // Segments of messages lost with their consumer or producer: gone once
    // the script's processes are (others' tests may come and go meanwhile).
    const left = shmEntries().filter((e) => !before.has(e));
    expect(await waitUntil(() => left.every((e) => !existsSync(`/dev/shm/${e}`)), 10000)).toBe(true);
  }, 40000);

  it('a bounded queue whose counts a killed producer left apart is not full for good', () => {
    const q = new Queue<string>({ ringSize: 4096, maxsize: 2 });
    const { w } = header(q);
    // Two producers killed after counting themselves and before reserving.
    for (let k = 0; k < 2; k++) {
      const child = spawnChild(() => {
        q.putSync('x');
        const row = rowsOf(w, process.pid)[0];
        mark(w, row, L.kQueueKindPutting, Atomics.load(w, W(L.kQueueTail)));
        Atomics.add(w, W(L.kQueuePuts), 1);
        process.kill(process.pid, 'SIGKILL');
      });
      expect(q.getSync({ timeout: 5000 })).toBe('x');
      child.joinSync();
    }
    expect(() => q.putNowait('y')).toThrow(QueueFull);
    // A put that waits finds the queue empty and idle, and the counts put right.
    q.putSync('y', { timeout: 5000 });
    expect(q.qsize()).toBe(1);
    expect(q.getSync()).toBe('y');
    expect(q.qsize()).toBe(0);
  });
});

describe('a process that finds no row', () => {
  it('is never taken for dead: a reservation it has not published yet is not skipped, however long a consumer waits', async () => {
    const q = new Queue<string>({ ringSize: 4096 });
    const { w } = header(q);
    // Every row owned by a live process (this one, under an identity without start time).
    for (let i = 0; i < L.kQueuePartySlots; i++) Atomics.store(w, rowWord(i, L.kQueuePartyPid), process.pid);
    q.putSync('first');
    expect(Atomics.load(w, W(L.kQueueUnrecorded))).toBe(1);
    expect(q.getSync()).toBe('first');
    // What a put of this live, unrecorded process leaves between its reservation and its publish.
    const pos = Atomics.load(w, W(L.kQueueTail));
    Atomics.add(w, W(L.kQueuePuts), 1);
    Atomics.store(w, W(L.kQueueTail), pos + 1);
    // A consumer waiting well past the 100 ms after which it checks on the producer.
    const child = spawnChild(() => {
      try {
        q.getSync({ timeout: 400 });
      } catch {
        // QueueEmpty: the message is still being put
      }
    });
    expect(await child.join()).toBe(0);
    expect(Atomics.load(w, W(L.kQueueHead))).toBe(pos);
  });
});

describe('large messages of a producer killed before they reach the ring', () => {
  // The segments a producer made, told apart from any other test's by their content.
  const MARK = 0xa7;
  function markedSegments(): string[] {
    return shmEntries().filter((name) => {
      try {
        const head = readFileSync(`/dev/shm/${name}`).subarray(0, 16);
        return head.length === 16 && head.every((b) => b === MARK);
      } catch {
        return false; // removed while we looked
      }
    });
  }

  it('unbounded: the messages waiting in its feeder are bytes in its memory, not segments; at most one segment outlives it', async () => {
    // 64 slots: a segment's name takes one, so 64 of the 100 fit and 36 wait in the child's feeder.
    const q = new Queue({ ringSize: 4096 });
    const { slots } = header(q);
    const ready = shared(1);
    const child = new Process({
      daemon: true,
      target: () => {
        for (let i = 0; i < 100; i++) q.putSync(Buffer.alloc(2000, MARK));
        Atomics.store(ready, 0, 1);
        setInterval(() => {}, 1000);
      },
    });
    child.start();
    expect(await waitUntil(() => Atomics.load(ready, 0) === 1, 10000)).toBe(true);
    expect(markedSegments().length).toBeLessThanOrEqual(slots + 1);
    child.kill();
    await child.join();
    let taken = 0;
    while (!q.empty()) {
      expect((q.getSync() as Buffer).length).toBe(2000);
      taken++;
    }
    expect(taken).toBe(slots);
    // Those taken were removed; left is at most the one the feeder was writing.
    expect(markedSegments().length).toBeLessThanOrEqual(1);
  });

  it('bounded: a producer waiting for room has made no segment yet, so its death leaves none', async () => {
    // A segment the test before may have left (the one its feeder was writing) is not this one's.
    const before = markedSegments();
    const q = new Queue({ maxsize: 1, ringSize: 4096 });
    q.putSync('occupies the only place');
    const waiting = shared(1);
    const child = new Process({
      daemon: true,
      target: () => {
        Atomics.store(waiting, 0, 1);
        q.putSync(Buffer.alloc(2000, MARK));
      },
    });
    child.start();
    expect(await waitUntil(() => Atomics.load(waiting, 0) === 1, 10000)).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(markedSegments()).toEqual(before);
    child.kill();
    await child.join();
    expect(markedSegments()).toEqual(before);
    expect(q.getSync()).toBe('occupies the only place');
    q.putSync(Buffer.alloc(2000, MARK));
    expect((q.getSync() as Buffer).length).toBe(2000);
    expect(markedSegments()).toEqual(before);
  });
});
