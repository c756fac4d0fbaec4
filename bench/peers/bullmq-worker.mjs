// A plain BullMQ worker process for bench/cluster.js, doing the same task as
// nodemp's, one job per item:
//   node bullmq-worker.mjs PORT QUEUE CONCURRENCY [--sandboxed | --pool N]
// inline (the task in this process); --sandboxed: BullMQ's sandboxed
// processors (its own child processes, CONCURRENCY of them); --pool N: each
// job handed by hand to a local nodemp Pool of N forkserver processes, as a
// `nodemp worker` does, without ClusterPool's wrapping around it.
import { Worker } from 'bullmq';
import IORedis from 'ioredis';
import { Pool } from '../../dist/index.js';
import { square } from './cluster-task.mjs';

const [port, queue, concurrency] = process.argv.slice(2);
const sandboxed = process.argv.includes('--sandboxed');
const poolAt = process.argv.indexOf('--pool');
const pool = poolAt === -1 ? null : new Pool({ processes: Number(process.argv[poolAt + 1]), startMethod: 'forkserver' });
if (pool) await Promise.all(Array.from({ length: pool.processes }, () => pool.apply(square, [1])));
const connection = new IORedis({ host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null });
const processor = sandboxed
  ? new URL('./bullmq-square.mjs', import.meta.url)
  : pool
    ? (job) => pool.apply(square, [job.data.x])
    : async (job) => job.data.x * job.data.x;
const worker = new Worker(queue, processor, { connection, concurrency: Number(concurrency) });
await worker.waitUntilReady();
process.stderr.write('bullmq worker: ready\n');
process.on('SIGTERM', async () => {
  await worker.close();
  connection.disconnect();
  await pool?.terminate();
  process.exit(0);
});
