// What a forked child inherits from its parent, and what of the parent's
// pending work must not run in it.
import { createServer, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Process } from '../dist/index.js';
import { native } from '../dist/native.js';
import { runScript, shared } from './helpers.js';

const parentPid = process.pid;
const inChild = (): boolean => native.getpid() !== parentPid;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('parent work does not run in the child', () => {
  it('pending timeouts, intervals and immediates of the parent never fire in the child', async () => {
    const mem = shared();
    const interval = setInterval(() => {
      if (inChild()) mem[0]++;
    }, 2);
    const timeout = setTimeout(() => {
      if (inChild()) mem[1]++;
    }, 20);
    const unrefd = setTimeout(() => {
      if (inChild()) mem[2]++;
    }, 20).unref();
    setImmediate(() => {
      if (inChild()) mem[3]++;
    });
    const p = new Process({ target: () => sleep(80).then(() => void (mem[4] = 1)) });
    p.start();
    expect(await p.join()).toBe(0);
    clearInterval(interval);
    clearTimeout(timeout);
    clearTimeout(unrefd);
    expect([...mem.slice(0, 5)]).toEqual([0, 0, 0, 0, 1]);
  });

  // The soak caught a fork pool's worker running the harness's continuations:
  // it went on as a second harness, took answers meant for another pool and
  // never exited.
  it('promise continuations and process.nextTick callbacks the parent queued before start() never run in the child; its own do', async () => {
    const mem = shared();
    const schedules: [string, (fn: () => void) => void][] = [
      ['a timer', (fn) => setTimeout(fn, 1)],
      ['an immediate', (fn) => setImmediate(fn)],
      ['a promise continuation', (fn) => void Promise.resolve().then(fn)],
      ['process.nextTick', (fn) => process.nextTick(fn)],
    ];
    const targets = [
      () => {
        process.nextTick(() => Atomics.add(mem, 3, 1));
        queueMicrotask(() => Atomics.add(mem, 4, 1));
      },
      async () => {
        await null;
        process.nextTick(() => Atomics.add(mem, 3, 1));
        queueMicrotask(() => Atomics.add(mem, 4, 1));
        await sleep(5);
      },
    ];
    let starts = 0;
    for (const [from, schedule] of schedules) {
      for (const target of targets) {
        const p = await new Promise<Process>((resolve) =>
          schedule(() => {
            void Promise.resolve().then(() => inChild() && Atomics.add(mem, 0, 1));
            void (async () => {
              await null;
              if (inChild()) Atomics.add(mem, 1, 1);
            })();
            process.nextTick(() => inChild() && Atomics.add(mem, 2, 1));
            const proc = new Process({ target });
            proc.start();
            resolve(proc);
          }),
        );
        expect(await p.join(), from).toBe(0);
        starts++;
        await sleep(5);
        expect([...mem.slice(0, 5)], from).toEqual([0, 0, 0, starts, starts]);
      }
    }
  });

  // The soak caught this one: a pool's pump waiting on setImmediate() went on
  // in a worker forked from a promise continuation run between two immediates.
  it('the rest of a batch of immediates start() was called in the middle of never runs in the child; it does in the parent', async () => {
    const mem = shared();
    const between: [string, (fn: () => void) => void][] = [
      ['a promise continuation', (fn) => void Promise.resolve().then(fn)],
      ['process.nextTick', (fn) => process.nextTick(fn)],
    ];
    const targets = [() => {}, () => sleep(20)];
    let rounds = 0;
    for (const [from, schedule] of between) {
      for (const target of targets) {
        let p!: Process;
        await new Promise<void>((done) => {
          setImmediate(() => schedule(() => {
            p = new Process({ target });
            p.start();
          }));
          setImmediate(() => Atomics.add(mem, inChild() ? 0 : 1, 1));
          setImmediate(() => {
            Atomics.add(mem, inChild() ? 0 : 1, 1);
            if (!inChild()) done();
          });
        });
        rounds++;
        expect(await p.join(), from).toBe(0);
        await sleep(5);
        expect([mem[0], mem[1]], from).toEqual([0, 2 * rounds]);
      }
    }
  });

  it('the caller\'s catch and finally blocks do not run in the child', async () => {
    const mem = shared();
    let p!: Process;
    try {
      p = new Process({ target: () => {} });
      p.start();
    } finally {
      if (inChild()) mem[0] = 1;
    }
    expect(await p.join()).toBe(0);
    expect(mem[0]).toBe(0);
  });

  it('a listening server of the parent is closed in the child: every connection is served by the parent', async () => {
    const server = createServer((socket) => socket.end(String(native.getpid())));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const p = new Process({ target: () => sleep(300) });
    p.start();
    const pids = await Promise.all(
      Array.from({ length: 20 }, () =>
        new Promise<string>((resolve, reject) => {
          const c = connect(port, '127.0.0.1');
          let data = '';
          c.on('data', (d) => (data += d));
          c.on('end', () => resolve(data));
          c.on('error', reject);
        }),
      ),
    );
    expect(await p.join()).toBe(0);
    server.close();
    expect(new Set(pids)).toEqual(new Set([String(process.pid)]));
  });

  it('parent exit and signal listeners are not inherited: terminate() works even if the parent catches SIGTERM', async () => {
    const mem = shared();
    const onExit = () => {
      if (inChild()) mem[0] = 1;
    };
    const onTerm = () => {
      if (inChild()) mem[1] = 1;
    };
    process.on('exit', onExit);
    process.on('SIGTERM', onTerm);
    try {
      const p = new Process({ target: () => sleep(10_000) });
      p.start();
      await sleep(30);
      p.terminate();
      expect(await p.join()).toBe(-15);
      const q = new Process({ target: () => {} });
      q.start();
      expect(await q.join()).toBe(0);
      expect([mem[0], mem[1]]).toEqual([0, 0]);
    } finally {
      process.off('exit', onExit);
      process.off('SIGTERM', onTerm);
    }
  });

  it('listeners the child adds itself work: exit, beforeExit, and its own SIGTERM handler', async () => {
    const mem = shared();
    const p = new Process({
      target: () => {
        process.on('beforeExit', () => {
          if (mem[0]++ === 0) setTimeout(() => (mem[1] = 1), 5);
        });
        process.on('exit', (code) => (mem[2] = 100 + code));
        process.on('SIGTERM', () => {
          mem[3] = 1;
          process.exit(3);
        });
        process.kill(process.pid, 'SIGTERM');
        setTimeout(() => {}, 50);
      },
    });
    p.start();
    expect(await p.join()).toBe(3);
    expect(mem[3]).toBe(1);
    expect(mem[2]).toBe(103);
  });
});

describe('start() from any kind of callback', () => {
  async function startFrom(schedule: (fn: () => void) => void): Promise<[number | null, number]> {
    const mem = shared();
    const p = await new Promise<Process>((resolve) =>
      schedule(() => {
        const proc = new Process({
          target: async () => {
            await sleep(5);
            await new Promise((r) => setImmediate(r));
            mem[0] = 1;
          },
        });
        proc.start();
        resolve(proc);
      }),
    );
    return [await p.join(), mem[0]];
  }

  it('a timer callback', async () => {
    expect(await startFrom((fn) => setTimeout(fn, 1))).toEqual([0, 1]);
  });
  it('the second immediate of a batch', async () => {
    expect(
      await startFrom((fn) => {
        setImmediate(() => {});
        setImmediate(fn);
        setImmediate(() => {});
      }),
    ).toEqual([0, 1]);
  });
  it('a promise continuation', async () => {
    expect(await startFrom((fn) => void Promise.resolve().then(fn))).toEqual([0, 1]);
  });
  it('process.nextTick', async () => {
    expect(await startFrom((fn) => process.nextTick(fn))).toEqual([0, 1]);
  });
  it('an I/O callback', async () => {
    const { readFile } = await import('node:fs');
    expect(await startFrom((fn) => readFile(new URL(import.meta.url), () => fn()))).toEqual([0, 1]);
  });
});

describe('stdio', () => {
  it('children share stdout/stderr, read stdin from /dev/null, and print a thrown error with the process name', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      import { readFileSync } from 'node:fs';
      const p = new Process({ name: 'reader', target: () => {
        console.log('child stdin bytes:', readFileSync(0).length);
        throw new Error('boom from child');
      }});
      p.start();
      console.log('exit', await p.join());
    `);
    expect(r.stdout).toContain('child stdin bytes: 0');
    expect(r.stdout).toContain('exit 1');
    expect(r.stderr).toContain('Process reader:');
    expect(r.stderr).toContain('Error: boom from child');
    expect(r.status).toBe(0);
  });

  it('an async target whose promise can never settle ends with code 13 and says why', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      const p = new Process({ target: () => new Promise(() => {}) });
      p.start();
      console.log('exit', await p.join());
    `);
    expect(r.stdout).toContain('exit 13');
    expect(r.stderr).toMatch(/never settled/);
  });
});

// Issue #16: started outside a microtask checkpoint (a timer or I/O callback,
// CommonJS top-level code) with no inherited socket, a fork child runs its
// target at once on the stack of start() and ends there when it leaves no
// work. In a plain `node` process, since a vitest worker's IPC channel is an
// inherited socket that keeps its children on the event-loop path.
describe('a target run at once, inside start()', () => {
  const cases = `
    import { Process, Value } from NODEMP;
    import { native } from NODEMP_NATIVE;
    import { phases, traceStarts } from NODEMP_TRACE;
    const stamps = new BigUint64Array(native.mapShared(8 * phases.kTracePhases));
    traceStarts(stamps.buffer);
    import { readFile, stat } from 'node:fs';
    const v = new Value('i', 0);
    const leaked = new Value('i', 0);
    const here = new URL(import.meta.url);
    const parentPid = process.pid;
    process.on('exit', () => { if (process.pid !== parentPid) v.value = -1; });
    process.on('SIGTERM', () => {});
    const cases = {
      sync: () => { v.value = 1; },
      nextTick: () => { process.nextTick(() => { v.value = 2; }); },
      microtask: () => { Promise.resolve().then(() => { v.value = 3; }); },
      queueMicrotask: () => { queueMicrotask(() => { v.value = 4; }); },
      timer: () => { setTimeout(() => { v.value = 5; }, 20); },
      immediate: () => { setImmediate(() => { v.value = 6; }); },
      async: async () => { await new Promise((r) => setTimeout(r, 10)); v.value = 7; },
      ownExitListener: () => { process.on('exit', (code) => { v.value = 100 + code; }); process.exitCode = 8; },
      beforeExit: () => { let n = 0; process.on('beforeExit', () => { if (n++ === 0) setTimeout(() => { v.value = 9; }, 5); }); },
      socket: () => { import('node:net').then(({ createServer }) => { const s = createServer().listen(0, '127.0.0.1', () => s.close(() => { v.value = 10; })); }); },
      throws: () => { v.value = 11; throw new Error('thrown inline'); },
      exits: () => { v.value = 12; process.exit(5); },
      throwsInTick: () => { process.nextTick(() => { v.value = 13; throw new Error('thrown in a tick'); }); },
      readFile: () => { readFile(here, (error) => { v.value = error ? -2 : 15; }); },
    };
    const run = (name, target) => {
      v.value = 0;
      stamps.fill(0n);
      const p = new Process({ target });
      p.start();
      const code = p.joinSync();
      // Ended inside start(); ran there, then went on in the event loop; or ran from the event loop.
      const detached = stamps[phases.kTraceDetach];
      const path = detached === 0n ? 'inline' : stamps[phases.kTraceTargetDone] < detached ? 'inline, then loop' : 'loop';
      console.log(JSON.stringify({ name, value: v.value, code, path }));
    };
    setImmediate(() => {
      for (const [name, target] of Object.entries(cases)) run(name, target);
      // Thread-pool work of the parent's that is done, but not yet collected
      // by its event loop when the child is forked: its callback is the
      // parent's, and the child's own requests still count.
      stat(here, () => { if (process.pid !== parentPid) leaked.value = 1; });
      const until = Date.now() + 50;
      while (Date.now() < until);
      run('afterParentWorkDone', () => { readFile(here, (error) => { v.value = error ? -2 : 16 + leaked.value; }); });
      // A long synchronous target: the parent's SIGTERM handler is not the child's.
      const spinner = new Process({ target: () => { for (;;); } });
      spinner.start();
      setTimeout(() => {
        spinner.terminate();
        console.log(JSON.stringify({ name: 'terminated', code: spinner.joinSync() }));
        // In a promise job the target runs from the event loop, as before.
        Promise.resolve().then(() => {
          run('inPromiseJob', () => { v.value = 14; });
          run('readFileInPromiseJob', () => { readFile(here, (error) => { v.value = error ? -2 : 18; }); });
        });
      }, 100);
    });
  `;

  it('runs and ends at once when it leaves nothing, and hands whatever it leaves to the event loop', () => {
    const r = runScript(
      cases.replace('NODEMP_NATIVE', JSON.stringify(new URL('../dist/native.js', import.meta.url).href)).replace('NODEMP_TRACE', JSON.stringify(new URL('../dist/start/trace.js', import.meta.url).href)),
    );
    expect(r.status).toBe(0);
    const out = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line))
        .map(({ name, ...rest }) => [name, rest]),
    );
    expect(out).toEqual({
      sync: { value: 1, code: 0, path: 'inline' },
      nextTick: { value: 2, code: 0, path: 'inline' },
      microtask: { value: 3, code: 0, path: 'inline' },
      queueMicrotask: { value: 4, code: 0, path: 'inline' },
      timer: { value: 5, code: 0, path: 'inline, then loop' },
      immediate: { value: 6, code: 0, path: 'inline, then loop' },
      async: { value: 7, code: 0, path: 'loop' },
      ownExitListener: { value: 108, code: 8, path: 'inline' },
      beforeExit: { value: 9, code: 0, path: 'inline, then loop' },
      socket: { value: 10, code: 0, path: 'inline, then loop' },
      throws: { value: 11, code: 1, path: 'inline' },
      exits: { value: 12, code: 5, path: 'inline' },
      throwsInTick: { value: 13, code: 1, path: 'inline' },
      readFile: { value: 15, code: 0, path: 'inline, then loop' },
      afterParentWorkDone: { value: 16, code: 0, path: 'inline, then loop' },
      terminated: { code: -15 },
      inPromiseJob: { value: 14, code: 0, path: 'loop' },
      readFileInPromiseJob: { value: 18, code: 0, path: 'loop' },
    });
    expect(r.stderr).toContain('Error: thrown inline');
    expect(r.stderr).toContain('Error: thrown in a tick');
  });
});
