// Value('i') incremented under its lock by 2 and 4 processes at once, against
// Python's mp.Value and against Workers incrementing a SharedArrayBuffer under
// an Atomics lock. Reported as wall time per increment (lower is better, like
// every other row) from the moment all contenders are released together to
// the moment the last one is done. Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Event, Process, Semaphore, Value } from '../dist/index.js';
import { median } from './lib.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const rounds = quick ? 3 : 5;
// Rounds much shorter than this are at the mercy of scheduler time slices.
const K = quick ? 100_000 : 200_000;
const counts = [2, 4];

function check(what, got, n) {
  if (got !== n * K) throw new Error(`${what}: final value ${got}, expected ${n} x ${K} = ${n * K}`);
}

const v = new Value('i', 0);
const ready = new Semaphore(0);
const gate = new Event();
const done = new Semaphore(0);

function increment(k) {
  const lock = v.getLock();
  for (let i = 0; i < k; i++) {
    lock.acquireSync();
    v.value += 1;
    lock.release();
  }
}

// A forked child inherits the parent's compiled code: running the loop here
// first lets every child start with it optimized, as each Worker below warms
// up its own copy before the gate, so both sides are timed in steady state.
for (let i = 0; i < 3; i++) increment(K);

// Forks happen before the clock starts: every child reports ready and waits
// at the gate, and the clock runs from opening it to the last child's done.
function nodempRound(n) {
  v.value = 0;
  gate.clear();
  const children = Array.from({ length: n }, () => new Process({
    daemon: true,
    target: () => {
      ready.release();
      gate.waitSync();
      increment(K);
      done.release();
    },
  }));
  for (const c of children) c.start();
  for (let i = 0; i < n; i++) ready.acquireSync();
  const t0 = performance.now();
  gate.set();
  for (let i = 0; i < n; i++) done.acquireSync();
  const ns = ((performance.now() - t0) * 1e6) / (n * K);
  for (const c of children) {
    c.joinSync();
    if (c.exitCode !== 0) throw new Error(`incrementing child exited with ${c.exitCode}`);
  }
  check('nodemp Value', v.value, n);
  return ns;
}

// What a worker_threads program would write: a futex mutex (0 free, 1 held,
// 2 held with sleepers) that spins briefly before Atomics.wait, guarding a
// plain read-modify-write like `v.value += 1`. Words: 0 lock, 1 value, 2 gate,
// 3 done, 4 ready.
const workerSource = `
const { workerData: { sab, k } } = require('node:worker_threads');
function acquire(w) {
  if (Atomics.compareExchange(w, 0, 0, 1) === 0) return;
  for (let spin = 0; spin < 100; spin++) {
    if (Atomics.load(w, 0) === 0 && Atomics.compareExchange(w, 0, 0, 1) === 0) return;
  }
  while (Atomics.exchange(w, 0, 2) !== 0) Atomics.wait(w, 0, 2);
}
function release(w) {
  if (Atomics.exchange(w, 0, 0) === 2) Atomics.notify(w, 0, 1);
}
function increment(w, k) {
  for (let i = 0; i < k; i++) {
    acquire(w);
    w[1] = w[1] + 1;
    release(w);
  }
}
for (let i = 0; i < 3; i++) increment(new Int32Array(new SharedArrayBuffer(8)), k);
const w = new Int32Array(sab);
Atomics.add(w, 4, 1);
Atomics.notify(w, 4);
Atomics.wait(w, 2, 0);
increment(w, k);
Atomics.add(w, 3, 1);
Atomics.notify(w, 3);
`;

function waitFor(w, index, n) {
  for (let seen; (seen = Atomics.load(w, index)) < n; ) Atomics.wait(w, index, seen);
}

async function workersRound(n) {
  const sab = new SharedArrayBuffer(20);
  const w = new Int32Array(sab);
  const workers = Array.from({ length: n }, () => new Worker(workerSource, { eval: true, workerData: { sab, k: K } }));
  const exited = workers.map((wk) => new Promise((resolve) => wk.once('exit', resolve)));
  waitFor(w, 4, n);
  const t0 = performance.now();
  Atomics.store(w, 2, 1);
  Atomics.notify(w, 2);
  waitFor(w, 3, n);
  const ns = ((performance.now() - t0) * 1e6) / (n * K);
  await Promise.all(exited);
  check('worker_threads Int32Array', w[1], n);
  return ns;
}

function python(n) {
  const r = spawnSync('python3', [`${here}peers/py_sync.py`, 'value', String(n), String(K), '1'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return r.status === 0 ? JSON.parse(r.stdout).ns_per_op[0] : null;
}

// Rounds alternate between the three, so a noisy stretch of the machine's
// time lands on every side. Workers have exited before the next fork.
const results = {};
for (const n of counts) {
  nodempRound(n); // warm-up
  await workersRound(n);
  const samples = { nodemp: [], python: [], workers: [] };
  for (let r = 0; r < rounds; r++) {
    samples.nodemp.push(nodempRound(n));
    samples.python.push(python(n));
    samples.workers.push(await workersRound(n));
  }
  results[`Value += 1 under its lock, ${n} processes contending (time per increment, lower is better)`] = {
    unit: 'ns/op',
    nodemp: median(samples.nodemp),
    [`python mp.Value, ${n} processes`]: samples.python.includes(null) ? null : median(samples.python),
    [`${n} Workers, Int32Array + Atomics lock`]: median(samples.workers),
  };
}
console.log(JSON.stringify(results));
