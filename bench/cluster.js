// ClusterPool (issue #18) on loopback Redis: tiny tasks (x * x) through
// ClusterPool.map with default chunking and with chunksize 1, on `nodemp
// worker` with one and with two local processes, beside BullMQ doing the
// same task as one job per item: plain Workers (one process each, the task
// inline), BullMQ's sandboxed processors (one Worker, its processes BullMQ's
// own), and, for the time per job, the two designs that run each task in
// another process than the one talking to Redis: a Worker handing each job to
// a local nodemp Pool (what `nodemp worker` did before each of its processes
// took jobs itself), and a Worker handing each job to one other process over
// bare futex words in shared memory, the floor of any such design. Every side
// reads its answers from the queue's event stream.
// Median of the passes after warm-up rounds, the sides taking turns (see
// measured()); prints one JSON object.
import { spawn } from 'node:child_process';
import { Queue, QueueEvents } from 'bullmq';
import IORedis from 'ioredis';
import { ClusterPool } from '../dist/cluster/index.js';
import { median } from './lib.js';
import { makeRng } from './soak/rng.js';
import { square } from './peers/cluster-task.mjs';
import { startRedis } from '../test/fixtures/cluster/redis.mjs';

const quick = process.argv.includes('--quick');
const passes = quick ? 3 : 9;
const WARM_ROUNDS = quick ? 1 : 3;
const MAP_ITEMS = quick ? 2000 : 10_000;
const JOB_ITEMS = quick ? 300 : 1000;
const here = new URL('.', import.meta.url);
const bin = new URL('../bin/nodemp.js', import.meta.url).pathname;

function started(args, ready) {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  return new Promise((resolve, reject) => {
    let err = '';
    proc.stderr.on('data', (d) => {
      err += d;
      if (err.includes(ready)) resolve({ proc, exited });
    });
    exited.then((code) => reject(new Error(`${args.join(' ')} exited (${code}) before it was ready: ${err}`)));
  });
}

async function stop(workers) {
  for (const w of workers) w.proc.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
}

/** ms for `n` one-job-per-item jobs through BullMQ, added in one addBulk, until the last is seen completed. */
async function bullmqRun(port, queue, n) {
  const client = new IORedis({ host: '127.0.0.1', port, maxRetriesPerRequest: null });
  const q = new Queue(queue, { connection: client });
  const last = await client.xrevrange(`bull:${queue}:events`, '+', '-', 'COUNT', 1);
  const events = new QueueEvents(queue, { connection: { host: '127.0.0.1', port }, lastEventId: last[0]?.[0] ?? '0-0' });
  await events.waitUntilReady();
  const done = new Set();
  let wake;
  events.on('completed', ({ jobId, returnvalue }) => {
    if (Number(returnvalue) < 0) throw new Error('bench: a wrong answer');
    done.add(jobId);
    wake?.();
  });
  const t0 = performance.now();
  const jobs = await q.addBulk(Array.from({ length: n }, (_, x) => ({ name: 'square', data: { x }, opts: { removeOnComplete: true, removeOnFail: true } })));
  const ids = jobs.map((j) => j.id);
  while (!ids.every((id) => done.has(id))) await new Promise((resolve) => (wake = resolve));
  const ms = performance.now() - t0;
  await events.close();
  await q.close();
  client.disconnect();
  return ms;
}

/** A started `nodemp worker` and a ClusterPool on its queue; its passes: default-chunked map and chunksize 1, each in ms. */
async function nodempSide(url, processes) {
  const queue = `bench-nodemp-${processes}-${process.pid}`;
  const workers = [await started([bin, 'worker', '--redis', url, '--queue', queue, '--processes', String(processes)], ': ready')];
  const pool = new ClusterPool({ redis: url, queue });
  const items = Array.from({ length: MAP_ITEMS }, (_, i) => i);
  const few = items.slice(0, JOB_ITEMS);
  const timed = async (list, options) => {
    const t0 = performance.now();
    const values = await pool.map(square, list, options);
    const ms = performance.now() - t0;
    if (values[7] !== 49) throw new Error('bench: a wrong answer');
    return ms;
  };
  return {
    passes: { map: () => timed(items), job: () => timed(few, { chunksize: 1 }) },
    async stop() {
      await pool.terminate();
      await stop(workers);
    },
  };
}

/** Started BullMQ worker processes of one kind; its pass: JOB_ITEMS jobs through them, in ms. */
async function bullmqSide(port, processes, mode) {
  const queue = `bench-bullmq-${mode}-${processes}-${process.pid}`;
  const worker = new URL('peers/bullmq-worker.mjs', here).pathname;
  // plain: one Worker process per process, 2 jobs at once each (a nodemp worker takes 2 per process);
  // sandboxed: one Worker whose `processes` child processes BullMQ starts itself;
  // pool: one Worker handing each job to a local nodemp Pool of `processes`, 2 per process at once;
  // floor: the same jobs at once, each handed to one other process over bare futex words.
  const args = {
    plain: Array.from({ length: processes }, () => [worker, String(port), queue, '2']),
    sandboxed: [[worker, String(port), queue, String(processes), '--sandboxed']],
    pool: [[worker, String(port), queue, String(2 * processes), '--pool', String(processes)]],
    floor: [[worker, String(port), queue, String(2 * processes), '--hop-floor']],
  }[mode];
  const workers = await Promise.all(args.map((a) => started(a, 'bullmq worker: ready')));
  return { passes: { job: () => bullmqRun(port, queue, JOB_ITEMS) }, stop: () => stop(workers) };
}

/**
 * Every side is started first (idle BullMQ workers wait blocked on Redis);
 * then the passes take turns, one of each side per round in an order shuffled
 * each round: the machine is shared, and its load drifts over the tens of
 * seconds a side's passes take one after another, enough on its own to move
 * one side's median 25% against another's. The first rounds only warm up: a
 * worker's first few thousand jobs run while V8 still compiles its code, and
 * a pass of 1,000 jobs took 1.5-2x its steady time in them.
 */
async function measured(redis, processes) {
  // Filled as each side starts, so that one failing to start stops those before it.
  const sides = {};
  try {
    sides.nodemp = await nodempSide(redis.url, processes);
    for (const mode of ['plain', 'sandboxed', 'pool', 'floor']) sides[mode] = await bullmqSide(redis.port, processes, mode);
    const turns = Object.entries(sides).flatMap(([side, s]) => Object.entries(s.passes).map(([kind, pass]) => ({ side, kind, pass, ms: [] })));
    const rng = makeRng(processes);
    for (let round = 0; round < WARM_ROUNDS + passes; round++) {
      const order = turns.map((t) => [rng.next(), t]).sort((a, b) => a[0] - b[0]);
      for (const [, t] of order) {
        const ms = await t.pass();
        if (round >= WARM_ROUNDS) t.ms.push(ms);
      }
    }
    const out = {};
    for (const t of turns) {
      const ms = median(t.ms);
      out[t.side] ??= {};
      if (t.kind === 'map') out[t.side].map = MAP_ITEMS / (ms / 1000);
      else out[t.side].job = ms / JOB_ITEMS;
      // A BullMQ side's items per second are its jobs': one item each.
      if (t.side !== 'nodemp') out[t.side].map = JOB_ITEMS / (ms / 1000);
    }
    return out;
  } finally {
    for (const s of Object.values(sides)) await s.stop();
  }
}

const rows = {};
let redis = null;
try {
  redis = await startRedis();
} catch (error) {
  process.stderr.write(`bench: cluster rows read n/a: ${error.message}\n`);
}
for (const processes of [1, 2]) {
  const n = `${processes} worker process${processes === 1 ? '' : 'es'}`;
  const m = redis && (await measured(redis, processes));
  const [nodemp, plain, sandboxed, byHand, floor] = ['nodemp', 'plain', 'sandboxed', 'pool', 'floor'].map((side) => m?.[side]);
  rows[`ClusterPool.map of tiny tasks, default chunking, ${n}`] = {
    unit: 'items/s',
    better: 'higher',
    nodemp: nodemp?.map ?? null,
    'BullMQ, a job per item': plain?.map ?? null,
    'BullMQ sandboxed processors, a job per item': sandboxed?.map ?? null,
  };
  rows[`ClusterPool.map, chunksize 1: time per job, ${n}`] = {
    unit: 'ms',
    nodemp: nodemp?.job ?? null,
    'BullMQ, a job per item': plain?.job ?? null,
    'BullMQ sandboxed processors, a job per item': sandboxed?.job ?? null,
    'BullMQ handing each job to a local nodemp Pool by hand': byHand?.job ?? null,
    'floor: BullMQ handing each job to another process over bare futex words': floor?.job ?? null,
  };
}
await redis?.stop();
console.log(JSON.stringify(rows));
