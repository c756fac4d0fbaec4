// Pipe throughput, latency and bandwidth between processes (issue #4), beside
// Python's mp.Pipe and worker_threads MessageChannel. Every row is a time (per
// message, per round trip, per MiB), so lower is better and peer / nodemp above
// 1 means nodemp is faster. Throughput rounds send over a one-way Pipe (an OS
// pipe, as Python's Pipe(duplex=False)) from a producer child to a consumer
// child, both started behind one gate (forks outside the clock), from the gate
// opening to the last message received and checked. Prints one JSON object.
import { Pipe } from '../dist/index.js';
import { echoLoop, median, pingLoop } from './lib.js';
import { WorkerHost, asyncRoundTrips, gated, obj, python, stamp, withEchoChild } from './messaging.js';

const quick = process.argv.includes('--quick');
const passes = quick ? 3 : 5;
// Per pass; Python, far slower per message, gets fewer so it does not dominate the run.
const N = quick ? 50_000 : 400_000;
const N_PY = quick ? 5_000 : 80_000;
const N_BIG = quick ? 4 : 32;
const N_BIG_PY = quick ? 2 : 16;
const PING = quick ? 500 : 10_000;
const PING_PEER = quick ? 500 : 4000;
const WARMUP = 200;
const BIG = 16 << 20;
const MIB = 1 << 20;

// ---- what producers and consumers run ----------------------------------

function sendObjects(conn, n) {
  for (let i = 0; i < n; i++) conn.send({ i });
}

// One Buffer, its first four bytes the sequence number: sendBytes writes it
// out before returning, so reuse is safe and allocation-free.
function sendBytes(conn, buf, n) {
  for (let i = 0; i < n; i++) {
    buf.writeUInt32LE(i, 0);
    conn.sendBytes(buf);
  }
}

function recvObjects(conn, n) {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const i = conn.recvSync().i;
    if (i !== k) throw new Error(`message ${i} arrived where ${k} was expected`);
    sum += i;
  }
  return { count: n, sum };
}

function recvBytes(conn, n, size) {
  let sum = 0;
  for (let k = 0; k < n; k++) {
    const m = conn.recvBytesSync();
    if (m.length !== size) throw new Error(`a message of ${m.length} bytes where ${size} were sent`);
    const i = m.readUInt32LE(0);
    if (i !== k) throw new Error(`message ${i} arrived where ${k} was expected`);
    sum += i;
  }
  return { count: n, sum };
}

const [reader, writer] = Pipe({ duplex: false });
const [near, far] = Pipe();
const small = Buffer.alloc(64);
const big = Buffer.alloc(BIG);

function mustBeDrained() {
  if (reader.poll(0)) throw new Error('messages left over in the pipe after a round');
}

// A forked child inherits the parent's compiled code: running the loops here
// first lets the children start with them optimized, as the Worker peers warm
// up in an untimed round of their own. Batches stay well inside the kernel's
// pipe buffer, so sending never blocks with nobody reading. The 16 MiB row
// spends its time in system calls and copies, not in JavaScript.
for (let r = 0; r < 200; r++) {
  sendObjects(writer, 100);
  recvObjects(reader, 100);
  sendBytes(writer, small, 100);
  recvBytes(reader, 100, 64);
  for (let i = 0; i < 100; i++) {
    near.send({ i });
    echoLoop(far, 1);
    near.recvSync();
  }
}
mustBeDrained();

function nodempObjects() {
  const ms = gated([() => sendObjects(writer, N)], [() => recvObjects(reader, N)], N);
  mustBeDrained();
  return (ms * 1e6) / N;
}

function nodempBytes(buf, n) {
  const ms = gated([() => sendBytes(writer, buf, n)], [() => recvBytes(reader, n, buf.length)], n);
  mustBeDrained();
  return (ms * 1e6) / n;
}

function nodempPing() {
  return withEchoChild(() => echoLoop(far, PING + WARMUP), () => pingLoop(near, PING + WARMUP, WARMUP));
}

function nodempPingAsync() {
  return withEchoChild(
    async () => {
      for (let i = 0; i < PING + WARMUP; i++) far.send(await far.recv());
    },
    () => asyncRoundTrips(PING, WARMUP, (m) => near.send(m), () => near.recv()),
  );
}

// ---- the passes ---------------------------------------------------------------

const objects = { nodemp: [], python: [], workers: [] };
const bytes64 = { nodemp: [], python: [], workers: [] };
const ping = { nodemp: [], nodempAsync: [], python: [], workers: [] };
const large = { nodemp: [], python: [], workers: [] };
let havePython = true;

// nodemp cannot fork while a Worker runs (its thread would be half-copied):
// each pass starts its Workers after the forked rounds and ends them before
// the next, each with an untimed warm-up round of its own. The Worker gets its
// messages on MessageChannels, the closest thing worker_threads has to a Pipe.
async function workerRounds() {
  const host = new WorkerHost([
    { mode: 'sink', kind: 'obj', n: N },
    { mode: 'sink', kind: 'bytes', size: 64, n: N },
    { mode: 'sink', kind: 'bytes', size: BIG, n: N_BIG },
    { mode: 'echo' },
  ]);
  const [objectSink, bytesSink, bigSink, echo] = host.peers;
  try {
    await objectSink.sink(N, obj);
    objects.workers.push(((await objectSink.sink(N, obj)) * 1e6) / N);
    await bytesSink.sink(N, stamp(small));
    bytes64.workers.push(((await bytesSink.sink(N, stamp(small))) * 1e6) / N);
    ping.workers.push(...(await echo.pingPong(PING_PEER + WARMUP * 2, WARMUP * 2)));
    large.workers.push((await bigSink.sink(N_BIG, stamp(big))) / (N_BIG * (BIG / MIB)));
  } finally {
    await host.close();
  }
}

// Passes alternate between all sides, so a noisy stretch of the machine's time
// lands on every one of them.
for (let p = 0; p < passes; p++) {
  objects.nodemp.push(nodempObjects());
  bytes64.nodemp.push(nodempBytes(small, N));
  ping.nodemp.push(...(await nodempPing()));
  ping.nodempAsync.push(...(await nodempPingAsync()));
  large.nodemp.push(nodempBytes(big, N_BIG) / 1e6 / (BIG / MIB));

  const py = python([
    ['pipe', 'obj', N_PY],
    ['pipe', 'b64', N_PY],
    ['pipe_ping', PING_PEER],
    ['pipe', 'mib16', N_BIG_PY],
  ]);
  if (py === null) havePython = false;
  else {
    objects.python.push(...py[0].ns_per_msg);
    bytes64.python.push(...py[1].ns_per_msg);
    ping.python.push(...py[2].round_trip_us);
    large.python.push(...py[3].ns_per_msg.map((ns) => ns / 1e6 / (BIG / MIB)));
  }

  await workerRounds();
}

const py = (xs) => (havePython ? median(xs) : null);
console.log(JSON.stringify({
  'Pipe 1 producer/1 consumer, small objects { i } (send/recvSync), time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(objects.nodemp),
    'python mp.Pipe send/recv': py(objects.python),
    'worker_threads MessageChannel postMessage': median(objects.workers),
  },
  'Pipe 1 producer/1 consumer, 64-byte messages (sendBytes/recvBytesSync), time per message (lower is better)': {
    unit: 'ns/msg',
    nodemp: median(bytes64.nodemp),
    'python mp.Pipe send_bytes/recv_bytes': py(bytes64.python),
    'worker_threads MessageChannel, Uint8Array copy': median(bytes64.workers),
  },
  'Pipe ping-pong round trip, two processes (send/recvSync)': {
    unit: 'us',
    nodemp: median(ping.nodemp),
    'python mp.Pipe': py(ping.python),
    'worker_threads MessageChannel echo': median(ping.workers),
  },
  'Pipe ping-pong round trip, two processes (await recv())': {
    unit: 'us',
    nodemp: median(ping.nodempAsync),
    'worker_threads MessageChannel echo (same samples as above)': median(ping.workers),
  },
  'Pipe 16 MiB messages 1P/1C (sendBytes/recvBytesSync), time per MiB (lower is better)': {
    unit: 'ms/MiB',
    nodemp: median(large.nodemp),
    'python mp.Pipe send_bytes/recv_bytes': py(large.python),
    'worker_threads MessageChannel, Uint8Array copy': median(large.workers),
  },
}));
