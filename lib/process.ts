import { availableParallelism, constants } from 'node:os';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { native } from './native.js';
import { refreshSelfPid, selfPid } from './self.js';
import { addStallPoller, guardLoop } from './loop-stall.js';
import { ForkSafetyError, ProcessError } from './errors.js';
import { forkSafetyProblem } from './fork-safety.js';
import { becomeChild } from './child.js';
import { inheritedWork } from './inherit.js';
import { phases, stamp } from './start/trace.js';
import { CONTEXT_CLASS, checkStartMethod, currentStartMethod, isBootstrapping, type StartMethod } from './start/method.js';
import { isFunctionRef, loadReference, referenceOf, type FunctionRefInput } from './start/reference.js';

export interface ProcessOptions<A extends unknown[] = unknown[]> {
  /**
   * Called with `args` in the child by the default `run()`. May be async. A
   * `{ module, name }` reference names an export to import and call instead.
   */
  target?: ((...args: A) => unknown) | FunctionRefInput | null;
  args?: A;
  /** Defaults to `Process-N` (`Process-N:M` for a child's children), as in Python. */
  name?: string | null;
  /** Killed when the parent exits or dies. Defaults to the current process's flag. */
  daemon?: boolean | null;
}

/**
 * A child this process did not fork or spawn itself: the forkserver's. Its
 * exit status reaches us from the server (lib/start/forkserver.ts).
 */
export interface RemoteChild {
  readonly pid: number;
  /** The exit code once known; never blocks for long. */
  poll(): number | null;
  /** Blocks until the exit code is known or timeoutMs (undefined: forever) passes. */
  waitSync(timeoutMs: number | undefined): number | null;
  /** Whether a pending wait for the exit should hold the event loop open. */
  hold(on: boolean): void;
  signal(signal: number): void;
  /** Called once with the exit code. */
  onExit: ((code: number) => void) | null;
}

/** How a start method other than fork makes the child (lib/start/). */
export interface Launcher {
  /** Starts `proc` in a new process; returns its pid, or the remote child that stands for it. */
  launch(proc: Process, state: ChildState): number | RemoteChild;
}

/** What a child made by spawn or forkserver needs to know of its own place (Python's preparation data). */
export interface ChildState {
  name: string;
  daemon: boolean;
  identity: number[];
  parentPid: number;
  parentName: string;
  /** The parent is not this process's OS parent (forkserver): its liveness is checked by pid. */
  remoteParent: boolean;
  authkey: Uint8Array;
}

const launchers = new Map<StartMethod, Launcher>();
let markCurrent: (proc: Process) => void;
let partsOf: (proc: Process) => { target: Function | FunctionRefInput | null; args: unknown[] };

/** Internal (lib/start/): what a spawned or forkserver child is told to run. */
export function processParts(proc: Process): { target: Function | FunctionRefInput | null; args: unknown[] } {
  return partsOf(proc);
}
let adoptAs: (Class: Function, options: ProcessOptions, state: ChildState) => Process;

/**
 * Internal (lib/start/): the object a spawned or forkserver child runs as,
 * made without running a subclass's constructor, as Python unpickles it.
 */
export function adoptProcess(Class: Function, options: ProcessOptions, state: ChildState): Process {
  return adoptAs(Class, options, state);
}

/** Internal: lib/start/ registers how spawn and forkserver make a child. */
export function setLauncher(method: StartMethod, launcher: Launcher): void {
  launchers.set(method, launcher);
}

// Child exits that belong to no Process of this module: the forkserver's own
// children (lib/start/forkserver-main.ts).
let foreignExit: ((pid: number, code: number) => void) | null = null;

/** Internal: the forkserver hears of its children's exits here. */
export function setForeignExitHandler(handler: ((pid: number, code: number) => void) | null): void {
  foreignExit = handler;
}

interface JoinWaiter {
  resolve(code: number | null): void;
  timer?: NodeJS.Timeout;
}

// Per-process state. A forked child resets it to describe itself.
let current: Process;
// The parent, as enterChild() found it; its ParentProcess is made on first
// use. Made in enterChild(), it cost every child a fifth of a millisecond: a
// class's first instance is built (constructor compiled, private fields and
// shape set up) in the child, since the parent never made one.
let parentState: ChildState | null = null;
let parent: ParentProcess | null = null;
let identity: number[] = [];
let childCounter = 0;
const children = new Map<number, Process>();
let exitHookInstalled = false;

function checkTimeout(timeoutMs: unknown, method: string): number | undefined {
  if (timeoutMs === undefined || timeoutMs === null || timeoutMs === Infinity) return undefined;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) {
    throw new TypeError(`${method}(timeoutMs): expected a number of milliseconds or undefined, got ${inspect(timeoutMs)}`);
  }
  if (timeoutMs < 0) throw new RangeError(`${method}(timeoutMs): expected a non-negative number of milliseconds, got ${timeoutMs}`);
  return timeoutMs;
}

// As Python does at interpreter exit: daemons are terminated, then every
// child is joined, so a parent never exits leaving running children behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of children.values()) if (child.daemon) child.terminate();
    for (const child of [...children.values()]) child.joinSync();
  });
}

// Internal: what Pool calls when one of its workers ends, however it ends,
// without holding the event loop open as a pending join() would.
const exitListeners = new WeakMap<Process, (code: number) => void>();

export function setExitListener(child: Process, listener: (code: number) => void): void {
  exitListeners.set(child, listener);
}

/** The process that started this one, seen from a child. */
export class ParentProcess {
  readonly pid: number;
  readonly name: string;
  readonly #remote: boolean;
  constructor(pid: number, name: string, remote = false) {
    this.pid = pid;
    this.name = name;
    this.#remote = remote;
  }
  /** False once the parent has exited (this process has then been re-parented). */
  isAlive(): boolean {
    // A forkserver child's OS parent is the server, which outlives nothing: the parent is asked by pid.
    if (this.#remote) return native.pidAlive(this.pid);
    return native.getppid() === this.pid;
  }
}

/**
 * A real OS process, made by fork() of this one. Pass `target` and `args`, or
 * subclass and override `run()`.
 */
export class Process<A extends unknown[] = unknown[]> {
  #target: ((...args: A) => unknown) | FunctionRefInput | null;
  #args: A;
  #name: string;
  #daemon: boolean;
  #identity: number[];
  #authkey: Buffer;
  #pid: number | null = null;
  #startedBy = 0;
  #exitCode: number | null = null;
  #closed = false;
  #isCurrent = false;
  #waiters = new Set<JoinWaiter>();
  #remote: RemoteChild | null = null;

  static #creatingMain = false;
  static #adopting: ChildState | null = null;

  static {
    native.setOnExit((pid, code) => {
      const child = children.get(pid);
      if (child && child.#remote === null) child.#exited(code);
      else if (!child) foreignExit?.(pid, code);
    });
    // On a loop that has stopped polling (lib/loop-stall.ts), exits are asked for.
    addStallPoller({
      active() {
        for (const child of children.values()) if (child.#waiters.size > 0) return true;
        return false;
      },
      poll() {
        for (const child of [...children.values()]) {
          if (child.#exitCode !== null || child.#startedBy !== selfPid) continue;
          let code: number | undefined;
          try {
            code = child.#exitStatus();
          } catch {
            // Not ours to reap after all (reaped elsewhere meanwhile): its exit watch reports it.
            continue;
          }
          // Outside the try: what the exit listeners (a Pool's) throw is theirs to report.
          if (code !== undefined) child.#exited(code);
        }
      },
    });
  }

  constructor(options: ProcessOptions<A> = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(`Process(options): expected an options object, got ${inspect(options)}`);
    }
    const { target = null, args = [] as unknown as A, name, daemon } = options;
    if (target !== null && typeof target !== 'function' && !isFunctionRef(target)) {
      throw new TypeError(`Process: target must be a function or a { module, name } reference, got ${inspect(target)}`);
    }
    if (!Array.isArray(args)) throw new TypeError(`Process: args must be an array, got ${inspect(args)}`);
    // null, as Python's None, means the default.
    if (name !== undefined && name !== null && typeof name !== 'string') throw new TypeError(`Process: name must be a string, got ${inspect(name)}`);
    if (daemon !== undefined && daemon !== null && typeof daemon !== 'boolean') {
      throw new TypeError(`Process: daemon must be a boolean, got ${inspect(daemon)}`);
    }
    this.#target = target;
    this.#args = args;
    const adopting = Process.#adopting;
    if (adopting !== null) {
      this.#identity = adopting.identity;
      this.#authkey = Buffer.from(adopting.authkey);
      this.#name = adopting.name;
      this.#daemon = adopting.daemon;
      this.#isCurrent = true;
      return;
    }
    if (Process.#creatingMain) {
      this.#identity = [];
      this.#authkey = randomBytes(32);
      this.#name = 'MainProcess';
      this.#daemon = false;
      this.#isCurrent = true;
      return;
    }
    this.#identity = [...identity, ++childCounter];
    this.#authkey = Buffer.from(current.#authkey);
    this.#name = name ?? `Process-${this.#identity.join(':')}`;
    this.#daemon = daemon ?? current.daemon;
  }

  static {
    Process.#creatingMain = true;
    current = new Process();
    Process.#creatingMain = false;
  }

  /** The child's work. Calls `target(...args)`; subclasses override it. */
  run(): unknown {
    const target = this.#target;
    if (target === null) return undefined;
    if (typeof target === 'function') return target(...this.#args);
    return loadReference(referenceOf(target, `target of ${this.#name}`)).then((fn) => fn(...this.#args));
  }

  get name(): string {
    return this.#name;
  }
  set name(value: string) {
    if (typeof value !== 'string') throw new TypeError(`Process.name must be a string, got ${inspect(value)}`);
    this.#name = value;
  }

  get daemon(): boolean {
    return this.#daemon;
  }
  set daemon(value: boolean) {
    if (typeof value !== 'boolean') throw new TypeError(`Process.daemon must be a boolean, got ${inspect(value)}`);
    if (this.#pid !== null) throw new ProcessError('ERR_PROCESS_STARTED', `cannot change daemon of ${this.#name}: it has already started`);
    this.#daemon = value;
  }

  /**
   * The process's authentication key (a copy), as Python's: 32 random bytes
   * in the main process, the parent's for a child. A Manager and its proxies
   * use it by default, so a process tree reaches its own managers.
   */
  get authkey(): Buffer {
    return Buffer.from(this.#authkey);
  }
  set authkey(value: Uint8Array) {
    if (!(value instanceof Uint8Array)) throw new TypeError(`Process.authkey must be a Buffer or Uint8Array, got ${inspect(value)}`);
    this.#authkey = Buffer.from(value);
  }

  /** The OS process id; undefined before start(). */
  get pid(): number | undefined {
    this.#checkOpen();
    if (this.#isCurrent) return native.getpid();
    return this.#pid ?? undefined;
  }

  get ident(): number | undefined {
    return this.pid;
  }

  /** null while running (or before start); 0 ok; 1 uncaught error; n for process.exit(n); -N if killed by signal N. */
  get exitCode(): number | null {
    this.#checkOpen();
    if (this.#pid !== null && this.#exitCode === null && !this.#isCurrent) this.#poll();
    return this.#exitCode;
  }

  /**
   * The start method this process is started with: a context's Process
   * subclass carries one (getContext('spawn').Process); otherwise the one
   * setStartMethod() chose, or the default.
   */
  get startMethod(): StartMethod {
    const bound = (this.constructor as { startMethod?: unknown }).startMethod;
    return typeof bound === 'string' ? checkStartMethod(bound) : currentStartMethod();
  }

  start(): void {
    stamp(phases.kTraceStart);
    this.#checkOpen();
    if (this.#pid !== null || this.#isCurrent) {
      throw new ProcessError('ERR_PROCESS_STARTED', `cannot start a process twice (${this.#name} has pid ${this.pid})`);
    }
    // Before the daemon rule: a pool worker importing an unguarded main module must be told about the guard.
    if (isBootstrapping()) throw bootstrappingError(this.#name);
    if (current.daemon) {
      throw new ProcessError('ERR_DAEMON_CHILDREN', `daemonic processes are not allowed to have children (${current.name} is a daemon)`);
    }
    const method = this.startMethod;
    const self = native.getpid();
    const state: ChildState = {
      name: this.#name,
      daemon: this.#daemon,
      identity: this.#identity,
      parentPid: self,
      parentName: current.name,
      remoteParent: method === 'forkserver',
      authkey: this.#authkey,
    };
    if (method !== 'fork') {
      const launcher = launchers.get(method);
      if (launcher === undefined) throw new ProcessError('ERR_START_METHOD', `the '${method}' start method is not available in this process`);
      const made = launcher.launch(this as unknown as Process, state);
      if (typeof made === 'number') {
        this.#started(made, self);
      } else {
        this.#pid = made.pid;
        this.#startedBy = self;
        this.#remote = made;
        made.onExit = (code) => this.#exited(code);
        children.set(made.pid, this as unknown as Process);
        made.hold(!this.#daemon);
        installExitHook();
      }
      return;
    }
    const problem = forkSafetyProblem();
    if (problem !== null) throw new ForkSafetyError(problem);

    const inherited = inheritedWork();
    const pid = native.fork(this.#daemon);
    if (pid === 0) {
      enterChild(this as unknown as Process, state);
      this.#startedBy = self;
      becomeChild(() => this.run(), this.#name, inherited, true);
    }
    this.#started(pid, self);
  }

  /** Bookkeeping for a child of this very process (forked or spawned), which reap.cc watches. */
  #started(pid: number, self: number): void {
    this.#pid = pid;
    this.#startedBy = self;
    native.track(pid);
    children.set(pid, this as unknown as Process);
    native.watch(pid, !this.#daemon);
    installExitHook();
  }

  static {
    markCurrent = (function markCurrent(proc: Process) {
      proc.#isCurrent = true;
    });
    partsOf = (proc) => ({ target: proc.#target, args: proc.#args });
    adoptAs = (Class, options, state) => {
      Process.#adopting = state;
      try {
        return Reflect.construct(Process, [options], Class) as Process;
      } finally {
        Process.#adopting = null;
      }
    };
  }

  /** Resolves with the exit code once the process ends, or with null when `timeoutMs` passes first. */
  async join(timeoutMs?: number): Promise<number | null> {
    this.#checkJoinable('join');
    const timeout = checkTimeout(timeoutMs, 'join');
    if (this.#exitCode === null) this.#poll();
    if (this.#exitCode !== null) return this.#exitCode;
    // A daemon's exit watch does not hold the event loop open by itself; a
    // pending join() must, or a program whose only work is awaiting it would end.
    if (this.#daemon && this.#waiters.size === 0) this.#hold(true);
    return new Promise((resolve) => {
      const waiter: JoinWaiter = { resolve };
      if (timeout !== undefined) {
        waiter.timer = setTimeout(() => {
          this.#waiters.delete(waiter);
          if (this.#daemon && this.#waiters.size === 0 && this.#exitCode === null) this.#hold(false);
          resolve(null);
        }, timeout);
      }
      this.#waiters.add(waiter);
      guardLoop();
    });
  }

  /** Blocks the thread until the process ends or `timeoutMs` passes; returns the exit code or null. */
  joinSync(timeoutMs?: number): number | null {
    this.#checkJoinable('joinSync');
    const timeout = checkTimeout(timeoutMs, 'joinSync');
    if (this.#exitCode === null) {
      if (this.#remote !== null) {
        const code = this.#remote.waitSync(timeout);
        if (code !== null) this.#exited(code);
      } else {
        const code = native.waitSync(this.#pid as number, timeout ?? -1);
        if (code !== undefined) this.#exited(code);
      }
    }
    return this.#exitCode;
  }

  isAlive(): boolean {
    this.#checkOpen();
    if (this.#isCurrent) return true;
    if (this.#pid === null || this.#exitCode !== null) return false;
    this.#poll();
    return this.#exitCode === null;
  }

  /**
   * Sends SIGINT (Python 3.14's Process.interrupt()): a child with no SIGINT
   * listener of its own ends with exit code -2; one that listens decides.
   * Does nothing once the process has exited.
   */
  interrupt(): void {
    this.#sendSignal(constants.signals.SIGINT, 'interrupt');
  }

  /** Sends SIGTERM. Does nothing once the process has exited. */
  terminate(): void {
    this.#sendSignal(constants.signals.SIGTERM, 'terminate');
  }

  /** Sends SIGKILL. Does nothing once the process has exited. */
  kill(): void {
    this.#sendSignal(constants.signals.SIGKILL, 'kill');
  }

  /** Releases the object; most methods throw afterwards. Throws while the process runs. */
  close(): void {
    if (this.#closed) return;
    if (this.#pid !== null && !this.#isCurrent && this.isAlive()) {
      throw new ProcessError(
        'ERR_PROCESS_ALIVE',
        `cannot close ${this.#name} (pid ${this.#pid}) while it is still running; join() or terminate() it first`,
      );
    }
    this.#closed = true;
  }

  [inspect.custom](): string {
    let state: string;
    if (this.#closed) state = 'closed';
    else if (this.#isCurrent) state = 'current';
    else if (this.#pid === null) state = 'initial';
    else if (this.#exitCode === null) state = 'started';
    else state = `exitCode=${this.#exitCode}`;
    const pid = this.#isCurrent ? native.getpid() : this.#pid;
    return `<${this.constructor.name} name=${JSON.stringify(this.#name)}${pid !== null ? ` pid=${pid}` : ''} ${state}${this.#daemon ? ' daemon' : ''}>`;
  }

  #poll(): void {
    if (this.#startedBy !== native.getpid()) {
      throw new ProcessError('ERR_NOT_A_CHILD', `${this.#name} (pid ${this.#pid}) can only be tested by the process that started it`);
    }
    const code = this.#exitStatus();
    if (code !== undefined) this.#exited(code);
  }

  /** The exit code if the child has ended (reaping it), without delivering it. */
  #exitStatus(): number | undefined {
    if (this.#remote !== null) return this.#remote.poll() ?? undefined;
    return native.tryReap(this.#pid as number);
  }

  #hold(on: boolean): void {
    if (this.#remote !== null) this.#remote.hold(on);
    else native.watch(this.#pid as number, on);
  }

  #exited(code: number): void {
    if (this.#exitCode !== null) return;
    this.#exitCode = code;
    // A pid another child has since been given is that child's entry.
    if (children.get(this.#pid as number) === (this as unknown as Process)) children.delete(this.#pid as number);
    for (const waiter of this.#waiters) {
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.resolve(code);
    }
    this.#waiters.clear();
    exitListeners.get(this as unknown as Process)?.(code);
  }

  #sendSignal(signal: number, method: string): void {
    this.#checkOpen();
    if (this.#isCurrent) throw new ProcessError('ERR_NOT_A_CHILD', `${method}(): ${this.#name} is the current process, not a child`);
    if (this.#pid === null) throw new ProcessError('ERR_PROCESS_NOT_STARTED', `${method}(): ${this.#name} has not been started`);
    if (this.#exitCode !== null) return;
    if (this.#remote !== null) this.#remote.signal(signal);
    else native.signal(this.#pid, signal);
  }

  #checkOpen(): void {
    if (this.#closed) throw new ProcessError('ERR_PROCESS_CLOSED', `${this.#name} is closed`);
  }

  #checkJoinable(method: string): void {
    this.#checkOpen();
    if (this.#isCurrent || (this.#pid !== null && this.#startedBy !== native.getpid())) {
      throw new ProcessError('ERR_NOT_A_CHILD', `${method}(): can only join a child process (${this.#name} is not a child of this process)`);
    }
    if (this.#pid === null) throw new ProcessError('ERR_PROCESS_NOT_STARTED', `${method}(): can only join a started process (${this.#name})`);
  }
}

/**
 * Internal: in a new child (forked, spawned or made by the forkserver), makes
 * `proc` the current process and forgets the parent's children.
 */
export const enterChild = (function enterChild(proc: Process, state: ChildState): void {
  // Before anything asks which process this is (the child-start hooks do).
  refreshSelfPid();
  children.clear();
  parentState = state;
  parent = null;
  current = proc;
  identity = state.identity;
  childCounter = 0;
  exitHookInstalled = false;
  foreignExit = null;
  markCurrent(proc);
  for (const hook of childStartHooks) hook();
});

const childStartHooks: Array<() => void> = [];

/**
 * Internal: `hook` runs in every new child (forked, spawned or made by the
 * forkserver) once it is the current process, before its target.
 */
export function onChildStart(hook: () => void): void {
  childStartHooks.push(hook);
}

const CLASS_NAMES: Record<StartMethod, string> = { fork: 'ForkProcess', spawn: 'SpawnProcess', forkserver: 'ForkServerProcess' };
const boundClasses = new Map<StartMethod, typeof Process>();

/**
 * Internal: the Process subclass bound to `method`, named as Python's
 * (a context's Process, a pool's workers); a child rebuilds it as Process.
 */
export function processClassFor(method: StartMethod): typeof Process {
  let Class = boundClasses.get(method);
  if (Class === undefined) {
    Class = {
      [CLASS_NAMES[method]]: class extends Process {
        static readonly startMethod: StartMethod = method;
        static readonly [CONTEXT_CLASS] = true;
      },
    }[CLASS_NAMES[method]] as typeof Process;
    boundClasses.set(method, Class);
  }
  return Class;
}

/** Python's error for a process started while this one still imports its modules (spawn and forkserver). */
export function bootstrappingError(what: string): ProcessError {
  return new ProcessError(
    'ERR_BOOTSTRAPPING',
    `an attempt was made to start ${what} before this process (${current.name}) finished its bootstrapping phase.\n` +
      "This probably means a module imported here, often the program's main module, starts processes at its top level, and " +
      "the start method is not fork (a spawned or forkserver child imports the modules its targets come from). Guard that " +
      'code, as Python\'s "if __name__ == \'__main__\'":\n' +
      "  import { isMainModule } from 'nodemp';\n" +
      '  if (isMainModule(import.meta)) { /* start processes here */ }\n' +
      '(CommonJS: isMainModule(module)).',
  );
}

/** The Process object of the running process (`MainProcess` in the parent of all). */
export function currentProcess(): Process {
  return current;
}

/** The parent of this process, or null in the main process. */
export function parentProcess(): ParentProcess | null {
  if (parent === null && parentState !== null) parent = new ParentProcess(parentState.parentPid, parentState.parentName, parentState.remoteParent);
  return parent;
}

/** Children of this process that are still running (finished ones are reaped on the way). */
export function activeChildren(): Process[] {
  return [...children.values()].filter((child) => child.isAlive());
}

/** CPUs this process may run on (affinity and cgroup-aware, like os.availableParallelism()). */
export function cpuCount(): number {
  return availableParallelism();
}
