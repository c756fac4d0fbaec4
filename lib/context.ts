// Contexts (Python's multiprocessing.context): an object with the whole
// public API whose Process and Pool use one start method, so that a library
// can pick its method without changing the program's.
import * as api from './api.js';
import { Process, processClassFor } from './process.js';
import { Pool, type PoolOptions } from './pool.js';
import { Manager, type ManagerOptions } from './manager/manager.js';
import { ForkSafetyError } from './errors.js';
import { forkSafetyProblem } from './fork-safety.js';
import {
  checkStartMethod,
  currentStartMethod,
  getAllStartMethods,
  getStartMethod,
  setStartMethod,
  type StartMethod,
} from './start/method.js';
import { setForkserverPreload } from './start/forkserver.js';

type Api = typeof api;

export interface Context extends Omit<Api, 'Process' | 'Pool' | 'Manager'> {
  readonly Process: typeof Process;
  readonly Pool: typeof Pool;
  readonly Manager: typeof Manager;
  /** The method of this context (a bound one), or the current global choice (the default context). */
  getStartMethod(options?: { allowNone?: boolean | null }): StartMethod | null;
  setStartMethod: typeof setStartMethod;
  getAllStartMethods: typeof getAllStartMethods;
  getContext: typeof getContext;
  setForkserverPreload: typeof setForkserverPreload;
}

function bound(method: StartMethod): Context {
  const ProcessClass = processClassFor(method);
  const PoolClass = class extends Pool {
    constructor(options: PoolOptions | number = {}) {
      const given = typeof options === 'number' ? { processes: options } : options ?? {};
      super({ ...given, startMethod: method });
    }
  };
  Object.defineProperty(PoolClass, 'name', { value: 'Pool' });
  return Object.freeze({
    ...api,
    Process: ProcessClass,
    Pool: PoolClass,
    Manager: (options: ManagerOptions = {}) => Manager({ startMethod: method, ...options }),
    getStartMethod: () => method,
    setStartMethod,
    getAllStartMethods,
    getContext,
    setForkserverPreload,
  });
}

const contexts = new Map<StartMethod, Context>();
const defaultContext: Context = Object.freeze({
  ...api,
  getStartMethod,
  setStartMethod,
  getAllStartMethods,
  getContext,
  setForkserverPreload,
});

/**
 * Python's get_context(): with a method, a context whose Process and Pool use
 * it; without one, the default context, which follows setStartMethod().
 * getContext('fork') in a process that cannot fork safely throws
 * ForkSafetyError saying how to run.
 */
export function getContext(method?: StartMethod | null): Context {
  if (method === undefined || method === null) return defaultContext;
  const m = checkStartMethod(method);
  if (m === 'fork') {
    const problem = forkSafetyProblem();
    if (problem !== null) throw new ForkSafetyError(problem);
  }
  let ctx = contexts.get(m);
  if (ctx === undefined) {
    ctx = bound(m);
    contexts.set(m, ctx);
  }
  return ctx;
}

export { currentStartMethod };
