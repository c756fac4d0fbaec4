import { availableParallelism, constants } from 'node:os';
import { inspect } from 'node:util';
import { native } from './native.js';
import { ForkSafetyError, ProcessError } from './errors.js';
import { forkSafetyProblem } from './fork-safety.js';
import { becomeChild } from './child.js';

export interface ProcessOptions<A extends unknown[] = unknown[]> {
  /** Called with `args` in the child by the default `run()`. May be async. */
  target?: ((...args: A) => unknown) | null;
  args?: A;
  /** Defaults to `Process-N` (`Process-N:M` for a child's children), as in Python. */
  name?: string | null;
  /** Killed when the parent exits or dies. Defaults to the current process's flag. */
  daemon?: boolean | null;
}

interface JoinWaiter {
  resolve(code: number | null): void;
  timer?: NodeJS.Timeout;
}

// Per-process state. A forked child resets it to describe itself.
let current: Process;
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
  constructor(pid: number, name: string) {
    this.pid = pid;
    this.name = name;
  }
  /** False once the parent has exited (this process has then been re-parented). */
  isAlive(): boolean {
    return native.getppid() === this.pid;
  }
}

/**
 * A real OS process, made by fork() of this one. Pass `target` and `args`, or
 * subclass and override `run()`.
 */
export class Process<A extends unknown[] = unknown[]> {
  #target: ((...args: A) => unknown) | null;
  #args: A;
  #name: string;
  #daemon: boolean;
  #identity: number[];
  #pid: number | null = null;
  #startedBy = 0;
  #exitCode: number | null = null;
  #closed = false;
  #isCurrent = false;
  #waiters = new Set<JoinWaiter>();

  static #creatingMain = false;

  static {
    native.setOnExit((pid, code) => {
      const child = children.get(pid);
      if (child) child.#exited(code);
    });
  }

  constructor(options: ProcessOptions<A> = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(`Process(options): expected an options object, got ${inspect(options)}`);
    }
    const { target = null, args = [] as unknown as A, name, daemon } = options;
    if (target !== null && typeof target !== 'function') {
      throw new TypeError(`Process: target must be a function, got ${inspect(target)}`);
    }
    if (!Array.isArray(args)) throw new TypeError(`Process: args must be an array, got ${inspect(args)}`);
    // null, as Python's None, means the default.
    if (name !== undefined && name !== null && typeof name !== 'string') throw new TypeError(`Process: name must be a string, got ${inspect(name)}`);
    if (daemon !== undefined && daemon !== null && typeof daemon !== 'boolean') {
      throw new TypeError(`Process: daemon must be a boolean, got ${inspect(daemon)}`);
    }
    this.#target = target;
    this.#args = args;
    if (Process.#creatingMain) {
      this.#identity = [];
      this.#name = 'MainProcess';
      this.#daemon = false;
      this.#isCurrent = true;
      return;
    }
    this.#identity = [...identity, ++childCounter];
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
    return this.#target?.(...this.#args);
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

  start(): void {
    this.#checkOpen();
    if (this.#pid !== null || this.#isCurrent) {
      throw new ProcessError('ERR_PROCESS_STARTED', `cannot start a process twice (${this.#name} has pid ${this.pid})`);
    }
    if (current.daemon) {
      throw new ProcessError('ERR_DAEMON_CHILDREN', `daemonic processes are not allowed to have children (${current.name} is a daemon)`);
    }
    const problem = forkSafetyProblem();
    if (problem !== null) throw new ForkSafetyError(problem);

    const parentName = current.name;
    const self = native.getpid();
    const pid = native.fork(this.#daemon);
    if (pid === 0) {
      children.clear();
      parent = new ParentProcess(self, parentName);
      current = this as unknown as Process;
      identity = this.#identity;
      childCounter = 0;
      exitHookInstalled = false;
      this.#isCurrent = true;
      this.#startedBy = self;
      becomeChild(() => this.run(), this.#name);
    }
    this.#pid = pid;
    this.#startedBy = self;
    native.track(pid);
    children.set(pid, this as unknown as Process);
    native.watch(pid, !this.#daemon);
    installExitHook();
  }

  /** Resolves with the exit code once the process ends, or with null when `timeoutMs` passes first. */
  async join(timeoutMs?: number): Promise<number | null> {
    this.#checkJoinable('join');
    const timeout = checkTimeout(timeoutMs, 'join');
    if (this.#exitCode === null) this.#poll();
    if (this.#exitCode !== null) return this.#exitCode;
    // A daemon's exit watch does not hold the event loop open by itself; a
    // pending join() must, or a program whose only work is awaiting it would end.
    const pid = this.#pid as number;
    if (this.#daemon && this.#waiters.size === 0) native.watch(pid, true);
    return new Promise((resolve) => {
      const waiter: JoinWaiter = { resolve };
      if (timeout !== undefined) {
        waiter.timer = setTimeout(() => {
          this.#waiters.delete(waiter);
          if (this.#daemon && this.#waiters.size === 0 && this.#exitCode === null) native.watch(pid, false);
          resolve(null);
        }, timeout);
      }
      this.#waiters.add(waiter);
    });
  }

  /** Blocks the thread until the process ends or `timeoutMs` passes; returns the exit code or null. */
  joinSync(timeoutMs?: number): number | null {
    this.#checkJoinable('joinSync');
    const timeout = checkTimeout(timeoutMs, 'joinSync');
    if (this.#exitCode === null) {
      const code = native.waitSync(this.#pid as number, timeout ?? -1);
      if (code !== undefined) this.#exited(code);
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
    const code = native.tryReap(this.#pid as number);
    if (code !== undefined) this.#exited(code);
  }

  #exited(code: number): void {
    if (this.#exitCode !== null) return;
    this.#exitCode = code;
    children.delete(this.#pid as number);
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
    native.signal(this.#pid, signal);
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

/** The Process object of the running process (`MainProcess` in the parent of all). */
export function currentProcess(): Process {
  return current;
}

/** The parent of this process, or null in the main process. */
export function parentProcess(): ParentProcess | null {
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
