// Value and Array: typed numbers in shared memory, readable and writable from
// every process forked after they were made. As in Python, `v.value += 1` is
// a read and a write, not atomic; the lock that getLock() returns (an RLock by
// default) is what makes such updates safe.
import { allocShared, type Cells } from './arena.js';
import { Lock, RLock } from './lock.js';
import { invalidType, outOfRange } from './args.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type State } from './start/handoff.js';

type AnyTyped =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

interface TypeInfo {
  readonly View: { new (buffer: ArrayBuffer, byteOffset: number, length: number): AnyTyped; BYTES_PER_ELEMENT: number };
  readonly kind: 'int' | 'bigint' | 'float';
  readonly min?: number | bigint;
  readonly max?: number | bigint;
}

// Python's typecodes with the sizes of a 64-bit Linux or macOS build (l and L
// are 64-bit there); 64-bit integers are BigInt, as a JS number cannot hold them.
const TYPES: Record<string, TypeInfo> = {
  b: { View: Int8Array, kind: 'int', min: -128, max: 127 },
  B: { View: Uint8Array, kind: 'int', min: 0, max: 255 },
  h: { View: Int16Array, kind: 'int', min: -32768, max: 32767 },
  H: { View: Uint16Array, kind: 'int', min: 0, max: 65535 },
  i: { View: Int32Array, kind: 'int', min: -2147483648, max: 2147483647 },
  I: { View: Uint32Array, kind: 'int', min: 0, max: 4294967295 },
  l: { View: BigInt64Array, kind: 'bigint', min: -(2n ** 63n), max: 2n ** 63n - 1n },
  L: { View: BigUint64Array, kind: 'bigint', min: 0n, max: 2n ** 64n - 1n },
  q: { View: BigInt64Array, kind: 'bigint', min: -(2n ** 63n), max: 2n ** 63n - 1n },
  Q: { View: BigUint64Array, kind: 'bigint', min: 0n, max: 2n ** 64n - 1n },
  f: { View: Float32Array, kind: 'float' },
  d: { View: Float64Array, kind: 'float' },
};

export type Typecode = 'b' | 'B' | 'h' | 'H' | 'i' | 'I' | 'l' | 'L' | 'q' | 'Q' | 'f' | 'd';
type Element<C extends Typecode> = C extends 'l' | 'L' | 'q' | 'Q' ? bigint : number;
type TypedFor<C extends Typecode> = C extends 'l' | 'q'
  ? BigInt64Array
  : C extends 'L' | 'Q'
    ? BigUint64Array
    : C extends 'b'
      ? Int8Array
      : C extends 'B'
        ? Uint8Array
        : C extends 'h'
          ? Int16Array
          : C extends 'H'
            ? Uint16Array
            : C extends 'i'
              ? Int32Array
              : C extends 'I'
                ? Uint32Array
                : C extends 'f'
                  ? Float32Array
                  : Float64Array;

function typeOf(what: string, typecode: unknown): TypeInfo {
  const info = typeof typecode === 'string' && Object.hasOwn(TYPES, typecode) ? TYPES[typecode] : undefined;
  if (info === undefined) throw invalidType(`${what}: typecode`, `one of ${Object.keys(TYPES).join(' ')}`, typecode);
  return info;
}

/** Whether `x` can be stored in a view of this type (BigInt types also take safe integers). */
function fits(info: TypeInfo, x: unknown): boolean {
  if (info.kind === 'float') return typeof x === 'number';
  if (info.kind === 'int') return typeof x === 'number' && Number.isInteger(x) && x >= (info.min as number) && x <= (info.max as number);
  if (typeof x === 'number') return Number.isSafeInteger(x) && BigInt(x) >= (info.min as bigint) && BigInt(x) <= (info.max as bigint);
  return typeof x === 'bigint' && x >= (info.min as bigint) && x <= (info.max as bigint);
}

/** Why `x` does not fit: built only on the error path, so that checked writes allocate nothing. */
function elementError(info: TypeInfo, what: string, typecode: string, x: unknown): Error {
  if (info.kind === 'float') return invalidType(what, `a number (typecode '${typecode}')`, x);
  if (info.kind === 'int') {
    if (typeof x !== 'number') return invalidType(what, `an integer (typecode '${typecode}')`, x);
    return outOfRange(what, `an integer from ${info.min} to ${info.max} (typecode '${typecode}')`, x);
  }
  if (typeof x !== 'bigint' && !(typeof x === 'number' && Number.isSafeInteger(x))) {
    return invalidType(what, `a bigint or a safe integer (typecode '${typecode}')`, x);
  }
  return outOfRange(what, `from ${info.min} to ${info.max} (typecode '${typecode}')`, x);
}

/** Checks and converts one element for a view of this type. */
function coerce(info: TypeInfo, what: string, typecode: string, x: unknown): number | bigint {
  if (!fits(info, x)) throw elementError(info, what, typecode, x);
  return info.kind === 'bigint' && typeof x === 'number' ? BigInt(x) : (x as number | bigint);
}

type LockOption = boolean | Lock | RLock | null;

// As Python's lock=None: null (or nothing) means a new RLock.
function lockFor(what: string, options: ValueOptions | null | undefined): Lock | RLock | null {
  if (options === undefined || options === null) return new RLock();
  if (typeof options !== 'object') throw invalidType(`${what}: options`, 'an object like { lock }', options);
  const option = options.lock;
  if (option === undefined || option === null || option === true) return new RLock();
  if (option === false) return null;
  if (option instanceof Lock || option instanceof RLock) return option;
  throw invalidType(`${what}: options.lock`, 'true, false, null, a Lock or an RLock', option);
}

// What a value or array rebuilt in a starting child takes instead of new
// memory and a new lock.
let adopting: { cells: Cells; lock: Lock | RLock | null } | null = null;

/** Where a value's or an array's numbers are. */
function stateOf(view: AnyTyped, child: ChildEncoder): State {
  return [child.memory(view.buffer as ArrayBuffer), view.byteOffset];
}

function adopt<T>(make: () => T, memory: unknown, byteOffset: unknown, lock: unknown, parent: ChildDecoder): T {
  // Views take their length from the typecode and the state, not from byteLength.
  adopting = { cells: { buffer: parent.memory(memory as number), byteOffset: byteOffset as number, byteLength: 0 }, lock: (lock ?? null) as Lock | RLock | null };
  try {
    return make();
  } finally {
    adopting = null;
  }
}

/** One number in shared memory, without a lock (Python's `RawValue`). */
export class RawValue<C extends Typecode = Typecode> {
  readonly typecode: C;
  readonly #info: TypeInfo;
  readonly #view: AnyTyped;

  constructor(typecode: C, value?: Element<C> | number) {
    const info = typeOf(`${new.target.name}()`, typecode);
    const cells = adopting?.cells ?? allocShared(info.View.BYTES_PER_ELEMENT);
    this.typecode = typecode;
    this.#info = info;
    this.#view = new info.View(cells.buffer, cells.byteOffset, 1);
    if (value !== undefined) this.value = value as Element<C>;
  }

  [toChild](child: ChildEncoder): State {
    return [this.typecode, ...stateOf(this.#view, child)];
  }

  /** Value's lock, if any, follows RawValue's state. */
  static [fromParent]<T>(this: new (typecode: Typecode) => T, [typecode, memory, byteOffset, lock]: State, parent: ChildDecoder): T {
    return adopt(() => new this(typecode as Typecode), memory, byteOffset, lock, parent);
  }

  get value(): Element<C> {
    return this.#view[0] as Element<C>;
  }

  set value(x: Element<C>) {
    const info = this.#info;
    if (!fits(info, x)) throw elementError(info, `${this.constructor.name}.value`, this.typecode, x);
    this.#view[0] = (info.kind === 'bigint' && typeof x === 'number' ? BigInt(x) : x) as never;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `${this.constructor.name}('${this.typecode}', ${String(this.value)})`;
  }
}

export interface ValueOptions {
  /** true, null or absent: a new RLock guards the value; false: none; or the lock to use. */
  lock?: LockOption;
}

/** One number in shared memory with the lock that guards it (Python's `Value`). */
export class Value<C extends Typecode = Typecode> extends RawValue<C> {
  readonly #lock: Lock | RLock | null;

  constructor(typecode: C, value?: Element<C> | number, options: ValueOptions | null = {}) {
    super(typecode, value);
    this.#lock = adopting === null ? lockFor('Value()', options) : adopting.lock;
  }

  override [toChild](child: ChildEncoder): State {
    return [...super[toChild](child), this.#lock];
  }

  /** The lock guarding the value, or null when made with `{ lock: false }`. */
  getLock(): Lock | RLock | null {
    return this.#lock;
  }
}

/** A fixed-length array of numbers in shared memory, without a lock (Python's `RawArray`). */
export class RawArray<C extends Typecode = Typecode> implements Iterable<Element<C>> {
  readonly typecode: C;
  readonly #info: TypeInfo;
  /** A live, zero-copy view of the shared elements (writes through it skip all checks). */
  readonly typed: TypedFor<C>;

  constructor(typecode: C, sizeOrInit: number | Iterable<Element<C> | number>) {
    const what = `${new.target.name}()`;
    const info = typeOf(what, typecode);
    let init: (Element<C> | number)[] | null = null;
    let length: number;
    if (typeof sizeOrInit === 'number') {
      if (!Number.isSafeInteger(sizeOrInit) || sizeOrInit < 0) throw outOfRange(`${what}: size`, 'an integer >= 0', sizeOrInit);
      length = sizeOrInit;
    } else if (sizeOrInit !== null && typeof sizeOrInit === 'object' && Symbol.iterator in sizeOrInit) {
      init = [...sizeOrInit];
      length = init.length;
    } else {
      throw invalidType(`${what}: sizeOrInit`, 'a size or an iterable of initial values', sizeOrInit);
    }
    const converted = init?.map((x, i) => coerce(info, `${what}: initial value [${i}]`, typecode, x));
    const cells = adopting?.cells ?? allocShared(length * info.View.BYTES_PER_ELEMENT);
    this.typecode = typecode;
    this.#info = info;
    this.typed = new info.View(cells.buffer, cells.byteOffset, length) as TypedFor<C>;
    converted?.forEach((x, i) => {
      (this.typed as AnyTyped)[i] = x as never;
    });
  }

  [toChild](child: ChildEncoder): State {
    return [this.typecode, this.typed.length, ...stateOf(this.typed, child)];
  }

  /** Array's lock, if any, follows RawArray's state. */
  static [fromParent]<T>(this: new (typecode: Typecode, length: number) => T, [typecode, length, memory, byteOffset, lock]: State, parent: ChildDecoder): T {
    return adopt(() => new this(typecode as Typecode, length as number), memory, byteOffset, lock, parent);
  }

  get length(): number {
    return this.typed.length;
  }

  #index(what: string, i: unknown): number {
    const n = this.typed.length;
    if (typeof i !== 'number' || !Number.isInteger(i)) throw invalidType(`${this.constructor.name}.${what}: index`, 'an integer', i);
    const at = i < 0 ? i + n : i;
    if (at < 0 || at >= n) throw outOfRange(`${this.constructor.name}.${what}: index`, `from ${-n} to ${n - 1}`, i);
    return at;
  }

  /** The element at `i`; negative indices count from the end, as in Python. */
  get(i: number): Element<C> {
    return this.typed[this.#index('get', i)] as Element<C>;
  }

  set(i: number, x: Element<C> | number): void {
    const at = this.#index('set', i);
    const info = this.#info;
    if (!fits(info, x)) throw elementError(info, `${this.constructor.name}.set(${i})`, this.typecode, x);
    (this.typed as AnyTyped)[at] = (info.kind === 'bigint' && typeof x === 'number' ? BigInt(x) : x) as never;
  }

  /** A copy of the elements as a plain array. */
  toArray(): Element<C>[] {
    return Array.from(this.typed as Iterable<Element<C>>);
  }

  [Symbol.iterator](): Iterator<Element<C>> {
    return (this.typed as Iterable<Element<C>>)[Symbol.iterator]();
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const shown = this.toArray().slice(0, 20).map(String).join(', ');
    return `${this.constructor.name}('${this.typecode}', [${shown}${this.length > 20 ? ', ...' : ''}])`;
  }
}

/** A fixed-length array of numbers in shared memory with the lock that guards it (Python's `Array`). */
export class SharedArray<C extends Typecode = Typecode> extends RawArray<C> {
  readonly #lock: Lock | RLock | null;

  constructor(typecode: C, sizeOrInit: number | Iterable<Element<C> | number>, options: ValueOptions | null = {}) {
    super(typecode, sizeOrInit);
    this.#lock = adopting === null ? lockFor('Array()', options) : adopting.lock;
  }

  override [toChild](child: ChildEncoder): State {
    return [...super[toChild](child), this.#lock];
  }

  getLock(): Lock | RLock | null {
    return this.#lock;
  }
}

/** Internal (lib/manager/): `x` checked and converted for an element of `typecode`. */
export function coerceElement(what: string, typecode: unknown, x: unknown): number | bigint {
  const info = typeOf(what, typecode);
  return coerce(info, what, typecode as string, x);
}
