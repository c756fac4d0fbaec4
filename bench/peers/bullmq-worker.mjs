// A plain BullMQ worker process for bench/cluster.js, doing the same task as
// nodemp's, one job per item:
//   node bullmq-worker.mjs PORT QUEUE CONCURRENCY [--sandboxed | --pool N | --hop-floor]
// inline (the task in this process); --sandboxed: BullMQ's sandboxed
// processors (its own child processes, CONCURRENCY of them); --pool N: each
// job handed to a local nodemp Pool of N forkserver processes, as `nodemp
// worker` did before each of its processes took jobs itself;
// --hop-floor: each job handed to one other process with the least a hand-off
// between processes can be: the number written into a slot of shared memory,
// one futex wake, and the square read back after an asynchronous futex wait
// (the one nodemp's own waits use), no encoding, no queue, no spin. What this
// costs over the inline task is what any design that runs the task outside the
// process talking to Redis pays on this machine.
import { spawn } from 'node:child_process';
import { Worker } from 'bullmq';
import IORedis from 'ioredis';
import { Pool, SharedMemory } from '../../dist/index.js';
import { native } from '../../dist/native.js';
import { square } from './cluster-task.mjs';

const [port, queue, concurrency] = process.argv.slice(2);
const sandboxed = process.argv.includes('--sandboxed');
const poolAt = process.argv.indexOf('--pool');
const pool = poolAt === -1 ? null : new Pool({ processes: Number(process.argv[poolAt + 1]), startMethod: 'forkserver' });
if (pool) await Promise.all(Array.from({ length: pool.processes }, () => pool.apply(square, [1])));
const floor = process.argv.includes('--hop-floor') ? await hopFloor(Number(concurrency)) : null;
const connection = new IORedis({ host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null });
const processor = sandboxed
  ? new URL('./bullmq-square.mjs', import.meta.url)
  : pool
    ? (job) => pool.apply(square, [job.data.x])
    : floor
      ? (job) => floor.square(job.data.x)
      : async (job) => job.data.x * job.data.x;
const worker = new Worker(queue, processor, { connection, concurrency: Number(concurrency) });
await worker.waitUntilReady();
process.stderr.write('bullmq worker: ready\n');
process.on('SIGTERM', async () => {
  await worker.close();
  connection.disconnect();
  await pool?.terminate();
  floor?.stop();
  process.exit(0);
});

/** The other process of --hop-floor, started, and square(x) through it; one slot per job in hand. */
async function hopFloor(slots) {
  const shm = new SharedMemory({ create: true, size: 4 * (1 + 3 * slots) });
  const buffer = shm.buf.buffer;
  const base = shm.buf.byteOffset;
  const w = new Int32Array(buffer, base, 1 + 3 * slots);
  const child = spawn(process.execPath, [new URL('./hop-floor-child.mjs', import.meta.url).pathname, shm.name, String(slots)], { stdio: 'inherit' });
  while (Atomics.load(w, 0) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const free = Array.from({ length: slots }, (_, s) => s);
  const woken = (at) => new Promise((resolve, reject) => native.waitAsync(buffer, base + 4 * at, 1, undefined, (error) => (error ? reject(error) : resolve())));
  return {
    async square(x) {
      const at = 1 + 3 * free.pop();
      w[at + 1] = x;
      Atomics.store(w, at, 1);
      Atomics.add(w, 0, 1);
      native.futexWake(buffer, base, 1);
      while (Atomics.load(w, at) === 1) await woken(at);
      const y = w[at + 2];
      Atomics.store(w, at, 0);
      free.push((at - 1) / 3);
      return y;
    },
    stop() {
      child.kill('SIGKILL');
      shm.close();
      shm.unlink();
    },
  };
}
