// Manager proxies (issue #14): each operation a round trip (two for the Queue
// and Lock rows) from this process to the manager's server process, with the
// blocking forms, beside Python's multiprocessing.Manager() doing the same.
// Every row is a time, so lower is better and peer / nodemp above 1 means
// nodemp is faster. Each call is timed by itself, the first WARMUP of each
// dropped. Prints one JSON object.
//
// Where this nodemp has no Manager yet, its values are null (the table reads
// n/a, and the reason goes to stderr) and Python's rows still run.
import * as nodemp from '../dist/index.js';
import { median, pythonPeer } from './lib.js';

const quick = process.argv.includes('--quick');
const passes = quick ? 3 : 5;
// Per pass and operation.
const ROUNDS = quick ? 500 : 3000;
// Enough for V8 to have compiled the call path before the clock runs (Python's side drops as many).
const WARMUP = 2000;

function timed(op) {
  const samples = [];
  for (let i = 0; i < ROUNDS + WARMUP; i++) {
    const t0 = performance.now();
    op(i);
    const t = performance.now();
    if (i >= WARMUP) samples.push((t - t0) * 1000);
  }
  return samples;
}

function check(what, got, expected) {
  if (got !== expected) throw new Error(`${what} gave ${JSON.stringify(got)} where ${JSON.stringify(expected)} was expected`);
}

/** One manager, started and shut down outside the clock; samples of each operation, in us. */
async function nodempPass() {
  const manager = nodemp.Manager();
  await manager.start();
  try {
    const d = await manager.dict();
    const l = await manager.list();
    const q = await manager.Queue();
    const lock = await manager.Lock();
    const out = {};
    out.dictSet = timed((i) => d.setSync('k', i));
    check("d.getSync('k') after the sets", d.getSync('k'), ROUNDS + WARMUP - 1);
    d.setSync('k', 1);
    out.dictGet = timed(() => check("d.getSync('k')", d.getSync('k'), 1));
    out.listAppend = timed(() => l.appendSync(3));
    out.queue = timed((i) => {
      q.putSync(i);
      check('q.getSync()', q.getSync(), i);
    });
    out.lock = timed(() => {
      lock.acquireSync();
      lock.releaseSync();
    });
    return out;
  } finally {
    await manager.shutdown();
  }
}

const haveManager = typeof nodemp.Manager === 'function';
if (!haveManager) {
  process.stderr.write('manager.js: nodemp rows skipped (n/a): ../dist/index.js exports no Manager yet; only Python runs\n');
}

const OPS = ['dictSet', 'dictGet', 'listAppend', 'queue', 'lock'];
const PY_OPS = { dictSet: 'dict_set', dictGet: 'dict_get', listAppend: 'list_append', queue: 'queue', lock: 'lock' };
const samples = { nodemp: {}, python: {} };
for (const op of OPS) {
  samples.nodemp[op] = [];
  samples.python[op] = [];
}
let havePython = true;

// Passes alternate between the two sides, so a noisy stretch of the
// machine's time lands on both.
for (let p = 0; p < passes; p++) {
  if (haveManager) {
    const got = await nodempPass();
    for (const op of OPS) samples.nodemp[op].push(...got[op]);
  }
  const py = pythonPeer('py_manager.py', [['proxies', ROUNDS]]);
  if (py === null) havePython = false;
  else for (const op of OPS) samples.python[op].push(...py[0][PY_OPS[op]]);
}

const row = (op) => ({
  unit: 'us',
  nodemp: haveManager ? median(samples.nodemp[op]) : null,
  'python mp.Manager() proxy': havePython ? median(samples.python[op]) : null,
});
console.log(JSON.stringify({
  "Manager dict proxy set, d.setSync(k, v) (python d[k] = v), one round trip": row('dictSet'),
  "Manager dict proxy get, d.getSync(k) (python d[k]), one round trip": row('dictGet'),
  'Manager list proxy append, l.appendSync(x) (python l.append(x)), one round trip': row('listAppend'),
  'Manager Queue proxy putSync + getSync of one item by the same process, two round trips': row('queue'),
  'Manager Lock proxy acquireSync + releaseSync, uncontended, two round trips': row('lock'),
}));
