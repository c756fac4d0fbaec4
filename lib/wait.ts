// wait(): Python's multiprocessing.connection.wait for Connections and
// Processes. A Connection is ready when it has data (or its end of stream)
// to receive, as in Python; looking reads nothing, so the data stays for
// whichever process receives it. A Process is ready once it has exited.
// Processes are watched through a descriptor of their own that becomes
// readable at exit (pidfd on Linux, kqueue EVFILT_PROC on macOS), which never
// reaps: the exit status is collected by Process itself (isAlive()), so
// join() and exitCode work as before.
import { Connection, closeExitFd, openExitFd, watchFd, whenReady } from './connection.js';
import { Process } from './process.js';
import { native } from './native.js';
import { invalidType } from './args.js';
import { ProcessError } from './errors.js';
import { deadlineAfter, timeLeft } from './waiting.js';

export type Waitable = Connection | Process;

// Without exit descriptors (Linux < 5.3), processes are checked this often.
const EXIT_POLL_MS = 10;
// setTimeout() takes at most this many milliseconds.
const MAX_TIMER_MS = 0x7fffffff;

const noop = (): void => {};

function listOf<T extends Waitable>(method: string, objects: Iterable<T>): T[] {
  if (typeof objects !== 'object' || objects === null || typeof (objects as Partial<Iterable<T>>)[Symbol.iterator] !== 'function') {
    throw invalidType(`${method}(objects)`, 'an iterable of Connections and Processes', objects);
  }
  const list = [...objects];
  for (const o of list) {
    if (o instanceof Connection) continue;
    if (!(o instanceof Process)) throw invalidType(`${method}(objects): each object`, 'a Connection or a Process', o);
    if (o.pid === undefined) throw new ProcessError('ERR_PROCESS_NOT_STARTED', `${method}(): ${o.name} has not been started`);
  }
  return list;
}

function exited(p: Process): boolean {
  try {
    return !p.isAlive();
  } catch (error) {
    // A process this one did not start: it cannot be reaped here, only looked at.
    if ((error as { code?: unknown }).code === 'ERR_NOT_A_CHILD') return !native.pidAlive(p.pid as number);
    throw error;
  }
}

function readyNow<T extends Waitable>(list: T[]): T[] {
  return list.filter((o) => (o instanceof Connection ? o.poll(0) : exited(o as Process)));
}

// Blocks until one of the objects may have become ready or the deadline passes.
function sleepSync(list: Waitable[], deadline: number): void {
  const fds = new Int32Array(list.length);
  const opened: number[] = [];
  let sliced = false;
  try {
    for (let i = 0; i < list.length; i++) {
      const o = list[i];
      if (o instanceof Connection) {
        fds[i] = o.fileno();
        continue;
      }
      const fd = openExitFd(o.pid as number);
      if (fd === -2) return;
      if (fd === -1) {
        fds[i] = -1;
        sliced = true;
      } else {
        fds[i] = fd;
        opened.push(fd);
      }
    }
    let timeout = timeLeft(deadline) ?? -1;
    if (sliced && (timeout < 0 || timeout > EXIT_POLL_MS)) timeout = EXIT_POLL_MS;
    native.connPollFds(fds, timeout);
  } finally {
    for (const fd of opened) closeExitFd(fd);
  }
}

function whenExited(p: Process, listener: () => void): () => void {
  const fd = openExitFd(p.pid as number);
  if (fd === -2) {
    listener();
    return noop;
  }
  if (fd === -1) {
    const timer = setInterval(() => {
      let done: boolean;
      try {
        done = exited(p);
      } catch {
        done = true;  // wait() looks again and reports the error
      }
      if (done) listener();
    }, EXIT_POLL_MS);
    return () => clearInterval(timer);
  }
  try {
    watchFd(fd, listener);
  } catch (error) {
    closeExitFd(fd);
    throw error;
  }
  return () => closeExitFd(fd);
}

// Resolves once one of the objects may have become ready or the deadline passes.
function sleepAsync(list: Waitable[], deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const cancels: Array<() => void> = [];
    let settled = false;
    const settle = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      for (const cancel of cancels) cancel();
      if (error === undefined) resolve();
      else reject(error);
    };
    const fire = (): void => settle();
    try {
      for (const o of list) {
        cancels.push(o instanceof Connection ? whenReady(o, fire) : whenExited(o as Process, fire));
        if (settled) return;
      }
      const left = timeLeft(deadline);
      if (left !== undefined) {
        const timer = setTimeout(fire, Math.min(left, MAX_TIMER_MS));
        cancels.push(() => clearTimeout(timer));
      }
    } catch (error) {
      settle(error);
    }
  });
}

/**
 * Resolves with the objects that are ready, in the order given: Connections
 * with data (or their end) to receive, Processes that have exited.
 * Waits, without blocking the event loop, until at least one is ready or
 * `timeoutMs` passes (then the array is empty); undefined waits as long as it
 * takes.
 */
export async function wait<T extends Waitable>(objects: Iterable<T>, timeoutMs?: number | null): Promise<T[]> {
  const list = listOf('wait', objects);
  const deadline = deadlineAfter('wait', timeoutMs);
  for (;;) {
    const ready = readyNow(list);
    if (ready.length > 0 || performance.now() >= deadline) return ready;
    await sleepAsync(list, deadline);
  }
}

/** wait(), blocking this thread. */
export function waitSync<T extends Waitable>(objects: Iterable<T>, timeoutMs?: number | null): T[] {
  const list = listOf('waitSync', objects);
  const deadline = deadlineAfter('waitSync', timeoutMs);
  for (;;) {
    const ready = readyNow(list);
    if (ready.length > 0 || performance.now() >= deadline) return ready;
    sleepSync(list, deadline);
  }
}
