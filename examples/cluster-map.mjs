// ClusterPool: the Pool interface on every machine that runs `nodemp worker`.
// Two terminals (Redis running, here on this machine):
//   npx nodemp worker --redis redis://127.0.0.1:6379 --queue primes --preload ./examples/cluster-tasks.mjs
//   node examples/cluster-map.mjs redis://127.0.0.1:6379 primes
import { ClusterPool } from 'nodemp/cluster';
import { collatzSteps, isPrime } from './cluster-tasks.mjs';

const [redis = 'redis://127.0.0.1:6379', queue = 'primes'] = process.argv.slice(2);
const pool = new ClusterPool({ redis, queue });
try {
  const flags = await pool.map(isPrime, Array.from({ length: 100_000 }, (_, i) => i));
  console.log('primes below 100000:', flags.filter(Boolean).length);
  console.log('Collatz steps of 27:', await pool.apply(collatzSteps, [27]));
} finally {
  pool.close();
  await pool.join();
}
