// Python's Queue example: a child puts a list, the parent gets it.
// Run: npx nodemp examples/queue-basic.mjs
import { Process, Queue } from 'nodemp';

function f(q) {
  q.putSync([42, null, 'hello']);
}

const q = new Queue();
const p = new Process({ target: f, args: [q] });
p.start();
console.log(await q.get()); // [ 42, null, 'hello' ]
await p.join();
