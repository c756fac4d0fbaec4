// Semaphore ping-pong between two processes: two Semaphore(0); the parent
// releases s1 and acquires s2, the child acquires s1 and releases s2. Median
// round trip. Peers: Python's mp.Semaphore, and a counting semaphore built on
// Atomics between this thread and a Worker; the floor: the same ping-pong on a
// bare futex word between two Node processes, each side sleeping at once
// (what any wait between two Node processes costs, with no spin: on a busy
// machine whose kernel keeps the two on one CPU, this is the whole round trip
// but for the semaphore's own code). Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Process, Semaphore } from '../dist/index.js';
import { native } from '../dist/native.js';
import { median } from './lib.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const passes = 3;
const rounds = quick ? 400 : 4000; // per pass
const warmup = 200;
const total = warmup + rounds;

function nodemp() {
  const s1 = new Semaphore(0);
  const s2 = new Semaphore(0);
  const child = new Process({
    daemon: true,
    target: () => {
      for (let i = 0; i < total; i++) {
        s1.acquireSync();
        s2.release();
      }
    },
  });
  child.start();
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    s1.release();
    s2.acquireSync();
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  child.joinSync();
  if (child.exitCode !== 0) throw new Error(`semaphore child exited with ${child.exitCode}`);
  return samples.map((ms) => ms * 1000);
}

// Word 0 counts the round: the parent makes it odd, the child even; word 1
// counts the sleepers, so that a side wakes the other only if it sleeps.
function floor() {
  const buffer = native.mapShared(8);
  const w = new Int32Array(buffer);
  const waitFor = (value) => {
    if (Atomics.load(w, 0) === value) return;
    Atomics.add(w, 1, 1);
    for (let seen = Atomics.load(w, 0); seen !== value; seen = Atomics.load(w, 0)) native.futexWait(buffer, 0, seen);
    Atomics.sub(w, 1, 1);
  };
  const post = (value) => {
    Atomics.store(w, 0, value);
    if (Atomics.load(w, 1) > 0) native.futexWake(buffer, 0, 1);
  };
  const child = new Process({
    daemon: true,
    target: () => {
      for (let i = 1; i <= total; i++) {
        waitFor(2 * i - 1);
        post(2 * i);
      }
    },
  });
  child.start();
  const samples = [];
  for (let i = 1; i <= total; i++) {
    const t0 = performance.now();
    post(2 * i - 1);
    waitFor(2 * i);
    if (i > warmup) samples.push(performance.now() - t0);
  }
  child.joinSync();
  if (child.exitCode !== 0) throw new Error(`floor child exited with ${child.exitCode}`);
  return samples.map((ms) => ms * 1000);
}

// A worker_threads program's semaphore: the count is the futex word; take a
// slot by compare-and-swap, sleep while it is 0. Words: 0 is s1, 1 is s2.
const semaphoreSource = `
function acquire(w, i) {
  for (;;) {
    const n = Atomics.load(w, i);
    if (n > 0) {
      if (Atomics.compareExchange(w, i, n, n - 1) === n) return;
    } else {
      Atomics.wait(w, i, 0);
    }
  }
}
function release(w, i) {
  Atomics.add(w, i, 1);
  Atomics.notify(w, i, 1);
}
`;
const workerSource = `${semaphoreSource}
const { workerData: { sab, total } } = require('node:worker_threads');
const w = new Int32Array(sab);
for (let i = 0; i < total; i++) {
  acquire(w, 0);
  release(w, 1);
}
`;
const { acquire, release } = new Function(`${semaphoreSource}; return { acquire, release };`)();

async function workers() {
  const sab = new SharedArrayBuffer(8);
  const w = new Int32Array(sab);
  const worker = new Worker(workerSource, { eval: true, workerData: { sab, total } });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    release(w, 0);
    acquire(w, 1);
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  await exited;
  return samples.map((ms) => ms * 1000);
}

function python() {
  const r = spawnSync('python3', [`${here}peers/py_sync.py`, 'semaphore', String(rounds)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return r.status === 0 ? JSON.parse(r.stdout).round_trip_us : null;
}

// Passes alternate between the four, so a noisy stretch of the machine's
// time lands on every side. The Worker has exited before the next fork.
const us = { nodemp: [], python: [], workers: [], floor: [] };
for (let p = 0; p < passes; p++) {
  us.nodemp.push(...nodemp());
  const py = python();
  us.python = py && us.python ? us.python.concat(py) : null;
  us.workers.push(...(await workers()));
  us.floor.push(...floor());
}

console.log(JSON.stringify({
  'Semaphore ping-pong between two processes (acquireSync), round trip': {
    unit: 'us',
    nodemp: median(us.nodemp),
    'python mp.Semaphore': us.python && median(us.python),
    'worker_threads Atomics semaphore': median(us.workers),
    'floor: a bare futex word between two Node processes (futexWait/futexWake, no spin)': median(us.floor),
  },
}));
