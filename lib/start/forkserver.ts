// The `forkserver` start method, parent's side. One server per parent,
// started at first use: a --single-threaded Node process (so it can fork)
// that has run none of this program's code but the modules it was asked to
// import. Each start() sends the server the child's preparation and its
// descriptors over a socket pair only this process holds; the server imports
// the target's modules (once: later children start warm), forks, and answers
// with the pid; when a child ends the server reaps it and sends its exit code,
// which is how join(), exitCode and isAlive() learn it.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import { inspect } from 'node:util';
import { native } from '../native.js';
import { setLauncher, type ChildState, type Process, type RemoteChild } from '../process.js';
import { ProcessError, RemoteTraceback, reviveError, type ErrorState } from '../errors.js';
import { selfPid } from '../self.js';
import { prepare } from './preparation.js';
import { recvMessage, sendMessage, type Message } from './channel.js';
import { childExecArgv, spawnNode } from './spawn.js';

const SERVER = fileURLToPath(new URL('./forkserver-main.js', import.meta.url));
// Python's forkserver sets 255 for a child whose status died with the server.
const STATUS_LOST = 255;
const LOST_POLL_MS = 50;
// A larger preparation goes in a shared mapping, passed by descriptor: a
// request then never fills the socket, so the parent's send cannot wait on a
// server that is itself waiting to send the parent exit reports.
const INLINE_PAYLOAD = 16 * 1024;

/** What the server sends: a reply to a start, or a child's exit. */
type ServerMessage =
  | { op: 'started'; pid: number }
  | { op: 'error'; error: ErrorState }
  | { op: 'exit'; pid: number; code: number };

let preload: string[] = [];
let server: Server | null = null;

class ServerChild implements RemoteChild {
  readonly pid: number;
  readonly #server: Server;
  code: number | null = null;
  onExit: ((code: number) => void) | null = null;
  #held = false;

  constructor(pid: number, owner: Server) {
    this.pid = pid;
    this.#server = owner;
  }

  poll(): number | null {
    if (this.code === null) this.#server.drain();
    // The server reaps at once, but its word may still be on the way: a
    // process seen gone is waited for, so isAlive() and exitCode agree.
    if (this.code === null && !native.pidAlive(this.pid)) this.#server.waitFor(this, 1000);
    return this.code;
  }

  waitSync(timeoutMs: number | undefined): number | null {
    if (this.code === null) this.#server.waitFor(this, timeoutMs);
    return this.code;
  }

  hold(on: boolean): void {
    if (on === this.#held || this.code !== null) return;
    this.#held = on;
    this.#server.hold(on ? 1 : -1);
  }

  signal(signal: number): void {
    // Its exit may be on the way: a pid the server has reaped could be reused.
    if (this.poll() !== null) return;
    try {
      process.kill(this.pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }

  exited(code: number): void {
    if (this.code !== null) return;
    this.code = code;
    if (this.#held) {
      this.#held = false;
      this.#server.hold(-1);
    }
    this.onExit?.(code);
  }
}

class Server {
  readonly pid: number;
  readonly #sock: number;
  readonly #children = new Map<number, ServerChild>();
  #holds = 0;
  #dead = false;
  #status: number | undefined;

  constructor() {
    const [mine, theirs] = native.socketPair();
    // The server runs V8 without background work whatever this process does: that is what lets it fork.
    // --single-threaded still leaves Node's platform 4 worker threads asleep on one condition variable,
    // and a child forked with several sleepers copied in there can hang in its first garbage collection
    // (pthread_cond_signal waiting for sleepers that do not exist in it); one worker thread leaves no
    // second sleeper to wait for.
    const flags = childExecArgv().filter((f) => !/^--(single[-_]threaded|v8[-_]pool[-_]size)\b/.test(f));
    try {
      this.pid = spawnNode(SERVER, [String(selfPid)], theirs, [...flags, '--single-threaded', '--v8-pool-size=1']);
    } catch (error) {
      native.closeFd(mine);
      throw error;
    } finally {
      native.closeFd(theirs);
    }
    this.#sock = mine;
    native.track(this.pid);
    native.sockWatch(mine, () => this.drain(), false);
    if (preload.length > 0) sendMessage(mine, { op: 'preload', modules: preload });
  }

  get dead(): boolean {
    return this.#dead;
  }

  /** In a forked child: closes its copy of the parent's socket, saying nothing to the server. */
  forget(): void {
    if (!this.#dead) native.closeFd(this.#sock);
    this.#dead = true;
  }

  start(proc: Process, state: ChildState): ServerChild {
    const prepared = prepare(proc, state);
    const fds = [...prepared.fds];
    let payload: Uint8Array | null = prepared.payload;
    if (payload.length > INLINE_PAYLOAD) {
      // The message carries the file itself (SCM_RIGHTS): the mapping here may go once it is sent.
      const mapping = native.mapShared(payload.length);
      new Uint8Array(mapping).set(payload);
      fds.push(native.sharedFd(mapping));
      payload = null;
    }
    try {
      sendMessage(this.#sock, { op: 'start', header: prepared.header, payload, payloadLength: prepared.payload.length }, fds);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET') throw error;
      this.#lost();
      throw this.#diedError(`while ${state.name} was being sent to it`, error);
    }
    for (;;) {
      const message = recvMessage(this.#sock);
      if (message === null || message === undefined) {
        this.#lost();
        throw this.#diedError(`before it started ${state.name}`);
      }
      const m = message.value as ServerMessage;
      if (m.op === 'exit') {
        this.#exit(m.pid, m.code);
        continue;
      }
      // As a pool reports a task's error: the class and fields here, the server's stack as the cause.
      if (m.op === 'error') throw reviveError(m.error, new RemoteTraceback(m.error.stack, `the fork server, pid ${this.pid}`));
      const child = new ServerChild(m.pid, this);
      this.#children.set(m.pid, child);
      return child;
    }
  }

  preload(modules: string[]): void {
    if (!this.#dead) sendMessage(this.#sock, { op: 'preload', modules });
  }

  /** Takes every message that is there now; never blocks. */
  drain(): void {
    while (!this.#dead) {
      const message = recvMessage(this.#sock, 0);
      if (message === undefined) return;
      if (!this.#take(message)) return;
    }
  }

  /**
   * drain(), and whether the process is still there: on a loaded machine a
   * killed server's socket was seen to stay quiet for milliseconds after its
   * process had gone, long enough for the next start to be sent to it.
   */
  check(): void {
    this.drain();
    if (!this.#dead && !native.pidAlive(this.pid)) this.#lost();
  }

  /** Blocks until `child`'s exit code is known or timeoutMs passes. */
  waitFor(child: ServerChild, timeoutMs: number | undefined): void {
    const deadline = timeoutMs === undefined ? Infinity : performance.now() + timeoutMs;
    while (child.code === null) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      if (this.#dead) {
        // Its status went with the server; whether it still runs, its pid tells.
        if (!native.pidAlive(child.pid)) child.exited(STATUS_LOST);
        else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(left, LOST_POLL_MS));
        continue;
      }
      const message = recvMessage(this.#sock, left === Infinity ? undefined : left);
      if (message === undefined) return;
      this.#take(message);
    }
  }

  hold(delta: number): void {
    this.#holds += delta;
    if (!this.#dead) native.sockWatch(this.#sock, () => this.drain(), this.#holds > 0);
  }

  #take(message: Message | null): boolean {
    if (message === null) {
      this.#lost();
      return false;
    }
    const m = message.value as ServerMessage;
    if (m.op === 'exit') this.#exit(m.pid, m.code);
    return true;
  }

  #exit(pid: number, code: number): void {
    const child = this.#children.get(pid);
    if (child === undefined) return;
    this.#children.delete(pid);
    child.exited(code);
  }

  /** The server's exit status once reaped (here, by #lost() or by an earlier call); undefined while it runs or if it is not known. */
  #reap(timeoutMs: number): number | undefined {
    if (this.#status === undefined) {
      try {
        this.#status = timeoutMs === 0 ? native.tryReap(this.pid) : native.waitSync(this.pid, timeoutMs);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ECHILD') throw error;
      }
    }
    return this.#status;
  }

  #diedError(when: string, cause?: unknown): ProcessError {
    const code = this.#reap(1000);
    const how = code === undefined ? 'ended' : code < 0 ? `was killed by signal ${-code}` : `exited with code ${code}`;
    const error = new ProcessError(
      'ERR_FORKSERVER_DIED',
      `the forkserver (pid ${this.pid}) ${how} ${when}; the next start() starts a new one`,
    );
    if (cause !== undefined) Object.defineProperty(error, 'cause', { value: cause, configurable: true, writable: true });
    return error;
  }

  // The server is gone (SIGKILLed, most likely). Its children's exit codes
  // went with it: each is given Python's 255 once its pid is gone.
  #lost(): void {
    if (this.#dead) return;
    this.#dead = true;
    native.sockUnwatch(this.#sock);
    native.closeFd(this.#sock);
    // Its socket closes before it is a zombie to reap: if that is still to
    // come, the exit watch reaps it then (and closes its pidfd).
    if (this.#reap(0) === undefined) native.watch(this.pid, false);
    if (server === this) server = null;
    const orphans = [...this.#children.values()];
    this.#children.clear();
    if (orphans.length === 0) return;
    process.emitWarning(
      `the forkserver (pid ${this.pid}) died; the exit status of ${orphans.map((c) => c.pid).join(', ')} is lost ` +
        `(their exitCode will read ${STATUS_LOST} once they end, as in Python)`,
      { code: 'NODEMP_FORKSERVER_DIED' },
    );
    const timer = setInterval(() => {
      for (const child of orphans) if (child.code === null && !native.pidAlive(child.pid)) child.exited(STATUS_LOST);
      if (orphans.every((c) => c.code !== null)) clearInterval(timer);
    }, LOST_POLL_MS);
    if (this.#holds <= 0) timer.unref();
  }
}

function theServer(): Server {
  // One that died while we were not looking is noticed here, not by the start it would fail.
  if (server !== null && ownerPid === selfPid) server.check();
  // A forked child inherits the object but not the server's attention.
  if (server !== null && ownerPid !== selfPid) server.forget();
  if (server === null || server.dead || ownerPid !== selfPid) {
    server = new Server();
    ownerPid = selfPid;
  }
  return server;
}
let ownerPid = 0;

/** A module to preload as import() takes it: a path (absolute, or relative to the working directory) as a file URL. */
export function preloadSpecifier(m: string): string {
  if (m.startsWith('file:') || m.startsWith('node:')) return m;
  if (isAbsolute(m) || m.startsWith('.')) return pathToFileURL(resolve(m)).href;
  return m;
}

/**
 * Python's set_forkserver_preload(): modules the server imports when it
 * starts (and at once, if it runs already), so that children find them
 * loaded. Paths and file URLs; bare names resolve from the server's place in
 * node_modules.
 */
export function setForkserverPreload(modules: readonly string[]): void {
  if (!Array.isArray(modules) || !modules.every((m) => typeof m === 'string')) {
    throw new TypeError(`setForkserverPreload(modules): expected an array of module names, got ${inspect(modules)}`);
  }
  preload = modules.map(preloadSpecifier);
  if (server !== null && !server.dead && ownerPid === selfPid) server.preload(preload);
}

setLauncher('forkserver', {
  launch(proc: Process, state: ChildState): RemoteChild {
    return theServer().start(proc, state);
  },
});
