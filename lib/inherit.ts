// What a forked child must not run of its parent's work. The child inherits
// the whole JS heap, and with it every pending timer, immediate, socket and
// process listener of the parent; left alone, the child would fire the
// parent's intervals and serve the parent's connections. Node offers no public
// list of timers or immediates, so registries watch their lifecycle from the
// moment nodemp is first imported.
import { executionAsyncResource } from 'node:async_hooks';
import { constants } from 'node:os';
import { native } from './native.js';

const noop = (): void => {};

interface Linked {
  _idleNext: Linked | null;
  _idlePrev: Linked | null;
  _destroyed: boolean;
  _onImmediate: (() => void) | null;
  _argv?: unknown[];
}

// Every Timeout and Immediate sets `this._destroyed = false` when it is
// scheduled, and Node sets it to true when it fires for the last time or is
// cleared. An accessor on the shared prototype sees both without wrapping any
// public function. Symbol.for keys let two copies of nodemp in one process
// share one registry.
function installRegistry<T extends object>(kind: string, probe: T, clear: (item: T) => void): Set<T> {
  const proto = Object.getPrototypeOf(probe) as Record<symbol, unknown>;
  clear(probe);
  const registryKey = Symbol.for(`nodemp.live${kind}s`);
  const existing = proto[registryKey] as Set<T> | undefined;
  if (existing) return existing;
  const live = new Set<T>();
  const state = Symbol.for(`nodemp.${kind.toLowerCase()}Destroyed`);
  Object.defineProperty(proto, registryKey, { value: live });
  Object.defineProperty(proto, '_destroyed', {
    configurable: true,
    get(this: Record<symbol, unknown>) {
      return this[state];
    },
    set(this: T, value: boolean) {
      (this as Record<symbol, unknown>)[state] = value;
      if (value) live.delete(this);
      else live.add(this);
    },
  });
  return live;
}

const liveTimers = installRegistry<NodeJS.Timeout>('Timer', setTimeout(noop, 0), clearTimeout);
// Node runs a batch of immediates from a list of its own, which no new
// immediate reaches: only a registry finds the rest of a batch that start()
// was called in the middle of (from a promise continuation between two).
const liveImmediates = installRegistry<NodeJS.Immediate>('Immediate', setImmediate(noop), clearImmediate);

// The process.nextTick callbacks queued when fork() was called are the
// parent's, as its microtasks are (native fork() drops those). Node keeps
// them in a queue no public API reaches, so each is queued behind a gate
// that runs it only in the process that queued it: a few nanoseconds a tick.
// Node's own modules queue theirs through process.nextTick as well. An
// accessor keeps the gate when code saves and restores process.nextTick
// (test runners and fake timers do).
interface TickGate {
  pid: number;
}

type NextTick = (callback: (...args: unknown[]) => void, ...args: unknown[]) => void;

function installTickGate(): TickGate {
  const key = Symbol.for('nodemp.tickGate');
  const holder = process as unknown as Record<symbol, TickGate | undefined>;
  const existing = holder[key];
  if (existing) return existing;
  const gate: TickGate = { pid: native.getpid() };
  const run = (function run(pid: number, callback: (...args: unknown[]) => void, args: unknown[] | undefined): void {
    if (pid !== gate.pid) return;
    if (args === undefined) callback();
    else callback(...args);
  });
  const innerOf = new WeakMap<NextTick, NextTick>();
  const gated = (function gated(raw: NextTick): NextTick {
    const nextTick = function nextTick(callback: (...args: unknown[]) => void, ...args: unknown[]): void {
      // The function's own error for a callback that is not one.
      if (typeof callback !== 'function') return raw(callback);
      raw(run as (...args: unknown[]) => void, gate.pid, callback, args.length === 0 ? undefined : args);
    };
    innerOf.set(nextTick, raw);
    return nextTick;
  });
  let current = gated(process.nextTick);
  Object.defineProperty(process, 'nextTick', {
    configurable: true,
    enumerable: true,
    get: () => current,
    set(fn: NextTick) {
      current = typeof fn !== 'function' || innerOf.has(fn) ? fn : gated(fn);
    },
  });
  Object.defineProperty(process, key, { value: gate });
  return gate;
}

const tickGate = installTickGate();

/** In a freshly forked child: the parent's pending process.nextTick callbacks will not run here. */
export const dropParentTicks = (function dropParentTicks(pid: number): void {
  tickGate.pid = pid;
});

/** An immediate that stays queued and counted but does nothing when it runs. */
const makeNoop = (function makeNoop(immediate: Linked): void {
  immediate._onImmediate = noop;
  immediate._argv = undefined;
});

// start() called from inside an immediate: the rest of that batch hangs off
// the running one, and Node's processImmediate would resume at the running one
// (already counted down, its frame gone). Clear the rest, make the running one
// a counted no-op, and add one count that is never spent, so whichever way
// Node resumes, its pending count never drops below the real number (an
// undercount would strand later immediates; an overcount of one only costs a
// no-op call per loop turn).
const repairImmediateBatch = (function repairImmediateBatch(running: Linked): void {
  let item = running._idleNext;
  while (item !== null) {
    const next = item._idleNext;
    clearImmediate(item as unknown as NodeJS.Immediate);
    item = next;
  }
  running._idleNext = null;
  makeNoop(running);
  running._destroyed = false;
  // `first` runs and unlinks `spare` behind it, so `spare` stays counted but
  // is never run; unref() keeps it from holding the loop open.
  let spare: Linked | null = null;
  const first = setImmediate(() => {
    const s = spare as Linked;
    first._idleNext = s._idleNext;
    if (s._idleNext) s._idleNext._idlePrev = first;
    s._idleNext = s._idlePrev = null;
  }) as unknown as Linked;
  spare = setImmediate(noop) as unknown as Linked;
  (spare as unknown as NodeJS.Immediate).unref();
});

// start() called between two immediates of a batch (from a promise
// continuation or a process.nextTick callback Node runs there): Node resumes
// the batch at its next immediate, the one whose predecessor already ran.
// Cleared, it would be skipped by a step from a predecessor that this
// resumption does not have; so it stays counted and does nothing.
const isNextOfBatch = (function isNextOfBatch(immediate: Linked): boolean {
  const before = immediate._idlePrev;
  return before !== null && before._destroyed;
});

const isStdio = (function isStdio(handle: { _handle?: { fd?: number } }): boolean {
  const fd = handle._handle?.fd;
  return typeof fd === 'number' && fd >= 0 && fd <= 2;
});

interface Closable {
  constructor?: { name?: string };
  removeAllListeners?: () => void;
  destroy?: () => void;
  close?: () => void;
}

const closeInheritedHandles = (function closeInheritedHandles(): void {
  const handles = (process as unknown as { _getActiveHandles(): Closable[] })._getActiveHandles();
  for (const handle of handles) {
    if ((handle as unknown) === process || isStdio(handle as { _handle?: { fd?: number } })) continue;
    // The parent's child processes are not ours to wait for; the native side unrefs them.
    if (handle.constructor?.name === 'ChildProcess') continue;
    // Listeners first, so closing fires none of the parent's callbacks here.
    handle.removeAllListeners?.();
    if (typeof handle.destroy === 'function') handle.destroy();
    else if (typeof handle.close === 'function') handle.close();
  }
});

const PARENT_ONLY_EVENTS = new Set([
  'exit',
  'beforeExit',
  'uncaughtException',
  'uncaughtExceptionMonitor',
  'unhandledRejection',
  'rejectionHandled',
  'message',
  'disconnect',
]);

/**
 * What a child forked now would inherit of this process's work, looked up in
 * the parent just before fork(). Looking costs the parent a few microseconds
 * of warm code; in the child, every page that code writes is a copy-on-write
 * fault (about 4 µs each here) and every function it runs for the first time
 * is compiled there: done in the child, the same lookups took half a
 * millisecond of every start. The child only acts on what is listed, and a
 * parent with nothing pending costs it nothing.
 */
export interface Inherited {
  /** The timer or immediate whose callback is calling start(), if any. */
  running: object | null;
  runningKind: string | undefined;
  timers: readonly NodeJS.Timeout[];
  immediates: readonly Linked[];
  /** The parent's listeners of its signals and PARENT_ONLY_EVENTS, by event. */
  listeners: readonly (readonly [string, readonly ((...args: unknown[]) => void)[]])[];
  connected: boolean;
}

const NOTHING: readonly never[] = Object.freeze([]);

export function inheritedWork(): Inherited {
  const running = executionAsyncResource() as (object & { constructor?: { name?: string } }) | undefined;
  const runningKind = running?.constructor?.name;
  let listeners: [string, ((...args: unknown[]) => void)[]][] | null = null;
  for (const event of process.eventNames()) {
    if (typeof event === 'string' && (event in constants.signals || PARENT_ONLY_EVENTS.has(event))) {
      (listeners ??= []).push([event, process.listeners(event as 'exit') as ((...args: unknown[]) => void)[]]);
    }
  }
  return {
    running: running ?? null,
    runningKind,
    timers: liveTimers.size > 0 ? Array.from(liveTimers) : NOTHING,
    immediates: liveImmediates.size > 0 ? (Array.from(liveImmediates) as unknown as Linked[]) : NOTHING,
    listeners: listeners ?? NOTHING,
    connected: process.connected === true,
  };
}

/**
 * In a freshly forked child: removes the parent's listeners (`inherited`, from
 * inheritedWork() just before the fork) of the events `which` picks, and only
 * those: a target that ran already keeps its own. Removing a signal's last
 * listener closes Node's handle for it and restores the default action, so
 * terminate() ends the child even if the parent catches SIGTERM.
 */
export const dropParentListeners = (function dropParentListeners(inherited: Inherited, which: (event: string) => boolean): void {
  for (const [event, fns] of inherited.listeners) {
    if (which(event)) for (const fn of fns) process.removeListener(event, fn);
  }
});

/**
 * The parent's 'exit' and 'beforeExit' listeners only matter once those
 * events are emitted (every parent has some: Node's own and nodemp's). A
 * child that ends inline drops them only if it has listeners of its own to
 * call then: the removal was a tenth of a millisecond of every start.
 */
export const isLate = (function isLate(event: string): boolean {
  return event === 'exit' || event === 'beforeExit';
});

/** Whether this child added listeners of its own for `event` (the parent's not yet dropped). */
export const hasOwnListeners = (function hasOwnListeners(inherited: Inherited, event: string): boolean {
  let parents = 0;
  for (const [e, fns] of inherited.listeners) if (e === event) parents = fns.length;
  return process.listenerCount(event) > parents;
});

/** In a freshly forked child: cancels and closes the rest of what belongs to the parent. */
export const dropInheritedWork = (function dropInheritedWork(inherited: Inherited): void {
  const { running, runningKind } = inherited;
  if (runningKind === 'Timeout') clearTimeout(running as NodeJS.Timeout);
  for (const timer of inherited.timers) clearTimeout(timer);
  if (runningKind === 'Immediate') repairImmediateBatch(running as unknown as Linked);
  for (const immediate of inherited.immediates) {
    if (runningKind !== 'Immediate' && isNextOfBatch(immediate)) makeNoop(immediate);
    else clearImmediate(immediate as unknown as NodeJS.Immediate);
  }
  // Listed here, not in the parent: a socket the parent unref'd is hidden from
  // it there, and fork() made every inherited one visible (fork.cc).
  closeInheritedHandles();
  // The IPC channel to the parent's own parent belongs to the parent.
  if (inherited.connected) process.disconnect?.();
});

/**
 * In a forked child whose target ran inline and returned: whether it left
 * work that keeps a process going (Node's own rule for when to exit): a
 * beforeExit listener, a ref'd timer or immediate of its own, or more active
 * handles and requests on the event loop than before it ran (`loopWorkBefore`).
 */
export const workLeft = (function workLeft(inherited: Inherited, loopWorkBefore: number): boolean {
  if (hasOwnListeners(inherited, 'beforeExit')) return true;
  if (hasOwnRefd(liveTimers, inherited.timers) || hasOwnRefd(liveImmediates, inherited.immediates)) return true;
  return native.loopWork() > loopWorkBefore;
});

/** Whether `live` holds a ref'd timer or immediate that is not one of the parent's (`inherited`). */
const hasOwnRefd = (function hasOwnRefd(live: ReadonlySet<{ hasRef(): boolean }>, inherited: readonly unknown[]): boolean {
  for (const item of live) if (item.hasRef() && !inherited.includes(item)) return true;
  return false;
});
