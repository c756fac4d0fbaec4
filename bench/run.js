// npm run bench: runs every workload with its peers in this run, prints the
// table and writes bench/results/latest.json.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { chart } from './chart.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const flags = quick ? ['--quick'] : [];

// Every workload this run starts, in order, so that progress can say how far it is.
const HEAP_MB = [50, 500, 1024];
const WORKLOADS = 1 + HEAP_MB.length * 2 + 4 + 2 + 2 + 2;
let started = 0;
const runStarted = performance.now();
// A long workload says it still runs this often, so a run never goes quiet for minutes.
const HEARTBEAT_MS = 20_000;

function progress(name) {
  started += 1;
  const elapsed = ((performance.now() - runStarted) / 1000).toFixed(0);
  process.stderr.write(`bench: [${started}/${WORKLOADS}] ${name} (${elapsed} s into the run)\n`);
}

// A workload that has not finished by then has hung: CI must end with a
// failure that says where, not run out its clock.
const WORKLOAD_TIMEOUT_MS = quick ? 180_000 : 900_000;

/**
 * Runs one workload script in its own process group and returns the JSON
 * object it printed last. On a timeout it prints what every process of the
 * group is doing (state and kernel wait channel), kills the group and throws.
 */
async function runWorkload(script, args = [], nodeArgs = []) {
  const name = [script, ...args].join(' ');
  progress(name);
  const startedAt = performance.now();
  const heartbeat = setInterval(() => {
    process.stderr.write(`bench:     ${name} still running, ${((performance.now() - startedAt) / 1000).toFixed(0)} s so far\n`);
  }, HEARTBEAT_MS);
  const child = spawn(process.execPath, ['--single-threaded', ...nodeArgs, `${here}${script}`, ...args, ...flags], {
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    const ps = spawnSync('ps', ['-o', 'pid,ppid,stat,wchan:24,etime,args', '-g', String(child.pid)], { encoding: 'utf8' });
    process.stderr.write(`bench: ${name} still running after ${WORKLOAD_TIMEOUT_MS / 1000} s; its processes:\n${ps.stdout ?? ps.error}\n`);
    process.kill(-child.pid, 'SIGKILL');
  }, WORKLOAD_TIMEOUT_MS);
  const [code, signal] = await once(child, 'close');
  clearTimeout(timer);
  clearInterval(heartbeat);
  // Whatever the workload forked and left behind goes with it.
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {}
  process.stderr.write(`bench: ${name} took ${((performance.now() - startedAt) / 1000).toFixed(1)} s\n`);
  if (timedOut) throw new Error(`${name} timed out`);
  if (code !== 0) throw new Error(`${name} failed with ${signal ?? `status ${code}`}`);
  return JSON.parse(out.trim().split('\n').pop());
}

const results = { ...(await runWorkload('process-start.js')) };

// Python's fork with the same resident size, as a measure of what the kernel
// itself costs on this machine for copying that many page tables.
function pythonForkAt(rssMb) {
  progress(`python fork at ${rssMb} MB`);
  const r = spawnSync('python3', [`${here}peers/py_fork_heap.py`, String(rssMb), quick ? '5' : '15'], {
    encoding: 'utf8',
    timeout: WORKLOAD_TIMEOUT_MS,
  });
  return r.status === 0 ? JSON.parse(r.stdout).median_ms : null;
}
const heap = [];
for (const mb of HEAP_MB) {
  const h = await runWorkload('fork-heap.js', [String(mb)], ['--max-old-space-size=4096']);
  heap.push({ ...h, pythonMs: pythonForkAt(h.rssMb) });
}
for (const h of heap) {
  results[`fork start->join, parent heap ${h.mb} MB (RSS ${h.rssMb} MB)`] = {
    unit: 'ms',
    nodemp: h.ms,
    [`python mp fork, ${h.rssMb} MB touched`]: h.pythonMs,
  };
}
const [small, , large] = heap;
const perGb = (msSmall, msLarge) =>
  msSmall === null || msLarge === null ? null : (msLarge - msSmall) / ((large.rssMb - small.rssMb) / 1024);
results['fork cost growth per GB of parent RSS'] = {
  unit: 'ms/GB',
  nodemp: perGb(small.ms, large.ms),
  'python mp fork': perGb(small.pythonMs, large.pythonMs),
};

// Synchronization primitives (issue #3). Every row is a time, so every
// peer / nodemp ratio above 1 means nodemp is faster.
for (const script of ['sync-lock.js', 'sync-value.js', 'sync-event.js', 'sync-semaphore.js']) {
  Object.assign(results, await runWorkload(script));
}

// Queues and pipes (issue #4): throughput, round trips and bandwidth, also
// all times, beside Python's mp.Queue and mp.Pipe, worker_threads and
// child_process IPC.
for (const script of ['queue.js', 'pipe.js']) {
  Object.assign(results, await runWorkload(script));
}

// Listener/Client connections and Manager proxies (issue #14), beside
// Python's multiprocessing.connection and Manager(). A nodemp without a
// Manager yet gives null for its value in those rows (n/a).
for (const script of ['connection.js', 'manager.js']) {
  Object.assign(results, await runWorkload(script));
}

// Pool (issue #5): beside Python's mp.Pool, piscina, tinypool and workerpool.
Object.assign(results, await runWorkload('pool.js'));
Object.assign(results, await runWorkload('start-methods.js'));

const python = spawnSync('python3', ['--version'], { encoding: 'utf8' }).stdout.trim();
const meta = {
  date: new Date().toISOString().slice(0, 10),
  machine: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}`,
  node: process.version,
  python,
  quick,
};

function fmt(x) {
  if (x === null || x === undefined) return 'n/a';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

const lines = [`nodemp benchmarks, ${meta.date}, ${meta.machine}, Node ${meta.node}, ${meta.python}${quick ? ' (quick mode)' : ''}`, ''];
lines.push('| metric | unit | nodemp | peer | peer value | peer / nodemp |', '|---|---|---|---|---|---|');
for (const [metric, row] of Object.entries(results)) {
  const peers = Object.entries(row).filter(([k]) => k !== 'unit' && k !== 'nodemp');
  if (peers.length === 0) lines.push(`| ${metric} | ${row.unit} | ${fmt(row.nodemp)} | | | |`);
  for (const [i, [peer, value]] of peers.entries()) {
    const ratio = value === null || row.nodemp === null ? 'n/a' : `${(value / row.nodemp).toFixed(1)}x`;
    lines.push(`| ${i === 0 ? metric : ''} | ${i === 0 ? row.unit : ''} | ${i === 0 ? fmt(row.nodemp) : ''} | ${peer} | ${fmt(value)} | ${ratio} |`);
  }
}
const table = lines.join('\n');
console.log(table);
mkdirSync(`${here}results`, { recursive: true });
writeFileSync(`${here}results/latest.json`, JSON.stringify({ meta, results }, null, 2) + '\n');
// The chart of the headline rows: bench/chart.svg (embedded in the README) from a full run.
const svg = chart(results, `nodemp against its peers, ${meta.date}, ${meta.machine}, Node ${meta.node}${quick ? ' (quick mode)' : ''}`);
if (svg !== null) writeFileSync(quick ? `${here}results/chart.svg` : `${here}chart.svg`, svg);
if (!quick) {
  writeFileSync(
    `${here}RESULTS.md`,
    `# Benchmark results\n\nRecorded by \`npm run bench\` (medians; ratios are peer time / nodemp time, measured in the same run).\n\n![The headline rows as a chart](chart.svg)\n\n${table}\n`,
  );
}
