// Contexts and the choice of start method, as Python's multiprocessing.context.
import { describe, expect, it } from 'vitest';
import * as nodemp from '../dist/index.js';
import { ProcessError, getAllStartMethods, getContext, getStartMethod, setStartMethod } from '../dist/index.js';
import { childExecArgv } from '../dist/start/spawn.js';

describe('contexts', () => {
  it('carry the whole API, with Process and Pool bound to their method', () => {
    for (const method of ['fork', 'spawn', 'forkserver'] as const) {
      const ctx = getContext(method);
      expect(getContext(method)).toBe(ctx);
      expect(ctx.getStartMethod()).toBe(method);
      for (const name of ['Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Event', 'Condition', 'Barrier', 'Value', 'Array', 'RawValue', 'RawArray', 'Queue', 'JoinableQueue', 'SimpleQueue', 'Pipe', 'SharedMemory', 'wait', 'currentProcess', 'activeChildren', 'cpuCount'] as const) {
        expect(ctx[name], name).toBe(nodemp[name]);
      }
      const p = new ctx.Process();
      expect(p).toBeInstanceOf(nodemp.Process);
      expect(p.startMethod).toBe(method);
      expect(ctx.Process.name).toBe({ fork: 'ForkProcess', spawn: 'SpawnProcess', forkserver: 'ForkServerProcess' }[method]);
      const pool = new ctx.Pool({ processes: 1 });
      expect(pool).toBeInstanceOf(nodemp.Pool);
      expect(pool.startMethod).toBe(method);
      void pool.terminate();
    }
  });

  it('name the valid methods for an unknown one', () => {
    expect(() => getContext('thread' as never)).toThrow(RangeError);
    expect(() => getContext('thread' as never)).toThrow(/'fork', 'spawn', 'forkserver'/);
    expect(() => setStartMethod('posix' as never)).toThrow(/'fork', 'spawn', 'forkserver'/);
    expect(() => new nodemp.Pool({ startMethod: 'x' as never })).toThrow(/'fork', 'spawn', 'forkserver'/);
  });

  it('set the method once, again only with force; getStartMethod fixes the default once asked', () => {
    expect(getStartMethod({ allowNone: true })).toBe(null);
    expect(getAllStartMethods()).toEqual(['fork', 'spawn', 'forkserver']);
    setStartMethod('spawn');
    expect(getStartMethod()).toBe('spawn');
    expect(new nodemp.Process().startMethod).toBe('spawn');
    expect(getContext().getStartMethod()).toBe('spawn');
    let error: unknown;
    try {
      setStartMethod('forkserver');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ProcessError);
    expect((error as ProcessError).code).toBe('ERR_CONTEXT_SET');
    setStartMethod('forkserver', { force: true });
    expect(getStartMethod()).toBe('forkserver');
    setStartMethod(null, { force: true });
    expect(getStartMethod({ allowNone: true })).toBe(null);
    expect(getStartMethod()).toBe('fork');
    expect(getStartMethod({ allowNone: true })).toBe('fork');
    setStartMethod(null, { force: true });
  });

  it("a spawned child gets the parent's flags without the debugger's or an eval", () => {
    expect(childExecArgv(['--single-threaded', '--inspect=9229', '--max-old-space-size=100', '-e', 'x()', '--inspect-brk', '--watch'])).toEqual([
      '--single-threaded',
      '--max-old-space-size=100',
    ]);
    expect(childExecArgv(['--require', './setup.cjs', '--import=tsx', '-p', '1', '--conditions=dev'])).toEqual(['--require', './setup.cjs', '--import=tsx', '--conditions=dev']);
  });
});
