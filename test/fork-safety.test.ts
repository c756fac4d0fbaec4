import { describe, expect, it } from 'vitest';
import { isSingleThreaded } from '../dist/index.js';
import { runScript } from './helpers.js';

describe('fork safety', () => {
  it('parses the single-threaded flag as node does (last one wins)', () => {
    expect(isSingleThreaded(['--single-threaded'])).toBe(true);
    expect(isSingleThreaded(['--single_threaded'])).toBe(true);
    expect(isSingleThreaded(['--single-threaded', '--no-single-threaded'])).toBe(false);
    expect(isSingleThreaded(['--max-old-space-size=100'])).toBe(false);
  });

  it('refuses to fork without --single-threaded and says how to run instead', () => {
    const r = runScript(
      `
      import { Process, ForkSafetyError, getContext, setStartMethod } from NODEMP;
      try { getContext('fork'); console.log('context'); }
      catch (e) { console.log('getContext', e instanceof ForkSafetyError); }
      setStartMethod('fork');
      try { new Process({ target: () => {} }).start(); console.log('started'); }
      catch (e) { console.log(e instanceof ForkSafetyError, e.code); console.log(e.message); }
    `,
      { nodeArgs: [] },
    );
    expect(r.stdout).toContain('getContext true');
    expect(r.stdout).toContain('true ERR_FORK_UNSAFE');
    expect(r.stdout).toContain('npx nodemp app.js');
    expect(r.stdout).toContain('node --single-threaded app.js');
    expect(r.stdout).not.toContain('started');
  });

  it('refuses to fork while a worker thread runs, and forks again once it has exited', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      import { Worker } from 'node:worker_threads';
      const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
      await new Promise((r) => w.once('online', r));
      try { new Process({ target: () => {} }).start(); } catch (e) { console.log(e.name, /worker_threads Worker/.test(e.message)); }
      await w.terminate();
      const p = new Process({ target: () => {} });
      p.start();
      console.log('after worker exit', await p.join());
    `);
    expect(r.stdout).toContain('ForkSafetyError true');
    expect(r.stdout).toContain('after worker exit 0');
  });

  it('refuses to fork in a worker thread', () => {
    const r = runScript(`
      import { Worker, isMainThread, parentPort } from 'node:worker_threads';
      if (isMainThread) {
        new Worker(new URL(import.meta.url)).on('message', (m) => console.log(m));
      } else {
        const { Process, getContext } = await import(NODEMP);
        try { new (getContext('forkserver').Process)({ target: () => {} }); getContext('fork'); parentPort.postMessage('forked'); }
        catch (e) { parentPort.postMessage(e.name + ': ' + e.message); }
      }
    `);
    expect(r.stdout).toMatch(/^ForkSafetyError: Process.start\(\) was called in a worker thread/);
  });

  // V8 posts a worker task on every full collection even when single-threaded; in a
  // child forked while Node's platform threads were waiting for tasks, the signal
  // that wakes them blocked for ever (about 3 of 4 children here, before the fix).
  it("lets a child run full collections: Node's platform threads are parked across fork()", () => {
    const r = runScript(
      `
      import v8 from 'node:v8';
      import vm from 'node:vm';
      import { Process } from NODEMP;
      const { native } = await import(NODEMP.replace(/index\\.js$/, 'native.js'));
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc');
      const outcomes = new Set();
      let hung = 0;
      for (let i = 0; i < 20; i++) {
        for (let j = 0; j <= i % 5; j++) gc();
        const p = new Process({
          target: () => {
            if (native.lastParking() !== 'none') process.exit(3);
            for (let j = 0; j < 12; j++) gc();
          },
        });
        p.start();
        outcomes.add(native.lastParking());
        p.joinSync(10000);
        if (p.exitCode === null) {
          hung++;
          p.kill();
          p.joinSync();
        } else if (p.exitCode !== 0) console.log('exit code', p.exitCode);
      }
      console.log('parking', [...outcomes].join());
      console.log('hung', hung);
    `,
      { timeout: 240_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('parking parked\nhung 0\n');
  });

  it('refuses a second thread of one process, saying which thread may use it', () => {
    const r = runScript(`
      import { Worker } from 'node:worker_threads';
      await import(NODEMP);
      const w = new Worker('import(' + JSON.stringify(NODEMP) + ').then(() => console.log("loaded"), (e) => console.log(e.message))', { eval: true });
      await new Promise((resolve) => w.once('exit', resolve));
    `);
    expect(r.stdout).toMatch(/already in use by another thread of this process/);
  });
});
