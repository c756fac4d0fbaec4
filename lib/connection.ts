// Pipe() and Connection: Python's multiprocessing.connection for forked
// processes. A duplex Pipe is a socketpair, a one-way Pipe an OS pipe
// ([readEnd, writeEnd], as in Python). Both ends exist in the creating process; after a fork each process usually closes the end it does
// not use, and close() only ever closes this process's own descriptor.
//
// Wire format (native/conn.cc writes it): [tag u8][length u32 LE][body], with
// length 0xFFFFFFFF followed by the real length as u64 LE. The tag says how
// the body decodes (lib/codec.ts); tag BYTES marks raw bytes (sendBytes, or
// send() of a Buffer/Uint8Array). send() is one writev() per message and blocks
// only while the kernel buffer is full.
//
// Receiving takes from the kernel exactly the one frame it returns and
// nothing after it, so whatever this process does not receive stays in the
// socket for every other process holding the same end (poll() and wait() only
// ask the kernel). On a socket (a SOCK_SEQPACKET one on Linux, where a frame
// goes as records: native/conn.cc says why), one native call peeks at the
// header and reads header and body: a small body into one scratch buffer shared by all
// connections (decoded or copied out at once), a long one into a buffer of its
// own (which recvBytes() returns without copying), recvBytesInto()'s into the
// caller's buffer. A value frame asked for as bytes is refused before anything
// is taken. A frame only partly there is taken as far as it goes and finished
// by later reads of exactly its rest: this process owns it meanwhile, as a
// CPython recv() in progress would. A descriptor that cannot peek (a one-way
// Pipe's OS pipe, or a pipe given to `new Connection(fd)`) reads each header,
// then its body; a value refused as bytes there has had its header taken, so
// it stays with this process, for its recv().
//
// An async receive that finds nothing re-reads for up to READ_SPIN_MS, then
// watches the descriptor with a uv_poll handle that runs only while a receive
// (or a wait()) is pending, so an idle connection neither keeps the event
// loop alive nor wakes it.
import { inspect } from 'node:util';
import { native } from './native.js';
import { spinPays } from './spin.js';
import { addStallPoller, guardLoop } from './loop-stall.js';
import { BYTES, SMALL, codecFor, decodeRange, encodeSmall, type Codec, type Serializer } from './codec.js';
import { BufferTooShort, ClosedError, DirectionError, EOFError, OSError } from './errors.js';
import { bytesOf, checkOffset, invalidType, invalidValue, outOfRange } from './args.js';
import { selfPid } from './self.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';

// How long recv() re-reads for a message before it leaves the wait to the event loop.
const READ_SPIN_MS = 0.02;
const HEADER = 5;
const LONG_HEADER = 13;
const LONG = 0xffffffff;

// What a pending receive wants.
const OBJECT = 0;
const RAW = 1;
const INTO = 2;

// What native.connRecv found (native/conn.cc's RecvResult).
const R_NONE = -1;
const R_END = 0;
const R_FRAME = 1;
const R_PARTIAL = 2;
const R_TOO_LONG = 3;
const R_NOT_BYTES = 4;

// How native.connRecv takes a frame (native/conn.cc's RecvMode).
const WHOLE_RECORD = 0;
const PEEK_ANY = 1;
const PEEK_BYTES = 2;

// Bodies up to this long are read into `scratch`, longer ones into a buffer
// of their own. At least native/conn.cc's kRecord, the most a record holds.
const SCRATCH_SIZE = 64 * 1024;
const scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE);
// [tag, body length, body bytes taken, where the body starts]: what connRecv found.
const frameInfo = native.connFrameInfo();

/** A receive found no whole frame in time. */
const NOTHING = Symbol('nothing');

function notBytes(method: string): TypeError {
  const error = new TypeError(
    `${method}(): the next message was sent with send() as a value, not as bytes (sendBytes(), or send() of a Buffer or Uint8Array); take it with recv()`,
  );
  (error as TypeError & { code: string }).code = 'ERR_CONNECTION_NOT_BYTES';
  return error;
}

// Nothing the process can do makes the stream whole again for it: the rest of
// its parent's message is the parent's to read. For this process the end is
// as good as closed.
function forkedMidMessage(method: string): ClosedError {
  return new ClosedError(
    `${method}(): this process was forked while its parent was in the middle of receiving a message on this connection; ` +
      "the rest of that message is the parent's, so this end cannot receive here (receive in one process, or wait for the message before forking)",
  );
}

interface Pending {
  method: string;
  kind: number;
  maxLength: number;
  target: Uint8Array | null;
  offset: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

// ---- readiness events from native/conn.cc, dispatched by descriptor ----

const handlers = new Map<number, () => void>();
// The descriptors watched for room to write (a connect in progress); the loop-stall poller looks only for readable ones.
const writers = new Set<number>();
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
  writers.clear();
  native.connAfterFork();
}

/**
 * Calls `handler` from the event loop whenever `fd` is readable (or hung up),
 * or with `writable` whenever it has room to write, until unwatchFd(fd).
 */
export function watchFd(fd: number, handler: () => void, writable = false): void {
  checkFork();
  native.connWatch(fd, true, writable);
  handlers.set(fd, handler);
  if (writable) writers.add(fd);
  else writers.delete(fd);
  guardLoop();
}

// On a loop that has stopped polling (lib/loop-stall.ts), readiness is looked for.
addStallPoller({
  active() {
    if (handlersPid !== selfPid) return false;
    for (const fd of handlers.keys()) if (!writers.has(fd)) return true;
    return false;
  },
  poll() {
    if (handlersPid !== selfPid) return;
    const fds = [...handlers.keys()].filter((fd) => !writers.has(fd));
    const ready = Int32Array.from(fds);
    if (fds.length === 0 || native.connPollFds(ready, 0) === 0) return;
    fds.forEach((fd, i) => {
      if (ready[i] === 1) handlers.get(fd)?.();
    });
  },
});

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

// What native.connAdopt says a descriptor is.
const OTHER = 0;
const RECORDS = 2;

// The kind of the descriptors Pipe() is wrapping; -1: not in Pipe().
let creatingPipe = -1;

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

/** For wait(): calls `listener` once `conn` has data or its end to receive; returns the cancel function. */
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
  // Whether values that fit go in the small format (lib/codec.ts): both
  // ends are this nodemp's, as they are for an end of a Pipe() made with
  // msgpack, here or in a parent. Never for an adopted descriptor or a
  // Listener's or Client's, which may talk to another program or version.
  #small: boolean;
  // Whether receives can peek at the descriptor (a socket).
  readonly #peek: boolean;
  // Whether frames go as records (SOCK_SEQPACKET, native/conn.cc).
  readonly #records: boolean;
  // The process whose receive state this is: a forked child starts afresh.
  #owner = selfPid;
  // In a child forked while its parent had taken part of a frame.
  #forkedMidFrame = false;

  // The frame this process has begun to take from the kernel: #headGot bytes
  // of its header (0: none begun), then, once #tag >= 0, #bodyGot bytes of
  // its body at #body[#bodyAt...].
  #head: Buffer | null = null;
  #headGot = 0;
  #tag = -1;
  #length = 0;
  #body: Uint8Array | null = null;
  #bodyAt = 0;
  #bodyGot = 0;

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
    this.#small = creatingPipe >= 0 && serializer === 'msgpack';
    const kind = creatingPipe >= 0 ? creatingPipe : native.connAdopt(fd);
    this.#peek = kind !== OTHER;
    this.#records = kind === RECORDS;
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
      native.connSend(fd, BYTES, obj, 0, obj.byteLength, this.#records);
      return;
    }
    if (this.#small) {
      const small = encodeSmall(obj);
      if (small !== null) {
        native.connSend(fd, SMALL, small.body, small.start, small.end - small.start, this.#records);
        return;
      }
    }
    const codec = this.#codec;
    const body = codec.encode(obj);
    native.connSend(fd, codec.tag, body, 0, body.byteLength, this.#records);
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
    native.connSend(fd, BYTES, data, start, count, this.#records);
  }

  /**
   * Resolves with the next message (a Buffer for one sent as bytes); rejects
   * with EOFError once the other end is closed and nothing is left.
   */
  recv<T = unknown>(): Promise<T> {
    return this.#recvAsync('recv', OBJECT, Infinity, null, 0) as Promise<T>;
  }

  /** Blocks until the next message comes and returns it; EOFError once the other end is closed and nothing is left. */
  recvSync<T = unknown>(): T {
    return this.#recvSync('recvSync', OBJECT, Infinity, null, 0) as T;
  }

  /**
   * Resolves with the next message, which must have been sent as bytes
   * (sendBytes(), or send() of a Buffer or Uint8Array), as a Buffer. A message
   * sent as a value rejects with TypeError ERR_CONNECTION_NOT_BYTES and stays
   * where it is, for recv(). A message longer than `maxLength` rejects with
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
    return this.#recvSync('recvBytesSync', RAW, max, null, 0) as Buffer;
  }

  /**
   * Resolves with the byte length of the next message, which must have been
   * sent as bytes (as for recvBytes()), once it has been written into `buf`
   * from byte `offset`. If it does not fit, rejects with BufferTooShort, whose
   * `data` holds the whole message (it is consumed).
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
    return this.#recvSync('recvBytesIntoSync', INTO, Infinity, target, start) as number;
  }

  /**
   * Whether there is data to receive (true also once the other end is
   * closed: recv() then raises EOFError), as Python's poll(): a query that
   * reads nothing, so the data stays for whichever process receives it.
   * Receives this process has pending take what comes first. Waits up to
   * `timeoutMs`, blocking this thread; the default 0 only looks, and null or
   * Infinity waits as long as it takes. To wait without blocking the event
   * loop, use `await wait([conn], timeoutMs)`.
   */
  poll(timeoutMs: number | null = 0): boolean {
    const timeout = checkTimeout('poll', timeoutMs);
    this.#checkRead('poll');
    const fd = this.#fd;
    if (this.#pending.length === 0) return native.connPoll(fd, timeout === Infinity ? -1 : timeout);
    const deadline = timeout === Infinity ? Infinity : performance.now() + timeout;
    for (;;) {
      const left = deadline === Infinity ? -1 : Math.max(0, deadline - performance.now());
      this.#servePending(left);
      this.#updateWatch();
      if (this.#pending.length === 0) {
        return native.connPoll(fd, deadline === Infinity ? -1 : Math.max(0, deadline - performance.now()));
      }
      if (left === 0) return false;
    }
  }

  /**
   * Closes this process's descriptor (other processes' copies stay open).
   * Pending receives reject with ClosedError; of a message this process had
   * begun to take (one longer than the socket buffer, still arriving), the
   * rest stays unread. Closing twice does nothing.
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
    this.#dropFrame();
    if (mine) handlers.delete(fd);
    native.connClose(fd);
    if (!mine) return;
    for (const p of pending) p.reject(new ClosedError('the connection was closed while a receive was pending'));
    for (const listener of listeners) listener();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * The descriptor crosses (the child gets its own, as a forked child
   * inherits one), with the end's direction and codec. As in a forked
   * child, a frame this process has begun to take is this process's: the
   * child's end cannot receive.
   */
  [toChild](child: ChildEncoder): State {
    if (this.#fd < 0) throw new ClosedError('a closed Connection cannot be given to a child process');
    if (this.#owner !== selfPid) this.#forked();
    const midFrame = this.#forkedMidFrame || this.#headGot > 0;
    return [child.descriptor(this.#fd), this.#readable, this.#writable, this.#codec.serializer, midFrame, this.#small];
  }

  static [fromParent]([descriptor, readable, writable, serializer, midFrame, small]: State, parent: ChildDecoder): Connection {
    const conn = new Connection(parent.descriptor(descriptor as number), {
      readable: readable as boolean,
      writable: writable as boolean,
      serializer: serializer as Serializer,
    });
    conn.#forkedMidFrame = midFrame as boolean;
    conn.#small = small as boolean;
    return conn;
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
    if (this.#forkedMidFrame) throw forkedMidMessage(method);
  }

  // In a forked child: the parent's pending receives are the parent's, and so
  // is a frame it had begun to take (its rest is still in the socket).
  #forked(): void {
    this.#owner = selfPid;
    this.#pending = [];
    this.#listeners = new Set();
    this.#watching = false;
    this.#forkedMidFrame = this.#headGot > 0;
    this.#dropFrame();
  }

  #dropFrame(): void {
    this.#headGot = this.#bodyGot = this.#bodyAt = this.#length = 0;
    this.#tag = -1;
    this.#body = null;
  }

  #eofError(method: string, partial: boolean): EOFError {
    return new EOFError(
      partial
        ? `${method}(): the other end closed in the middle of a message`
        : `${method}(): the other end of the connection is closed`,
    );
  }

  /**
   * Takes the next frame for a receive of `kind` and returns what that
   * receive returns; NOTHING if no whole frame came within `timeoutMs` (0: do
   * not wait, < 0: forever). Throws EOFError at the end of the stream,
   * ERR_CONNECTION_NOT_BYTES (taking nothing more), BufferTooShort.
   */
  #receive(method: string, kind: number, maxLength: number, target: Uint8Array | null, offset: number, timeoutMs: number): unknown {
    if (this.#headGot > 0 || !this.#peek) return this.#continue(method, kind, maxLength, target, offset, timeoutMs);
    let dest: Uint8Array = scratch;
    let at = 0;
    let capacity = SCRATCH_SIZE;
    if (kind === INTO) {
      dest = target as Uint8Array;
      at = offset;
      capacity = dest.byteLength - offset;
    }
    // A value may be taken without a look first; bytes are looked at, so
    // that a value stays where it is for recv().
    const mode = kind !== OBJECT ? PEEK_BYTES : this.#records ? WHOLE_RECORD : PEEK_ANY;
    for (;;) {
      const found = native.connRecv(this.#fd, dest, at, capacity, timeoutMs, mode);
      switch (found) {
        case R_FRAME:
          return this.#result(kind, maxLength, target, offset, frameInfo[0], dest, at + frameInfo[3], frameInfo[1]);
        case R_NONE:
          return NOTHING;
        case R_END:
          throw this.#eofError(method, false);
        case R_NOT_BYTES:
          throw notBytes(method);
        case R_TOO_LONG:
          // Peeked, not taken: read it again into a buffer of its size.
          capacity = frameInfo[1];
          dest = Buffer.allocUnsafe(capacity);
          at = 0;
          continue;
        case R_PARTIAL: {
          const length = frameInfo[1];
          const got = frameInfo[2];
          const start = at + frameInfo[3];
          this.#headGot = HEADER;
          this.#tag = frameInfo[0];
          this.#length = length;
          this.#bodyGot = got;
          if (dest === scratch) {
            // The scratch buffer is every connection's: the frame moves to one of its own.
            const own = Buffer.allocUnsafe(length);
            scratch.copy(own, 0, start, start + got);
            this.#body = own;
            this.#bodyAt = 0;
          } else {
            this.#body = dest;
            this.#bodyAt = start;
          }
          return this.#continue(method, kind, maxLength, target, offset, timeoutMs);
        }
        default:
          // R_SHORT_HEAD: less than a header has come; take it, so that a
          // level-triggered watch does not report it again and again.
          return this.#continue(method, kind, maxLength, target, offset, timeoutMs);
      }
    }
  }

  /**
   * #receive() by reads of no more than the rest of the current frame: for a
   * frame begun here, and for descriptors that cannot peek.
   */
  #continue(method: string, kind: number, maxLength: number, target: Uint8Array | null, offset: number, timeoutMs: number): unknown {
    const fd = this.#fd;
    const deadline = timeoutMs > 0 ? performance.now() + timeoutMs : timeoutMs;
    const left = (): number => (deadline <= 0 ? deadline : Math.max(0, deadline - performance.now()));
    while (this.#tag < 0) {
      const head = (this.#head ??= Buffer.alloc(LONG_HEADER));
      const need = this.#headGot < HEADER ? HEADER : LONG_HEADER;
      const n = native.connRead(fd, head, this.#headGot, need - this.#headGot, left());
      if (n < 0) return NOTHING;
      if (n === 0) throw this.#eofError(method, this.#headGot > 0);
      this.#headGot += n;
      if (this.#headGot < HEADER) continue;
      const short = head.readUInt32LE(1);
      if (short !== LONG) this.#length = short;
      else if (this.#headGot === LONG_HEADER) this.#length = Number(head.readBigUInt64LE(HEADER));
      else continue;
      this.#tag = head[0];
    }
    const length = this.#length;
    if (this.#body === null) {
      if (kind !== OBJECT && this.#tag !== BYTES) throw notBytes(method);
      if (kind === INTO && length <= (target as Uint8Array).byteLength - offset) {
        this.#body = target;
        this.#bodyAt = offset;
      } else {
        this.#body = Buffer.allocUnsafe(length);
        this.#bodyAt = 0;
      }
    }
    const body = this.#body as Uint8Array;
    const at = this.#bodyAt;
    while (this.#bodyGot < length) {
      const n = native.connRead(fd, body, at + this.#bodyGot, length - this.#bodyGot, left());
      if (n < 0) return NOTHING;
      if (n === 0) throw this.#eofError(method, true);
      this.#bodyGot += n;
    }
    const tag = this.#tag;
    this.#dropFrame();
    return this.#result(kind, maxLength, target, offset, tag, body, at, length);
  }

  /**
   * What a receive of `kind` returns for the frame whose body is
   * body[at, at + length): `body` is the shared scratch buffer, the caller's
   * target, or a buffer of the frame's own.
   */
  #result(kind: number, maxLength: number, target: Uint8Array | null, offset: number, tag: number, body: Uint8Array, at: number, length: number): unknown {
    const own = body !== scratch && body !== target;
    if (kind === OBJECT) return tag === BYTES && own ? body : decodeRange(tag, body, at, at + length);
    if (kind === RAW) {
      const data = own ? (body as Buffer) : (decodeRange(BYTES, body, at, at + length) as Buffer);
      if (length > maxLength) {
        throw new BufferTooShort(`the message is ${length} bytes long, more than maxLength ${maxLength}`, data);
      }
      return data;
    }
    if (own) {
      const room = (target as Uint8Array).byteLength - offset;
      throw new BufferTooShort(`the message is ${length} bytes long; the buffer has ${room} bytes from offset ${offset}`, body as Buffer);
    }
    return length;
  }

  #recvSync(method: string, kind: number, maxLength: number, target: Uint8Array | null, offset: number): unknown {
    this.#checkRead(method);
    // Receives asked for earlier are served first.
    if (this.#pending.length > 0) {
      this.#servePending(-1);
      this.#updateWatch();
    }
    return this.#receive(method, kind, maxLength, target, offset, -1);
  }

  /** Serves pending receives in order, waiting up to timeoutMs (< 0: forever) for each. */
  #servePending(timeoutMs: number): void {
    while (this.#pending.length > 0) {
      const p = this.#pending[0];
      let value: unknown;
      try {
        value = this.#receive(p.method, p.kind, p.maxLength, p.target, p.offset, timeoutMs);
      } catch (error) {
        // The end of the stream, or a failing descriptor, fails every receive;
        // a message one receive cannot take fails that one.
        if (error instanceof EOFError || error instanceof OSError) {
          this.#failPending(error);
          return;
        }
        this.#pending.shift();
        p.reject(error);
        continue;
      }
      if (value === NOTHING) return;
      this.#pending.shift();
      p.resolve(value);
    }
  }

  #failPending(error: unknown): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) p.reject(error);
  }

  #recvAsync(method: string, kind: number, maxLength: number, target: Uint8Array | null, offset: number): Promise<unknown> {
    try {
      this.#checkRead(method);
      if (this.#pending.length === 0) {
        // A partner that answers within microseconds is read now, without a
        // trip through the event loop's poll and its wake-up (tens of
        // microseconds each way here): the loop waits at most READ_SPIN_MS,
        // and not at all when the cores are all taken (lib/spin.ts).
        const value = this.#receive(method, kind, maxLength, target, offset, spinPays() ? READ_SPIN_MS : 0);
        if (value !== NOTHING) return Promise.resolve(value);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { method, kind, maxLength, target, offset, resolve, reject };
      this.#pending.push(p);
      try {
        this.#updateWatch();
      } catch (error) {
        this.#pending.splice(this.#pending.indexOf(p), 1);
        reject(error);
      }
    });
  }

  // From the event loop: the descriptor is readable (or hung up). Pending
  // receives take what came; wait()'s listeners hear of what is left.
  #readyEvent(): void {
    if (this.#fd < 0) return;
    let ready = this.#pending.length === 0;
    try {
      if (!ready) {
        this.#servePending(0);
        ready = this.#pending.length === 0 && this.#listeners.size > 0 && native.connPoll(this.#fd, 0);
      }
    } catch (error) {
      ready = true;
      this.#failPending(error);
    }
    if (ready && this.#listeners.size > 0) {
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

  // wait(): call `listener` once there is data (or the end) to receive.
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
  const [fd0, fd1, kind] = native.connPipe(duplex);
  creatingPipe = kind;
  try {
    return [
      new Connection(fd0, { readable: true, writable: duplex, serializer }),
      new Connection(fd1, { readable: duplex, writable: true, serializer }),
    ];
  } finally {
    creatingPipe = -1;
  }
}
