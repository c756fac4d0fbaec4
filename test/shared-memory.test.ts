// SharedMemory: named POSIX segments, attach by name from other processes,
// errors, close/unlink, and the tracker that removes a name once its creator
// and every process forked from it are gone, even after SIGKILL.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ClosedError, FileExistsError, FileNotFoundError, OSError, Process, SharedMemory } from '../dist/index.js';
import { childrenOf, dist, root, running, runScript, shmEntries, waitUntil } from './helpers.js';

const nativeJs = join(root, 'dist', 'native.js');
// Names made by this file start with it, so other test files' segments never count.
const prefix = `nmt_${randomBytes(3).toString('hex')}`;
let serial = 0;
const fresh = (): string => `${prefix}_${serial++}`;
const ours = (): string[] => shmEntries().filter((e) => e.startsWith(prefix));
const exists = (name: string): boolean => existsSync(`/dev/shm/${name}`);

function source(text: string): string {
  return text.replaceAll('NODEMP', JSON.stringify(dist)).replaceAll('NATIVE', JSON.stringify(nativeJs));
}

const scripts = new Set<number>();

afterEach(() => {
  for (const group of scripts) {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // The whole group has already exited.
    }
  }
  scripts.clear();
});

/** A script in a fresh `node` whose stdout lines the test reads while it runs. */
function start(text: string, args: string[] = []): { child: ChildProcess; line(): Promise<string>; exited: Promise<unknown> } {
  const dir = mkdtempSync(join(tmpdir(), 'nodemp-shm-'));
  const file = join(dir, 'script.mjs');
  writeFileSync(file, source(text));
  // A group of its own, so that afterEach can end the script and every
  // process it forked even when the test failed halfway.
  const child = spawn(process.execPath, ['--single-threaded', file, ...args], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  if (child.pid !== undefined) scripts.add(child.pid);
  const lines: string[] = [];
  let wake = (): void => {};
  let ended = false;
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    wake();
  });
  const exited = new Promise((resolve) => child.once('exit', resolve)).then(() => {
    ended = true;
    wake();
  });
  return {
    child,
    exited,
    async line() {
      while (lines.length === 0) {
        if (ended) throw new Error('the script exited before printing a line');
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return lines.shift()!;
    },
  };
}

function stat(pid: number): { ppid: number; session: number; comm: string } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(fields[1]), session: Number(fields[3]), comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')) };
}

afterAll(() => {
  for (const name of ours()) new SharedMemory({ name }).unlink();
});

describe('SharedMemory', () => {
  it('creates a zero-filled segment with a short generated name, and attaches to it by name', () => {
    const shm = new SharedMemory({ create: true, size: 10000 });
    try {
      expect(shm.name).toMatch(/^nodemp_[0-9a-f]+$/);
      expect(shm.name.length).toBeLessThanOrEqual(30);
      expect(shm.size).toBe(10000);
      expect(shm.buf).toBeInstanceOf(Buffer);
      expect(shm.buf.length).toBe(10000);
      expect(shm.buf.every((b) => b === 0)).toBe(true);
      expect(exists(shm.name)).toBe(true);
      shm.buf.write('hello', 9000);
      const other = new SharedMemory({ name: shm.name });
      expect(other.size).toBe(10000);
      expect(other.buf.toString('utf8', 9000, 9005)).toBe('hello');
      other.buf[0] = 99;
      expect(shm.buf[0]).toBe(99);
      other.close();
    } finally {
      shm.close();
      shm.unlink();
    }
    expect(exists(shm.name)).toBe(false);
  });

  it('takes a given name, and the size from the segment when attaching', () => {
    const name = fresh();
    const shm = new SharedMemory({ name, create: true, size: 64 });
    const attached = new SharedMemory({ name, size: 0 });
    expect([shm.name, attached.name, attached.size]).toEqual([name, name, 64]);
    attached.close();
    shm.close();
    shm.unlink();
  });

  it('shares memory with an unrelated process that attaches by name, which does not own the name', () => {
    const name = fresh();
    const shm = new SharedMemory({ name, create: true, size: 4096 });
    shm.buf.write('from the creator');
    const r = runScript(
      source(`
        import { SharedMemory } from NODEMP;
        import { native } from NATIVE;
        const shm = new SharedMemory({ name: process.argv[2] });
        console.log(shm.buf.toString('utf8', 0, 16), shm.size);
        shm.buf.write('from the other!!', 100);
        shm.close();
        console.log('tracker', native.trackerPid());
      `),
      { args: [name] },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('from the creator 4096');
    // Attaching starts no tracker, and the attacher's exit removes nothing.
    expect(r.stdout).toContain('tracker 0');
    expect(shm.buf.toString('utf8', 100, 116)).toBe('from the other!!');
    expect(exists(name)).toBe(true);
    shm.close();
    shm.unlink();
  });

  it('is shared with forked children, which inherit the mapping and can attach by name', async () => {
    const shm = new SharedMemory({ name: fresh(), create: true, size: 1024 });
    const p = new Process({
      target: () => {
        shm.buf[0] = 1;
        const again = new SharedMemory({ name: shm.name });
        again.buf[1] = 2;
        again.close();
        shm.close();
      },
    });
    p.start();
    expect(await p.join(10000)).toBe(0);
    expect([shm.buf[0], shm.buf[1]]).toEqual([1, 2]);
    // The child's close() unmapped only its own view.
    shm.buf[2] = 3;
    expect(shm.buf[2]).toBe(3);
    expect(exists(shm.name)).toBe(true);
    shm.close();
    shm.unlink();
  });

  it('raises FileExistsError and FileNotFoundError, as Python does', () => {
    const name = fresh();
    const shm = new SharedMemory({ name, create: true, size: 16 });
    let error: unknown;
    try {
      new SharedMemory({ name, create: true, size: 16 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FileExistsError);
    expect(error).toBeInstanceOf(OSError);
    expect(error).toMatchObject({ code: 'EEXIST', syscall: 'shm_open' });
    expect((error as Error).message).toContain(name);
    shm.close();
    shm.unlink();
    expect(() => shm.unlink()).toThrow(FileNotFoundError);
    expect(() => new SharedMemory({ name })).toThrow(FileNotFoundError);
    expect(() => new SharedMemory({ name })).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'shm_open' }));
  });

  it('rejects bad options with clear messages', () => {
    const bad = (options: unknown) => () => new SharedMemory(options as never);
    expect(bad(undefined)).toThrow(/expected an options object/);
    expect(bad(42)).toThrow(TypeError);
    expect(bad({})).toThrow(/expected a name to attach to, or create: true/);
    expect(bad({ create: true })).toThrow(/expected size to be a number, got undefined/);
    expect(bad({ create: true, size: '8' })).toThrow(TypeError);
    expect(bad({ create: true, size: 0 })).toThrow(/expected size to be a positive integer, got 0/);
    expect(bad({ create: true, size: -1 })).toThrow(RangeError);
    expect(bad({ create: true, size: 1.5 })).toThrow(RangeError);
    expect(bad({ create: true, size: NaN })).toThrow(RangeError);
    expect(bad({ create: 'yes', size: 8 })).toThrow(/expected create to be a boolean, got string/);
    expect(bad({ create: true, size: 8, track: 1 })).toThrow(/expected track to be a boolean/);
    expect(bad({ name: 'a/b', create: true, size: 8 })).toThrow(/without '\/'/);
    expect(bad({ name: '', create: true, size: 8 })).toThrow(TypeError);
    expect(bad({ name: 'a\nb', create: true, size: 8 })).toThrow(TypeError);
    expect(bad({ name: 7 })).toThrow(/expected name to be a string, got number/);
    expect(bad({ name: fresh(), size: -1 })).toThrow(/non-negative integer, got -1/);
    expect(bad({ name: 'x'.repeat(256), create: true, size: 8 })).toThrow(/at most 255 bytes, got 256/);
    expect(ours()).toEqual([]);
  });

  it('close() detaches every view of buf, makes buf throw, and is idempotent', () => {
    const shm = new SharedMemory({ name: fresh(), create: true, size: 256 });
    const other = new SharedMemory({ name: shm.name });
    const view = shm.buf;
    const words = new Int32Array(shm.buf.buffer);
    shm.buf[5] = 5;
    shm.close();
    expect(view.length).toBe(0);
    expect(words.length).toBe(0);
    expect(() => shm.buf).toThrow(ClosedError);
    expect(() => shm.buf).toThrow(/is closed/);
    shm.close();
    // Another mapping of the same segment is untouched.
    expect(other.buf[5]).toBe(5);
    {
      using scoped = new SharedMemory({ name: shm.name });
      expect(scoped.buf[5]).toBe(5);
      other.close();
    }
    shm.unlink();
  });

  it('a collected SharedMemory unmaps, and a closed one never unmaps a mapping made after it', () => {
    const r = runScript(
      `
        import { readFileSync } from 'node:fs';
        import { SharedMemory } from NODEMP;
        const mapped = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/dev/shm/nodemp_')).length;
        const turn = () => new Promise((r) => setTimeout(r, 20));
        (() => {
          for (let i = 0; i < 20; i++) {
            const s = new SharedMemory({ create: true, size: 65536 });
            s.buf.fill(1);
            s.unlink();
          }
        })();
        console.log('mapped', mapped());
        for (let i = 0; i < 100 && mapped() > 0; i++) { globalThis.gc(); await turn(); }
        console.log('after gc', mapped());
        let a = new SharedMemory({ create: true, size: 65536 });
        a.unlink();
        a.close();
        a = null;
        const b = new SharedMemory({ create: true, size: 65536 });
        b.unlink();
        b.buf.fill(7);
        for (let i = 0; i < 5; i++) { globalThis.gc(); await turn(); }
        console.log('b', mapped(), b.buf[0], b.buf[65535]);
      `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('mapped 20');
    expect(r.stdout).toContain('after gc 0');
    expect(r.stdout).toContain('b 1 7 7');
    expect(r.status).toBe(0);
  });
});

describe('owner-death cleanup', () => {
  it('removes the names when the creator is SIGKILLed, and the tracker exits', async () => {
    const s = start(`
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      const a = new SharedMemory({ name: process.argv[2] + '_a', create: true, size: 4096 });
      const b = new SharedMemory({ name: process.argv[2] + '_b', create: true, size: 1 << 20 });
      console.log(native.trackerPid());
      setInterval(() => {}, 1000);
    `, [fresh()]);
    const tracker = Number(await s.line());
    expect(tracker).toBeGreaterThan(0);
    expect(ours().length).toBe(2);
    expect(running(tracker)).toBe(true);
    s.child.kill('SIGKILL');
    await s.exited;
    expect(await waitUntil(() => ours().length === 0, 5000)).toBe(true);
    expect(await waitUntil(() => !running(tracker), 5000)).toBe(true);
  });

  it('keeps the names while a forked descendant lives, and removes them when the last one is gone', async () => {
    const name = fresh();
    const s = start(`
      import { Process, SharedMemory } from NODEMP;
      import { native } from NATIVE;
      const shm = new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      const child = new Process({ target: () => setInterval(() => { shm.buf[0]++; }, 50) });
      child.start();
      console.log(native.trackerPid(), child.pid);
      setInterval(() => {}, 1000);
    `, [name]);
    const [tracker, child] = (await s.line()).split(' ').map(Number);
    s.child.kill('SIGKILL');
    await s.exited;
    await new Promise((r) => setTimeout(r, 300));
    expect(running(child)).toBe(true);
    expect(exists(name)).toBe(true);
    expect(running(tracker)).toBe(true);
    process.kill(child, 'SIGKILL');
    expect(await waitUntil(() => !exists(name), 5000)).toBe(true);
    expect(await waitUntil(() => !running(tracker), 5000)).toBe(true);
  });

  it('registers segments that forked children create, concurrently, with the same tracker', async () => {
    const base = fresh();
    const s = start(`
      import { Process, SharedMemory } from NODEMP;
      import { native } from NATIVE;
      const base = process.argv[2];
      new SharedMemory({ name: base, create: true, size: 8 });
      const kids = [0, 1, 2, 3].map((k) => new Process({ target: () => {
        for (let i = 0; i < 80; i++) new SharedMemory({ name: base + '_' + k + '_' + i, create: true, size: 4096 });
      } }));
      for (const k of kids) k.start();
      for (const k of kids) await k.join();
      console.log(native.trackerPid(), kids.map((k) => k.exitCode).join(','));
      setInterval(() => {}, 1000);
    `, [base]);
    const [tracker, codes] = (await s.line()).split(' ');
    expect(codes).toBe('0,0,0,0');
    // The children are gone; their names belong to the creator's tree, which lives.
    expect(ours().filter((e) => e.startsWith(base)).length).toBe(321);
    s.child.kill('SIGKILL');
    await s.exited;
    expect(await waitUntil(() => !ours().some((e) => e.startsWith(base)), 5000)).toBe(true);
    expect(await waitUntil(() => !running(Number(tracker)), 5000)).toBe(true);
  });

  it('does not count exec()ed programs as users, and removes names at a normal exit too', async () => {
    const name = fresh();
    const s = start(`
      import { spawn } from 'node:child_process';
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
      console.log(native.trackerPid(), sleeper.pid);
      setInterval(() => {}, 1000);
    `, [name]);
    const [tracker, sleeper] = (await s.line()).split(' ').map(Number);
    try {
      s.child.kill('SIGKILL');
      await s.exited;
      expect(await waitUntil(() => !exists(name), 5000)).toBe(true);
      expect(running(sleeper)).toBe(true);
      expect(await waitUntil(() => !running(tracker), 5000)).toBe(true);
    } finally {
      process.kill(sleeper, 'SIGKILL');
    }
    const r = runScript(source(`
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      console.log(native.trackerPid());
    `), { args: [name] });
    expect(r.status).toBe(0);
    expect(await waitUntil(() => !exists(name), 5000)).toBe(true);
    expect(await waitUntil(() => !running(Number(r.stdout.trim())), 5000)).toBe(true);
  });

  it('forgets a name once it is unlinked, so a later segment of that name survives the creator', async () => {
    const name = fresh();
    const s = start(`
      import { SharedMemory } from NODEMP;
      const shm = new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      shm.unlink();
      console.log('unlinked');
      setInterval(() => {}, 1000);
    `, [name]);
    await s.line();
    const again = new SharedMemory({ name, create: true, size: 64, track: false });
    s.child.kill('SIGKILL');
    await s.exited;
    await new Promise((r) => setTimeout(r, 300));
    expect(exists(name)).toBe(true);
    again.close();
    again.unlink();
  });

  it('leaves an untracked segment (track: false) for someone to unlink', () => {
    const name = fresh();
    const r = runScript(source(`
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      new SharedMemory({ name: process.argv[2], create: true, size: 64, track: false }).buf[0] = 7;
      console.log('tracker', native.trackerPid());
    `), { args: [name] });
    expect(r.stdout).toContain('tracker 0');
    expect(exists(name)).toBe(true);
    const shm = new SharedMemory({ name });
    expect(shm.buf[0]).toBe(7);
    shm.close();
    shm.unlink();
  });

  it('runs a tracker that holds no inherited descriptor, is nobody\'s child, and ignores terminal signals', async () => {
    const name = fresh();
    const s = start(`
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      console.log(native.trackerPid());
      process.stdin.resume();
      setInterval(() => {}, 1000);
    `, [name]);
    const tracker = Number(await s.line());
    const creator = s.child.pid!;
    // The tracker names itself just after it is forked, which a loaded machine may not have run yet.
    await waitUntil(() => stat(tracker).comm === 'nodemp-tracker', 5000);
    const info = stat(tracker);
    expect(info.comm).toBe('nodemp-tracker');
    expect(info.ppid).not.toBe(creator);
    expect(childrenOf(creator)).not.toContain(tracker);
    expect(info.session).toBe(tracker);
    expect(readdirSync(`/proc/${tracker}/fd`)).toEqual(['0']);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.kill(tracker, signal);
    await new Promise((r) => setTimeout(r, 200));
    expect(running(tracker)).toBe(true);
    expect(exists(name)).toBe(true);
    s.child.kill('SIGTERM');
    await s.exited;
    expect(await waitUntil(() => !exists(name), 5000)).toBe(true);
    expect(await waitUntil(() => !running(tracker), 5000)).toBe(true);
  });

  // The sanitizer build keeps the tracker's memory: ASan's shadow lives in it.
  it.skipIf(process.env.LD_PRELOAD?.includes('libasan'))('runs a tracker that gives back the memory it inherited from its creator', async () => {
    const s = start(`
      import { Process, SharedMemory } from NODEMP;
      import { native } from NATIVE;
      const heap = Array.from({ length: 2e6 }, (_, i) => ({ i, s: 'item ' + i }));
      const mapped = new SharedMemory({ create: true, size: 64 << 20 });
      mapped.buf.fill(1);
      // A Process start makes the V8 heap inheritable by fork().
      const p = new Process({ target: () => {} });
      p.start();
      await p.join();
      const shm = new SharedMemory({ name: process.argv[2], create: true, size: 64 });
      console.log(native.trackerPid(), heap.length, mapped.name);
      mapped.unlink();
      setInterval(() => {}, 1000);
    `, [fresh()]);
    const [tracker] = (await s.line()).split(' ').map(Number);
    const status = readFileSync(`/proc/${tracker}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
    const creatorKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${s.child.pid}/status`, 'utf8'))![1]);
    expect(creatorKb).toBeGreaterThan(150_000);
    expect(rssKb).toBeLessThan(16_000);
    expect(readFileSync(`/proc/${tracker}/maps`, 'utf8')).not.toContain('/dev/shm/');
    s.child.kill('SIGKILL');
    await s.exited;
    expect(await waitUntil(() => !running(tracker), 5000)).toBe(true);
    expect(await waitUntil(() => ours().length === 0, 5000)).toBe(true);
  });

  it('replaces a killed tracker and tells the new one the names the old one had', async () => {
    const base = fresh();
    const s = start(`
      import { readFileSync } from 'node:fs';
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      new SharedMemory({ name: process.argv[2] + '_a', create: true, size: 64 });
      const first = native.trackerPid();
      process.kill(first, 'SIGKILL');
      while (true) {
        try { process.kill(first, 0); } catch { break; }
        const stat = readFileSync('/proc/' + first + '/stat', 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') break;
        await new Promise((r) => setTimeout(r, 10));
      }
      new SharedMemory({ name: process.argv[2] + '_b', create: true, size: 64 });
      console.log(first, native.trackerPid());
      setInterval(() => {}, 1000);
    `, [base]);
    const [first, second] = (await s.line()).split(' ').map(Number);
    expect(second).toBeGreaterThan(0);
    expect(second).not.toBe(first);
    expect(exists(`${base}_a`) && exists(`${base}_b`)).toBe(true);
    s.child.kill('SIGKILL');
    await s.exited;
    expect(await waitUntil(() => !exists(`${base}_a`) && !exists(`${base}_b`), 5000)).toBe(true);
    expect(await waitUntil(() => !running(second), 5000)).toBe(true);
  });
});

describe('no leaks', () => {
  it('leaves no descriptor but the tracker pipe, no mapping, no child and no name behind', async () => {
    const r = runScript(source(`
      import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
      import { SharedMemory } from NODEMP;
      import { native } from NATIVE;
      const fds = () => readdirSync('/proc/self/fd').map((fd) => { try { return fd + ' ' + readlinkSync('/proc/self/fd/' + fd); } catch { return ''; } });
      const before = fds();
      for (let i = 0; i < 50; i++) {
        const s = new SharedMemory({ create: true, size: 8192 });
        const a = new SharedMemory({ name: s.name });
        a.buf[0] = i;
        a.close();
        s.close();
        s.unlink();
      }
      try { new SharedMemory({ name: 'nodemp_missing_' + process.pid }); } catch {}
      const added = fds().filter((fd) => fd && !before.includes(fd));
      const maps = readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/dev/shm/'));
      const children = readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).filter((p) => {
        try { const t = readFileSync('/proc/' + p + '/stat', 'utf8'); return Number(t.slice(t.lastIndexOf(')') + 2).split(' ')[1]) === process.pid; } catch { return false; }
      });
      console.log(JSON.stringify({ added, maps: maps.length, children: children.length, tracker: native.trackerPid() }));
    `));
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { added: string[]; maps: number; children: number; tracker: number };
    expect(out.added.length).toBe(1);
    expect(out.added[0]).toMatch(/pipe:/);
    expect(out.maps).toBe(0);
    expect(out.children).toBe(0);
    expect(await waitUntil(() => !running(out.tracker), 5000)).toBe(true);
  });

  it('this file left no segment of its own behind', () => {
    expect(ours()).toEqual([]);
  });
});
