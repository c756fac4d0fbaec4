// Functions by reference (lib/start/reference.ts), in real Node processes: the
// fixtures in test/fixtures/reference look functions up during their own
// top-level evaluation, as a program that starts processes does, and a second
// process imports them back as a 'spawn' or 'forkserver' child would.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { root } from './helpers.js';

const fixtures = join(root, 'test', 'fixtures', 'reference');
const url = (file: string): string => pathToFileURL(join(fixtures, file)).href;

interface Ref {
  module: string;
  name: string;
  check?: string;
}
interface Lookup {
  ref?: Ref;
  error?: { name: string; code?: string; message: string };
}

function node(args: string[], nodeArgs: string[] = []): string {
  return execFileSync(process.execPath, [...nodeArgs, ...args], { cwd: fixtures, encoding: 'utf8', timeout: 20_000 });
}

/** The JSON object a fixture printed last. */
function report<T>(file: string, nodeArgs: string[] = []): T {
  const lines = node([join(fixtures, file)], nodeArgs).trim().split('\n');
  return JSON.parse(lines[lines.length - 1] as string) as T;
}

/** A child's side: imports the reference in a fresh process (load.mjs) and calls it. */
function load(ref: Ref, args: unknown[] = []): { stdout: string; result?: unknown; error?: Lookup['error'] } {
  const stdout = node([join(fixtures, 'load.mjs'), JSON.stringify(ref), JSON.stringify(args)]);
  const lines = stdout.trim().split('\n');
  return { stdout, ...(JSON.parse(lines[lines.length - 1] as string) as { result?: unknown; error?: Lookup['error'] }) };
}

function expectNotExported(lookup: Lookup | undefined, name: string, why: RegExp): void {
  expect(lookup?.ref).toBeUndefined();
  expect(lookup?.error).toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_EXPORTED' });
  expect(lookup?.error?.message).toContain(`the Process target ${name}`);
  expect(lookup?.error?.message).toMatch(why);
  // What to do instead.
  expect(lookup?.error?.message).toMatch(/export it from its module.*import\.meta\.url.*'fork' start method/s);
}

describe('an ES module entry, looked up while its top-level code runs (with top-level await)', () => {
  let entry: Record<string, Lookup> & { isMain: boolean; secondIsMain: boolean; unloadedRan: boolean };
  beforeAll(() => {
    entry = report('entry.mjs');
  });

  it('finds its exported function, default export, renamed export and exported class', () => {
    expect(entry.work?.ref).toMatchObject({ module: url('entry.mjs'), name: 'work' });
    expect(entry.work?.ref?.check).toMatch(/^[\w-]{16}$/);
    expect(entry.defaulted?.ref).toMatchObject({ module: url('entry.mjs'), name: 'default' });
    expect(entry.renamed?.ref).toMatchObject({ module: url('entry.mjs'), name: 'renamed' });
    expect(entry.job?.ref).toMatchObject({ module: url('entry.mjs'), name: 'Job' });
  });

  it('a child process imports them back and calls them; the guard keeps the entry program from running there', () => {
    const work = load(entry.work?.ref as Ref, ['x']);
    expect(work.result).toBe('work x');
    expect(work.stdout).not.toContain('MAIN BLOCK RAN');
    expect(load(entry.defaulted?.ref as Ref).result).toBe('defaulted');
    expect(load(entry.renamed?.ref as Ref).result).toBe('alias');
    expect(load(entry.job?.ref as Ref).result).toBe('job');
  });

  it('finds a closure made at its top level and held by an export', () => {
    expect(entry.madeHere?.ref).toMatchObject({ module: url('entry.mjs'), name: 'madeHere' });
    expect(load(entry.madeHere?.ref as Ref, ['x']).result).toBe('local 2 x');
  });

  it('finds functions exported by another ES module: named, anonymous default, and a closure made elsewhere but exported there', () => {
    expect(entry.fromSecond?.ref).toMatchObject({ module: url('second.mjs'), name: 'fromSecond' });
    expect(entry.anonymousDefault?.ref).toMatchObject({ module: url('second.mjs'), name: 'default' });
    // Defined in third.mjs, which does not export it.
    expect(entry.reexported?.ref).toMatchObject({ module: url('second.mjs'), name: 'reexported' });
    expect(load(entry.fromSecond?.ref as Ref, [2]).result).toBe('second 2');
    expect(load(entry.anonymousDefault?.ref as Ref).result).toBe('anonymous default');
    expect(load(entry.reexported?.ref as Ref, [3]).result).toBe('made 3');
    expect(entry.boundSecond?.ref).toMatchObject({ module: url('second.mjs'), name: 'boundSecond' });
    expect(load(entry.boundSecond?.ref as Ref).result).toBe('second bound');
  });

  it('takes an explicit { module, name } (import.meta.url or import.meta), checks it against a loaded module, and leaves an unloaded one unloaded', () => {
    expect(entry.explicit?.ref).toEqual({ module: url('entry.mjs'), name: 'work' });
    expect(entry.explicitMeta?.ref).toEqual({ module: url('entry.mjs'), name: 'work' });
    expect(entry.explicitMissing?.error).toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_EXPORTED' });
    expect(entry.explicitMissing?.error?.message).toContain(`${url('entry.mjs')} has no export 'nothing'`);
    expect(entry.explicitRelative?.error?.name).toBe('TypeError');
    expect(entry.explicitRelative?.error?.message).toContain('"./entry.mjs"');
    expect(entry.explicitUnloaded?.ref).toEqual({ module: url('unloaded.mjs'), name: 'never' });
    expect(entry.unloadedRan).toBe(false);
  });

  it('refuses what no child can import, naming the function and saying what to do', () => {
    expectNotExported(entry.hidden, 'hidden', /its module does not export it/);
    expectNotExported(entry.closure, 'closure', /it is a closure, created inside makeClosure\(\)/);
    expectNotExported(entry.arrow, 'an anonymous function', /it has no name/);
    expectNotExported(entry.bound, 'bound work', /it is a bound function/);
    expectNotExported(entry.method, 'run', /it is a method/);
    expectNotExported(entry.builtin, 'max', /it is a built-in function/);
  });

  it('isMainModule is true in the entry and false in a module it imports', () => {
    expect(entry.isMain).toBe(true);
    expect(entry.secondIsMain).toBe(false);
  });
});

describe('under a CommonJS loader hook (tsx, ts-node, @babel/register)', () => {
  it('finds what ES modules declare as exports without require(), which would run a second copy of the module', () => {
    const hooked = report<Record<string, Lookup> & { requireHookRuns: number }>('entry.mjs', ['--require', './require-hook.cjs']);
    expect(hooked.requireHookRuns).toBe(0);
    expect(hooked.work?.ref).toMatchObject({ module: url('entry.mjs'), name: 'work' });
    expect(hooked.fromSecond?.ref).toMatchObject({ module: url('second.mjs'), name: 'fromSecond' });
    expect(hooked.anonymousDefault?.ref).toMatchObject({ module: url('second.mjs'), name: 'default' });
    // Only a namespace could show this one (defined in third.mjs, exported by second.mjs).
    expect(hooked.reexported?.error?.code).toBe('ERR_NOT_EXPORTED');
  });
});

describe('an ES module entry without top-level await (require() of it is a cycle while it runs)', () => {
  it('finds its export and its `export default name`, and refuses its unexported function', () => {
    const sync = report<Record<string, Lookup>>('sync-entry.mjs');
    expect(sync.syncWork?.ref).toMatchObject({ module: url('sync-entry.mjs'), name: 'syncWork' });
    expect(load(sync.syncWork?.ref as Ref).result).toBe('sync');
    expect(sync.syncDefault?.ref).toMatchObject({ module: url('sync-entry.mjs'), name: 'default' });
    expect(load(sync.syncDefault?.ref as Ref).result).toBe('sync default');
    expectNotExported(sync.unexported, 'unexported', /its module does not export it/);
    expectNotExported(sync.compiled, 'compiled', /not loaded by Node's module loader but compiled by a module runner/);
  });
});

describe('CommonJS', () => {
  let cjs: Record<string, Lookup> & { isMain: boolean; byFilename: boolean; libIsMain: boolean };
  beforeAll(() => {
    cjs = report('cjs-entry.cjs');
  });

  it('finds exports.f of the entry and of a required module, and module.exports = f', () => {
    expect(cjs.cjsWork?.ref).toMatchObject({ module: url('cjs-entry.cjs'), name: 'cjsWork' });
    expect(cjs.named?.ref).toMatchObject({ module: url('cjs-lib.cjs'), name: 'named' });
    expect(cjs.single?.ref).toMatchObject({ module: url('cjs-single.cjs'), name: 'module.exports' });
    expect(load(cjs.named?.ref as Ref, [1]).result).toBe('named 1');
    expect(load(cjs.single?.ref as Ref, [2]).result).toBe('single 2');
  });

  it('a child imports the CommonJS entry without running its guarded block', () => {
    const loaded = load(cjs.cjsWork?.ref as Ref, ['y']);
    expect(loaded.result).toBe('cjs y');
    expect(loaded.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('takes an explicit reference by absolute path, refuses a missing export and an unexported function', () => {
    expect(cjs.explicit?.ref).toEqual({ module: url('cjs-entry.cjs'), name: 'cjsWork' });
    expect(cjs.explicitMissing?.error?.code).toBe('ERR_NOT_EXPORTED');
    expectNotExported(cjs.cjsHidden, 'cjsHidden', /its module does not export it/);
  });

  it('isMainModule(module) is true in the entry, false for a required module', () => {
    expect(cjs.isMain).toBe(true);
    expect(cjs.byFilename).toBe(true);
    expect(cjs.libIsMain).toBe(false);
  });
});

describe('the main-module guard', () => {
  it('accepts import.meta, a path and a URL, and is false everywhere after markChild()', () => {
    expect(report('guard.mjs')).toEqual({ before: true, byPath: true, byUrl: true, secondIsMain: false, after: false });
  });

  it("keeps a child's import of the entry from running the program even when the child runs that file as its entry", () => {
    expect(node([join(fixtures, 'entry.mjs')]).trim().split('\n')[0]).toBe('MAIN BLOCK RAN');
    expect(node([join(fixtures, 'entry.mjs')], ['--import', './mark-child.mjs'])).toBe('');
  });
});

describe('loadReference', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nodemp-reference-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses an export whose source changed since the parent made the reference, and a missing export, naming module and name', () => {
    const file = join(dir, 'changing.mjs');
    writeFileSync(file, 'export function task() { return 1; }\n');
    const module = pathToFileURL(file).href;
    const { ref } = JSON.parse(node([join(fixtures, 'lookup-file.mjs'), module, 'task'])) as Lookup;
    expect(ref).toMatchObject({ module, name: 'task' });
    expect(load(ref as Ref).result).toBe(1);
    writeFileSync(file, 'export function task() { return 2; }\n');
    const changed = load(ref as Ref);
    expect(changed.error).toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_EXPORTED' });
    expect(changed.error?.message).toContain(`the export 'task' of ${module} is not the function the parent passed`);
    const missing = load({ module, name: 'absent' });
    expect(missing.error).toMatchObject({ code: 'ERR_NOT_EXPORTED' });
    expect(missing.error?.message).toContain(`${module} has no export 'absent'`);
  });

  it('refuses an export that is not a function', () => {
    const file = join(dir, 'value.mjs');
    writeFileSync(file, 'export const answer = 42;\n');
    const notFunction = load({ module: pathToFileURL(file).href, name: 'answer' });
    expect(notFunction.error?.code).toBe('ERR_NOT_EXPORTED');
    expect(notFunction.error?.message).toContain("the export 'answer'");
    expect(notFunction.error?.message).toContain('is number, not a function');
  });
});

describe('in a worker_threads thread', () => {
  it('finds the worker module\'s own export and another module\'s, refuses a closure, loads a reference; the worker script is its entry', () => {
    const worker = report<Record<string, Lookup> & { isMain: boolean; loaded: string }>('worker-host.mjs');
    expect(worker.inWorker?.ref).toMatchObject({ module: url('worker.mjs'), name: 'inWorker' });
    expect(worker.fromSecond?.ref).toMatchObject({ module: url('second.mjs'), name: 'fromSecond' });
    expect(worker.closure?.error?.code).toBe('ERR_NOT_EXPORTED');
    expect(worker.isMain).toBe(true);
    expect(worker.loaded).toBe('second from a worker');
  });
});

describe('with the fork start method', () => {
  it('a process that looked functions up (and failed one) still forks: no inspector is left listening', () => {
    const stdout = node([join(fixtures, 'fork-after.mjs')], ['--single-threaded']);
    expect(stdout).toContain('child second ran');
    const last = JSON.parse(stdout.trim().split('\n').pop() as string) as { ref: Lookup; failed: string; inspectorUrl: string | null; exitCode: number };
    expect(last).toMatchObject({ ref: { ref: { module: url('fork-after.mjs'), name: 'target' } }, failed: 'ERR_NOT_EXPORTED', inspectorUrl: null, exitCode: 0 });
  });
});
