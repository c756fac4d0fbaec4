// Listener, Client and socket Connections between processes (issue #14),
// beside Python's multiprocessing.connection: a client's connect, authkey
// handshake and close against a Listener accepting in another process (and
// the connect and close alone, the part that is not the handshake), and the
// round trip of a small object to an echo in another process over TCP
// loopback and over a Unix socket. Every row is a time, so lower is better
// and peer / nodemp above 1 means nodemp is faster. Prints one JSON object.
//
// Where the scheduler puts the two processes decides the round trip: on two
// CPUs a waiter that sleeps costs its partner a cross-CPU wake-up, on one CPU
// a waiter that spins holds up the partner it waits for. On a small, busy
// machine the same run can land either way, so the TCP round trip is also
// timed with both processes pinned (taskset; Linux) to two CPUs and to one.
//
// nodemp's handshake is HMAC-SHA256 both ways, Python 3.12's. python3 may be
// older and use its own default, HMAC-MD5 (its column says which); then a
// python3.13 or python3.12 on PATH is timed beside it, as the peer that does
// the same work.
import { spawnSync } from 'node:child_process';
import { Client, ClientSync, Listener } from '../dist/index.js';
import { echoLoop, median, pingLoop, pythonPeer } from './lib.js';
import { withEchoChild } from './messaging.js';

const quick = process.argv.includes('--quick');
const passes = quick ? 3 : 5;
// Per pass. A connection can hold its client port in TIME_WAIT for a
// minute, but only towards the listener it reached: the full run's most to
// one listener, about 17,000, stays inside Linux's ephemeral range.
const CONNECTS = quick ? 300 : 1500;
const PING = quick ? 1000 : 10_000;
const PING_PY = quick ? 1000 : 4000;
const WARMUP = 200;
const AUTHKEY = Buffer.from('nodemp bench authkey');
const BACKLOG = 1024;

/** Client connects timed one by one in this process, each closed at once, while a forked child accepts and closes them; us each. */
function connectRounds(listener, connect) {
  return withEchoChild(
    () => {
      for (let i = 0; i < CONNECTS + WARMUP; i++) listener.acceptSync().close();
    },
    async () => {
      const samples = [];
      for (let i = 0; i < CONNECTS + WARMUP; i++) {
        const t0 = performance.now();
        (await connect(listener.address)).close();
        const t = performance.now();
        if (i >= WARMUP) samples.push((t - t0) * 1000);
      }
      return samples;
    },
  );
}

/** This process's CPU list as taskset writes it, and its first two CPUs; null without taskset (not Linux). */
function cpusAllowed() {
  const r = spawnSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
  const list = r.status === 0 ? /list: (\S+)/.exec(r.stdout)?.[1] : undefined;
  if (list === undefined) return null;
  const first = list.split(',').flatMap((range) => {
    const [lo, hi = lo] = range.split('-').map(Number);
    return Array.from({ length: Math.min(hi - lo + 1, 2) }, (_, k) => lo + k);
  });
  return { list, first: first.slice(0, 2) };
}
const cpus = cpusAllowed();

function pinSelf(cpu) {
  const r = spawnSync('taskset', ['-pc', String(cpu), String(process.pid)], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`taskset could not pin this process to CPU ${cpu}`);
}

/**
 * Ping-pong rounds to an echo child. `placement` 'apart': this process on
 * the first CPU, the child on the second; 'same': both on the first; 'free':
 * the scheduler's choice. The child takes its CPU from this process's at the
 * fork.
 */
async function pingRounds(listener, placement = 'free') {
  if (placement !== 'free') pinSelf(cpus.first[placement === 'apart' ? 1 : 0]);
  try {
    return await withEchoChild(
      () => {
        const conn = listener.acceptSync();
        echoLoop(conn, PING + WARMUP);
        conn.close();
      },
      () => {
        if (placement === 'apart') pinSelf(cpus.first[0]);
        const conn = ClientSync(listener.address);
        const samples = pingLoop(conn, PING + WARMUP, WARMUP);
        conn.close();
        return samples;
      },
    );
  } finally {
    if (placement !== 'free') pinSelf(cpus.list);
  }
}

// Bound once, before any fork: each pass's children accept on their copies.
// Without a handshake a client does not wait for the accept, and may run
// ahead of it: the backlog has room for that, where Python's default of 1
// would drop connections and retry them a second later.
const connectListener = new Listener(['127.0.0.1', 0], { backlog: BACKLOG });
const authListener = new Listener(['127.0.0.1', 0], { authkey: AUTHKEY });
const tcpListener = new Listener(['127.0.0.1', 0]);
// No address: a fresh socket file in the temporary directory, as Python's Listener(family='AF_UNIX').
const unixListener = new Listener(null, { family: 'AF_UNIX' });

// A forked child inherits the parent's compiled code: echoing here first, over
// one connection this process holds both ends of, lets every echo child start
// with its loop optimized.
{
  const client = ClientSync(tcpListener.address);
  const server = tcpListener.acceptSync();
  for (let i = 0; i < 2000; i++) {
    client.send({ i });
    echoLoop(server, 1);
    client.recvSync();
  }
  client.close();
  server.close();
}

/** Whether `py` is Python 3.12 or newer, whose handshake is HMAC-SHA256; null if it does not run. */
function isSha256Python(py) {
  const r = spawnSync(py, ['-c', 'import sys; print(int(sys.version_info >= (3, 12)))'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() === '1' : null;
}
const python256 = isSha256Python('python3') === false ? (['python3.13', 'python3.12'].find((py) => isSha256Python(py)) ?? null) : null;

const connects = { nodemp: [], python: [] };
const auth = { sync: [], async: [], python: [], python256: [] };
const tcp = { nodemp: [], python: [] };
const unix = { nodemp: [], python: [] };
const apart = { nodemp: [], python: [] };
const same = { nodemp: [], python: [] };
const canPin = cpus !== null && cpus.first.length === 2;
if (!canPin) process.stderr.write('connection.js: no two CPUs to pin processes to (taskset, Linux): the pinned rows read n/a\n');
let havePython = true;
let digest = null;

// Passes alternate between all sides, so a noisy stretch of the machine's time
// lands on every one of them.
for (let p = 0; p < passes; p++) {
  connects.nodemp.push(...(await connectRounds(connectListener, (address) => ClientSync(address))));
  auth.sync.push(...(await connectRounds(authListener, (address) => ClientSync(address, { authkey: AUTHKEY }))));
  auth.async.push(...(await connectRounds(authListener, (address) => Client(address, { authkey: AUTHKEY }))));
  tcp.nodemp.push(...(await pingRounds(tcpListener)));
  unix.nodemp.push(...(await pingRounds(unixListener)));
  if (canPin) {
    apart.nodemp.push(...(await pingRounds(tcpListener, 'apart')));
    same.nodemp.push(...(await pingRounds(tcpListener, 'same')));
  }

  const py = pythonPeer('py_connection.py', [
    ['connect', CONNECTS],
    ['auth', CONNECTS],
    ['ping', 'tcp', PING_PY],
    ['ping', 'unix', PING_PY],
    ...(canPin ? [['ping', 'tcp', PING_PY, 'apart'], ['ping', 'tcp', PING_PY, 'same']] : []),
  ]);
  if (py === null) havePython = false;
  else {
    connects.python.push(...py[0].us);
    auth.python.push(...py[1].us);
    digest = py[1].digest;
    tcp.python.push(...py[2].round_trip_us);
    unix.python.push(...py[3].round_trip_us);
    if (canPin) {
      apart.python.push(...py[4].round_trip_us);
      same.python.push(...py[5].round_trip_us);
    }
  }
  if (python256 !== null) auth.python256.push(...pythonPeer('py_connection.py', [['auth', CONNECTS]], python256)[0].us);
}

connectListener.close();
authListener.close();
tcpListener.close();
unixListener.close();

const py = (xs) => (havePython && xs.length > 0 ? median(xs) : null);
const pinned = (xs) => (canPin ? median(xs) : null);
const authPeers = {
  [`python3 mp.connection Client, ${digest ?? 'its default digest'} (its default)`]: py(auth.python),
  ...(python256 === null ? {} : { [`${python256} mp.connection Client, HMAC-SHA256 (as nodemp)`]: median(auth.python256) }),
};
const sameSamples = (peers) => Object.fromEntries(Object.entries(peers).map(([peer, v]) => [`${peer} (same samples as above)`, v]));
console.log(JSON.stringify({
  'Client connect + close, no authkey, Listener in another process, TCP loopback (ClientSync)': {
    unit: 'us',
    nodemp: median(connects.nodemp),
    'python mp.connection Client': py(connects.python),
  },
  'Client connect + authkey handshake (HMAC-SHA256 both ways) + close, Listener in another process, TCP loopback (ClientSync)': {
    unit: 'us',
    nodemp: median(auth.sync),
    ...authPeers,
  },
  'Client connect + authkey handshake (HMAC-SHA256 both ways) + close, Listener in another process, TCP loopback (await Client())': {
    unit: 'us',
    nodemp: median(auth.async),
    ...sameSamples(authPeers),
  },
  'Connection ping-pong round trip over TCP loopback, Listener/Client, two processes (send/recvSync)': {
    unit: 'us',
    nodemp: median(tcp.nodemp),
    'python mp.connection Listener/Client send/recv': py(tcp.python),
  },
  'Connection ping-pong round trip over TCP loopback, the two processes pinned to two CPUs (send/recvSync)': {
    unit: 'us',
    nodemp: pinned(apart.nodemp),
    'python mp.connection Listener/Client send/recv, pinned the same way': py(apart.python),
  },
  'Connection ping-pong round trip over TCP loopback, both processes pinned to one CPU (send/recvSync)': {
    unit: 'us',
    nodemp: pinned(same.nodemp),
    'python mp.connection Listener/Client send/recv, pinned the same way': py(same.python),
  },
  'Connection ping-pong round trip over a Unix socket, Listener/Client, two processes (send/recvSync)': {
    unit: 'us',
    nodemp: median(unix.nodemp),
    'python mp.connection Listener/Client send/recv': py(unix.python),
  },
}));
