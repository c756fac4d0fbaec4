// Managers in whole programs under plain `node`: the server process started
// by forkserver (the default there) and spawn, a user's class registered and
// found by reference, and a remote manager reached over TCP by unrelated
// process trees, as the tutorials' "shared queue on a server".
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { dist, runScript, running, waitUntil } from '../helpers.js';

const plain = { nodeArgs: [] as string[], timeout: 30000 };

describe('a plain node program with a Manager', () => {
  for (const method of ['forkserver', 'spawn']) {
    it(`${method}: the tutorial's dict and list, and a registered class found by reference`, () => {
      const r = runScript(
        `
        import { BaseManager, Manager, Process, getContext, isMainModule } from NODEMP;
        export function f(d, l) {
          d.setSync(1, '1');
          d.setSync('2', 2);
          d.setSync(0.25, null);
          l.reverseSync();
        }
        export class Counter {
          n = 0;
          incr(by = 1) { return (this.n += by); }
        }
        export class CounterManager extends BaseManager {}
        CounterManager.register('Counter', Counter);
        export function bump(c) { c.incrSync(10); }
        if (isMainModule(import.meta)) {
          const ctx = getContext('${method}');
          const manager = ctx.Manager();
          try {
            const d = await manager.dict();
            const l = await manager.list([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
            const p = new ctx.Process({ target: f, args: [d, l] });
            p.start();
            await p.join();
            console.log(manager.process.startMethod, p.exitCode, JSON.stringify([...(await d.copy())]), JSON.stringify(l.copySync()));
          } finally {
            await manager.shutdown();
          }
          const cm = new CounterManager({ startMethod: '${method}' });
          await cm.start();
          const c = await cm.Counter();
          const q = new ctx.Process({ target: bump, args: [c] });
          q.start();
          await q.join();
          console.log(await c.incr(1));
          await cm.shutdown();
        }
        `,
        plain,
      );
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${method} 0 [[1,"1"],["2",2],[0.25,null]] [9,8,7,6,5,4,3,2,1,0]\n11\n`);
    });
  }

  it('Manager() with the default start method (forkserver) in a plain program', () => {
    const r = runScript(
      `
      import { Manager } from NODEMP;
      const m = Manager();
      const ns = await m.Namespace();
      ns.setSync('x', 1);
      console.log(m.process.startMethod, await ns.get('x'));
      await m.shutdown();
      `,
      plain,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('forkserver 1\n');
  });
});

describe('a manager Pool', () => {
  const tasks = `
    export function square(x) { return x * x; }
    export function add(a, b) { return a + b; }
    export function fails(x) { throw new RangeError('bad ' + x); }
  `;
  const program = `
    import { Manager, isMainModule } from NODEMP;
    import { square, add, fails } from './tasks.mjs';
    export function cube(x) { return x * x * x; }
    if (isMainModule(import.meta)) {
      const m = Manager({ poolModules: [new URL('./tasks.mjs', import.meta.url).href] });
      try {
        const pool = await m.Pool({ processes: 2 });
        const out = [await pool.map(square, [1, 2, 3]), pool.applySync(add, [2, 3]), await pool.starmap(add, [[1, 2]])];
        const r = await pool.applyAsync(square, [7]);
        out.push(await r.get(5000), r.successfulSync());
        const streamed = [];
        for await (const x of pool.imap(square, [5, 6])) streamed.push(x);
        out.push(streamed);
        out.push(await pool.apply(fails, [1]).catch((e) => e.name + ': ' + e.message));
        out.push(await pool.apply(cube, [2]).catch((e) => e.code));
        await pool.terminate();
        console.log(JSON.stringify(out));
      } finally {
        await m.shutdown();
      }
    }
  `;
  for (const [how, nodeArgs, cube] of [
    ['fork (the server cannot import the still-running main module: poolModules only)', ['--single-threaded'], '"ERR_NOT_EXPORTED"'],
    ['forkserver (the server imports the main module afresh)', [], '8'],
  ] as const) {
    it(`runs tasks in the server's own pool: ${how}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'nodemp-pool-'));
      writeFileSync(join(dir, 'tasks.mjs'), tasks);
      writeFileSync(join(dir, 'main.mjs'), program.replaceAll('NODEMP', JSON.stringify(dist)));
      const child = spawn(process.execPath, [...nodeArgs, join(dir, 'main.mjs')], { stdio: ['ignore', 'pipe', 'pipe'] });
      started.push(child);
      const r = await output(child);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`[[1,4,9],5,[3],49,true,[25,36],"RangeError: bad 1",${cube}]\n`);
    });
  }
});

function script(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nodemp-remote-'));
  const file = join(dir, 'program.mjs');
  writeFileSync(file, source.replaceAll('NODEMP', JSON.stringify(dist)));
  return file;
}

async function output(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stdout, stderr };
}

const started: ChildProcess[] = [];
afterEach(() => {
  for (const c of started.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

describe('a remote manager', () => {
  it('serves a shared queue over TCP to clients in unrelated process trees, with the authkey', async () => {
    const authkey = 'a shared secret';
    const server = spawn(
      process.execPath,
      [
        script(`
        import { BaseManager, Managed, QueueProxy } from NODEMP;
        const queue = new Managed.Queue();
        class QueueManager extends BaseManager {}
        QueueManager.register('getQueue', () => queue, { proxytype: QueueProxy });
        const server = new QueueManager({ address: ['127.0.0.1', 0], authkey: Buffer.from(${JSON.stringify(authkey)}) }).getServer();
        const serving = server.serveForever();
        console.log(JSON.stringify(server.address));
        process.on('SIGTERM', () => server.shutdown());
        await serving;
        console.log('server done');
        `),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.push(server);
    const serverOut = output(server);
    let address = '';
    server.stdout?.on('data', (s: Buffer) => (address ||= s.toString().split('\n')[0] as string));
    expect(await waitUntil(() => address !== '', 10000)).toBe(true);
    const client = (role: string, key: string): ChildProcess => {
      const child = spawn(
        process.execPath,
        [
          script(`
          import { BaseManager, QueueProxy, AuthenticationError } from NODEMP;
          class QueueManager extends BaseManager {}
          QueueManager.register('getQueue', null, { proxytype: QueueProxy });
          const m = new QueueManager({ address: ${address}, authkey: Buffer.from(${JSON.stringify(key)}) });
          try {
            await m.connect();
          } catch (error) {
            console.log(error instanceof AuthenticationError ? 'refused' : String(error));
            process.exit(0);
          }
          const queue = await m.getQueue();
          if (${JSON.stringify(role)} === 'producer') {
            for (let i = 0; i < 50; i++) await queue.put({ job: i, from: process.pid });
            await queue.put(null);
            console.log('produced 50');
          } else {
            let sum = 0;
            for (;;) {
              const item = queue.getSync({ timeout: 10000 });
              if (item === null) break;
              sum += item.job;
            }
            console.log('consumed sum', sum);
          }
          await m.shutdown();
          `),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      started.push(child);
      return child;
    };
    const consumer = output(client('consumer', authkey));
    const producer = output(client('producer', authkey));
    const intruder = output(client('producer', 'the wrong secret'));
    expect(await producer).toEqual({ code: 0, stdout: 'produced 50\n', stderr: '' });
    expect(await consumer).toEqual({ code: 0, stdout: `consumed sum ${(49 * 50) / 2}\n`, stderr: '' });
    expect(await intruder).toEqual({ code: 0, stdout: 'refused\n', stderr: '' });
    server.kill('SIGTERM');
    const done = await serverOut;
    expect(done.stderr).toBe('');
    expect(done.stdout.endsWith('server done\n')).toBe(true);
    expect(running(server.pid as number)).toBe(false);
  });
});
