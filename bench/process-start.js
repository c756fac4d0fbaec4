// Process start -> join (nodemp) against the usual ways to get another
// process or thread, all measured in this run. Prints one JSON object.
import { fork as cpFork, spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Process } from '../dist/index.js';
import { native } from '../dist/native.js';
import { phases, traceStarts } from '../dist/start/trace.js';
import { median, nowMs, timeRounds } from './lib.js';

const quick = process.argv.includes('--quick');
// --large-pages: bench/run.js starts this script a second time under
// `node --use-largepages=on`, which puts Node's own code on 2 MB pages. A
// forked child then finds the code it runs already mapped in a few large
// entries instead of reaching it a 4 KB page at a time, which costs most on a
// virtual machine (README, "What a start costs the child"). Only the
// start->join rows and their floor are timed in that run; the peers would
// inherit the flag.
const largePages = process.argv.includes('--large-pages');
const here = fileURLToPath(new URL('.', import.meta.url));
const rounds = quick ? 20 : 200;
const slowRounds = quick ? 5 : 30;

// Where start() is called decides how the child starts (lib/child.ts): from
// a callback (a timer, an immediate, I/O; CommonJS top-level code) the
// target runs at once, inside start(), and a target that leaves no work ends
// the child right there; in a promise job (after an await; all of an ES
// module's top-level code) the child first abandons the caller's frames and
// runs the target from its event loop. Both are measured, with joinSync()
// and with await join(), alternating round by round so that none gets the
// others' warm-up or the parent's early heap growth. The floor under all of
// them: the kernel's fork(), _exit() and waitpid() of this very process, with
// no JS run in the child.
const noop = () => {};
const inCallback = (fn) => new Promise((resolve, reject) => setImmediate(() => fn().then(resolve, reject)));
const samples = { cbSync: [], jobSync: [], cbAsync: [], jobAsync: [], floor: [], touch: [] };
// What the floor leaves out: a forked child pays for its first touch of each
// page it inherited, even a read of one the parent wrote long ago. On a
// paravirtual machine (this one) that is the hypervisor filling its own
// page tables, which the guest's fault counters do not see. A child that
// runs JS touches several hundred such pages; this reads a known number.
const TOUCH_PAGES = 1000;
const touched = new Float64Array(TOUCH_PAGES * 512).fill(1);

// The phases of one start (native/trace.cc), stamped into shared memory by
// parent and child alike, in extra rounds of their own: stamping is cheap,
// but the plain rounds above take none.
const P = phases;
const stampBuffer = native.mapShared(8 * P.kTracePhases);
const stamps = new BigUint64Array(stampBuffer);
const BREAKDOWN = [
  ['parent: start() up to fork() (checks, the inherited work looked up)', P.kTraceStart, P.kTraceMaps],
  ['parent: pass over its mappings (MADV_DOFORK on the V8 heap)', P.kTraceMaps, P.kTracePark],
  ["parent: waits for Node's platform worker threads to park (native/platform.cc)", P.kTracePark, P.kTraceFork],
  ['parent: fork() system call', P.kTraceFork, P.kTraceParentBack],
  ['child: fork() called to its return in the child', P.kTraceFork, P.kTraceChildFirst],
  ['child: event loop and native state redone (uv_loop_fork, ...)', P.kTraceChildFirst, P.kTraceChildFixed],
  ['child: back in JS, becomes the current process', P.kTraceChildFixed, P.kTraceChildJs],
  ["child: drops the parent's listeners and pending work", P.kTraceChildJs, P.kTraceDropped],
  ["child: to the target (abandoning the caller's frames, from the event loop, on the loop path)", P.kTraceDropped, P.kTraceLaunch],
  ['child: the target (a no-op)', P.kTraceLaunch, P.kTraceTargetDone],
  ["child: exit path (its own work drained, 'exit', flush)", P.kTraceTargetDone, P.kTraceExit],
  ['parent: child _exit() to joinSync() returning (address space torn down, parent woken)', P.kTraceExit, P.kTracePhases],
];
const phaseSamples = { cb: BREAKDOWN.map(() => []), job: BREAKDOWN.map(() => []) };

function startJoinSync(traced) {
  stamps.fill(0n);
  const t0 = nowMs();
  const p = new Process({ target: noop });
  p.start();
  p.joinSync();
  const ms = nowMs() - t0;
  if (traced) {
    const joined = process.hrtime.bigint();
    return BREAKDOWN.map(([, a, b]) => Number((b === P.kTracePhases ? joined : stamps[b]) - stamps[a]) / 1000);
  }
  return ms;
}

async function startJoin() {
  const t0 = nowMs();
  const p = new Process({ target: noop });
  p.start();
  await p.join();
  return nowMs() - t0;
}

for (let i = -10; i < rounds; i++) {
  const keep = i >= 0;
  let t0 = nowMs();
  const pid = native.fork(false);
  if (pid === 0) native.exit(0);
  native.waitSync(pid, -1);
  if (keep) samples.floor.push(nowMs() - t0);
  if (!largePages) {
    t0 = nowMs();
    const reader = native.fork(false);
    if (reader === 0) {
      let sum = 0;
      for (let k = 0; k < touched.length; k += 512) sum += touched[k];
      native.exit(sum === TOUCH_PAGES ? 0 : 1);
    }
    if (native.waitSync(reader, -1) !== 0) throw new Error('process-start: the child reading the pages did not read them');
    if (keep) samples.touch.push(nowMs() - t0);
  }
  const cbSync = await inCallback(async () => startJoinSync(false));
  const jobSync = startJoinSync(false);
  const cbAsync = await inCallback(startJoin);
  const jobAsync = await startJoin();
  if (keep) {
    samples.cbSync.push(cbSync);
    samples.jobSync.push(jobSync);
    samples.cbAsync.push(cbAsync);
    samples.jobAsync.push(jobAsync);
  }
}
const forkFloor = median(samples.floor);

// Whether Node's code did move to large pages: it stays where it was, with a
// warning, where transparent huge pages are off.
function codeOnLargePages() {
  const entries = readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  return entries.some((e) => / r-xp 00000000 00:00 0 /.test(e.split('\n')[0]) && /AnonHugePages:\s+[1-9]/.test(e));
}

if (largePages) {
  if (!codeOnLargePages()) {
    process.stderr.write('process-start: node --use-largepages=on left the code on 4 KB pages here; no large-page rows\n');
    console.log('{}');
  } else {
    const LP = 'node --use-largepages=on';
    const floorLp = `floor: fork()+_exit()+waitpid(), ${LP} (same samples)`;
    console.log(JSON.stringify({
      [`process start->join (fork, joinSync), ${LP}`]: { unit: 'ms', nodemp: median(samples.cbSync), [floorLp]: forkFloor },
      [`process start->join (fork, await join), ${LP}`]: { unit: 'ms', nodemp: median(samples.cbAsync), [floorLp]: forkFloor },
      [`process start->join (fork, joinSync), start() in a promise job, ${LP}`]: { unit: 'ms', nodemp: median(samples.jobSync), [floorLp]: forkFloor },
    }));
  }
  process.exit(0);
}

traceStarts(stampBuffer);
for (let i = -5; i < rounds; i++) {
  const cb = await inCallback(async () => startJoinSync(true));
  const job = startJoinSync(true);
  if (i < 0) continue;
  cb.forEach((us, k) => phaseSamples.cb[k].push(us));
  job.forEach((us, k) => phaseSamples.job[k].push(us));
}
traceStarts(null);

const childProcessFork = await timeRounds(slowRounds, 2, () => new Promise((resolve) => {
  const child = cpFork(`${here}peers/child-ready.cjs`, { stdio: 'ignore' });
  child.once('message', () => {
    resolve();
    child.kill();
  });
}));

const worker = await timeRounds(slowRounds, 2, () => new Promise((resolve) => {
  const w = new Worker("require('node:worker_threads').parentPort.postMessage('ready')", { eval: true });
  w.once('message', () => {
    resolve();
    void w.terminate();
  });
}));

function python(method) {
  const r = spawnSync('python3', [`${here}peers/py_process_start.py`, method, String(slowRounds * 2)], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return JSON.parse(r.stdout).median_ms;
}

const peers = {
  'child_process.fork (to first message)': childProcessFork,
  'new Worker (to first message)': worker,
  'python mp fork start+join': python('fork'),
  'python mp spawn start+join': python('spawn'),
};
const same = (label) => `${label} (same samples as above)`;
const breakdown = {};
for (const [k, [label]] of BREAKDOWN.entries()) {
  breakdown[`start->join breakdown (fork, joinSync), ${label}`] = {
    unit: 'us',
    nodemp: median(phaseSamples.cb[k]),
    'start() in a promise job (the event-loop path)': median(phaseSamples.job[k]),
  };
}

console.log(JSON.stringify({
  'process start->join (fork, joinSync)': {
    unit: 'ms',
    nodemp: median(samples.cbSync),
    ...peers,
    'floor: fork()+_exit()+waitpid() (same samples as below)': forkFloor,
  },
  'process start->join (fork, joinSync), start() in a promise job': {
    unit: 'ms',
    nodemp: median(samples.jobSync),
    ...Object.fromEntries(Object.entries(peers).map(([k, v]) => [same(k), v])),
    'floor: fork()+_exit()+waitpid() (same samples as below)': forkFloor,
  },
  'process start->join (fork, await join)': { unit: 'ms', nodemp: median(samples.cbAsync), 'floor: fork()+_exit()+waitpid() (same samples as below)': forkFloor },
  'process start->join (fork, await join), start() in a promise job': { unit: 'ms', nodemp: median(samples.jobAsync), 'floor: fork()+_exit()+waitpid() (same samples as below)': forkFloor },
  'floor: fork()+_exit()+waitpid(), no JS in child': {
    unit: 'ms',
    nodemp: forkFloor,
    'python os.fork()+os._exit()+waitpid()': python('raw'),
  },
  [`a forked child's first read of a page it inherited, per page (${TOUCH_PAGES} pages, less the floor)`]: {
    unit: 'us',
    nodemp: ((median(samples.touch) - forkFloor) * 1000) / TOUCH_PAGES,
  },
  ...breakdown,
}));
