// Safety of a manager's wire (issue #14, item 4): whatever a peer sends, a
// server started by SyncManager.start() answers it or drops that peer, and
// keeps serving every other client. Peers that never authenticate, peers
// that authenticate and then speak garbage, a bounded fuzz of both, and the
// client's own refusal of requests over the server's limit.
//
// Every server here is a real process; its answers are read from the wire.
// Waits are bounded so that a server that stopped answering fails the test
// rather than hanging it; nothing measures how long anything took.
import { leadingId } from '../dist/manager/wire.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { serialize } from 'node:v8';
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  Client,
  ClientSync,
  EOFError,
  Listener,
  ManagerError,
  OSError,
  SharedMemory,
  SyncManager,
  type Address,
  type Connection,
} from '../dist/index.js';
import { codecFor, decodeUntrusted } from '../dist/codec.js';
import { native } from '../dist/native.js';
import type { DictProxy } from '../dist/manager/proxies.js';
import { childrenOf, connectUnderWay, openFds, running, shmEntries, waitUntil } from './helpers.js';
import { busySleep, spawnChild } from './sync-helpers.js';

const KEY = Buffer.from('the manager-wire key');

// protocol.ts
const CALL = 1;
const CREATE = 2;
const INFO = 3;
const SHUTDOWN = 4;
const INCREF = 5;
const DECREF = 6;
const SEND = 7;
const ADOPT = 8;
const HELLO = 9;
const OK = 0;
const FAILED = 1;
const PROXY = 2;
const GREETING = 3;

// nodemp's msgpack extension (codec.ts) and its kinds.
const EXT_NODEMP = 0x4e;
const BY_NAME = 1;
const ERROR = 2;
const TO_CHILD = 3;

const packr = new Packr({ useRecords: false, moreTypes: true, mapsAsObjects: true });
const pack = (value: unknown): Buffer => packr.pack(value);

/** A frame as Connection and the server read it: [tag u8][length u32 LE][body]. */
function frame(tag: number, body: Uint8Array): Buffer {
  const header = Buffer.alloc(5);
  header[0] = tag;
  header.writeUInt32LE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** Only a header, announcing `length` bytes; the long form (0xFFFFFFFF + u64 LE) when asked. */
function headerOnly(length: number | bigint, long = false): Buffer {
  const header = Buffer.alloc(long ? 13 : 5);
  header[0] = 1;
  if (long) {
    header.writeUInt32LE(0xffffffff, 1);
    header.writeBigUInt64LE(BigInt(length), 5);
  } else header.writeUInt32LE(Number(length), 1);
  return header;
}

/** A msgpack array of already-encoded elements, so that any element may be raw bytes. */
function array(...elements: Buffer[]): Buffer {
  if (elements.length > 15) throw new Error('array(): fixarray only');
  return Buffer.concat([Buffer.from([0x90 + elements.length]), ...elements]);
}

/** nodemp's extension around `value` (fixext 1 with a filler byte, then the value): what codec.ts's read() gets. */
function nodempExt(value: unknown): Buffer {
  return Buffer.concat([Buffer.from([0xd4, EXT_NODEMP, 0x00]), pack(value)]);
}

/** A CALL of `method` on object `objectId`, its args already encoded. */
function callWith(id: number, objectId: number, method: string, args: Buffer): Buffer {
  return frame(1, array(pack(id), pack(CALL), pack(objectId), pack(method), args));
}

type Reply = [id: number, kind: number, value: unknown];
const SILENT = Symbol('silent');
const EOF = Symbol('eof');

/** An authenticated connection to a server that writes whatever bytes it is given and reads the frames that come back. */
class Session {
  readonly conn: Connection;
  readonly greeting: Reply;
  private constructor(conn: Connection) {
    this.conn = conn;
    this.greeting = this.next() as Reply;
  }

  /** Connects and authenticates on the event loop (a server that hangs fails the test rather than blocking it). */
  static async open(address: Address): Promise<Session> {
    return new Session(await within(Client(address, { authkey: KEY }), 10_000, 'connecting to the server'));
  }

  /** Writes all of `bytes`; false if the server closed the connection first (it refuses a frame from its header). */
  write(bytes: Buffer): boolean {
    try {
      native.netWrite(this.conn.fileno(), bytes);
      return true;
    } catch (error) {
      if (error instanceof OSError && (error.code === 'EPIPE' || error.code === 'ECONNRESET')) return false;
      throw error;
    }
  }

  /** The next frame from the server; SILENT if none came in `ms` (a bound for a broken server, not a measurement), EOF at the end. */
  next(ms = 10_000): Reply | typeof SILENT | typeof EOF {
    if (!this.conn.poll(ms)) return SILENT;
    try {
      return this.conn.recvSync<Reply>();
    } catch (error) {
      // A server that closed with bytes of ours unread resets the connection, after its reply.
      if (error instanceof EOFError || (error instanceof OSError && error.code === 'ECONNRESET')) return EOF;
      throw error;
    }
  }

  /** Writes `bytes` and returns the one reply they get. */
  ask(bytes: Buffer): Reply | typeof SILENT | typeof EOF {
    this.write(bytes);
    return this.next();
  }

  close(): void {
    this.conn.close();
  }
}

/** What a failed request is answered: [id, FAILED, error], the error an instance of `Class` with `code`, its message matching. */
function expectFailed(
  reply: unknown,
  id: number,
  { code, message, Class = ManagerError }: { code?: string; message?: RegExp; Class?: new (...args: never[]) => Error } = {},
): Error {
  expect(Array.isArray(reply), `a reply, got ${String(reply)}`).toBe(true);
  const [rid, kind, error] = reply as Reply;
  expect([rid, kind]).toEqual([id, FAILED]);
  expect(error).toBeInstanceOf(Class);
  if (code !== undefined) expect((error as { code?: string }).code).toBe(code);
  if (message !== undefined) expect((error as Error).message).toMatch(message);
  return error as Error;
}

function badRequest(reply: unknown, id: number, message?: RegExp): Error {
  return expectFailed(reply, id, { code: 'ERR_BAD_REQUEST', message });
}

/** The RLIMIT_NOFILE that leaves `pid` exactly `free` more descriptor numbers. */
function limitLeaving(pid: number, free: number): number {
  const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let limit = 0;
  for (let left = free; left > 0 || used.has(limit); limit++) if (!used.has(limit)) left--;
  return limit;
}

/** The server process's descriptors, memfds aside (the shared-memory machinery keeps some). */
function serverFds(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (!target.includes('/memfd:')) out.push(`${fd} -> ${target}`);
    } catch {
      // closed while listed
    }
  }
  return out;
}

/** A field of /proc/<pid>/status in KiB (VmRSS, VmPeak...). */
function statusKiB(pid: number, field: string): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${field}:`));
  return Number(/(\d+)/.exec(line ?? '')?.[1]);
}

/** A raw TCP peer: records what the server sends and whether the server closed it. */
interface RawPeer {
  socket: Socket;
  received: Buffer[];
  ended: Promise<void>;
  endedByServer: boolean;
}

function rawPeer(address: Address): RawPeer {
  const [host, port] = address as [string, number];
  const socket = createConnection({ host, port });
  const peer: RawPeer = { socket, received: [], ended: Promise.resolve(), endedByServer: false };
  socket.on('error', () => {});
  socket.on('data', (d: Buffer) => peer.received.push(d));
  peer.ended = new Promise((resolve) => {
    socket.on('end', () => {
      peer.endedByServer = true;
      resolve();
    });
    socket.on('close', () => resolve());
  });
  return peer;
}

function connected(peer: RawPeer): Promise<void> {
  return new Promise((resolve) => (peer.socket.readyState === 'open' ? resolve() : peer.socket.once('connect', () => resolve())));
}

/** Resolves with `promise`'s value, or rejects if it has not settled within `ms`: a bound for a hung server. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]);
}

/** `n` bytes of deterministic noise. */
function noise(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + 7) & 0xff));
}

/** A Python-framed handshake message (4-byte big-endian length). */
function pyFrame(payload: Buffer, length = payload.length): Buffer {
  const header = Buffer.alloc(4);
  header.writeInt32BE(length);
  return Buffer.concat([header, payload]);
}

// ---- the file's processes and descriptors, checked at its end ----

const managers: SyncManager[] = [];
let fdsBefore: string[] = [];
let shmBefore: string[] = [];

async function startManager(options: ConstructorParameters<typeof SyncManager>[0]): Promise<SyncManager> {
  const m = new SyncManager({ authkey: KEY, ...options });
  managers.push(m);
  await m.start();
  return m;
}

function withoutMemfd(fds: string[]): string[] {
  return fds.filter((fd) => !fd.includes('/memfd:'));
}

beforeAll(async () => {
  // What a first manager, and a first SharedMemory, open for good in this
  // process (the reaper's machinery, the segment tracker's pipe) is not a leak.
  const warm = new SyncManager({ authkey: KEY });
  await warm.start();
  (await warm.dict()).setSync('warm', 1);
  await warm.shutdown();
  const segment = new SharedMemory({ create: true, size: 16 });
  segment.close();
  segment.unlink();
  fdsBefore = withoutMemfd(openFds());
  shmBefore = shmEntries();
});

afterAll(async () => {
  await stopAll();
});

/**
 * Shuts every manager of this file down. One that stopped answering (a
 * failing test) is killed first: shutdown() asks it with a Sync call.
 */
async function stopAll(): Promise<void> {
  for (const m of managers) {
    const alive = await within(m.numberOfObjects(), 5000, 'numberOfObjects()').then(
      () => true,
      () => false,
    );
    if (!alive) m.process?.kill();
    await m.shutdown();
  }
}

/**
 * A proxy call from this process and one from a forked child, on
 * connections of their own: the server still serves its other clients.
 * Promise forms only here, bounded: a server that stopped serving fails the
 * test instead of blocking this process in a Sync call.
 *
 * The child does little. A forked child that runs a full garbage collection
 * can deadlock there (nodemp's fork copies the parent's V8 platform task
 * queue, whose condition variable may count worker threads that the child
 * does not have: pthread_cond_signal then waits for them forever), so the
 * servers that work hard here, those of the garbage and fuzz tests, are
 * spawned rather than forked.
 */
async function stillServes(d: DictProxy<string, unknown>, n: number): Promise<void> {
  await within(d.set('check', n), 10_000, 'a proxy call');
  expect(await within(d.get('check'), 10_000, 'a proxy call')).toBe(n);
}

async function stillServesAnotherProcess(d: DictProxy<string, unknown>): Promise<void> {
  const child = spawnChild(() => {
    d.setSync('from child', process.pid);
  });
  await child.join(10_000);
  if (child.exitCode === null) {
    child.kill();
    await child.join();
  }
  expect(child.exitCode).toBe(0);
  expect(await within(d.get('from child'), 10_000, 'a proxy call')).toBe(child.pid);
}

/** Whether `predicate` holds, asked again until it does or `ms` pass. */
async function eventually(predicate: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return predicate();
}

/** How many objects the server holds, asked on the event loop. */
function objectsOf(m: SyncManager): Promise<number> {
  return within(m.numberOfObjects(), 10_000, 'numberOfObjects()');
}

// ---------------------------------------------------------------------------

describe('manager wire: peers that do not authenticate', () => {
  it('noise, truncated handshakes, huge or negative lengths, then leaving or going silent: the server stays up for valid clients', async () => {
    const m = await startManager({ address: ['127.0.0.1', 0] });
    const d = await m.dict<string, unknown>();
    // 'stay': the peer waits, and the server must drop it; 'told' when it read all the peer sent
    // (with bytes left unread, its close is a reset, which may overtake the '#FAILURE#' it wrote).
    const cases: [string, Buffer | null, 'end' | 'stay' | 'told'][] = [
      ['connects and leaves at once', null, 'end'],
      ['4 KiB of noise, then leaves', noise(4096), 'end'],
      ['4 KiB of noise, then waits', noise(4096), 'stay'],
      ['a huge length prefix, then waits', pyFrame(Buffer.alloc(0), 0x7fffffff), 'told'],
      ['a negative (64-bit) length prefix, then waits', pyFrame(Buffer.alloc(0), -1), 'told'],
      ['a negative length prefix and a 64-bit length, then waits', pyFrame(Buffer.alloc(8, 0xff), -1), 'stay'],
      ['just over the 256-byte bound, then waits', pyFrame(Buffer.alloc(0), 257), 'told'],
      ['a well-framed wrong answer, then waits', pyFrame(Buffer.concat([Buffer.from('{sha256}'), Buffer.alloc(32, 7)])), 'told'],
      ['an empty answer, then waits', pyFrame(Buffer.alloc(0)), 'told'],
      ['a truncated answer, then leaves', pyFrame(Buffer.from('{sha256}abc'), 40), 'end'],
      ['half a length prefix, then leaves', Buffer.from([0, 0]), 'end'],
      ['a nodemp frame instead of a handshake, then waits', frame(1, pack([1, INFO])), 'stay'],
    ];
    let n = 0;
    for (const [what, payload, then] of cases) {
      const peer = rawPeer(m.address);
      await connected(peer);
      if (payload !== null) peer.socket.write(payload);
      if (then === 'end') peer.socket.end();
      // A peer that waits is told it failed and dropped by the server; one that leaves is let go.
      await within(peer.ended, 10_000, what);
      if (then !== 'end') expect(peer.endedByServer || peer.socket.errored !== null, what).toBe(true);
      if (then === 'told') expect(Buffer.concat(peer.received).includes('#FAILURE#'), what).toBe(true);
      peer.socket.destroy();
      await stillServes(d, ++n);
    }

    // nodemp's own clients without the key, or with a wrong one.
    const noKey = await Client(m.address);
    expect(noKey.poll(10_000)).toBe(true); // the challenge, which this client does not take up
    noKey.close();
    expect(() => ClientSync(m.address, { authkey: Buffer.from('a wrong key') })).toThrow(AuthenticationError);
    await expect(Client(m.address, { authkey: Buffer.from('another wrong key') })).rejects.toBeInstanceOf(AuthenticationError);
    await stillServes(d, 100);
    await stillServesAnotherProcess(d);
  });

  it('silent unauthenticated peers do not hold up the others', async () => {
    // The default handshake timeout (10 s): the silent peers are still there while the others are served.
    const m = await startManager({ address: ['127.0.0.1', 0] });
    const d = await m.dict<string, unknown>();
    const silent = Array.from({ length: 5 }, () => rawPeer(m.address));
    await Promise.all(silent.map(connected));
    // A truncated handshake is silent too: a length, then nothing.
    silent[0]?.socket.write(pyFrame(Buffer.alloc(0), 40).subarray(0, 4));
    silent[1]?.socket.write(Buffer.from([0, 0]));
    // New clients authenticate meanwhile, this process's and a child's.
    const session = await Session.open(m.address);
    expect(session.greeting[1]).toBe(GREETING);
    const info = session.ask(frame(1, pack([1, INFO])));
    expect((info as Reply).slice(0, 2)).toEqual([1, OK]);
    session.close();
    await stillServesAnotherProcess(d);
    expect(silent.map((p) => p.endedByServer)).toEqual(silent.map(() => false));
    for (const p of silent) p.socket.destroy();
    await stillServes(d, 1);
  });

  it("a client held up past the server's handshake timeout connects again: its call succeeds, the live server is not reported dead", async () => {
    const m = await startManager({ handshakeTimeout: 200 });
    const made = await connectUnderWay(() => m.list());
    // This process's event loop is held up past the server's timeout.
    busySleep(1500);
    const list = (await made.outcome) as Awaited<ReturnType<typeof m.list>>;
    expect(list).not.toBeInstanceOf(Error);
    await list.append(1);
    expect(await list.copy()).toEqual([1]);
    expect(m.process?.isAlive()).toBe(true);
  });

  it('many silent peers are each dropped at the handshake timeout, and the next client is served', async () => {
    const m = await startManager({ address: ['127.0.0.1', 0], handshakeTimeout: 300 });
    const d = await m.dict<string, unknown>();
    const silent = Array.from({ length: 20 }, () => rawPeer(m.address));
    await within(Promise.all(silent.map((p) => p.ended)), 20_000, 'silent peers dropped');
    expect(silent.every((p) => p.endedByServer)).toBe(true);
    // Each got the challenge before it was dropped.
    expect(silent.every((p) => Buffer.concat(p.received).includes('#CHALLENGE#'))).toBe(true);
    await stillServesAnotherProcess(d);
  });

  const hasPrlimit = spawnSync('prlimit', ['--version']).status === 0;
  it.skipIf(!hasPrlimit)('out of descriptors (EMFILE), the server keeps serving its clients and accepts again once descriptors are free', async () => {
    const m = await startManager({ address: ['127.0.0.1', 0], handshakeTimeout: 300 });
    const d = await m.dict<string, unknown>();
    const pid = m.process?.pid as number;
    const limit = limitLeaving(pid, 3);
    const original = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--noheadings', '--output=SOFT'], { encoding: 'utf8' }).trim();
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:`]);
    try {
      // Three take the free descriptors; the others wait in the backlog, where accept() fails with EMFILE.
      const peers = Array.from({ length: 12 }, () => rawPeer(m.address));
      await Promise.all(peers.map(connected));
      // The connected client is still served...
      await within(stillServes(d, 1), 10_000, 'a call while the server is out of descriptors');
      // ...and every peer gets its turn, fails its handshake by the timeout, and is let go.
      await within(Promise.all(peers.map((p) => p.ended)), 30_000, 'peers dropped');
      expect(peers.every((p) => p.endedByServer)).toBe(true);
    } finally {
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${original}:`]);
    }
    await within(stillServesAnotherProcess(d), 10_000, 'a new client');
  });
});

// ---------------------------------------------------------------------------

describe('manager wire: authenticated peers speaking garbage', () => {
  const LIMIT = 1024 * 1024;
  let m: SyncManager;
  let d: DictProxy<string, unknown>;
  let did: number;
  let s: Session;
  let n = 0;

  beforeAll(async () => {
    // Spawned: a forked server that collects garbage heavily can deadlock (see stillServesAnotherProcess).
    m = await startManager({ address: `\0nodemp-wire-${process.pid}`, maxMessageBytes: LIMIT, startMethod: 'spawn' });
    d = await m.dict<string, unknown>();
    did = d.token.id;
    s = await Session.open(m.address);
  });

  afterAll(() => s.close());

  /** `bytes` get the failure `check` expects; then this process's own connection is served. */
  async function refused(bytes: Buffer, check: (reply: unknown) => void): Promise<void> {
    check(s.ask(bytes));
    await stillServes(d, ++n);
  }

  it('greets with [0, GREETING, [pid, limit]]', () => {
    expect(s.greeting).toEqual([0, GREETING, [m.process?.pid, LIMIT]]);
  });

  it('requests of the wrong shape, unknown ops and wrong operand types', async () => {
    for (const request of [42, 'hello', null, true, { id: 1, op: INFO }, [], [1], [7, 'INFO'], [-1, INFO], [1.5, INFO], [2 ** 53, INFO], ['1', INFO]]) {
      await refused(frame(1, pack(request)), (r) => badRequest(r, 0, /a request must be \[id, op, \.\.\.operands\]/));
    }
    // 0xc1, which msgpack never uses, decodes as msgpackr's C1 marker: no op.
    await refused(frame(1, Buffer.from([0x92, 0x01, 0xc1])), (r) => badRequest(r, 0, /a request must be/));
    // An id of 2^64 - 1 (msgpack uint64): no safe integer.
    await refused(frame(1, Buffer.from([0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, INFO])), (r) => badRequest(r, 0));
    await refused(frame(1, pack([7, 99])), (r) => badRequest(r, 7, /unknown op 99/));
    await refused(frame(1, pack([7, -1])), (r) => badRequest(r, 7, /unknown op -1/));
    await refused(frame(1, pack([7, 1.5])), (r) => badRequest(r, 7, /unknown op 1.5/));
    await refused(frame(1, pack([8, CALL, 'x', 'get', []])), (r) => badRequest(r, 8, /object id must be an integer/));
    await refused(frame(1, pack([8, CALL, { id: did }, 'get', []])), (r) => badRequest(r, 8, /object id must be an integer/));
    await refused(frame(1, pack([8, CALL])), (r) => badRequest(r, 8, /object id must be an integer/));
    await refused(frame(1, pack([9, CALL, 999_999, 'get', ['k']])), (r) => expectFailed(r, 9, { code: 'ERR_OBJECT_GONE' }));
    await refused(frame(1, pack([9, CALL, -5, 'get', ['k']])), (r) => expectFailed(r, 9, { code: 'ERR_OBJECT_GONE' }));
    await refused(frame(1, pack([10, CALL, did, 'get', 'not an array'])), (r) => badRequest(r, 10, /arguments must come as an array/));
    await refused(frame(1, pack([10, CALL, did, 'get', { 0: 'k', length: 1 }])), (r) => badRequest(r, 10, /arguments must come as an array/));
    await refused(frame(1, pack([11, CREATE, 42, []])), (r) => badRequest(r, 11, /typeid must be a string/));
    await refused(frame(1, pack([11, CREATE])), (r) => badRequest(r, 11, /typeid must be a string/));
    await refused(frame(1, pack([12, CREATE, 'dict', 'not an array'])), (r) => badRequest(r, 12, /arguments must come as an array/));
    expect(await objectsOf(m)).toBe(1);
    await stillServesAnotherProcess(d);
  });

  it('unknown typeids, and methods that are not exposed, whatever their names', async () => {
    const keys = await d.keys();
    for (const typeid of ['nope', '', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'prototype', 'dict ', 'Dict']) {
      await refused(frame(1, pack([13, CREATE, typeid, []])), (r) => expectFailed(r, 13, { code: 'ERR_UNKNOWN_TYPEID' }));
    }
    const methods = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', '__defineGetter__', 'map', 'forEach', 'prototype', '', 'set ', 'getItem\0'];
    for (const method of methods) {
      await refused(frame(1, pack([14, CALL, did, method, []])), (r) => expectFailed(r, 14, { code: 'ERR_NOT_EXPOSED', message: /dict has no exposed method/ }));
    }
    for (const method of [5, null, ['get'], { toString: 'get' }]) {
      await refused(frame(1, pack([14, CALL, did, method, []])), (r) => expectFailed(r, 14, { code: 'ERR_NOT_EXPOSED' }));
    }
    // The dict itself is untouched.
    expect(await d.keys()).toEqual(keys);
    expect(await objectsOf(m)).toBe(1);
    await stillServesAnotherProcess(d);
  });

  it('bad arguments to exposed methods and constructors: the method\'s own error', async () => {
    await refused(frame(1, pack([15, CALL, did, 'update', [5]])), (r) => expectFailed(r, 15, { Class: TypeError, message: /update\(other\)/ }));
    await refused(frame(1, pack([15, CALL, did, 'getItem', ['no such key']])), (r) => expectFailed(r, 15, { Class: Error, message: /no such key/ }));
    await refused(frame(1, pack([15, CALL, did, 'update', [[[1, 2, 3]]]])), (r) => expectFailed(r, 15, { Class: TypeError }));
    await refused(frame(1, pack([16, CREATE, 'dict', [5]])), (r) => expectFailed(r, 16, { Class: TypeError, message: /dict\(init\)/ }));
    await refused(frame(1, pack([16, CREATE, 'list', [7]])), (r) => expectFailed(r, 16, { Class: TypeError, message: /list\(init\)/ }));
    await refused(frame(1, pack([16, CREATE, 'Value', ['zz', 1]])), (r) => expectFailed(r, 16, { Class: TypeError, message: /typecode/ }));
    await refused(frame(1, pack([16, CREATE, 'Value', ['i', 'not a number']])), (r) => expectFailed(r, 16, { Class: TypeError }));
    await refused(frame(1, pack([16, CREATE, 'Semaphore', [-1]])), (r) => expectFailed(r, 16, { Class: Error }));
    await refused(frame(1, pack([16, CREATE, 'Barrier', ['two']])), (r) => expectFailed(r, 16, { Class: Error }));
    // Nothing was made by the failed constructors.
    expect(await objectsOf(m)).toBe(1);
    await stillServesAnotherProcess(d);
  });

  it('encodings other than msgpack, and msgpack that does not decode or claims more than the frame holds', async () => {
    const valid = pack([17, INFO]);
    for (const tag of [0, 3, 4, 7, 255]) {
      // Answered to the request's id where the body's first bytes give it (here 17), else to 0.
      await refused(frame(tag, tag === 3 ? serialize([17, INFO]) : valid), (r) => badRequest(r, tag === 3 ? 0 : 17, new RegExp(`encoding ${tag}, where only msgpack`)));
    }
    const undecodable: [string, Buffer][] = [
      ['an empty body', Buffer.alloc(0)],
      ['a truncated request', pack([18, CALL, did, 'set', ['k', 'v'.repeat(50)]]).subarray(0, 30)],
      ['trailing bytes', Buffer.concat([valid, Buffer.from([0xc0])])],
      ['an array of 2^32 - 1', Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02])],
      ['arrays nested, each claiming more', Buffer.from([0xdc, 0x00, 0x05, 0xdc, 0x00, 0x05, 0xdc, 0x00, 0x05, 0x01])],
      ['a map of 2^31 entries', Buffer.from([0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x02])],
      ['a string of 2 GiB', Buffer.from([0x92, 0x01, 0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61, 0x62])],
      ['bytes of 2 GiB', Buffer.from([0x92, 0x01, 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x61, 0x62])],
      ['an extension of 2 GiB', Buffer.from([0x92, 0x01, 0xc9, 0x7f, 0xff, 0xff, 0xff, EXT_NODEMP, 0x61])],
      ['a bundled-strings extension of 2 GiB', array(pack(19), Buffer.from([0xd6, 0x62, 0x7f, 0xff, 0xff, 0xff]))],
      ['200 000 nested arrays', Buffer.concat([Buffer.alloc(200_000, 0x91), Buffer.from([0xc0])])],
      ['200 000 nested maps', Buffer.concat([Buffer.alloc(3 * 200_000).fill(Buffer.from([0x81, 0xa1, 0x61])), Buffer.from([0xc0])])],
      ['a typed array of an unknown kind', array(pack(19), Buffer.from([0xd5, 0x74, 99, 0]))],
      ['a structured-clone pointer to nothing', array(pack(19), Buffer.from([0xd6, 0x70, 0, 0, 0, 5]))],
      ['an unknown extension', array(pack(19), Buffer.from([0xd4, 0x01, 0x00]))],
      ["msgpackr's error extension naming no constructor", array(pack(19), Buffer.concat([Buffer.from([0xd4, 0x65, 0x00]), pack(['__proto__', 'm', null])]))],
      ['an invalid regular expression', array(pack(19), Buffer.concat([Buffer.from([0xd4, 0x78, 0x00]), pack(['(', 'zz'])]))],
    ];
    for (const [what, body] of undecodable) {
      for (const tag of [1, 2]) {
        await refused(frame(tag, body), (r) => {
          expect(r, `${what} (tag ${tag})`).not.toBe(SILENT);
          expect(((r as Reply)[2] as Error).message, `${what} (tag ${tag})`).toMatch(/could not be decoded/);
          badRequest(r, leadingId(body));
        });
      }
    }
    expect(await objectsOf(m)).toBe(1);
    await stillServesAnotherProcess(d);
  });

  it("msgpackr's record definitions are data of their own message only", async () => {
    // A record (useRecords' own encoding) in a request is a plain object there...
    const records = new Packr({ useRecords: true, mapsAsObjects: true });
    const withRecord = records.pack({ a: 1, b: 2 });
    expect(withRecord[0]).toBe(0xd4); // a record definition, 0xd4 0x72 <id>
    for (const tag of [1, 2]) {
      expect(s.ask(callWith(20, did, 'set', array(pack(`record ${tag}`), withRecord)))).toEqual([20, OK, undefined]);
      expect(await d.get(`record ${tag}`)).toEqual({ a: 1, b: 2 });
      // ...and the next message cannot use it: 0x40 is the integer 64 there, leaving bytes over.
      const id = withRecord[2] as number;
      const reference = Buffer.concat([array(pack(21), pack(CALL), pack(did), pack('set'), array(pack(`use ${tag}`), Buffer.from([id]))), Buffer.from([0x01, 0x02])]);
      expect(id).toBe(0x40);
      badRequest(s.ask(frame(tag, reference)), 21, /end of buffer not reached/);
      expect(await d.has(`use ${tag}`)).toBe(false);
    }
    // A definition whose keys are not strings, or name __proto__, makes a plain object with no prototype games.
    const junkKeys = Buffer.from([0xd4, 0x72, 0x41, 0x93, 0x05, 0xc0, 0xa9, ...Buffer.from('__proto__'), 0x01, 0x02, 0x81, 0xa1, 0x78, 0x01]);
    expect(s.ask(callWith(22, did, 'set', array(pack('junk keys'), junkKeys)))).toEqual([22, OK, undefined]);
    const got = (await d.get('junk keys')) as Record<string, unknown>;
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
    await d.delete('record 1');
    await d.delete('record 2');
    await d.delete('junk keys');
    await stillServesAnotherProcess(d);
  });

  it("nodemp's extension with junk; SharedMemory by name is refused; proxies of other servers are refused without connecting out", async () => {
    const junk: [string, unknown, RegExp][] = [
      ['a number', 42, /does not accept/],
      ['an empty array', [], /does not accept/],
      ['an unknown kind', [99, 'x'], /does not accept/],
      ['an unknown class by name', [BY_NAME, 'Nope', 'x'], /does not accept a Nope/],
      ['__proto__ by name', [BY_NAME, '__proto__', 'x'], /does not accept a __proto__/],
      ['constructor by name', [BY_NAME, 'constructor', 'x'], /does not accept a constructor/],
      ['SharedMemory by name', [BY_NAME, 'SharedMemory', 'nodemp_wire_no_such'], /does not accept a SharedMemory/],
      ['ShareableList by name', [BY_NAME, 'ShareableList', 'nodemp_wire_no_such'], /does not accept a ShareableList/],
      ["what only a starting child is given", [TO_CHILD, { fd: 0 }], /only a starting child/],
      ['an error state that is not one', [ERROR, 'junk'], /./],
      ['an error state that is null', [ERROR, null], /./],
      ['a proxy token that is not JSON', [BY_NAME, 'BaseProxy', 'junk'], /proxy in a message is malformed/],
      ['a proxy token of the wrong shape', [BY_NAME, 'BaseProxy', '[1,2,3]'], /proxy in a message is malformed/],
      ['a proxy of an object this server does not hold', [BY_NAME, 'BaseProxy', JSON.stringify(['dict', m.address, 999_999, ['get']])], /no object with id 999999/],
    ];
    for (const [what, value, message] of junk) {
      await refused(callWith(23, did, 'set', array(pack('ext'), nodempExt(value))), (r) => {
        expect(r, what).not.toBe(SILENT);
        badRequest(r, 23, message);
      });
    }
    // The extension's bytes in another length of fixext: no read() of its own there.
    await refused(frame(1, array(pack(23), Buffer.from([0xd5, EXT_NODEMP, 0x01, 0x02]))), (r) => badRequest(r, 23, /could not be decoded/));

    // A real segment, named by a client: the server does not map it.
    const shm = new SharedMemory({ create: true, size: 4096 });
    try {
      await refused(callWith(24, did, 'set', array(pack('shm'), nodempExt([BY_NAME, 'SharedMemory', shm.name]))), (r) =>
        badRequest(r, 24, /does not accept a SharedMemory/),
      );
      await refused(callWith(24, did, 'set', array(pack('list'), nodempExt([BY_NAME, 'ShareableList', shm.name]))), (r) =>
        badRequest(r, 24, /does not accept a ShareableList/),
      );
      expect(readFileSync(`/proc/${m.process?.pid}/maps`, 'utf8')).not.toContain(shm.name);
    } finally {
      shm.close();
      shm.unlink();
    }

    // Proxies naming another address, one that listens: refused, and the server does not connect to it.
    using probe = new Listener(['127.0.0.1', 0], { authkey: KEY });
    const elsewhere: Address[] = [probe.address, `\0nodemp-wire-elsewhere-${process.pid}`, '/tmp/nodemp-wire-elsewhere.sock'];
    for (const address of elsewhere) {
      const token = JSON.stringify(['dict', address, did, ['get', 'set']]);
      await refused(callWith(25, did, 'set', array(pack('proxy'), nodempExt([BY_NAME, 'BaseProxy', token]))), (r) =>
        badRequest(r, 25, /a proxy of another server .* cannot be sent to this one/),
      );
    }
    expect(native.netAccept(probe.fileno(), 0)).toBe(-1);
    expect(await d.has('proxy')).toBe(false);
    expect(await objectsOf(m)).toBe(1);
    await stillServesAnotherProcess(d);
  });

  it('a value that cannot even be shown in an error message is still answered, and the frames after it are served', async () => {
    // An error whose stack has no usable toString: util.inspect() throws on it.
    const unprintable = nodempExt([ERROR, { name: 'Error', message: 'x', stack: { toString: 1 }, fields: {}, own: false }, null]);
    await refused(frame(1, array(unprintable)), (r) => badRequest(r, 0, /a request must be \[id, op/));
    await refused(frame(1, array(pack(26), unprintable)), (r) => badRequest(r, 0, /a request must be \[id, op/));
    // With a valid request behind it in the same write: both are answered.
    s.write(Buffer.concat([frame(1, array(unprintable)), frame(1, pack([27, INFO]))]));
    badRequest(s.next(), 0);
    const info = s.next();
    expect((info as Reply).slice(0, 2)).toEqual([27, OK]);
    await stillServesAnotherProcess(d);
  });

  it("decoding stays inside the frame: a string running past its end does not read the bytes after it", async () => {
    // A first request leaves its bytes in the server's read buffer...
    const marker = 'SECRET-'.repeat(40);
    expect((s.ask(frame(1, pack([28, INFO, marker]))) as Reply).slice(0, 2)).toEqual([28, OK]);
    // ...where a short one whose proxy token (a str8 of 200 bytes) has only 2 of them would find them.
    const token = Buffer.concat([Buffer.from([0x93, BY_NAME]), pack('BaseProxy'), Buffer.from([0xd9, 200]), Buffer.from('["')]);
    const short = frame(1, array(Buffer.from([0xd4, EXT_NODEMP, 0x00]), token));
    const error = badRequest(s.ask(short), 0);
    expect(error.message).not.toContain('SECRET');
    // The same for a RegExp's source ('(' and 199 bytes that are not there), which its SyntaxError shows.
    const regexp = frame(1, array(Buffer.from([0xd4, 0x78, 0x00, 0x91, 0xd9, 200, 0x28])));
    expect((s.ask(frame(1, pack([29, INFO, marker]))) as Reply).slice(0, 2)).toEqual([29, OK]);
    expect(badRequest(s.ask(regexp), 0).message).not.toContain('SECRET');
    await stillServes(d, ++n);
  });

  it('a frame over maxMessageBytes: the error, then EOF on that connection alone, its body neither read nor allocated; the limit itself is served', async () => {
    const peakBefore = statusKiB(m.process?.pid as number, 'VmPeak');
    const oversized: [string, Buffer][] = [
      ['4 GiB announced', headerOnly(0xfffffff0)],
      ['2^62 announced in the long form', headerOnly(2n ** 62n, true)],
      ['2^64 - 1 announced in the long form', headerOnly(2n ** 64n - 1n, true)],
      ['limit + 1 announced, and sent', Buffer.concat([headerOnly(LIMIT + 1), Buffer.alloc(LIMIT + 1, 0xc0)])],
    ];
    for (const [what, bytes] of oversized) {
      const own = await Session.open(m.address);
      // The answer does not wait for the body: it comes while the body is still being written, or never is.
      own.write(bytes);
      expectFailed(own.next(), 0, { code: 'ERR_MESSAGE_TOO_LONG', message: new RegExp(`over the limit of ${LIMIT} bytes`) });
      expect(own.next(), what).toBe(EOF);
      own.close();
      // The session of the other tests, and this process's proxies, are not affected.
      expect((s.ask(frame(1, pack([30, INFO]))) as Reply).slice(0, 2)).toEqual([30, OK]);
      await stillServes(d, ++n);
    }
    // Nothing near the announced sizes was allocated.
    expect(statusKiB(m.process?.pid as number, 'VmPeak') - peakBefore).toBeLessThan(512 * 1024);

    // A request of exactly the limit is served; one byte more is not.
    const fill = (size: number): Buffer => {
      const body = (k: number) => pack([31, CALL, did, 'set', ['big', 'x'.repeat(k)]]);
      let k = size - body(0).length;
      while (body(k).length > size) k--;
      return body(k);
    };
    const exact = fill(LIMIT);
    expect(exact.length).toBe(LIMIT);
    const own = await Session.open(m.address);
    expect(own.ask(frame(1, exact))).toEqual([31, OK, undefined]);
    expect(((await d.get('big')) as string).length).toBeGreaterThan(LIMIT - 100);
    const over = Buffer.concat([exact.subarray(0, exact.length - 1), Buffer.from('xx')]);
    expect(over.length).toBe(LIMIT + 1);
    expectFailed(own.ask(frame(1, over)), 0, { code: 'ERR_MESSAGE_TOO_LONG' });
    expect(own.next()).toBe(EOF);
    own.close();
    await d.delete('big');
    await stillServesAnotherProcess(d);
  });

  it('a peer that resets the connection with a frame half sent is let go, with what it held', async () => {
    const connections = (): number => ((s.ask(frame(1, pack([33, INFO]))) as Reply)[2] as { connections: number }).connections;
    const objects = await objectsOf(m);
    const before = connections();
    const victim = await Session.open(m.address);
    expect((victim.ask(frame(1, pack([1, CREATE, 'dict', []]))) as Reply)[1]).toBe(PROXY);
    // A reply it will not read: its close is then a reset.
    victim.write(frame(1, pack([2, INFO])));
    expect(victim.conn.poll(10_000)).toBe(true);
    // The server is stopped while the peer sends half a frame and resets, so
    // that the bytes and the reset come to it in one readiness event (with
    // POLLERR, after which libuv polls that socket no more).
    const pid = m.process?.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      victim.write(Buffer.concat([headerOnly(100), Buffer.alloc(10, 0xc0)]));
      victim.close();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(await eventually(async () => connections() === before)).toBe(true);
    expect(await objectsOf(m)).toBe(objects);
    await stillServes(d, ++n);
  });

  it('requests without a reply (id 0) with junk operands change nothing and are not answered', async () => {
    const other = await m.list<number>([1, 2, 3]);
    const before = await objectsOf(m);
    const junk = [
      [0, INCREF],
      [0, INCREF, 'x'],
      [0, INCREF, 999_999],
      [0, DECREF, did], // not this connection's reference: nothing to give back
      [0, DECREF, other.token.id],
      [0, DECREF, -1],
      [0, DECREF, { id: did }],
      [0, SEND, 'x'],
      [0, ADOPT, 999_999],
      [0, HELLO, 'not a pid'],
      [0, HELLO, { pid: 1 }],
      [0, HELLO],
    ];
    // All in one write, then one question: its answer is the next frame.
    s.write(Buffer.concat([...junk.map((r) => frame(1, pack(r))), frame(1, pack([32, INFO]))]));
    const info = s.next() as Reply;
    expect(info.slice(0, 2)).toEqual([32, OK]);
    expect((info[2] as { objects: number }).objects).toBe(before);
    // The objects others hold are intact.
    expect(await other.len()).toBe(3);
    await stillServes(d, ++n);
    await stillServesAnotherProcess(d);
  });
});

// ---------------------------------------------------------------------------

/** mulberry32: a small seeded generator, so that a failing fuzz run can be replayed from its seed. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Fuzz {
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
  bytes(n: number): Buffer;
}

function fuzzOf(seed: number): Fuzz {
  const next = generator(seed);
  const int = (n: number): number => Math.floor(next() * n);
  return {
    int,
    pick: (items) => items[int(items.length)] as (typeof items)[number],
    chance: (p) => next() < p,
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))),
  };
}

const fuzzCodec = codecFor('msgpack');

/** A valid request, encoded as a client's ManagerConnection would (tag 1, or 2 for what needs structured clone). */
function validRequest(f: Fuzz, targets: { dict: number; list: number }): Buffer {
  const key = (): unknown => f.pick(['a', 'b', 'key', '', '__proto__', 'constructor', 7, -1, 2 ** 40, 1.5, true, null]);
  const value = (depth = 0): unknown => {
    switch (f.int(depth > 2 ? 6 : 10)) {
      case 0: return f.int(1000);
      case 1: return 'v'.repeat(f.int(40));
      case 2: return f.bytes(f.int(20));
      case 3: return null;
      case 4: return BigInt(f.int(1e9)) * 10n ** 20n;
      case 5: return new Date(f.int(2e12));
      case 6: return [value(depth + 1), value(depth + 1)];
      case 7: return { x: value(depth + 1), y: f.int(9) };
      case 8: return new Map([[key(), value(depth + 1)]]);
      default: return new Set([f.int(5), 'x']);
    }
  };
  const id = f.chance(0.1) ? 0 : 1 + f.int(2 ** 20);
  const target = f.pick([targets.dict, targets.list]);
  const requests: (() => unknown[])[] = [
    () => [id, CALL, targets.dict, 'set', [key(), value()]],
    () => [id, CALL, targets.dict, f.pick(['get', 'has', 'delete', 'getItem', 'pop', 'setdefault']), [key()]],
    () => [id, CALL, targets.dict, f.pick(['keys', 'values', 'items', 'len', 'copy', 'popitem']), []],
    () => [id, CALL, targets.dict, 'update', [{ k: value() }]],
    () => [id, CALL, targets.list, f.pick(['append', 'includes', 'count', 'index']), [value()]],
    () => [id, CALL, targets.list, f.pick(['get', 'pop', 'slice']), [f.int(5) - 2]],
    () => [id, CALL, targets.list, f.pick(['len', 'reverse', 'copy']), []],
    () => [id, CALL, target, f.pick(['map', 'constructor', 'toString']), []],
    () => [id, CREATE, f.pick(['dict', 'list', 'Namespace']), [f.chance(0.5) ? undefined : f.pick([{ a: 1 }, [[1, 2]], [1, 2]])]],
    () => [id, CREATE, 'Value', [f.pick(['i', 'd', 'q']), f.int(100)]],
    () => [id, INFO],
    () => [0, HELLO, f.int(1e6)],
    () => [0, f.pick([INCREF, DECREF]), target],
  ];
  const body = fuzzCodec.encode(f.pick(requests)());
  return frame(fuzzCodec.tag, Buffer.from(body));
}

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xc0, 0xc1, 0xc2, 0xc4, 0xc6, 0xc9, 0xcf, 0xd4, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xff, EXT_NODEMP, 0x72];

/**
 * `frame` with a few of: bits flipped, bytes set, inserted or deleted, its
 * length or tag changed, truncated, spliced. Unless its length itself was
 * the target, the header is mostly made to say the body's length again, so
 * that the server reads the frames after it as frames.
 */
function mutate(f: Fuzz, bytes: Buffer, other: Buffer, limit: number): Buffer {
  let b = Buffer.from(bytes);
  let lengthChanged = false;
  for (let k = 1 + f.int(3); k > 0; k--) {
    const at = f.int(Math.max(1, b.length));
    const mutation = f.int(11);
    lengthChanged ||= mutation === 5 || mutation === 6 || mutation === 8;
    switch (mutation) {
      case 0:
        if (b.length > 0) b[at] = (b[at] as number) ^ (1 << f.int(8));
        break;
      case 1:
        if (b.length > 0) b[at] = f.int(256);
        break;
      case 2:
        if (b.length > 0) b[at] = f.pick(INTERESTING);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), f.bytes(1 + f.int(8)), b.subarray(at)]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + f.int(8))]);
        break;
      case 5: // the header's length off by a little: the frames after it are read out of step
        if (b.length >= 5) b.writeUInt32LE(Math.max(0, b.readUInt32LE(1) + f.int(17) - 8), 1);
        break;
      case 6: // a length within the limit, or over it (the server drops the connection)
        if (b.length >= 5) b.writeUInt32LE(f.chance(0.8) ? f.int(limit + 1) : limit + 1 + f.int(2 ** 32 - limit - 1), 1);
        break;
      case 7:
        if (b.length >= 1) b[0] = f.pick([0, 1, 2, 3, 4, f.int(256)]);
        break;
      case 8: // a body shorter than its header says: the next frame's bytes complete it
        b = b.subarray(0, 5 + f.int(Math.max(1, b.length - 5)));
        break;
      case 9:
        b = Buffer.concat([b.subarray(0, at), other.subarray(f.int(Math.max(1, other.length)))]);
        break;
      default: // an element count changed in place: a fixarray or fixmap header
        for (let i = 5; i < b.length; i++) {
          const x = b[i] as number;
          if ((x & 0xf0) === 0x90 || (x & 0xf0) === 0x80) {
            b[i] = (x & 0xf0) | f.int(16);
            break;
          }
        }
    }
  }
  if (!lengthChanged && b.length >= 5 && b.readUInt32LE(1) !== 0xffffffff && f.chance(0.8)) b.writeUInt32LE(b.length - 5, 1);
  return b;
}

/**
 * What the server makes of a stream, frame by frame, as FrameReader and
 * #handle do: requests that would shut it down or move references in
 * transit (legitimately able to keep or drop others' objects) are not sent,
 * so that its object count after the fuzz is known.
 */
class Mirror {
  #stream = Buffer.alloc(0);
  closed = false;
  constructor(readonly limit: number) {}

  /** Whether `bytes` may follow what was sent; if so, they are taken. */
  offer(bytes: Buffer): boolean {
    // What is left of the stream after its last whole frame, and the new bytes.
    const stream = Buffer.concat([this.#stream, bytes]);
    let at = 0;
    let closed = false;
    for (;;) {
      const have = stream.length - at;
      if (have < 5) break;
      let length = stream.readUInt32LE(at + 1);
      let header = 5;
      if (length === 0xffffffff) {
        if (have < 13) break;
        length = Number(stream.readBigUInt64LE(at + 5));
        header = 13;
      }
      if (length > this.limit) {
        closed = true;
        break;
      }
      if (have < header + length) break;
      const tag = stream[at] as number;
      let request: unknown;
      try {
        request = decodeUntrusted(tag, stream.subarray(at + header, at + header + length), 0, length);
      } catch {
        request = null;
      }
      if (Array.isArray(request) && [SHUTDOWN, SEND, ADOPT].includes(request[1] as number)) return false;
      at += header + length;
    }
    this.#stream = stream.subarray(at);
    this.closed = closed;
    return true;
  }

  /** How many more bytes the server waits for before it reads a frame, and whether they end its header: 0 between frames. */
  missing(): [bytes: number, ofHeader: boolean] {
    const have = this.#stream.length;
    if (have === 0) return [0, false];
    if (have < 5) return [5 - have, true];
    const length = this.#stream.readUInt32LE(1);
    if (length !== 0xffffffff) return [5 + length - have, false];
    if (have < 13) return [13 - have, true];
    return [13 + Number(this.#stream.readBigUInt64LE(5)) - have, false];
  }
}

const FUZZ_LIMIT = 64 * 1024;

/**
 * Authenticated fuzzing: `frames` frames (valid, mutated or random), each on
 * one of `width` connections picked at random, their replies read and
 * dropped as they come. A connection the server drops (a length over the
 * limit) is replaced by a new one; the others end with replies unread, which
 * resets them. Resolves with how many connections were opened.
 */
async function fuzzAuthenticated(address: Address, f: Fuzz, targets: { dict: number; list: number }, frames: number, width: number): Promise<number> {
  const sink = Buffer.alloc(64 * 1024);
  let opened = 0;
  const open = async (): Promise<{ conn: Connection; mirror: Mirror }> => {
    opened++;
    return { conn: await within(Client(address, { authkey: KEY }), 10_000, 'a fuzzing connection'), mirror: new Mirror(FUZZ_LIMIT) };
  };
  const live = [];
  for (let i = 0; i < width; i++) live.push(await open());
  const drain = (fd: number): void => {
    while (native.connRead(fd, sink, 0, sink.length, 0) > 0);
  };
  // The server reads no more from a connection whose replies wait for room: a blocking write
  // would wait for it while it waits for this end to read, so replies are read while writing.
  const send = (fd: number, bytes: Buffer): void => {
    for (let sent = native.netWrite(fd, bytes, 0, false); sent < bytes.length; sent += native.netWrite(fd, bytes, sent, false)) {
      drain(fd);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
    drain(fd);
  };
  for (let sent = 0; sent < frames; sent++) {
    // Now and then the event loop runs: the unauthenticated peers go on meanwhile.
    if (sent % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    const at = f.int(width);
    if ((live[at] as { mirror: Mirror }).mirror.closed) {
      (live[at] as { conn: Connection }).conn.close();
      live[at] = await open();
    }
    const { conn, mirror } = live[at] as { conn: Connection; mirror: Mirror };
    const fd = conn.fileno();
    // Bytes the mirror takes; null when, after `tries`, it took none: the frame begun there could
    // only end as a request that is not sent (that connection is then given up).
    const offered = (tries: number, make: () => Buffer): Buffer | null => {
      for (let i = 0; i < tries; i++) {
        const bytes = make();
        if (mirror.offer(bytes)) return bytes;
      }
      return null;
    };
    try {
      const bytes = offered(50, () => {
        const roll = f.int(50);
        if (roll < 12) return validRequest(f, targets);
        if (roll < 46) return mutate(f, validRequest(f, targets), validRequest(f, targets), FUZZ_LIMIT);
        if (roll < 49) return frame(f.pick([1, 2]), f.bytes(f.int(64)));
        return f.bytes(1 + f.int(32));
      });
      if (bytes !== null) send(fd, bytes);
      else mirror.closed = true;
      // A frame whose length says more than it holds takes the frames after it as its body: most
      // times, it is completed with noise (a header with zeros: a short length), so that the frames
      // after it are read as frames.
      for (let [missing, ofHeader] = mirror.missing(); !mirror.closed && missing > 0 && f.chance(0.9); [missing, ofHeader] = mirror.missing()) {
        const filler = offered(20, () => (ofHeader ? Buffer.alloc(missing) : f.bytes(missing)));
        if (filler !== null) send(fd, filler);
        else mirror.closed = true;
      }
    } catch (error) {
      // Only where the mirror expects it (a length over the limit) may the server drop a connection.
      if (!mirror.closed) throw error;
    }
  }
  for (const { conn } of live) conn.close();
  return opened;
}

/** Unauthenticated peers: random bytes, and handshake answers that are nearly right; resolves once all are connected and have sent them. */
async function fuzzUnauthenticated(address: Address, f: Fuzz, peers: number): Promise<RawPeer[]> {
  const all: RawPeer[] = [];
  for (let i = 0; i < peers; i++) {
    const peer = rawPeer(address);
    all.push(peer);
    await connected(peer);
    const answer = pyFrame(Buffer.concat([Buffer.from('{sha256}'), f.bytes(32)]));
    const payload = f.pick([
      () => f.bytes(f.int(600)),
      () => mutate(f, answer, answer, 256),
      () => answer.subarray(0, f.int(answer.length)),
      () => pyFrame(f.bytes(f.int(300))),
      () => Buffer.concat([answer, f.bytes(f.int(100))]),
    ])();
    peer.socket.write(payload);
    if (f.chance(0.5)) peer.socket.end();
    else if (f.chance(0.5)) peer.socket.destroy();
    // else silent: the server's handshake timeout lets it go.
  }
  return all;
}

describe('manager wire: fuzz', () => {
  const seed = Number(process.env.NODEMP_FUZZ_SEED ?? 0x5eed14);
  const frames = 2500;
  const width = 6;
  const peers = 24;

  it(`random and mutated requests on several connections, authenticated and not, leave the server serving, with its objects, descriptors and memory (seed ${seed})`, async () => {
    try {
      // Spawned: a forked server that collects garbage heavily can deadlock (see stillServesAnotherProcess).
      const m = await startManager({ address: ['127.0.0.1', 0], maxMessageBytes: FUZZ_LIMIT, handshakeTimeout: 500, startMethod: 'spawn' });
      const pid = m.process?.pid as number;
      const d = await m.dict<string, unknown>();
      await d.set('kept', 'before the fuzz');
      const objects = await objectsOf(m);

      const round = async (r: number): Promise<void> => {
        const f = fuzzOf(seed * 31 + r);
        // The targets are held by a connection of their own, which lets them go at the end of the round.
        const owner = await Session.open(m.address);
        const made = (typeid: string, args: unknown[]): number => {
          const reply = owner.ask(frame(1, pack([1, CREATE, typeid, args]))) as Reply;
          expect(reply[1]).toBe(PROXY);
          return (reply[2] as [string, number])[1];
        };
        const targets = { dict: made('dict', []), list: made('list', [[1, 2, 3]]) };
        const unauthenticated = await fuzzUnauthenticated(m.address, f, peers);
        const opened = await fuzzAuthenticated(m.address, f, targets, frames, width);
        await within(Promise.all(unauthenticated.map((p) => p.ended)), 20_000, 'unauthenticated fuzz peers dropped');
        for (const p of unauthenticated) p.socket.destroy();
        // Lengths over the limit ended connections, and new ones went on.
        expect(opened).toBeGreaterThan(width * 5);
        console.log(`manager-wire fuzz round ${r}: ${frames} frames on ${opened} authenticated connections, ${peers} unauthenticated peers (seed ${seed})`);
        owner.close();
        // Every fuzzing connection is closed, and so is the owner's: only this process's objects are left.
        expect(await eventually(async () => (await objectsOf(m)) === objects)).toBe(true);
      };

      const serverFdsBefore = serverFds(pid);
      await round(1);
      const rssAfterFirst = statusKiB(pid, 'VmRSS');
      await round(2);
      const rssAfterSecond = statusKiB(pid, 'VmRSS');

      // No descriptor of the hundreds of connections is left: every one the server accepted, it closed.
      const added = (): string[] => serverFds(pid).filter((fd) => !serverFdsBefore.includes(fd));
      await waitUntil(() => added().length === 0, 5000);
      expect(added()).toEqual([]);

      // A valid client is answered correctly, from this process and from another.
      expect(await d.get('kept')).toBe('before the fuzz');
      const fresh = await m.dict<string, unknown>();
      const value = { n: 1, list: [1, 'two', null], bytes: Buffer.from([1, 2, 3]), big: 10n ** 30n };
      await fresh.set('value', value);
      expect(await fresh.get('value')).toEqual(value);
      expect(await objectsOf(m)).toBe(objects + 1);
      await stillServesAnotherProcess(d);
      // The second round, the same work as the first, grew the server by less than 64 MiB.
      expect(rssAfterSecond - rssAfterFirst).toBeLessThan(64 * 1024);
    } catch (error) {
      if (error instanceof Error) error.message = `manager-wire fuzz, seed ${seed} (replay: NODEMP_FUZZ_SEED=${seed}): ${error.message}`;
      throw error;
    }
  });
});

// ---------------------------------------------------------------------------

describe('manager wire: the client side', () => {
  it("a request over the server's limit is refused before it is sent, and the connection goes on", async () => {
    const LIMIT = 4096;
    const m = await startManager({ maxMessageBytes: LIMIT });
    const d = await m.dict<string, unknown>();
    d.setSync('k', 'small');
    const tooLong = (e: unknown): boolean => e instanceof ManagerError && e.code === 'ERR_MESSAGE_TOO_LONG' && /over the server's limit of 4096 bytes/.test(e.message);
    expect(() => d.setSync('k', Buffer.alloc(LIMIT + 1))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LONG' }));
    expect(tooLong(await d.set('k', Buffer.alloc(LIMIT + 1)).catch((e: unknown) => e))).toBe(true);
    expect(tooLong(await d.set('k', 'x'.repeat(10 * 1024 * 1024)).catch((e: unknown) => e))).toBe(true);
    expect(tooLong(await m.dict({ big: 'x'.repeat(LIMIT) }).catch((e: unknown) => e))).toBe(true);
    expect(() => m.listSync(Array.from({ length: LIMIT }, (_, i) => i))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LONG' }));
    // Nothing of them reached the server, which would have dropped this connection: it goes on.
    expect(d.getSync('k')).toBe('small');
    expect(await d.get('k')).toBe('small');
    expect(await objectsOf(m)).toBe(1);

    // The largest request the limit allows goes through: a body of exactly LIMIT bytes (the
    // request ids of this young connection are below 128, one byte, as the 1 here).
    const bodyOf = (size: number): number => fuzzCodec.encode([1, CALL, d.token.id, 'set', ['k', Buffer.alloc(size)]]).byteLength;
    let size = LIMIT - bodyOf(0);
    while (bodyOf(size) > LIMIT) size--;
    expect(bodyOf(size)).toBe(LIMIT);
    d.setSync('k', Buffer.alloc(size, 1));
    expect(((await d.get('k')) as Uint8Array).length).toBe(size);
    expect(() => d.setSync('k', Buffer.alloc(size + 1))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LONG' }));
    expect(((await d.get('k')) as Uint8Array).length).toBe(size);
    await stillServesAnotherProcess(d);
  });
});

// ---------------------------------------------------------------------------

describe('manager wire: no leaks', () => {
  it('leaves no processes, descriptors or /dev/shm entries', async () => {
    const pids = managers.map((m) => m.process?.pid as number);
    await stopAll();
    expect(await waitUntil(() => pids.every((pid) => !running(pid)), 5000)).toBe(true);
    expect(childrenOf(process.pid).filter((pid) => running(pid))).toEqual([]);
    expect(withoutMemfd(openFds()).filter((fd) => !fdsBefore.includes(fd))).toEqual([]);
    expect(shmEntries()).toEqual(shmBefore);
  });
});
