// Queue throughput, latency and bandwidth between processes (issue #4), beside
// Python's mp.Queue, worker_threads postMessage and child_process IPC. Every
// row is a time (per message, per round trip, per MiB), so lower is better and
// peer / nodemp above 1 means nodemp is faster. Throughput rounds start every
// producer and consumer behind one gate (forks outside the clock) and run from
// the gate opening to the last message consumed; consumers check what they
// get, in order where there is one producer. Prints one JSON object.
import { Worker } from 'node:worker_threads';
import { Queue } from '../dist/index.js';
import { native } from '../dist/native.js';
import { median } from './lib.js';
import { IpcPeer, WorkerHost, asyncRoundTrips, checkTotals, gated, obj, python, stamp, withEchoChild } from './messaging.js';

const quick = process.argv.includes('--quick');
const passes = quick ? 3 : 5;
// Per pass; nodemp's children warm up first (see warmChild). The peers that are far slower get fewer messages: enough to run well past
// their start-up costs, not so many that they dominate the run.
const N = quick ? 100_000 : 400_000;
const N_PY = quick ? 5_000 : 40_000;
const N_IPC = quick ? 5_000 : 40_000;
const N_MIB = quick ? 32 : 128;
const N_MIB_PY = quick ? 16 : 64;
const PING = quick ? 500 : 10_000;
const PING_PEER = quick ? 300 : 2000;
const WARMUP = 200;
const MIB = 1 << 20;

// ---- what producers and consumers run ----------------------------------

function putObjects(q, start, n) {
  for (let i = start; i < start + n; i++) q.putSync({ i });
}

// One Buffer, its first four bytes the sequence number: putSync copies it
// into the ring before returning, so reuse is safe and allocation-free.
function putBytes(q, buf, n) {
  for (let i = 0; i < n; i++) {
    buf.writeUInt32LE(i, 0);
    q.putSync(buf);
  }
}

function getObjects(q, n, ordered) {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const i = q.getSync().i;
    if (ordered && i !== k) throw new Error(`message ${i} arrived where ${k} was expected`);
    sum += i;
  }
  return { count: n, sum };
}

function getBytes(q, n, size) {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const m = q.getSync();
    if (m.length !== size) throw new Error(`a message of ${m.length} bytes where ${size} were sent`);
    const i = m.readUInt32LE(0);
    if (i !== k) throw new Error(`message ${i} arrived where ${k} was expected`);
    sum += i;
  }
  return { count: n, sum };
}

// The same check without a Buffer per message: each is written into `into`.
function getBytesInto(q, n, into) {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const length = q.getBytesIntoSync(into);
    if (length !== into.length) throw new Error(`a message of ${length} bytes where ${into.length} were sent`);
    const i = into.readUInt32LE(0);
    if (i !== k) throw new Error(`message ${i} arrived where ${k} was expected`);
    sum += i;
  }
  return { count: n, sum };
}

function pingLoop(qa, qb, total) {
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    qa.putSync({ i });
    const m = qb.getSync();
    const t = performance.now();
    if (m.i !== i) throw new Error(`ping-pong answer ${m.i} where ${i} was expected`);
    if (i >= WARMUP) samples.push((t - t0) * 1000);
  }
  return samples;
}

function echoLoop(qa, qb, total) {
  for (let i = 0; i < total; i++) qb.putSync(qa.getSync());
}

const q = new Queue();
// Messages above a quarter of the ring go through a shared-memory segment of
// their own; this ring holds 1 MiB messages in place, for comparison.
const wide = new Queue({ ringSize: 16 << 20 });
const qa = new Queue();
const qb = new Queue();
const small = Buffer.alloc(64);
const smallInto = Buffer.alloc(64);
const big = Buffer.alloc(MIB);

// A forked child starts with the parent's optimized code, but the first put
// or get of each queue in a new process takes branches that code never saw
// (this process's party entry, its feeder), and V8 drops it and compiles
// again: a fresh child runs its first 10,000 or so messages several times
// slower. Each child first moves messages of every kind through a queue of
// its own, outside the clock, so the rows are steady-state rates, as the
// Worker peers' are after their untimed round.
function warmChild() {
  const own = new Queue();
  for (let r = 0; r < 10; r++) throughOne(own);
}

/** 1,000 messages of each kind through `queue`, put then taken. */
function throughOne(queue) {
  putObjects(queue, 0, 1000);
  getObjects(queue, 1000, true);
  putBytes(queue, small, 1000);
  getBytes(queue, 1000, 64);
  putBytes(queue, small, 1000);
  getBytesInto(queue, 1000, smallInto);
}

function mustBeEmpty(queue) {
  if (queue.qsize() !== 0) throw new Error(`${queue.qsize()} messages left over after a round`);
}

// A forked child inherits the parent's compiled code: running every loop here
// first lets the children start with it optimized, as the Worker peers warm
// up in an untimed round of their own, so all sides are timed in steady state.
for (let r = 0; r < 50; r++) {
  throughOne(q);
  putObjects(q, 0, 1000);
  getObjects(q, 1000, false);
  for (let i = 0; i < 1000; i++) {
    qa.putSync({ i });
    echoLoop(qa, qb, 1);
    qb.getSync();
  }
}
for (let r = 0; r < 4; r++) {
  for (const queue of [q, wide]) {
    putBytes(queue, big, 2);
    getBytes(queue, 2, MIB);
  }
}
mustBeEmpty(q);
mustBeEmpty(wide);

function nodempObjects() {
  const ms = gated([() => putObjects(q, 0, N)], [() => getObjects(q, N, true)], N, warmChild);
  mustBeEmpty(q);
  return (ms * 1e6) / N;
}

function nodempBytes(queue, buf, n) {
  const ms = gated([() => putBytes(queue, buf, n)], [() => getBytes(queue, n, buf.length)], n, warmChild);
  mustBeEmpty(queue);
  return (ms * 1e6) / n;
}

function nodempBytesInto() {
  const ms = gated([() => putBytes(q, small, N)], [() => getBytesInto(q, N, smallInto)], N, warmChild);
  mustBeEmpty(q);
  return (ms * 1e6) / N;
}

// The floor under the 64-byte row: the least any ring costs here. One
// producer, one consumer, no compare-and-swap, no counters, each side reading
// the other's index only when it has to, one Atomics.store per message per
// side. 'copy' gives the consumer a fresh Buffer per message, as Queue.get()
// must; 'in place' only reads each message where it lies.
const FLOOR_SLOTS = 1 << 14;
const floorMem = native.mapShared(128 + FLOOR_SLOTS * 64);
const floorIdx = new Int32Array(floorMem, 0, 32);
const floorData = new Uint8Array(floorMem, 128);
const TAIL = 0;
const HEAD = 16;

function floorPut(buf, n) {
  let head = 0;
  for (let tail = 0; tail < n; ) {
    while (tail - head >= FLOOR_SLOTS) head = Atomics.load(floorIdx, HEAD);
    buf.writeUInt32LE(tail, 0);
    floorData.set(buf, (tail & (FLOOR_SLOTS - 1)) * 64);
    Atomics.store(floorIdx, TAIL, ++tail);
  }
}

function floorGet(n, copy) {
  let tail = 0;
  let sum = 0;
  for (let head = 0; head < n; ) {
    while (head === tail) tail = Atomics.load(floorIdx, TAIL);
    const at = (head & (FLOOR_SLOTS - 1)) * 64;
    if (copy) {
      const m = Buffer.allocUnsafe(64);
      m.set(floorData.subarray(at, at + 64));
      sum += m.readUInt32LE(0);
    } else {
      sum += (floorData[at] | (floorData[at + 1] << 8) | (floorData[at + 2] << 16) | (floorData[at + 3] << 24)) >>> 0;
    }
    Atomics.store(floorIdx, HEAD, ++head);
  }
  return { count: n, sum };
}

function floorRound(copy) {
  Atomics.store(floorIdx, TAIL, 0);
  Atomics.store(floorIdx, HEAD, 0);
  return (gated([() => floorPut(small, N)], [() => floorGet(N, copy)], N) * 1e6) / N;
}

function nodempMany() {
  const share = N / 4;
  const producers = [0, 1, 2, 3].map((p) => () => putObjects(q, p * share, share));
  const consumers = [0, 1, 2, 3].map(() => () => getObjects(q, share, false));
  const ms = gated(producers, consumers, N, warmChild);
  mustBeEmpty(q);
  return (ms * 1e6) / N;
}

function nodempPing() {
  return withEchoChild(() => echoLoop(qa, qb, PING + WARMUP), () => pingLoop(qa, qb, PING + WARMUP));
}

function nodempPingAsync() {
  return withEchoChild(
    async () => {
      for (let i = 0; i < PING + WARMUP; i++) qb.putSync(await qa.get());
    },
    () => asyncRoundTrips(PING, WARMUP, (m) => qa.putSync(m), () => qb.get()),
  );
}

// ---- worker_threads, 4 producers and 4 consumers --------------------------

// No shared queue to contend on here: four producer Workers each post to a
// consumer Worker of their own over a MessageChannel, behind the same kind of
// gate. Words: 0 gate generation (-1: exit), 1 producers ready, 2 consumers
// done, 3 a consumer failed (the main thread waits in Atomics.wait, where no
// 'error' event can reach it); then one float64 sum per consumer.
const pairSource = `
const { workerData: { sab, port, role, index, start, n } } = require('node:worker_threads');
const w = new Int32Array(sab, 0, 4);
const sums = new Float64Array(sab, 16, 4);
if (role === 'producer') {
  for (let gen = 0; ; ) {
    Atomics.add(w, 1, 1);
    Atomics.notify(w, 1);
    Atomics.wait(w, 0, gen);
    gen = Atomics.load(w, 0);
    if (gen < 0) break;
    for (let i = start; i < start + n; i++) port.postMessage({ i });
  }
  port.close();
} else {
  let count = 0;
  let sum = 0;
  port.on('message', (m) => {
    if (m.i !== start + count) {
      Atomics.store(w, 3, 1);
      Atomics.notify(w, 2);
      throw new Error('message ' + m.i + ' arrived where ' + (start + count) + ' was expected');
    }
    sum += m.i;
    if (++count === n) {
      sums[index] = sum;
      count = sum = 0;
      Atomics.add(w, 2, 1);
      Atomics.notify(w, 2);
    }
  });
}
`;

class WorkerPairs {
  constructor() {
    this.sab = new SharedArrayBuffer(16 + 4 * 8);
    this.w = new Int32Array(this.sab, 0, 4);
    this.sums = new Float64Array(this.sab, 16, 4);
    this.workers = [];
    const share = N / 4;
    for (let p = 0; p < 4; p++) {
      const { port1, port2 } = new MessageChannel();
      const common = { sab: this.sab, index: p, start: p * share, n: share };
      this.workers.push(
        new Worker(pairSource, { eval: true, workerData: { ...common, port: port1, role: 'producer' }, transferList: [port1] }),
        new Worker(pairSource, { eval: true, workerData: { ...common, port: port2, role: 'consumer' }, transferList: [port2] }),
      );
    }
    // Kept for the timeout's message: while the main thread waits in
    // Atomics.wait no 'error' event is delivered.
    this.errors = [];
    for (const wk of this.workers) wk.on('error', (e) => this.errors.push(e));
  }

  #await(index, value) {
    const deadline = performance.now() + 120_000;
    for (let seen; (seen = Atomics.load(this.w, index)) < value; ) {
      if (Atomics.load(this.w, 3) !== 0) throw new Error('worker_threads 4P/4C: a consumer got a message out of order');
      if (performance.now() > deadline) throw new Error(`worker_threads 4P/4C round never finished ${this.errors[0] ?? ''}`);
      Atomics.wait(this.w, index, seen, 100);
    }
  }

  round() {
    this.#await(1, 4);
    Atomics.store(this.w, 1, 0);
    Atomics.store(this.w, 2, 0);
    const t0 = performance.now();
    Atomics.add(this.w, 0, 1);
    Atomics.notify(this.w, 0);
    this.#await(2, 4);
    const ms = performance.now() - t0;
    checkTotals('worker_threads 4P/4C', { count: N, sum: this.sums.reduce((a, b) => a + b, 0) }, N);
    return (ms * 1e6) / N;
  }

  async close() {
    this.#await(1, 4);
    Atomics.store(this.w, 0, -1);
    Atomics.notify(this.w, 0);
    await Promise.all(this.workers.map((wk) => wk.terminate()));
  }
}

// ---- the passes ---------------------------------------------------------------

const objects = { nodemp: [], python: [], workers: [], ipc: [] };
const bytes64 = { nodemp: [], into: [], python: [], workers: [], floorCopy: [], floorInPlace: [] };
const many = { nodemp: [], python: [], workers: [] };
const ping = { nodemp: [], nodempAsync: [], python: [], workers: [], ipc: [] };
const mib = { nodemp: [], wide: [], python: [], workers: [] };
let havePython = true;

const ipcSink = await IpcPeer.start('sink', N_IPC);
const ipcEcho = await IpcPeer.start('echo', 0);
await ipcSink.sink(N_IPC, obj);
await ipcEcho.pingPong(WARMUP, WARMUP);

// nodemp cannot fork while a Worker runs (its thread would be half-copied):
// each pass starts its Workers after the forked rounds and ends them before
// the next, each with an untimed warm-up round of its own.
async function workerRounds() {
  const host = new WorkerHost([
    { mode: 'sink', kind: 'obj', n: N },
    { mode: 'sink', kind: 'bytes', size: 64, n: N },
    { mode: 'sink', kind: 'bytes', size: MIB, n: N_MIB },
    { mode: 'echo' },
  ]);
  const [objectSink, bytesSink, mibSink, echo] = host.peers;
  const pairs = new WorkerPairs();
  try {
    await objectSink.sink(N, obj);
    objects.workers.push(((await objectSink.sink(N, obj)) * 1e6) / N);
    await bytesSink.sink(N, stamp(small));
    bytes64.workers.push(((await bytesSink.sink(N, stamp(small))) * 1e6) / N);
    pairs.round();
    many.workers.push(pairs.round());
    ping.workers.push(...(await echo.pingPong(PING_PEER + WARMUP * 2, WARMUP * 2)));
    await mibSink.sink(N_MIB, stamp(big));
    mib.workers.push((await mibSink.sink(N_MIB, stamp(big))) / N_MIB);
  } finally {
    await Promise.all([host.close(), pairs.close()]);
  }
}

// Passes alternate between all sides, so a noisy stretch of the machine's time
// lands on every one of them.
for (let p = 0; p < passes; p++) {
  objects.nodemp.push(nodempObjects());
  bytes64.nodemp.push(nodempBytes(q, small, N));
  bytes64.into.push(nodempBytesInto());
  bytes64.floorCopy.push(floorRound(true));
  bytes64.floorInPlace.push(floorRound(false));
  many.nodemp.push(nodempMany());
  ping.nodemp.push(...(await nodempPing()));
  ping.nodempAsync.push(...(await nodempPingAsync()));
  mib.nodemp.push(nodempBytes(q, big, N_MIB) / 1e6);
  mib.wide.push(nodempBytes(wide, big, N_MIB) / 1e6);

  const py = python([
    ['queue', 'obj', 1, 1, N_PY],
    ['queue', 'b64', 1, 1, N_PY],
    ['queue', 'obj', 4, 4, N_PY],
    ['queue_ping', PING_PEER],
    ['queue', 'mib', 1, 1, N_MIB_PY],
  ]);
  if (py === null) havePython = false;
  else {
    objects.python.push(...py[0].ns_per_msg);
    bytes64.python.push(...py[1].ns_per_msg);
    many.python.push(...py[2].ns_per_msg);
    ping.python.push(...py[3].round_trip_us);
    mib.python.push(...py[4].ns_per_msg.map((ns) => ns / 1e6));
  }

  await workerRounds();

  objects.ipc.push(((await ipcSink.sink(N_IPC, obj)) * 1e6) / N_IPC);
  ping.ipc.push(...(await ipcEcho.pingPong(PING_PEER + WARMUP, WARMUP)));
}

await Promise.all([ipcSink.close(), ipcEcho.close()]);

const py = (xs) => (havePython ? median(xs) : null);
console.log(JSON.stringify({
  'Queue 1 producer/1 consumer, small objects { i }, time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(objects.nodemp),
    'python mp.Queue': py(objects.python),
    'worker_threads postMessage to a Worker (MessageChannel)': median(objects.workers),
    'child_process IPC (process.send)': median(objects.ipc),
  },
  'Queue 1 producer/1 consumer, 64-byte Buffers, time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(bytes64.nodemp),
    'python mp.Queue, 64-byte bytes': py(bytes64.python),
    'worker_threads postMessage of a Uint8Array copy': median(bytes64.workers),
    'floor: bare 1P/1C ring, no CAS or counters, a fresh Buffer per message': median(bytes64.floorCopy),
  },
  'Queue 1 producer/1 consumer, 64-byte Buffers taken with getBytesIntoSync (no Buffer per message), time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(bytes64.into),
    'python mp.Queue, 64-byte bytes (same samples as above)': py(bytes64.python),
    'floor: bare 1P/1C ring, no CAS or counters, each message read in place (no copy)': median(bytes64.floorInPlace),
  },
  'Queue 4 producers/4 consumers (8 processes), small objects, time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(many.nodemp),
    'python mp.Queue, 4P/4C': py(many.python),
    'worker_threads, 4 Worker pairs on own MessageChannels': median(many.workers),
  },
  'Queue ping-pong round trip, two processes (putSync/getSync)': {
    unit: 'us',
    nodemp: median(ping.nodemp),
    'python mp.Queue': py(ping.python),
    'worker_threads postMessage echo': median(ping.workers),
    'child_process IPC echo': median(ping.ipc),
  },
  'Queue ping-pong round trip, two processes (await get())': {
    unit: 'us',
    nodemp: median(ping.nodempAsync),
    'worker_threads postMessage echo (same samples as above)': median(ping.workers),
    'child_process IPC echo (same samples as above)': median(ping.ipc),
  },
  'Queue 1 MiB Buffer messages 1P/1C, time per MiB (lower is better)': {
    unit: 'ms/MiB',
    nodemp: median(mib.nodemp),
    'python mp.Queue, 1 MiB bytes': py(mib.python),
    'worker_threads postMessage of a Uint8Array copy': median(mib.workers),
  },
  'Queue({ ringSize: 16 MiB }) 1 MiB Buffer messages 1P/1C, in the ring, time per MiB (lower is better)': {
    unit: 'ms/MiB',
    nodemp: median(mib.wide),
    'python mp.Queue, 1 MiB bytes (same samples as above)': py(mib.python),
    'worker_threads postMessage of a Uint8Array copy (same samples as above)': median(mib.workers),
  },
}));
