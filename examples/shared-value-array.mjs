// Python's shared-memory example: a child writes a Value and an Array the parent reads.
// Run: npx nodemp examples/shared-value-array.mjs
import { Process, Value, Array } from 'nodemp';

function f(n, a) {
  n.value = 3.1415927;
  for (let i = 0; i < a.length; i++) a.set(i, -a.get(i));
}

const num = new Value('d', 0.0);
const arr = new Array('i', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

const p = new Process({ target: f, args: [num, arr] });
p.start();
await p.join();

console.log(num.value);
console.log(arr.toArray());
