// Issue #11's reproduction: three producers and two consumers of a Queue,
// one of them SIGKILLed and replaced every 20-300 ms, until `kills` kills or
// until nothing is taken for 3 s (a wedge). Prints one JSON line; exits 1 on
// a wedge or if the parent alone cannot put and get afterwards.
//   node --single-threaded scripts/queue-kill-repro.mjs [kills=2000] [maxsize=50]   (maxsize 0: unbounded)
import { Process, Queue, Array as SArr, QueueEmpty } from '../dist/index.js';

const kills = Number(process.argv[2] ?? 2000);
const maxsize = Number(process.argv[3] ?? 50);
const q = new Queue({ maxsize, ringSize: 256 * 1024 });
const taken = new SArr('i', 1);
const producer = () => {
  for (;;) q.putSync(Buffer.alloc(Math.floor(Math.exp(Math.random() * Math.log(262144)))));
};
const consumer = () => {
  for (;;) {
    q.getSync();
    Atomics.add(taken.typed, 0, 1);
  }
};
const start = (f) => {
  const p = new Process({ target: f, daemon: true });
  p.start();
  return p;
};
const roles = [producer, producer, producer, consumer, consumer];
const procs = roles.map(start);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let killed = 0;
let wedged = false;
let last = -1;
let lastMoved = Date.now();
const t0 = Date.now();
while (killed < kills) {
  await sleep(20 + Math.random() * 280);
  const now = Atomics.load(taken.typed, 0);
  if (now !== last) {
    last = now;
    lastMoved = Date.now();
  } else if (Date.now() - lastMoved > 3000) {
    wedged = true;
    break;
  }
  const k = Math.floor(Math.random() * procs.length);
  procs[k].kill('SIGKILL');
  await procs[k].join();
  procs[k] = start(roles[k]);
  killed++;
}
for (const p of procs) p.kill('SIGKILL');
for (const p of procs) await p.join();
const ring = q[Symbol.for('nodemp.queue.ring')]();
const w = new Int32Array(ring.buffer, 0, 4096 / 4);
const state = { head: w[16], tail: w[0], puts: w[1], gets: w[17] };
// What is left in the ring, then the parent alone: one put and one get.
let drained = 0;
try {
  for (;;) {
    q.getSync({ timeout: 1000 });
    drained++;
  }
} catch (error) {
  if (!(error instanceof QueueEmpty)) throw error;
}
let worksAfter = true;
try {
  q.putSync(Buffer.from('after'), { timeout: 2000 });
  worksAfter = Buffer.from(q.getSync({ timeout: 2000 })).toString() === 'after';
} catch {
  worksAfter = false;
}
console.log(JSON.stringify({ maxsize, kills: killed, wedged, taken: Atomics.load(taken.typed, 0), seconds: (Date.now() - t0) / 1000, ...state, drained, qsizeAfter: q.qsize(), worksAfter }));
process.exit(wedged || !worksAfter ? 1 : 0);
