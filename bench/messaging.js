// What bench/queue.js and bench/pipe.js share: the gate that starts nodemp's
// producers and consumers together, the worker_threads and child_process
// peers, and the Python peer (bench/peers/py_queue.py).
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Event, Process, Queue, Semaphore } from '../dist/index.js';
import { pythonPeer } from './lib.js';

const here = fileURLToPath(new URL('.', import.meta.url));

// A hung child must fail the benchmark rather than hang it.
const ROUND_TIMEOUT_MS = 120_000;

// Made before any fork, so every child shares them.
const ready = new Semaphore(0);
const gate = new Event();
const done = new Semaphore(0);
const reports = new Queue();

/**
 * Forks one child per producer and consumer, opens the gate once all of them
 * wait at it, and returns the milliseconds from then to the last consumer's
 * return. Forks and joins are outside the clock, and so is `warmup`, which
 * each child runs before it goes to the gate. A consumer returns
 * { count, sum } of what it received (or throws), checked against `expected`.
 */
export function gated(producers, consumers, expected, warmup = () => {}) {
  gate.clear();
  const consumer = (fn) => () => {
    let report;
    try {
      report = fn();
    } catch (error) {
      report = { error: String(error?.stack ?? error) };
    }
    // Released even on failure, so the parent never waits for a consumer that gave up.
    done.release();
    reports.putSync(report);
  };
  const targets = [...producers, ...consumers.map(consumer)];
  const children = targets.map((fn) => new Process({
    daemon: true,
    target: () => {
      warmup();
      ready.release();
      gate.waitSync();
      fn();
    },
  }));
  for (const c of children) c.start();
  for (let i = 0; i < children.length; i++) {
    if (!ready.acquireSync({ timeout: ROUND_TIMEOUT_MS })) throw new Error('a child never reached the gate');
  }
  const t0 = performance.now();
  gate.set();
  for (let i = 0; i < consumers.length; i++) {
    if (!done.acquireSync({ timeout: ROUND_TIMEOUT_MS })) throw new Error('a consumer never finished');
  }
  const ms = performance.now() - t0;
  let count = 0;
  let sum = 0;
  for (let i = 0; i < consumers.length; i++) {
    const r = reports.getSync({ timeout: ROUND_TIMEOUT_MS });
    if (r.error) throw new Error(`a consumer failed: ${r.error}`);
    count += r.count;
    sum += r.sum;
  }
  for (const c of children) {
    c.joinSync();
    if (c.exitCode !== 0) throw new Error(`a benchmark child exited with ${c.exitCode}`);
  }
  checkTotals('nodemp', { count, sum }, expected);
  return ms;
}

/** The peers' message makers: { i }, or `buf` with i in its first four bytes (the same Buffer each time). */
export const obj = (i) => ({ i });
export const stamp = (buf) => (i) => {
  buf.writeUInt32LE(i, 0);
  return buf;
};

/** Messages 0..n-1 in all: n of them, summing to n(n-1)/2. */
export function checkTotals(what, got, n) {
  if (got.count !== n || got.sum !== (n * (n - 1)) / 2) {
    throw new Error(`${what}: received ${got.count} messages summing to ${got.sum}, expected ${n} summing to ${(n * (n - 1)) / 2}`);
  }
}

// ---- worker_threads -------------------------------------------------------

// One Worker serves several MessageChannels, one per row, so a pass starts a
// single thread for them all. On each channel a sink counts and checks n
// messages (in order), answers { count, sum } and starts over; an echo sends
// every message straight back. `kind` says how a message carries its number:
// { i }, or the first four bytes of a Uint8Array of `size` bytes.
const workerSource = `
const { workerData: { channels } } = require('node:worker_threads');
for (const { port, mode, kind, size, n } of channels) {
  let count = 0;
  let sum = 0;
  const numberOf = kind === 'obj' ? (m) => m.i : (m) => {
    if (!(m instanceof Uint8Array) || m.length !== size) throw new Error('a bytes message of the wrong size');
    return (m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24)) >>> 0;
  };
  port.on('message', mode === 'echo' ? (m) => port.postMessage(m) : (m) => {
    const i = numberOf(m);
    if (i !== count) throw new Error('message ' + i + ' arrived where ' + count + ' was expected');
    count++;
    sum += i;
    if (count === n) {
      port.postMessage({ count, sum });
      count = sum = 0;
    }
  });
}
`;

/** A Worker with one peer per entry of `specs` ({ mode, kind, size, n }), each on a MessageChannel of its own. */
export class WorkerHost {
  constructor(specs) {
    const channels = specs.map((spec) => ({ spec, channel: new MessageChannel() }));
    this.worker = new Worker(workerSource, {
      eval: true,
      workerData: { channels: channels.map(({ spec, channel }) => ({ ...spec, port: channel.port2 })) },
      transferList: channels.map(({ channel }) => channel.port2),
    });
    this.failed = once(this.worker, 'error').then(([error]) => {
      throw error;
    });
    this.failed.catch(() => {});
    this.peers = channels.map(({ channel }) => new WorkerPeer(channel.port1, this.failed));
  }

  async close() {
    for (const peer of this.peers) peer.port.close();
    await this.worker.terminate();
  }
}

class WorkerPeer {
  constructor(port, failed) {
    this.port = port;
    this.failed = failed;
  }

  /** Posts make(0..n-1) and resolves with the ms until the sink has checked the last. */
  async sink(n, make) {
    const answer = once(this.port, 'message');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) this.port.postMessage(make(i));
    const [got] = await Promise.race([answer, this.failed]);
    const ms = performance.now() - t0;
    checkTotals('worker_threads', got, n);
    return ms;
  }

  pingPong(total, warmup) {
    return pingPong((m) => this.port.postMessage(m), this.port, total, warmup, this.failed);
  }
}

/**
 * Round trips of { i } to an echo: each answer sends the next message from
 * the 'message' callback itself, the fastest a Node program can go with
 * events. Resolves with the round trips after `warmup`, in us.
 */
function pingPong(send, emitter, total, warmup, failed) {
  const run = new Promise((resolve, reject) => {
    const samples = [];
    let i = 0;
    let t0 = 0;
    const onMessage = (m) => {
      const t = performance.now();
      if (m?.i !== i) {
        emitter.off('message', onMessage);
        reject(new Error(`ping-pong answer ${m?.i} where ${i} was expected`));
        return;
      }
      if (i >= warmup) samples.push((t - t0) * 1000);
      if (++i === total) {
        emitter.off('message', onMessage);
        resolve(samples);
        return;
      }
      t0 = performance.now();
      send({ i });
    };
    emitter.on('message', onMessage);
    t0 = performance.now();
    send({ i: 0 });
  });
  return Promise.race([run, failed]);
}

// ---- child_process IPC -----------------------------------------------------

/** A fork()ed Node program (bench/peers/ipc-peer.cjs) reached through process.send. */
export class IpcPeer {
  static async start(mode, n) {
    const child = fork(`${here}peers/ipc-peer.cjs`, [mode, String(n)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const peer = new IpcPeer(child);
    const [first] = await Promise.race([once(child, 'message'), peer.failed]);
    if (first !== 'ready') throw new Error(`ipc peer said ${first}`);
    return peer;
  }

  constructor(child) {
    this.child = child;
    this.failed = once(child, 'exit').then(([code]) => {
      throw new Error(`ipc peer exited with ${code}`);
    });
    this.failed.catch(() => {});
  }

  async sink(n, make) {
    const answer = once(this.child, 'message');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) this.child.send(make(i));
    const [got] = await Promise.race([answer, this.failed]);
    const ms = performance.now() - t0;
    checkTotals('child_process', got, n);
    return ms;
  }

  pingPong(total, warmup) {
    return pingPong((m) => this.child.send(m), this.child, total, warmup, this.failed);
  }

  async close() {
    const exited = once(this.child, 'exit');
    this.child.disconnect();
    await exited;
  }
}

// ---- Python -----------------------------------------------------------------

/** py_queue.py's subcommands in one interpreter: their results in order, or null if there is no python3. */
export function python(commands) {
  return pythonPeer('py_queue.py', commands);
}

/** Runs `echo` in a forked daemon child around `measure()`; fails loudly if the child did not exit cleanly. */
export async function withEchoChild(echo, measure) {
  const child = new Process({ daemon: true, target: echo });
  child.start();
  const samples = await measure();
  child.joinSync();
  if (child.exitCode !== 0) throw new Error(`echo child exited with ${child.exitCode}`);
  return samples;
}

/** Round trips in µs of `send({ i })` then `await recv()`, checking each answer; the first `warmup` are dropped. */
export async function asyncRoundTrips(rounds, warmup, send, recv) {
  const samples = [];
  for (let i = 0; i < rounds + warmup; i++) {
    const t0 = performance.now();
    send({ i });
    const m = await recv();
    const t = performance.now();
    if (m.i !== i) throw new Error(`ping-pong answer ${m.i} where ${i} was expected`);
    if (i >= warmup) samples.push((t - t0) * 1000);
  }
  return samples;
}
