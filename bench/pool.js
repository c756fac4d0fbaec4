// Pool (issue #5): per-task overhead of map() with tiny tasks, apply() round
// trips, the cost of a task whose function the workers do not have yet, and
// the speed-up of a CPU-bound map, beside Python's multiprocessing.Pool and
// the worker_threads pools piscina, tinypool and workerpool (bench/package.json).
// Every row but the speed-up is a time, so peer / nodemp above 1 means nodemp
// is faster. Passes alternate nodemp and its peers; the worker_threads pools
// run in processes of their own, since a fork must not see live threads.
// Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Pool, cpuCount } from '../dist/index.js';
import { median } from './lib.js';
// The very functions the worker_threads pools run, so every pool does the same work.
import { burn, square } from './peers/pool-task.mjs';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const passes = quick ? 2 : 5;
const N = quick ? 20_000 : 100_000;
const N_PEER = quick ? 5_000 : 20_000;
const APPLY = quick ? 300 : 2000;
const APPLY_PEER = quick ? 100 : 500;
const FRESH = quick ? 3 : 10;
const CPU_TASKS = 8;
const CPU_ITERS = quick ? 2_000_000 : 10_000_000;
const CPU_ITERS_PY = quick ? 200_000 : 1_000_000;
const processes = cpuCount();


const pool = new Pool({ processes });
const items = Array.from({ length: N }, (_, i) => i);
await pool.map(square, items.slice(0, 1000), { chunksize: 1 });
await pool.map(burn, Array(2 * processes).fill(100_000), { chunksize: 1 });

const s = { cs1: [], auto: [], apply: [], applySync: [], fresh: [], single: [], cpu: [] };
const peers = { piscina: [], tinypool: [], workerpool: [] };
const py = { map_cs1_us: [], map_default_us: [], apply_us: [], cpu_single_ms: [], cpu_pool_ms: [] };
const peersInstalled = existsSync(`${here}node_modules/piscina`);
if (!peersInstalled) process.stderr.write('bench/pool.js: run `npm install` in bench/ for the piscina, tinypool and workerpool rows\n');

function check(r, what) {
  if (r[r.length - 1] !== (r.length - 1) ** 2) throw new Error(`${what}: wrong result`);
}

for (let pass = 0; pass < passes; pass++) {
  let t0 = performance.now();
  check(await pool.map(square, items, { chunksize: 1 }), 'map chunksize 1');
  s.cs1.push(((performance.now() - t0) * 1000) / N);
  t0 = performance.now();
  check(await pool.map(square, items), 'map');
  s.auto.push(((performance.now() - t0) * 1000) / N);
  for (let i = 0; i < APPLY; i++) {
    t0 = performance.now();
    const r = await pool.apply(square, [i]);
    s.apply.push((performance.now() - t0) * 1000);
    if (r !== i * i) throw new Error('apply: wrong result');
  }
  for (let i = 0; i < APPLY; i++) {
    t0 = performance.now();
    pool.applySync(square, [i]);
    s.applySync.push((performance.now() - t0) * 1000);
  }
  // On a pool of its own, so the other rows keep their warm workers.
  const renewing = new Pool({ processes });
  await renewing.apply(square, [1]);
  for (let i = 0; i < FRESH; i++) {
    // A new function object: no worker has it, so the pool forks a fresh one.
    const fresh = new Function('x', `return x + ${i}`);
    t0 = performance.now();
    await renewing.apply(fresh, [1]);
    s.fresh.push(performance.now() - t0);
  }
  await renewing.terminate();
  const work = Array(CPU_TASKS).fill(CPU_ITERS);
  t0 = performance.now();
  const single = work.map(burn);
  s.single.push(performance.now() - t0);
  t0 = performance.now();
  const parallel = await pool.map(burn, work, { chunksize: 1 });
  s.cpu.push(performance.now() - t0);
  if (parallel.join() !== single.join()) throw new Error('CPU-bound map: wrong result');

  if (peersInstalled) {
    for (const peer of Object.keys(peers)) {
      const r = spawnSync(process.execPath, [`${here}peers/pool-peers.mjs`, peer, N_PEER, APPLY_PEER, CPU_TASKS, CPU_ITERS].map(String), {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      if (r.status !== 0) throw new Error(`${peer} failed with status ${r.status}`);
      peers[peer].push(JSON.parse(r.stdout));
    }
  }
  const r = spawnSync('python3', [`${here}peers/py_pool.py`, '1', N_PEER, APPLY_PEER, CPU_TASKS, CPU_ITERS_PY].map(String), {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status === 0) {
    const got = JSON.parse(r.stdout);
    for (const k of Object.keys(py)) py[k].push(...got[k]);
  }
}
await pool.terminate();

const peerMedian = (peer, key) => (peers[peer].length ? median(peers[peer].flatMap((x) => x[key])) : null);
const pyMedian = (key) => (py[key].length ? median(py[key]) : null);
const pySpeedup = py.cpu_pool_ms.length ? median(py.cpu_single_ms.map((single, i) => single / py.cpu_pool_ms[i])) : null;

console.log(
  JSON.stringify({
    [`Pool.map, tiny tasks, chunksize 1, ${processes} workers, time per task`]: {
      unit: 'us',
      nodemp: median(s.cs1),
      'python mp.Pool.map, chunksize=1': pyMedian('map_cs1_us'),
      'piscina run() per task': peerMedian('piscina', 'map_cs1_us'),
      'tinypool run() per task': peerMedian('tinypool', 'map_cs1_us'),
      'workerpool exec() per task': peerMedian('workerpool', 'map_cs1_us'),
    },
    [`Pool.map, tiny tasks, default chunksize, time per task`]: {
      unit: 'us',
      nodemp: median(s.auto),
      'python mp.Pool.map, default chunksize': pyMedian('map_default_us'),
    },
    'Pool.apply round trip (await apply())': {
      unit: 'us',
      nodemp: median(s.apply),
      'python apply_async().get()': pyMedian('apply_us'),
      'piscina await run()': peerMedian('piscina', 'apply_us'),
      'tinypool await run()': peerMedian('tinypool', 'apply_us'),
      'workerpool await exec()': peerMedian('workerpool', 'apply_us'),
    },
    'Pool.applySync round trip': { unit: 'us', nodemp: median(s.applySync) },
    'Pool.apply of a function no worker has (forks a fresh worker for it)': { unit: 'ms', nodemp: median(s.fresh) },
    [`CPU-bound map, ${CPU_TASKS} tasks on ${processes} workers: wall time`]: {
      unit: 'ms',
      nodemp: median(s.cpu),
      'the same work in one process': median(s.single),
      'piscina': peerMedian('piscina', 'cpu_pool_ms'),
      'tinypool': peerMedian('tinypool', 'cpu_pool_ms'),
      'workerpool': peerMedian('workerpool', 'cpu_pool_ms'),
    },
    'CPU-bound map speed-up over one process (higher is better)': {
      unit: 'x',
      better: 'higher',
      nodemp: median(s.single.map((single, i) => single / s.cpu[i])),
      'python mp.Pool speed-up over one Python process': pySpeedup,
    },
  }),
);
