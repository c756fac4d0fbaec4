// npm run bench: runs every workload with its peers in this run, prints the
// table and writes bench/results/latest.json.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const flags = quick ? ['--quick'] : [];

function runWorkload(script, args = [], nodeArgs = []) {
  const r = spawnSync(process.execPath, ['--single-threaded', ...nodeArgs, `${here}${script}`, ...args, ...flags], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`${script} failed with status ${r.status}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const results = { ...runWorkload('process-start.js') };

// Python's fork with the same resident size, as a measure of what the kernel
// itself costs on this machine for copying that many page tables.
function pythonForkAt(rssMb) {
  const r = spawnSync('python3', [`${here}peers/py_fork_heap.py`, String(rssMb), quick ? '5' : '15'], { encoding: 'utf8' });
  return r.status === 0 ? JSON.parse(r.stdout).median_ms : null;
}
const heap = [50, 500, 1024].map((mb) => {
  const h = runWorkload('fork-heap.js', [String(mb)], ['--max-old-space-size=4096']);
  return { ...h, pythonMs: pythonForkAt(h.rssMb) };
});
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
  Object.assign(results, runWorkload(script));
}

// Queues and pipes (issue #4): throughput, round trips and bandwidth, also
// all times, beside Python's mp.Queue and mp.Pipe, worker_threads and
// child_process IPC.
for (const script of ['queue.js', 'pipe.js']) {
  Object.assign(results, runWorkload(script));
}

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
    const ratio = value === null ? 'n/a' : `${(value / row.nodemp).toFixed(1)}x`;
    lines.push(`| ${i === 0 ? metric : ''} | ${i === 0 ? row.unit : ''} | ${i === 0 ? fmt(row.nodemp) : ''} | ${peer} | ${fmt(value)} | ${ratio} |`);
  }
}
const table = lines.join('\n');
console.log(table);
mkdirSync(`${here}results`, { recursive: true });
writeFileSync(`${here}results/latest.json`, JSON.stringify({ meta, results }, null, 2) + '\n');
if (!quick) writeFileSync(`${here}RESULTS.md`, `# Benchmark results\n\nRecorded by \`npm run bench\` (medians; ratios are peer time / nodemp time, measured in the same run).\n\n${table}\n`);
