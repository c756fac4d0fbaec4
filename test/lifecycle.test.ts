// Parent exit and death: daemons, non-daemons, and what is left behind. Each
// scenario runs in its own node process so it can exit or be SIGKILLed.
import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Process } from '../dist/index.js';
import { childrenOf, dist, openFds, running, runScript, shmEntries, waitUntil } from './helpers.js';

describe('parent exit', () => {
  it('waits for non-daemon children and terminates daemon children at normal exit', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      const worker = new Process({ target: () => new Promise((r) => setTimeout(r, 150)).then(() => console.log('worker done')) });
      const daemon = new Process({ daemon: true, target: () => setInterval(() => {}, 1000) });
      worker.start();
      daemon.start();
      console.log('pids', worker.pid, daemon.pid);
      process.on('exit', () => console.log('daemon exitCode', daemon.exitCode));
    `);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('worker done');
    expect(r.stdout).toContain('daemon exitCode -15');
    const [, a, b] = r.stdout.match(/pids (\d+) (\d+)/)!.map(Number);
    expect(running(a)).toBe(false);
    expect(running(b)).toBe(false);
  });

  it('process.exit() in the parent still joins non-daemon children', () => {
    const r = runScript(`
      import { Process } from NODEMP;
      const p = new Process({ target: () => new Promise((r) => setTimeout(r, 100)).then(() => console.log('child finished')) });
      p.start();
      process.exit(0);
    `);
    expect(r.stdout).toContain('child finished');
    expect(r.status).toBe(0);
  });

  it('a SIGKILLed parent takes its daemon children with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemp-kill-'));
    const file = join(dir, 'parent.mjs');
    writeFileSync(
      file,
      `import { Process } from ${JSON.stringify(dist)};
       const kids = [1, 2, 3].map(() => new Process({ daemon: true, target: () => setInterval(() => {}, 1000) }));
       for (const k of kids) k.start();
       console.log(kids.map((k) => k.pid).join(' '));
       setInterval(() => {}, 1000);`,
    );
    const parent = spawn(process.execPath, ['--single-threaded', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve) => parent.stdout.once('data', (d) => resolve(String(d))));
    const pids = line.trim().split(' ').map(Number);
    expect(pids.every((pid) => running(pid))).toBe(true);
    parent.kill('SIGKILL');
    await new Promise((r) => parent.once('exit', r));
    expect(await waitUntil(() => pids.every((pid) => !running(pid)), 5000)).toBe(true);
  });
});

describe('no leaks', () => {
  it('leaves no zombies, file descriptors or /dev/shm entries after many processes', async () => {
    const fds = openFds();
    // SharedMemory's tests (nmt_, nml_, generated nodemp_ names) run beside this one.
    const mine = (): string[] => shmEntries().filter((name) => !/^(nmt_|nml_|nodemp_)/.test(name));
    const shm = mine();
    for (let round = 0; round < 3; round++) {
      const procs = Array.from({ length: 20 }, (_, i) => new Process({ target: () => (i % 2 ? undefined : new Promise((r) => setTimeout(r, 5))) }));
      for (const p of procs) p.start();
      for (const p of procs.slice(0, 10)) await p.join();
      for (const p of procs.slice(10)) p.joinSync();
    }
    const killed = new Process({ target: () => setInterval(() => {}, 1000) });
    killed.start();
    killed.kill();
    await killed.join();
    // Descriptors of earlier tests may close meanwhile; none may be added.
    expect(openFds().filter((fd) => !fds.includes(fd))).toEqual([]);
    expect(mine()).toEqual(shm);
    expect(childrenOf(process.pid).filter((pid) => !running(pid))).toEqual([]);
  });
});
