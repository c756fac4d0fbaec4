import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { osError } from './errors.js';

/** Where the event loop stands with one poll handle (diagnosis of a notification that never came). */
export interface PollDiagnosis {
  fd: number;
  active: boolean;
  readable: boolean;
  loopWatcher: 'ours' | 'none' | 'other';
  /** Whether the loop's epoll set holds the descriptor (Linux only). */
  inEpoll?: boolean;
}

/** A child's exit watch: its pidfd's poll handle, or SIGCHLD where there is no pidfd. */
export interface ExitWatch extends PollDiagnosis {
  pid: number;
  /** Watched from the event loop (false: tracked only, its exit learned by polling or a blocking wait). */
  watched: boolean;
  sigchld: boolean;
  /** The process whose pidfd `fd` is now (Linux; 0: not a pidfd). */
  fdPid?: number;
}

/** The addon's functions (internal API for the library's own modules). */
export interface Native {
  setErrorFactory(factory: (code: string, errno: number, syscall: string, message: string) => Error): void;
  /** Threads of this process that have the addon loaded now. */
  loadedThreads(): number;
  /** Threads of this process that have ever loaded the addon. */
  loadedEver(): number;
  fork(daemon: boolean): number;
  /** `reqsBeforeTarget`: activeRequests() before a target run at once; the requests it started are its own, not the parent's. */
  detach(sentinel: unknown, launch: () => void, loopEmpty: () => void, exit: () => void, reqsBeforeTarget?: number): void;
  /** In a freshly forked child: whether the target may run at once on the stack of start() (fork.cc). */
  canRunInline(): boolean;
  /** The event loop's active handles and requests. */
  loopWork(): number;
  /** The event loop's requests in flight. */
  activeRequests(): number;
  exit(code: number): never;
  getpid(): number;
  getppid(): number;
  lastParking(): 'parked' | 'timed-out' | 'unsupported' | 'none';
  setOnExit(callback: (pid: number, exitCode: number) => void): void;
  track(pid: number): void;
  watch(pid: number, ref: boolean): void;
  tryReap(pid: number): number | undefined;
  waitSync(pid: number, timeoutMs: number): number | undefined;
  signal(pid: number, signal: number): boolean;
  /** Zeroed shared memory: a memfd (macOS: an unlinked POSIX segment) kept open with the mapping, so sharedFd() can hand it out. */
  mapShared(size: number): ArrayBuffer;
  /** The descriptor behind a mapShared()/mapFd() buffer, owned by the buffer; TypeError for any other buffer. */
  sharedFd(buffer: ArrayBuffer): number;
  /** Maps `size` bytes of the memory behind `fd` (from another process's sharedFd()); the buffer owns `fd` once this returns. */
  mapFd(fd: number, size: number): ArrayBuffer;
  /** A close-on-exec duplicate of `fd`. */
  dupFd(fd: number): number;
  futexWait(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs?: number): 0 | 1 | 2;
  futexWake(buffer: ArrayBuffer, byteOffset: number, count: number): number;
  /** Whether this process has lately waited for a CPU a fair share of the time (native/sched.cc): spinning would then take a partner's slice. */
  machineBusy(): boolean;
  /** Whether more tasks are runnable right now than there are cores (Linux; elsewhere false): a system call (native/sched.cc). */
  machineCrowded(): boolean;
  /** 4 bytes: the CPU nodemp's JS thread last ran on as nodemp looked (-1: not known), read with no call (native/sched.cc). */
  cpuWord: ArrayBuffer;
  /** 4 bytes: 1 once a futexWake() has woken a sleeper, until the next wait takes it: a sleep, or lib/spin.ts spinLimit or pollPays (native/sched.cc). */
  wokeWord: ArrayBuffer;
  /** 4 bytes: machineBusy()'s verdict as 1 or 0, read with no call (native/sched.cc). */
  busyWord: ArrayBuffer;
  /** sched_yield(): the CPU to whatever else is runnable on it. */
  schedYield(): void;
  /** A pool worker's SCHED_BATCH (on) or SCHED_OTHER for this thread, unless some other policy was chosen for it (Linux; elsewhere nothing). */
  schedBatch(on: boolean): void;
  /** Internal (tests): the busy verdict after one window (native/sched.cc Verdict). */
  schedVerdict(wasBusy: boolean, waitedNs: number, slices: number, windowNs: number, crowded: boolean): boolean;
  execve(path: string, argv: string[], env: string[]): never;
  pidAlive(pid: number): boolean;
  waitAsync(
    buffer: ArrayBuffer,
    byteOffset: number,
    expected: number,
    timeoutMs: number | undefined,
    callback: (error: Error | null, result?: 0 | 1 | 2) => void,
  ): void;
  /** How this process's async waits sleep: through io_uring (Linux 6.7+), on helper threads, or not decided before the first. */
  waitMechanism(): 'io_uring' | 'threads' | 'undecided';
  waiterState(): { inFlight: number; onRing: number; oldestMs: number; overdue: number; moved: number; ring?: PollDiagnosis & { waits: number; completionsUnread: number; completionsRead: number }; epollReady?: number[] };
  watchState(pid: number): ExitWatch | null;
  loopTurns(): number;
  exitWatches(): ExitWatch[];
  layout: Layout;
  // The stamps of a process start's phases (native/trace.cc, lib/start/trace.ts)
  traceStart(buffer: ArrayBuffer | null): void;
  traceStamp(phase: number): void;
  trace: Record<string, number>;
  // The feeder of unbounded queues (native/ring.cc)
  /** `pending`: an int32, the feed's count of waiting messages, kept up to date by the native side. */
  feedOpen(buffer: ArrayBuffer, slots: number, joinable: boolean): { handle: number; pending: ArrayBuffer };
  /** `large`: the bytes go into a segment of their own when their turn comes (native/ring.cc, Place). */
  feed(handle: number, buffer: ArrayBuffer, tag: number, bytes: Uint8Array, large: boolean): void;
  /** A party row of this process's own in the queue's table (-1: every row has a live owner). */
  queueRow(buffer: ArrayBuffer, slots: number): number;
  /** One recovery attempt after a wait: side 0 a consumer on an unpublished head, 1 a producer with no room. */
  queueRecover(buffer: ArrayBuffer, slots: number, side: 0 | 1): boolean;
  drain(): void;
  // Pipe and Connection (native/conn.cc)
  connSetOnReadable(callback: (fd: number) => void): void;
  /** The two descriptors and what they are (as connAdopt). */
  connPipe(duplex: boolean): [number, number, number];
  /** Returns what the descriptor is: 0 not a socket, 1 a stream socket, 2 a SOCK_SEQPACKET socket. */
  connAdopt(fd: number): number;
  connSend(fd: number, tag: number, data: ArrayBufferView | ArrayBuffer, byteOffset: number, byteLength: number, records: boolean): void;
  connRead(fd: number, buffer: Uint8Array, offset: number, length: number, timeoutMs: number): number;
  /** The Float64Array [tag, body length, body bytes taken, body start] connRecv reports in. */
  connFrameInfo(): Float64Array;
  connRecv(fd: number, buffer: Uint8Array, offset: number, capacity: number, timeoutMs: number, mode: number): number;
  connPoll(fd: number, timeoutMs: number): boolean;
  connWatch(fd: number, on: boolean, writable?: boolean): void;
  connClose(fd: number): void;
  connPollFds(fds: Int32Array, timeoutMs: number): number;
  connPidfd(pid: number): number;
  connAfterFork(): void;
  // Listener and Client (native/listener.cc). family: 0 Unix (address: the path's bytes), 1 IPv4, 2 IPv6 (address: a host).
  netListen(family: number, address: Buffer | string, port: number, backlog: number): number;
  /** timeoutMs 0: [fd, true] while the connect is in progress; [-1, false] when a Unix listener's backlog is full. */
  netConnect(family: number, address: Buffer | string, port: number, timeoutMs: number): [number, boolean];
  /** Throws the error a connect in progress ended with. */
  netConnected(fd: number): void;
  /** [accepted descriptor, the client's family, address, port], or -1 when none came within timeoutMs (0: now; < 0: forever). */
  netAccept(fd: number, timeoutMs: number): [number, number, Buffer | string, number] | -1;
  /** [family, address (a Buffer for Unix), port] of the socket's own end. */
  netName(fd: number): [number, Buffer | string, number];
  netWrite(fd: number, data: Buffer, offset?: number, wait?: boolean): number;
  // SharedMemory (native/shm.cc, native/tracker.cc)
  shmOpen(name: string, create: boolean, size: number, track: boolean): ArrayBuffer;
  shmClose(buffer: ArrayBuffer): void;
  shmUnlink(name: string): void;
  trackerPid(): number;
  trackerStart(): void;
  /** The write end of this process's tracker pipe, or -1. */
  trackerFd(): number;
  /** Takes `fd` (a parent's trackerFd()) as this process's tracker unless it has one (then closes it). */
  trackerAdopt(fd: number, pid: number): boolean;
  // The spawn and forkserver start methods (native/start.cc)
  /** The child gets stdio and fds[i] as descriptor 3 + i. */
  spawnProcess(path: string, argv: string[], env: string[], fds: number[]): number;
  socketPair(): [number, number];
  fdSend(sock: number, bytes: Uint8Array, fds: number[]): void;
  /** null: the other end closed; undefined: timeoutMs (< 0: forever) passed. */
  fdRecv(sock: number, timeoutMs: number): { bytes: Buffer; fds: number[] } | null | undefined;
  closeFd(fd: number): void;
  sockWatch(fd: number, callback: () => void, ref: boolean): void;
  sockUnwatch(fd: number): void;
  dieWithParent(ppid: number): void;
}

/** Offsets and sizes of the shared-memory layouts (native/layout.h). */
export interface Layout {
  readonly [name: string]: number;
}

const packageRoot = fileURLToPath(new URL('..', import.meta.url));

function load(): Native {
  if (process.platform !== 'linux' && process.platform !== 'darwin') {
    throw new Error(`nodemp runs on Linux and macOS; this is ${process.platform}. fork(), futexes and pidfds have no Windows equivalent.`);
  }
  const require = createRequire(import.meta.url);
  // NODEMP_ADDON names a specific binary, such as the sanitizer build.
  const override = process.env.NODEMP_ADDON;
  try {
    return (override ? require(override) : require('node-gyp-build')(packageRoot)) as Native;
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    throw new Error(
      [
        `nodemp could not load its native addon for ${process.platform}-${process.arch} (Node ${process.version}, Node-API).`,
        override ? `NODEMP_ADDON is set to ${override}.` : `Tried: ${candidates().join('; ')}.`,
        'A prebuilt binary ships for linux-x64 (glibc); elsewhere the addon is built when the package installs, which',
        'does not happen when install scripts are off (npm --ignore-scripts, pnpm and Bun by default). Build it with',
        '"npm rebuild nodemp" (needs python3, make and a C++17 compiler), or from a checkout with "npm run build:native".',
        `Loader said: ${detail}`,
      ].join('\n'),
      { cause },
    );
  }
}

/** Where node-gyp-build looks, and what each place holds. */
function candidates(): string[] {
  const dirs = ['build/Release', 'build/Debug', `prebuilds/${process.platform}-${process.arch}`];
  return dirs.map((dir) => {
    const path = join(packageRoot, dir);
    let found: string[] = [];
    try {
      found = readdirSync(path).filter((f) => f.endsWith('.node'));
    } catch {
      return `${path}/ (missing)`;
    }
    return `${path}/ (${found.length > 0 ? found.join(', ') : 'no .node file'})`;
  });
}

export const native: Native = load();
if (native.loadedThreads() > 1) {
  throw new Error(
    'nodemp is already in use by another thread of this process. It keeps one set of children, watches and queue feeds per ' +
      'process, so it runs in one thread: the main thread, or one worker_threads Worker (there the spawn and forkserver ' +
      'start methods work). Use it from that thread.',
  );
}
if (native.loadedEver() > 1) {
  throw new Error(
    'nodemp was used by a thread of this process that has ended. It runs in one thread for the life of a process: the main ' +
      'thread, or one worker_threads Worker kept for as long as the program uses nodemp (a second thread after the first has ' +
      'ended is refused, since not all of the first one\'s native state can be let go safely).',
  );
}
native.setErrorFactory(osError);
