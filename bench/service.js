// A real client against a real server (issue #15): node:http servers whose
// handlers each give a CPU-bound task to a pool, driven by autocannon (16
// connections) from this process. Servers: nodemp's Pool of 2 processes
// (in a plain node and under --single-threaded), piscina with 2 threads, and
// the handler running the task itself; each in a
// process of its own (bench/peers/service-server.mjs), at two task sizes
// (about 30 us and 0.3 ms of CPU, calibrated here once: every server runs the
// same iteration count). Rows per size: requests per second (higher is
// better, so there peer / nodemp below 1 means nodemp is faster), p99 latency
// (ms) and the server main thread's CPU per request served (us; lower is
// better): what the thread that accepts and answers every request pays to hand
// work to the pool. The order of the servers rotates from pass to pass.
// Prints one JSON object.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { median } from './lib.js';
import { work } from './peers/service-task.mjs';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const PASSES = quick ? 1 : 5;
const CONNECTIONS = 16;
const WARMUP_S = 1;
const DURATION_S = quick ? 2 : 3;
const SIZES = [
  { label: '~30 us', us: 30 },
  { label: '~0.3 ms', us: 300 },
];
// Every server runs as a plain `node server.mjs` would be deployed, nodemp's
// too: its Pool then forks its workers from the fork server (a plain process
// cannot fork itself), and V8 keeps its helper threads, which do most of the
// garbage collector's marking beside the main thread. The same server under
// --single-threaded, whose Pool forks the server itself, is measured too.
const SERVERS = [
  { id: 'nodemp', kind: 'nodemp', key: 'nodemp', nodeArgs: [] },
  { id: 'nodemp-fork', kind: 'nodemp', key: 'nodemp under --single-threaded (fork pool)', nodeArgs: ['--single-threaded'] },
  { id: 'piscina', kind: 'piscina', key: 'piscina, 2 threads', nodeArgs: [] },
  { id: 'inline', kind: 'inline', key: 'no pool: the handler runs the task', nodeArgs: [] },
];
const SERVER_EXIT_MS = 5000;

// Without the load generator there is nothing to measure; without piscina its column reads n/a.
if (!existsSync(`${here}node_modules/autocannon`)) {
  process.stderr.write('bench/service.js: run `npm install` in bench/ for autocannon; no rows\n');
  console.log('{}');
  process.exit(0);
}
const autocannon = createRequire(import.meta.url)('autocannon');
const available = existsSync(`${here}node_modules/piscina`) ? SERVERS : SERVERS.filter((s) => s.kind !== 'piscina');
if (available.length < SERVERS.length) process.stderr.write('bench/service.js: run `npm install` in bench/ for the piscina server\n');

function medianMs(fn, runs) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    samples.push(performance.now() - t0);
  }
  return median(samples);
}

/** The iteration count of work() that takes about `us` of CPU here, refined by timing work() at the count itself. */
function calibrate(us) {
  let n = 10_000;
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 50; i++) work(n);
    n = Math.max(1, Math.round((n * us) / 1000 / medianMs(() => work(n), 100)));
  }
  return n;
}

/** The `p`-th percentile of `xs` (nearest rank). */
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
}

const live = new Set();
// Whatever happens to this process, no server outlives it.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

async function startServer(server, iterations) {
  const child = spawn(process.execPath, [...server.nodeArgs, `${here}peers/service-server.mjs`, server.kind, String(iterations)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const lines = createInterface({ input: child.stdout });
  const [first] = await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code, signal]) => {
      throw new Error(`the ${server.id} server exited with ${signal ?? `status ${code}`} before it listened`);
    }),
  ]);
  const { port } = JSON.parse(first);
  return { child, url: `http://127.0.0.1:${port}` };
}

async function stopServer({ child }) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), SERVER_EXIT_MS);
  await exited;
  clearTimeout(timer);
}

async function stats(url) {
  const r = await fetch(`${url}/stats`);
  return r.json();
}

/** Runs autocannon against `url`; the latencies (ms) are its own, unrounded: its histogram keeps whole milliseconds. */
async function drive(url, duration) {
  const run = autocannon({ url, connections: CONNECTIONS, duration });
  const latencies = [];
  run.on('response', (_client, _status, _bytes, ms) => latencies.push(ms));
  const r = await run;
  if (r.errors || r.timeouts || r.non2xx) {
    throw new Error(`autocannon against ${url}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx answers`);
  }
  return { rps: r['2xx'] / r.duration, latencies };
}

/** One server at one size: a warm-up run, then a measured one. */
async function measure(server, iterations) {
  const started = await startServer(server, iterations);
  try {
    await drive(started.url, WARMUP_S);
    const before = await stats(started.url);
    const r = await drive(started.url, DURATION_S);
    const after = await stats(started.url);
    const served = after.requests - before.requests;
    return {
      rps: r.rps,
      p99: percentile(r.latencies, 99),
      cpuPerRequest: (after.mainThreadCpuNs - before.mainThreadCpuNs) / 1000 / served,
    };
  } finally {
    await stopServer(started);
  }
}

const results = {};
for (const size of SIZES) {
  size.iterations = calibrate(size.us);
  process.stderr.write(`service: ${size.label} of work is work(${size.iterations})\n`);
  results[size.label] = Object.fromEntries(SERVERS.map((s) => [s.id, { rps: [], p99: [], cpuPerRequest: [] }]));
}

for (let pass = 0; pass < PASSES; pass++) {
  const order = available.map((_, i) => available[(i + pass) % available.length]);
  for (const size of SIZES) {
    for (const server of order) {
      process.stderr.write(`service: pass ${pass + 1} of ${PASSES}, ${size.label}, ${server.id}\n`);
      const m = await measure(server, size.iterations);
      for (const k of Object.keys(m)) results[size.label][server.id][k].push(m[k]);
    }
  }
}

const rows = {};
for (const size of SIZES) {
  const row = (metric) => Object.fromEntries(SERVERS.map((s) => [s.key, available.includes(s) ? median(results[size.label][s.id][metric]) : null]));
  const what = `HTTP server, ${size.label} of CPU work per request on 2 workers, ${CONNECTIONS} connections`;
  rows[`${what}: requests per second (higher is better)`] = { unit: 'req/s', better: 'higher', ...row('rps') };
  rows[`${what}: p99 latency`] = { unit: 'ms', ...row('p99') };
  rows[`${what}: server main thread CPU per request`] = { unit: 'us', ...row('cpuPerRequest') };
}
console.log(JSON.stringify(rows));
