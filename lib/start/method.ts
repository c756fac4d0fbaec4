// Which start method a Process uses, as Python's multiprocessing.context
// keeps it: one global choice (setStartMethod), a default until then, and
// contexts that fix a method for their own classes (lib/context.ts).
import { isMainThread } from 'node:worker_threads';
import { inspect } from 'node:util';
import { isSingleThreaded } from '../fork-safety.js';
import { ProcessError } from '../errors.js';

export type StartMethod = 'fork' | 'spawn' | 'forkserver';

const METHODS: readonly StartMethod[] = ['fork', 'spawn', 'forkserver'];

let chosen: StartMethod | null = null;
let bootstrapping = false;

/** `method` itself if it names a start method; otherwise a ValueError-like RangeError naming the valid ones. */
export function checkStartMethod(method: unknown): StartMethod {
  if (typeof method === 'string' && (METHODS as readonly string[]).includes(method)) return method as StartMethod;
  throw new RangeError(`cannot find context for ${inspect(method)}: the start methods are ${METHODS.map((m) => `'${m}'`).join(', ')}`);
}

/**
 * fork where this process can fork safely (the main thread of a V8 without
 * background threads); otherwise forkserver, so that a plain `node app.js`
 * works. Transient reasons not to fork (a live Worker, an inspector) do not
 * change the default: start() then explains them.
 */
export function defaultStartMethod(): StartMethod {
  return isMainThread && isSingleThreaded() ? 'fork' : 'forkserver';
}

export function currentStartMethod(): StartMethod {
  return chosen ?? defaultStartMethod();
}

/** Python's set_start_method(): once, unless `force`. */
export function setStartMethod(method: StartMethod | null, options: { force?: boolean | null } = {}): void {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`setStartMethod(method, options): expected an options object, got ${inspect(options)}`);
  }
  const force = options.force ?? false;
  if (chosen !== null && !force) {
    throw new ProcessError('ERR_CONTEXT_SET', `the start method has already been set (to '${chosen}'); pass { force: true } to change it`);
  }
  if (method === null) {
    if (!force) throw new TypeError("setStartMethod(null) resets the choice and needs { force: true }");
    chosen = null;
    return;
  }
  chosen = checkStartMethod(method);
}

/** Python's get_start_method(): fixes the default as the choice, unless `allowNone`. */
export function getStartMethod(options: { allowNone?: boolean | null } = {}): StartMethod | null {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`getStartMethod(options): expected an options object, got ${inspect(options)}`);
  }
  if (chosen === null) {
    if (options.allowNone) return null;
    chosen = defaultStartMethod();
  }
  return chosen;
}

/** Every start method this platform has, the default first (Python's order). */
export function getAllStartMethods(): StartMethod[] {
  const first = defaultStartMethod();
  return [first, ...METHODS.filter((m) => m !== first)];
}

/** While a spawned or forkserver child imports its modules and rebuilds its arguments, starting a process is an error. */
export function isBootstrapping(): boolean {
  return bootstrapping;
}

export function setBootstrapping(on: boolean): void {
  bootstrapping = on;
}

/** Marks the Process classes of a context (getContext('spawn').Process): a child rebuilds them as plain Process. */
export const CONTEXT_CLASS = Symbol('nodemp.contextClass');
