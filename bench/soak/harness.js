// One soak run: every nodemp mechanism at once, across real processes, while
// a chaos driver kills and stops them. Started by bench/soak.js (which checks
// for leaks once this process is gone) as:
//   node --single-threaded --expose-gc harness.js --seconds N --seed S --out FILE --targets FILE --faults FILE --clock FILE
import { openSync, readdirSync, readFileSync, readlinkSync, readSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  activeChildren,
  EOFError,
  getContext,
  JoinableQueue,
  Lock,
  Pipe,
  Pool,
  Queue,
  QueueEmpty,
  RawArray,
  RLock,
  Semaphore,
  SharedMemory,
  SyncManager,
  Value,
} from '../../dist/index.js';
import { native } from '../../dist/native.js';
import { checkFailure, checkValue, History, MessageLedger } from './ledger.js';
import * as roles from './roles.js';
import { BUCKETS, bucketOf, makeRng, quantileMs } from './rng.js';
import { RunClock } from './run-clock.js';

const { CTL, CELL, EXIT_MANAGER_DEAD } = roles;

const opts = { seconds: 60, seed: 1, out: null, targets: null, faults: null, clock: null };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  opts[key] = ['out', 'targets', 'faults', 'clock'].includes(key) ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

/** The deadlines are on the run's clock: on an idle machine, the wall's. */
const runClock = new RunClock(opts.clock);
/** An operation of the harness's own (a pool call, an echo) that takes longer is a hang. */
const DEADLINE_MS = 30_000;
/** A child's operation (its watch slot set) that takes longer is a hang. */
const CHILD_DEADLINE_MS = 30_000;
/** The one of the harness's own operations that took longest to settle (wall ms), the wind-down's waits apart. */
let slowest = { ms: 0, what: '' };
const SLOW_CALLS_KEPT = 6;
const slowCalls = [];
const SLOTS = 64;
// A queue's two consumers, a counter's two workers and the manager's two
// clients, one of each: the handoff of a lock, a queue or a proxy to a
// forkserver child is then soaked beside the fork child's inheritance. The
// fork server also takes these starts off the harness, whose fork of its
// ~80 MB heap and the copy-on-write faults after it cost it more than the
// server's (see "What a fork costs the parent" in the README).
const TWO_METHODS = ['fork', 'forkserver'];
const COUNTER_WORKERS = TWO_METHODS.length;

const rng = makeRng(opts.seed);
const history = new History();
const violations = [];
const hangs = [];
let brokenHistory = null;
const counts = {
  starts: 0,
  startFailures: 0,
  kill: 0,
  stop: 0,
  killsBy: {},
  poolCalls: 0,
  poolTasks: 0,
  poolWorkerDied: 0,
  poolThrown: 0,
  poolAborted: 0,
  echoes: 0,
  echoBytes: 0,
  shmChecked: 0,
  managerGenerations: 0,
  managerGenerationsLost: 0,
  managerAppends: 0,
};

function violation(message) {
  violations.push({ t: Date.now() - history.start, message });
  history.add('violation', { message });
  brokenHistory ??= history.recent();
  process.stderr.write(`soak: VIOLATION ${message}\n`);
}

function hang(message) {
  hangs.push({ t: Date.now() - history.start, message });
  history.add('hang', { message });
  brokenHistory ??= history.recent();
  process.stderr.write(`soak: HANG ${message}\n`);
}

const ctl = new RawArray('i', CTL.SIZE);
const watch = new RawArray('d', SLOTS);
const acked = new RawArray('i', SLOTS);
const hist = new RawArray('i', BUCKETS);
const histTyped = hist.typed;
const freeSlots = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);

function record(ms) {
  Atomics.add(histTyped, bucketOf(ms * 1000), 1);
}

let stopping = false;
let stopNow;
const stopped = new Promise((resolve) => (stopNow = resolve));
const untilStop = (ms) => Promise.race([sleep(ms), stopped]);

const harnessPid = process.pid;

/**
 * The harness's own code going on in a forked child (a pool's worker, a
 * participant) is nodemp's failure: that child would act as a second harness
 * on the same queues and pools. It is counted where the harness reads it and
 * the child ends.
 */
function inHarness(where) {
  if (process.pid === harnessPid) return;
  Atomics.add(ctl.typed, CTL.FOREIGN, 1);
  writeSync(2, `soak: the harness's code (${where}) ran in child ${process.pid}:\n${new Error().stack}\n`);
  process.exit(70);
}

/**
 * Settles with { value } or { error } as `promise` does, or with { hang: true } once `ms` of the run's clock pass (the promise is
 * then left), and records its latency. `describe()`, if given, says what the system held at that moment.
 */
async function deadline(what, promise, ms = DEADLINE_MS, describe = null) {
  inHarness(what);
  let timer;
  const w0 = Date.now();
  const late = new Promise((resolve) => {
    // The run's clock goes no faster than the wall's: a wall timer of what is left never fires early.
    const check = () => {
      const left = ms - (runClock.at(Date.now()) - runClock.at(w0));
      if (left <= 0) resolve({ hang: true });
      else timer = setTimeout(check, left);
    };
    timer = setTimeout(check, ms);
  });
  const t0 = performance.now();
  // A call a third of the way to its deadline is slow: what the system held
  // then is kept (a few of them), so a run whose tail stays under the
  // deadline still says what made it slow.
  // The items of one applyAsync each have a deadline: the call is kept once.
  const call = what.replace(/ #\d+$/, '');
  const slowTimer =
    describe !== null && slowCalls.length < SLOW_CALLS_KEPT
      ? setTimeout(() => {
          if (slowCalls.length < SLOW_CALLS_KEPT && !slowCalls.some((c) => c.what === call)) {
            slowCalls.push({ what: call, t: Date.now() - history.start, state: describe() });
          }
        }, ms / 3)
      : null;
  const r = await Promise.race([promise.then((value) => ({ value }), (error) => ({ error })), late]);
  clearTimeout(timer);
  clearTimeout(slowTimer);
  if (r.hang) {
    const stalled = loopStalledMs();
    const wall = Date.now() - w0;
    const clockNote = wall > ms * 1.05 ? `, ${(wall / 1000).toFixed(1)} s of the wall's: the run got ${Math.round(runClock.share * 100)}% of the CPU` : '';
    hang(`${what}: not settled after ${ms / 1000} s of the run's clock${clockNote}${stalled > 1000 ? ` (the event loop has not polled for events for ${(stalled / 1000).toFixed(1)} s: timers running back to back)` : ''}`);
    if (describe !== null) hangs.at(-1).message += `; at the deadline: ${JSON.stringify(describe())}`;
    // Whether it was only slow (settled later) or stuck for good tells a
    // starved call from a wedged one.
    const entry = hangs.at(-1);
    const settled = (how) => {
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      entry.message += ` (${how} ${s} s after it began)`;
      history.add('settled late', { what, how, s });
    };
    promise.then(() => settled('resolved'), (error) => settled(`rejected with ${error?.name}`));
  } else {
    const took = performance.now() - t0;
    record(took);
    if (ms === DEADLINE_MS && took > slowest.ms) slowest = { ms: Math.round(took), what };
  }
  return r;
}

// ---------------------------------------------------------------- processes

/** pid -> { name, slot, proc, pid, conn, method, killed, watchdogKilled, done } of every participant running. */
const live = new Map();

/**
 * Starts one participant and follows it to its end. `hooks.onMessage(m, entry)`
 * gets its reports (unless `hooks.ownConn`: the caller talks on entry.conn);
 * the returned entry's `done` resolves with how it ended: 'exited' (by
 * itself), 'killed' (by the chaos driver or the watchdog), 'lost' (its fork
 * server died, taking its exit status), 'manager-dead', or 'crashed' (a
 * violation already recorded).
 */
function startRole(name, method, target, extra, hooks = {}) {
  const slot = freeSlots.pop();
  if (slot === undefined) throw new Error('soak: out of watch slots');
  watch.typed[slot] = 0;
  acked.typed[slot] = 0;
  const [mine, theirs] = Pipe();
  const Proc = getContext(method).Process;
  const proc = new Proc({ target, args: [ctl, watch, acked, hist, slot, theirs, ...extra], daemon: true, name });
  try {
    proc.start();
  } catch (error) {
    mine.close();
    theirs.close();
    freeSlots.push(slot);
    throw error;
  }
  theirs.close();
  counts.starts++;
  const entry = { name, slot, proc, pid: proc.pid, conn: mine, method, killed: false, watchdogKilled: false };
  live.set(proc.pid, entry);
  history.add('start', { role: name, pid: proc.pid, method });
  publishTargets();
  const reader = hooks.ownConn ? Promise.resolve() : readReports(entry, hooks.onMessage);
  entry.done = (async () => {
    await reader;
    const code = await proc.join();
    const how = await classify(entry, code, hooks);
    entry.acked = acked.typed[slot];
    entry.code = code;
    history.add('end', { role: name, pid: entry.pid, code, how });
    live.delete(entry.pid);
    if (!hooks.ownConn) mine.close();
    freeSlots.push(slot);
    return how;
  })();
  return entry;
}

async function readReports(entry, onMessage) {
  for (;;) {
    let m;
    try {
      m = await entry.conn.recv();
    } catch (error) {
      if (!(error instanceof EOFError)) violation(`${entry.name} pid ${entry.pid}: its report pipe failed: ${error.code ?? error.name}: ${error.message}`);
      return;
    }
    if (m !== null && typeof m === 'object' && !Array.isArray(m) && (m.v || m.hang)) {
      if (m.v) violation(`${entry.name} pid ${entry.pid}: ${m.v}`);
      else hang(`${entry.name} pid ${entry.pid}: ${m.hang}`);
    } else {
      onMessage?.(m, entry);
    }
  }
}

let forkserverDeaths = 0;

async function classify(entry, code, hooks) {
  if (code === 0) return 'exited';
  readFaults();
  if (code === -9 && (entry.killed || entry.watchdogKilled)) return 'killed';
  if (code === 255 && entry.method === 'forkserver' && forkserverDeaths > 0) return 'lost';
  if (code === EXIT_MANAGER_DEAD && hooks.managerDead && (await hooks.managerDead())) return 'manager-dead';
  violation(`${entry.name} pid ${entry.pid} (${entry.method}) ended with exit code ${code}`);
  return 'crashed';
}

/**
 * Runs a copy of a participant for each start method in `methods`, starting
 * a new one whenever one ends, while `keepGoing(how that copy's last one
 * ended)` holds. `make(i)` (i: the copy's index in `methods`) returns
 * [target, extra args, hooks, onEnd(how, entry)].
 */
async function supervise(name, methods, keepGoing, make) {
  await Promise.all(
    methods.map(async (method, i) => {
      let failures = 0;
      let last;
      while (keepGoing(last)) {
        const [target, extra, hooks, onEnd] = make(i);
        let entry;
        try {
          entry = startRole(name, method, target, extra, hooks);
          failures = 0;
        } catch (error) {
          counts.startFailures++;
          history.add('start failed', { role: name, method, error: `${error.code ?? error.name}: ${error.message}` });
          hooks.onStartFailed?.();
          if (++failures === 50) violation(`${name} (${method}): 50 starts in a row failed, the last with ${error.code ?? error.name}: ${error.message}`);
          await sleep(20);
          continue;
        }
        last = await entry.done;
        onEnd(last, entry);
      }
    }),
  );
}

// ---------------------------------------------------------------- queues

const queues = [
  { name: 'Queue', q: new Queue(), joinable: false, cap: 1 << 20, ledger: new MessageLedger('Queue'), methods: ['forkserver', 'fork'] },
  {
    name: 'JoinableQueue(maxsize 16)',
    q: new JoinableQueue({ maxsize: 16 }),
    joinable: true,
    cap: 64 << 10,
    ledger: new MessageLedger('JoinableQueue'),
    methods: ['fork', 'spawn'],
  },
];
let nextProducer = 1;
let nextConsumer = 1;
let producersDone = false;

function queueWork() {
  const producers = queues.map((Q) =>
    supervise(`producer of ${Q.name}`, Q.methods, () => !stopping, () => {
      const p = nextProducer++;
      Q.ledger.producerStarted(p);
      return [
        roles.producer,
        [Q.q, p, rng.int(20, 300), rng.fork(), Q.cap, rng.chance(0.3)],
        { onStartFailed: () => Q.ledger.producerEnded(p, false, 0) },
        (how, entry) => {
          const v = Q.ledger.producerEnded(p, how === 'exited', entry.acked);
          if (v) violation(v);
        },
      ];
    }),
  );
  const consumers = queues.map((Q) =>
    // A consumer the chaos killed just before the drain began, whose end is
    // noticed after, is replaced too: the drain needs one left to do it.
    supervise(`consumer of ${Q.name}`, TWO_METHODS, (last) => !producersDone || ctl.typed[CTL.DRAIN] === 0 || last === 'killed' || last === 'lost', () => {
      const c = nextConsumer++;
      return [
        roles.consumer,
        [Q.q, Q.joinable],
        {
          onMessage: (m) => {
            const v = Q.ledger.receive(c, m[0], m[1], m[2] === 1, m[3]);
            if (v) violation(v);
          },
        },
        (how) => Q.ledger.consumerEnded(c, how !== 'exited'),
      ];
    }),
  );
  return { producers: Promise.all(producers), consumers: Promise.all(consumers) };
}

async function drainQueues(work) {
  await work.producers;
  producersDone = true;
  ctl.typed[CTL.DRAIN] = 1;
  await work.consumers;
  for (const Q of queues) {
    let left = 0;
    for (;;) {
      try {
        Q.q.getNowait();
        left++;
      } catch (error) {
        if (error instanceof QueueEmpty) break;
        throw error;
      }
    }
    if (left > 0) violation(`${Q.name}: ${left} messages were still in the queue after every consumer drained it`);
    const { violations: vs } = Q.ledger.finish();
    for (const v of vs) violation(v);
  }
}

// ---------------------------------------------------------------- counters

const counters = [
  { kind: 'lock', guard: new Lock() },
  { kind: 'rlock', guard: new RLock() },
  { kind: 'sem', guard: new Semaphore(1) },
  { kind: 'value', guard: null, value: new Value('i', 0) },
].map((c) => ({ ...c, cells: new RawArray('i', CELL.MINE + COUNTER_WORKERS) }));

function counterWork() {
  return Promise.all(
    counters.map((C) =>
      supervise(`${C.kind} counter`, TWO_METHODS, () => !stopping, (w) => [
        roles.counter,
        [C.kind, C.guard, C.cells, w, rng.fork(), C.value ?? null],
        {},
        () => {},
      ]),
    ),
  );
}

/** Takes each lock once more (undoing an increment its last holder died in) and checks the sums. */
async function checkCounters() {
  for (const C of counters) {
    const c = C.cells.typed;
    const lock = C.kind === 'value' ? C.value.getLock() : C.guard;
    // The deadline (on the run's clock) judges; the lock's own timeout, on the wall's, only ends a wait past it.
    const r = await deadline(`${C.kind} counter: final acquire`, lock.acquire({ timeout: DEADLINE_MS * 10 }));
    if (r.hang) continue;
    if (r.value !== true) {
      violation(`${C.kind} counter: the lock could not be taken at the end`);
      continue;
    }
    if (c[CELL.JOURNAL] !== 0) {
      if (!lock.ownerDied) violation(`${C.kind} counter: an increment was half done at the end, but the lock reports no dead owner`);
      if (C.kind === 'value') C.value.value = c[CELL.OLD];
      else c[CELL.COUNT] = c[CELL.OLD];
      c[CELL.MINE + c[CELL.OLD_SLOT]] = c[CELL.OLD_MINE];
      c[CELL.JOURNAL] = 0;
    }
    c[CELL.INSIDE] = 0;
    const total = C.kind === 'value' ? C.value.value : c[CELL.COUNT];
    let sum = 0;
    for (let w = 0; w < COUNTER_WORKERS; w++) sum += c[CELL.MINE + w];
    if (total !== sum) violation(`${C.kind} counter: ${total}, but the increments that returned add up to ${sum}`);
    C.total = total;
    lock.release();
  }
}

// ---------------------------------------------------------------- pools

const pools = [
  { name: 'Pool(fork)', pool: new Pool({ processes: 2, startMethod: 'fork' }) },
  { name: 'Pool(forkserver, maxtasksperchild 40)', pool: new Pool({ processes: 2, startMethod: 'forkserver', maxtasksperchild: 40 }) },
];
let nextX = 0;

function makeItems() {
  const n = rng.int(1, 40);
  return Array.from({ length: n }, () => ({ x: nextX++, us: rng.logInt(1, 4000), fail: rng.chance(0.03) }));
}

function judge(what, r, items) {
  counts.poolCalls++;
  counts.poolTasks += items.length;
  if (r.hang) return;
  if ('error' in r) {
    if (r.error?.name === 'WorkerDiedError') {
      counts.poolWorkerDied++;
      // Killed (by the chaos driver, or by the pool for an abort), or its
      // status lost with a killed fork server; anything else is a crash.
      if (r.error.exitCode !== -9 && r.error.exitCode !== 255) violation(`${what}: a worker ended with exit code ${r.error.exitCode}: ${r.error.message}`);
    } else {
      counts.poolThrown++;
    }
    const v = checkFailure(what, r.error, new Set(items.filter((i) => i.fail).map((i) => i.x)));
    if (v) violation(v);
    return;
  }
  const values = r.value;
  if (items.some((i) => i.fail)) violation(`${what}: resolved, though item ${items.find((i) => i.fail).x} throws`);
  if (values.length !== items.length) violation(`${what}: ${values.length} results for ${items.length} items`);
  for (let i = 0; i < items.length; i++) {
    const v = checkValue(what, items[i].x, values[i], 2 * items[i].x + 1);
    if (v) return violation(v);
  }
}

async function poolCall(P) {
  const { pool } = P;
  const hangsBefore = hangs.length;
  await poolOp(P);
  // What the workers were doing, for the report of a call that hung.
  if (hangs.length > hangsBefore && hangs.at(-1).message.startsWith(P.name)) {
    hangs.at(-1).message += `; the pool now: ${JSON.stringify(poolState(pool))}`;
  }
}

/** What a pool holds, with each worker's process state, for the report of a hang. */
function poolState(pool) {
  const state = pool[Symbol.for('nodemp.pool.state')]();
  for (const w of state.workers) w.process = procState(w.pid);
  return state;
}

async function poolOp(P) {
  const { pool } = P;
  const items = makeItems();
  const fn = rng.chance(0.2) ? roles.taskAsync : roles.task;
  const args = items.map((i) => [i.x, i.us, i.fail]);
  const chunksize = rng.chance(0.5) ? undefined : rng.int(1, 8);
  const op = rng.pick(['map', 'starmap', 'imap', 'imapUnordered', 'apply', 'applyAsync', 'abort']);
  const what = `${P.name} ${op} of ${items.length} (x ${items[0].x}..)`;
  const held = () => poolState(pool);
  switch (op) {
    case 'map':
      return judge(what, await deadline(what, pool.map(fn, args, { chunksize }), DEADLINE_MS, held), items);
    case 'starmap':
      return judge(what, await deadline(what, pool.starmap(roles.work, args, { chunksize }), DEADLINE_MS, held), items);
    case 'imap':
    case 'imapUnordered':
      return judge(what, await deadline(what, collect(what, pool[op](fn, args, { chunksize }), items, op === 'imap'), DEADLINE_MS, held), items);
    case 'apply': {
      const one = items.slice(0, 1);
      const r = await deadline(what, pool.apply(roles.work, args[0]), DEADLINE_MS, held);
      return judge(what, 'value' in r ? { value: [r.value] } : r, one);
    }
    case 'applyAsync': {
      const calls = items.map(() => 0);
      const results = args.map((a, i) =>
        pool.applyAsync(roles.work, a, { callback: () => calls[i]++, errorCallback: () => calls[i]++ }),
      );
      const settled = await Promise.all(results.map((res, i) => deadline(`${what} #${i}`, res.get(), DEADLINE_MS, held)));
      await sleep(1);
      settled.forEach((r, i) => {
        if (!r.hang && calls[i] !== 1) violation(`${what} #${i}: its callbacks ran ${calls[i]} times`);
        judge(`${what} #${i}`, 'value' in r ? { value: [r.value] } : r, [items[i]]);
      });
      return;
    }
    case 'abort': {
      const ac = new AbortController();
      const reason = new Error('soak abort');
      setTimeout(() => ac.abort(reason), rng.int(0, 4));
      const r = await deadline(what, pool.apply(roles.work, args[0], { signal: ac.signal }), DEADLINE_MS, held);
      if ('error' in r && r.error === reason) {
        counts.poolAborted++;
        counts.poolCalls++;
        return;
      }
      return judge(what, 'value' in r ? { value: [r.value] } : r, items.slice(0, 1));
    }
  }
}

/** Iterates an imap, checking each answer as it comes; resolves with them in input order. */
async function collect(what, iterable, items, ordered) {
  const want = new Map(items.map((i) => [2 * i.x + 1, i]));
  const out = [];
  let position = 0;
  try {
    for await (const value of iterable) {
      if (ordered) {
        const v = checkValue(what, items[position].x, value, 2 * items[position].x + 1);
        if (v) violation(v);
      } else if (!want.delete(value)) {
        violation(`${what}: answered ${value}, not one of the items still due (twice, or never asked)`);
      }
      position++;
      out.push(value);
    }
  } catch (error) {
    if (ordered && error?.name === 'SoakTaskError' && error.message !== `task ${items[position]?.x} failed on purpose`) {
      violation(`${what}: the error of another item was thrown at position ${position}: ${error.message}`);
    }
    throw error;
  }
  return ordered ? out : items.map((i) => 2 * i.x + 1);
}

async function poolWork(P) {
  while (!stopping) {
    inHarness(P.name);
    await poolCall(P);
  }
}

// ---------------------------------------------------------------- pipe echoes

async function echoWork() {
  let i = 0;
  while (!stopping) {
    const entry = startRole('echo', 'fork', roles.echo, [], { ownConn: true });
    const conn = entry.conn;
    let gone = false;
    while (!stopping && !gone) {
      const bytes = rng.chance(0.5);
      const size = rng.logInt(1, 256 << 10);
      const payload = bytes ? randomBytes(size) : { i, text: 'x'.repeat(size % 4096), big: BigInt(i) };
      i++;
      try {
        conn.send(payload);
      } catch (error) {
        // The echo was killed: its end is closed. Anything else is nodemp's failure.
        if (error?.code !== 'EPIPE' && error?.code !== 'ECONNRESET') violation(`echo: send failed with ${error?.code ?? error?.name}: ${error?.message}`);
        gone = true;
        break;
      }
      const r = await deadline(`echo of ${size} bytes`, conn.recv());
      if (r.hang) break;
      if ('error' in r) {
        if (!(r.error instanceof EOFError) && r.error?.code !== 'ECONNRESET') violation(`echo: recv failed with ${r.error?.code ?? r.error?.name}: ${r.error?.message}`);
        gone = true;
        break;
      }
      const same = bytes
        ? Buffer.isBuffer(r.value) && r.value.equals(payload)
        : r.value?.i === payload.i && r.value?.text === payload.text && r.value?.big === payload.big;
      if (!same) violation(`echo: message ${payload.i ?? `of ${size} bytes`} came back different`);
      counts.echoes++;
      counts.echoBytes += size;
    }
    if (!gone) {
      try {
        conn.send(null);
      } catch {
        // Killed as it was told to stop: its end says so below.
      }
    }
    const how = await entry.done;
    conn.close();
    if (gone && how === 'exited') violation(`echo pid ${entry.pid}: its pipe ended but it exited by itself`);
  }
}

// ---------------------------------------------------------------- shared memory

function shmWork() {
  return supervise('SharedMemory worker', ['spawn'], () => !stopping, () => [
    roles.shmWorker,
    [rng.fork()],
    {
      onMessage: (m, entry) => {
        let verdict = 'ok';
        try {
          const seg = new SharedMemory({ name: m.shm });
          if (seg.size < m.n || crc32(seg.buf.subarray(0, m.n)) !== m.crc) verdict = 'different bytes';
          seg.close();
          counts.shmChecked++;
        } catch (error) {
          verdict = `${error.code ?? error.name}: ${error.message}`;
        }
        try {
          entry.conn.send(verdict);
        } catch {
          // The worker died meanwhile.
        }
      },
    },
    () => {},
  ]);
}

function shmEntries() {
  return readdirSync('/dev/shm').filter((n) => n.startsWith('nodemp_'));
}

// ---------------------------------------------------------------- managers

let managerServerPid = 0;

async function managerWork() {
  let gen = 0;
  let nextClient = 1;
  while (!stopping) {
    gen++;
    counts.managerGenerations++;
    // The server's default 10 s for a client's handshake, on the run's clock:
    // the busy-machine soak's starved harness was late to it four times running.
    const manager = new SyncManager({ handshakeTimeout: Math.round(10_000 / runClock.share) });
    const started = await deadline('manager start', manager.start());
    if (started.hang || 'error' in started) {
      if ('error' in started) violation(`manager: start failed with ${started.error?.code ?? started.error?.name}: ${started.error?.message}`);
      return;
    }
    const made = await deadline('manager objects', Promise.all([manager.list(), manager.Lock()]));
    if (made.hang || 'error' in made) {
      if (made.error?.code === 'ERR_MANAGER_DEAD') {
        counts.managerGenerationsLost++;
        // The connection died, which on a loaded machine was not always the server: the
        // busy-machine soak left seven servers running at its end. Make sure it is gone.
        manager.process.kill();
        await manager.process.join();
        continue;
      }
      if ('error' in made) violation(`manager: making objects failed with ${made.error?.code}: ${made.error?.message}`);
      // Counted once, as what it is: the server it leaves must not read as a leak too.
      if (made.hang) hangs.at(-1).message += `; its server, pid ${manager.process.pid}: ${procState(manager.process.pid)}`;
      manager.process.kill();
      await manager.process.join();
      return;
    }
    const [list, mlock] = made.value;
    managerServerPid = manager.process.pid;
    let serverDead = false;
    const serverEnd = manager.process.join().then((code) => {
      serverDead = true;
      managerServerPid = 0;
      return code;
    });
    // A client may see the server gone before this process's join() does.
    const managerGone = () => Promise.race([serverEnd.then(() => true), sleep(5000).then(() => false)]);
    let ended = false;
    const clients = new Map();
    const supervisors = supervise('manager client', TWO_METHODS, () => !stopping && !ended && !serverDead, () => {
      const id = nextClient++;
      return [
        roles.managerClient,
        [list, mlock, id, gen],
        { managerDead: managerGone },
        (how, entry) => clients.set(id, { how, acked: entry.acked }),
      ];
    });
    // Short enough that most servers live to have their list checked.
    await Promise.race([untilStop(rng.int(2000, 8000)), serverEnd]);
    if (serverDead) {
      const code = await serverEnd;
      if (code !== -9) violation(`manager: its server ended by itself, exit code ${code}`);
    }
    ended = true;
    ctl.typed[CTL.MANAGER_STOP] = gen;
    await supervisors;
    if (!serverDead) {
      const r = await deadline('manager list copy', list.copy());
      if ('value' in r) checkManagerList(gen, r.value, clients);
      else if (r.error && !(r.error.code === 'ERR_MANAGER_DEAD' && (await managerGone()))) {
        violation(`manager: reading the list failed: ${r.error.code}: ${r.error.message}`);
      }
    }
    if (serverDead) counts.managerGenerationsLost++;
    await deadline('manager shutdown', manager.shutdown());
    await serverEnd;
  }
}

function checkManagerList(gen, items, clients) {
  const seen = new Map();
  for (const [id, seq] of items) {
    const next = seen.get(id) ?? 0;
    if (seq !== next) return violation(`manager generation ${gen}: client ${id} appended ${seq} where ${next} was due`);
    seen.set(id, next + 1);
  }
  for (const [id, { how, acked: n }] of clients) {
    const got = seen.get(id) ?? 0;
    const ok = how === 'exited' ? got === n : got === n || got === n + 1;
    if (!ok) violation(`manager generation ${gen}: client ${id} (${how}) had ${n} appends answered, the list holds ${got}`);
    counts.managerAppends += got;
  }
}

// ---------------------------------------------------------------- chaos

function forkserverPids() {
  let children;
  try {
    children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'latin1').split(' ').filter(Boolean);
  } catch {
    return [];
  }
  const pids = [];
  for (const d of children) {
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'latin1').includes('forkserver-main')) pids.push(Number(d));
    } catch {
      // It ended as we looked.
    }
  }
  return pids;
}

/**
 * Who the chaos driver (bench/soak/chaos.js, in bench/soak.js) may hit: a
 * line "pid, kind, the chance it is a candidate at a pick" each, in a file
 * replaced whole so that it never reads half of one. Written as participants
 * start and every 20 ms (a pool replaces its workers on its own); the driver
 * skips the ones it finds gone.
 */
function publishTargets() {
  const lines = [];
  for (const [pid, entry] of live) if (!entry.killed && !entry.watchdogKilled) lines.push(`${pid}\t${entry.name}\t1`);
  for (const P of pools) for (const pid of P.pool.pids) lines.push(`${pid}\t${P.name} worker\t1`);
  // The servers are one each: hit less often than the many clients. The
  // manager's least, or it seldom lives long enough for its list to be checked.
  for (const pid of forkserverPids()) lines.push(`${pid}\tfork server\t0.1`);
  if (managerServerPid) lines.push(`${managerServerPid}\tmanager server\t0.03`);
  writeFileSync(`${opts.targets}.next`, lines.join('\n'));
  renameSync(`${opts.targets}.next`, opts.targets);
}

/**
 * Takes in the faults the driver has sent since the last call. It appends each
 * kill before it signals, so a participant seen ended by SIGKILL has its line
 * here by then: classify() reads the log first.
 */
const faultLog = { fd: -1, at: 0, tail: '', buf: Buffer.alloc(1 << 16) };

function readFaults() {
  if (faultLog.fd < 0) faultLog.fd = openSync(opts.faults, 'r');
  for (;;) {
    const n = readSync(faultLog.fd, faultLog.buf, 0, faultLog.buf.length, faultLog.at);
    if (n === 0) return;
    faultLog.at += n;
    const lines = (faultLog.tail + faultLog.buf.toString('latin1', 0, n)).split('\n');
    faultLog.tail = lines.pop();
    for (const line of lines) takeFault(line.split('\t'));
  }
}

function takeFault([op, pidText, kind, ...rest]) {
  const pid = Number(pidText);
  const t = Number(rest.at(-1)) - history.start;
  if (op === 'K') {
    const entry = live.get(pid);
    if (entry) entry.killed = true;
    if (kind === 'fork server') forkserverDeaths++;
    counts.kill++;
    counts.killsBy[kind] = (counts.killsBy[kind] ?? 0) + 1;
    history.add('SIGKILL', { pid, role: kind, t });
  } else if (op === 'U') {
    // The kill found it gone: no fault after all.
    counts.kill--;
    counts.killsBy[kind]--;
    if (kind === 'fork server') forkserverDeaths--;
    history.add('SIGKILL missed', { pid, role: kind, t });
  } else if (op === 'S') {
    counts.stop++;
    history.add('SIGSTOP', { pid, role: kind, ms: Number(rest[0]), t });
  }
}

async function chaos() {
  publishTargets();
  writeSync(CHAOS, 'R\n');
  while (!stopping) {
    await untilStop(20);
    publishTargets();
    readFaults();
  }
  writeSync(CHAOS, 'C\n');
}

/** Written "C" when the run stops: the driver sends no more faults and continues every stopped participant. */
const CHAOS = 3;

function signal(pid, sig) {
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

function watchdog() {
  const now = Date.now();
  for (const entry of live.values()) {
    const since = watch.typed[entry.slot];
    if (since !== 0 && runClock.at(now) - runClock.at(since) > CHILD_DEADLINE_MS && !entry.watchdogKilled) {
      hang(`${entry.name} pid ${entry.pid}: one operation has run ${((now - since) / 1000).toFixed(1)} s (over ${CHILD_DEADLINE_MS / 1000} s of the run's clock)`);
      entry.watchdogKilled = true;
      signal(entry.pid, 'SIGKILL');
    }
  }
}

/**
 * The event loop's hold on what tells this process of a child's exit (each
 * child's pidfd) and of a wait's end (the async-wait ring). A fault there is a
 * notification that can no longer come, which shows as a hang only when that
 * one is needed; this finds it at once. The same fault in two samples with a
 * poll for events between them is a violation: one sample can catch a watch
 * just started (the loop adds it to its epoll set as it polls next) or an
 * exit not yet read. The samples also time the loop's turns: Node 20's libuv
 * (1.46, before libuv#4245 was fixed) can run timers back to back without
 * polling while their callbacks keep making new ones due, and a run whose
 * notifications wait that long is told apart from one whose were lost.
 */
let watchFaults = new Set();
const watchFaultsReported = new Set();
const loopTurns = { last: -1, since: performance.now(), longestMs: 0 };

function describeFd(fd) {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return 'closed';
  }
}

function watchProblems(what, w, fdNow, out) {
  if (!w.active) out.push(`${what}: its poll handle is not active`);
  if (w.loopWatcher !== 'ours') out.push(`${what}: the loop's watcher for fd ${w.fd} is ${w.loopWatcher === 'none' ? 'missing' : 'another handle'}`);
  if (!w.inEpoll) out.push(`${what}: fd ${w.fd} is not in the loop's epoll set`);
  if (fdNow !== null) out.push(`${what}: fd ${w.fd} is now ${fdNow}`);
}

/** How long the event loop has gone without polling for events, in ms (0: it turned since the last sample). */
function loopStalledMs() {
  return loopTurns.last === native.loopTurns() ? Math.round(performance.now() - loopTurns.since) : 0;
}

function auditWatches() {
  const now = performance.now();
  const turns = native.loopTurns();
  if (turns === loopTurns.last) {
    loopTurns.longestMs = Math.max(loopTurns.longestMs, now - loopTurns.since);
    return;
  }
  loopTurns.last = turns;
  loopTurns.since = now;
  const { ring, ...waits } = native.waiterState();
  const found = [];
  for (const w of native.exitWatches()) {
    if (w.sigchld || !w.watched) continue;
    const what = `exit watch of pid ${w.pid}`;
    watchProblems(what, w, w.fdPid === w.pid ? null : w.fdPid ? `the pidfd of ${w.fdPid}` : describeFd(w.fd), found);
    if (w.readable) found.push(`${what}: it has exited (its pidfd ${w.fd} is readable) and the loop has not told`);
  }
  if (ring !== undefined) {
    const what = `async-wait ring (fd ${ring.fd})`;
    const kind = describeFd(ring.fd);
    watchProblems(what, ring, kind === 'anon_inode:[io_uring]' ? null : kind, found);
    // Unread at two samples is news only if none was read in between.
    if (ring.completionsUnread > 0) found.push(`${what}: completions wait unread, ${ring.completionsRead} read so far (${ring.waits} waits on it)`);
  }
  for (const problem of found) {
    if (watchFaults.has(problem) && !watchFaultsReported.has(problem)) {
      watchFaultsReported.add(problem);
      violation(`${problem}, though the loop polled for events since the last look; waits: ${JSON.stringify(waits)}`);
    }
  }
  watchFaults = new Set(found);
}

// ---------------------------------------------------------------- the run

function procState(pid) {
  const state = roles.procState(pid);
  return state === null ? 'gone' : `state ${state}`;
}

function fdTargets() {
  const out = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // The directory's own descriptor, gone by now.
    }
  }
  return out;
}

/**
 * Opens what lives as long as this process before the descriptors are
 * counted: the fork server's connection, Node's stdio streams (made on first
 * use; on a pipe, Node opens a /dev/null descriptor with them) and the fault
 * log.
 */
async function warmUp() {
  readFaults();
  void process.stdout;
  void process.stderr;
  for (const method of ['forkserver', 'fork']) {
    const p = new (getContext(method).Process)({ target: roles.idle });
    p.start();
    await p.join();
    p.close();
  }
}

/**
 * Descriptors open now beyond `before`, by what they point to: a socket or
 * pipe by kind (the fork server's change with each restart). Left out: the
 * ones a process opens once and keeps by design (the run-queue readers of
 * native/sched.cc and the async-wait ring), opened whenever a wait first needs them,
 * and shared mappings (memfds), which are memory: they go when the collector
 * takes their objects, and the arena keeps its current chunk. Those are
 * counted apart (`memfds`): a few more at the end is the arena moving on; a
 * leak would show as many.
 */
function fdSurplus(before, after) {
  const kind = (f) => f.replace(/^\d+ -> /, '').replace(/^(socket|pipe):\[\d+\]$/, '$1');
  const lifetime = new Set(['/proc/loadavg', `/proc/${process.pid}/schedstat`, 'anon_inode:[io_uring]']);
  const counts = new Map();
  for (const f of before) counts.set(kind(f), (counts.get(kind(f)) ?? 0) + 1);
  const extra = [];
  for (const f of after) {
    if (lifetime.has(kind(f)) || kind(f).startsWith('/memfd:')) continue;
    const n = counts.get(kind(f)) ?? 0;
    if (n > 0) counts.set(kind(f), n - 1);
    else extra.push(f);
  }
  return extra;
}

const isMemfd = (f) => f.includes('/memfd:');

/**
 * The main thread's time on a CPU and waiting in a run queue for one, in
 * seconds (Linux's schedstat; null elsewhere): the harness's loop turns
 * slowly when it must wait for a CPU among the run's own processes.
 */
function mainThreadTimes() {
  try {
    const [onCpu, waiting] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'latin1').split(' ').map(Number);
    return { onCpuS: onCpu / 1e9, runQueueS: waiting / 1e9 };
  } catch {
    return null;
  }
}

async function main() {
  await warmUp();
  const fdsBefore = fdTargets();
  const rss = [];
  let shmMax = 0;
  const t0 = Date.now();
  const timesBefore = mainThreadTimes();
  const sampler = setInterval(() => {
    rss.push({ t: Date.now() - t0, mb: process.memoryUsage.rss() / 2 ** 20 });
    shmMax = Math.max(shmMax, shmEntries().length);
    watchdog();
    auditWatches();
  }, 500);

  const queueRun = queueWork();
  const runs = [counterWork(), ...pools.map(poolWork), echoWork(), shmWork(), managerWork(), chaos()];
  const progress = setInterval(() => {
    const ops = histTyped.reduce((a, b) => a + b, 0);
    process.stderr.write(
      `soak: ${Math.round((Date.now() - t0) / 1000)} s, ${ops} operations, ${counts.kill} kills, ${counts.stop} stops, ` +
        `${violations.length} violations, ${hangs.length} hangs, ${live.size} participants\n`,
    );
  }, 10_000);

  await sleep(opts.seconds * 1000);
  const ranMs = Date.now() - t0;
  const timesAfter = mainThreadTimes();
  stopping = true;
  stopNow();
  ctl.typed[CTL.STOP] = 1;
  history.add('stopping');
  clearInterval(progress);

  // Each step of the wind-down has a deadline too; one that passes is a hang,
  // reported with who was still running, and the run ends there.
  const steps = [
    ['the participants to finish (queues drained)', () => Promise.all([drainQueues(queueRun), ...runs])],
    ['the final check of the counters', () => checkCounters()],
    ...pools.map((P) => [`${P.name} to close and join`, () => (P.pool.close(), P.pool.join()), P.pool]),
  ];
  for (const [what, step, pool] of steps) {
    history.add('wind-down', { what });
    const r = await deadline(`waiting for ${what}`, step(), 90_000);
    if (r.hang) {
      const who = [...live.values()].map((e) => `${e.name} pid ${e.pid} (${procState(e.pid)}, op since ${watch.typed[e.slot] ? Date.now() - watch.typed[e.slot] : '-'} ms)`);
      hangs.at(-1).message += `; still running: ${who.join(', ') || 'none'}`;
      if (pool) hangs.at(-1).message += `; the pool now: ${JSON.stringify(poolState(pool))}`;
      break;
    }
    if ('error' in r) violation(`${what}: ${r.error?.stack ?? r.error}`);
  }
  clearInterval(sampler);
  if (ctl.typed[CTL.FOREIGN] > 0) violation(`the harness's code ran in a forked child ${ctl.typed[CTL.FOREIGN]} time(s) (stack on stderr)`);

  const leaks = [];
  if (activeChildren().length > 0) leaks.push(`children still running: ${activeChildren().map((p) => `${p.name} ${p.pid}`).join(', ')}`);
  globalThis.gc?.();
  await sleep(100);
  globalThis.gc?.();
  const fdsAfter = fdTargets();
  const extra = fdSurplus(fdsBefore, fdsAfter);
  const rssQuarter = rss.find((s) => s.t >= ranMs / 4)?.mb ?? rss[0]?.mb ?? 0;
  const rssEnd = rss.at(-1)?.mb ?? 0;
  const rssGrowth = rssEnd - rssQuarter;
  const result = {
    seconds: Math.round(ranMs / 1000),
    seed: opts.seed,
    operations: histTyped.reduce((a, b) => a + b, 0),
    faults: { kill: counts.kill, stop: counts.stop },
    violations: violations.length,
    hangs: hangs.length,
    leaks: leaks.length,
    p50Ms: quantileMs(histTyped, 0.5),
    p99Ms: quantileMs(histTyped, 0.99),
    detail: {
      ...counts,
      messages: Object.fromEntries(queues.map((Q) => [Q.name, { received: Q.ledger.received, bytes: Q.ledger.bytes, consumersKilled: Q.ledger.consumersKilled }])),
      counters: Object.fromEntries(counters.map((C) => [C.kind, C.total])),
      forkserverDeaths,
      shmSegmentsMax: shmMax,
      fds: { before: fdsBefore.length, after: fdsAfter.length, unexplained: extra },
      memfds: { before: fdsBefore.filter(isMemfd).length, after: fdsAfter.filter(isMemfd).length },
      rssMb: { quarter: +rssQuarter.toFixed(1), end: +rssEnd.toFixed(1), max: +Math.max(...rss.map((s) => s.mb)).toFixed(1), growthAfterQuarter: +rssGrowth.toFixed(1) },
      // The longest the event loop went without polling for events, as the 500 ms samples saw it.
      loopStallMaxMs: Math.round(loopTurns.longestMs),
      // Over the run, before the wind-down.
      mainThread:
        timesBefore === null || timesAfter === null
          ? null
          : { onCpuS: +(timesAfter.onCpuS - timesBefore.onCpuS).toFixed(1), runQueueS: +(timesAfter.runQueueS - timesBefore.runQueueS).toFixed(1) },
      slowest,
      slowCalls,
    },
    violationList: violations,
    hangList: hangs,
    leakList: leaks,
    history: brokenHistory,
  };
  writeFileSync(opts.out, JSON.stringify(result, null, 2));
  process.exit(0);
}

await main();
