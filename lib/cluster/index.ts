// nodemp/cluster: the Pool interface beyond one machine, on BullMQ and Redis
// (optional peer dependencies: npm install bullmq ioredis).
export { ClusterPool } from './pool.js';
export type { ClusterPoolOptions, ClusterTaskOptions, ClusterMapOptions } from './pool.js';
export { runWorker } from './worker.js';
export type { WorkerOptions } from './worker.js';
export { ClusterError, PoolError, WorkerDiedError, RemoteTraceback } from '../errors.js';
export { AsyncResult } from '../pool.js';
