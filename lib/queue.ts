// Queue, JoinableQueue and SimpleQueue on a lock-free ring in shared memory
// (layout: native/layout.h, "Queue").
//
// Producers reserve consecutive slots with one compare-and-swap on the tail,
// write the encoded message, then publish it by storing the first slot's
// sequence word; consumers claim a published message with one compare-and-
// swap on the head, decode it in place and hand the slots back by advancing
// their sequence words a lap. Nobody sleeps unless the ring is empty (or
// full): a sleeper announces the sequence it sleeps on first, and only then
// does the other side pay for a wake.
//
// Messages larger than a quarter of the ring travel in a named SharedMemory
// segment of their own (the ring carries its name); the segment tracker
// removes it should nobody ever take it.
//
// A process that dies halfway leaves a record of what it was doing in the
// party table: a consumer stuck behind a reservation whose producer died
// skips it, and a producer stuck behind slots claimed by a consumer that
// died takes them back (that message is lost with its consumer). Recovery
// itself is native (queueRecover in native/ring.cc, shared with the feeder);
// the protocol's invariants are in native/layout.h.
import { native } from './native.js';
import { selfPid } from './self.js';
import { codecFor, copyBytes, decode, decodeRange, encodeSmall, BYTES, type Codec, type Serializer } from './codec.js';
import { BufferTooShort, ClosedError, QueueEmpty, QueueFull, ShutDown, SyncError } from './errors.js';
import { bytesOf, checkInteger, checkOffset, invalidType } from './args.js';
import { SharedMemory } from './shared-memory.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';
import {
  OWNER_CHECK_MS,
  TIMED_OUT,
  deadlineAfter,
  deadlineOf,
  runAsync,
  runAsyncFrom,
  runSync,
  sleep,
  sleepThen,
  slice,
  timeLeft,
  type Steps,
  type WaitOptions,
} from './waiting.js';
import { FIRST_READS, cpuTag, firstReads, setLoopWait, spinLimit } from './spin.js';

const L = native.layout;
const W = (byteOffset: number): number => byteOffset / 4;
const TAIL = W(L.kQueueTail);
const HEAD = W(L.kQueueHead);
const PUTS = W(L.kQueuePuts);
const SHUTDOWN = W(L.kQueueShutdown);
const GETS = W(L.kQueueGets);
const PUTTER_CPU = W(L.kQueuePutterCpu);
const GETTER_CPU = W(L.kQueueGetterCpu);
const PUT_SEQ = W(L.kQueuePutSeq);
const GET_SEQ = W(L.kQueueGetSeq);
const UNFINISHED = W(L.kQueueUnfinished);
const JOIN_SLEEPERS = W(L.kQueueJoinSleepers);
const GET_SLEEP_SEQ = W(L.kQueueGetSleepSeq);
const PUT_SLEEP_SEQ = W(L.kQueuePutSleepSeq);
const PARTIES = W(L.kQueueParties);
const PARTY_WORDS = W(L.kQueuePartySize);
const PARTY_KIND = W(L.kQueuePartyKind);
const PARTY_POS = W(L.kQueuePartyPos);
const HEADER_SIZE = L.kQueueHeaderSize;
const META_WORDS = W(L.kQueueMetaSize);
const META_SEQ = W(L.kQueueMetaSeq);
const META_INFO = W(L.kQueueMetaInfo);
const SLOT_SIZE = L.kQueueSlotSize;

// kQueueShutdown
const RUNNING = 0;
const SHUT_DOWN = 1;
const IMMEDIATE = 2;

const IDLE = L.kQueueKindIdle;
const PUTTING = L.kQueueKindPutting;
const GETTING = L.kQueueKindGetting;
const RELEASING = L.kQueueKindReleasing;
const NO_ROW = -1;
// x86's total store order: stores become visible in program order.
const STORES_IN_ORDER = process.arch === 'x64' || process.arch === 'ia32';
const CONSUMER = 0;
const PRODUCER = 1;

// Encoding tags beyond the codec's own: the body is a segment name, or the
// slots were abandoned by a producer that died and hold nothing.
const SIDE = 0x40;
const SKIP = 0x7f;
const LENGTH_MASK = 0xffffff;

// The longest a consumer sleeps on an empty ring between checks for a
// producer that died with the head reserved.
const IDLE_CHECK_MAX_MS = 1000;

const NOTHING = Symbol('nothing');
const TAKE = Symbol('take');
const READABLE = Symbol('readable');
const PUT_WOKE = Symbol('put woke');
const WAKE_TAKERS = Symbol('wake takers');
const TAKERS_ASLEEP = Symbol('takers asleep');

/** What takeNowait() returns from an empty queue. */
export const EMPTY: unique symbol = NOTHING as never;

/** Internal (Pool): the oldest message, or EMPTY, without the cost of a QueueEmpty throw. */
export function takeNowait(q: Queue<unknown>): unknown {
  return q[TAKE]();
}

/**
 * Internal (Pool): resolves once a message may be there to take, without
 * taking it, so that whoever acts on it takes it in the same tick.
 */
export function whenReadable(q: Queue<unknown>, spin = true, ready?: () => boolean): Promise<boolean> {
  return runAsync(q[READABLE](spin, Infinity, ready));
}

/**
 * Internal (Pool): whenReadable() on this thread, until the deadline (false
 * if it passed). `ready` is news from beside the queue: it ends the wait like
 * a message, and whoever brings it wakes the queue's consumers (wakeTakers).
 */
export function waitReadable(q: Queue<unknown>, spin: boolean, deadline: number, ready?: () => boolean): boolean {
  return runSync(q[READABLE](spin, deadline, ready));
}

/** Internal (Pool): wakes the consumers asleep on `q`, as a put would; true if any slept. */
export function wakeTakers(q: Queue<unknown>): boolean {
  return q[WAKE_TAKERS]();
}

/**
 * Internal (Pool): whether this process's latest put into `q` woke a consumer
 * asleep in the kernel. Its answer is then a wake-up away, not microseconds:
 * a spin for it would only burn the time it takes.
 */
export function putWokeSleeper(q: Queue<unknown>): boolean {
  return q[PUT_WOKE]();
}

/** Internal (Pool): whether a consumer of `q` has gone to sleep that no put has woken yet: a put now would pay a wake-up. */
export function takersAsleep(q: Queue<unknown>): boolean {
  return q[TAKERS_ASLEEP]();
}
const DEFAULT_RING_BYTES = 1 << 20;
const MIN_RING_BYTES = 4096;
const MAX_RING_BYTES = 1 << 24;

export interface QueueOptions {
  /** Most messages the queue holds; 0 or absent: unbounded (put never blocks). */
  maxsize?: number;
  /** 'msgpack' (default, fast) or 'v8' (node:v8 structured clone). */
  serializer?: Serializer;
  /** Bytes of ring in shared memory (default 1 MiB), rounded up to a power of two. */
  ringSize?: number;
}

/** A message ready for the ring: its bytes are body[start, end). */
interface Encoded {
  tag: number;
  body: Uint8Array;
  start: number;
  end: number;
}

// Up to this many bytes, getBytesInto() copies a word at a time rather than
// pay Buffer.copy()'s call into C++.
const WORD_COPY_MAX = 256;

function notBytes(): TypeError {
  const error = new TypeError(
    'Queue.getBytesInto(): the next message was put as a value, not as a Buffer or Uint8Array; take it with get()',
  );
  (error as TypeError & { code: string }).code = 'ERR_QUEUE_NOT_BYTES';
  return error;
}

// Up to this many bytes, a loop copies into the ring faster than set() with
// the view it needs. Such a message takes one slot, so it never wraps.
const LOOP_COPY_MAX = 32;

/** How many slots a message of `len` bytes takes. */
function slotsFor(len: number): number {
  return len === 0 ? 1 : Math.ceil(len / SLOT_SIZE);
}

// native.drain() empties every queue's feed, so one exit listener per
// process is enough however many queues overflow (a forked child drops the
// parent's listeners and installs its own).
let drainAtExitPid = 0;

function drainAtExit(): void {
  if (drainAtExitPid === selfPid) return;
  drainAtExitPid = selfPid;
  // Python joins its feeder thread at exit; process.exit() must not drop messages either.
  process.on('exit', () => native.drain());
}

function powerOfTwoAtLeast(n: number): number {
  let p = MIN_RING_BYTES;
  while (p < n) p *= 2;
  return p;
}

// The mapping a queue rebuilt in a starting child takes instead of a new
// ring, and the Queue a SimpleQueue rebuilt there wraps.
let adoptingRing: ArrayBuffer | null = null;
let adoptingQueue: Queue<unknown> | null = null;

/** The machinery shared by the three queue classes. */
class Ring {
  readonly buffer: ArrayBuffer;
  readonly words: Int32Array;
  readonly meta: Int32Array;
  readonly data: Uint8Array;
  readonly dataWords: Int32Array;
  readonly slots: number;
  readonly maxsize: number;
  readonly codec: Codec;
  readonly joinable: boolean;
  #row = NO_ROW;
  #rowPid = 0;
  /** Whether the latest tryPut() of this process woke sleeping consumers. */
  putWoke = false;
  #stride = 0;
  // The native feeder's handle for this queue in this process (-1: none yet).
  #feed = -1;
  #feedPid = 0;
  #feedPending = new Int32Array(1);
  // put() calls of this process still waiting for room in a bounded queue,
  // and the last of them: a later put() waits behind them, so that one
  // process's messages go in the order its calls were made even when nobody
  // awaits them (a Python program's `q.put(x)` in a loop, ported).
  #putsWaiting = 0;
  #putsTail: Promise<void> = Promise.resolve();
  #putsPid = 0;
  // getBytesInto()'s last target, and the memory under it as words.
  #intoView: Uint8Array | null = null;
  #intoWords: Int32Array<ArrayBufferLike> = new Int32Array(0);

  constructor(what: string, options: QueueOptions, joinable: boolean) {
    if (typeof options !== 'object' || options === null) throw invalidType(`${what}: options`, 'an object', options);
    const maxsize = options.maxsize ?? 0;
    checkInteger(`${what}: maxsize`, maxsize, 0, 0x3fffffff);
    const ringBytes = options.ringSize ?? DEFAULT_RING_BYTES;
    checkInteger(`${what}: ringSize`, ringBytes, MIN_RING_BYTES, MAX_RING_BYTES);
    this.codec = codecFor(options.serializer ?? 'msgpack');
    // Large messages travel in segments; they must outlive the producer
    // that made them (see trackerStart in native/tracker.cc).
    native.trackerStart();
    const dataBytes = powerOfTwoAtLeast(ringBytes);
    this.slots = dataBytes / SLOT_SIZE;
    this.maxsize = maxsize;
    this.joinable = joinable;
    const metaBytes = this.slots * META_WORDS * 4;
    this.buffer = adoptingRing ?? native.mapShared(HEADER_SIZE + metaBytes + dataBytes);
    this.words = new Int32Array(this.buffer, 0, HEADER_SIZE / 4);
    this.meta = new Int32Array(this.buffer, HEADER_SIZE, this.slots * META_WORDS);
    this.data = new Uint8Array(this.buffer, HEADER_SIZE + metaBytes, dataBytes);
    this.dataWords = new Int32Array(this.buffer, HEADER_SIZE + metaBytes, dataBytes / 4);
    this.#stride = this.slots / 8;
    if (adoptingRing === null) {
      // Slot i starts out free for position i.
      for (let i = 0; i < this.slots; i++) this.meta[this.metaOf(i) + META_SEQ] = i;
      // Nobody sleeps on a new queue: its first put and first get make no wake-up call.
      this.words[GET_SLEEP_SEQ] = -1;
      this.words[PUT_SLEEP_SEQ] = -1;
    }
  }

  /**
   * Where position `pos`'s metadata is (an index into `meta`). Consecutive
   * slots' metadata lie in different cache lines, a stride apart, so that a
   * consumer handing back one slot does not take from the producer the line
   * it is about to write the next one into (see kQueueMetaSize).
   */
  metaOf(pos: number): number {
    const slot = pos & (this.slots - 1);
    return ((slot & 7) * this.#stride + (slot >>> 3)) * META_WORDS;
  }

  get sideThreshold(): number {
    return this.data.length / 4;
  }

  // ---- the party table ----------------------------------------------------

  /** This process's row (claimed natively, reclaiming a dead process's if need be), or NO_ROW. */
  #myRow(): number {
    if (this.#rowPid === selfPid) return this.#row;
    this.#row = native.queueRow(this.buffer, this.slots);
    this.#rowPid = selfPid;
    return this.#row;
  }

  /** Marks this process's row busy with `kind`: before the count or the compare-and-swap it covers. */
  #busy(kind: number): number {
    const row = this.#myRow();
    if (row === NO_ROW) return -1;
    const base = PARTIES + row * PARTY_WORDS;
    this.words[base + PARTY_KIND] = kind;
    return base;
  }

  #idle(): void {
    if (this.#row !== NO_ROW) this.words[PARTIES + this.#row * PARTY_WORDS + PARTY_KIND] = IDLE;
  }

  /**
   * #idle() after a publish. Recovery takes a row seen idle with its position
   * unpublished for a dead reservation, so no process may see the idle mark
   * before the publish: x86 keeps stores in order (and V8 keeps a plain store
   * after an Atomics.store), other processors need the store to be atomic.
   */
  #idlePublished(): void {
    if (this.#row === NO_ROW) return;
    if (STORES_IN_ORDER) this.words[PARTIES + this.#row * PARTY_WORDS + PARTY_KIND] = IDLE;
    else Atomics.store(this.words, PARTIES + this.#row * PARTY_WORDS + PARTY_KIND, IDLE);
  }

  /** After a wait: one attempt at recovering what a dead process left (see queueRecover). */
  recover(side: typeof CONSUMER | typeof PRODUCER): void {
    native.queueRecover(this.buffer, this.slots, side);
  }

  // ---- putting --------------------------------------------------------------

  /** Reserves, writes and publishes one message; false if there is no room now. */
  tryPut(message: Encoded): boolean {
    const w = this.words;
    const len = message.end - message.start;
    const used = slotsFor(len);
    // Busy before the count: a count changes only under a busy row (see RepairCounts in native/ring.cc).
    const base = this.#busy(PUTTING);
    if (this.maxsize > 0) {
      for (;;) {
        const puts = Atomics.load(w, PUTS);
        if (((puts - Atomics.load(w, GETS)) | 0) >= this.maxsize) {
          this.#idle();
          return false;
        }
        if (Atomics.compareExchange(w, PUTS, puts, (puts + 1) | 0) === puts) break;
      }
    } else {
      Atomics.add(w, PUTS, 1);
    }
    const mask = this.slots - 1;
    const meta = this.meta;
    let pos: number;
    for (;;) {
      pos = Atomics.load(w, TAIL);
      const ahead = this.#ahead(pos, used);
      if (ahead < 0) {
        // The ring is full: a consumer has not handed these slots back yet.
        Atomics.sub(w, PUTS, 1);
        this.#idle();
        return false;
      }
      if (ahead > 0) continue;
      // A plain store: the compare-and-swap that follows orders it before the reservation.
      if (base >= 0) w[base + PARTY_POS] = pos;
      if (Atomics.compareExchange(w, TAIL, pos, (pos + used) | 0) === pos) break;
    }
    this.#copyIn(message, (pos & mask) * SLOT_SIZE, len);
    const i = this.metaOf(pos);
    meta[i + META_INFO] = (message.tag << 24) | len;
    if (this.joinable) Atomics.add(w, UNFINISHED, 1);
    w[PUTTER_CPU] = cpuTag();
    Atomics.store(meta, i + META_SEQ, (pos + 1) | 0);
    this.#idlePublished();
    this.putWoke = this.wakeConsumers();
    return true;
  }

  #copyIn(message: Encoded, at: number, len: number): void {
    const { body, start } = message;
    const data = this.data;
    if (len <= LOOP_COPY_MAX) {
      for (let k = 0; k < len; k++) data[at + k] = body[start + k];
      return;
    }
    const bytes = start === 0 && len === body.length ? body : body.subarray(start, start + len);
    const room = data.length - at;
    if (len <= room) data.set(bytes, at);
    else {
      data.set(bytes.subarray(0, room), at);
      data.set(bytes.subarray(room), 0);
    }
  }

  /**
   * Wakes every consumer asleep on the current PUT_SEQ, once: when no consumer
   * went to sleep since the last bump, there is nobody to wake (see
   * kQueueGetSleepSeq in native/layout.h; the feeder does the same). True
   * if it woke them.
   */
  wakeConsumers(): boolean {
    const w = this.words;
    const seq = Atomics.load(w, PUT_SEQ);
    if (Atomics.load(w, GET_SLEEP_SEQ) !== seq) return false;
    if (Atomics.compareExchange(w, PUT_SEQ, seq, (seq + 1) | 0) !== seq) return false;
    native.futexWake(this.buffer, PUT_SEQ * 4, 0x7fffffff);
    return true;
  }

  consumersAsleep(): boolean {
    const w = this.words;
    return Atomics.load(w, GET_SLEEP_SEQ) === Atomics.load(w, PUT_SEQ);
  }

  /** As wakeConsumers, for producers asleep on GET_SEQ (kQueuePutSleepSeq). */
  #wakeProducers(): void {
    const w = this.words;
    const seq = Atomics.load(w, GET_SEQ);
    if (Atomics.load(w, PUT_SLEEP_SEQ) !== seq) return;
    if (Atomics.compareExchange(w, GET_SEQ, seq, (seq + 1) | 0) === seq) native.futexWake(this.buffer, GET_SEQ * 4, 0x7fffffff);
  }

  // ---- getting --------------------------------------------------------------

  /**
   * Takes the head message if one is published; NOTHING otherwise. With
   * `into`, the message must be bytes; they are written there from `offset`
   * and their length is returned.
   */
  tryGet(into: Uint8Array | null = null, offset = 0): unknown {
    const w = this.words;
    const meta = this.meta;
    let base = -2;
    for (;;) {
      const pos = Atomics.load(w, HEAD);
      const i = this.metaOf(pos);
      const ahead = (Atomics.load(meta, i + META_SEQ) - ((pos + 1) | 0)) | 0;
      if (ahead < 0) {
        if (base !== -2) this.#idle();
        return NOTHING;
      }
      if (ahead > 0) continue;
      const info = meta[i + META_INFO];
      const len = info & LENGTH_MASK;
      const tag = info >>> 24;
      if (into !== null && (tag & ~SIDE) !== BYTES && tag !== SKIP) {
        if (base !== -2) this.#idle();
        // Left where it is: a consumer that takes values with get() may come for it.
        throw notBytes();
      }
      const used = slotsFor(len);
      if (base === -2) base = this.#busy(GETTING);
      // A plain store: the compare-and-swap that follows orders it before the claim.
      if (base >= 0) w[base + PARTY_POS] = pos;
      if (Atomics.compareExchange(w, HEAD, pos, (pos + used) | 0) !== pos) continue;
      let value: unknown = NOTHING;
      try {
        if (tag !== SKIP) value = into === null ? this.#read(pos, tag, len) : this.#readInto(pos, tag, len, into, offset);
      } finally {
        w[GETTER_CPU] = cpuTag();
        // Count first: a producer woken by the release must find the room.
        Atomics.add(w, GETS, 1);
        // Counted: recovery after this process's death must not count it again.
        if (base >= 0) w[base + PARTY_KIND] = RELEASING;
        this.#release(pos, used);
        this.#idle();
      }
      if (tag === SKIP) {
        base = -2;
        continue;
      }
      return value;
    }
  }

  #read(pos: number, tag: number, len: number): unknown {
    const start = (pos & (this.slots - 1)) * SLOT_SIZE;
    const room = this.data.length - start;
    if (len <= room && (tag & SIDE) === 0) return decodeRange(tag, this.data, start, start + len);
    let body: Uint8Array;
    if (len <= room) body = this.data.subarray(start, start + len);
    else {
      body = new Uint8Array(len);
      body.set(this.data.subarray(start), 0);
      body.set(this.data.subarray(0, len - room), room);
    }
    if ((tag & SIDE) === 0) return decode(tag, body);
    const shm = new SharedMemory({ name: Buffer.from(body).toString('utf8') });
    try {
      return decode(tag & ~SIDE, shm.buf.subarray(0, shm.size));
    } finally {
      shm.close();
      shm.unlink();
    }
  }

  #readInto(pos: number, tag: number, len: number, into: Uint8Array, offset: number): number {
    const space = into.length - offset;
    if ((tag & SIDE) !== 0 || len > space) {
      const data = this.#read(pos, tag, len) as Buffer;
      if (data.length > space) {
        throw new BufferTooShort(`Queue.getBytesInto(): the message is ${data.length} bytes long; the buffer has ${space} from offset ${offset}`, data);
      }
      into.set(data, offset);
      return data.length;
    }
    const at = (pos & (this.slots - 1)) * SLOT_SIZE;
    const room = this.data.length - at;
    const to = into.byteOffset + offset;
    if (len <= WORD_COPY_MAX && len <= room && (to & 3) === 0) {
      // Slots start on 64-byte boundaries: whole words, then the odd bytes.
      const words = this.#wordsOf(into, to + len);
      const from = at >> 2;
      const n = len >> 2;
      for (let k = 0; k < n; k++) words[(to >> 2) + k] = this.dataWords[from + k];
      for (let k = n << 2; k < len; k++) into[offset + k] = this.data[at + k];
    } else if (len <= room) copyBytes.call(this.data, into, offset, at, at + len);
    else {
      copyBytes.call(this.data, into, offset, at, at + room);
      copyBytes.call(this.data, into, offset + room, 0, len - room);
    }
    return len;
  }

  /**
   * An Int32Array over the memory under `view`, up to byte `bytes` at least,
   * kept for the next call with the same view (reading `.buffer` is a call
   * into C++; a resizable buffer may have grown since).
   */
  #wordsOf(view: Uint8Array, bytes: number): Int32Array<ArrayBufferLike> {
    if (this.#intoView !== view || this.#intoWords.length * 4 < bytes) {
      const buffer = view.buffer;
      this.#intoWords = new Int32Array(buffer, 0, buffer.byteLength >> 2);
      this.#intoView = view;
    }
    return this.#intoWords;
  }

  /**
   * Hands a message's slots back, the last first: producers reserve in
   * order, so none can reuse a later slot before the first is back, and a
   * consumer killed halfway leaves nothing that recoverSlot(), giving all of
   * them back again, could undo.
   */
  #release(pos: number, used: number): void {
    for (let j = used - 1; j >= 0; j--) {
      const p = (pos + j) | 0;
      Atomics.store(this.meta, this.metaOf(p) + META_SEQ, (p + this.slots) | 0);
    }
    this.#wakeProducers();
  }

  // ---- waiting --------------------------------------------------------------

  /** `checksBefore`: owner checks already made by getAsync() (see publishedSteps). */
  *getSteps(deadline: number, into: Uint8Array | null = null, offset = 0, checksBefore = 0): Steps<unknown> {
    for (let before = checksBefore; ; before = 0) {
      const value = this.tryGet(into, offset);
      if (value !== NOTHING) return value;
      if (this.shutDown !== RUNNING) throw new ShutDown('the queue was shut down and nothing is left to take');
      if (deadline === -Infinity) throw new QueueEmpty();
      if (!(yield* this.publishedSteps(deadline, true, undefined, before))) throw new QueueEmpty(`the queue stayed empty for the whole timeout`);
    }
  }

  /**
   * getSteps() on the event loop, up to the end of its first sleep, taken
   * without them: the spin and the sleep as publishedSteps() makes them
   * first, the sleep's callback taking the message. What else a sleep may
   * end in (a timeout and its owner check, a message another consumer took,
   * a shutdown) goes on in getSteps(). With the generators, the promise each
   * sleep of runAsync() makes and its await, an await get() ping-pong
   * between two processes on one CPU took a median 25.4 us a round trip;
   * this way, 24.2 (15 runs of each in alternation, the loop-stall guard's
   * Set still in place in both).
   */
  getAsync(deadline: number, into: Uint8Array | null = null, offset = 0): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const rest = (checksBefore: number): void => {
        runAsync(this.getSteps(deadline, into, offset, checksBefore)).then(resolve, reject);
      };
      const take = (): void => {
        const value = this.tryGet(into, offset);
        if (value !== NOTHING) resolve(value);
        else rest(0);
      };
      const woke = (result: number): void => {
        try {
          if (result !== TIMED_OUT) take();
          else {
            this.recover(CONSUMER);
            rest(1);
          }
        } catch (error) {
          reject(error);
        }
      };
      if (deadline === -Infinity || this.shutDown !== RUNNING) {
        rest(0);
        return;
      }
      const was = setLoopWait(true);
      try {
        if (this.#spinForMessage()) {
          take();
          return;
        }
      } finally {
        setLoopWait(was);
      }
      if (timeLeft(deadline) === 0) {
        rest(0);
        return;
      }
      const seq = Atomics.load(this.words, PUT_SEQ);
      this.#announceSleep(GET_SLEEP_SEQ, seq);
      if (this.#headPublished() || this.shutDown !== RUNNING) take();
      else sleepThen(sleep(this.buffer, PUT_SEQ * 4, seq, slice(deadline, OWNER_CHECK_MS)), woke, reject);
    });
  }

  /**
   * Until the head message looks published (true), or the deadline passes
   * (false); takes nothing. `checksBefore`: owner checks made before these
   * steps began (a first sleep of getAsync() that timed out and checked).
   */
  *publishedSteps(deadline: number, spin = true, ready?: () => boolean, checksBefore = 0): Steps<boolean> {
    const w = this.words;
    // After a whole owner check of nothing, a message is not microseconds
    // away: no spin. And once a check has found the ring empty and put its
    // counts right, the next ones have nothing to do until a producer
    // reserves the head (and dies before it publishes) or a count goes
    // astray: recovery reads every row's process (a tenth of a millisecond,
    // cold), which an idle consumer should not pay ten times a second. Nor
    // the wake-up itself, a fifth of a millisecond of CPU here: while the
    // ring stays empty the checks come further apart, up to a second.
    let checkMs = OWNER_CHECK_MS;
    for (let checks = checksBefore; ; checks++) {
      if (checks > 0 || !spin ? this.#headPublished() : this.#spinForMessage(ready)) return true;
      if (ready?.()) return true;
      if (timeLeft(deadline) === 0) return false;
      const seq = Atomics.load(w, PUT_SEQ);
      this.#announceSleep(GET_SLEEP_SEQ, seq);
      // After the announcement: news written before it is seen here, news written after it finds the announcement and wakes.
      if (this.#headPublished() || ready?.() || this.shutDown !== RUNNING) return true;
      const result = yield sleep(this.buffer, PUT_SEQ * 4, seq, slice(deadline, checkMs));
      if (result !== TIMED_OUT) return true;
      if (checks === 0 || Atomics.load(w, TAIL) !== Atomics.load(w, HEAD) || this.count() !== 0) {
        this.recover(CONSUMER);
        checkMs = OWNER_CHECK_MS;
      } else {
        checkMs = Math.min(checkMs * 2, IDLE_CHECK_MAX_MS);
      }
    }
  }

  /** at = seq, unless a sleeper already announced a newer one (it must never go back). */
  #announceSleep(at: number, seq: number): void {
    const w = this.words;
    for (;;) {
      const cur = Atomics.load(w, at);
      if (((seq - cur) | 0) <= 0 || Atomics.compareExchange(w, at, cur, seq) === cur) return;
    }
  }

  #headPublished(): boolean {
    const pos = Atomics.load(this.words, HEAD);
    const seq = Atomics.load(this.meta, this.metaOf(pos) + META_SEQ);
    return ((seq - pos) | 0) > 0;
  }

  #spinForMessage(ready?: () => boolean): boolean {
    const first = firstReads();
    let limit = first;
    for (let i = 0; i < limit; i++) {
      if (this.#headPublished() || ready?.()) return true;
      if (i === first - 1) limit = Math.max(limit, spinLimit(Atomics.load(this.words, PUTTER_CPU)));
    }
    return false;
  }

  /**
   * Room for `raw` (from encode()), or this producer sleeps until consumers
   * make some. A large message goes into its segment only once there is room
   * for it in the ring, so a producer killed while it waits leaves none behind.
   */
  *putSteps(raw: Encoded, deadline: number): Steps<void> {
    const w = this.words;
    let placed: Encoded | null = null;
    try {
      for (;;) {
        this.checkPut();
        if (placed === null && this.#roomFor(this.#placedLength(raw))) placed = this.#place(raw);
        if (placed !== null && this.tryPut(placed)) {
          placed = null;
          return;
        }
        if (deadline === -Infinity) throw new QueueFull();
        if (timeLeft(deadline) === 0) throw new QueueFull('the queue stayed full for the whole timeout');
        const seq = Atomics.load(w, GET_SEQ);
        this.#announceSleep(PUT_SLEEP_SEQ, seq);
        if (this.#roomFor(this.#placedLength(raw)) || this.shutDown !== RUNNING) continue;
        const result = yield sleep(this.buffer, GET_SEQ * 4, seq, slice(deadline, OWNER_CHECK_MS));
        if (result === TIMED_OUT) this.recover(PRODUCER);
      }
    } finally {
      if (placed !== null) this.#discard(placed);
    }
  }

  /** tryPut() of `raw` (from encode()), placing a large one only if there is room for it; false if there is none. */
  tryPutRaw(raw: Encoded): boolean {
    if (raw.end - raw.start <= this.sideThreshold) return this.tryPut(raw);
    if (!this.#roomFor(SLOT_SIZE)) return false;
    const placed = this.#place(raw);
    if (this.tryPut(placed)) return true;
    this.#discard(placed);
    return false;
  }

  /**
   * For the `used` slots from position `pos`: 0 if all are free for it, < 0
   * if one is still held from the previous lap (the ring is full), > 0 if
   * someone reserved past `pos` meanwhile.
   */
  #ahead(pos: number, used: number): number {
    let ahead = 0;
    for (let j = 0; j < used && ahead === 0; j++) {
      const p = (pos + j) | 0;
      ahead = (Atomics.load(this.meta, this.metaOf(p) + META_SEQ) - p) | 0;
    }
    return ahead;
  }

  #roomFor(len: number): boolean {
    if (this.maxsize > 0 && this.count() >= this.maxsize) return false;
    return this.#ahead(Atomics.load(this.words, TAIL), slotsFor(len)) >= 0;
  }

  // ---- shutting down --------------------------------------------------------

  /** kQueueShutdown: RUNNING, SHUT_DOWN or IMMEDIATE. */
  get shutDown(): number {
    // A plain read: the word only ever grows, and every put reads it.
    return this.words[SHUTDOWN];
  }

  checkPut(): void {
    if (this.shutDown !== RUNNING) throw new ShutDown('the queue was shut down: it takes no more messages');
  }

  shutdown(immediate: boolean): void {
    const w = this.words;
    const next = immediate ? IMMEDIATE : SHUT_DOWN;
    for (;;) {
      const cur = Atomics.load(w, SHUTDOWN);
      if (cur >= next || Atomics.compareExchange(w, SHUTDOWN, cur, next) === cur) break;
    }
    if (immediate) this.#drain();
    // Every sleeper wakes and finds the word: producers throw, consumers take what is left or throw.
    Atomics.add(w, PUT_SEQ, 1);
    native.futexWake(this.buffer, PUT_SEQ * 4, 0x7fffffff);
    Atomics.add(w, GET_SEQ, 1);
    native.futexWake(this.buffer, GET_SEQ * 4, 0x7fffffff);
  }

  /** Takes every message in the ring and drops it; a JoinableQueue counts them as done. */
  #drain(): void {
    let taken = 0;
    for (;;) {
      let value: unknown;
      try {
        value = this.tryGet();
      } catch {
        // One that cannot be decoded is taken all the same.
        taken++;
        continue;
      }
      if (value === NOTHING) break;
      taken++;
    }
    if (!this.joinable || taken === 0) return;
    const w = this.words;
    for (;;) {
      const left = Atomics.load(w, UNFINISHED);
      const rest = Math.max(0, left - taken);
      if (Atomics.compareExchange(w, UNFINISHED, left, rest) !== left) continue;
      if (rest === 0 && left > 0 && Atomics.load(w, JOIN_SLEEPERS) > 0) native.futexWake(this.buffer, UNFINISHED * 4, 0x7fffffff);
      return;
    }
  }

  // ---- encoding -------------------------------------------------------------

  /**
   * The message's bytes: bytes as they are, values encoded. One larger than
   * sideThreshold goes into the ring as the name of a segment it is written
   * to, made at the last moment (#place, or the feeder's Place).
   */
  encode(value: unknown): Encoded {
    if (value instanceof Uint8Array) return { tag: BYTES, body: value, start: 0, end: value.length };
    const codec = this.codec;
    if (codec.serializer === 'msgpack') {
      const small = encodeSmall(value);
      if (small !== null) return small;
    }
    const body = codec.encodeRange(value);
    return { tag: codec.tag, body, start: codec.start, end: codec.end };
  }

  /** How many bytes `raw` takes in the ring: its own, or a segment name's (one slot). */
  #placedLength(raw: Encoded): number {
    const len = raw.end - raw.start;
    return len <= this.sideThreshold ? len : SLOT_SIZE;
  }

  /** `raw` as it goes into the ring: a large message as the name of a new segment that holds it. */
  #place(raw: Encoded): Encoded {
    const { tag, body, start, end } = raw;
    if (end - start <= this.sideThreshold) return raw;
    const shm = new SharedMemory({ create: true, size: Math.max(1, end - start) });
    shm.buf.set(body.subarray(start, end));
    const name = Buffer.from(shm.name, 'utf8');
    shm.close();
    return { tag: tag | SIDE, body: name, start: 0, end: name.length };
  }

  /** The message's bytes, in memory of their own (they may wait while the caller's buffer changes). */
  detach(message: Encoded): Encoded {
    return { ...message, body: message.body.slice(message.start, message.end), start: 0, end: message.end - message.start };
  }

  /** Whether a put() of this process still waits for room (a forked child starts with none). */
  putsWaiting(): boolean {
    if (this.#putsPid !== selfPid) {
      this.#putsPid = selfPid;
      this.#putsWaiting = 0;
      this.#putsTail = Promise.resolve();
    }
    return this.#putsWaiting > 0;
  }

  /** put() of a bounded queue that found no room, or found earlier put() calls waiting: in call order. */
  putInTurn(message: Encoded, deadline: number): Promise<void> {
    this.putsWaiting();
    this.#putsWaiting++;
    const mine = this.#putsTail.then(() => runAsync(this.putSteps(message, deadline)));
    const settled = mine.then(
      () => {
        this.#putsWaiting--;
      },
      () => {
        this.#putsWaiting--;
      },
    );
    this.#putsTail = settled;
    return mine;
  }

  /** A placed message that was never put: removes the segment a large one was written to. */
  #discard(message: Encoded): void {
    if ((message.tag & SIDE) !== 0) native.shmUnlink(Buffer.from(message.body).toString('utf8'));
  }

  // ---- the unbounded queue's overflow --------------------------------------

  /**
   * put() of an unbounded queue: into the ring if it fits and nothing of this
   * process waits before it; otherwise behind the others, on the native
   * feeder thread, which delivers them in order as consumers make room, even
   * while this thread is blocked. `loop`: called from the event loop (put()),
   * whose room spin is bounded as its waits' are (lib/spin.ts spinLimitFor).
   */
  putUnbounded(message: Encoded, loop = false): void {
    if (this.#feedPid !== selfPid) {
      // A feed made by the parent carries the parent's party row.
      this.#feed = -1;
      this.#feedPid = selfPid;
    }
    if (this.#feed < 0 || Atomics.load(this.#feedPending, 0) === 0) {
      // A busy consumer usually makes room within microseconds; handing the
      // message to the feeder thread costs more than waiting for that. A
      // large message is written to its segment once, when there is room.
      const need = this.#placedLength(message);
      let placed = message.end - message.start <= this.sideThreshold ? message : null;
      let limit = FIRST_READS;
      for (let i = 0; i <= limit; i++) {
        if (i === FIRST_READS && i > 0) limit = Math.max(limit, spinLimit(Atomics.load(this.words, GETTER_CPU), loop));
        if ((placed === null || i > 0) && !this.#roomFor(need)) continue;
        placed ??= this.#place(message);
        if (this.tryPut(placed)) return;
      }
      if (placed !== null && placed !== message) this.#discard(placed);
    }
    if (this.#feed < 0) {
      const { handle, pending } = native.feedOpen(this.buffer, this.slots, this.joinable);
      this.#feed = handle;
      this.#feedPending = new Int32Array(pending);
    }
    drainAtExit();
    // A large message is handed over as its bytes: the feeder writes its segment when its turn comes.
    native.feed(this.#feed, this.buffer, message.tag, message.body.subarray(message.start, message.end), message.end - message.start > this.sideThreshold);
  }

  get buffered(): number {
    return this.#feed >= 0 && this.#feedPid === selfPid ? Atomics.load(this.#feedPending, 0) : 0;
  }

  /** Messages in the ring (or reserved there), by the two sides' counters. */
  count(): number {
    return Math.max(0, (Atomics.load(this.words, PUTS) - Atomics.load(this.words, GETS)) | 0);
  }

  qsize(): number {
    return this.count() + this.buffered;
  }
}

export interface PutOptions extends WaitOptions {}

/**
 * A FIFO queue shared by every process forked after its creation. put()
 * never blocks an unbounded queue (messages that do not fit wait in this
 * process and follow in order); a bounded one blocks, times out with
 * QueueFull, or throws QueueFull at once with `{ block: false }`.
 */
export class Queue<T = unknown> {
  readonly #ring: Ring;
  #closedBy = 0;

  constructor(options: QueueOptions = {}) {
    this.#ring = new Ring(`${new.target.name}()`, options, new.target === JoinableQueue);
  }

  protected get ring(): Ring {
    return this.#ring;
  }

  /**
   * The ring and what a process needs to use it. The child starts as a forked
   * one does: with no party row (it claims one, by its own pid and start
   * time, on first use), no feeder, and the queue open.
   */
  [toChild](child: ChildEncoder): State {
    const ring = this.#ring;
    return [child.memory(ring.buffer), ring.slots, ring.maxsize, ring.codec.serializer];
  }

  static [fromParent]<T>(this: new (options: QueueOptions) => T, [memory, slots, maxsize, serializer]: State, parent: ChildDecoder): T {
    adoptingRing = parent.memory(memory as number);
    try {
      return new this({ maxsize: maxsize as number, serializer: serializer as Serializer, ringSize: (slots as number) * SLOT_SIZE });
    } finally {
      adoptingRing = null;
    }
  }

  #open(call: string): Ring {
    if (this.#closedBy === selfPid) throw new ClosedError(`${this.constructor.name}.${call}: the queue is closed in this process`);
    return this.#ring;
  }

  /** Puts a message; resolves once it is in the queue (or buffered, for an unbounded queue). */
  put(item: T, options?: PutOptions): Promise<void> {
    try {
      const ring = this.#open('put()');
      const deadline = options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.put`, options);
      ring.checkPut();
      const message = ring.encode(item);
      if (ring.maxsize === 0) {
        ring.putUnbounded(message, true);
        return Promise.resolve();
      }
      if (!ring.putsWaiting() && ring.tryPutRaw(message)) return Promise.resolve();
      return ring.putInTurn(ring.detach(message), deadline);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Puts a message, blocking while a bounded queue is full. */
  putSync(item: T, options?: PutOptions): void {
    const ring = this.#open('putSync()');
    const deadline = options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.putSync`, options);
    ring.checkPut();
    const message = ring.encode(item);
    if (ring.maxsize === 0) {
      ring.putUnbounded(message);
      return;
    }
    runSync(ring.putSteps(message, deadline));
  }

  /** putSync(item, { block: false }): throws QueueFull if a bounded queue is full. */
  putNowait(item: T): void {
    this.putSync(item, { block: false });
  }

  /** Takes the oldest message; rejects with QueueEmpty after the timeout. */
  get(options?: WaitOptions): Promise<T> {
    try {
      const ring = this.#open('get()');
      const value = ring.tryGet();
      if (value !== NOTHING) return Promise.resolve(value as T);
      const deadline = options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.get`, options);
      return ring.getAsync(deadline) as Promise<T>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Takes the oldest message, blocking until there is one (or QueueEmpty after the timeout). */
  getSync(options?: WaitOptions): T {
    const ring = this.#open('getSync()');
    const value = ring.tryGet();
    if (value !== NOTHING) return value as T;
    return runSync(ring.getSteps(options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.getSync`, options))) as T;
  }

  /**
   * Takes the oldest message, which must have been put as a Buffer or
   * Uint8Array, into `buf` from byte `offset`, and resolves with its length:
   * no Buffer is made for it, which is most of what a small message costs.
   * One that does not fit rejects with BufferTooShort, whose `data` holds it
   * (it is taken); one put as a value rejects with a TypeError
   * (ERR_QUEUE_NOT_BYTES) and stays in the queue.
   */
  getBytesInto(buf: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, offset?: number, options?: WaitOptions): Promise<number> {
    try {
      const ring = this.#open('getBytesInto()');
      const into = buf instanceof Uint8Array ? buf : bytesOf(`${this.constructor.name}.getBytesInto`, buf);
      const at = offset === undefined ? 0 : checkOffset(`${this.constructor.name}.getBytesInto`, offset, into.length);
      const length = ring.tryGet(into, at);
      if (length !== NOTHING) return Promise.resolve(length as number);
      const deadline = options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.getBytesInto`, options);
      return ring.getAsync(deadline, into, at) as Promise<number>;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** getBytesInto(), blocking until there is a message (or QueueEmpty after the timeout). */
  getBytesIntoSync(buf: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, offset?: number, options?: WaitOptions): number {
    const ring = this.#open('getBytesIntoSync()');
    const into = buf instanceof Uint8Array ? buf : bytesOf(`${this.constructor.name}.getBytesIntoSync`, buf);
    const at = offset === undefined ? 0 : checkOffset(`${this.constructor.name}.getBytesIntoSync`, offset, into.length);
    const length = ring.tryGet(into, at);
    if (length !== NOTHING) return length as number;
    const deadline = options === undefined ? Infinity : deadlineOf(`${this.constructor.name}.getBytesIntoSync`, options);
    return runSync(ring.getSteps(deadline, into, at)) as number;
  }

  /** getSync({ block: false }): throws QueueEmpty if nothing is there. */
  getNowait(): T {
    return this.getSync({ block: false });
  }

  /** About how many messages are in the queue (exact when nothing moves). */
  qsize(): number {
    return this.#open('qsize()').qsize();
  }

  empty(): boolean {
    return this.#open('empty()').qsize() === 0;
  }

  full(): boolean {
    const ring = this.#open('full()');
    return ring.maxsize > 0 && ring.qsize() >= ring.maxsize;
  }

  get maxsize(): number {
    return this.#ring.maxsize;
  }

  /**
   * This process will put and get no more: later calls here throw
   * ClosedError. Messages it buffered still reach the queue (before exit at
   * the latest); other processes are not affected.
   */
  close(): void {
    this.#closedBy = selfPid;
  }

  /**
   * Shuts the queue down for every process (Python 3.13's Queue.shutdown):
   * later puts throw ShutDown, and so do gets once nothing is left to take;
   * callers blocked in put() or get() wake and do the same. With `{
   * immediate: true }` the messages in the queue are dropped as well (a
   * JoinableQueue counts them as done, so join() returns). Messages a
   * process's unbounded put() was still holding reach the queue afterwards.
   */
  shutdown(options: { immediate?: boolean } = {}): void {
    if (typeof options !== 'object' || options === null) {
      throw invalidType(`${this.constructor.name}.shutdown(options)`, 'an object like { immediate }', options);
    }
    const { immediate = false } = options;
    if (typeof immediate !== 'boolean') throw invalidType(`${this.constructor.name}.shutdown: options.immediate`, 'a boolean', immediate);
    this.#ring.shutdown(immediate);
  }

  /** Whether shutdown() was called, in any process. */
  get isShutDown(): boolean {
    return this.#ring.shutDown !== RUNNING;
  }

  /** Blocks until every message this process buffered is in the ring (Python's join_thread()). */
  joinThread(): void {
    native.drain();
  }

  [TAKE](): unknown {
    return this.#open('getNowait()').tryGet();
  }

  [READABLE](spin: boolean, deadline: number, ready?: () => boolean): Steps<boolean> {
    return this.#open('get()').publishedSteps(deadline, spin, ready);
  }

  [WAKE_TAKERS](): boolean {
    return this.#open('put()').wakeConsumers();
  }

  [PUT_WOKE](): boolean {
    return this.#ring.putWoke;
  }

  [TAKERS_ASLEEP](): boolean {
    return this.#ring.consumersAsleep();
  }

  /** The shared ring, for diagnostics and the crash tests: { buffer, slots }. */
  [Symbol.for('nodemp.queue.ring')](): { buffer: ArrayBuffer; slots: number } {
    return { buffer: this.#ring.buffer, slots: this.#ring.slots };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `${this.constructor.name} { size: ${this.#ring.qsize()}${this.#ring.maxsize ? `, maxsize: ${this.#ring.maxsize}` : ''} }`;
  }
}

/** A Queue that counts unfinished tasks: taskDone() after each get, join() until all are done. */
export class JoinableQueue<T = unknown> extends Queue<T> {
  /** Marks one message taken with get() as processed. */
  taskDone(): void {
    const w = this.ring.words;
    for (;;) {
      const left = Atomics.load(w, UNFINISHED);
      if (left <= 0) throw new SyncError('ERR_TOO_MANY_TASK_DONE', 'JoinableQueue.taskDone(): called more times than there were messages');
      if (Atomics.compareExchange(w, UNFINISHED, left, left - 1) === left) {
        if (left === 1 && Atomics.load(w, JOIN_SLEEPERS) > 0) native.futexWake(this.ring.buffer, UNFINISHED * 4, 0x7fffffff);
        return;
      }
    }
  }

  *#joinSteps(deadline: number): Steps<boolean> {
    const w = this.ring.words;
    Atomics.add(w, JOIN_SLEEPERS, 1);
    try {
      for (;;) {
        const left = Atomics.load(w, UNFINISHED);
        if (left === 0) return true;
        if (timeLeft(deadline) === 0) return false;
        yield sleep(this.ring.buffer, UNFINISHED * 4, left, timeLeft(deadline));
      }
    } finally {
      Atomics.sub(w, JOIN_SLEEPERS, 1);
    }
  }

  /** Resolves true once every message put has been marked done (false if `timeout` ms pass first). */
  join(timeout?: number): Promise<boolean> {
    return runAsyncFrom(() => this.#joinSteps(deadlineAfter('JoinableQueue.join', timeout)));
  }

  joinSync(timeout?: number): boolean {
    return runSync(this.#joinSteps(deadlineAfter('JoinableQueue.joinSync', timeout)));
  }
}

/** Python's SimpleQueue: an unbounded queue with put, get, empty and close only. */
export class SimpleQueue<T = unknown> {
  readonly #queue: Queue<T>;
  #closedBy = 0;

  constructor(options: Pick<QueueOptions, 'serializer' | 'ringSize'> = {}) {
    this.#queue = (adoptingQueue as Queue<T> | null) ?? new Queue<T>({ ...options, maxsize: 0 });
  }

  [toChild](): State {
    return [this.#queue];
  }

  static [fromParent]([queue]: State): SimpleQueue {
    adoptingQueue = queue as Queue<unknown>;
    try {
      return new SimpleQueue();
    } finally {
      adoptingQueue = null;
    }
  }

  // Checked here as well, so that the error names this class rather than the Queue inside.
  #open(call: string): Queue<T> {
    if (this.#closedBy === selfPid) throw new ClosedError(`SimpleQueue.${call}: the queue is closed in this process`);
    return this.#queue;
  }

  put(item: T): void {
    this.#open('put()').putSync(item);
  }

  get(): Promise<T> {
    try {
      return this.#open('get()').get();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  getSync(): T {
    return this.#open('getSync()').getSync();
  }

  empty(): boolean {
    return this.#open('empty()').empty();
  }

  /** This process will put and get no more: later calls here throw ClosedError. */
  close(): void {
    this.#closedBy = selfPid;
    this.#queue.close();
  }
}
