// The CPU that waiting costs (issue #15): on a busy machine, a pool that is
// open but nearly idle, or a process blocked on an empty queue, should take
// next to none from the programs that have work. Rows: a Pool of 2 given one
// tiny task every millisecond (what all its processes use, and what the
// submitting process uses), and a process blocked in getSync() on an empty
// Queue; beside Python's multiprocessing, piscina and tinypool, and a Worker
// blocked in Atomics.wait. Every row is CPU seconds over the same window, so
// lower is better and peer / nodemp above 1 means nodemp burns less. CPU is
// the scheduler's count (/proc/<pid>/task/*/schedstat, or process.cpuUsage()
// for a process's own). Passes alternate nodemp and its peers; the
// worker_threads peers run in processes of their own (a fork must not see live
// threads), and nothing of one measurement runs during another's window.
// Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Event, Pool, Process, Queue } from '../dist/index.js';
import { median, processCpuNs, pythonPeer, threadCpuNs, tickLoop } from './lib.js';
// The very function the worker_threads pools run.
import { square } from './peers/pool-task.mjs';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
// How long each measurement watches (the issue asks for 10 s).
const WINDOW_S = quick ? 2 : 10;
const TICK_MS = 1;
const PASSES = quick ? 1 : 3;
const PROCESSES = 2;
const windowMs = WINDOW_S * 1000;

const cpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

async function nodempPool() {
  const pool = new Pool({ processes: PROCESSES });
  // Both workers forked and the task known to them before the window opens.
  await pool.map(square, Array.from({ length: 100 }, (_, i) => i), { chunksize: 1 });
  const pids = pool.pids;
  if (pids.length !== PROCESSES) throw new Error(`the pool has ${pids.length} workers where ${PROCESSES} were asked for`);
  const workers0 = pids.reduce((ns, pid) => ns + processCpuNs(pid), 0);
  const main0 = cpuSeconds();
  const wallMs = await tickLoop(windowMs / TICK_MS, TICK_MS, async (k) => {
    if ((await pool.apply(square, [k])) !== k * k) throw new Error('Pool.apply: wrong result');
  });
  const main = cpuSeconds() - main0;
  const workers = (pids.reduce((ns, pid) => ns + processCpuNs(pid), 0) - workers0) / 1e9;
  if (pool.pids.join() !== pids.join()) throw new Error('the pool replaced a worker during the window');
  await pool.terminate();
  process.stderr.write(`idle-cpu: nodemp Pool ticks took ${(wallMs / 1000).toFixed(2)} s\n`);
  return { total: main + workers, main };
}

async function nodempBlocked() {
  const waiting = new Event();
  const q = new Queue();
  const child = new Process({
    daemon: true,
    target: () => {
      waiting.set();
      q.getSync();
    },
  });
  child.start();
  await waiting.wait();
  const cpu0 = processCpuNs(child.pid);
  await sleep(windowMs);
  const cpu = (processCpuNs(child.pid) - cpu0) / 1e9;
  q.putSync('go');
  await child.join();
  if (child.exitCode !== 0) throw new Error(`the blocked child exited with ${child.exitCode}`);
  return cpu;
}

const peersInstalled = existsSync(`${here}node_modules/piscina`);
if (!peersInstalled) process.stderr.write('bench/idle-cpu.js: run `npm install` in bench/ for the piscina and tinypool rows\n');

function nodePeer(args) {
  const r = spawnSync(process.execPath, [`${here}peers/idle-cpu-peers.mjs`, ...args.map(String)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`idle-cpu-peers.mjs ${args.join(' ')} failed with ${r.signal ?? `status ${r.status}`}`);
  return JSON.parse(r.stdout);
}

const s = {
  nodemp: { total: [], main: [], blocked: [] },
  piscina: { total: [], main: [] },
  tinypool: { total: [], main: [] },
  python: { total: [], main: [], blocked: [] },
  worker: { blocked: [] },
};
let havePython = true;

async function measureNodemp() {
  const pool = await nodempPool();
  s.nodemp.total.push(pool.total);
  s.nodemp.main.push(pool.main);
  s.nodemp.blocked.push(await nodempBlocked());
}

function measurePeers() {
  if (peersInstalled) {
    for (const peer of ['piscina', 'tinypool']) {
      const r = nodePeer(['pool', peer, windowMs, TICK_MS]);
      process.stderr.write(`idle-cpu: ${peer} ticks took ${(r.wall_ms / 1000).toFixed(2)} s\n`);
      s[peer].total.push(r.total_s);
      s[peer].main.push(r.main_thread_s);
    }
  }
  s.worker.blocked.push(nodePeer(['blocked', windowMs]).cpu_s);
  const py = pythonPeer('py_idle_cpu.py', [
    ['pool', windowMs, TICK_MS],
    ['blocked', windowMs],
  ]);
  if (py === null) havePython = false;
  else {
    process.stderr.write(`idle-cpu: python mp.Pool ticks took ${(py[0].wall_ms / 1000).toFixed(2)} s\n`);
    s.python.total.push(py[0].total_s);
    s.python.main.push(py[0].parent_s);
    s.python.blocked.push(py[1].cpu_s);
  }
}

for (let pass = 0; pass < PASSES; pass++) {
  process.stderr.write(`idle-cpu: pass ${pass + 1} of ${PASSES}, ${WINDOW_S} s windows\n`);
  if (pass % 2 === 0) {
    await measureNodemp();
    measurePeers();
  } else {
    measurePeers();
    await measureNodemp();
  }
}

const med = (xs) => (xs.length ? median(xs) : null);
const py = (xs) => (havePython ? med(xs) : null);
const every = `one tiny task every ${TICK_MS} ms for ${WINDOW_S} s`;

console.log(
  JSON.stringify({
    [`CPU used by a Pool of ${PROCESSES} given ${every} (all its processes)`]: {
      unit: 'CPU s',
      nodemp: med(s.nodemp.total),
      'python mp.Pool(2), parent and workers': py(s.python.total),
      'piscina, 2 threads (whole process)': med(s.piscina.total),
      'tinypool, 2 threads (whole process)': med(s.tinypool.total),
    },
    [`CPU used by the process that submits to a Pool of ${PROCESSES} given ${every}`]: {
      unit: 'CPU s',
      nodemp: med(s.nodemp.main),
      'python mp.Pool(2) parent (main thread and its handler threads)': py(s.python.main),
      'piscina main thread': med(s.piscina.main),
      'tinypool main thread': med(s.tinypool.main),
    },
    [`CPU used by a process blocked in getSync() on an empty Queue for ${WINDOW_S} s`]: {
      unit: 'CPU s',
      nodemp: med(s.nodemp.blocked),
      'python child blocked in mp.Queue().get()': py(s.python.blocked),
      'Worker blocked in Atomics.wait (whole process)': med(s.worker.blocked),
    },
  }),
);
