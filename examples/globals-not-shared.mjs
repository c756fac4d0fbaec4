// Python: a child's `num += 1` does not change the parent's num (memory is copied, not shared).
// Run: npx nodemp examples/globals-not-shared.mjs
import { Process } from 'nodemp';

let num = 10;

function work() {
  num += 1;
  console.log('child num =', num);
}

const p = new Process({ target: work });
p.start();
await p.join();
console.log('parent num =', num);
