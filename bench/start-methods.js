// Start methods (issue #13), all in this run: Process start->join with
// forkserver and spawn from a plain (multi-threaded) Node parent, as
// `node app.js` runs, beside Python's forkserver and spawn,
// child_process.fork and new Worker; the first (cold) forkserver start; Pool
// per-task overhead and apply round trip with forkserver against the fork
// pool in this (single-threaded) parent; and the cost --single-threaded puts
// on a GC-heavy parent loop. Prints one JSON object.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Pool, Process, Queue, getContext, isMainModule } from '../dist/index.js';
import { median, nowMs } from './lib.js';
import { square } from './peers/pool-task.mjs';

export function noop() {}

export function hello(queue) {
  queue.put(1);
}

const here = fileURLToPath(new URL('.', import.meta.url));
const quick = process.argv.includes('--quick');

// In a plain parent: one cold forkserver start, then warm rounds of each method.
async function plainPart(rounds) {
  const out = { cold: 0, forkserver: [], forkserverSync: [], spawn: [], spawnFirstMessage: [] };
  const fs = getContext('forkserver');
  const sp = getContext('spawn');
  let t0 = nowMs();
  const first = new fs.Process({ target: noop });
  first.start();
  first.joinSync();
  out.cold = nowMs() - t0;
  for (let i = -3; i < rounds; i++) {
    t0 = nowMs();
    const a = new fs.Process({ target: noop });
    a.start();
    await a.join();
    if (i >= 0) out.forkserver.push(nowMs() - t0);
    t0 = nowMs();
    const b = new fs.Process({ target: noop });
    b.start();
    b.joinSync();
    if (i >= 0) out.forkserverSync.push(nowMs() - t0);
  }
  const q = new Queue();
  for (let i = -1; i < Math.ceil(rounds / 10); i++) {
    t0 = nowMs();
    const c = new sp.Process({ target: noop });
    c.start();
    await c.join();
    if (i >= 0) out.spawn.push(nowMs() - t0);
    t0 = nowMs();
    const d = new sp.Process({ target: hello, args: [q] });
    d.start();
    await q.get();
    if (i >= 0) out.spawnFirstMessage.push(nowMs() - t0);
    await d.join();
  }
  return out;
}

function python(method, rounds) {
  const r = spawnSync('python3', [`${here}peers/py_process_start.py`, method, String(rounds)], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return JSON.parse(r.stdout).median_ms;
}

async function poolRows(method, tasks, applies) {
  const pool = new Pool({ processes: 2, startMethod: method });
  const items = Array.from({ length: tasks }, (_, i) => i);
  await pool.map(square, items.slice(0, 500), { chunksize: 1 });
  for (let i = 0; i < applies; i++) await pool.apply(square, [i]);
  let t0 = performance.now();
  await pool.map(square, items, { chunksize: 1 });
  const perTask = ((performance.now() - t0) * 1000) / tasks;
  const apply = [];
  for (let i = 0; i < applies; i++) {
    t0 = performance.now();
    await pool.apply(square, [i]);
    apply.push((performance.now() - t0) * 1000);
  }
  pool.terminate();
  await pool.join();
  return { perTask, apply: median(apply) };
}

if (isMainModule(import.meta) && process.argv.includes('--plain-part')) {
  console.log(JSON.stringify(await plainPart(Number(process.argv[process.argv.indexOf('--plain-part') + 1]))));
} else if (isMainModule(import.meta)) {
  const coldRuns = quick ? 2 : 5;
  const rounds = quick ? 20 : 60;
  const samples = { cold: [], forkserver: [], forkserverSync: [], spawn: [], spawnFirstMessage: [] };
  for (let r = 0; r < coldRuns; r++) {
    const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--plain-part', String(rounds)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (run.status !== 0) throw new Error(`the plain parent failed with status ${run.status}`);
    const part = JSON.parse(run.stdout.trim().split('\n').pop());
    samples.cold.push(part.cold);
    for (const key of ['forkserver', 'forkserverSync', 'spawn', 'spawnFirstMessage']) samples[key].push(...part[key]);
  }

  // child_process.fork and Worker to their first message, here for the same-run ratio.
  const { fork: cpFork } = await import('node:child_process');
  const { Worker } = await import('node:worker_threads');
  const cp = [];
  const cpNodemp = [];
  const wk = [];
  for (let i = -1; i < (quick ? 5 : 20); i++) {
    let t0 = nowMs();
    await new Promise((resolve) => {
      const child = cpFork(`${here}peers/child-ready.cjs`, { stdio: 'ignore' });
      child.once('message', () => {
        resolve();
        child.kill();
      });
    });
    if (i >= 0) cp.push(nowMs() - t0);
    t0 = nowMs();
    await new Promise((resolve) => {
      const child = cpFork(`${here}peers/child-ready-nodemp.cjs`, { stdio: 'ignore' });
      child.once('message', () => {
        resolve();
        child.kill();
      });
    });
    if (i >= 0) cpNodemp.push(nowMs() - t0);
    t0 = nowMs();
    const w = await new Promise((resolve) => {
      const worker = new Worker("require('node:worker_threads').parentPort.postMessage('ready')", { eval: true });
      worker.once('message', () => resolve(worker));
    });
    if (i >= 0) wk.push(nowMs() - t0);
    // A fork pool below refuses to start while a Worker lives.
    await w.terminate();
  }

  // What a spawned child cannot avoid: a fresh Node that loads nodemp (and exits).
  const importFloor = [];
  for (let i = 0; i < (quick ? 5 : 15); i++) {
    const t0 = nowMs();
    spawnSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)})`]);
    importFloor.push(nowMs() - t0);
  }

  const pyRounds = quick ? 20 : 60;
  const pyForkserver = python('forkserver', pyRounds);
  const pySpawn = python('spawn', quick ? 5 : 20);

  const tasks = quick ? 5_000 : 30_000;
  const applies = quick ? 300 : 1000;
  const fork = [];
  const fsrv = [];
  for (let pass = 0; pass < (quick ? 1 : 3); pass++) {
    fork.push(await poolRows('fork', tasks, applies));
    fsrv.push(await poolRows('forkserver', tasks, applies));
  }

  // The GC-heavy loop in a plain and a single-threaded parent, alternating.
  const gcRounds = quick ? 1500 : 4000;
  const plain = [];
  const single = [];
  for (let i = 0; i < (quick ? 2 : 5); i++) {
    for (const [flags, into] of [[[], plain], [['--single-threaded'], single]]) {
      const r = spawnSync(process.execPath, [...flags, `${here}peers/gc-loop.mjs`, String(gcRounds)], { encoding: 'utf8' });
      into.push(Number(r.stdout.trim()));
    }
  }

  console.log(JSON.stringify({
    'process start->join (forkserver, plain parent, await join)': {
      unit: 'ms',
      nodemp: median(samples.forkserver),
      'python mp forkserver start+join': pyForkserver,
      'child_process.fork (to first message)': median(cp),
      'new Worker (to first message)': median(wk),
    },
    'process start->join (forkserver, joinSync)': { unit: 'ms', nodemp: median(samples.forkserverSync), 'python mp forkserver start+join': pyForkserver },
    'first forkserver start (cold: the server starts too)': { unit: 'ms', nodemp: median(samples.cold), 'python mp forkserver start+join': pyForkserver },
    'process start->first message (spawn)': {
      unit: 'ms',
      nodemp: median(samples.spawnFirstMessage),
      'child_process.fork (to first message)': median(cp),
      'child_process.fork of a child that loads nodemp (to first message)': median(cpNodemp),
    },
    'process start->join (spawn)': { unit: 'ms', nodemp: median(samples.spawn), 'python mp spawn start+join': pySpawn },
    'floor under spawn: a fresh node that imports nodemp, start to exit': { unit: 'ms', nodemp: median(importFloor) },
    'Pool.map per task, chunksize 1 (forkserver pool vs fork pool)': {
      unit: 'us',
      nodemp: median(fsrv.map((x) => x.perTask)),
      'nodemp fork pool': median(fork.map((x) => x.perTask)),
    },
    'Pool.apply round trip (forkserver pool vs fork pool)': {
      unit: 'us',
      nodemp: median(fsrv.map((x) => x.apply)),
      'nodemp fork pool': median(fork.map((x) => x.apply)),
    },
    [`GC-heavy parent loop, ${gcRounds} rounds (plain parent vs --single-threaded)`]: {
      unit: 'ms',
      nodemp: median(plain),
      'same loop with --single-threaded': median(single),
    },
  }));
}
