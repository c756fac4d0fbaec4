// npm run bench: runs every workload with its peers in this run, prints the
// table and writes bench/results/latest.json (latest-busy.json with --busy).
// A full run also records its results in bench/results/idle.json or busy.json
// and rebuilds bench/RESULTS.md from both, so the idle and busy tables sit
// side by side.
//
// --busy: one CPU-bound process per core runs beside every workload, as on a
// server whose cores are rarely free; nodemp and its peers meet the same load.
// --busy=N: N of them (a full run records only the default).
// --only a,b: just these workload scripts (for trying a change; writes no record).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { chart } from './chart.js';

const quick = process.argv.includes('--quick');
const busyArg = process.argv.find((a) => a === '--busy' || a.startsWith('--busy='));
const busy = busyArg !== undefined;
const burnerCount = busyArg?.startsWith('--busy=') ? Number(busyArg.slice(7)) : cpus().length;
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt === -1 ? null : new Set((process.argv[onlyAt + 1] ?? '').split(','));
const here = fileURLToPath(new URL('.', import.meta.url));
const flags = quick ? ['--quick'] : [];

/**
 * The load of --busy: one process spinning per core. Each checks now and
 * then that this run still lives, so a run killed outright (SIGKILL, a CI
 * timeout) leaves no spinner behind.
 */
function startBurners() {
  const check = `const p = ${process.pid}; for (let i = 1; ; i++) if ((i & 0xffffff) === 0 && process.ppid !== p) process.exit(0);`;
  const burners = Array.from({ length: burnerCount }, () => spawn(process.execPath, ['-e', check], { stdio: 'ignore' }));
  const stop = () => {
    for (const b of burners) b.kill('SIGKILL');
  };
  process.on('exit', stop);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      stop();
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    });
  }
  return stop;
}
const stopBurners = busy ? startBurners() : () => {};

// Every workload this run starts, in order, so that progress can say how far it is.
const HEAP_MB = [50, 500, 1024];
// On Linux the start rows are also taken under node --use-largepages=on.
const START_RUNS = process.platform === 'linux' ? 2 : 1;
const WORKLOADS = only
  ? only.size + (only.has('process-start.js') ? START_RUNS - 1 : 0)
  : START_RUNS + HEAP_MB.length * 2 + 4 + 2 + 2 + 4 + 1;
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

const want = (script) => only === null || only.has(script);
const results = {};
if (want('process-start.js')) {
  Object.assign(results, await runWorkload('process-start.js'));
  if (START_RUNS === 2) Object.assign(results, await runWorkload('process-start.js', ['--large-pages'], ['--use-largepages=on']));
}

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
if (want('fork-heap.js')) {
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
}

// Synchronization primitives (issue #3). Every row is a time, so every
// peer / nodemp ratio above 1 means nodemp is faster.
for (const script of ['sync-lock.js', 'sync-value.js', 'sync-event.js', 'sync-semaphore.js']) {
  if (want(script)) Object.assign(results, await runWorkload(script));
}

// Queues and pipes (issue #4): throughput, round trips and bandwidth, also
// all times, beside Python's mp.Queue and mp.Pipe, worker_threads and
// child_process IPC.
for (const script of ['queue.js', 'pipe.js']) {
  if (want(script)) Object.assign(results, await runWorkload(script));
}

// Listener/Client connections and Manager proxies (issue #14), beside
// Python's multiprocessing.connection and Manager(). A nodemp without a
// Manager yet gives null for its value in those rows (n/a).
for (const script of ['connection.js', 'manager.js']) {
  if (want(script)) Object.assign(results, await runWorkload(script));
}

// Pool (issue #5): beside Python's mp.Pool, piscina, tinypool and workerpool;
// then what a pool costs where it matters (issue #15): the CPU an idle pool
// and a blocked process burn, and a node:http service driven by autocannon.
for (const script of ['pool.js', 'start-methods.js', 'idle-cpu.js', 'service.js']) {
  if (want(script)) Object.assign(results, await runWorkload(script));
}

// ClusterPool (issue #18) on a loopback redis-server, beside BullMQ doing the
// same task as one job per item, plain and sandboxed.
if (want('cluster.js')) Object.assign(results, await runWorkload('cluster.js'));
stopBurners();

const python = spawnSync('python3', ['--version'], { encoding: 'utf8' }).stdout.trim();
const meta = {
  date: new Date().toISOString().slice(0, 10),
  machine: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}`,
  node: process.version,
  python,
  quick,
  busy,
};

function fmt(x) {
  if (x === null || x === undefined) return 'n/a';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

const BUSY_NOTE = `one CPU-bound process per core (${cpus().length}) running beside every workload`;
const busyNote = burnerCount === cpus().length ? BUSY_NOTE : `${burnerCount} CPU-bound processes running beside every workload`;
const title = (m) => `nodemp benchmarks, ${m.date}, ${m.machine}, Node ${m.node}, ${m.python}${m.quick ? ' (quick mode)' : ''}`;

/** Peer / nodemp for a time, nodemp / peer for a rate (a row with better: 'higher'): above 1, nodemp is ahead. */
function ratio(row, value) {
  if (value === null || value === undefined || row.nodemp === null || row.nodemp === undefined) return 'n/a';
  return `${(row.better === 'higher' ? row.nodemp / value : value / row.nodemp).toFixed(1)}x`;
}
const peersOf = (row) => Object.entries(row).filter(([k]) => k !== 'unit' && k !== 'nodemp' && k !== 'better');

const lines = [`${title(meta)}${busy ? `, ${busyNote}` : ''}`, ''];
lines.push('| metric | unit | nodemp | peer | peer value | nodemp ahead by |', '|---|---|---|---|---|---|');
for (const [metric, row] of Object.entries(results)) {
  const peers = peersOf(row);
  if (peers.length === 0) lines.push(`| ${metric} | ${row.unit} | ${fmt(row.nodemp)} | | | |`);
  for (const [i, [peer, value]] of peers.entries()) {
    lines.push(`| ${i === 0 ? metric : ''} | ${i === 0 ? row.unit : ''} | ${i === 0 ? fmt(row.nodemp) : ''} | ${peer} | ${fmt(value)} | ${ratio(row, value)} |`);
  }
}
const table = lines.join('\n');
console.log(table);
mkdirSync(`${here}results`, { recursive: true });
const record = JSON.stringify({ meta, results }, null, 2) + '\n';
writeFileSync(`${here}results/${busy ? 'latest-busy' : 'latest'}.json`, record);
if (!quick && only === null && (!busy || burnerCount === cpus().length)) {
  writeFileSync(`${here}results/${busy ? 'busy' : 'idle'}.json`, record);
  writeResultsMd();
}

function readRecord(name) {
  try {
    return JSON.parse(readFileSync(`${here}results/${name}.json`, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * bench/RESULTS.md from the latest full idle and busy runs: one table with
 * each row's idle figures beside its busy ones, and the chart (the idle run's).
 */
function writeResultsMd() {
  const idle = readRecord('idle');
  const loaded = readRecord('busy');
  const out = ['# Benchmark results', ''];
  out.push(
    'Recorded by `npm run bench` (idle) and `npm run bench -- --busy` (busy: ' + BUSY_NOTE + '). Medians; "ahead by" is peer time / nodemp time (for a rate, nodemp / peer), measured in the same run: above 1, nodemp is ahead.',
    '',
  );
  for (const [name, r] of [['idle', idle], ['busy', loaded]]) out.push(`- ${name}: ${r === null ? 'no full run recorded yet' : title(r.meta)}`);
  out.push('', '![The headline rows as a chart (idle)](chart.svg)', '');
  out.push(
    '| metric | unit | peer | idle: nodemp | idle: peer | idle: ahead by | busy: nodemp | busy: peer | busy: ahead by |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  const metrics = [...new Set([...Object.keys(idle?.results ?? {}), ...Object.keys(loaded?.results ?? {})])];
  for (const metric of metrics) {
    const a = idle?.results[metric];
    const b = loaded?.results[metric];
    const row = a ?? b;
    const peers = [...new Set([...peersOf(a ?? {}), ...peersOf(b ?? {})].map(([k]) => k))];
    const cells = (r, peer) => (r === undefined ? ['', '', ''] : peer === null ? [fmt(r.nodemp), '', ''] : [fmt(r.nodemp), fmt(r[peer]), ratio(r, r[peer])]);
    if (peers.length === 0) out.push(`| ${metric} | ${row.unit} | | ${cells(a, null).join(' | ')} | ${cells(b, null).join(' | ')} |`);
    for (const [i, peer] of peers.entries()) {
      const [ia, ib] = [cells(a, peer), cells(b, peer)];
      if (i > 0) ia[0] = ib[0] = '';
      out.push(`| ${i === 0 ? metric : ''} | ${i === 0 ? row.unit : ''} | ${peer} | ${ia.join(' | ')} | ${ib.join(' | ')} |`);
    }
  }
  writeFileSync(`${here}RESULTS.md`, out.join('\n') + '\n');
}
// The chart of the headline rows: bench/chart.svg (embedded in the README) from a full idle run.
if (!busy) {
  const svg = chart(results, `nodemp against its peers, ${meta.date}, ${meta.machine}, Node ${meta.node}${quick ? ' (quick mode)' : ''}`);
  if (svg !== null) writeFileSync(quick || only !== null ? `${here}results/chart.svg` : `${here}chart.svg`, svg);
}
