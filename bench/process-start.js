// Process start -> join (nodemp) against the usual ways to get another
// process or thread, all measured in this run. Prints one JSON object.
import { fork as cpFork, spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Process } from '../dist/index.js';
import { native } from '../dist/native.js';
import { median, nowMs, timeRounds } from './lib.js';

const quick = process.argv.includes('--quick');
const here = fileURLToPath(new URL('.', import.meta.url));
const rounds = quick ? 20 : 200;
const slowRounds = quick ? 5 : 30;

// The two nodemp forms alternate round by round, so neither gets the other's
// warm-up or the parent's early heap growth. The third sample is the floor
// under both: the kernel's fork(), _exit() and waitpid() of this very process,
// with no JS run in the child.
const noop = () => {};
const syncSamples = [];
const asyncSamples = [];
const floorSamples = [];
for (let i = -10; i < rounds; i++) {
  let t0 = nowMs();
  const pid = native.fork(false);
  if (pid === 0) native.exit(0);
  native.waitSync(pid, -1);
  if (i >= 0) floorSamples.push(nowMs() - t0);
  t0 = nowMs();
  const a = new Process({ target: noop });
  a.start();
  a.joinSync();
  if (i >= 0) syncSamples.push(nowMs() - t0);
  t0 = nowMs();
  const b = new Process({ target: noop });
  b.start();
  await b.join();
  if (i >= 0) asyncSamples.push(nowMs() - t0);
}
const forkSync = median(syncSamples);
const forkAsync = median(asyncSamples);
const forkFloor = median(floorSamples);

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

console.log(JSON.stringify({
  'process start->join (fork, joinSync)': {
    unit: 'ms',
    nodemp: forkSync,
    'child_process.fork (to first message)': childProcessFork,
    'new Worker (to first message)': worker,
    'python mp fork start+join': python('fork'),
    'python mp spawn start+join': python('spawn'),
  },
  'process start->join (fork, await join)': { unit: 'ms', nodemp: forkAsync },
  'floor: fork()+_exit()+waitpid(), no JS in child': {
    unit: 'ms',
    nodemp: forkFloor,
    'python os.fork()+os._exit()+waitpid()': python('raw'),
  },
}));
