// Event set -> wake latency across processes. Hot: one process's set() and
// the other's wake are timed by the same clock through a ping-pong: the parent
// sets A and waits on B, the child wakes on A, clears it and sets B. Half the
// round trip is the one-way latency (set -> waiter running), median over many
// round trips. Peers: Python's mp.Event, and two threads ping-ponging with
// Atomics.wait/notify (Atomics.waitAsync for the async row). Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Event, Process } from '../dist/index.js';
import { native } from '../dist/native.js';
import { median } from './lib.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const passes = 3;
const rounds = quick ? 400 : 4000; // per pass
const warmup = 200;
const total = warmup + rounds;

async function nodemp(async) {
  const a = new Event();
  const b = new Event();
  const child = new Process({
    daemon: true,
    target: async () => {
      for (let i = 0; i < total; i++) {
        if (async) await a.wait();
        else a.waitSync();
        a.clear();
        b.set();
      }
    },
  });
  child.start();
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    a.set();
    if (async) await b.wait();
    else b.waitSync();
    b.clear();
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  child.joinSync();
  if (child.exitCode !== 0) throw new Error(`event child exited with ${child.exitCode}`);
  return samples.map((ms) => (ms * 1000) / 2);
}

// The same ping-pong between this thread and a Worker; words: 0 is A, 1 is B.
// A pending Atomics.waitAsync does not keep Node's event loop alive, so an
// idle interval does, on both sides. Node 20's Atomics.waitAsync now and then
// misses a notify here (twice in about fifteen runs of this script on
// 2026-12-02 the async row hung for good): each async wait gives up after
// WAIT_ASYNC_MS and looks again, which costs that one sample the delay and
// leaves the median alone.
const WAIT_ASYNC_MS = 100;
const workerSource = `
const { workerData: { sab, total, async } } = require('node:worker_threads');
const w = new Int32Array(sab);
const alive = setInterval(() => {}, 1000);
(async () => {
  for (let i = 0; i < total; i++) {
    if (async) while (Atomics.load(w, 0) === 0) await Atomics.waitAsync(w, 0, 0, ${WAIT_ASYNC_MS}).value;
    else Atomics.wait(w, 0, 0);
    Atomics.store(w, 0, 0);
    Atomics.store(w, 1, 1);
    Atomics.notify(w, 1);
  }
  clearInterval(alive);
})();
`;

async function workers(async) {
  const sab = new SharedArrayBuffer(8);
  const w = new Int32Array(sab);
  const worker = new Worker(workerSource, { eval: true, workerData: { sab, total, async } });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const alive = setInterval(() => {}, 1000);
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    Atomics.store(w, 0, 1);
    Atomics.notify(w, 0);
    if (async) while (Atomics.load(w, 1) === 0) await Atomics.waitAsync(w, 1, 0, WAIT_ASYNC_MS).value;
    else Atomics.wait(w, 1, 0);
    Atomics.store(w, 1, 0);
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  clearInterval(alive);
  await exited;
  return samples.map((ms) => (ms * 1000) / 2);
}

// A waiter that has been asleep for a while (past any spinning) is woken by
// the kernel's scheduler: the cold wake. The setter stamps a shared monotonic
// clock (hrtime is CLOCK_MONOTONIC in every process and thread) just before
// set(); the woken side subtracts it. The ping-pong rows above are the hot
// case, where the partner answers while the waiter is still spinning.
const coldRounds = quick ? 50 : 300;
const pause = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function nodempCold() {
  const go = new Event();
  const done = new Event();
  const stamp = new BigInt64Array(native.mapShared(16));
  const child = new Process({
    daemon: true,
    target: () => {
      for (let i = 0; i < coldRounds; i++) {
        go.waitSync();
        stamp[1] = process.hrtime.bigint() - stamp[0];
        go.clear();
        done.set();
      }
    },
  });
  child.start();
  const samples = [];
  for (let i = 0; i < coldRounds; i++) {
    pause(2);
    stamp[0] = process.hrtime.bigint();
    go.set();
    done.waitSync();
    done.clear();
    samples.push(Number(stamp[1]) / 1000);
  }
  child.joinSync();
  return samples;
}

// The floor under nodempCold(): the same two Node processes and the same
// pause, with nothing of Event's between them: a bare futex word, woken and
// waited on through the addon's futexWait/futexWake. Whatever this costs
// beyond a thread's wake-up is the kernel's and the machine's, paid by any
// wake of another Node process.
function rawCold() {
  const buffer = native.mapShared(32);
  const w = new Int32Array(buffer, 0, 2);
  const stamp = new BigInt64Array(buffer, 16, 2);
  const child = new Process({
    daemon: true,
    target: () => {
      for (let i = 0; i < coldRounds; i++) {
        while (Atomics.load(w, 0) === 0) native.futexWait(buffer, 0, 0);
        stamp[1] = process.hrtime.bigint() - stamp[0];
        Atomics.store(w, 0, 0);
        Atomics.store(w, 1, 1);
        native.futexWake(buffer, 4, 1);
      }
    },
  });
  child.start();
  const samples = [];
  for (let i = 0; i < coldRounds; i++) {
    pause(2);
    stamp[0] = process.hrtime.bigint();
    Atomics.store(w, 0, 1);
    native.futexWake(buffer, 0, 1);
    while (Atomics.load(w, 1) === 0) native.futexWait(buffer, 4, 0);
    Atomics.store(w, 1, 0);
    samples.push(Number(stamp[1]) / 1000);
  }
  child.joinSync();
  return samples;
}

const coldWorkerSource = `
const { workerData: { sab, total } } = require('node:worker_threads');
const w = new Int32Array(sab);
const stamp = new BigInt64Array(sab, 8, 2);
for (let i = 0; i < total; i++) {
  Atomics.wait(w, 0, 0);
  stamp[1] = process.hrtime.bigint() - stamp[0];
  Atomics.store(w, 0, 0);
  Atomics.store(w, 1, 1);
  Atomics.notify(w, 1);
}
`;

async function workersCold() {
  const sab = new SharedArrayBuffer(24);
  const w = new Int32Array(sab);
  const stamp = new BigInt64Array(sab, 8, 2);
  const worker = new Worker(coldWorkerSource, { eval: true, workerData: { sab, total: coldRounds } });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  const samples = [];
  for (let i = 0; i < coldRounds; i++) {
    pause(2);
    stamp[0] = process.hrtime.bigint();
    Atomics.store(w, 0, 1);
    Atomics.notify(w, 0);
    Atomics.wait(w, 1, 0);
    Atomics.store(w, 1, 0);
    samples.push(Number(stamp[1]) / 1000);
  }
  await exited;
  return samples;
}

function python() {
  const r = spawnSync('python3', [`${here}peers/py_sync.py`, 'event', String(rounds)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return r.status === 0 ? JSON.parse(r.stdout).one_way_us : null;
}

// Passes alternate between all of them, so a noisy stretch of the machine's
// time lands on every side. Each Worker has exited before the next fork.
const us = { nodempSync: [], nodempAsync: [], python: [], workersSync: [], workersAsync: [], nodempCold: [], workersCold: [], rawCold: [] };
for (let p = 0; p < passes; p++) {
  us.nodempCold.push(...nodempCold());
  us.workersCold.push(...(await workersCold()));
  us.rawCold.push(...rawCold());
  us.nodempSync.push(...(await nodemp(false)));
  us.nodempAsync.push(...(await nodemp(true)));
  const py = python();
  us.python = py && us.python ? us.python.concat(py) : null;
  us.workersSync.push(...(await workers(false)));
  us.workersAsync.push(...(await workers(true)));
}

console.log(JSON.stringify({
  'Event set -> waiter running, other process (waitSync), one-way': {
    unit: 'us',
    nodemp: median(us.nodempSync),
    'python mp.Event': us.python && median(us.python),
    'worker_threads Atomics.wait/notify': median(us.workersSync),
  },
  'Event set -> waiter asleep for 2 ms running (cold wake, waitSync), one-way': {
    unit: 'us',
    nodemp: median(us.nodempCold),
    'worker_threads Atomics.wait/notify, cold': median(us.workersCold),
    'floor: a bare futex word between two Node processes (futexWait/futexWake), cold': median(us.rawCold),
  },
  'Event set -> waiter running, other process (await wait()), one-way': {
    unit: 'us',
    nodemp: median(us.nodempAsync),
    'worker_threads Atomics.waitAsync/notify': median(us.workersAsync),
  },
}));
