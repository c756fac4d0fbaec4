// The fork server itself (see forkserver.ts; forkserver-main.ts starts it).
// Started with --single-threaded, it runs no code of the program but the
// modules it is told to import, forks a child per request, and reports each
// child's exit. It ends when its parent closes the socket or dies (the
// parent-death signal covers SIGKILL).
import { writeSync } from 'node:fs';
import { native } from '../native.js';
import { setForeignExitHandler } from '../process.js';
import { becomeChild } from '../child.js';
import { errorState } from '../errors.js';
import { recvMessage, sendMessage, type Message } from './channel.js';
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

type Request = { op: 'preload'; modules: string[] } | { op: 'start'; header: Header; payload: Uint8Array };

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
  const { header, payload } = request;
  // Module code run here sees the parent's command line, as the child will.
  process.argv = [process.execPath, ...header.argv.slice(1)];
  try {
    for (const ref of header.preload) await loadReference(ref);
  } catch (error) {
    closeAll(message.fds);
    sendMessage(SOCK, { op: 'error', error: errorState(error instanceof Error ? error : new Error(String(error))) });
    return;
  }
  const pid = native.fork(header.state.daemon);
  if (pid === 0) {
    native.closeFd(SOCK);
    becomeChild(async () => (await becomeStarted(header, payload, message.fds)).run(), header.state.name);
  }
  closeAll(message.fds);
  native.track(pid);
  native.watch(pid, false);
  sendMessage(SOCK, { op: 'started', pid });
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
