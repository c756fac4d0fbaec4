// The tutorials' Process programs, as shipped in examples/, run through the launcher.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root, waitUntil } from './helpers.js';

function run(example: string) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'nodemp.js'), join(root, 'examples', example)], {
    encoding: 'utf8',
    cwd: root,
    timeout: 20000,
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

describe('examples', () => {
  it('process-basic: the child prints hello bob with the parent as its ppid', () => {
    const out = run('process-basic.mjs');
    const mainPid = out.match(/main line\nparent process: \d+\nprocess id: (\d+)/)![1];
    expect(out).toMatch(new RegExp(`function f\\nparent process: ${mainPid}\\nprocess id: (?!${mainPid}\\n)\\d+\\nhello bob`));
  });

  it('globals-not-shared: child 11, parent 10', () => {
    expect(run('globals-not-shared.mjs')).toBe('child num = 11\nparent num = 10\n');
  });

  it('process-subclass and two-processes: every child line appears, parent finishes last', () => {
    const sub = run('process-subclass.mjs');
    expect(sub.match(/child \(parent: \d+\): \d/g)).toHaveLength(6);
    const two = run('two-processes.mjs');
    expect(two.match(/child \(parent \d+\): \d+/g)).toHaveLength(20);
    expect(two.trimEnd().endsWith('main process done')).toBe(true);
  });

  it('exit-codes', () => {
    const out = run('exit-codes.mjs');
    expect(out).toContain('ok: exitCode 0');
    expect(out).toContain('throws: exitCode 1');
    expect(out).toContain('rejects: exitCode 1');
    expect(out).toContain('exits: exitCode 3');
    expect(out).toContain('terminated: exitCode -15');
  });
});

describe('manager examples', () => {
  it('manager-dict-list: the child changes the dict and the list (plain node, forkserver)', () => {
    const r = spawnSync(process.execPath, [join(root, 'examples', 'manager-dict-list.mjs')], { encoding: 'utf8', cwd: root, timeout: 20000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("Map(3) { 1 => '1', '2' => 2, 0.25 => null }\n[\n  9, 8, 7, 6, 5,\n  4, 3, 2, 1, 0\n]\n");
  });

  it('manager-remote-queue: a server, a worker and a producer as three programs', async () => {
    const script = join(root, 'examples', 'manager-remote-queue.mjs');
    const port = String(40000 + (process.pid % 20000));
    const server = spawn(process.execPath, [script, 'server', port], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      let out = '';
      server.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
      await waitUntil(() => out.includes('serving'), 10000);
      const worker = spawn(process.execPath, [script, 'worker', port], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
      let done = '';
      worker.stdout.setEncoding('utf8').on('data', (s: string) => (done += s));
      const put = spawnSync(process.execPath, [script, 'put', port], { cwd: root, encoding: 'utf8', timeout: 20000 });
      expect(put.stdout).toBe('put 5 jobs\n');
      const [code] = await once(worker, 'exit');
      expect(code).toBe(0);
      expect(done.match(/did job \d/g)).toEqual(['did job 1', 'did job 2', 'did job 3', 'did job 4', 'did job 5']);
    } finally {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
  });
});

describe('CommonJS consumers', () => {
  it('require("nodemp") works and forks', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--single-threaded',
        '-e',
        `const { Process } = require('nodemp');
         const p = new Process({ target: () => process.exit(4) });
         p.start();
         console.log('cjs exit', p.joinSync());`,
      ],
      { encoding: 'utf8', cwd: root },
    );
    expect(r.stdout).toContain('cjs exit 4');
  });
  it('lock-hello: ten whole lines, one per process', () => {
    const lines = run('lock-hello.mjs').trim().split('\n').sort();
    expect(lines).toEqual(Array.from({ length: 10 }, (_, i) => `hello world ${i}`).sort());
  });

  it('shared-value-array: the parent sees what the child wrote', () => {
    expect(run('shared-value-array.mjs')).toBe('3.1415927\n[\n   0, -1, -2, -3, -4,\n  -5, -6, -7, -8, -9\n]\n');
  });

  it('counter: the locked run counts every increment', () => {
    const out = run('counter.mjs');
    const unlocked = Number(out.match(/without the lock: (\d+)/)![1]);
    expect(unlocked).toBeGreaterThan(0);
    expect(unlocked).toBeLessThanOrEqual(4000);
    expect(out).toContain('Counter value with the lock: 4000');
  });

  it('bank-account: exactly one draw succeeds', () => {
    const out = run('bank-account.mjs');
    expect(out.match(/drew 800/g)).toHaveLength(1);
    expect(out.match(/failed: balance too low/g)).toHaveLength(2);
    expect(out).toContain('final balance: 100');
  });
  it('queue-basic: the list comes through', () => {
    expect(run('queue-basic.mjs')).toBe("[ 42, null, 'hello' ]\n");
  });

  it('queue-two-readers: every number read exactly once, by either reader', () => {
    const out = run('queue-two-readers.mjs');
    const got = [...out.matchAll(/reader \d got (\d)/g)].map((m) => Number(m[1])).sort();
    expect(got).toEqual([0, 1, 2, 3, 4, 5]);
    expect(out.trimEnd().endsWith('all received')).toBe(true);
  });

  it('queue-timeout: QueueEmpty at once and after the timeout', () => {
    expect(run('queue-timeout.mjs')).toBe('block: false -> QueueEmpty\ntimeout: 300 -> QueueEmpty after the timeout\n');
  });

  it('pool-map: squares in order, and the workers\' sums', () => {
    const out = run('pool-map.mjs');
    expect(out).toContain('[ 1, 4, 9, 16, 25 ]');
    expect(out.trimEnd().split('\n').slice(-3)).toEqual(['1225', '4950', '11175']);
    expect(out.match(/\(\d+\) summed/g)).toHaveLength(3);
  });

  it('pool-apply-async: ten tasks on at most five processes, then close and join', () => {
    const out = run('pool-apply-async.mjs');
    const lines = out.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('123 '))).toHaveLength(5);
    expect(lines.filter((l) => l.startsWith('abc '))).toHaveLength(5);
    const pids = new Set(lines.slice(0, -1).map((l) => l.match(/\((\d+)\)/)![1]));
    expect(pids.size).toBeLessThanOrEqual(5);
    expect(pids.has(String(process.pid))).toBe(false);
    expect(lines.at(-1)).toBe('all done');
  });
});
