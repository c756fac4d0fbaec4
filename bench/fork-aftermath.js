// What starting processes by fork() costs a parent that keeps writing across
// its heap: fork() copies page tables, and afterwards every page the parent
// writes takes a fault (and, while a child still shares it, a copy). The
// parent starts a child every FORK_EVERY_MS on a fixed schedule (each child
// lives 2 s) and is measured for its system time and page faults, per second
// and per start (fork() itself, the start's own work and the faults after it
// together), with nodemp's fork start method and, in the same run, Python's
// multiprocessing fork on a heap of about the same resident size.
//
//   node bench/fork-aftermath.js [--quick]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getContext } from '../dist/index.js';
import { pythonPeer } from './lib.js';

const quick = process.argv.includes('--quick');
const SECONDS = quick ? 5 : 15;
// A rate both sides keep up with here, so their starts are equally far apart.
const FORK_EVERY_MS = 500;
// Objects of the parent's heap, each side: about 100 MB resident in either.
const NODE_OBJECTS = 380_000;
const PYTHON_OBJECTS = 230_000;

function stat() {
  const s = readFileSync('/proc/self/stat', 'latin1');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { faults: Number(f[7]), sys: Number(f[12]) };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function nodemp(forkEveryMs) {
  const ctx = getContext('fork');
  const keep = Array.from({ length: NODE_OBJECTS }, (_, i) => ({ a: i, b: `x${i % 1000}`, c: [i] }));
  const rssMb = Math.round(process.memoryUsage().rss / 2 ** 20);
  let stop = false;
  // The parent's own work: it writes across its heap and allocates a little every few ms.
  const work = (async () => {
    let j = 0;
    while (!stop) {
      for (let k = 0; k < 20000; k++) keep[(j = (j + 7919) % keep.length)].a++;
      Array.from({ length: 2000 }, (_, i) => ({ i }));
      await sleep(5);
    }
  })();
  let started = 0;
  const alive = new Set();
  const starter = (async () => {
    if (forkEveryMs === 0) return;
    const t0 = performance.now();
    for (let k = 1; !stop; k++) {
      if (alive.size < 15) {
        const p = new ctx.Process({ target: () => new Promise((resolve) => setTimeout(resolve, 2000)) });
        p.start();
        started++;
        alive.add(p);
        p.join().then(() => alive.delete(p));
      }
      await sleep(Math.max(0, t0 + k * forkEveryMs - performance.now()));
    }
  })();
  await sleep(2000);
  const a = stat();
  const t0 = performance.now();
  const s0 = started;
  await sleep(SECONDS * 1000);
  const b = stat();
  const seconds = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all([work, starter]);
  for (const p of alive) p.kill();
  await Promise.all([...alive].map((p) => p.join()));
  return result(rssMb, started - s0, seconds, a, b);
}

function result(rssMb, starts, seconds, a, b) {
  return {
    rssMb,
    startsPerSecond: Number((starts / seconds).toFixed(2)),
    sysPercent: Math.round((b.sys - a.sys) / seconds),
    faultsPerSecond: Math.round((b.faults - a.faults) / seconds),
    sysMsPerStart: starts > 0 ? Math.round(((b.sys - a.sys) * 10) / starts) : null,
    faultsPerStart: starts > 0 ? Math.round((b.faults - a.faults) / starts) : null,
  };
}

/** The Python row (bench/peers/py_fork_aftermath.py), in an interpreter of its own like the Node rows. */
function python(forkEveryMs) {
  try {
    return pythonPeer('py_fork_aftermath.py', [['run', forkEveryMs, SECONDS, PYTHON_OBJECTS]])?.[0] ?? { error: 'no python3' };
  } catch (error) {
    return { error: error.message };
  }
}

// Each row in a process of its own, so one row's garbage is not the next one's heap.
const row = process.argv.indexOf('--row');
if (row > 0) {
  console.log(JSON.stringify(await nodemp(Number(process.argv[row + 1]))));
  process.exit(0);
}
function nodempRow(forkEveryMs) {
  const args = ['--single-threaded', fileURLToPath(import.meta.url), '--row', String(forkEveryMs), ...(quick ? ['--quick'] : [])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: (SECONDS + 60) * 1000 });
  if (r.status !== 0) return { error: (r.stderr || 'failed').trim().split('\n').at(-1) };
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}
const rows = {
  'nodemp fork, no starts': nodempRow(0),
  [`nodemp fork, a start every ${FORK_EVERY_MS} ms`]: nodempRow(FORK_EVERY_MS),
  'Python mp fork, no starts': python(0),
  [`Python mp fork, a start every ${FORK_EVERY_MS} ms`]: python(FORK_EVERY_MS),
};
for (const [name, r] of Object.entries(rows)) console.log(`${name}: ${JSON.stringify(r)}`);
