// Shared scaffolding for the synchronization tests.
import { afterEach, beforeEach, expect } from 'vitest';
import { EOFError, Pipe, Process, type Connection } from '../dist/index.js';

/** Starts a forked child running `target`; the caller joins it. */
export function spawnChild(target: () => unknown): Process {
  const p = new Process({ target, daemon: true });
  p.start();
  return p;
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Blocks this thread (a child's only thread) for ms. */
export function busySleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Counts event-loop turns while `work` runs: proof that the loop was not blocked. */
export async function loopTicksDuring<T>(work: Promise<T>): Promise<{ value: T; ticks: number }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  try {
    const value = await work;
    return { value, ticks };
  } finally {
    clearInterval(timer);
  }
}

/**
 * CPython's test_boundaries: a child that only looks at the read end it
 * inherited (`look`) and exits must leave both messages sent afterwards in
 * the pipe, in order, followed by the end of the stream.
 */
export async function expectBoundariesKept(duplex: boolean, look: (conn: Connection) => unknown): Promise<void> {
  const [r, w] = Pipe({ duplex });
  const p = new Process({ target: look, args: [r], daemon: true });
  p.start();
  await sleepMs(300);
  w.sendBytes(Buffer.from('first'));
  w.sendBytes(Buffer.from('second'));
  w.close();
  await p.join();
  expect(p.exitCode).toBe(0);
  expect((await r.recvBytes()).toString()).toBe('first');
  expect(r.recvBytesSync().toString()).toBe('second');
  expect(() => r.recvBytesSync()).toThrow(EOFError);
  r.close();
}

/** The process warnings each test of the calling file emits; read after what should warn. */
export function recordWarnings(): () => Error[] {
  let warnings: Error[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(w);
  };
  beforeEach(() => {
    warnings = [];
    process.on('warning', onWarning);
  });
  afterEach(() => {
    process.off('warning', onWarning);
  });
  return () => warnings;
}
