// Where a function object was defined, asked of V8 through an in-process
// inspector session: nothing public in Node 20 tells which ES module a function
// comes from, and the inspector answers synchronously on the calling thread (the
// main thread or a worker's own isolate), with no port and no thread of its own.
import inspector from 'node:inspector';

/** What V8 knows about a function object without listing scripts. */
export interface FunctionSite {
  /** The function's script; undefined for a built-in, a bound function, a proxy. */
  readonly scriptId: string | undefined;
  /** 0-based position of the function in its script (V8's: where its parameters start). */
  readonly line: number;
  readonly column: number;
  readonly bound: boolean;
}

/** A script V8 has compiled in this thread. */
export interface LoadedScript {
  readonly scriptId: string;
  /** file: for module files; '' or a name for eval and vm code. */
  readonly url: string;
  /** An ES module (not CommonJS, eval or vm code). */
  readonly isModule: boolean;
}

interface RemoteObject {
  type: string;
  description?: string;
  objectId?: string;
  value?: unknown;
}
interface RemoteProperty {
  name: string;
  value?: RemoteObject;
}
interface Properties {
  result: RemoteProperty[];
  internalProperties?: RemoteProperty[];
}
interface Location {
  scriptId: string;
  lineNumber: number;
  columnNumber: number;
}

// Script ids are never reused in an isolate, so what a listing reported stays
// true. A listing (Debugger.enable) is the costly step: V8 reports every script
// and hashes the source of each one it has not hashed before (about 10 ms per
// MB of source), so lookups avoid it where they can.
const scripts = new Map<string, LoadedScript>();

/** Records a script whose URL was established without a listing. */
export function rememberScript(script: LoadedScript): void {
  scripts.set(script.scriptId, script);
}

// A global property the inspector can read the probed function from; a
// registered symbol, so it shows in no key listing.
const PROBE = Symbol.for('nodemp.reference.probe');
const PROBE_EXPRESSION = 'globalThis[Symbol.for("nodemp.reference.probe")]';

/**
 * One lookup's inspector session. Disconnected when the lookup ends, which also
 * disables whatever it enabled: a forked child never inherits a connected
 * session, and the debugger is on only while the session itself runs commands
 * (never while user code runs, where a `debugger;` statement would pause this
 * thread with no one to resume it).
 */
export class Probe {
  private readonly session = new inspector.Session();
  private listed = false;
  private readonly sources = new Map<string, string>();
  private readonly functions = new WeakMap<Function, { objectId: string; internal: RemoteProperty[] }>();

  private constructor() {
    this.session.connect();
    this.session.on('Debugger.scriptParsed', (message: { params: LoadedScript }) => {
      const { scriptId, url, isModule } = message.params;
      scripts.set(scriptId, { scriptId, url, isModule: Boolean(isModule) });
    });
  }

  static run<T>(body: (probe: Probe) => T): T {
    const probe = new Probe();
    try {
      return body(probe);
    } finally {
      probe.session.disconnect();
    }
  }

  private post<T>(method: string, params: object = {}): T {
    let error: Error | null = null;
    let answer: object | undefined;
    // An in-process session answers before post() returns.
    this.session.post(method, params, (e, result) => {
      error = e;
      answer = result;
    });
    if (error !== null) throw error;
    if (answer === undefined) throw new Error(`nodemp: the inspector did not answer ${method} synchronously`);
    return answer as T;
  }

  /** Runs `body` with the debugger enabled; enabling reports (and so records) every script V8 holds. */
  private debugging<T>(body: () => T): T {
    this.post('Debugger.enable');
    try {
      return body();
    } finally {
      this.post('Debugger.disable');
      this.listed = true;
    }
  }

  private scriptSource(scriptId: string): string {
    return this.post<{ scriptSource: string }>('Debugger.getScriptSource', { scriptId }).scriptSource;
  }

  private described(fn: Function): { objectId: string; internal: RemoteProperty[] } {
    let found = this.functions.get(fn);
    if (found === undefined) {
      const global = globalThis as Record<symbol, unknown>;
      global[PROBE] = fn;
      let objectId: string | undefined;
      try {
        objectId = this.post<{ result: RemoteObject }>('Runtime.evaluate', { expression: PROBE_EXPRESSION, silent: true }).result.objectId;
      } finally {
        delete global[PROBE];
      }
      if (objectId === undefined) throw new Error('nodemp: the inspector gave no handle for a function');
      const internal = this.post<Properties>('Runtime.getProperties', { objectId, ownProperties: true }).internalProperties ?? [];
      found = { objectId, internal };
      this.functions.set(fn, found);
    }
    return found;
  }

  private scopeList(fn: Function): RemoteProperty[] {
    const scopes = this.described(fn).internal.find((p) => p.name === '[[Scopes]]')?.value?.objectId;
    return scopes === undefined ? [] : this.post<Properties>('Runtime.getProperties', { objectId: scopes, ownProperties: true }).result;
  }

  /** Where `fn` was defined (the script by id only: see script()). */
  site(fn: Function): FunctionSite {
    const { internal } = this.described(fn);
    const bound = internal.some((p) => p.name === '[[TargetFunction]]');
    const location = internal.find((p) => p.name === '[[FunctionLocation]]')?.value?.value as Location | undefined;
    if (location === undefined) return { scriptId: undefined, line: 0, column: 0, bound };
    return { scriptId: location.scriptId, line: location.lineNumber, column: location.columnNumber, bound };
  }

  /** A script by id, if known without listing. */
  known(scriptId: string): LoadedScript | undefined {
    return scripts.get(scriptId);
  }

  /** A script by id, listing the loaded scripts if it was not known yet. */
  script(scriptId: string): LoadedScript | undefined {
    if (!scripts.has(scriptId) && !this.listed) {
      // An ES module's source is read while the debugger is on anyway: one
      // whose namespace cannot be read yet needs it, and enabling again would
      // report every script again.
      this.debugging(() => {
        if (scripts.get(scriptId)?.isModule === true) this.sources.set(scriptId, this.scriptSource(scriptId));
      });
    }
    return scripts.get(scriptId);
  }

  /** Every script compiled in this thread so far. */
  loadedScripts(): LoadedScript[] {
    if (!this.listed) this.debugging(() => undefined);
    return [...scripts.values()];
  }

  /** The source V8 compiled for a script (after any loader's transform). */
  source(scriptId: string): string {
    return this.sources.get(scriptId) ?? this.debugging(() => this.scriptSource(scriptId));
  }

  /** The scope chain of `fn`, innermost first, as V8 names it: 'Closure (outer)', 'Block', 'Module', 'Global'. */
  scopes(fn: Function): string[] {
    return this.scopeList(fn).flatMap((s) => (s.value?.description === undefined ? [] : [s.value.description]));
  }

  /**
   * The names of the bindings of the ES module that defined `fn` (its nearest
   * Module scope) that hold `fn` itself. V8 lists a module's imports, its
   * exported bindings and the variables some function captures; an exported
   * binding is always among them.
   */
  moduleBindingsHolding(fn: Function): string[] {
    const moduleScope = this.scopeList(fn).find((s) => s.value?.description === 'Module')?.value?.objectId;
    if (moduleScope === undefined) return [];
    const bindings = this.post<Properties>('Runtime.getProperties', { objectId: moduleScope, ownProperties: true }).result.filter(
      (b) => b.value?.type === 'function' && b.value.objectId !== undefined,
    );
    if (bindings.length === 0) return [];
    // Two handles to one object differ: compare in the isolate.
    const same = this.post<{ result: { value?: unknown } }>('Runtime.callFunctionOn', {
      objectId: this.described(fn).objectId,
      functionDeclaration: 'function (...held) { return held.map((v) => v === this); }',
      arguments: bindings.map((b) => ({ objectId: b.value?.objectId })),
      returnByValue: true,
      silent: true,
    }).result.value as boolean[];
    return bindings.filter((_, i) => same[i] === true).map((b) => b.name);
  }
}
