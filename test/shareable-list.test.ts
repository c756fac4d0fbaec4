// ShareableList: a fixed-length list of primitives in a SharedMemory segment.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClosedError, FileExistsError, FileNotFoundError, Process, ShareableList, SharedMemory } from '../dist/index.js';
import { dist, runScript, shmEntries, waitUntil } from './helpers.js';

const prefix = `nml_${randomBytes(3).toString('hex')}`;
let serial = 0;
const fresh = (): string => `${prefix}_${serial++}`;
const ours = (): string[] => shmEntries().filter((e) => e.startsWith(prefix));

// Lists made here are unlinked by the test that made them; this catches the rest.
afterAll(() => {
  for (const name of ours()) new SharedMemory({ name }).unlink();
});

function made(sequence: Iterable<unknown>): ShareableList {
  return new ShareableList(sequence as never, { name: fresh() });
}

function done(list: ShareableList): void {
  list.shm.close();
  list.shm.unlink();
}

describe('ShareableList', () => {
  it('stores and returns every supported type', () => {
    const values = [0, 42, -7, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 2.5, -0, NaN, Infinity, 1e300, 2 ** 60, -(2n ** 63n), 2n ** 63n - 1n, true, false, null, '', 'héllo ✓', Buffer.from([0, 1, 2, 0])];
    const list = made(values);
    try {
      expect(list.length).toBe(values.length);
      const back = list.toArray();
      for (let i = 0; i < values.length; i++) {
        if (values[i] instanceof Uint8Array) {
          expect(back[i]).toBeInstanceOf(Buffer);
          expect([...(back[i] as Buffer)]).toEqual([0, 1, 2, 0]);
        } else {
          expect(Object.is(back[i], values[i]), `item ${i}: ${String(back[i])}`).toBe(true);
        }
      }
      expect([...list]).toHaveLength(values.length);
      expect(list.get(-1)).toEqual(Buffer.from([0, 1, 2, 0]));
      expect(list.get(-values.length)).toBe(0);
    } finally {
      done(list);
    }
  });

  it('describes its items with a Python-style format string', () => {
    const list = made([1, 2.5, 3n, true, null, 'abc', 'x'.repeat(9), new Uint8Array(16)]);
    expect(list.format).toBe('qdqxxxxxxx?xxxxxx?x8s16s16s');
    list.set(0, 'str');
    list.set(5, 1.5);
    expect(list.format).toBe('8sdqxxxxxxx?xxxxxx?xd16s16s');
    done(list);
  });

  it('lets an item change type within its storage and refuses what does not fit', () => {
    const list = made([1, 'abc', new Uint8Array(3), null]);
    try {
      list.set(0, '8 bytes!');
      expect(list.get(0)).toBe('8 bytes!');
      list.set(1, 3n);
      expect(list.get(1)).toBe(3n);
      list.set(1, 'é'.repeat(4));
      expect(list.get(1)).toBe('éééé');
      list.set(3, Buffer.from('12345678'));
      expect(list.get(3)).toEqual(Buffer.from('12345678'));
      list.set(-2, false);
      expect(list.get(2)).toBe(false);
      expect(() => list.set(0, '9 bytes!!')).toThrow(/a string of 9 bytes exceeds the item's storage of 8 bytes/);
      expect(() => list.set(1, 'é'.repeat(5))).toThrow(RangeError);
      expect(() => list.set(2, new Uint8Array(9))).toThrow(/bytes value of 9 bytes exceeds/);
      // A refused value leaves the item as it was.
      expect(list.get(0)).toBe('8 bytes!');
    } finally {
      done(list);
    }
  });

  it('rejects bad values and indices', () => {
    const list = made([1, 2, 3]);
    try {
      expect(() => list.get(3)).toThrow(/index 3 is out of range for a list of length 3/);
      expect(() => list.get(-4)).toThrow(RangeError);
      expect(() => list.set(5, 1)).toThrow(RangeError);
      expect(() => list.get(1.5)).toThrow(/expected an integer index, got 1.5/);
      expect(() => list.get('0' as never)).toThrow(TypeError);
      expect(() => list.set(0, undefined as never)).toThrow(/expected a number, bigint, boolean, string, Uint8Array or null, got undefined/);
      expect(() => list.set(0, {} as never)).toThrow(TypeError);
      expect(() => list.set(0, new Int32Array(2) as never)).toThrow(/got Int32Array/);
      expect(() => list.set(0, 2n ** 63n)).toThrow(/signed 64-bit range/);
      expect(() => made([1, undefined])).toThrow(/item 1: expected a number/);
      expect(() => new ShareableList(5 as never)).toThrow(/expected an iterable/);
      expect(() => new ShareableList([], 'name' as never)).toThrow(/expected an options object/);
      expect(list.toArray()).toEqual([1, 2, 3]);
    } finally {
      done(list);
    }
  });

  it('counts and finds values as Python does, bytes by content', () => {
    const list = made([1, 'a', 1, NaN, Buffer.from('xy'), 1n, null]);
    try {
      expect(list.count(1)).toBe(2);
      expect(list.count(1n)).toBe(1);
      expect(list.count(NaN)).toBe(1);
      expect(list.count(Buffer.from('xy'))).toBe(1);
      expect(list.count('b')).toBe(0);
      expect(list.index(1)).toBe(0);
      expect(list.index(NaN)).toBe(3);
      expect(list.index(new Uint8Array([120, 121]))).toBe(4);
      expect(list.index(null)).toBe(6);
      expect(() => list.index('b')).toThrow(/"b" is not in the list/);
    } finally {
      done(list);
    }
  });

  it('makes an empty list by default, with a generated name', () => {
    const list = new ShareableList();
    try {
      expect(list.length).toBe(0);
      expect(list.toArray()).toEqual([]);
      expect(list.format).toBe('');
      expect(list.shm.name).toMatch(/^nodemp_/);
      const again = new ShareableList(null, { name: list.shm.name });
      expect(again.length).toBe(0);
      again.shm.close();
    } finally {
      done(list);
    }
  });

  it('attaches by name, sees the same items, and reports missing or taken names', () => {
    const list = made(['a', 2, null]);
    try {
      const other = new ShareableList(null, { name: list.shm.name });
      expect(other.toArray()).toEqual(['a', 2, null]);
      other.set(2, 'now');
      expect(list.get(2)).toBe('now');
      other.shm.close();
      expect(() => new ShareableList([1], { name: list.shm.name })).toThrow(FileExistsError);
      expect(() => new ShareableList(null, { name: fresh() })).toThrow(FileNotFoundError);
    } finally {
      done(list);
    }
  });

  it('refuses a segment that does not hold a list, and unmaps it again', () => {
    const shm = new SharedMemory({ name: fresh(), create: true, size: 64 });
    try {
      expect(() => new ShareableList(null, { name: shm.name })).toThrow(/does not hold a ShareableList \(no ShareableList header\)/);
      const r = runScript(
        `
          import { readFileSync } from 'node:fs';
          import { ShareableList } from NODEMP;
          try { new ShareableList(null, { name: process.argv[2] }); } catch (e) { console.log(e.name); }
          console.log('mapped', readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes(process.argv[2])).length);
        `,
        { args: [shm.name] },
      );
      expect(r.stdout).toBe('TypeError\nmapped 0\n');
    } finally {
      shm.close();
      shm.unlink();
    }
  });

  it('throws a clear error once its segment is closed', () => {
    const list = made([1, 'two']);
    list.shm.close();
    expect(() => list.get(0)).toThrow(ClosedError);
    expect(() => list.get(0)).toThrow(/is closed/);
    expect(() => list.set(0, 3)).toThrow(/is closed/);
    expect(() => list.format).toThrow(/is closed/);
    list.shm.unlink();
  });
});

describe('ShareableList across processes', () => {
  it('is read and written by a forked child', async () => {
    const list = made([0, 'hello', null]);
    try {
      const p = new Process({
        target: () => {
          list.set(0, (list.get(0) as number) + 41 + 1);
          const byName = new ShareableList(null, { name: list.shm.name });
          byName.set(2, `child saw ${String(byName.get(1))}`.slice(0, 8));
        },
      });
      p.start();
      expect(await p.join(10000)).toBe(0);
      expect(list.toArray()).toEqual([42, 'hello', 'child sa']);
    } finally {
      done(list);
    }
  });

  it('is read and written by an unrelated process attached by name', () => {
    const list = made([1.5, 'abc', true, 10n]);
    try {
      const r = runScript(
        `
          import { ShareableList } from NODEMP;
          const list = new ShareableList(null, { name: process.argv[2] });
          console.log(JSON.stringify(list.toArray(), (k, v) => typeof v === 'bigint' ? v + 'n' : v), list.format);
          list.set(1, 'xyz');
          list.set(3, list.get(3) * 2n);
          list.shm.close();
        `,
        { args: [list.shm.name] },
      );
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('[1.5,"abc",true,"10n"] d8sxxxxxxx?q\n');
      expect(list.toArray()).toEqual([1.5, 'xyz', true, 20n]);
      // The attaching process owned nothing: the list is still there.
      expect(existsSync(`/dev/shm/${list.shm.name}`)).toBe(true);
    } finally {
      done(list);
    }
  });

  it('goes away with its creator when the creator is SIGKILLed', async () => {
    const name = fresh();
    const dir = mkdtempSync(join(tmpdir(), 'nodemp-list-'));
    const file = join(dir, 'creator.mjs');
    writeFileSync(
      file,
      `import { ShareableList } from ${JSON.stringify(dist)};
       new ShareableList(['kept', 1, 2], { name: process.argv[2] });
       console.log('ready');
       setInterval(() => {}, 1000);`,
    );
    const creator = spawn(process.execPath, ['--single-threaded', file, name], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => creator.once('exit', resolve));
    let other: ShareableList;
    try {
      await new Promise((resolve) => creator.stdout.once('data', resolve));
      other = new ShareableList(null, { name });
      expect(other.toArray()).toEqual(['kept', 1, 2]);
    } finally {
      creator.kill('SIGKILL');
      await exited;
    }
    expect(await waitUntil(() => !existsSync(`/dev/shm/${name}`), 5000)).toBe(true);
    // A mapping outlives the name.
    expect(other.get(0)).toBe('kept');
    other.shm.close();
  });

  it('this file left no segment of its own behind', () => {
    expect(ours()).toEqual([]);
  });
});
