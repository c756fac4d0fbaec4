// What a forked child must not run of its parent's work. The child inherits
// the whole JS heap, and with it every pending timer, immediate, socket and
// process listener of the parent; left alone, the child would fire the
// parent's intervals and serve the parent's connections. Node offers no public
// list of timers, so a registry watches their lifecycle from the moment nodemp
// is first imported.
import { executionAsyncResource } from 'node:async_hooks';
import { constants } from 'node:os';

const noop = (): void => {};

interface Linked {
  _idleNext: Linked | null;
  _idlePrev: Linked | null;
  _destroyed: boolean;
  _onImmediate: (() => void) | null;
  _argv?: unknown[];
}

// Every Timeout sets `this._destroyed = false` when it is scheduled and Node
// sets it to true when it fires for the last time or is cleared. An accessor
// on the shared prototype sees both without wrapping any public function.
// Symbol.for keys let two copies of nodemp in one process share one registry.
function installTimerRegistry(): Set<NodeJS.Timeout> {
  const probe = setTimeout(noop, 0);
  const proto = Object.getPrototypeOf(probe) as Record<symbol, unknown>;
  clearTimeout(probe);
  const registryKey = Symbol.for('nodemp.liveTimers');
  const existing = proto[registryKey] as Set<NodeJS.Timeout> | undefined;
  if (existing) return existing;
  const live = new Set<NodeJS.Timeout>();
  const state = Symbol.for('nodemp.timerDestroyed');
  Object.defineProperty(proto, registryKey, { value: live });
  Object.defineProperty(proto, '_destroyed', {
    configurable: true,
    get(this: Record<symbol, unknown>) {
      return this[state];
    },
    set(this: NodeJS.Timeout & Record<symbol, unknown>, value: boolean) {
      this[state] = value;
      if (value) live.delete(this);
      else live.add(this);
    },
  });
  return live;
}

const liveTimers = installTimerRegistry();

// Node keeps pending immediates in one linked list; a fresh one is its tail,
// so walking back from it reaches every immediate the parent queued.
function clearQueuedImmediates(): void {
  const probe = setImmediate(noop) as unknown as Linked;
  let item = probe._idlePrev;
  while (item !== null) {
    const prev = item._idlePrev;
    clearImmediate(item as unknown as NodeJS.Immediate);
    item = prev;
  }
  clearImmediate(probe as unknown as NodeJS.Immediate);
}

// start() called from inside an immediate: the rest of that batch hangs off
// the running one, and Node's processImmediate would resume at the running one
// (already counted down, its frame gone). Clear the rest, make the running one
// a counted no-op, and add one count that is never spent, so whichever way
// Node resumes, its pending count never drops below the real number (an
// undercount would strand later immediates; an overcount of one only costs a
// no-op call per loop turn).
function repairImmediateBatch(running: Linked): void {
  let item = running._idleNext;
  while (item !== null) {
    const next = item._idleNext;
    clearImmediate(item as unknown as NodeJS.Immediate);
    item = next;
  }
  running._idleNext = null;
  running._onImmediate = noop;
  running._argv = undefined;
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
}

function isStdio(handle: { _handle?: { fd?: number } }): boolean {
  const fd = handle._handle?.fd;
  return typeof fd === 'number' && fd >= 0 && fd <= 2;
}

interface Closable {
  constructor?: { name?: string };
  removeAllListeners?: () => void;
  destroy?: () => void;
  close?: () => void;
}

function closeInheritedHandles(): void {
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
}

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

function dropParentListeners(): void {
  // Removing a signal's last listener closes Node's handle for it and restores
  // the default action, so terminate() ends the child even if the parent
  // catches SIGTERM.
  for (const event of process.eventNames()) {
    if (typeof event === 'string' && (event in constants.signals || PARENT_ONLY_EVENTS.has(event))) process.removeAllListeners(event);
  }
  // The IPC channel to the parent's own parent belongs to the parent.
  if (process.connected) process.disconnect?.();
}

/** In a freshly forked child: cancel and close what belongs to the parent. */
export function dropInheritedWork(): void {
  const running = executionAsyncResource() as (object & { constructor?: { name?: string } }) | undefined;
  const kind = running?.constructor?.name;
  if (kind === 'Timeout') clearTimeout(running as NodeJS.Timeout);
  for (const timer of liveTimers) clearTimeout(timer);
  liveTimers.clear();
  clearQueuedImmediates();
  if (kind === 'Immediate') repairImmediateBatch(running as unknown as Linked);
  closeInheritedHandles();
  dropParentListeners();
}
