// Uncontended Lock and RLock acquireSync()+release(), ns per pair, against
// Python's multiprocessing and threading locks and against the lock a
// worker_threads user would write with Atomics on a SharedArrayBuffer.
// Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Lock, RLock } from '../dist/index.js';
import { median } from './lib.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const passes = 3;
const roundsPerPass = quick ? 2 : 3;
const iters = quick ? 500_000 : 2_000_000;
// Python's loop is ~10x slower per pair; fewer iterations give rounds of similar length.
const pyIters = quick ? 50_000 : 200_000;

const lock = new Lock();
const rlock = new RLock();

// A worker_threads program's lock: 0 free, 1 held, 2 held with sleepers
// (the classic futex mutex). The uncontended path is the same single
// compare-and-swap and exchange on any thread, so it runs here.
const word = new Int32Array(new SharedArrayBuffer(4));
function atomicsAcquire(w) {
  if (Atomics.compareExchange(w, 0, 0, 1) === 0) return;
  while (Atomics.exchange(w, 0, 2) !== 0) Atomics.wait(w, 0, 2);
}
function atomicsRelease(w) {
  if (Atomics.exchange(w, 0, 0) === 2) Atomics.notify(w, 0, 1);
}

// One function per lock, so V8 optimizes each loop for one lock shape only.
const loops = {
  lock(n) {
    for (let i = 0; i < n; i++) {
      lock.acquireSync();
      lock.release();
    }
  },
  rlock(n) {
    for (let i = 0; i < n; i++) {
      rlock.acquireSync();
      rlock.release();
    }
  },
  atomics(n) {
    for (let i = 0; i < n; i++) {
      atomicsAcquire(word);
      atomicsRelease(word);
    }
  },
};

function python() {
  const r = spawnSync('python3', [`${here}peers/py_sync.py`, 'lock', String(roundsPerPass), String(pyIters)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return r.status === 0 ? JSON.parse(r.stdout) : null;
}

// Rounds of the three loops alternate, and passes of them alternate with
// Python's, so a noisy stretch of the machine's time lands on every side.
const js = { lock: [], rlock: [], atomics: [] };
let py = { mp_lock: [], mp_rlock: [], threading_lock: [], threading_rlock: [] };
for (const loop of Object.values(loops)) for (let i = 0; i < 3; i++) loop(iters); // reach optimized code
for (let p = 0; p < passes; p++) {
  for (let r = 0; r < roundsPerPass; r++) {
    for (const [name, loop] of Object.entries(loops)) {
      const t0 = process.hrtime.bigint();
      loop(iters);
      js[name].push(Number(process.hrtime.bigint() - t0) / iters);
    }
  }
  const pass = python();
  if (py && pass) for (const name of Object.keys(py)) py[name].push(...pass[name]);
  else py = null;
}
const pyMedian = (name) => (py ? median(py[name]) : null);

console.log(JSON.stringify({
  'Lock acquireSync+release, uncontended': {
    unit: 'ns/op',
    nodemp: median(js.lock),
    'python mp.Lock': pyMedian('mp_lock'),
    'python threading.Lock': pyMedian('threading_lock'),
    'Atomics CAS lock on SharedArrayBuffer (worker_threads)': median(js.atomics),
  },
  'RLock acquireSync+release, uncontended': {
    unit: 'ns/op',
    nodemp: median(js.rlock),
    'python mp.RLock': pyMedian('mp_rlock'),
    'python threading.RLock': pyMedian('threading_rlock'),
  },
}));
