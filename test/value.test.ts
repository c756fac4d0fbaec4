import { describe, expect, it } from 'vitest';
import { Array as SharedArray, Lock, RLock, RawArray, RawValue, Value } from '../dist/index.js';
import { spawnChild } from './sync-helpers.js';

const CASES: [string, number | bigint, number | bigint, unknown][] = [
  ['b', -128, 127, 128],
  ['B', 0, 255, -1],
  ['h', -32768, 32767, 40000],
  ['H', 0, 65535, 65536],
  ['i', -2147483648, 2147483647, 2 ** 31],
  ['I', 0, 4294967295, -1],
  ['l', -(2n ** 63n), 2n ** 63n - 1n, 2n ** 63n],
  ['L', 0n, 2n ** 64n - 1n, -1n],
  ['q', -(2n ** 63n), 2n ** 63n - 1n, -(2n ** 63n) - 1n],
  ['Q', 0n, 2n ** 64n - 1n, 2n ** 64n],
];

describe('Value', () => {
  it.each(CASES)("typecode '%s' holds its whole range and refuses values outside it", (code, min, max, outside) => {
    const v = new Value(code as 'i', 0);
    v.value = min as number;
    expect(v.value).toBe(min);
    v.value = max as number;
    expect(v.value).toBe(max);
    expect(() => {
      v.value = outside as number;
    }).toThrow(RangeError);
    expect(v.value).toBe(max);
  });

  it('floats, BigInt conversion and type errors', () => {
    const d = new Value('d', 1.5);
    expect(d.value).toBe(1.5);
    d.value = Number.NaN;
    expect(d.value).toBeNaN();
    const f = new Value('f', 0.1);
    expect(f.value).toBeCloseTo(0.1, 6);
    const q = new Value('q', 5);
    expect(q.value).toBe(5n);
    expect(() => new Value('i', 1.5)).toThrow(/integer/);
    expect(() => new Value('i', '1' as unknown as number)).toThrow(TypeError);
    expect(() => new Value('q', 1.5)).toThrow(TypeError);
    expect(new Value('i').value).toBe(0);
  });

  it('refuses an unknown typecode with the list of valid ones', () => {
    expect(() => new Value('x' as 'i', 0)).toThrow(TypeError);
    expect(() => new Value('x' as 'i', 0)).toThrow(/one of b B h H i I l L q Q f d, got 'x'/);
    expect(() => new SharedArray('c' as 'i', 3)).toThrow(TypeError);
    expect(() => new RawValue(undefined as unknown as 'i')).toThrow(TypeError);
  });

  it('has an RLock by default, none with { lock: false }, or the lock given', () => {
    expect(new Value('i', 0).getLock()).toBeInstanceOf(RLock);
    expect(new Value('i', 0, { lock: false }).getLock()).toBeNull();
    const lock = new Lock();
    expect(new Value('i', 0, { lock }).getLock()).toBe(lock);
    expect(() => new Value('i', 0, { lock: 'yes' as unknown as boolean })).toThrow(TypeError);
    expect('getLock' in new RawValue('i', 0)).toBe(false);
  });

  it("takes null as Python's None: { lock: null } (and null options) mean a new RLock, for Array too", () => {
    for (const made of [new Value('i', 0, { lock: null }), new Value('i', 0, null), new SharedArray('d', 2, { lock: null }), new SharedArray('i', [1], null)]) {
      expect(made.getLock()).toBeInstanceOf(RLock);
    }
    expect(new Value('i', 0, { lock: null }).getLock()).not.toBe(new Value('i', 0, { lock: null }).getLock());
    expect(() => new SharedArray('i', 2, { lock: 0 as unknown as boolean })).toThrow(/true, false, null, a Lock or an RLock/);
    expect(() => new Value('i', 0, 'lock' as unknown as null)).toThrow(TypeError);
  });

  it('is shared with forked children; the lock makes += safe across 4 processes', () => {
    const v = new Value('i', 0);
    const big = new Value('Q', 0n);
    const kids = [0, 1, 2, 3].map(() =>
      spawnChild(() => {
        const lock = v.getLock()!;
        for (let i = 0; i < 2500; i++) {
          lock.acquireSync();
          v.value += 1;
          big.value += 3n;
          lock.release();
        }
      }),
    );
    for (const k of kids) k.joinSync();
    expect(kids.map((k) => k.exitCode)).toEqual([0, 0, 0, 0]);
    expect(v.value).toBe(10000);
    expect(big.value).toBe(30000n);
  });
});

describe('Array', () => {
  it('is zero-filled from a size, or copies an iterable', () => {
    const a = new SharedArray('d', 4);
    expect(a.length).toBe(4);
    expect(a.toArray()).toEqual([0, 0, 0, 0]);
    const b = new SharedArray('i', [1, 2, 3]);
    expect([...b]).toEqual([1, 2, 3]);
    const c = new SharedArray('q', new Set([1n, 2n]));
    expect(c.toArray()).toEqual([1n, 2n]);
    expect(new SharedArray('i', 0).length).toBe(0);
  });

  it('get/set with negative indices, checks bounds and element types', () => {
    const a = new SharedArray('h', [10, 20, 30]);
    expect(a.get(-1)).toBe(30);
    a.set(-3, 5);
    expect(a.get(0)).toBe(5);
    expect(() => a.get(3)).toThrow(/index must be from -3 to 2, got 3/);
    expect(() => a.set(-4, 1)).toThrow(RangeError);
    expect(() => a.get(1.5)).toThrow(TypeError);
    expect(() => a.set(0, 70000)).toThrow(RangeError);
    expect(() => new SharedArray('B', [1, 300])).toThrow(/initial value \[1\]/);
    expect(() => new SharedArray('i', -1)).toThrow(RangeError);
    expect(() => new SharedArray('i', 'abc' as unknown as number)).toThrow(TypeError);
  });

  it('typed is a live zero-copy view shared with children', () => {
    const a = new SharedArray('d', 1000);
    const raw = new RawArray('i', 4);
    expect(a.typed).toBeInstanceOf(Float64Array);
    expect(a.getLock()).toBeInstanceOf(RLock);
    expect('getLock' in raw).toBe(false);
    const kids = [0, 1, 2, 3].map((k) =>
      spawnChild(() => {
        for (let i = k; i < 1000; i += 4) a.typed[i] = i * 0.5;
        raw.set(k, k + 1);
      }),
    );
    for (const k of kids) k.joinSync();
    expect(a.toArray().every((x, i) => x === i * 0.5)).toBe(true);
    expect(raw.toArray()).toEqual([1, 2, 3, 4]);
  });

  it('large arrays get their own mapping and still work', () => {
    const a = new SharedArray('B', 1 << 20);
    const child = spawnChild(() => a.typed.fill(7));
    child.joinSync();
    expect(a.get(-1)).toBe(7);
    expect(a.get(12345)).toBe(7);
  });
});
