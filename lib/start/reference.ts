// Functions by reference, for the start methods whose child does not hold the
// parent's heap ('spawn', 'forkserver'): as Python pickles a function by module
// and qualified name, a target, a Process subclass, a Pool task function or an
// initializer travels as a module URL and an export name, and the child imports
// it. And the guard that keeps that import of the program's entry module from
// running the program again (Python's `if __name__ == '__main__'`).
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { types } from 'node:util';
import { SerializationError } from '../errors.js';
import { Probe, rememberScript, type FunctionSite, type LoadedScript } from './inspect.js';

/**
 * A function as a child finds it: `import(module)` and take the export `name`.
 * `check`, when present (nodemp sets it on every reference it infers), is a
 * hash of the function's source that the child verifies: the child's module
 * is another evaluation of the file, so identity cannot be compared.
 */
export interface FunctionRef {
  readonly module: string;
  readonly name: string;
  readonly check?: string;
}

/**
 * A reference as a user may write it: `module` is a file: URL string, an
 * absolute path, a URL, `import.meta`, or a CommonJS `module`.
 */
export interface FunctionRefInput {
  readonly module: string | URL | { readonly url: string } | { readonly filename: string };
  readonly name: string;
  readonly check?: string;
}

/** The export name that stands for a CommonJS module's `module.exports` itself (Node's own name for it in a CommonJS module's namespace). */
export const MODULE_EXPORTS = 'module.exports';

const require = createRequire(import.meta.url);

/** True for an explicit reference object a user passes instead of a function: `{ module, name }`. */
export function isFunctionRef(v: unknown): v is FunctionRefInput {
  if (typeof v !== 'object' || v === null) return false;
  const { module, name } = v as Record<string, unknown>;
  if (typeof name !== 'string') return false;
  if (typeof module === 'string' || module instanceof URL) return true;
  if (typeof module !== 'object' || module === null) return false;
  const { url, filename } = module as Record<string, unknown>;
  return typeof url === 'string' || typeof filename === 'string';
}

// A function's reference does not change while its module stays loaded.
const references = new WeakMap<Function, FunctionRef>();
// Explicit references already normalised and checked.
const explicit = new Map<string, FunctionRef>();

/**
 * The reference for `fn`, or `fn` normalised if it is an explicit reference.
 * `what` names the role in messages ("Process target", "Pool initializer").
 * Throws SerializationError `'ERR_NOT_EXPORTED'` for a function no loaded
 * module exports, saying what to do instead.
 */
export function referenceOf(fn: Function | FunctionRefInput, what: string): FunctionRef {
  if (typeof fn !== 'function') {
    if (isFunctionRef(fn)) return explicitReference(fn, what);
    throw new TypeError(`nodemp: the ${what} must be a function or a { module, name } reference, not ${fn === null ? 'null' : typeof fn}`);
  }
  let ref = references.get(fn);
  if (ref === undefined) {
    ref = Probe.run((probe) => findReference(probe, fn, what));
    references.set(fn, ref);
  }
  return ref;
}

function findReference(probe: Probe, fn: Function, what: string): FunctionRef {
  const site = probe.site(fn);
  // Modules whose exports object or namespace has been searched.
  const searched = new Set<string>();
  const known = site.scriptId === undefined ? undefined : probe.known(site.scriptId);
  if (known !== undefined) {
    const name = exportIn(probe, fn, site, known.url, known, true, searched);
    if (name !== undefined) return made(known.url, name, fn);
  } else if (site.scriptId !== undefined) {
    for (const { url, running } of likelyModules()) {
      const name = exportIn(probe, fn, site, url, undefined, running, searched);
      if (name !== undefined) return made(url, name, fn);
    }
  }
  // Exported elsewhere: by a CommonJS module, or re-exported (`export const f =
  // makeWorker()` with makeWorker in another module, `export { f } from`).
  for (const [path, cached] of Object.entries(require.cache)) {
    const url = pathToFileURL(path).href;
    if (cached === undefined || searched.has(url)) continue;
    searched.add(url);
    const name = heldAs(exportsOf(cached), fn);
    if (name !== undefined) return made(url, name, fn);
  }
  // What no guess found needs the list of loaded scripts: the function's own
  // module (a guess may have missed it: a loader's transform), then every ES module.
  const home = site.scriptId === undefined || known !== undefined ? undefined : probe.script(site.scriptId);
  if (home !== undefined) {
    const name = exportIn(probe, fn, site, home.url, home, true, searched);
    if (name !== undefined) return made(home.url, name, fn);
  }
  if (nativeRequire()) {
    for (const script of probe.loadedScripts()) {
      const path = filePath(script.url);
      if (!script.isModule || path === undefined || searched.has(script.url)) continue;
      searched.add(script.url);
      const exports = namespaceOf(path);
      const name = exports === undefined ? undefined : heldAs(exports, fn);
      if (name !== undefined) return made(script.url, name, fn);
    }
  }
  throw notExported(fn, site, probe, what);
}

function made(url: string, name: string, fn: Function): FunctionRef {
  return { module: url, name, check: checkOf(fn) };
}

/** A short hash of a function's source: what the child's export must match. */
function checkOf(fn: Function): string {
  return createHash('sha256').update(Function.prototype.toString.call(fn)).digest('base64url').slice(0, 16);
}

function filePath(url: string): string | undefined {
  if (url.startsWith('file:')) {
    // A URL with a query or fragment is its own module instance: no path reaches it.
    const parsed = new URL(url);
    return parsed.search === '' && parsed.hash === '' ? fileURLToPath(parsed) : undefined;
  }
  // CommonJS scripts may be named by path.
  return isAbsolute(url) ? url : undefined;
}

/** The file a module URL or absolute path names, links resolved; undefined for what no file path reaches. */
export function moduleFile(module: string): string | undefined {
  const path = filePath(module);
  return path === undefined ? undefined : realpath(path);
}

interface Exports {
  readonly holder: unknown;
  /** A CommonJS module's exports object (not an ES module namespace). */
  readonly commonjs: boolean;
}

function exportsOf(cached: NodeJS.Module): Exports {
  // require() of an ES module caches it too, with its namespace as exports.
  return { holder: cached.exports, commonjs: !types.isModuleNamespaceObject(cached.exports) };
}

const NATIVE_EXTENSIONS = new Set(['.js', '.json', '.node']);

/**
 * Whether require() is Node's own: a CommonJS loader hook (tsx, ts-node,
 * @babel/register) registers extensions of its own, and under one, require()
 * of an ES module's file compiles a second copy of the module and runs it
 * instead of handing over the loaded one.
 */
function nativeRequire(): boolean {
  return Object.keys(require.extensions).every((extension) => NATIVE_EXTENSIONS.has(extension));
}

/**
 * The namespace of an ES module known to be loaded, where Node hands it over
 * synchronously: from 20.19 require() gives an evaluated module's namespace
 * without running it again. A module still evaluating (ERR_REQUIRE_CYCLE_MODULE)
 * or with top-level await (ERR_REQUIRE_ASYNC_MODULE) has none to give.
 */
function namespaceOf(path: string): Exports | undefined {
  try {
    return { holder: require(path), commonjs: false };
  } catch {
    return undefined;
  }
}

/**
 * The export of the module at `url` that holds `fn`. `home` is fn's own
 * script where that is known; otherwise `url` is a guess, and counts as fn's
 * module only if its file holds fn's source at fn's position. `loaded`: the
 * module is known to be loaded (fn's own, or running now); the namespace of no
 * other is asked for, as that could load it. Adds `url` to `searched` once
 * its exports have been searched.
 */
function exportIn(
  probe: Probe,
  fn: Function,
  site: FunctionSite,
  url: string,
  home: LoadedScript | undefined,
  loaded: boolean,
  searched: Set<string>,
): string | undefined {
  const path = filePath(url);
  if (path === undefined || site.scriptId === undefined) return undefined;
  const cached = require.cache[path];
  if (cached !== undefined) {
    searched.add(url);
    return heldAs(exportsOf(cached), fn);
  }
  if (home === undefined ? NOT_ESM.test(path) : !home.isModule) return undefined;
  // fn's own ES module: its export declarations, matched against its bindings
  // that hold fn. This needs neither its namespace (which the entry module
  // does not have while its top-level code runs) nor require().
  let lexed = lexedScripts.get(site.scriptId);
  let own = home !== undefined || lexed !== undefined;
  if (!own) {
    const file = fileSource(url);
    own = file !== undefined && definedAt(file.source, fn, site);
    if (own && file !== undefined) {
      rememberScript({ scriptId: site.scriptId, url, isModule: true });
      lexed = file.lexed;
      lexedScripts.set(site.scriptId, lexed);
    }
  }
  if (own) {
    if (lexed === undefined) {
      lexed = lex(probe.source(site.scriptId));
      lexedScripts.set(site.scriptId, lexed);
    }
    const name = exportFromSource(probe, fn, lexed);
    if (name !== undefined) return name;
  }
  // Its namespace: an export the declarations do not name (`export default
  // makeWorker()`), or fn re-exported by the module that called.
  if (!(own || loaded) || !nativeRequire()) return undefined;
  searched.add(url);
  const exports = namespaceOf(path);
  return exports === undefined ? undefined : heldAs(exports, fn);
}

// Files that are never ES modules: required only from require.cache.
const NOT_ESM = /\.(?:c[jt]s|json|node|wasm)$/;

/** The export name under which `exports` holds `fn` itself, preferring the function's own name, then `default`. */
function heldAs({ holder, commonjs }: Exports, fn: Function): string | undefined {
  if (commonjs && holder === fn) return MODULE_EXPORTS;
  if (holder === null || (typeof holder !== 'object' && typeof holder !== 'function') || types.isProxy(holder)) return undefined;
  const names = new Set<string>([fn.name, 'default']);
  for (const key of Reflect.ownKeys(holder)) if (typeof key === 'string') names.add(key);
  for (const name of names) {
    let descriptor: PropertyDescriptor | undefined;
    try {
      // A namespace's binding still in its temporal dead zone throws.
      descriptor = Object.getOwnPropertyDescriptor(holder, name);
    } catch {
      continue;
    }
    // Data properties only: a getter is someone else's code to run.
    if (descriptor !== undefined && 'value' in descriptor && descriptor.value === fn) return name;
  }
  return undefined;
}

/**
 * Modules likely to hold the function, found without listing scripts: the
 * modules of the code that called (`running`: loaded for certain), the entry
 * module, and the files those import by relative path (`import { work } from
 * './tasks.mjs'`; a loader hook may resolve them elsewhere, so they are not
 * taken as loaded).
 */
function* likelyModules(): Generator<{ url: string; running: boolean }> {
  const callers = callerModules();
  const roots = new Set(callers);
  if (entry !== null) roots.add(pathToFileURL(entry).href);
  for (const url of roots) yield { url, running: callers.includes(url) };
  const seen = new Set(roots);
  for (const root of roots) {
    for (const url of fileSource(root)?.lexed?.imports ?? []) {
      if (seen.has(url)) continue;
      seen.add(url);
      yield { url, running: false };
    }
  }
}

const ownDirectory = new URL('..', import.meta.url).href;

/**
 * The module files on the stack of the current referenceOf() call, nearest
 * first, nodemp's own left out: the scripts V8 runs, as its call sites name
 * them (not as a source map would).
 */
function callerModules(): string[] {
  const prepare = Error.prepareStackTrace;
  const limit = Error.stackTraceLimit;
  const trace: { stack?: unknown } = {};
  Error.prepareStackTrace = (_error, sites) => sites;
  Error.stackTraceLimit = 20;
  try {
    Error.captureStackTrace(trace, referenceOf);
    // Read while our prepareStackTrace is in place: the stack is formatted on first access.
    void trace.stack;
  } finally {
    Error.prepareStackTrace = prepare;
    Error.stackTraceLimit = limit;
  }
  const urls: string[] = [];
  for (const site of Array.isArray(trace.stack) ? (trace.stack as NodeJS.CallSite[]) : []) {
    const file = site.getFileName();
    const url = file === undefined || file === null ? undefined : file.startsWith('file:') ? file : isAbsolute(file) ? pathToFileURL(file).href : undefined;
    if (url !== undefined && !url.startsWith(ownDirectory) && !urls.includes(url)) urls.push(url);
  }
  return urls;
}

interface Lexed {
  readonly exports: readonly SourceExport[];
  /** `exports` names every export: the source is an ES module with no `export * from`. */
  readonly complete: boolean;
  /** Static imports by relative path or file: URL, resolved against the module's URL (only where lexed from a file). */
  readonly imports: readonly string[];
}

interface SourceExport {
  /** The export's name. */
  readonly name: string;
  /** The module binding it exports, when the export names one. */
  readonly local: string | undefined;
}

// Loaded at the first lookup that needs it: a child never looks anything up,
// and would pay for the lexer's loading at every start.
let lexer: typeof import('es-module-lexer') | null = null;

/** The exports (and, given the module's URL, relative imports) its source declares; null where it does not lex. */
function lex(source: string, url?: string): Lexed | null {
  if (lexer === null) {
    lexer = require('es-module-lexer') as typeof import('es-module-lexer');
    lexer.initSync();
  }
  let parsed: ReturnType<typeof lexer.parse>;
  try {
    parsed = lexer.parse(source);
  } catch {
    return null;
  }
  const [imports, exports, , hasModuleSyntax] = parsed;
  return {
    exports: exports.map((e) => ({ name: e.n, local: e.ln ?? (e.n === 'default' ? defaultIdentifier(source, e.e) : undefined) })),
    complete: hasModuleSyntax && !imports.some((i) => /^export\s*\*/.test(source.slice(i.ss, i.se))),
    imports:
      url === undefined
        ? []
        : imports.flatMap((i) => (i.d === -1 && i.n !== undefined && /^(?:\.{1,2}\/|\/|file:)/.test(i.n) ? [new URL(i.n, url).href] : [])),
  };
}

// scriptId → what its source declares (null: it did not lex).
const lexedScripts = new Map<string, Lexed | null>();
// A file read as a guess, by URL: the entry module and its neighbours are read once.
const files = new Map<string, { source: string; lexed: Lexed | null } | null>();

function fileSource(url: string): { source: string; lexed: Lexed | null } | undefined {
  let file = files.get(url);
  if (file === undefined) {
    const path = filePath(url);
    let source: string | undefined;
    try {
      source = path === undefined || NOT_ESM.test(path) ? undefined : readFileSync(path, 'utf8').replace(/^\uFEFF/, '');
    } catch {
      source = undefined;
    }
    file = source === undefined ? null : { source, lexed: lex(source, url) };
    files.set(url, file);
  }
  return file ?? undefined;
}

/**
 * Whether `source` is the text fn was compiled from: fn's own source text
 * (what toString() gives) lies there across fn's position. A file that a
 * loader transforms fails this, and the lookup goes on by listing scripts.
 */
function definedAt(source: string, fn: Function, site: FunctionSite): boolean {
  let offset = 0;
  for (let line = 0; line < site.line; line++) {
    // V8's line terminators.
    const end = /\r\n|[\n\r\u2028\u2029]/g;
    end.lastIndex = offset;
    const found = end.exec(source);
    if (found === null) return false;
    offset = found.index + found[0].length;
  }
  const position = offset + site.column;
  const text = Function.prototype.toString.call(fn);
  const start = source.lastIndexOf(text, position);
  return start !== -1 && start + text.length > position;
}

/** `export default work;`: the binding named after `default`. */
function defaultIdentifier(source: string, end: number): string | undefined {
  return /^\s+([\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*)\s*(?:;|\n|$)/u.exec(source.slice(end, end + 200))?.[1];
}

/**
 * The export of fn's own ES module that holds fn: the module's export
 * declarations, matched against its bindings that hold fn by identity (so
 * `export { alias as work }` and `export const f = outer()` count, and a
 * same-named function elsewhere does not).
 */
function exportFromSource(probe: Probe, fn: Function, lexed: Lexed | null): string | undefined {
  const topLevel = probe.scopes(fn)[0] === 'Module';
  if (lexed === null) {
    // Source this lexer cannot read: trust the function's own name, for the child to verify.
    return topLevel && isIdentifier(fn.name) ? fn.name : undefined;
  }
  const bindings = new Set(probe.moduleBindingsHolding(fn));
  const matches = lexed.exports.filter(
    (e) => e.local !== undefined && (bindings.has(e.local) || (topLevel && e.name === 'default' && e.local === fn.name)),
  );
  // `export default function () {}` and `export default () => ...` bind no visible name; V8 names the function 'default'.
  if (topLevel && fn.name === 'default' && lexed.exports.some((e) => e.name === 'default' && e.local === undefined)) {
    matches.push({ name: 'default', local: undefined });
  }
  return (matches.find((e) => e.name === fn.name) ?? matches[0])?.name;
}

function isIdentifier(name: string): boolean {
  return /^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u.test(name);
}

/** A method's source starts with its name (or get/set/static/async/*), never with function, class, a parameter list or `x =>`. */
function isMethod(fn: Function): boolean {
  const source = Function.prototype.toString.call(fn);
  return !/^(?:async\s*)?(?:function\b|class\b|\(|[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*\s*=>)/u.test(source);
}

function notExported(fn: Function, site: FunctionSite, probe: Probe, what: string): SerializationError {
  const script = site.scriptId === undefined ? undefined : probe.script(site.scriptId);
  const url = script?.url;
  let why: string;
  if (site.bound) {
    why = 'it is a bound function (made by .bind()), and no loaded module exports it; export the function itself and pass the bound values in args';
  } else if (site.scriptId === undefined) {
    why = 'it is a built-in function (native code), not defined in a module; call it from an exported function';
  } else if (url?.startsWith('file:') === true && filePath(url) === undefined) {
    why = `its module was loaded under a URL with a query or fragment, ${url}, which nodemp does not infer; pass { module, name } with that URL`;
  } else if (url === undefined || filePath(url) === undefined) {
    why = 'it was not defined in a module file (eval, new Function, vm or the REPL)';
  } else if (script?.isModule === false && require.cache[filePath(url) as string] === undefined) {
    // vitest and jest run test files and what they import this way.
    why =
      "its file was not loaded by Node's module loader but compiled by a module runner (vitest, jest) or vm, " +
      `a copy no module exports; name the file's export yourself with { module: '${url}', name }`;
  } else if (isMethod(fn)) {
    why = 'it is a method of a class or an object, and no loaded module exports it by itself';
  } else if (fn.name === '') {
    why = 'it has no name, and no loaded module exports it';
  } else {
    const scope = script?.isModule === true ? probe.scopes(fn)[0] : undefined;
    const closure = scope === undefined ? null : /^Closure(?: \((.*)\))?$/.exec(scope);
    if (closure !== null) {
      why = `it is a closure, created inside ${closure[1] === undefined || closure[1] === '' ? 'another function' : `${closure[1]}()`}, and no loaded module exports it`;
    } else if (scope !== undefined && scope !== 'Module' && scope !== 'Global') {
      why = 'it is not declared at the top level of its module, and no loaded module exports it';
    } else {
      why = `its module does not export it, nor does any other loaded module`;
    }
  }
  const label = fn.name === '' ? 'an anonymous function' : fn.name;
  const where = url === undefined || url === '' ? '' : ` (${url}:${site.line + 1}:${site.column + 1})`;
  const name = isIdentifier(fn.name) ? fn.name : 'work';
  const declaration = Function.prototype.toString.call(fn).startsWith('class') ? 'class' : 'function';
  return new SerializationError(
    `nodemp: the ${what} ${label}${where} cannot be passed by reference: ${why}. ` +
      "A 'spawn' or 'forkserver' child imports a function by module and export name: export it from its module " +
      `(\`export ${declaration} ${name}\`, or \`exports.${name} = ${name}\` in CommonJS), or pass { module: import.meta.url, name: '${name}' } ` +
      "naming an export that holds it, or use the 'fork' start method, where any function works, closures included.",
    { code: 'ERR_NOT_EXPORTED' },
  );
}

function moduleUrl(module: FunctionRefInput['module'], what: string): string {
  const spec = typeof module === 'string' ? module : module instanceof URL ? module.href : 'url' in module ? module.url : module.filename;
  if (spec.startsWith('file:')) return new URL(spec).href;
  if (isAbsolute(spec)) return pathToFileURL(spec).href;
  throw new TypeError(
    `nodemp: the ${what} reference names the module ${JSON.stringify(spec)}: give a file: URL (import.meta.url) or an absolute path, not a relative path or another scheme`,
  );
}

function explicitReference(input: FunctionRefInput, what: string): FunctionRef {
  const module = moduleUrl(input.module, what);
  if (input.name === '') throw new TypeError(`nodemp: the ${what} reference to ${module} names no export`);
  const key = `${module}\n${input.name}\n${input.check ?? ''}`;
  let ref = explicit.get(key);
  if (ref === undefined) {
    ref = input.check === undefined ? { module, name: input.name } : { module, name: input.name, check: input.check };
    verifyExplicit(ref, what);
    explicit.set(key, ref);
  }
  return ref;
}

/**
 * Checks an explicit reference where that loads nothing: against a loaded
 * CommonJS module's exports, or against the export declarations in an ES
 * module's file, which is what the child will import. The rest is left to
 * loadReference in the child.
 */
function verifyExplicit(ref: FunctionRef, what: string): void {
  const path = filePath(ref.module);
  if (path === undefined) return;
  const cached = require.cache[path];
  if (cached !== undefined) {
    pick(exportsOf(cached), ref, what);
    return;
  }
  const lexed = fileSource(ref.module)?.lexed;
  if (lexed?.complete === true && !lexed.exports.some((e) => e.name === ref.name)) {
    throw missing(what, `${ref.module} has no export '${ref.name}'`);
  }
}

/** The function `ref` names in `exports`; throws ERR_NOT_EXPORTED when there is none. */
function pick({ holder, commonjs }: Exports, ref: FunctionRef, what: string): Function {
  const subject = ref.name === MODULE_EXPORTS && commonjs ? `module.exports of ${ref.module}` : `the export '${ref.name}' of ${ref.module}`;
  let value: unknown;
  if (ref.name === MODULE_EXPORTS && commonjs) {
    value = holder;
  } else {
    try {
      value = (holder as Record<string, unknown>)[ref.name];
    } catch (error) {
      // A namespace binding read before its module initialised it.
      throw missing(what, `${subject} could not be read (${(error as Error).message})`);
    }
  }
  if (typeof value === 'function') return value;
  const has = holder !== null && (typeof holder === 'object' || typeof holder === 'function') && Object.hasOwn(holder, ref.name);
  throw missing(what, has || subject.startsWith('module.exports') ? `${subject} is ${value === null ? 'null' : typeof value}, not a function` : `${ref.module} has no export '${ref.name}'`);
}

function missing(what: string, detail: string): SerializationError {
  return new SerializationError(`nodemp: the ${what} cannot be found: ${detail} (a 'spawn' or 'forkserver' child imports a function by module and export name)`, {
    code: 'ERR_NOT_EXPORTED',
  });
}

/**
 * In the child: imports the module and returns the export the reference names,
 * after checking its source hash where the reference carries one. A missing
 * export, one that is not a function, or a source that differs from the
 * parent's throws SerializationError `'ERR_NOT_EXPORTED'`; an error thrown while
 * the module itself loads is passed on as it is.
 */
export async function loadReference(ref: FunctionRef): Promise<Function> {
  const url = moduleUrl(ref.module, 'function');
  const path = filePath(url);
  let cached = path === undefined ? undefined : require.cache[path];
  let holder: unknown;
  if (cached === undefined) {
    holder = await import(url);
    // import() of a CommonJS module loads it through require's cache: its exports object is there, named exports or not.
    cached = path === undefined ? undefined : require.cache[path];
  }
  if (cached !== undefined) holder = cached.exports;
  const normalised: FunctionRef = { ...ref, module: url };
  const fn = pick({ holder, commonjs: cached !== undefined && !types.isModuleNamespaceObject(holder) }, normalised, 'function');
  if (ref.check !== undefined && checkOf(fn) !== ref.check) {
    throw missing(
      'function',
      `the export '${ref.name}' of ${url} is not the function the parent passed: its source differs (the module changed on disk, or the parent's function was another one of that name)`,
    );
  }
  return fn;
}

let child = false;
const realpaths = new Map<string, string>();

function realpath(path: string): string {
  let real = realpaths.get(path);
  if (real === undefined) {
    try {
      real = realpathSync(path);
    } catch {
      real = path;
    }
    realpaths.set(path, real);
  }
  return real;
}

/**
 * The program's entry file, resolved as Node resolves argv[1] (in a worker
 * thread, the worker's own script); null where there is none (eval, the REPL).
 * Taken when nodemp loads, before a program rewrites its argv.
 */
const entry = ((): string | null => {
  const main = process.argv[1];
  if (main === undefined || main === '') return null;
  const absolute = resolvePath(main);
  try {
    // As Node finds the main module: an extensionless name may be `app.js`, a folder its package's main.
    return realpath(require.resolve(absolute));
  } catch {
    return realpath(absolute);
  }
})();

/**
 * Python's `if __name__ == '__main__'`: true when `meta` (`import.meta`, a
 * CommonJS `module`, or a file URL or path) is the program's entry module,
 * and this process is not a nodemp child that imported it (see markChild).
 * In a worker thread, the entry is the worker's own script.
 */
export function isMainModule(meta: ImportMeta | { filename?: string; id?: string } | string): boolean {
  if (child) return false;
  if (typeof meta === 'object' && meta !== null && meta === require.main) return true;
  let spec: string | undefined;
  if (typeof meta === 'string') spec = meta;
  else if (typeof meta === 'object' && meta !== null) {
    const { url, filename, id } = meta as { url?: unknown; filename?: unknown; id?: unknown };
    spec = typeof url === 'string' ? url : typeof filename === 'string' ? filename : typeof id === 'string' ? id : undefined;
  }
  if (spec === undefined) return false;
  const path = spec.startsWith('file:') ? filePath(spec) : isAbsolute(spec) ? spec : undefined;
  return path !== undefined && entry !== null && realpath(path) === entry;
}

/**
 * Called by the bootstrap of a 'spawn' or 'forkserver' child before it imports
 * anything of the user's: from then on isMainModule() is false everywhere in
 * this process, so importing the parent's entry module for a target does not
 * run the program again.
 */
export function markChild(): void {
  child = true;
}
