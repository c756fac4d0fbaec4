import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BaseManager,
  BaseProxy,
  BrokenBarrierError,
  DictProxy,
  KeyError,
  ListProxy,
  Manager,
  ManagerError,
  Pipe,
  Process,
  Queue,
  QueueEmpty,
  QueueFull,
  SyncError,
  SyncManager,
  currentProcess,
  type Token,
} from '../dist/index.js';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection } from 'node:net';
import { childrenOf, openFds, runScript, running, shared, shmEntries, waitUntil } from './helpers.js';
import { recordWarnings, sleepMs, spawnChild } from './sync-helpers.js';

const warnings = recordWarnings();

let manager: SyncManager;
beforeAll(async () => {
  manager = Manager();
});
afterAll(async () => {
  await manager.shutdown();
});

function run(target: (...args: never[]) => unknown, args: unknown[] = []): Process {
  const p = new Process({ target: target as (...a: unknown[]) => unknown, args, daemon: true });
  p.start();
  return p;
}

describe('Manager(): the tutorial program', () => {
  it("passes a dict and a list to a Process, whose changes the parent sees (the first tutorial's server-process example)", async () => {
    const d = await manager.dict();
    const l = await manager.list(Array.from({ length: 10 }, (_, i) => i));
    const p = run(
      (dd: DictProxy, ll: ListProxy) => {
        dd.setSync(1, '1');
        dd.setSync('2', 2);
        dd.setSync(0.25, null);
        ll.reverseSync();
      },
      [d, l],
    );
    await p.join();
    expect(p.exitCode).toBe(0);
    expect(await d.copy()).toEqual(
      new Map<unknown, unknown>([
        [1, '1'],
        ['2', 2],
        [0.25, null],
      ]),
    );
    expect(l.copySync()).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  });

  it('exposes the server process, its address and the authkey, which defaults to currentProcess().authkey', () => {
    expect(manager.authkey.equals(currentProcess().authkey)).toBe(true);
    expect(currentProcess().authkey).toHaveLength(32);
    expect(manager.process?.isAlive()).toBe(true);
    expect(manager.process?.startMethod).toBe('fork');
    expect(typeof manager.address).toBe('string');
  });
});

describe('the types, each method in both forms', () => {
  it('dict', async () => {
    const d = await manager.dict<string, number>({ a: 1 });
    expect(d).toBeInstanceOf(DictProxy);
    await d.set('b', 2);
    d.setSync('c', 3);
    expect(await d.get('a')).toBe(1);
    expect(d.getSync('zz', 7)).toBe(7);
    expect(d.hasSync('b')).toBe(true);
    expect(await d.len()).toBe(3);
    expect(d.keysSync()).toEqual(['a', 'b', 'c']);
    expect(await d.pop('a')).toBe(1);
    await expect(d.getItem('a')).rejects.toThrow(KeyError);
    expect(() => d.popSync('a')).toThrow(KeyError);
    expect(d.popSync('a', 9)).toBe(9);
    d.updateSync({ x: 10 });
    expect(d.setdefaultSync('x', 0)).toBe(10);
    expect(d.itemsSync()).toEqual([
      ['b', 2],
      ['c', 3],
      ['x', 10],
    ]);
    expect(d.popitemSync()).toEqual(['x', 10]);
    expect(d.deleteSync('b')).toBe(true);
    d.clearSync();
    expect(d.lenSync()).toBe(0);
  });

  it('list', async () => {
    const l = await manager.list([3, 1, 2]);
    await l.append(4);
    l.extendSync([5, 6]);
    l.insertSync(0, 0);
    expect(l.copySync()).toEqual([0, 3, 1, 2, 4, 5, 6]);
    expect(await l.pop()).toBe(6);
    expect(l.popSync(0)).toBe(0);
    l.sortSync();
    expect(l.copySync()).toEqual([1, 2, 3, 4, 5]);
    l.sortSync({ reverse: true });
    expect(await l.get(-1)).toBe(1);
    l.setSync(0, 50);
    expect(l.indexSync(50)).toBe(0);
    expect(l.countSync(50)).toBe(1);
    l.removeSync(50);
    expect(l.includesSync(50)).toBe(false);
    expect(l.sliceSync(1, 3)).toEqual([3, 2]);
    expect(() => l.getSync(10)).toThrow(RangeError);
    expect(() => l.removeSync(99)).toThrow(RangeError);
    await l.append({ deep: [1] });
    expect(l.indexSync({ deep: [1] })).toBe(4);
  });

  it('Namespace, Value, Array', async () => {
    const ns = await manager.Namespace({ x: 1 });
    ns.setSync('y', 'two');
    expect(await ns.get('x')).toBe(1);
    expect(ns.toObjectSync()).toEqual({ x: 1, y: 'two' });
    expect(() => ns.getSync('nope')).toThrow(KeyError);
    const v = await manager.Value('i', 5);
    v.value = 6;
    expect(v.value).toBe(6);
    expect(() => v.setSync(2 ** 40)).toThrow(RangeError);
    expect(() => v.setSync('x' as never)).toThrow(TypeError);
    const a = await manager.Array('d', [1.5, 2.5]);
    a.setSync(1, 3.5);
    expect(await a.copy()).toEqual([1.5, 3.5]);
    expect(a.lenSync()).toBe(2);
    await expect(manager.Value('no such typecode', 1)).rejects.toThrow(TypeError);
  });

  it('Lock and RLock, with timeouts', async () => {
    const lock = await manager.Lock();
    expect(lock.acquireSync()).toBe(true);
    expect(lock.lockedSync()).toBe(true);
    expect(lock.acquireSync({ block: false })).toBe(false);
    expect(await lock.acquire({ timeout: 50 })).toBe(false);
    await lock.release();
    expect(() => lock.releaseSync()).toThrow(SyncError);
    const rlock = await manager.RLock();
    expect(rlock.acquireSync()).toBe(true);
    expect(rlock.acquireSync()).toBe(true);
    expect(rlock.depthSync()).toBe(2);
    rlock.releaseSync();
    rlock.releaseSync();
    expect(() => rlock.releaseSync()).toThrow(SyncError);
  });

  it('a Lock taken in one process is waited for by another', async () => {
    const lock = await manager.Lock();
    const log = await manager.list();
    lock.acquireSync();
    const p = run(
      (l: typeof lock, out: ListProxy) => {
        l.acquireSync();
        out.appendSync('child has it');
        l.releaseSync();
      },
      [lock, log],
    );
    await sleepMs(100);
    log.appendSync('parent releases');
    lock.releaseSync();
    await p.join();
    expect(log.copySync()).toEqual(['parent releases', 'child has it']);
  });

  it('Semaphore and BoundedSemaphore', async () => {
    const s = await manager.Semaphore(2);
    expect(s.acquireSync()).toBe(true);
    expect(await s.acquire()).toBe(true);
    expect(s.acquireSync({ timeout: 20 })).toBe(false);
    expect(s.getValueSync()).toBe(0);
    s.releaseSync(2);
    expect(s.getValueSync()).toBe(2);
    const b = await manager.BoundedSemaphore(1);
    expect(() => b.releaseSync()).toThrow(SyncError);
  });

  it('Event, Condition and Barrier across processes', async () => {
    const e = await manager.Event();
    const cond = await manager.Condition();
    const items = await manager.list();
    const barrier = await manager.Barrier(3);
    const children = [0, 1].map(() =>
      run(
        (ev: typeof e, c: typeof cond, it: ListProxy, b: typeof barrier) => {
          ev.waitSync();
          c.acquireSync();
          c.waitForSync(() => it.lenSync() > 0);
          c.releaseSync();
          return b.waitSync(5000);
        },
        [e, cond, items, barrier],
      ),
    );
    expect(e.waitSync(20)).toBe(false);
    await e.set();
    expect(e.isSetSync()).toBe(true);
    await sleepMs(100);
    await cond.acquire();
    items.appendSync('go');
    cond.notifyAllSync();
    cond.releaseSync();
    const index = await barrier.wait(5000);
    expect([0, 1, 2]).toContain(index);
    for (const p of children) {
      await p.join();
      expect(p.exitCode).toBe(0);
    }
    expect(() => cond.notifySync()).toThrow(SyncError);
    const lonely = await manager.Barrier(2);
    await expect(lonely.wait(30)).rejects.toThrow(BrokenBarrierError);
    expect(lonely.brokenSync()).toBe(true);
  });

  it('Queue and JoinableQueue: blocking, timeouts, maxsize, taskDone/join', async () => {
    const q = await manager.Queue<number>(1);
    q.putSync(1);
    expect(q.fullSync()).toBe(true);
    expect(() => q.putSync(2, { block: false })).toThrow(QueueFull);
    await expect(q.put(2, { timeout: 20 })).rejects.toThrow(QueueFull);
    expect(await q.get()).toBe(1);
    expect(() => q.getNowaitSync()).toThrow(QueueEmpty);
    expect(() => q.getSync({ timeout: 20 })).toThrow(QueueEmpty);
    const p = run(
      (qq: typeof q) => {
        for (let i = 0; i < 5; i++) qq.putSync(i);
      },
      [q],
    );
    const got: number[] = [];
    for (let i = 0; i < 5; i++) got.push(i % 2 ? q.getSync() : await q.get());
    await p.join();
    expect(got).toEqual([0, 1, 2, 3, 4]);
    const jq = await manager.JoinableQueue<string>();
    jq.putSync('a');
    expect(jq.joinSync(20)).toBe(false);
    const worker = run(
      (qq: typeof jq) => {
        qq.getSync();
        qq.taskDoneSync();
      },
      [jq],
    );
    expect(await jq.join(5000)).toBe(true);
    await worker.join();
    expect(() => jq.taskDoneSync()).toThrow(SyncError);
  });
});

describe('proxies cross processes and nest', () => {
  it('a dict of lists: a list stored in a dict is the same list for every process', async () => {
    const d = await manager.dict();
    const inner = await manager.list();
    d.setSync('inner', inner);
    const p = run(
      (dd: DictProxy) => {
        const l = dd.getSync('inner') as ListProxy;
        l.appendSync('from the child');
      },
      [d],
    );
    await p.join();
    expect(p.exitCode).toBe(0);
    expect(inner.copySync()).toEqual(['from the child']);
    const again = d.getSync('inner') as ListProxy;
    expect(again).toBeInstanceOf(ListProxy);
    expect(again.token.id).toBe(inner.token.id);
  });

  it('through a nodemp Queue and a Pipe', async () => {
    const q = new Queue();
    const [a, b] = Pipe();
    const p = run(
      (qq: Queue, conn: typeof b) => {
        const d = qq.getSync() as DictProxy;
        d.setSync('via', 'queue');
        const l = conn.recvSync() as ListProxy;
        l.appendSync('via pipe');
      },
      [q, b],
    );
    const d = await manager.dict();
    const l = await manager.list();
    q.putSync(d);
    a.send(l);
    await p.join();
    expect(p.exitCode).toBe(0);
    expect(d.getSync('via')).toBe('queue');
    expect(l.copySync()).toEqual(['via pipe']);
    q.close();
  });

  it("a Condition made on the manager's own Lock", async () => {
    const lock = await manager.Lock();
    const cond = await manager.Condition(lock);
    expect(cond.acquireSync()).toBe(true);
    expect(lock.lockedSync()).toBe(true);
    cond.releaseSync();
    expect(lock.lockedSync()).toBe(false);
  });
});

describe('reference counting', () => {
  it('objects live while a proxy to them exists in any process, and go when the last is dropped', () => {
    const r = runScript(
      `
      import { SyncManager, Process } from NODEMP;
      const m = new SyncManager();
      m.startSync();
      const base = m.numberOfObjectsSync();
      const make = (i) => m.dictSync().setSync('i', i);
      for (let i = 0; i < 300; i++) make(i);
      const kept = m.listSync([1]);
      const child = new Process({ target: (l) => { globalThis.gc(); l.appendSync(2); }, args: [kept], daemon: true });
      child.start();
      child.joinSync();
      for (let i = 0; i < 5 && m.numberOfObjectsSync() > base + 1; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(JSON.stringify({ base, after: m.numberOfObjectsSync(), kept: kept.copySync(), exit: child.exitCode }));
      m.shutdownSync();
      `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ base: 0, after: 1, kept: [1, 2], exit: 0 });
  });

  it('a proxy sent in a message keeps its object alive after the sender drops it', () => {
    const r = runScript(
      `
      import { SyncManager, Process, Queue } from NODEMP;
      const m = new SyncManager();
      m.startSync();
      const q = new Queue();
      let d = m.dictSync();
      d.setSync('x', 42);
      q.putSync(d);
      d = null;
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 50));
      globalThis.gc();
      const during = m.numberOfObjectsSync();
      const child = new Process({ target: (qq) => { const got = qq.getSync(); process.exitCode = got.getSync('x') === 42 ? 0 : 3; }, args: [q], daemon: true });
      child.start();
      child.joinSync();
      for (let i = 0; i < 5 && m.numberOfObjectsSync() > 0; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(JSON.stringify({ during, exit: child.exitCode, after: m.numberOfObjectsSync() }));
      q.close();
      m.shutdownSync();
      `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ during: 1, exit: 0, after: 0 });
  });
});

describe('failures', () => {
  it('a Lock held by a killed client is released, and the next holder is told', async () => {
    const lock = await manager.Lock();
    const flag = shared(1);
    const p = run(
      (l: typeof lock) => {
        l.acquireSync();
        Atomics.store(flag, 0, 1);
        for (;;) sleepMs(1000);
      },
      [lock],
    );
    await waitUntil(() => Atomics.load(flag, 0) === 1);
    p.kill();
    await p.join();
    expect(await lock.acquire({ timeout: 5000 })).toBe(true);
    expect(lock.ownerDied).toBe(true);
    await sleepMs(0);
    expect(warnings().some((w) => (w as { code?: string }).code === 'NODEMP_OWNER_DIED')).toBe(true);
    lock.releaseSync();
    expect(lock.acquireSync()).toBe(true);
    expect(lock.ownerDied).toBe(false);
    lock.releaseSync();
  });

  it('a client killed while it waits in a call does not wedge the server or the queue', async () => {
    const q = await manager.Queue();
    const p = run((qq: typeof q) => qq.getSync(), [q]);
    await sleepMs(200);
    p.kill();
    await p.join();
    q.putSync('for the living');
    expect(q.getSync({ timeout: 1000 })).toBe('for the living');
  });

  it('a dead server fails every proxy call with ManagerError ERR_MANAGER_DEAD, never a hang', async () => {
    const m = Manager();
    const d = await m.dict();
    m.process?.kill();
    await m.process?.join();
    expect(() => d.getSync('x')).toThrow(expect.objectContaining({ code: 'ERR_MANAGER_DEAD' }));
    await expect(d.get('x')).rejects.toMatchObject({ code: 'ERR_MANAGER_DEAD' });
    await m.shutdown();
  });

  it('shutdown() with proxies alive: calls fail with ERR_MANAGER_SHUT_DOWN, in other processes too', async () => {
    const fds = openFds().filter((f) => !f.includes('/memfd:'));
    const m = Manager();
    const d = await m.dict();
    const q = new Queue();
    const p = run(
      (dd: DictProxy, qq: Queue) => {
        dd.setSync('x', 1);
        qq.getSync();
        try {
          dd.getSync('x');
          return 1;
        } catch (error) {
          process.exitCode = (error as ManagerError).code === 'ERR_MANAGER_SHUT_DOWN' || (error as ManagerError).code === 'ERR_MANAGER_DEAD' ? 0 : 2;
        }
      },
      [d, q],
    );
    await waitUntil(() => d.hasSync('x'));
    const server = m.process?.pid as number;
    await m.shutdown();
    expect(running(server)).toBe(false);
    q.putSync('go');
    await p.join();
    expect(p.exitCode).toBe(0);
    expect(() => d.setSync('y', 2)).toThrow(expect.objectContaining({ code: 'ERR_MANAGER_SHUT_DOWN' }));
    await expect(m.dict()).rejects.toThrow(ManagerError);
    q.close();
    expect(openFds().filter((f) => !f.includes('/memfd:'))).toEqual(fds);
  });

  it('leaves no process and nothing in /dev/shm when the parent is SIGKILLed', async () => {
    const before = shmEntries();
    const r = runScript(
      `
      import { Manager } from NODEMP;
      const m = Manager();
      const d = await m.dict();
      d.setSync('x', 1);
      console.log(m.process.pid);
      process.kill(process.pid, 'SIGKILL');
      `,
    );
    expect(r.signal).toBe('SIGKILL');
    const server = Number(r.stdout.trim());
    expect(await waitUntil(() => !running(server))).toBe(true);
    expect(shmEntries()).toEqual(before);
  });
});

describe('errors', () => {
  it('names what was wrong', async () => {
    const d = await manager.dict();
    await expect(d.callMethod('nope')).rejects.toMatchObject({ name: 'ManagerError', code: 'ERR_NOT_EXPOSED' });
    expect(() => d.callMethodSync('constructor')).toThrow(expect.objectContaining({ code: 'ERR_NOT_EXPOSED' }));
    await expect(manager.create('nothing')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_TYPEID' });
    expect(() => d.setSync('f', (() => 1) as never)).toThrow(TypeError);
    expect(d.lenSync()).toBe(0);
    const m = new SyncManager();
    await expect(m.dict()).rejects.toMatchObject({ code: 'ERR_MANAGER_STATE' });
    expect(() => new SyncManager({ authkey: 'text' as never })).toThrow(TypeError);
    m.startSync();
    m.startSync();
    expect(() => m.connectSync()).toThrow(expect.objectContaining({ code: 'ERR_MANAGER_STATE' }));
    m.shutdownSync();
    expect(() => m.startSync()).toThrow(expect.objectContaining({ code: 'ERR_MANAGER_STATE' }));
  });
});

class Counter {
  n = 0;
  incr(by = 1): number {
    this.n += by;
    return this.n;
  }
  get(): number {
    return this.n;
  }
  child(): Counter {
    const c = new Counter();
    c.n = this.n * 10;
    return c;
  }
  _hidden(): string {
    return 'secret';
  }
}

class CounterProxy extends BaseProxy {
  incr(by?: number): Promise<number> {
    return this.callMethod('incr', [by]) as Promise<number>;
  }
  twiceSync(): number {
    this.callMethodSync('incr');
    return this.callMethodSync('incr') as number;
  }
}

describe('BaseManager.register', () => {
  class MyManager extends BaseManager {}
  MyManager.register('Counter', Counter, { methodToTypeid: { child: 'Counter' } });
  MyManager.register('Exposed', Counter, { exposed: ['get'] });
  MyManager.register('Typed', Counter, { proxytype: CounterProxy });

  it("makes a user's class with an AutoProxy of its public methods, Promise and Sync forms", async () => {
    const m = new MyManager();
    await m.start();
    const c = (await (m as unknown as { Counter(): Promise<BaseProxy> }).Counter()) as BaseProxy & {
      incr(by?: number): Promise<number>;
      incrSync(by?: number): number;
      getSync(): number;
      childSync(): BaseProxy & { getSync(): number };
    };
    expect(await c.incr(5)).toBe(5);
    expect(c.incrSync()).toBe(6);
    const grown = c.childSync();
    expect(grown.getSync()).toBe(60);
    expect(c.token.exposed).not.toContain('_hidden');
    await expect(c.callMethod('_hidden')).rejects.toMatchObject({ code: 'ERR_NOT_EXPOSED' });
    const e = (m as unknown as { ExposedSync(): BaseProxy }).ExposedSync();
    expect(e.token.exposed).toEqual(['get']);
    await expect(e.callMethod('incr')).rejects.toMatchObject({ code: 'ERR_NOT_EXPOSED' });
    const t = (await (m as unknown as { Typed(): Promise<CounterProxy> }).Typed()) as CounterProxy;
    expect(t).toBeInstanceOf(CounterProxy);
    expect(t.twiceSync()).toBe(2);
    const p = run((x: CounterProxy) => x.twiceSync(), [t]);
    await p.join();
    expect(await t.incr()).toBe(5);
    await m.shutdown();
    expect(() => MyManager.register('bad name!', Counter)).toThrow(TypeError);
    expect(() => MyManager.register('X', Counter, { proxytype: Counter as never })).toThrow(TypeError);
  });

  it('runs a server in this process with getServer().serveForever(), reached with connect() by another process', async () => {
    const authkey = Buffer.from('a key for this test');
    const server = new MyManager({ address: ['127.0.0.1', 0], authkey }).getServer();
    const serving = server.serveForever();
    const address = server.address as [string, number];
    expect(address[1]).toBeGreaterThan(0);
    const p = run(
      async (addr: [string, number]) => {
        const client = new MyManager({ address: addr, authkey });
        await client.connect();
        const c = (client as unknown as { CounterSync(): { incrSync(by: number): number } }).CounterSync();
        process.exitCode = c.incrSync(41) === 41 ? 0 : 3;
        await client.shutdown();
      },
      [address],
    );
    await p.join();
    expect(p.exitCode).toBe(0);
    const wrong = new MyManager({ address, authkey: Buffer.from('wrong') });
    await expect(wrong.connect()).rejects.toMatchObject({ name: 'AuthenticationError' });
    server.shutdown();
    await serving;
  });
});

class Busy {
  spin(ms: number): void {
    const until = Date.now() + ms;
    while (Date.now() < until);
  }
}
class BusyManager extends BaseManager {}
BusyManager.register('Busy', Busy);

describe('found in review (each failed before its fix)', () => {
  it('thousands of Promise calls with large replies in flight at once complete (the client never waits to write)', async () => {
    const d = await manager.dict([['k', 'x'.repeat(4000)]]);
    const got = await Promise.all(Array.from({ length: 2000 }, () => d.get('k')));
    expect(got.every((v) => v === 'x'.repeat(4000))).toBe(true);
    expect(d.lenSync()).toBe(1);
  });

  it('the server does not spin once replies that had to wait are sent', async () => {
    const m = Manager();
    const d = await m.dict([['k', 'x'.repeat(20000)]]);
    await Promise.all(Array.from({ length: 300 }, () => d.get('k')));
    const pid = m.process?.pid as number;
    const cpuMs = (): number => {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') as string[];
      return (Number(f[11]) + Number(f[12])) * 10;
    };
    const before = cpuMs();
    await sleepMs(1000);
    expect(cpuMs() - before).toBeLessThan(500);
    await m.shutdown();
  });

  it('a proxy received after its manager shut down does not crash the receiver: its calls fail', () => {
    const r = runScript(
      `
      import { Manager, ManagerError, Pipe } from NODEMP;
      const m = Manager();
      const d = await m.dict();
      const [a, b] = Pipe();
      a.send(d);
      await m.shutdown();
      const got = b.recvSync();
      await new Promise((r) => setTimeout(r, 20));
      try { got.lenSync(); } catch (error) { console.log(error instanceof ManagerError ? error.code : String(error)); }
      `,
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ERR_MANAGER_(SHUT_DOWN|DEAD|UNREACHABLE)\n$/);
  });

  it("a request the server cannot use (another manager's proxy, a freed object's) is answered, not left pending", async () => {
    const other = Manager();
    const foreign = await other.list();
    const d = await manager.dict();
    await expect(d.set('k', foreign)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    expect(() => d.setSync('k', foreign)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(d.lenSync()).toBe(0);
    await other.shutdown();
  });

  it("a second manager object for the same server in one process leaves the first one's objects alone", async () => {
    const d = await manager.dict({ a: 1 });
    const again = new SyncManager({ address: manager.address, authkey: manager.authkey });
    await again.connect();
    expect(d.lenSync()).toBe(1);
    expect((await again.dict()).lenSync()).toBe(0);
    await again.shutdown();
    expect(d.lenSync()).toBe(1);
  });

  // The soak saw a manager killed between accepting a connection and its
  // greeting: a server that was there and went away is dead, not unreachable.
  it('a server that accepts and then closes the connection is ERR_MANAGER_DEAD, not unreachable', async () => {
    const { createServer } = await import('node:net');
    const address = `${tmpdir()}/nodemp-closes-${process.pid}.sock`;
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(address, resolve));
    try {
      const m = new SyncManager({ address, authkey: Buffer.from('key') });
      await expect(m.connect()).rejects.toMatchObject({ name: 'ManagerError', code: 'ERR_MANAGER_DEAD' });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('connect() may be tried again after it failed', async () => {
    const m = new SyncManager({ address: `\0nodemp-nobody-${process.pid}` });
    await expect(m.connect()).rejects.toMatchObject({ code: 'ERR_MANAGER_UNREACHABLE' });
    await expect(m.connect()).rejects.toMatchObject({ code: 'ERR_MANAGER_UNREACHABLE' });
  });

  it('silent connections that never authenticate hold up no other client', async () => {
    const m = Manager({ address: ['127.0.0.1', 0], handshakeTimeout: 60000 });
    await m.numberOfObjects();
    const [host, port] = m.address as [string, number];
    const silent = Array.from({ length: 20 }, () => createConnection(port, host));
    await sleepMs(100);
    const other = new SyncManager({ address: m.address, authkey: m.authkey });
    await other.connect();
    expect(await (await other.dict({ x: 1 })).len()).toBe(1);
    for (const sock of silent) sock.destroy();
    await m.shutdown();
  });

  it('shutdown() keeps to shutdownTimeout when the server is busy: it is killed, not waited for', async () => {
    const m = new BusyManager({ shutdownTimeout: 100 });
    await m.start();
    const busy = (await (m as unknown as { Busy(): Promise<BaseProxy> }).Busy()) as BaseProxy;
    busy.callMethod('spin', [3000]).catch(() => {});
    await sleepMs(100);
    await m.shutdown();
    expect(m.process?.exitCode).toBe(-9);
  });

  it('a dropped manager Pool takes its workers with it', () => {
    const r = runScript(
      `
      import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
      import { SyncManager } from NODEMP;
      const tasks = new URL('./tasks.mjs', import.meta.url);
      writeFileSync(tasks, 'export function square(x) { return x * x; }');
      const { square } = await import(tasks.href);
      const m = new SyncManager({ poolModules: [tasks.href] });
      m.startSync();
      const server = m.process.pid;
      const children = () => readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).filter((p) => {
        try { return readFileSync('/proc/' + p + '/stat', 'utf8').split(') ')[1].split(' ')[1] === String(server); } catch { return false; }
      }).length;
      const make = () => { const pool = m.PoolSync({ processes: 2 }); pool.mapSync(square, [1, 2, 3, 4], { chunksize: 1 }); };
      make();
      for (let i = 0; i < 40 && children() < 2; i++) await new Promise((r) => setTimeout(r, 50));
      const withPool = children();
      for (let i = 0; i < 40 && (children() > 0 || m.numberOfObjectsSync() > 0); i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
      console.log(JSON.stringify({ withPool, after: children(), objects: m.numberOfObjectsSync() }));
      m.shutdownSync();
      `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ withPool: 2, after: 0, objects: 0 });
  });

  it('a full Queue lets in only what a get() made room for, whatever comes in the same turn', async () => {
    const q = await manager.Queue(1);
    await q.put(1);
    const waiting = q.put(2);
    await sleepMs(50);
    const [got, late] = await Promise.allSettled([q.get(), q.put(3, { timeout: 200 })]);
    await waiting;
    expect(got).toEqual({ status: 'fulfilled', value: 1 });
    expect(late.status === 'rejected' && late.reason instanceof QueueFull).toBe(true);
    expect(q.qsizeSync()).toBe(1);
    expect(q.getSync()).toBe(2);
  });

  it("a forked child's copy of a proxy that was still in transit takes a reference of its own", () => {
    const r = runScript(
      `
      import { SyncManager, Process, Pipe } from NODEMP;
      const m = new SyncManager();
      m.startSync();
      const [a, b] = Pipe();
      let sent = m.listSync([1, 2, 3]);
      a.send(sent);
      sent = null;
      const got = b.recvSync();
      const child = new Process({ target: (l) => { process.exitCode = l.lenSync() === 3 ? 0 : 3; }, args: [got], daemon: true });
      child.start();
      child.joinSync();
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }
      console.log(JSON.stringify({ exit: child.exitCode, objects: m.numberOfObjectsSync(), len: got.lenSync() }));
      m.shutdownSync();
      `,
      { nodeArgs: ['--single-threaded', '--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ exit: 0, objects: 1, len: 3 });
  });
});

describe('proxy tokens', () => {
  it('say which server, object and methods', async () => {
    const d = await manager.dict();
    const token: Token = d.token;
    expect(token.typeid).toBe('dict');
    expect(token.address).toEqual(manager.address);
    expect(token.exposed).toContain('set');
    expect(String(d)).toMatch(/^<DictProxy dict #\d+ at /);
  });
});

describe('leaks', () => {
  it('a started and shut down manager leaves no descriptor, process or /dev/shm entry', async () => {
    const fds = openFds().filter((f) => !f.includes('/memfd:'));
    const shm = shmEntries();
    const m = Manager();
    const d = await m.dict();
    d.setSync('a', 1);
    const child = spawnChild(() => d.setSync('b', 2));
    await child.join();
    const pid = m.process?.pid as number;
    await m.shutdown();
    expect(running(pid)).toBe(false);
    expect(openFds().filter((f) => !f.includes('/memfd:'))).toEqual(fds);
    expect(shmEntries()).toEqual(shm);
  });
});
