import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from './helpers.js';

const launcher = join(root, 'bin', 'nodemp.js');

function script(source: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'nodemp-launch-')), 'app.mjs');
  writeFileSync(file, source);
  return file;
}

describe('nodemp launcher', () => {
  it('runs the script single-threaded in the same process, with its arguments and exit code', () => {
    const app = script(`console.log(JSON.stringify({ argv: process.argv.slice(2), execArgv: process.execArgv, pid: process.pid })); process.exit(7);`);
    const r = spawnSync(process.execPath, [launcher, '--max-old-space-size=200', app, 'a', '--b'], { encoding: 'utf8' });
    expect(r.status).toBe(7);
    const out = JSON.parse(r.stdout);
    expect(out.argv).toEqual(['a', '--b']);
    expect(out.execArgv).toEqual(['--single-threaded', '--max-old-space-size=200']);
    expect(out.pid).toBe(r.pid);
  });

  it('passes signals through: the program is the launcher process', () => {
    const app = script(`process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 5000);`);
    const r = spawnSync(process.execPath, [launcher, app], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGTERM');
  });

  it('prints usage without a script', () => {
    const r = spawnSync(process.execPath, [launcher], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/usage: nodemp/);
  });
});
