import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../dist/native.js';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const dist = join(root, 'dist', 'index.js');

/** An Int32Array over anonymous shared memory: what a forked child writes, the parent reads. */
export function shared(words = 16): Int32Array {
  return new Int32Array(native.mapShared(words * 4));
}

/** A flag in shared memory: a child parks on wait() until the parent calls release(). */
export function gate(): { wait(): void; release(): void } {
  const mem = shared(1);
  const buffer = mem.buffer as ArrayBuffer;
  return {
    wait() {
      while (Atomics.load(mem, 0) === 0) native.futexWait(buffer, 0, 0, 1000);
    },
    release() {
      Atomics.store(mem, 0, 1);
      native.futexWake(buffer, 0, 1);
    },
  };
}

export interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs an ES module (NODEMP resolves to the built library) in a fresh `node`, by default single-threaded,
 * with `env` added to this process's environment.
 * With `files`, its output goes to files, so that the call returns when the process ends even while
 * children it left running still hold its stdout.
 */
export function runScript(
  source: string,
  options: { args?: string[]; nodeArgs?: string[]; timeout?: number; files?: boolean; env?: Record<string, string> } = {},
): Run {
  const dir = mkdtempSync(join(tmpdir(), 'nodemp-test-'));
  const file = join(dir, 'script.mjs');
  writeFileSync(file, source.replaceAll('NODEMP', JSON.stringify(dist)));
  const out = options.files ? [openSync(join(dir, 'stdout'), 'w'), openSync(join(dir, 'stderr'), 'w')] : null;
  const r = spawnSync(process.execPath, [...(options.nodeArgs ?? ['--single-threaded']), file, ...(options.args ?? [])], {
    encoding: 'utf8',
    timeout: options.timeout ?? 20000,
    env: options.env ? { ...process.env, ...options.env } : process.env,
    stdio: out ? ['pipe', out[0], out[1]] : ['pipe', 'pipe', 'pipe'],
  });
  if (out) {
    for (const fd of out) closeSync(fd);
    return { status: r.status, signal: r.signal, stdout: readFileSync(join(dir, 'stdout'), 'utf8'), stderr: readFileSync(join(dir, 'stderr'), 'utf8') };
  }
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Pids of the live (non-zombie) children of `pid`. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** True while `pid` exists and is not a zombie. */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export async function waitUntil(predicate: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (predicate()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return predicate();
}

/**
 * This process's open descriptors as "fd -> target" strings, less the ones
 * nodemp opens once, when first needed, and keeps for the life of the process
 * by design: the run-queue readers of native/sched.cc (/proc/loadavg and this
 * process's schedstat) and the ring of async waits. Which test first needs
 * them depends on the machine's load, so counting them made leak checks flaky.
 */
/**
 * Lets microtasks (not the event loop) run until this process holds more
 * sockets than before `connect` was called: the connect is made, and its
 * handshake not yet read, which takes an event-loop turn. `outcome` is what
 * `connect` resolves with, or the error it rejects with.
 */
export async function connectUnderWay(connect: () => Promise<unknown>): Promise<{ outcome: Promise<unknown> }> {
  const sockets = () => openFds().filter((fd) => fd.includes('socket:')).length;
  const before = sockets();
  const outcome = connect().catch((e: unknown) => e);
  for (let i = 0; sockets() === before; i++) {
    if (i === 1000) throw new Error('connectUnderWay: no socket was opened');
    await Promise.resolve();
  }
  // Wrapped: an async function returning the Promise itself would wait for it.
  return { outcome };
}

export function openFds(): string[] {
  const lifetime = new Set(['/proc/loadavg', `/proc/${process.pid}/schedstat`, 'anon_inode:[io_uring]']);
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (!lifetime.has(target)) out.push(`${fd} -> ${target}`);
    } catch {
      // the descriptor readdir itself used
    }
  }
  return out;
}

export function shmEntries(): string[] {
  return readdirSync('/dev/shm').sort();
}
