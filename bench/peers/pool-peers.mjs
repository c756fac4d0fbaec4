// The worker_threads pools that bench/pool.js compares with nodemp's Pool,
// each run in a process of its own (a fork must not see live threads).
// Arguments: PEER N APPLY_ROUNDS CPU_TASKS CPU_ITERS. Prints one JSON object:
// per-task time of N tiny tasks submitted at once (us), sequential round
// trips (us), and the wall time of the CPU-bound tasks (ms).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';

const require = createRequire(import.meta.url);
const [peer, n, applyRounds, cpuTasks, cpuIters] = [process.argv[2], ...process.argv.slice(3).map(Number)];
const task = fileURLToPath(new URL('./pool-task.mjs', import.meta.url));
const threads = availableParallelism();

function open() {
  if (peer === 'piscina') {
    const { Piscina } = require('piscina');
    const pool = new Piscina({ filename: task, minThreads: threads, maxThreads: threads });
    return { run: (op, x) => pool.run({ op, x }), close: () => pool.destroy() };
  }
  if (peer === 'tinypool') {
    const { Tinypool } = require('tinypool');
    const pool = new Tinypool({ filename: task, minThreads: threads, maxThreads: threads });
    return { run: (op, x) => pool.run({ op, x }), close: () => pool.destroy() };
  }
  if (peer === 'workerpool') {
    const workerpool = require('workerpool');
    const pool = workerpool.pool(fileURLToPath(new URL('./workerpool-task.mjs', import.meta.url)), {
      minWorkers: threads,
      maxWorkers: threads,
      workerType: 'thread',
    });
    return { run: (op, x) => pool.exec(op === 'burn' ? 'burn' : 'square', [x]), close: () => pool.terminate() };
  }
  throw new Error(`unknown peer ${peer}`);
}

const pool = open();
const items = Array.from({ length: n }, (_, i) => i);
await Promise.all(items.slice(0, 1000).map((x) => pool.run('square', x)));
let t0 = performance.now();
const squares = await Promise.all(items.map((x) => pool.run('square', x)));
const mapUs = ((performance.now() - t0) * 1000) / n;
if (squares[n - 1] !== (n - 1) ** 2) throw new Error(`${peer}: wrong result`);
const apply = [];
for (let i = 0; i < applyRounds; i++) {
  t0 = performance.now();
  await pool.run('square', i);
  apply.push((performance.now() - t0) * 1000);
}
t0 = performance.now();
await Promise.all(Array.from({ length: cpuTasks }, () => pool.run('burn', cpuIters)));
const cpuMs = performance.now() - t0;
await pool.close();
console.log(JSON.stringify({ map_cs1_us: mapUs, apply_us: apply, cpu_pool_ms: cpuMs }));
