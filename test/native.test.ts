// The native core: shared mappings, cross-process futex, errors across the boundary.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OSError, Process } from '../dist/index.js';
import { native } from '../dist/native.js';
import { root } from './helpers.js';

describe('shared mappings', () => {
  it('maps zero-filled shared memory that a forked child writes and the parent reads', async () => {
    const buf = native.mapShared(1 << 20);
    expect(buf.byteLength).toBe(1 << 20);
    const bytes = new Uint8Array(buf);
    expect(bytes.every((b) => b === 0)).toBe(true);
    const p = new Process({ target: () => bytes.fill(7) });
    p.start();
    await p.join();
    expect(bytes[0]).toBe(7);
    expect(bytes[(1 << 20) - 1]).toBe(7);
  });

  it('rejects sizes that are not positive integers', () => {
    expect(() => native.mapShared(0)).toThrow(RangeError);
    expect(() => native.mapShared(-5)).toThrow(/positive integer, got -5/);
    expect(() => native.mapShared(1.5)).toThrow(RangeError);
    expect(() => native.mapShared('8' as never)).toThrow(TypeError);
  });
});

describe('futex', () => {
  it('reports a changed value and a timeout', () => {
    const buf = native.mapShared(64);
    const words = new Int32Array(buf);
    words[0] = 5;
    expect(native.futexWait(buf, 0, 4, 1000)).toBe(1);
    const t0 = performance.now();
    expect(native.futexWait(buf, 0, 5, 30)).toBe(2);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(28);
    expect(native.futexWake(buf, 0, 1)).toBe(0);
  });

  it('wakes a waiter in another process', async () => {
    const buf = native.mapShared(64);
    const words = new Int32Array(buf);
    const p = new Process({
      target: () => {
        Atomics.store(words, 1, 1);
        native.futexWake(buf, 4, 1);
        while (Atomics.load(words, 0) === 0) native.futexWait(buf, 0, 0, 5000);
        words[2] = 99;
      },
    });
    p.start();
    while (Atomics.load(words, 1) === 0) native.futexWait(buf, 4, 0, 1000);
    Atomics.store(words, 0, 1);
    native.futexWake(buf, 0, 1);
    expect(await p.join(5000)).toBe(0);
    expect(words[2]).toBe(99);
  });

  it('rejects offsets outside the buffer or not word-aligned', () => {
    const buf = native.mapShared(16);
    expect(() => native.futexWait(buf, 2, 0, 0)).toThrow(/multiple of 4/);
    expect(() => native.futexWait(buf, 16, 0, 0)).toThrow(RangeError);
    expect(() => native.futexWake(buf, -4, 1)).toThrow(RangeError);
    expect(() => native.futexWait(buf, 0, 0, -1)).toThrow(/non-negative/);
    expect(() => native.futexWait({} as never, 0, 0)).toThrow(TypeError);
  });
});

describe("the event loop's hold on nodemp's notifications (the soak's diagnosis)", () => {
  it("shows a child's exit watch and an async wait on the ring as the loop has them", async () => {
    const gate = new Int32Array(native.mapShared(4));
    const child = new Process({ target: () => native.futexWait(gate.buffer as ArrayBuffer, 0, 0, 10000) });
    child.start();
    const exited = child.join();
    const pending = new Promise((resolve) => native.waitAsync(gate.buffer as ArrayBuffer, 0, 0, 10000, () => resolve(true)));
    const turns = native.loopTurns();
    // The second immediate runs a turn later: after a poll, which puts new watches in the epoll set.
    await new Promise(setImmediate);
    await new Promise(setImmediate);
    expect(native.loopTurns()).toBeGreaterThan(turns);
    const watch = native.watchState(child.pid as number);
    expect(watch).toMatchObject({ pid: child.pid, fdPid: child.pid, watched: true, active: true, readable: false, loopWatcher: 'ours', inEpoll: true });
    expect(native.exitWatches().map((w) => w.pid)).toContain(child.pid);
    const state = native.waiterState();
    expect(state.inFlight).toBeGreaterThanOrEqual(1);
    if (native.waitMechanism() === 'io_uring') expect(state.ring).toMatchObject({ active: true, loopWatcher: 'ours', inEpoll: true, completionsUnread: 0 });
    Atomics.store(gate, 0, 1);
    native.futexWake(gate.buffer as ArrayBuffer, 0, 2);
    // Before the loop runs again: the child's exit (and the ring's completion)
    // show in what the epoll set reports, and that look takes nothing from the loop.
    const until = Date.now() + 10000;
    while (!native.watchState(child.pid as number)!.readable && Date.now() < until);
    if (process.platform === 'linux') {
      const ready = native.waiterState().epollReady!;
      expect(ready).toContain(native.watchState(child.pid as number)!.fd);
      if (native.waitMechanism() === 'io_uring') expect(ready).toContain(state.ring!.fd);
    }
    expect(await pending).toBe(true);
    expect(await exited).toBe(0);
    expect(native.watchState(child.pid as number)).toBe(null);
  });
});

describe('errors crossing the native boundary', () => {
  it('become OSError with the errno name, number and syscall', () => {
    let error: unknown;
    try {
      native.waitSync(1, 0);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OSError);
    expect(error).toMatchObject({ code: 'ECHILD', errno: 10, syscall: 'waitpid' });
    expect((error as Error).message).toMatch(/waitpid failed: No child processes \(ECHILD\): pid 1/);
    expect(() => native.execve('/nonexistent/nodemp', ['x'], [])).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'execve' }));
  });
});

describe('the loader', () => {
  it('says which places it tried, what each held, and what to run, when no addon fits', () => {
    const copy = mkdtempSync(join(tmpdir(), 'nodemp-loader-'));
    try {
      cpSync(join(root, 'dist'), join(copy, 'dist'), { recursive: true });
      cpSync(join(root, 'package.json'), join(copy, 'package.json'));
      mkdirSync(join(copy, 'build', 'Release'), { recursive: true });
      symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'));
      const r = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(join(copy, 'dist', 'index.js'))}).catch((e) => { console.log(e.message); process.exit(3); })`], {
        encoding: 'utf8',
      });
      expect(r.status).toBe(3);
      expect(r.stdout).toContain(`Tried: ${copy}/build/Release/ (no .node file); ${copy}/build/Debug/ (missing); ${copy}/prebuilds/${process.platform}-${process.arch}/ (missing).`);
      expect(r.stdout).toContain('npm rebuild nodemp');
      expect(r.stdout).toMatch(/Loader said: No native build was found/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});
