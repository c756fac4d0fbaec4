// Python's apply_async example: ten tasks on a pool of at most five
// processes, then close() and join().
// Run: npx nodemp examples/pool-apply-async.mjs
import { Pool } from 'nodemp';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function r1() {
  console.log(`123 (${process.pid})`);
  await sleep(500);
}

async function r2() {
  console.log(`abc (${process.pid})`);
  await sleep(300);
}

const po = new Pool({ processes: 5 });
for (let i = 0; i < 5; i++) {
  po.applyAsync(r1);
  po.applyAsync(r2);
}
po.close(); // no new tasks; those submitted still run
await po.join(); // every worker has finished and exited
console.log('all done');
