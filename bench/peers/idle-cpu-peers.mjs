// The worker_threads peers of bench/idle-cpu.js, each run in a process of its
// own (a fork must not see live threads). Subcommands:
//   pool PEER WINDOW_MS TICK_MS  a piscina or tinypool pool of 2 threads given
//                                one tiny task every TICK_MS for WINDOW_MS
//   blocked WINDOW_MS            a Worker blocked in Atomics.wait for WINDOW_MS
// Prints one JSON object: CPU seconds used over the window by the whole
// process (main thread and workers), for `pool` also by the main thread
// alone, and the window's actual wall time (ms).
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { threadCpuNs, tickLoop } from '../lib.js';

const require = createRequire(import.meta.url);
const [command, ...args] = process.argv.slice(2);
const task = fileURLToPath(new URL('./pool-task.mjs', import.meta.url));
const THREADS = 2;

const cpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

function open(peer) {
  const options = { filename: task, minThreads: THREADS, maxThreads: THREADS };
  if (peer === 'piscina') return new (require('piscina').Piscina)(options);
  if (peer === 'tinypool') return new (require('tinypool').Tinypool)(options);
  throw new Error(`unknown peer ${peer}`);
}

async function pool(peer, windowMs, tickMs) {
  const p = open(peer);
  // Both threads up and the task compiled before the window opens.
  await Promise.all(Array.from({ length: 100 }, (_, i) => p.run({ op: 'square', x: i })));
  const total0 = cpuSeconds();
  const main0 = threadCpuNs(process.pid);
  const wallMs = await tickLoop(windowMs / tickMs, tickMs, async (k) => {
    if ((await p.run({ op: 'square', x: k })) !== k * k) throw new Error(`${peer}: wrong result`);
  });
  const main_thread_s = (threadCpuNs(process.pid) - main0) / 1e9;
  const total_s = cpuSeconds() - total0;
  await p.destroy();
  return { total_s, main_thread_s, wall_ms: wallMs };
}

const blockedSource = `
const { parentPort, workerData } = require('node:worker_threads');
const word = new Int32Array(workerData);
parentPort.postMessage('waiting');
Atomics.wait(word, 0, 0);
`;

async function blocked(windowMs) {
  const word = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(blockedSource, { eval: true, workerData: word.buffer });
  await once(worker, 'message');
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  await sleep(windowMs);
  const cpu_s = cpuSeconds() - cpu0;
  const wallMs = performance.now() - t0;
  Atomics.store(word, 0, 1);
  Atomics.notify(word, 0);
  await once(worker, 'exit');
  return { cpu_s, wall_ms: wallMs };
}

if (command === 'pool') console.log(JSON.stringify(await pool(args[0], Number(args[1]), Number(args[2]))));
else if (command === 'blocked') console.log(JSON.stringify(await blocked(Number(args[0]))));
else throw new Error(`unknown subcommand ${command}`);
