// A fixed-length list of primitive values in a SharedMemory segment, as
// Python's multiprocessing.shared_memory.ShareableList (the byte layout is our
// own, native/layout.h, and not Python's).
//
// Storage rules: each item gets its storage at creation, never moved or grown.
// A string (UTF-8) or bytes item gets its byte length rounded up to a multiple
// of 8, at least 8; every other item gets 8. set() may store a value of any
// type in any item as long as it fits: numbers, bigints, booleans and null
// always do, a string or bytes value only up to the item's storage (else a
// RangeError, Python's "exceeds available storage").
//
// As in Python, items carry no lock: a reader racing a writer of the same item
// in another process may see a torn value.
import { native } from './native.js';
import { SharedMemory } from './shared-memory.js';

/** What a ShareableList holds. Bytes come back as a Buffer copy; undefined is not storable (use null). */
export type ShareableValue = number | bigint | boolean | string | Uint8Array | null;

export interface ShareableListOptions {
  /** Name of the segment to create (with a sequence) or to attach to (without one). */
  name?: string;
}

const L = native.layout;
const MAGIC = L.kListMagic;
const MAGIC_WORD = L.kListMagicWord;
const LENGTH = L.kListLength;
const ENTRIES = L.kListEntries;
const ENTRY_SIZE = L.kListEntrySize;
const ENTRY_OFFSET = L.kListEntryOffset;
const ENTRY_CAPACITY = L.kListEntryCapacity;
const ENTRY_LENGTH = L.kListEntryLength;
const ENTRY_TYPE = L.kListEntryType;
const ALIGN = L.kListAlign;
const NULL = L.kListTypeNull;
const BOOL = L.kListTypeBool;
const INT = L.kListTypeInt;
const FLOAT = L.kListTypeFloat;
const BIGINT = L.kListTypeBigInt;
const STRING = L.kListTypeString;
const BYTES = L.kListTypeBytes;

const TWO_32 = 2 ** 32;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
// Offsets are uint32.
const MAX_SEGMENT = TWO_32 - 1;

function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object') return String(value);
  return value.constructor?.name ?? 'an object';
}

function typeOf(value: unknown, where: string): number {
  switch (typeof value) {
    case 'number':
      // -0 goes as a float so that it comes back as -0.
      return Number.isSafeInteger(value) && !Object.is(value, -0) ? INT : FLOAT;
    case 'bigint':
      if (value < INT64_MIN || value > INT64_MAX) throw new RangeError(`${where}: expected a bigint within the signed 64-bit range, got ${value}n`);
      return BIGINT;
    case 'boolean':
      return BOOL;
    case 'string':
      return STRING;
    case 'object':
      if (value === null) return NULL;
      if (value instanceof Uint8Array) return BYTES;
  }
  throw new TypeError(`${where}: expected a number, bigint, boolean, string, Uint8Array or null, got ${shown(value)}`);
}

function byteLength(value: ShareableValue, type: number): number {
  if (type === STRING) return Buffer.byteLength(value as string, 'utf8');
  if (type === BYTES) return (value as Uint8Array).byteLength;
  return 8;
}

function roundUp(n: number): number {
  return Math.max(ALIGN, Math.ceil(n / ALIGN) * ALIGN);
}

// Bytes by content, everything else as Array.prototype.includes compares.
function same(a: ShareableValue, b: unknown): boolean {
  if (a instanceof Uint8Array) return b instanceof Uint8Array && Buffer.compare(a, b) === 0;
  return a === b || (a !== a && b !== b);
}

/**
 * A fixed-length list in shared memory. `new ShareableList(sequence)` creates
 * one in a new SharedMemory (named by `options.name`, or generated);
 * `new ShareableList(null, { name })` attaches to an existing one. Free it as
 * a SharedMemory: `list.shm.close()`, and `list.shm.unlink()` once.
 */
export class ShareableList implements Iterable<ShareableValue> {
  readonly shm: SharedMemory;
  readonly length: number;
  #view: DataView;

  constructor(sequence?: Iterable<ShareableValue> | null, options: ShareableListOptions = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError(`ShareableList: expected an options object, got ${shown(options)}`);
    const { name } = options;
    if (sequence === null || sequence === undefined) {
      if (name === undefined) sequence = [];
      else {
        this.shm = new SharedMemory({ name });
        this.#view = new DataView(this.shm.buf.buffer, this.shm.buf.byteOffset, this.shm.size);
        try {
          this.length = this.#check();
        } catch (error) {
          this.shm.close();
          throw error;
        }
        return;
      }
    }
    if (typeof (sequence as Partial<Iterable<unknown>>)[Symbol.iterator] !== 'function') {
      throw new TypeError(`ShareableList: expected an iterable of values, or null to attach by name, got ${shown(sequence)}`);
    }
    const items = Array.from(sequence);
    const types = items.map((item, i) => typeOf(item, `ShareableList: item ${i}`));
    const capacities = items.map((item, i) => roundUp(byteLength(item, types[i])));
    let size = roundUp(ENTRIES + items.length * ENTRY_SIZE);
    const offsets = capacities.map((capacity) => {
      const offset = size;
      size += capacity;
      return offset;
    });
    if (size > MAX_SEGMENT) throw new RangeError(`ShareableList: expected at most ${MAX_SEGMENT} bytes in all, got ${size}`);
    this.shm = new SharedMemory({ name, create: true, size });
    this.length = items.length;
    this.#view = new DataView(this.shm.buf.buffer, this.shm.buf.byteOffset, size);
    const view = this.#view;
    view.setUint32(LENGTH, items.length, true);
    items.forEach((item, i) => {
      const entry = ENTRIES + i * ENTRY_SIZE;
      view.setUint32(entry + ENTRY_OFFSET, offsets[i], true);
      view.setUint32(entry + ENTRY_CAPACITY, capacities[i], true);
      this.#write(entry, item, types[i], 'ShareableList');
    });
    // Last, so that a process attaching meanwhile sees no half-built list.
    Atomics.store(new Uint32Array(this.shm.buf.buffer, this.shm.buf.byteOffset + MAGIC_WORD, 1), 0, MAGIC);
  }

  // Validates an attached segment; returns its length.
  #check(): number {
    const { size, name } = this.shm;
    const invalid = (why: string): TypeError => new TypeError(`ShareableList: segment ${JSON.stringify(name)} does not hold a ShareableList (${why})`);
    if (size < ENTRIES) throw invalid(`${size} bytes`);
    const magic = Atomics.load(new Uint32Array(this.shm.buf.buffer, this.shm.buf.byteOffset + MAGIC_WORD, 1), 0);
    if (magic !== MAGIC) throw invalid(`no ShareableList header`);
    const view = this.#view;
    const length = view.getUint32(LENGTH, true);
    if (ENTRIES + length * ENTRY_SIZE > size) throw invalid(`${length} items do not fit in ${size} bytes`);
    for (let i = 0; i < length; i++) {
      const entry = ENTRIES + i * ENTRY_SIZE;
      const end = view.getUint32(entry + ENTRY_OFFSET, true) + view.getUint32(entry + ENTRY_CAPACITY, true);
      if (end > size || view.getUint32(entry + ENTRY_TYPE, true) > BYTES) throw invalid(`item ${i} is corrupt`);
    }
    return length;
  }

  // The entry of item `index` (negative counts from the end).
  #entry(index: number, where: string): number {
    if (!Number.isInteger(index)) throw new TypeError(`${where}: expected an integer index, got ${shown(index)}`);
    const i = index < 0 ? index + this.length : index;
    if (i < 0 || i >= this.length) throw new RangeError(`${where}: index ${index} is out of range for a list of length ${this.length}`);
    return ENTRIES + i * ENTRY_SIZE;
  }

  #write(entry: number, value: ShareableValue, type: number, where: string): void {
    const bytes = this.shm.buf;
    const view = this.#view;
    const offset = view.getUint32(entry + ENTRY_OFFSET, true);
    const capacity = view.getUint32(entry + ENTRY_CAPACITY, true);
    let length = 0;
    if (type === STRING || type === BYTES) {
      length = byteLength(value, type);
      if (length > capacity) {
        throw new RangeError(`${where}: a ${type === STRING ? 'string' : 'bytes value'} of ${length} bytes exceeds the item's storage of ${capacity} bytes`);
      }
      if (type === STRING) bytes.write(value as string, offset, length, 'utf8');
      else bytes.set(value as Uint8Array, offset);
    } else if (type === INT) {
      const high = Math.floor((value as number) / TWO_32);
      view.setUint32(offset, (value as number) - high * TWO_32, true);
      view.setInt32(offset + 4, high, true);
    } else if (type === FLOAT) {
      view.setFloat64(offset, value as number, true);
    } else if (type === BIGINT) {
      view.setBigInt64(offset, value as bigint, true);
    } else if (type === BOOL) {
      bytes[offset] = value ? 1 : 0;
    }
    view.setUint32(entry + ENTRY_LENGTH, length, true);
    view.setUint32(entry + ENTRY_TYPE, type, true);
  }

  /** Item `index`; negative indices count from the end, as in Python. */
  get(index: number): ShareableValue {
    const entry = this.#entry(index, 'ShareableList.get');
    const bytes = this.shm.buf;
    const view = this.#view;
    const offset = view.getUint32(entry + ENTRY_OFFSET, true);
    const type = view.getUint32(entry + ENTRY_TYPE, true);
    if (type === INT) return view.getInt32(offset + 4, true) * TWO_32 + view.getUint32(offset, true);
    if (type === FLOAT) return view.getFloat64(offset, true);
    if (type === BIGINT) return view.getBigInt64(offset, true);
    if (type === BOOL) return bytes[offset] !== 0;
    if (type === NULL) return null;
    const end = offset + view.getUint32(entry + ENTRY_LENGTH, true);
    if (type === STRING) return bytes.toString('utf8', offset, end);
    return Buffer.from(bytes.subarray(offset, end));
  }

  /** Replaces item `index` with `value`, which must fit the item's storage (see the storage rules above). */
  set(index: number, value: ShareableValue): void {
    const entry = this.#entry(index, 'ShareableList.set');
    this.#write(entry, value, typeOf(value, 'ShareableList.set'), 'ShareableList.set');
  }

  /** Python's struct format of the items as they are now: q, d, xxxxxxx? (boolean), xxxxxx?x (null), Ns (string or bytes storage). */
  get format(): string {
    const bytes = this.shm.buf;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let format = '';
    for (let i = 0; i < this.length; i++) {
      const entry = ENTRIES + i * ENTRY_SIZE;
      const type = view.getUint32(entry + ENTRY_TYPE, true);
      if (type === INT || type === BIGINT) format += 'q';
      else if (type === FLOAT) format += 'd';
      else if (type === BOOL) format += 'xxxxxxx?';
      else if (type === NULL) format += 'xxxxxx?x';
      else format += `${view.getUint32(entry + ENTRY_CAPACITY, true)}s`;
    }
    return format;
  }

  /** How many items equal `value` (bytes by content, others as Array.prototype.includes compares). */
  count(value: ShareableValue): number {
    let n = 0;
    for (const item of this) if (same(item, value)) n++;
    return n;
  }

  /** The first index of `value`; a RangeError if it is not in the list. */
  index(value: ShareableValue): number {
    for (let i = 0; i < this.length; i++) if (same(this.get(i), value)) return i;
    throw new RangeError(`ShareableList.index: ${shown(value)} is not in the list`);
  }

  *[Symbol.iterator](): IterableIterator<ShareableValue> {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }

  toArray(): ShareableValue[] {
    return Array.from(this);
  }
}
