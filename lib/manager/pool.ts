// A SyncManager's Pool: a nodemp Pool in the server process, its tasks' functions
// sent by reference. A reference names a module, and importing a module runs
// it, so the server imports only the modules its owner allowed (see
// allowModules): a client with the authkey chooses which allowed function
// runs, never which code is loaded.
import { pathToFileURL } from 'node:url';
import { Pool, type AsyncResult } from '../pool.js';
import { checkInteger, invalidType } from '../args.js';
import { SerializationError } from '../errors.js';
import { loadReference, moduleFile, type FunctionRef } from '../start/reference.js';
import { FREED } from './referents.js';

/** A module's file URL as this process sees it (links resolved), or null for what is not a file. */
function moduleKey(module: string): string | null {
  let path: string | undefined;
  try {
    path = moduleFile(module);
  } catch {
    // Not a URL at all: no module this server loads.
    return null;
  }
  return path === undefined ? null : pathToFileURL(path).href;
}

// The modules a Pool's task functions may come from, in this server process.
const allowed = new Set<string>();

/** Internal: the server may import `modules` for Pool tasks (options.poolModules, and its owner's main module when it imports that afresh). */
export function allowModules(modules: Iterable<string>): void {
  for (const m of modules) {
    const key = moduleKey(m);
    if (key !== null) allowed.add(key);
  }
}

function checkRef(what: string, ref: unknown): FunctionRef {
  if (typeof ref !== 'object' || ref === null || typeof (ref as FunctionRef).module !== 'string' || typeof (ref as FunctionRef).name !== 'string') {
    throw invalidType(what, 'a function reference { module, name } (a PoolProxy sends its functions so)', ref);
  }
  const { module, name, check } = ref as FunctionRef;
  if (check !== undefined && typeof check !== 'string') throw invalidType(`${what}.check`, 'a string', check);
  const key = moduleKey(module);
  if (key === null || !allowed.has(key)) {
    throw new SerializationError(
      `${what}: the manager's server does not load ${module} for a Pool task: it loads only the modules in its options.poolModules ` +
        "and, when it was started by spawn or forkserver, the main module of the program that started it",
      { code: 'ERR_NOT_EXPORTED' },
    );
  }
  return { module: key, name, check };
}

function itemsOf(what: string, items: unknown): unknown[] {
  if (!Array.isArray(items)) throw invalidType(what, 'an array', items);
  return items;
}

function chunkOf(options: unknown): number | undefined {
  if (options === undefined || options === null) return undefined;
  if (typeof options !== 'object') throw invalidType('options', 'an object like { chunksize }', options);
  const { chunksize } = options as { chunksize?: unknown };
  return chunksize === undefined || chunksize === null ? undefined : checkInteger('options.chunksize', chunksize, 1);
}

/** The server-side Pool (Python's manager Pool). */
export class ManagedPool {
  static readonly exposed = ['apply', 'applyAsync', 'map', 'mapAsync', 'starmap', 'starmapAsync', 'imap', 'imapUnordered', 'close', 'terminate', 'join'];
  static readonly methodToTypeid = { applyAsync: 'AsyncResult', mapAsync: 'AsyncResult', starmapAsync: 'AsyncResult', imap: 'Iterator', imapUnordered: 'Iterator' };
  readonly #pool: Pool;

  constructor(options: unknown = {}) {
    if (typeof options !== 'object' || options === null) throw invalidType('Pool(options)', 'an object like { processes, maxtasksperchild }', options);
    const { processes = null, maxtasksperchild = null, ...rest } = options as { processes?: number | null; maxtasksperchild?: number | null };
    const other = Object.keys(rest);
    if (other.length > 0) throw invalidType(`Pool: options.${other[0]}`, 'nothing: a manager Pool takes processes and maxtasksperchild only', (rest as Record<string, unknown>)[other[0] as string]);
    this.#pool = new Pool({ processes, maxtasksperchild });
  }

  async apply(ref: unknown, args: unknown = []): Promise<unknown> {
    return this.#pool.apply(await this.#fn('apply', ref), itemsOf('apply(args)', args));
  }

  async applyAsync(ref: unknown, args: unknown = []): Promise<AsyncResult<unknown>> {
    return this.#pool.applyAsync(await this.#fn('applyAsync', ref), itemsOf('applyAsync(args)', args));
  }

  async map(ref: unknown, items: unknown, options?: unknown): Promise<unknown[]> {
    return this.#pool.map(await this.#fn('map', ref), itemsOf('map(items)', items), { chunksize: chunkOf(options) });
  }

  async mapAsync(ref: unknown, items: unknown, options?: unknown): Promise<AsyncResult<unknown[]>> {
    return this.#pool.mapAsync(await this.#fn('mapAsync', ref), itemsOf('mapAsync(items)', items), { chunksize: chunkOf(options) });
  }

  async starmap(ref: unknown, items: unknown, options?: unknown): Promise<unknown[]> {
    return this.#pool.starmap(await this.#fn('starmap', ref), itemsOf('starmap(items)', items) as unknown[][], { chunksize: chunkOf(options) });
  }

  async starmapAsync(ref: unknown, items: unknown, options?: unknown): Promise<AsyncResult<unknown[]>> {
    const list = itemsOf('starmapAsync(items)', items) as unknown[][];
    return this.#pool.starmapAsync(await this.#fn('starmapAsync', ref), list, { chunksize: chunkOf(options) });
  }

  async imap(ref: unknown, items: unknown, options?: unknown): Promise<ManagedIterator> {
    return new ManagedIterator(this.#pool.imap(await this.#fn('imap', ref), itemsOf('imap(items)', items), { chunksize: chunkOf(options) }));
  }

  async imapUnordered(ref: unknown, items: unknown, options?: unknown): Promise<ManagedIterator> {
    const it = this.#pool.imapUnordered(await this.#fn('imapUnordered', ref), itemsOf('imapUnordered(items)', items), { chunksize: chunkOf(options) });
    return new ManagedIterator(it);
  }

  close(): void {
    this.#pool.close();
  }

  /** Dropped by every client (or the server shut down): its workers go, as a collected Python Pool's do. */
  [FREED](): Promise<void> {
    return this.#pool.terminate();
  }

  terminate(): Promise<void> {
    return this.#pool.terminate();
  }

  join(): Promise<void> {
    return this.#pool.join();
  }

  #fn(what: string, ref: unknown): Promise<(...args: any[]) => unknown> {
    return loadReference(checkRef(`${what}(fn)`, ref)) as Promise<(...args: any[]) => unknown>;
  }
}

/** An imap()'s results, taken one by one by an IteratorProxy. */
export class ManagedIterator {
  static readonly exposed = ['next'];
  readonly #it: AsyncIterator<unknown>;
  constructor(it: AsyncIterable<unknown>) {
    this.#it = it[Symbol.asyncIterator]();
  }
  /** [done, value]. */
  async next(): Promise<[boolean, unknown]> {
    const r = await this.#it.next();
    return [r.done === true, r.value];
  }
}

/** What the server keeps of an applyAsync() and the like. */
export const asyncResultExposed = ['get', 'wait', 'ready', 'successful'];
