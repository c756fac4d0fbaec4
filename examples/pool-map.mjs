// Python's Pool.map examples: squares, and sums computed in the workers.
// Run: npx nodemp examples/pool-map.mjs
import { Pool } from 'nodemp';

function square(x) {
  return x * x;
}

function action(max) {
  let sum = 0;
  for (let i = 0; i < max; i++) sum += i;
  console.log(`(${process.pid}) summed 0..${max - 1}`);
  return sum;
}

// `with Pool(4) as p:` in Python: the pool is terminated when the block ends.
const pool = new Pool({ processes: 4 });
try {
  console.log(await pool.map(square, [1, 2, 3, 4, 5])); // [ 1, 4, 9, 16, 25 ]
  for (const r of await pool.map(action, [50, 100, 150])) console.log(r);
} finally {
  await pool.terminate();
}
