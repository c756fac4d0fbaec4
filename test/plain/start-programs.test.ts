// Whole programs under plain `node` (no --single-threaded), as Docker,
// systemd or PM2 start a service: the main-module guard, unexported targets,
// the fork server's life and death, spawn from a worker thread, the examples.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root, runScript, running } from '../helpers.js';

const plain = { nodeArgs: [] as string[], timeout: 30000 };

describe('a plain node program', () => {
  it('uses forkserver by default, with Process, Queue and Pool', () => {
    const r = runScript(
      `
      import { Pool, Process, Queue, getStartMethod, isMainModule } from NODEMP;
      export function put(q, x) { q.put(x * 2); }
      export function square(x) { return x * x; }
      if (isMainModule(import.meta)) {
        const q = new Queue();
        const p = new Process({ target: put, args: [q, 21] });
        p.start();
        console.log(getStartMethod(), p.startMethod, await q.get(), await p.join());
        const pool = new Pool({ processes: 2 });
        console.log(JSON.stringify(await pool.map(square, [1, 2, 3])));
        await pool.terminate();
      }
    `,
      plain,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('forkserver forkserver 42 0\n[1,4,9]\n');
  });

  for (const method of ['spawn', 'forkserver']) {
    it(`${method}: an unguarded module that starts processes gets Python's bootstrapping error, not a fork bomb`, () => {
      const r = runScript(
        `
        import { Process, setStartMethod } from NODEMP;
        export function work() { console.log('child ran'); }
        setStartMethod('${method}');
        const p = new Process({ target: work });
        p.start();
        console.log('started, exit code', await p.join());
      `,
        plain,
      );
      expect(r.stdout).not.toContain('child ran');
      expect(r.stderr).toContain('ERR_BOOTSTRAPPING');
      expect(r.stderr).toContain('isMainModule(import.meta)');
      if (method === 'spawn') {
        // The child imports the module, whose start() throws: the child ends with 1, the parent goes on.
        expect(r.stdout).toBe('started, exit code 1\n');
        expect(r.status).toBe(0);
      } else {
        // The server imports the module before it forks: the parent's start() throws.
        expect(r.stdout).toBe('');
        expect(r.status).toBe(1);
      }
    });

    it(`${method}: a closure or an unexported function is refused at start(), naming it`, () => {
      const r = runScript(
        `
        import { Process, getContext, isMainModule } from NODEMP;
        function hidden() {}
        if (isMainModule(import.meta)) {
          const ctx = getContext('${method}');
          const local = (x) => x;
          for (const target of [local, hidden]) {
            try { new ctx.Process({ target }).start(); console.log('started'); }
            catch (e) { console.log(e.name, e.code, e.message.includes(target.name)); }
          }
        }
      `,
        plain,
      );
      expect(r.stdout).toBe('SerializationError ERR_NOT_EXPORTED true\nSerializationError ERR_NOT_EXPORTED true\n');
    });
  }

  it('forkserver: a killed server fails nothing silently; the next start() gets a new one', () => {
    const r = runScript(
      `
      import { execFileSync } from 'node:child_process';
      import { Event, getContext, isMainModule } from NODEMP;
      export function sleeper(e) { e.set(); setInterval(() => {}, 1000); }
      export function quick() {}
      const servers = () => execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' })
        .split('\\n').filter((l) => l.includes('forkserver-main')).map((l) => Number(l.trim().split(' ')[0]));
      if (isMainModule(import.meta)) {
        const ctx = getContext('forkserver');
        process.on('warning', (w) => console.log('warning', w.code));
        const e = new Event();
        const d = new ctx.Process({ target: sleeper, args: [e], daemon: true });
        d.start();
        await e.wait(10000);
        const [first] = servers();
        process.kill(first, 'SIGKILL');
        while (d.isAlive()) await new Promise((r) => setTimeout(r, 10));
        console.log('daemon child exit code', d.exitCode);
        const q = new ctx.Process({ target: quick });
        q.start();
        console.log('next start', await q.join());
        const [second] = servers();
        console.log('new server', second !== first && second > 0);
      }
    `,
      plain,
    );
    // The warning comes on a later tick than the first look at the child: either order.
    expect(r.stdout.trim().split('\n').sort()).toEqual(['daemon child exit code 255', 'new server true', 'next start 0', 'warning NODEMP_FORKSERVER_DIED']);
  });

  it('SIGKILL of the parent ends the fork server and daemon children; non-daemon ones run on', async () => {
    const r = runScript(
      `
      import { execFileSync } from 'node:child_process';
      import { Event, getContext, isMainModule } from NODEMP;
      export function sleeper(e) { e.set(); setTimeout(() => {}, 3000); }
      if (isMainModule(import.meta)) {
        for (const method of ['forkserver', 'spawn']) {
          const ctx = getContext(method);
          for (const daemon of [true, false]) {
            const e = new Event();
            const p = new ctx.Process({ target: sleeper, args: [e], daemon });
            p.start();
            await e.wait(10000);
            console.log(method, daemon, p.pid);
          }
        }
        const server = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' })
          .split('\\n').find((l) => l.includes('forkserver-main')).trim().split(' ')[0];
        console.log('server', 'true', server);
        process.kill(process.pid, 'SIGKILL');
      }
    `,
      { ...plain, files: true },
    );
    expect(r.signal).toBe('SIGKILL');
    const lines = r.stdout.trim().split('\n').map((l) => l.split(' '));
    expect(lines).toHaveLength(5);
    // The server and the daemons go at once; the others run on.
    const gone = lines.filter((l) => l[1] === 'true').map((l) => Number(l[2]));
    const others = lines.filter((l) => l[1] === 'false').map((l) => Number(l[2]));
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && gone.some(running)) await new Promise((res) => setTimeout(res, 20));
    expect(gone.filter(running)).toEqual([]);
    expect(others.filter(running)).toEqual(others);
    for (const pid of others) process.kill(pid, 'SIGKILL');
  });

  it('setForkserverPreload: the server imports the modules, and its children find them loaded', () => {
    const fixtures = join(root, 'test', 'fixtures', 'start');
    const r = runScript(
      `
      import { Pool, setForkserverPreload } from NODEMP;
      import { preloaded, whoAmI } from ${JSON.stringify(join(fixtures, 'targets.mjs'))};
      setForkserverPreload([${JSON.stringify(join(fixtures, 'preload.mjs'))}]);
      const pool = new Pool({ processes: 1, startMethod: 'forkserver' });
      const [imported, worker] = [await pool.apply(preloaded), await pool.apply(whoAmI)];
      console.log(typeof imported, imported !== worker && imported !== process.pid, globalThis.nodempPreloaded ?? 'not here');
      await pool.terminate();
    `,
      plain,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('number true not here\n');
  });

  it('spawn works from a worker_threads thread', () => {
    // The target lives in a module of its own: the spawned child must not import this script, whose main
    // thread starts the worker.
    const targets = JSON.stringify(join(root, 'test', 'fixtures', 'start', 'targets.mjs'));
    const r = runScript(
      `
      import { Worker, isMainThread, parentPort } from 'node:worker_threads';
      if (isMainThread) {
        const w = new Worker(new URL(import.meta.url));
        w.on('message', (m) => console.log(m));
        await new Promise((resolve) => w.once('exit', resolve));
      } else {
        const { Queue, getContext, getStartMethod } = await import(NODEMP);
        const { report } = await import(${targets});
        const q = new Queue();
        const p = new (getContext('spawn').Process)({ target: report, args: [q, 'from a worker'] });
        p.start();
        const got = await q.get();
        parentPort.postMessage([getStartMethod(), got.tag, got.pid === p.pid, got.parent === process.pid, await p.join()].join(' '));
      }
    `,
      plain,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('forkserver from a worker true true 0\n');
  });

  it('a worker thread that used nodemp ends cleanly; a second one after it is refused with a clear error', () => {
    const targets = JSON.stringify(join(root, 'test', 'fixtures', 'start', 'targets.mjs'));
    const r = runScript(
      `
      import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
      if (isMainThread) {
        for (const job of ['child', 'child']) {
          const w = new Worker(new URL(import.meta.url), { workerData: job });
          const said = await new Promise((resolve) => { w.once('message', resolve); w.once('error', (e) => resolve(e.message)); });
          const code = await new Promise((resolve) => w.once('exit', resolve));
          console.log(job, said.split('\\n')[0], code);
        }
      } else {
        const { Queue, getContext } = await import(NODEMP);
        const { report } = await import(${targets});
        const q = new Queue();
        const p = new (getContext('forkserver').Process)({ target: report, args: [q, 'w'] });
        p.start();
        await q.get();
        parentPort.postMessage('joined ' + (await p.join()));
      }
    `,
      plain,
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^child joined 0 0\nchild .*used by a thread of this process that has ended.* 1\n$/);
  });

  it('the start-method examples run under plain node', () => {
    for (const [example, args, expected] of [
      ['start-method.mjs', [], /^new process started: \(\d+\)\nPython\n$/],
      ['get-context.mjs', ['forkserver'], /^new process started: \(\d+\)\nPython\n$/],
      ['get-context.mjs', ['spawn'], /^new process started: \(\d+\)\nPython\n$/],
      ['plain-node-app.mjs', [], /^start method: forkserver\n(got \d from the child\n){3}\[ 1, 4, 9, 16, 25 \]\n$/],
    ] as const) {
      const r = spawnSync(process.execPath, [join(root, 'examples', example), ...args], { encoding: 'utf8', cwd: root, timeout: 30000 });
      expect(r.stderr, example).toBe('');
      expect(r.stdout, example).toMatch(expected);
    }
  });
});
