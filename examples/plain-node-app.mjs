// A plain `node app.mjs` program (no flag, no launcher): Process, Queue and
// Pool with the default start method, which is forkserver in a process that
// cannot fork itself safely.
// Run: node examples/plain-node-app.mjs
import { Pool, Process, Queue, getStartMethod, isMainModule } from 'nodemp';

export function producer(queue, n) {
  for (let i = 0; i < n; i++) queue.put({ i, pid: process.pid });
  queue.put(null);
}

export function square(x) {
  return x * x;
}

if (isMainModule(import.meta)) {
  console.log(`start method: ${getStartMethod()}`);
  const queue = new Queue();
  const p = new Process({ target: producer, args: [queue, 3] });
  p.start();
  for (let m = await queue.get(); m !== null; m = await queue.get()) console.log('got', m.i, 'from', m.pid === p.pid ? 'the child' : 'elsewhere');
  await p.join();

  const pool = new Pool({ processes: 2 });
  console.log(await pool.map(square, [1, 2, 3, 4, 5])); // [ 1, 4, 9, 16, 25 ]
  pool.close();
  await pool.join();
}
