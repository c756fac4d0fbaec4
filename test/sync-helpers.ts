// Shared scaffolding for the synchronization tests.
import { Process } from '../dist/index.js';

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
