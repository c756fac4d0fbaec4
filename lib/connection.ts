// Pipe() and Connection: Python's multiprocessing.connection for forked
// processes. A duplex Pipe is a socketpair, a one-way Pipe an OS pipe
// ([readEnd, writeEnd], as in Python). Both ends exist in the creating process;
// after a fork each process usually closes the end it does not use, and
// close() only ever closes this process's own descriptor.
//
// Wire format (native/conn.cc writes it): [tag u8][length u32 LE][body], with
// length 0xFFFFFFFF followed by the real length as u64 LE. The tag says how
// the body decodes (lib/codec.ts); tag BYTES marks raw bytes (sendBytes, or
// send() of a Buffer/Uint8Array). send() is one writev() per message and blocks
// only while the kernel buffer is full.
//
// Receiving: reads pull everything available (up to 64 KiB) into one buffer
// per connection, parsed here; a frame longer than that buffer is read
// straight into a buffer of its own size, which recvBytes() then returns
// without copying. An async receive that finds nothing re-reads for up to
// READ_SPIN_MS, then watches the descriptor with a uv_poll handle
// that runs only while a receive (or a wait()) is pending, so an idle
// connection neither keeps the event loop alive nor wakes it.
import { inspect } from 'node:util';
import { native } from './native.js';
import { BYTES, codecFor, decode, type Codec, type Serializer } from './codec.js';
import { BufferTooShort, ClosedError, DirectionError, EOFError } from './errors.js';
import { bytesOf, checkOffset, invalidType, invalidValue, outOfRange } from './args.js';
import { selfPid } from './self.js';

// How long recv() re-reads for a message before it leaves the wait to the event loop.
const READ_SPIN_MS = 0.02;
const CHUNK = 64 * 1024;
// Compact the receive buffer before a read that would have less room than this.
const COMPACT_BELOW = 4096;
const HEADER = 5;
const LONG_HEADER = 13;
const LONG = 0xffffffff;

// What a pending receive wants.
const OBJECT = 0;
const RAW = 1;
const INTO = 2;

interface Pending {
  kind: number;
  maxLength: number;
  target: Uint8Array | null;
  offset: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

// ---- readiness events from native/conn.cc, dispatched by descriptor ----

const handlers = new Map<number, () => void>();
let handlersPid = selfPid;

native.connSetOnReadable((fd) => {
  handlers.get(fd)?.();
});

// A forked child inherits this map and the native watch table of its parent;
// neither describes its own loop.
function checkFork(): void {
  if (handlersPid === selfPid) return;
  handlersPid = selfPid;
  handlers.clear();
  native.connAfterFork();
}

/** Calls `handler` from the event loop whenever `fd` is readable (or hung up), until unwatchFd(fd). */
export function watchFd(fd: number, handler: () => void): void {
  checkFork();
  native.connWatch(fd, true);
  handlers.set(fd, handler);
}

export function unwatchFd(fd: number): void {
  checkFork();
  handlers.delete(fd);
  native.connWatch(fd, false);
}

/** A descriptor readable once `pid` exits; -1: none on this system; -2: no such process. Close with closeExitFd. */
export function openExitFd(pid: number): number {
  checkFork();
  return native.connPidfd(pid);
}

export function closeExitFd(fd: number): void {
  checkFork();
  handlers.delete(fd);
  native.connClose(fd);
}

// A Connection dropped without close() gives its descriptor back.
const finalizer = new FinalizationRegistry<number>((fd) => {
  try {
    handlers.delete(fd);
    native.connClose(fd);
  } catch {
    // Already gone: nothing to give back.
  }
});

let creatingPipe = false;

function checkMaxLength(method: string, maxLength: unknown): number {
  if (maxLength === undefined || maxLength === null) return Infinity;
  if (typeof maxLength !== 'number') throw invalidType(`${method}(maxLength)`, 'a number of bytes', maxLength);
  if (!(maxLength >= 0) || (!Number.isInteger(maxLength) && maxLength !== Infinity)) {
    throw outOfRange(`${method}(maxLength)`, 'a non-negative integer', maxLength);
  }
  return maxLength;
}

function checkTimeout(method: string, timeoutMs: unknown): number {
  if (timeoutMs === null || timeoutMs === Infinity) return Infinity;
  if (typeof timeoutMs !== 'number') throw invalidType(`${method}(timeoutMs)`, 'a number of milliseconds or null', timeoutMs);
  if (!(timeoutMs >= 0)) throw outOfRange(`${method}(timeoutMs)`, 'a number of milliseconds >= 0', timeoutMs);
  return timeoutMs;
}

/** For wait(): calls `listener` once `conn` has a whole message or its end to receive; returns the cancel function. */
export let whenReady: (conn: Connection, listener: () => void) => () => void;

export interface ConnectionOptions {
  /** This end may receive (default true). */
  readable?: boolean;
  /** This end may send (default true). */
  writable?: boolean;
  /** How send() encodes values: 'msgpack' (default) or 'v8'. Either end decodes both. */
  serializer?: Serializer;
}

/**
 * One end of a Pipe. `send()` values, `recv()` them at the other end; or send
 * and receive raw bytes with `sendBytes()` / `recvBytes()` / `recvBytesInto()`.
 * Message boundaries are kept. Receives come in two forms: `recv()` returns a
 * Promise and never blocks the event loop, `recvSync()` blocks this thread.
 */
export class Connection {
  #fd: number;
  readonly #readable: boolean;
  readonly #writable: boolean;
  readonly #codec: Codec;
  // The process whose receive state this is: a forked child starts afresh.
  #owner = selfPid;

  // Unparsed received bytes are #buf[#start, #end).
  #buf: Buffer | null = null;
  #start = 0;
  #end = 0;
  // A frame longer than the buffer goes straight into a buffer of its own.
  #big: Buffer | null = null;
  #bigTag = 0;
  #bigFilled = 0;
  // The complete frame #complete() found at #start.
  #frameHeader = 0;
  #frameLength = 0;
  #eof = false;

  #pending: Pending[] = [];
  #listeners = new Set<() => void>();
  #watching = false;
  readonly #onReadable = (): void => this.#readyEvent();

  static {
    whenReady = (conn, listener) => conn.#whenReady(listener);
  }

  /**
   * Wraps an open descriptor (a socket or pipe end), which the Connection
   * then owns: it is made non-blocking and closed by close(). Pipe() is the
   * usual way to get connections.
   */
  constructor(fd: number, options: ConnectionOptions = {}) {
    if (typeof fd !== 'number') throw invalidType('Connection(fd)', 'a file descriptor number', fd);
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw outOfRange('Connection(fd)', 'a non-negative integer', fd);
    if (typeof options !== 'object' || options === null) {
      throw invalidType('Connection(fd, options)', 'an object like { readable, writable, serializer }', options);
    }
    const { readable = true, writable = true, serializer = 'msgpack' } = options;
    if (typeof readable !== 'boolean') throw invalidType('Connection: options.readable', 'a boolean', readable);
    if (typeof writable !== 'boolean') throw invalidType('Connection: options.writable', 'a boolean', writable);
    if (!readable && !writable) throw invalidValue('Connection: at least one of readable and writable must be true');
    this.#codec = codecFor(serializer);
    if (!creatingPipe) native.connAdopt(fd);
    this.#fd = fd;
    this.#readable = readable;
    this.#writable = writable;
    finalizer.register(this, fd, this);
  }

  /** True once close() was called in this process. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Whether this end can receive. */
  get readable(): boolean {
    return this.#readable;
  }

  /** Whether this end can send. */
  get writable(): boolean {
    return this.#writable;
  }

  /** The descriptor. */
  fileno(): number {
    if (this.#fd < 0) throw new ClosedError('fileno(): the connection is closed');
    return this.#fd;
  }

  /**
   * Sends a value to the other end. A Buffer or Uint8Array goes as raw bytes
   * (recv() returns a Buffer); anything else through the codec. Blocks only
   * while the other end is not reading and the kernel buffer is full.
   */
  send(obj: unknown): void {
    const fd = this.#writeFd('send');
    if (obj instanceof Uint8Array) {
      native.connSend(fd, BYTES, obj, 0, obj.byteLength);
      return;
    }
    const codec = this.#codec;
    const body = codec.encode(obj);
    native.connSend(fd, codec.tag, body, 0, body.byteLength);
  }

  /**
   * Sends `size` bytes of `buf` from byte `offset` (default: all of it) as one
   * message. Offsets and sizes count bytes, whatever the view's element type.
   */
  sendBytes(buf: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, offset = 0, size?: number): void {
    const fd = this.#writeFd('sendBytes');
    let data: ArrayBufferView | ArrayBuffer;
    if (ArrayBuffer.isView(buf) || buf instanceof ArrayBuffer) data = buf;
    else if (buf instanceof SharedArrayBuffer) data = new Uint8Array(buf);
    else throw invalidType('sendBytes(buf)', 'a Buffer, TypedArray, DataView or ArrayBuffer', buf);
    const length = data.byteLength;
    const start = checkOffset('sendBytes', offset, length);
    let count = length - start;
    if (size !== undefined) {
      if (typeof size !== 'number') throw invalidType('sendBytes(size)', 'an integer', size);
      if (!Number.isInteger(size) || size < 0 || size > count) {
        throw outOfRange('sendBytes(size)', `an integer from 0 to ${count} (the buffer's byte length minus offset)`, size);
      }
      count = size;
    }
    native.connSend(fd, BYTES, data, start, count);
  }

  /** Resolves with the next message; rejects with EOFError once the other end is closed and nothing is left. */
  recv<T = unknown>(): Promise<T> {
    return this.#recvAsync('recv', OBJECT, Infinity, null, 0) as Promise<T>;
  }

  /** Blocks until the next message comes and returns it; EOFError once the other end is closed and nothing is left. */
  recvSync<T = unknown>(): T {
    this.#checkRead('recvSync');
    this.#awaitFrame('recvSync');
    return this.#result(OBJECT, Infinity, null, 0) as T;
  }

  /**
   * Resolves with the next message as a Buffer (a message sent with send()
   * gives its encoded bytes). A message longer than `maxLength` rejects with
   * BufferTooShort, whose `data` holds the whole message; it is consumed.
   */
  recvBytes(maxLength?: number): Promise<Buffer> {
    let max: number;
    try {
      max = checkMaxLength('recvBytes', maxLength);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#recvAsync('recvBytes', RAW, max, null, 0) as Promise<Buffer>;
  }

  /** recvBytes(), blocking this thread. */
  recvBytesSync(maxLength?: number): Buffer {
    const max = checkMaxLength('recvBytesSync', maxLength);
    this.#checkRead('recvBytesSync');
    this.#awaitFrame('recvBytesSync');
    return this.#result(RAW, max, null, 0) as Buffer;
  }

  /**
   * Resolves with the byte length of the next message once it has been
   * written into `buf` from byte `offset`. If it does not fit, rejects with
   * BufferTooShort, whose `data` holds the whole message (it is consumed).
   */
  recvBytesInto(buf: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, offset?: number): Promise<number> {
    let target: Uint8Array;
    let start: number;
    try {
      target = bytesOf('recvBytesInto', buf);
      start = checkOffset('recvBytesInto', offset, target.byteLength);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#recvAsync('recvBytesInto', INTO, Infinity, target, start) as Promise<number>;
  }

  /** recvBytesInto(), blocking this thread. */
  recvBytesIntoSync(buf: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, offset?: number): number {
    const target = bytesOf('recvBytesIntoSync', buf);
    const start = checkOffset('recvBytesIntoSync', offset, target.byteLength);
    this.#checkRead('recvBytesIntoSync');
    this.#awaitFrame('recvBytesIntoSync');
    return this.#result(INTO, Infinity, target, start) as number;
  }

  /**
   * Whether a whole message can be received without blocking (true also once
   * the other end is closed: recv() then raises EOFError). Waits up to
   * `timeoutMs` for one, blocking this thread; the default 0 only looks, and
   * null or Infinity waits as long as it takes. To wait without blocking the
   * event loop, use `await wait([conn], timeoutMs)`.
   */
  poll(timeoutMs: number | null = 0): boolean {
    const timeout = checkTimeout('poll', timeoutMs);
    this.#checkRead('poll');
    const deadline = timeout === Infinity ? Infinity : performance.now() + timeout;
    return this.#serveAndWait(deadline) || this.#eof;
  }

  /**
   * Closes this process's descriptor (other processes' copies stay open).
   * Pending receives reject with ClosedError. Closing twice does nothing.
   */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    finalizer.unregister(this);
    const mine = this.#owner === selfPid;
    const pending = this.#pending;
    const listeners = this.#listeners;
    this.#pending = [];
    this.#listeners = new Set();
    this.#watching = false;
    this.#buf = null;
    this.#big = null;
    this.#start = this.#end = this.#bigFilled = 0;
    if (mine) handlers.delete(fd);
    native.connClose(fd);
    if (!mine) return;
    for (const p of pending) p.reject(new ClosedError('the connection was closed while a receive was pending'));
    for (const listener of listeners) listener();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [inspect.custom](): string {
    const mode = this.#readable && this.#writable ? 'duplex' : this.#readable ? 'read-only' : 'write-only';
    return `<Connection ${this.#fd < 0 ? 'closed' : `fd=${this.#fd}`} ${mode}>`;
  }

  // ---- receiving ----

  #writeFd(method: string): number {
    if (this.#fd < 0) throw new ClosedError(`${method}(): the connection is closed`);
    if (!this.#writable) throw new DirectionError(`${method}(): this end of a one-way Pipe is read-only`);
    return this.#fd;
  }

  #checkRead(method: string): void {
    if (this.#fd < 0) throw new ClosedError(`${method}(): the connection is closed`);
    if (!this.#readable) throw new DirectionError(`${method}(): this end of a one-way Pipe is write-only`);
    if (this.#owner !== selfPid) this.#forked();
  }

  // In a forked child: the parent's pending receives and read-ahead are the
  // parent's (what it had buffered, it has read), not this process's.
  #forked(): void {
    this.#owner = selfPid;
    this.#pending = [];
    this.#listeners = new Set();
    this.#watching = false;
    this.#start = this.#end = this.#bigFilled = 0;
    this.#big = null;
  }

  /** Whether a whole frame is buffered. Sets #frameHeader/#frameLength, or moves a long frame to its own buffer. */
  #complete(): boolean {
    const big = this.#big;
    if (big !== null) return this.#bigFilled === big.length;
    const avail = this.#end - this.#start;
    if (avail < HEADER) return false;
    const buf = this.#buf as Buffer;
    const s = this.#start;
    let length = buf[s + 1] + buf[s + 2] * 0x100 + buf[s + 3] * 0x10000 + buf[s + 4] * 0x1000000;
    let header = HEADER;
    if (length === LONG) {
      if (avail < LONG_HEADER) return false;
      length = Number(buf.readBigUInt64LE(s + HEADER));
      header = LONG_HEADER;
    }
    if (avail >= header + length) {
      this.#frameHeader = header;
      this.#frameLength = length;
      return true;
    }
    if (header + length <= buf.length) return false;
    const own = Buffer.allocUnsafe(length);
    buf.copy(own, 0, s + header, this.#end);
    this.#big = own;
    this.#bigTag = buf[s];
    this.#bigFilled = avail - header;
    this.#start = this.#end = 0;
    return false;
  }

  /** Reads what is available (waiting up to timeoutMs; < 0 forever): bytes read, 0 at end of stream, -1 none. */
  #fill(timeoutMs: number): number {
    const big = this.#big;
    if (big !== null) {
      const n = native.connRead(this.#fd, big, this.#bigFilled, big.length - this.#bigFilled, timeoutMs);
      if (n > 0) this.#bigFilled += n;
      return n;
    }
    let buf = this.#buf;
    if (buf === null) {
      buf = this.#buf = Buffer.allocUnsafeSlow(CHUNK);
    } else if (this.#start > 0 && buf.length - this.#end < COMPACT_BELOW) {
      buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = native.connRead(this.#fd, buf, this.#end, buf.length - this.#end, timeoutMs);
    if (n > 0) this.#end += n;
    return n;
  }

  /** Reads without waiting until a whole frame is buffered (true), or nothing more is available (false). */
  #pull(): boolean {
    for (;;) {
      if (this.#complete()) return true;
      if (this.#eof) return false;
      const n = this.#fill(0);
      if (n < 0) return false;
      if (n === 0) this.#eof = true;
    }
  }

  /**
   * Blocks until a whole frame is buffered for this caller (true), the
   * deadline passes or the stream ends (false). Pending async receives asked
   * first, so they are served first.
   */
  #serveAndWait(deadline: number): boolean {
    for (;;) {
      if (this.#complete()) {
        if (this.#pending.length === 0) return true;
        this.#deliver(this.#pending.shift() as Pending);
        if (this.#pending.length === 0) this.#updateWatch();
        continue;
      }
      if (this.#eof) {
        this.#failPending();
        return false;
      }
      const left = deadline === Infinity ? -1 : Math.max(0, deadline - performance.now());
      const n = this.#fill(left);
      if (n === 0) this.#eof = true;
      else if (n < 0) return false;
    }
  }

  #awaitFrame(method: string): void {
    if (!this.#serveAndWait(Infinity)) throw this.#eofError(method);
  }

  #eofError(method: string): EOFError {
    const partial = this.#big !== null || this.#end > this.#start;
    return new EOFError(
      partial
        ? `${method}(): the other end closed in the middle of a message`
        : `${method}(): the other end of the connection is closed`,
    );
  }

  /** Consumes the complete frame and turns it into what `kind` asks for; throws for a message that does not fit. */
  #result(kind: number, maxLength: number, target: Uint8Array | null, offset: number): unknown {
    let tag: number;
    let body: Buffer;
    let owned: boolean;
    const big = this.#big;
    if (big !== null) {
      tag = this.#bigTag;
      body = big;
      owned = true;
      this.#big = null;
      this.#bigFilled = 0;
    } else {
      const buf = this.#buf as Buffer;
      const s = this.#start;
      const from = s + this.#frameHeader;
      const to = from + this.#frameLength;
      tag = buf[s];
      body = buf.subarray(from, to);
      owned = false;
      if (to === this.#end) this.#start = this.#end = 0;
      else this.#start = to;
    }
    if (kind === OBJECT) {
      if (tag !== BYTES) return decode(tag, body);
      return owned ? body : Buffer.from(body);
    }
    if (kind === RAW) {
      const data = owned ? body : Buffer.from(body);
      if (data.length > maxLength) {
        throw new BufferTooShort(`the message is ${data.length} bytes long, more than maxLength ${maxLength}`, data);
      }
      return data;
    }
    const into = target as Uint8Array;
    if (offset + body.length > into.byteLength) {
      throw new BufferTooShort(
        `the message is ${body.length} bytes long; the buffer has ${into.byteLength - offset} bytes from offset ${offset}`,
        owned ? body : Buffer.from(body),
      );
    }
    into.set(body, offset);
    return body.length;
  }

  #deliver(p: Pending): void {
    let value: unknown;
    try {
      value = this.#result(p.kind, p.maxLength, p.target, p.offset);
    } catch (error) {
      p.reject(error);
      return;
    }
    p.resolve(value);
  }

  #failPending(error?: unknown): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    this.#pending = [];
    for (const p of pending) p.reject(error ?? this.#eofError('recv'));
    this.#updateWatch();
  }

  #recvAsync(method: string, kind: number, maxLength: number, target: Uint8Array | null, offset: number): Promise<unknown> {
    try {
      this.#checkRead(method);
      if (this.#pending.length === 0) {
        if (this.#pull()) return Promise.resolve(this.#result(kind, maxLength, target, offset));
        if (!this.#eof) {
          // A partner that answers within microseconds is read now, without a
          // trip through the event loop's poll and its wake-up (tens of
          // microseconds each way here): the loop waits at most READ_SPIN_MS.
          const n = this.#fill(READ_SPIN_MS);
          if (n === 0) this.#eof = true;
          else if (n > 0 && this.#pull()) return Promise.resolve(this.#result(kind, maxLength, target, offset));
        }
        if (this.#eof) throw this.#eofError(method);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { kind, maxLength, target, offset, resolve, reject };
      this.#pending.push(p);
      try {
        this.#updateWatch();
      } catch (error) {
        this.#pending.splice(this.#pending.indexOf(p), 1);
        reject(error);
      }
    });
  }

  // From the event loop: the descriptor is readable (or hung up).
  #readyEvent(): void {
    if (this.#fd < 0) return;
    let failed = false;
    try {
      for (;;) {
        while (this.#pending.length > 0 && this.#complete()) this.#deliver(this.#pending.shift() as Pending);
        if (this.#pending.length === 0 && (this.#listeners.size === 0 || this.#complete())) break;
        if (this.#eof) {
          this.#failPending();
          break;
        }
        const n = this.#fill(0);
        if (n < 0) break;
        if (n === 0) this.#eof = true;
      }
    } catch (error) {
      failed = true;
      this.#failPending(error);
    }
    if (this.#listeners.size > 0 && (failed || this.#eof || this.#complete())) {
      const listeners = [...this.#listeners];
      this.#listeners.clear();
      for (const listener of listeners) listener();
    }
    if (this.#fd >= 0) this.#updateWatch();
  }

  #updateWatch(): void {
    const want = this.#fd >= 0 && (this.#pending.length > 0 || this.#listeners.size > 0);
    if (want === this.#watching) return;
    if (want) watchFd(this.#fd, this.#onReadable);
    else unwatchFd(this.#fd);
    this.#watching = want;
  }

  // wait(): call `listener` once a whole message (or the end) can be received.
  #whenReady(listener: () => void): () => void {
    this.#checkRead('wait');
    this.#listeners.add(listener);
    try {
      this.#updateWatch();
    } catch (error) {
      this.#listeners.delete(listener);
      throw error;
    }
    return () => {
      if (this.#listeners.delete(listener) && this.#fd >= 0) this.#updateWatch();
    };
  }
}

export interface PipeOptions {
  /** Both ends can send and receive (default true); false gives [readEnd, writeEnd]. */
  duplex?: boolean;
  /** How send() encodes values on both ends: 'msgpack' (default) or 'v8'. */
  serializer?: Serializer;
}

/**
 * A pair of connected Connections. Duplex (the default): a socketpair, both
 * ends send and receive. `{ duplex: false }`: an OS pipe; the first end only
 * receives, the second only sends, as in Python. `Pipe(false)` is accepted too.
 */
export function Pipe(options: PipeOptions | boolean = {}): [Connection, Connection] {
  if (typeof options === 'boolean') options = { duplex: options };
  if (typeof options !== 'object' || options === null) {
    throw invalidType('Pipe(options)', 'an object like { duplex, serializer }', options);
  }
  const { duplex = true, serializer = 'msgpack' } = options;
  if (typeof duplex !== 'boolean') throw invalidType('Pipe: options.duplex', 'a boolean', duplex);
  codecFor(serializer);
  const [fd0, fd1] = native.connPipe(duplex);
  creatingPipe = true;
  try {
    return [
      new Connection(fd0, { readable: true, writable: duplex, serializer }),
      new Connection(fd1, { readable: duplex, writable: true, serializer }),
    ];
  } finally {
    creatingPipe = false;
  }
}
