import { describe, expect, it } from 'vitest';
import {
  Process,
  ProcessError,
  activeChildren,
  cpuCount,
  currentProcess,
  parentProcess,
} from '../dist/index.js';
import { gate, runScript, shared } from './helpers.js';

describe('Process basics', () => {
  it('runs target(...args) in another process and joins with exit code 0', async () => {
    const mem = shared();
    const p = new Process({
      target: (a: number, b: number) => {
        mem[0] = a + b;
        mem[1] = process.pid;
        mem[2] = process.ppid;
      },
      args: [20, 22],
    });
    p.start();
    expect(p.pid).toBeGreaterThan(0);
    expect(p.pid).not.toBe(process.pid);
    expect(await p.join()).toBe(0);
    expect(p.exitCode).toBe(0);
    expect(mem[0]).toBe(42);
    expect(mem[1]).toBe(p.pid);
    expect(mem[2]).toBe(process.pid);
  });

  it('does not share globals: the child increments its own copy', async () => {
    let num = 10;
    const mem = shared();
    const p = new Process({
      target: () => {
        num += 1;
        mem[0] = num;
      },
    });
    p.start();
    await p.join();
    expect(mem[0]).toBe(11);
    expect(num).toBe(10);
  });

  it('runs run() of a subclass; a subclass whose method is not run() does nothing', async () => {
    const mem = shared();
    class Job extends Process {
      constructor(private readonly n: number) {
        super();
      }
      override run(): void {
        mem[0] = this.n;
      }
    }
    class NotRun extends Process {
      work(): void {
        mem[1] = 1;
      }
    }
    const a = new Job(7);
    const b = new NotRun();
    a.start();
    b.start();
    expect(await a.join()).toBe(0);
    expect(await b.join()).toBe(0);
    expect(mem[0]).toBe(7);
    expect(mem[1]).toBe(0);
  });

  it('async targets: timers, promises and async fs run in the child before it exits', async () => {
    const mem = shared();
    const p = new Process({
      target: async () => {
        await new Promise((r) => setTimeout(r, 20));
        const { readFile } = await import('node:fs/promises');
        mem[0] = (await readFile(new URL(import.meta.url))).length > 0 ? 1 : 0;
        setTimeout(() => {
          mem[1] = 1;
        }, 10);
      },
    });
    p.start();
    expect(await p.join()).toBe(0);
    expect(mem[0]).toBe(1);
    expect(mem[1]).toBe(1);
  });

  it('exit codes follow Python: 1 for a throw or rejection, n for process.exit(n) or exitCode, -N for signals', async () => {
    const cases: Array<[() => unknown, number]> = [
      [() => {
        throw new Error('sync');
      }, 1],
      [async () => {
        await null;
        throw new Error('async');
      }, 1],
      [() => process.exit(7), 7],
      [() => {
        process.exitCode = 5;
      }, 5],
      [() => setTimeout(() => process.exit(9), 5), 9],
      [() => process.kill(process.pid, 'SIGKILL'), -9],
    ];
    const procs = cases.map(([target]) => new Process({ target }));
    for (const p of procs) p.start();
    const codes = await Promise.all(procs.map((p) => p.join()));
    expect(codes).toEqual(cases.map(([, code]) => code));
  });

  it('terminate() and kill() end a busy child with -15 and -9', async () => {
    const a = new Process({ target: () => setInterval(() => {}, 1000) });
    const b = new Process({
      target: () => {
        for (;;);
      },
    });
    a.start();
    b.start();
    expect(a.isAlive()).toBe(true);
    a.terminate();
    b.kill();
    expect(await a.join()).toBe(-15);
    expect(await b.join()).toBe(-9);
    expect(a.isAlive()).toBe(false);
    a.terminate();
    b.kill();
  });

  it('interrupt() sends SIGINT: -2 without a listener, what the listener decides with one', async () => {
    const plain = new Process({ target: () => setInterval(() => {}, 1000) });
    const ready = shared(1);
    const marked = new Process({
      target: () => {
        setInterval(() => {}, 1000);
        process.on('SIGINT', () => process.exit(5));
        Atomics.store(ready, 0, 1);
      },
    });
    plain.start();
    marked.start();
    while (Atomics.load(ready, 0) === 0) await new Promise((r) => setTimeout(r, 2));
    plain.interrupt();
    marked.interrupt();
    expect(await plain.join()).toBe(-2);
    expect(await marked.join()).toBe(5);
    plain.interrupt();
    expect(() => new Process({ target: () => {} }).interrupt()).toThrow(ProcessError);
  });

  it("takes null for name and daemon as Python's None: the defaults", async () => {
    const p = new Process({ target: null, name: null, daemon: null });
    expect(p.name).toMatch(/^Process-\d+$/);
    expect(p.daemon).toBe(false);
    p.start();
    expect(await p.join()).toBe(0);
  });

  it('join(timeout) and joinSync(timeout) return null while the child runs', async () => {
    const g = gate();
    const p = new Process({ target: g.wait });
    p.start();
    const t0 = performance.now();
    expect(await p.join(50)).toBeNull();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);
    expect(p.joinSync(30)).toBeNull();
    expect(p.joinSync(0)).toBeNull();
    expect(p.isAlive()).toBe(true);
    expect(p.exitCode).toBeNull();
    g.release();
    expect(p.joinSync()).toBe(0);
    expect(await p.join(0)).toBe(0);
  });

  it('the event loop keeps running while join() waits', async () => {
    const p = new Process({ target: () => new Promise((r) => setTimeout(r, 100)) });
    p.start();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    await p.join();
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(5);
  });

  it('names processes like Python and exposes current/parent process in the child', async () => {
    const mem = shared(4);
    const named = new Process({ name: 'worker-1', target: () => {} });
    expect(named.name).toBe('worker-1');
    const p = new Process({
      target: () => {
        mem[0] = currentProcess() === p ? 1 : 0;
        mem[1] = parentProcess()?.pid ?? -1;
        mem[2] = parentProcess()?.isAlive() ? 1 : 0;
        mem[3] = new Process().name === `${p.name}:1` ? 1 : 0;
      },
    });
    expect(p.name).toMatch(/^Process-\d+$/);
    p.start();
    await p.join();
    expect([...mem]).toEqual([1, process.pid, 1, 1]);
    expect(currentProcess().name).toBe('MainProcess');
    expect(currentProcess().pid).toBe(process.pid);
    expect(parentProcess()).toBeNull();
  });

  it('children can start and join their own children', async () => {
    const mem = shared();
    const p = new Process({
      target: async () => {
        const grandchild = new Process({
          target: () => {
            mem[0] = process.ppid;
          },
        });
        grandchild.start();
        mem[1] = (await grandchild.join()) ?? -1;
        mem[2] = process.pid;
      },
    });
    p.start();
    expect(await p.join()).toBe(0);
    expect(mem[0]).toBe(mem[2]);
    expect(mem[1]).toBe(0);
  });

  it('activeChildren() lists running children only', async () => {
    const g = gate();
    const p = new Process({ target: g.wait });
    p.start();
    expect(activeChildren()).toContain(p);
    g.release();
    await p.join();
    expect(activeChildren()).not.toContain(p);
  });

  it('starts and joins 100 processes', async () => {
    const mem = shared(100);
    const procs = Array.from({ length: 100 }, (_, i) => new Process({ target: () => void (mem[i] = i + 1) }));
    for (const p of procs) p.start();
    const codes = await Promise.all(procs.map((p) => p.join()));
    expect(codes.every((c) => c === 0)).toBe(true);
    expect([...mem]).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(new Set(procs.map((p) => p.pid)).size).toBe(100);
  });

  it('awaiting join() of a daemon child keeps the program alive until it exits', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      const p = new Process({ daemon: true, target: () => new Promise((r) => setTimeout(r, 150)) });
      p.start();
      console.log('joined', await p.join());
      const q = new Process({ daemon: true, target: () => new Promise((r) => setTimeout(r, 5000)) });
      q.start();
      console.log('timed out', await q.join(50));
    `);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('joined 0\ntimed out null\n');
    expect(r.status).toBe(0);
  });

  it('daemon processes may not have children', async () => {
    const mem = shared();
    const p = new Process({
      daemon: true,
      target: () => {
        try {
          new Process({ target: () => {} }).start();
        } catch (e) {
          mem[0] = e instanceof ProcessError && e.code === 'ERR_DAEMON_CHILDREN' ? 1 : 2;
        }
      },
    });
    p.start();
    expect(await p.join()).toBe(0);
    expect(mem[0]).toBe(1);
  });

  it('cpuCount() is a positive integer', () => {
    expect(Number.isInteger(cpuCount())).toBe(true);
    expect(cpuCount()).toBeGreaterThan(0);
  });
});

describe('Process misuse gives named errors', () => {
  it('rejects bad options with TypeError', () => {
    expect(() => new Process({ target: 42 as never })).toThrow(/target must be a function or a \{ module, name \} reference, got 42/);
    expect(() => new Process({ args: 'x' as never })).toThrow(TypeError);
    expect(() => new Process({ name: 1 as never })).toThrow(/name must be a string/);
    expect(() => new Process({ daemon: 'yes' as never })).toThrow(/daemon must be a boolean/);
    expect(() => new Process(null as never)).toThrow(/expected an options object/);
  });

  it('start twice, join/terminate before start, close while alive, use after close', async () => {
    const p = new Process({ target: () => new Promise((r) => setTimeout(r, 200)) });
    await expect(p.join()).rejects.toMatchObject({ name: 'ProcessError', code: 'ERR_PROCESS_NOT_STARTED' });
    expect(() => p.joinSync()).toThrow(ProcessError);
    expect(() => p.terminate()).toThrow(/has not been started/);
    expect(p.pid).toBeUndefined();
    expect(p.isAlive()).toBe(false);
    p.start();
    expect(() => p.start()).toThrow(expect.objectContaining({ code: 'ERR_PROCESS_STARTED' }));
    expect(() => {
      p.daemon = true;
    }).toThrow(/already started/);
    expect(() => p.close()).toThrow(expect.objectContaining({ code: 'ERR_PROCESS_ALIVE' }));
    p.kill();
    await p.join();
    p.close();
    p.close();
    expect(() => p.pid).toThrow(expect.objectContaining({ code: 'ERR_PROCESS_CLOSED' }));
    expect(() => p.isAlive()).toThrow(ProcessError);
    expect(() => p.start()).toThrow(/is closed/);
  });

  it('validates timeouts', async () => {
    const p = new Process({ target: () => {} });
    p.start();
    expect(() => p.joinSync(-1)).toThrow(RangeError);
    await expect(p.join(Number.NaN)).rejects.toThrow(TypeError);
    expect(() => p.joinSync('5' as never)).toThrow(/expected a number of milliseconds/);
    expect(await p.join()).toBe(0);
  });

  it('a child cannot test or join a sibling it inherited', async () => {
    const mem = shared();
    const g = gate();
    const sibling = new Process({ target: g.wait });
    sibling.start();
    const p = new Process({
      target: () => {
        for (const probe of [() => sibling.isAlive(), () => sibling.exitCode, () => sibling.joinSync(0)]) {
          try {
            probe();
          } catch (e) {
            if (e instanceof ProcessError && e.code === 'ERR_NOT_A_CHILD') mem[0]++;
          }
        }
      },
    });
    p.start();
    expect(await p.join()).toBe(0);
    g.release();
    expect(await sibling.join()).toBe(0);
    expect(mem[0]).toBe(3);
  });

  it('a process cannot join or signal itself', () => {
    expect(() => currentProcess().joinSync()).toThrow(expect.objectContaining({ code: 'ERR_NOT_A_CHILD' }));
    expect(() => currentProcess().terminate()).toThrow(/current process/);
  });
});
