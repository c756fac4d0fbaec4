// How values cross processes (Queue, Connection). msgpackr's structured-clone
// mode keeps Maps, cycles and shared references, but its per-message record
// definitions cost about 800 ns for a tiny object here; its plain mode costs
// about 300 ns and is exact for trees of plain objects, arrays, primitives,
// BigInt, Date, RegExp, Error and typed arrays. A bounded walk picks the plain
// mode when it is exact and the structured one otherwise; the first byte of
// every encoding says which decoder to use. `node:v8` is there for exact
// structured-clone fidelity (class-less copies of anything v8 can clone).
import { Packr, REUSE_BUFFER_MODE, addExtension } from 'msgpackr';
import { deserialize, serialize } from 'node:v8';
import { invalidType } from './args.js';
import { SerializationError, errorState, ownErrorClasses, reviveError, type ErrorState } from './errors.js';

export type Serializer = 'msgpack' | 'v8';

const PLAIN = 1;
const STRUCTURED = 2;
const V8 = 3;

const plain = new Packr({ useRecords: false, moreTypes: true, mapsAsObjects: true, copyBuffers: true });
const structured = new Packr({ structuredClone: true, copyBuffers: true });

// Larger graphs go to the structured encoder without further looking.
const WALK_LIMIT = 256;

/**
 * Whether the plain encoder reproduces `value` exactly: no Map, Set, cycle or
 * shared reference. Throws SerializationError for what no codec can copy
 * (msgpackr would turn a function into undefined without a word).
 */
function plainEnough(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) {
    checkCopyable(value);
    return true;
  }
  if (chainPlain(value, 0)) return true;
  let plain = true;
  const seen: object[] = [];
  const stack: object[] = [value];
  while (stack.length > 0) {
    const item = stack.pop() as object;
    if (seen.includes(item)) {
      plain = false;
      continue;
    }
    seen.push(item);
    if (seen.length > WALK_LIMIT) return false;
    if (item instanceof WeakMap || item instanceof WeakSet || item instanceof WeakRef || item instanceof Promise) {
      throw new SerializationError(`nodemp: a ${item.constructor.name} cannot be sent to another process`);
    }
    let values: Iterable<unknown>;
    if (item instanceof Map) {
      plain = false;
      values = [...item.keys(), ...item.values()];
    } else if (item instanceof Set) {
      plain = false;
      values = item;
    } else if (ArrayBuffer.isView(item) || item instanceof Date || item instanceof RegExp || item instanceof Error) continue;
    else values = Array.isArray(item) ? item : Object.values(item);
    for (const v of values) {
      if (typeof v === 'object' && v !== null) stack.push(v);
      else checkCopyable(v);
    }
  }
  return plain;
}

function functionRefused(fn: Function): SerializationError {
  return new SerializationError(
    `nodemp: a function (${fn.name || 'anonymous'}) cannot be sent to another process; send data, or pass the function itself to Pool/Process`,
  );
}

function checkCopyable(v: unknown): void {
  if (typeof v === 'function') throw functionRefused(v);
  if (typeof v === 'symbol') throw new SerializationError(`nodemp: a symbol (${String(v)}) cannot be sent to another process`);
}

// ---- nodemp's own objects in a message ------------------------------------
//
// A Lock, a Queue, a Value... lives in shared memory that a message cannot
// carry: copied field by field it would arrive as a dead husk. As in Python
// ("Lock objects should only be shared between processes through
// inheritance"), putting one in a message is an error. A SharedMemory (and a
// ShareableList) crosses by name, as Python pickles it: the receiver attaches
// to the same segment. nodemp's errors cross as themselves, with their fields.
// Each such class carries CROSSING on its prototype; one msgpackr extension
// recognises them all by that mark, so messages without them pay nothing.

const CROSSING = Symbol('nodemp.crossing');
const INHERITED = 0;
const BY_NAME = 1;
const ERROR = 2;
// On the wire only: what a starting child's hooks wrote.
const TO_CHILD = 3;

/** Marks classes whose instances must not be put in a message: they are shared by inheritance only. */
export function sharedByInheritance(...classes: Array<{ readonly prototype: object }>): void {
  for (const Class of classes) Object.defineProperty(Class.prototype, CROSSING, { value: INHERITED });
}

const NAME_OF = Symbol('nodemp.nameOf');
const attachers = new Map<string, (name: string) => unknown>();
// The kinds decodeUntrusted() attaches; any other is refused there.
const untrustedKinds = new Set<string>();

/**
 * Marks `Class` as crossing by name: the message carries `nameOf(obj)`, and
 * the receiver gets `attach(name)`. `fromUntrusted`: decodeUntrusted() may
 * attach it too.
 */
export function sharedByName<T extends object>(
  Class: abstract new (...args: never[]) => T,
  nameOf: (obj: T) => string,
  attach: (name: string) => T,
  fromUntrusted = false,
): void {
  Object.defineProperty(Class.prototype, CROSSING, { value: BY_NAME });
  Object.defineProperty(Class.prototype, NAME_OF, { value: { kind: Class.name, nameOf } });
  attachers.set(Class.name, attach);
  if (fromUntrusted) untrustedKinds.add(Class.name);
}

// While decodeUntrusted() runs.
let untrusted = false;

/** Whether the value being decoded comes from an untrusted peer (decodeUntrusted()). */
export function decodingUntrusted(): boolean {
  return untrusted;
}

for (const Class of ownErrorClasses) Object.defineProperty(Class.prototype, CROSSING, { value: ERROR });

function inheritedOnly(obj: object): SerializationError {
  const name = obj.constructor.name;
  return new SerializationError(
    `nodemp: ${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name} cannot be put in a Queue or sent through a Pipe: it lives in shared memory that a message cannot carry. ` +
      `Create it before start() and pass it to the process in args (or let the target capture it), or to a Pool in initargs`,
  );
}

// ---- what a starting child is given ------------------------------------
//
// A child started by spawn or forkserver is given its arguments encoded
// (lib/start/descriptors.ts), and there, as Python allows while a process is
// being started, the objects marked INHERITED cross after all, by
// descriptor, and functions cross by reference: the hooks say how. They are
// in force only for packForChild()'s own encoder, so a message that a getter
// sends meanwhile still refuses them.

// While packForChild() or unpackForChild() runs: what lib/start/descriptors.ts
// makes of nodemp's shared objects and of functions, and back.
let childWrite: ((obj: object) => unknown) | null = null;
let childRead: ((data: unknown) => unknown) | null = null;
const forChild = new Packr({ structuredClone: true, copyBuffers: true });

/**
 * `value` encoded for a starting child, in bytes of its own: structured
 * clone (payloads are small, and identity within them must hold: one Lock
 * twice in the arguments is one Lock in the child), with `write` turning
 * shared objects and functions into data.
 */
export function packForChild(value: unknown, write: (obj: object) => unknown): Uint8Array {
  childWrite = write;
  try {
    return Buffer.from(forChild.pack(value));
  } catch (error) {
    // msgpackr's own words for a symbol value.
    if (error instanceof Error && error.message === 'Unknown type: symbol') {
      throw new SerializationError('nodemp: a symbol cannot be given to a child process');
    }
    throw error;
  } finally {
    childWrite = null;
  }
}

/** What packForChild() encoded, with `read` rebuilding what its `write` wrote. */
export function unpackForChild(bytes: Uint8Array, read: (data: unknown) => unknown): unknown {
  childRead = read;
  try {
    return forChild.unpack(bytes);
  } finally {
    childRead = null;
  }
}

// 'N': an ext type msgpackr itself does not use (it registers extensions process-wide).
const EXT_NODEMP = 0x4e;

type Wire = [typeof BY_NAME, string, string] | [typeof ERROR, ErrorState, unknown] | [typeof TO_CHILD, unknown];

/** Whether the extension writes `v`: one of nodemp's objects, or, for a starting child, what the plain walk (plainEnough) refuses. */
function extended(v: unknown): boolean {
  if ((v as { [CROSSING]?: number })[CROSSING] !== undefined) return true;
  return childWrite !== null && (typeof v === 'function' || v instanceof WeakMap || v instanceof WeakSet || v instanceof WeakRef || v instanceof Promise);
}

addExtension({
  Class: { [Symbol.hasInstance]: extended } as never,
  type: EXT_NODEMP,
  write(this: Packr, obj: Record<symbol, unknown> & object): Wire {
    const crossing = obj[CROSSING];
    if (crossing === ERROR) return [ERROR, errorState(obj as unknown as Error), (obj as unknown as Error).cause];
    if (crossing === BY_NAME) {
      const { kind, nameOf } = obj[NAME_OF] as { kind: string; nameOf(o: object): string };
      return [BY_NAME, kind, nameOf(obj)];
    }
    const write = this === forChild ? childWrite : null;
    if (crossing === undefined) {
      // A function, or what no codec copies, met while a child's payload is encoded.
      if (typeof obj !== 'function') throw new SerializationError(`nodemp: a ${obj.constructor.name} cannot be sent to another process`);
      if (write === null) throw functionRefused(obj);
    } else if (write === null) throw inheritedOnly(obj);
    return [TO_CHILD, write(obj)];
  },
  read(data: Wire): unknown {
    if (data[0] === ERROR) {
      const [, state, cause] = data;
      const error = reviveError(state, cause);
      error.stack = state.stack;
      return error;
    }
    if (data[0] === TO_CHILD) {
      if (childRead === null) throw new TypeError('nodemp: a message holds what only a starting child is given');
      return childRead(data[1]);
    }
    if (untrusted && !untrustedKinds.has(data[1])) throw new TypeError(`nodemp: this receiver does not accept a ${String(data[1])} in a message`);
    const attach = attachers.get(data[1]);
    if (attach === undefined) throw new TypeError(`nodemp: a message holds a ${data[1]}, which this process cannot attach to`);
    return attach(data[2]);
  },
});

/**
 * For node:v8, which has no hook for classes: walks the whole value and
 * refuses what cannot cross this way (nodemp's shared objects), naming it.
 */
function checkForV8(value: unknown): void {
  if (typeof value !== 'object' || value === null) return;
  const seen = new Set<object>();
  const stack: object[] = [value];
  while (stack.length > 0) {
    const item = stack.pop() as object;
    if (seen.has(item)) continue;
    seen.add(item);
    const crossing = (item as { [CROSSING]?: number })[CROSSING];
    if (crossing === INHERITED) throw inheritedOnly(item);
    if (crossing === BY_NAME) {
      throw new SerializationError(
        `nodemp: ${item.constructor.name} objects cross processes by name, which the 'v8' serializer cannot do; use the default 'msgpack' serializer, or send its name`,
      );
    }
    if (ArrayBuffer.isView(item) || item instanceof Error) continue;
    if (Array.isArray(item)) {
      for (let i = 0; i < item.length; i++) {
        const v: unknown = item[i];
        if (typeof v === 'object' && v !== null) stack.push(v);
      }
      continue;
    }
    if (item instanceof Map) {
      for (const [k, v] of item) {
        if (typeof k === 'object' && k !== null) stack.push(k);
        if (typeof v === 'object' && v !== null) stack.push(v);
      }
      continue;
    }
    if (item instanceof Set) {
      for (const v of item) if (typeof v === 'object' && v !== null) stack.push(v);
      continue;
    }
    for (const key in item) {
      const v = (item as Record<string, unknown>)[key];
      if (typeof v === 'object' && v !== null) stack.push(v);
    }
  }
}

/** Encoding tag for raw bytes, which take no codec at all. */
export const BYTES = 0;
/** Encoding tag for encodeSmall()'s format. */
export const SMALL = 4;

// ---- small messages -----------------------------------------------------------
//
// A Pool's task ([batch, function, kind, [args]]) and its answer are most
// often a few numbers and short strings. On a machine whose cores are all
// taken, the process that handles one has just been woken and runs with cold
// caches, and then the code a message takes costs more than the work: on the
// 2-core VM of the benchmarks, msgpackr's encode and decode of a task and its
// answer cost a woken process about 30 µs, this format about 10 µs. It holds
// undefined, null, booleans, numbers, ASCII strings, and plain arrays and
// plain objects (ASCII keys) of them, within the limits below; anything else
// is msgpack's. Only where both ends are the same nodemp is it written: a
// Queue's ring, a Pool's mailboxes, the ends of a Pipe(); nothing that may
// talk to another program or another version (a Listener's or a Client's
// connections, managers) writes it.

const S_UNDEFINED = 0;
const S_NULL = 1;
const S_FALSE = 2;
const S_TRUE = 3;
// What each of the four kinds above stands for, by kind.
const SMALL_CONSTANTS = [undefined, null, false, true];
const S_NUMBER = 4;
const S_STRING = 5;
const S_ARRAY = 6;
const S_OBJECT = 7;
// A string's, an array's or an object's length (its keys) is one byte; so is a key's.
const SMALL_LENGTH = 255;
const SMALL_DEPTH = 3;
export const SMALL_BYTES = 1024;
const SMALL_CHUNK = 64 * 1024;

let smallChunk = new Uint8Array(SMALL_CHUNK);
let smallAt = 0;
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);

/**
 * Writes `v` into `out` from `at`, ending by `limit`; returns where it ended,
 * or -1 if it does not fit the format. One walk both checks and writes: what
 * a refused value left past `at` belongs to no encoding.
 */
function smallWrite(out: Uint8Array, at: number, limit: number, v: unknown, depth: number): number {
  switch (typeof v) {
    case 'undefined':
      if (at + 1 > limit) return -1;
      out[at] = S_UNDEFINED;
      return at + 1;
    case 'boolean':
      if (at + 1 > limit) return -1;
      out[at] = v ? S_TRUE : S_FALSE;
      return at + 1;
    case 'number':
      if (at + 9 > limit) return -1;
      out[at] = S_NUMBER;
      f64[0] = v;
      for (let i = 0; i < 8; i++) out[at + 1 + i] = f64Bytes[i];
      return at + 9;
    case 'string': {
      if (v.length > SMALL_LENGTH || at + 2 + v.length > limit) return -1;
      out[at] = S_STRING;
      out[at + 1] = v.length;
      return asciiInto(out, at + 2, v) ? at + 2 + v.length : -1;
    }
    case 'object': {
      if (at + 1 > limit) return -1;
      if (v === null) {
        out[at] = S_NULL;
        return at + 1;
      }
      if (depth === SMALL_DEPTH || at + 2 > limit) return -1;
      if (!Array.isArray(v)) return smallWriteObject(out, at, limit, v, depth);
      if (v.length > SMALL_LENGTH || Object.getPrototypeOf(v) !== Array.prototype) return -1;
      out[at] = S_ARRAY;
      out[at + 1] = v.length;
      let p = at + 2;
      for (let i = 0; i < v.length && p >= 0; i++) p = smallWrite(out, p, limit, v[i], depth + 1);
      return p;
    }
    default:
      return -1;
  }
}

/** Writes `s` into `out` from `at` (the caller has checked the room); false at its first character past ASCII. */
function asciiInto(out: Uint8Array, at: number, s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return false;
    out[at + i] = c;
  }
  return true;
}

/**
 * smallWrite() of a plain object (Object.prototype its prototype): its own
 * enumerable keys in order, each an ASCII string and its value. A key
 * "__proto__" would be the prototype once assigned by the decoder: msgpack's.
 */
function smallWriteObject(out: Uint8Array, at: number, limit: number, v: object, depth: number): number {
  if (Object.getPrototypeOf(v) !== Object.prototype) return -1;
  const keys = Object.keys(v);
  if (keys.length > SMALL_LENGTH) return -1;
  out[at] = S_OBJECT;
  out[at + 1] = keys.length;
  let p = at + 2;
  for (let k = 0; k < keys.length; k++) {
    const key = keys[k];
    if (key.length > SMALL_LENGTH || p + 1 + key.length > limit || key === '__proto__') return -1;
    out[p] = key.length;
    if (!asciiInto(out, p + 1, key)) return -1;
    p = smallWrite(out, p + 1 + key.length, limit, (v as Record<string, unknown>)[key], depth + 1);
    if (p < 0) return -1;
  }
  return p;
}

/**
 * `value` in the small format, at [start, end) of `body`, or null if it does
 * not fit that format. Those bytes are not written over by later encodes (a
 * full chunk is left to whoever still holds it).
 */
export function encodeSmall(value: unknown): { tag: typeof SMALL; body: Uint8Array; start: number; end: number } | null {
  if (smallAt + SMALL_BYTES > SMALL_CHUNK) {
    smallChunk = new Uint8Array(SMALL_CHUNK);
    smallAt = 0;
  }
  const start = smallAt;
  const end = writeSmall(smallChunk, start, SMALL_BYTES, value);
  if (end < 0) return null;
  smallAt = end;
  return { tag: SMALL, body: smallChunk, start, end };
}

/** `value` in the small format written into `out` from `at`, within `bytes`: where it ends, or -1 if it does not fit (the bytes written are then garbage). */
export function writeSmall(out: Uint8Array, at: number, bytes: number, value: unknown): number {
  return smallWrite(out, at, at + bytes, value, 0);
}

// The decoder's cursor: where the message ends, and where the value just read ended.
let smallEnd = 0;
let smallNext = 0;

function malformedSmall(): TypeError {
  return new TypeError('nodemp: a malformed small-format message');
}

/** Reads one value at `at` of `source`, up to smallEnd; returns it, and leaves where it ended in smallNext. */
function smallRead(source: Uint8Array, at: number): unknown {
  if (at >= smallEnd) throw malformedSmall();
  const kind = source[at];
  if (kind <= S_TRUE) {
    smallNext = at + 1;
    return SMALL_CONSTANTS[kind];
  }
  switch (kind) {
    case S_NUMBER: {
      if (at + 9 > smallEnd) throw malformedSmall();
      for (let i = 0; i < 8; i++) f64Bytes[i] = source[at + 1 + i];
      smallNext = at + 9;
      return f64[0];
    }
    case S_STRING: {
      const length = at + 1 < smallEnd ? source[at + 1] : -1;
      if (length < 0 || at + 2 + length > smallEnd) throw malformedSmall();
      smallNext = at + 2 + length;
      return latin1Slice.call(source, at + 2, at + 2 + length);
    }
    case S_ARRAY: {
      if (at + 1 >= smallEnd) throw malformedSmall();
      const a = new Array<unknown>(source[at + 1]);
      let p = at + 2;
      for (let i = 0; i < a.length; i++) {
        a[i] = smallRead(source, p);
        p = smallNext;
      }
      smallNext = p;
      return a;
    }
    case S_OBJECT: {
      if (at + 1 >= smallEnd) throw malformedSmall();
      const o: Record<string, unknown> = {};
      let p = at + 2;
      for (let k = source[at + 1]; k > 0; k--) {
        const length = p < smallEnd ? source[p] : -1;
        if (length < 0 || p + 1 + length > smallEnd) throw malformedSmall();
        const key = smallKey(source, p + 1, length);
        o[key] = smallRead(source, p + 1 + length);
        p = smallNext;
      }
      smallNext = p;
      return o;
    }
    default:
      throw malformedSmall();
  }
}

// Keys met before, by a hash of their bytes: a message's keys are most often
// those of the one before it, and making each anew was most of an object's
// decode. Bounded: past it, new keys are made each time.
const smallKeys = new Map<number, string>();
const SMALL_KEYS = 1024;

function smallKey(source: Uint8Array, at: number, length: number): string {
  let hash = length;
  for (let i = 0; i < length; i++) hash = (Math.imul(hash, 31) + source[at + i]) | 0;
  const known = smallKeys.get(hash);
  if (known !== undefined && known.length === length) {
    let same = true;
    for (let i = 0; i < length && same; i++) same = known.charCodeAt(i) === source[at + i];
    if (same) return known;
  }
  const key = latin1Slice.call(source, at, at + length);
  if (known === undefined && smallKeys.size < SMALL_KEYS) smallKeys.set(hash, key);
  return key;
}

function decodeSmall(source: Uint8Array, start: number, end: number): unknown {
  smallEnd = end;
  const value = smallRead(source, start);
  if (smallNext !== end) throw malformedSmall();
  return value;
}

// Buffer's latin1 decoder for any Uint8Array: ASCII bytes are their own characters.
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string }).latin1Slice;

/**
 * The common cases without allocating: plain objects and arrays whose values
 * are primitives but for at most one, itself such a container ({ i: 1 },
 * [id, [arg]], { a: 1, b: { c: 2 } }). Nothing in such a chain can be shared
 * or cyclic short of the depth limit, so the plain encoder is exact for it.
 */
function chainPlain(value: object, depth: number): boolean {
  if (depth > CHAIN_LIMIT) return false;
  let child: object | null = null;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return false;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (typeof v === 'object' && v !== null) {
        if (child !== null) return false;
        child = v;
      } else if (typeof v === 'function' || typeof v === 'symbol') return false;
    }
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return false;
    for (const key in value) {
      const v = (value as Record<string, unknown>)[key];
      if (typeof v === 'object' && v !== null) {
        if (child !== null) return false;
        child = v;
      } else if (typeof v === 'function' || typeof v === 'symbol') return false;
    }
  }
  return child === null || chainPlain(child, depth + 1);
}

const CHAIN_LIMIT = 8;

export interface Codec {
  readonly serializer: Serializer;
  /**
   * Encodes `value`; the result is valid until the next encode() anywhere
   * (callers copy it at once) and `tag` says how to decode it.
   */
  encode(value: unknown): Uint8Array;
  /**
   * encode(), leaving the encoding in [start, end) of what it returns: a
   * view of a few bytes costs more to make (about 60 ns) than to copy them.
   * Those bytes are not written over by later encodes.
   */
  encodeRange(value: unknown): Uint8Array;
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

/** Decodes what a codec encoded under `tag` (BYTES: a copy of the bytes themselves). */
export function decode(tag: number, body: Uint8Array): unknown {
  return decodeRange(tag, body, 0, body.length);
}

/**
 * decode() of source[start, end). Given the same long-lived `source` each
 * time (a queue's ring), msgpackr keeps one DataView on it instead of making
 * a view and a DataView per message.
 */
export function decodeRange(tag: number, source: Uint8Array, start: number, end: number): unknown {
  switch (tag) {
    case BYTES: {
      // Buffer.from(typedArray) copies element by element, and set() would
      // need a view of the range; Buffer's copy is one memcpy.
      const copy = Buffer.allocUnsafe(end - start);
      copyBytes.call(source, copy, 0, start, end);
      return copy;
    }
    case PLAIN:
      return plain.unpack(source, { start, end });
    case STRUCTURED:
      return structured.unpack(source, { start, end });
    case V8:
      return deserialize(source.subarray(start, end));
    case SMALL:
      return decodeSmall(source, start, end);
    default:
      throw new TypeError(`nodemp: a message with unknown encoding ${tag}`);
  }
}

/**
 * decodeRange() for a peer that is not trusted (a manager server's clients):
 * only the msgpack encodings, whose decoders build data and run no code of
 * the message's choosing (node:v8's deserializer is not meant for hostile
 * input), and no attaching to shared memory by name but for the kinds
 * sharedByName() allowed.
 */
export function decodeUntrusted(tag: number, source: Uint8Array, start: number, end: number): unknown {
  if (tag !== PLAIN && tag !== STRUCTURED) throw new TypeError(`nodemp: a message with encoding ${tag}, where only msgpack (1 or 2) is accepted`);
  untrusted = true;
  try {
    return decodeRange(tag, source, start, end);
  } finally {
    untrusted = false;
  }
}

/** Buffer's copy (one memcpy) for any Uint8Array: copyBytes.call(source, target, targetStart, start, end). */
export const copyBytes = Buffer.prototype.copy;

class MsgpackCodec implements Codec {
  readonly serializer = 'msgpack';
  tag = PLAIN;
  start = 0;
  end = 0;
  encode(value: unknown): Uint8Array {
    if (plainEnough(value)) {
      this.tag = PLAIN;
      return plain.pack(value);
    }
    this.tag = STRUCTURED;
    return structured.pack(value);
  }

  encodeRange(value: unknown): Uint8Array {
    if (plainEnough(value)) {
      this.tag = PLAIN;
      // msgpackr's own buffer, the encoding at [start, end); msgpackr moves
      // on past it, and into a new buffer when this one is full.
      const out = plain.pack(value, REUSE_BUFFER_MODE) as Buffer & { start: number; end: number };
      this.start = out.start;
      this.end = out.end;
      return out;
    }
    this.tag = STRUCTURED;
    const body = structured.pack(value);
    this.start = 0;
    this.end = body.length;
    return body;
  }
}

class V8Codec implements Codec {
  readonly serializer = 'v8';
  readonly tag = V8;
  start = 0;
  end = 0;
  encode(value: unknown): Uint8Array {
    checkForV8(value);
    return serialize(value);
  }

  encodeRange(value: unknown): Uint8Array {
    checkForV8(value);
    const body = serialize(value);
    this.end = body.length;
    return body;
  }
}

const codecs = { msgpack: new MsgpackCodec(), v8: new V8Codec() };

export function codecFor(serializer: unknown = 'msgpack'): Codec {
  if (serializer === 'msgpack' || serializer === 'v8') return codecs[serializer];
  throw invalidType('serializer', "'msgpack' or 'v8'", serializer);
}
