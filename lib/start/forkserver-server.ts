// The fork server itself (see forkserver.ts; forkserver-main.ts starts it).
// Started with --single-threaded, it runs no code of the program but the
// modules it is told to import, forks a child per request, and reports each
// child's exit. It ends when its parent closes the socket or dies (the
// parent-death signal covers SIGKILL).
import { readdirSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { native } from '../native.js';
import { setForeignExitHandler } from '../process.js';
import { becomeChild } from '../child.js';
import { inheritedWork } from '../inherit.js';
import { ForkSafetyError, errorState } from '../errors.js';
import { PresetMessage, recvMessage, sendMessage, type Message } from './channel.js';
import { becomeStarted, type Header } from './preparation.js';
import { loadReference, markChild } from './reference.js';
import { setBootstrapping } from './method.js';
import { decodeInChild, encodeForChild } from './descriptors.js';
import { Lock } from '../lock.js';
import { RawValue } from '../value.js';

const SOCK = 3;
const parentPid = Number(process.argv[2]);
native.dieWithParent(parentPid);
// The program's modules run here only to be imported: never as the main
// module, and never starting processes of their own.
markChild();
setBootstrapping(true);
// As Python's fork server: Ctrl-C reaches the whole process group, and the
// parent decides what it means; the server must outlive a parent that
// handles it. Its children get the default action back (lib/inherit.ts).
process.on('SIGINT', () => {});

type Request = { op: 'preload'; modules: string[] } | { op: 'start'; header: Header; payload: Uint8Array | null; payloadLength: number };

// The answer to a start, framed in advance and sent first after fork(): the
// parent waits on it, and whatever the server does after fork() pays a page
// copy for each page it first writes (about 3 ms of a 14 ms start here).
const STARTED = new PresetMessage((pid) => ({ op: 'started', pid }));

const waiting: Message[] = [];
let busy = false;

function warn(text: string): void {
  try {
    writeSync(2, `nodemp forkserver: ${text}\n`);
  } catch {
    // No stderr: nothing to tell it on.
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) native.closeFd(fd);
}

async function serve(message: Message): Promise<void> {
  const request = message.value as Request;
  if (request.op === 'preload') {
    for (const module of request.modules) {
      try {
        await import(module);
      } catch (error) {
        // As Python's forkserver: a preload that fails is skipped.
        warn(`could not preload ${module}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    return;
  }
  const { header } = request;
  const fds = message.fds;
  const reply = (error: unknown): void => {
    closeAll(fds);
    sendMessage(SOCK, { op: 'error', error: errorState(error instanceof Error ? error : new Error(String(error))) });
  };
  let payload: Uint8Array;
  if (request.payload !== null) {
    payload = request.payload;
  } else {
    // The preparation came in a mapping of its own, its descriptor last.
    const fd = fds.pop() as number;
    try {
      payload = new Uint8Array(native.mapFd(fd, request.payloadLength)).slice();
    } catch (error) {
      native.closeFd(fd);
      reply(error);
      return;
    }
  }
  // Module code run here sees the parent's command line, as the child will.
  process.argv = [process.execPath, ...header.argv.slice(1)];
  try {
    for (const ref of header.preload) await loadReference(ref);
  } catch (error) {
    reply(error);
    return;
  }
  // A module may have started a thread here (loader hooks run on one); a
  // forked child would wait on it forever.
  const problem = threadProblem();
  if (problem !== null) {
    reply(new ForkSafetyError(problem));
    return;
  }
  let pid: number;
  const inherited = inheritedWork();
  try {
    pid = native.fork(header.state.daemon);
  } catch (error) {
    reply(error);
    return;
  }
  if (pid === 0) {
    native.closeFd(SOCK);
    // What made the server's code compile eagerly would slow the child's own later imports.
    setFlagsFromString('--lazy');
    setFlagsFromString('--flush-bytecode');
    becomeChild(async () => (await becomeStarted(header, payload, fds)).run(), header.state.name, inherited);
  }
  STARTED.send(SOCK, pid);
  closeAll(fds);
  native.track(pid);
  native.watch(pid, false);
}

// Node's own threads (the libuv pool among them, started by the warm-up's
// file reads) are safe across a fork; one more is not.
let threadsAtStart = Infinity;

function countThreads(): number {
  return process.platform === 'linux' ? readdirSync('/proc/self/task').length : 0;
}

// Loader hooks registered by the server's own flags (--import, --loader)
// run on a thread that is there from the start, so the count cannot show
// them: a first child is forked to try an import, which hangs if they exist.
let hooksAtStart = false;

async function probeHooks(): Promise<void> {
  if (!process.execArgv.some((f) => /^--(import|loader|experimental-loader)\b/.test(f))) return;
  const inherited = inheritedWork();
  const pid = native.fork(true);
  if (pid === 0) {
    native.closeFd(SOCK);
    becomeChild(
      async () => {
        await import('node:os');
      },
      'forkserver-probe',
      inherited,
    );
  }
  native.track(pid);
  const code = native.waitSync(pid, 2000);
  if (code === undefined) {
    native.signal(pid, 9);
    native.waitSync(pid, -1);
    hooksAtStart = true;
  }
}

/** Why this process cannot fork now, or null: a thread that was not there when the server started (Linux only). */
function threadProblem(): string | null {
  if (hooksAtStart) {
    return (
      "the program's loader hooks (--import, --loader or module.register()) run on a thread of their own, and a child " +
      "forked by the fork server would wait on it forever. Use the 'spawn' start method for this program."
    );
  }
  const threads = countThreads();
  if (threads <= threadsAtStart) return null;
  return (
    `the fork server runs ${threads - threadsAtStart} thread(s) more once the target's modules are imported (loader hooks, registered with ` +
    '--import, --loader or module.register(), run on a thread of their own), and a forked child would wait on them ' +
    "forever. Use the 'spawn' start method for this program."
  );
}

async function pump(): Promise<void> {
  if (busy) return;
  busy = true;
  try {
    while (waiting.length > 0) await serve(waiting.shift() as Message);
  } finally {
    busy = false;
  }
}

// V8 compiles a function when it first runs, and a child compiles what its
// parent never ran: every child would compile the code that rebuilds its
// arguments and loads its target (about 1.5 ms here). Run that code once in
// the server, so its children inherit it compiled. The pool's worker loop is
// imported too: a Pool's workers are the most frequent children.
async function warmUp(): Promise<void> {
  const { bytes, fds } = encodeForChild({ cls: null, target: null, args: [new Lock(), new RawValue('i', 0), { plain: [1, 'a'] }], fields: {} });
  await decodeInChild(bytes, fds.map((fd) => native.dupFd(fd)));
  await loadReference({ module: new URL('../pool.js', import.meta.url).href, name: 'serve' });
  await readFile(new URL(import.meta.url));
  threadsAtStart = countThreads();
  await probeHooks();
}

setForeignExitHandler((pid, code) => {
  try {
    sendMessage(SOCK, { op: 'exit', pid, code });
  } catch {
    // The parent is gone; so are we, in a moment.
  }
});

// Requests wait in the socket until the warm-up is done.
await warmUp();

native.sockWatch(
  SOCK,
  () => {
    for (;;) {
      const message = recvMessage(SOCK, 0);
      if (message === undefined) break;
      if (message === null) {
        // The parent closed its end: it has exited, or is about to.
        process.exit(0);
      }
      waiting.push(message);
    }
    void pump();
  },
  true,
);
