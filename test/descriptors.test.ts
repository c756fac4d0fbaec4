// What a child started by spawn or forkserver is given: nodemp's shared
// objects cross by descriptor (encodeForChild / decodeInChild), functions by
// reference. A forked child cannot prove it, since it inherits the memory;
// so each object is decoded here from duplicates of its descriptors (a second
// mapping of the same memory, in this process), and in a plain `node` child
// that is given the descriptors and nothing else.
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, readFileSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  Array as SharedArray,
  Barrier,
  BoundedSemaphore,
  ClosedError,
  Condition,
  DirectionError,
  Event,
  JoinableQueue,
  Lock,
  OSError,
  Pipe,
  Process,
  Queue,
  RawArray,
  RawValue,
  RLock,
  Semaphore,
  SerializationError,
  ShareableList,
  SharedMemory,
  SimpleQueue,
  SyncError,
  Value,
} from '../dist/index.js';
import { native } from '../dist/native.js';
import { decodeInChild, encodeForChild } from '../dist/start/descriptors.js';
import { PresetMessage, recvMessage, sendMessage } from '../dist/start/channel.js';
import { openFds, shmEntries } from './helpers.js';
import { recordWarnings, sleepMs } from './sync-helpers.js';
import { countPass } from './fixtures/barrier-action.mjs';

const fixtures = new URL('./fixtures/', import.meta.url);

/** encodeForChild, then decodeInChild here, from duplicates of the descriptors (decodeInChild owns what it is given). */
async function roundTrip<T>(value: T): Promise<T> {
  const { bytes, fds } = encodeForChild(value);
  return (await decodeInChild(bytes, fds.map((fd) => native.dupFd(fd)))) as T;
}

function memfdMappings(): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.includes('/memfd:nodemp')).length;
}

const warnings = recordWarnings();

describe('encodeForChild and decodeInChild, in one process', () => {
  it('a Lock decoded is a second mapping of the same memory: held through one, it is held through the other', async () => {
    const lock = new Lock();
    const copy = await roundTrip(lock);
    expect(copy).toBeInstanceOf(Lock);
    expect(copy).not.toBe(lock);
    lock.acquireSync();
    expect(copy.locked()).toBe(true);
    expect(copy.acquireSync({ block: false })).toBe(false);
    copy.release();
    expect(lock.locked()).toBe(false);
    expect(await copy.acquire({ timeout: 100 })).toBe(true);
    expect(lock.acquireSync({ timeout: 20 })).toBe(false);
    lock.release();
  });

  it('one descriptor per mapping: Locks of one arena chunk share it, and the child maps it once', async () => {
    native.trackerStart();
    const locks = [new Lock(), new Lock(), new Lock()];
    const { bytes, fds } = encodeForChild({ a: locks, again: locks[1] });
    expect(fds).toHaveLength(2);
    expect(fds[1]).toBe(native.trackerFd());
    const before = memfdMappings();
    const copy = (await decodeInChild(bytes, fds.map((fd) => native.dupFd(fd)))) as { a: Lock[]; again: Lock };
    expect(memfdMappings()).toBe(before + 1);
    expect(copy.again).toBe(copy.a[1]);
    locks[2].acquireSync();
    expect(copy.a.map((l) => l.locked())).toEqual([false, false, true]);
    locks[2].release();
  });

  it('the bytes are a copy, unchanged by later encodes', () => {
    const first = encodeForChild({ lock: new Lock(), n: 1 });
    const kept = Buffer.from(first.bytes);
    encodeForChild({ q: new Queue(), s: 'x'.repeat(1000) });
    expect(Buffer.from(first.bytes).equals(kept)).toBe(true);
  });

  it('an RLock and a Condition over it: one object in the child for one in the parent', async () => {
    const rlock = new RLock();
    const cond = new Condition(rlock);
    const value = new Value('i', 0, { lock: rlock });
    const copy = await roundTrip({ cond, rlock, value, alone: new Condition() });
    expect(copy.cond.lock).toBe(copy.rlock);
    expect(copy.value.getLock()).toBe(copy.rlock);
    expect(copy.alone.lock).toBeInstanceOf(RLock);
    expect(copy.alone.lock).not.toBe(copy.rlock);
    copy.cond.acquireSync();
    expect(rlock.locked()).toBe(true);
    expect(copy.rlock.depth).toBe(1);
    // Nobody waits: a notify grants nothing, and a wait times out.
    copy.cond.notify();
    expect(copy.cond.waitSync(10)).toBe(false);
    copy.cond.release();
    expect(rlock.locked()).toBe(false);
  });

  it('Value, Array, RawValue, RawArray: writes on either side are seen on the other; typecode, length and lock kept', async () => {
    const lock = new Lock();
    const v = new Value('d', 1.5);
    const noLock = new Value('i', 3, { lock: false });
    const withLock = new Value('q', 5n, { lock });
    const a = new SharedArray('i', [1, 2, 3]);
    const big = new RawArray('B', 100_000);
    const raw = new RawValue('Q', 7n);
    const copy = await roundTrip({ v, noLock, withLock, lock, a, big, raw });
    expect(copy.v).toBeInstanceOf(Value);
    expect(copy.v.value).toBe(1.5);
    copy.v.value = 2.25;
    expect(v.value).toBe(2.25);
    expect(copy.v.getLock()).toBeInstanceOf(RLock);
    expect(copy.noLock.getLock()).toBeNull();
    expect(copy.withLock.getLock()).toBe(copy.lock);
    expect(copy.withLock.value).toBe(5n);
    expect(() => (copy.noLock.value = 1.5)).toThrow(RangeError);
    expect(copy.a).toBeInstanceOf(SharedArray);
    expect(copy.a.typecode).toBe('i');
    expect(copy.a.toArray()).toEqual([1, 2, 3]);
    a.set(2, 30);
    expect(copy.a.get(-1)).toBe(30);
    expect(copy.big).toBeInstanceOf(RawArray);
    expect(copy.big.length).toBe(100_000);
    copy.big.typed[99_999] = 200;
    expect(big.get(-1)).toBe(200);
    expect(copy.raw).toBeInstanceOf(RawValue);
    expect(copy.raw).not.toBeInstanceOf(Value);
    raw.value = 8n;
    expect(copy.raw.value).toBe(8n);
  });

  it('Semaphore, BoundedSemaphore and Event share their state; the bound is kept', async () => {
    const sem = new Semaphore(2);
    const bounded = new BoundedSemaphore(1);
    const event = new Event();
    const copy = await roundTrip({ sem, bounded, event });
    expect(copy.sem.acquireSync({ block: false })).toBe(true);
    expect(sem.getValue()).toBe(1);
    expect(copy.bounded).toBeInstanceOf(BoundedSemaphore);
    expect(() => copy.bounded.release()).toThrow(SyncError);
    bounded.acquireSync();
    expect(copy.bounded.getValue()).toBe(0);
    copy.bounded.release();
    expect(bounded.getValue()).toBe(1);
    copy.sem.release();
    expect(sem.getValue()).toBe(2);
    event.set();
    expect(copy.event.isSet()).toBe(true);
    copy.event.clear();
    expect(event.isSet()).toBe(false);
  });

  it('a Barrier keeps parties and timeout, its action crosses by reference and runs in the copy', async () => {
    const barrier = new Barrier(1, { action: countPass, timeout: 5000 });
    const copy = await roundTrip(barrier);
    expect(copy.parties).toBe(1);
    const passes = (globalThis as { nodempBarrierPasses?: number }).nodempBarrierPasses ?? 0;
    expect(copy.waitSync()).toBe(0);
    expect((globalThis as { nodempBarrierPasses?: number }).nodempBarrierPasses).toBe(passes + 1);
    const two = new Barrier(2);
    const twoCopy = await roundTrip(two);
    expect(twoCopy.parties).toBe(2);
    two.abort();
    expect(twoCopy.broken).toBe(true);
    twoCopy.reset();
    expect(two.broken).toBe(false);
  });

  it('Queue, JoinableQueue, SimpleQueue: what one side puts the other gets; maxsize and serializer kept', async () => {
    const q = new Queue<unknown>({ maxsize: 2, serializer: 'v8' });
    const jq = new JoinableQueue<number>();
    const sq = new SimpleQueue<string>();
    const copy = await roundTrip({ q, jq, sq });
    expect(copy.q.maxsize).toBe(2);
    q.putSync(new Map([[1, 'one']]));
    copy.q.putSync('second');
    expect(q.full()).toBe(true);
    expect(copy.q.full()).toBe(true);
    expect(() => copy.q.putNowait('third')).toThrow(/full/);
    expect(copy.q.getSync()).toEqual(new Map([[1, 'one']]));
    expect(q.getSync()).toBe('second');

    expect(copy.jq).toBeInstanceOf(JoinableQueue);
    jq.putSync(1);
    expect(copy.jq.getSync()).toBe(1);
    expect(jq.joinSync(0)).toBe(false);
    copy.jq.taskDone();
    expect(jq.joinSync(0)).toBe(true);

    expect(copy.sq).toBeInstanceOf(SimpleQueue);
    copy.sq.put('from the copy');
    expect(await sq.get()).toBe('from the copy');
    // Closed in one object is not closed in the other.
    copy.sq.close();
    sq.put('still open');
    expect(sq.getSync()).toBe('still open');
  });

  it('a Queue message larger than a quarter of the ring crosses through a segment, removed once taken', async () => {
    const before = shmEntries();
    const q = new Queue<string>({ ringSize: 4096 });
    const copy = await roundTrip(q);
    copy.putSync('y'.repeat(50_000));
    expect((await q.get({ timeout: 5000 })).length).toBe(50_000);
    expect(shmEntries()).toEqual(before);
  });

  it('a Connection crosses as its descriptor, with its direction and kind', async () => {
    const [a, b] = Pipe();
    const [readEnd, writeEnd] = Pipe({ duplex: false });
    const copy = await roundTrip({ b, readEnd, writeEnd });
    expect(copy.b.fileno()).not.toBe(b.fileno());
    copy.b.send({ hello: 'from the copy' });
    expect(await a.recv()).toEqual({ hello: 'from the copy' });
    a.sendBytes(Buffer.from('raw'));
    expect(copy.b.recvBytesSync().toString()).toBe('raw');
    expect([copy.writeEnd.readable, copy.writeEnd.writable]).toEqual([false, true]);
    expect([copy.readEnd.readable, copy.readEnd.writable]).toEqual([true, false]);
    expect(() => copy.readEnd.send(1)).toThrow(DirectionError);
    copy.writeEnd.send('one way');
    expect(readEnd.recvSync()).toBe('one way');
    // Closing the copy closes only its own descriptor.
    copy.b.close();
    b.send('original end');
    expect(a.recvSync()).toBe('original end');
    for (const c of [a, b, readEnd, writeEnd, copy.readEnd, copy.writeEnd]) c.close();
  });

  it("a Connection given while this process holds part of a message: the child's end cannot receive, as a forked child's", async () => {
    const [a, b] = Pipe();
    // A header announcing 100 bytes, 10 of them there: the receive takes them and waits for the rest.
    writeSync(a.fileno(), Buffer.concat([Buffer.from([0, 100, 0, 0, 0]), Buffer.alloc(10, 1)]));
    const pending = b.recvBytes();
    await sleepMs(20);
    const copy = await roundTrip(b);
    expect(() => copy.recvSync()).toThrow(/forked while its parent was in the middle/);
    writeSync(a.fileno(), Buffer.alloc(90, 2));
    expect((await pending).length).toBe(100);
    for (const c of [a, b, copy]) c.close();
  });

  it('SharedMemory and ShareableList still cross by name', async () => {
    const shm = new SharedMemory({ create: true, size: 64 });
    const list = new ShareableList([1, 'two']);
    const copy = await roundTrip({ shm, list });
    expect(copy.shm.name).toBe(shm.name);
    shm.buf[0] = 42;
    expect(copy.shm.buf[0]).toBe(42);
    expect(copy.list.get(1)).toBe('two');
    copy.shm.close();
    copy.list.shm.close();
    shm.unlink();
    list.shm.unlink();
  });

  it('plain data crosses as the codec carries it, cycles and shared references included', async () => {
    const shared = { n: 1 };
    const value: Record<string, unknown> = {
      map: new Map<unknown, unknown>([['k', [1, 2]]]),
      set: new Set([1, 'two']),
      date: new Date(5),
      big: 2n ** 70n,
      bytes: new Float64Array([1.5, -2]),
      error: new RangeError('out'),
      twice: [shared, shared],
      nothing: undefined,
    };
    value.self = value;
    const copy = await roundTrip(value);
    expect(copy.map).toEqual(value.map);
    expect(copy.set).toEqual(value.set);
    expect(copy.date).toEqual(value.date);
    expect(copy.big).toBe(2n ** 70n);
    expect(copy.bytes).toEqual(value.bytes);
    expect(copy.error).toBeInstanceOf(RangeError);
    const [x, y] = copy.twice as object[];
    expect(x).toBe(y);
    expect(copy.self).toBe(copy);
    expect('nothing' in copy).toBe(true);
  });

  it('what a child decoded can be handed on again, to a grandchild', async () => {
    const q = new Queue<string>();
    const lock = new Lock();
    const child = await roundTrip({ q, lock });
    const grandchild = await roundTrip(child);
    grandchild.q.putSync('from the grandchild');
    expect(q.getSync()).toBe('from the grandchild');
    lock.acquireSync();
    expect(grandchild.lock.locked()).toBe(true);
    lock.release();
  });
});

describe('what cannot be given to a child', () => {
  it('a Process, a Process subclass or a Pool handle: SerializationError naming the class, nothing leaked', () => {
    class Worker extends Process {}
    const before = openFds();
    for (const [name, obj] of [
      ['Process', new Process({ target: () => {} })],
      ['Worker', new Worker({ target: () => {} })],
    ] as const) {
      let error: unknown;
      try {
        encodeForChild({ lock: new Lock(), args: [1, obj] });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(SerializationError);
      expect((error as SerializationError).code).toBe('ERR_NOT_SERIALIZABLE');
      expect((error as Error).message).toContain(`a ${name} cannot be given to a child process`);
    }
    expect(openFds()).toEqual(before);
  });

  it("a user's subclass of a shared class, a symbol, a WeakMap, an unexported function", () => {
    class MyLock extends Lock {}
    expect(() => encodeForChild([new MyLock()])).toThrow(/a MyLock \(a subclass of Lock\) cannot be given to a child started by spawn or forkserver/);
    expect(() => encodeForChild({ s: Symbol('s') })).toThrow(SerializationError);
    expect(() => encodeForChild({ w: new WeakMap() })).toThrow(SerializationError);
    expect(() => encodeForChild({ f: () => 1 })).toThrow(SerializationError);
    expect(() => encodeForChild(new Barrier(2, { action: () => {} }))).toThrow(/Barrier action/);
  });

  it('a closed Connection: ClosedError', () => {
    const [a, b] = Pipe();
    a.close();
    expect(() => encodeForChild({ a })).toThrow(ClosedError);
    b.close();
  });

  it('in a Queue or a Pipe, shared objects are refused exactly as before', async () => {
    const q = new Queue();
    const [a, b] = Pipe();
    const message =
      'nodemp: a Lock cannot be put in a Queue or sent through a Pipe: it lives in shared memory that a message cannot carry. ' +
      'Create it before start() and pass it to the process in args (or let the target capture it), or to a Pool in initargs';
    await expect(q.put({ lock: new Lock() })).rejects.toThrow(message);
    expect(() => a.send([new Lock()])).toThrow(message);
    expect(() => q.putSync({ f: countPass })).toThrow(/a function \(countPass\) cannot be sent to another process/);
    expect(q.qsize()).toBe(0);
    a.close();
    b.close();
  });
});

describe('decodeInChild owns the descriptors it is given', () => {
  it('closes them all when it fails: a descriptor count that does not match', async () => {
    const { bytes, fds } = encodeForChild({ lock: new Lock(), conn: Pipe()[1] });
    const copies = fds.map((fd) => native.dupFd(fd));
    await expect(decodeInChild(bytes, copies.slice(1))).rejects.toThrow(/descriptors were given for/);
    for (const fd of copies.slice(1)) expect(() => fstatSync(fd)).toThrow(/EBADF/);
    closeSync(copies[0]);
  });

  it('mapFd checks the size against the descriptor and refuses one a mapping already owns', () => {
    const buffer = native.mapShared(4096);
    const fd = native.sharedFd(buffer);
    expect(() => native.mapFd(fd, 4096)).toThrow(/already belongs to a mapping/);
    const copy = native.dupFd(fd);
    let error: unknown;
    try {
      native.mapFd(copy, 8192);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OSError);
    expect((error as OSError).code).toBe('EINVAL');
    expect((error as Error).message).toMatch(/holds 4096 bytes, fewer than the 8192/);
    // A failed mapFd leaves the descriptor to the caller.
    const mapped = native.mapFd(copy, 4096);
    new Int32Array(buffer)[1] = 7;
    expect(new Int32Array(mapped)[1]).toBe(7);
    expect(native.sharedFd(mapped)).toBe(copy);
    expect(() => native.sharedFd(new ArrayBuffer(8))).toThrow(/not made by mapShared\(\) or mapFd\(\)/);
    expect(() => native.mapFd(1 << 20, 64)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('a child that inherits no memory (a plain node given the descriptors)', () => {
  it('uses the Lock, Queue, Value, Array, Connection, Barrier, Event, Semaphore and JoinableQueue it was given; the parent keeps its descriptors', async () => {
    const shmBefore = shmEntries();
    const lock = new Lock();
    const back = new Queue<Record<string, unknown>>({ ringSize: 4096 });
    const value = new Value('i', 1);
    const array = new SharedArray('d', 4);
    const [parentEnd, childEnd] = Pipe();
    const barrier = new Barrier(2, { action: countPass });
    const event = new Event();
    const sem = new Semaphore(0);
    const tasks = new JoinableQueue<string>();
    const deathLock = new Lock();
    lock.acquireSync();
    const { bytes, fds } = encodeForChild({ lock, back, value, array, conn: childEnd, barrier, event, sem, tasks, deathLock, large: 20_000 });
    const child = spawn(process.execPath, [fileURLToPath(new URL('descriptor-child.mjs', fixtures))], {
      stdio: ['ignore', 'inherit', 'inherit', ...fds],
      env: { ...process.env, NODEMP_PAYLOAD: Buffer.from(bytes).toString('base64'), NODEMP_FDS: String(fds.length) },
    });
    const exited = once(child, 'exit');
    try {
      expect(await back.get({ timeout: 15_000 })).toEqual({ step: 'ready', pid: child.pid });
      // The child waits for the lock this process holds.
      await sleepMs(200);
      expect(back.empty()).toBe(true);
      lock.release();
      expect(await back.get({ timeout: 10_000 })).toEqual({ step: 'acquired' });
      expect(value.value).toBe(11);
      expect(array.get(0)).toBe(99);
      expect(await parentEnd.recv()).toEqual({ from: child.pid, readable: true, writable: true });
      expect(((await back.get({ timeout: 10_000 })).large as string).length).toBe(20_000);
      expect(await sem.acquire({ timeout: 10_000 })).toBe(true);
      expect(await event.wait(10_000)).toBe(true);
      const index = await barrier.wait(10_000);
      const passed = await back.get({ timeout: 10_000 });
      expect(passed.step).toBe('passed');
      expect([index, passed.index].sort()).toEqual([0, 1]);
      tasks.putSync('task 1');
      expect(await tasks.join(10_000)).toBe(true);
      expect(await back.get({ timeout: 10_000 })).toEqual({ step: 'done', task: 'task 1' });
    } finally {
      const [code] = await exited;
      expect(code).toBe(0);
    }
    // It died holding deathLock: this process takes it over.
    expect(deathLock.acquireSync({ timeout: 5000 })).toBe(true);
    expect(deathLock.ownerDied).toBe(true);
    // Warnings are emitted on the next tick.
    await sleepMs(0);
    expect(warnings().map((w) => w.name)).toContain('OwnerDiedWarning');
    deathLock.release();
    // The child claimed a party row of the queue by its own pid and start time.
    const ring = (back as unknown as Record<symbol, () => { buffer: ArrayBuffer }>)[Symbol.for('nodemp.queue.ring')]();
    const L = native.layout;
    const rows = Array.from({ length: L.kQueuePartySlots }, (_, i) => new Int32Array(ring.buffer, L.kQueueParties + i * L.kQueuePartySize, 2));
    expect(rows.some((row) => row[0] === child.pid && row[1] !== 0)).toBe(true);
    // This process's descriptors are still open, and its objects still work.
    for (const fd of fds) expect(() => fstatSync(fd)).not.toThrow();
    expect(lock.acquireSync({ block: false })).toBe(true);
    lock.release();
    back.putSync({ after: true });
    expect(back.getSync()).toEqual({ after: true });
    parentEnd.send('still open');
    expect(childEnd.recvSync()).toBe('still open');
    parentEnd.close();
    childEnd.close();
    // The large message's segment was removed when taken; the child left nothing behind.
    expect(shmEntries()).toEqual(shmBefore);
  });
});

describe('the start channel', () => {
  it('sends a preset message with its number filled in, read as a packed one is', () => {
    const [a, b] = native.socketPair();
    try {
      const started = new PresetMessage((pid: number) => ({ op: 'started', pid }));
      for (const n of [0, 1, 255, 65_536, 4_194_304, 0x7fffffff]) {
        started.send(a, n);
        expect(recvMessage(b, 1000)?.value).toEqual({ op: 'started', pid: n });
      }
      sendMessage(a, { op: 'exit', pid: 7, code: 0 });
      started.send(a, 8);
      expect(recvMessage(b, 1000)?.value).toEqual({ op: 'exit', pid: 7, code: 0 });
      expect(recvMessage(b, 1000)?.value).toEqual({ op: 'started', pid: 8 });
    } finally {
      native.closeFd(a);
      native.closeFd(b);
    }
  });

  it('refuses a preset message that does not hold its number once, and a number it cannot hold', () => {
    expect(() => new PresetMessage(() => ({ op: 'started' }))).toThrow(/must hold its number once/);
    expect(() => new PresetMessage((n: number) => ({ a: n, b: n }))).toThrow(/must hold its number once/);
    const started = new PresetMessage((pid: number) => ({ op: 'started', pid }));
    for (const bad of [-1, 2 ** 31, 1.5, Number.NaN]) expect(() => started.send(-1, bad)).toThrow(RangeError);
  });
});
