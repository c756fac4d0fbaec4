// Four processes add 1000 each to a shared counter. `counter.value += 1` is a
// read then a write, so without the lock some updates are lost, as in Python.
// Run: npx nodemp examples/counter.mjs
import { Process, Value } from 'nodemp';

function increment(counter, locked) {
  for (let i = 0; i < 1000; i++) {
    if (locked) {
      const held = counter.getLock().hold();
      counter.value += 1;
      held.release();
    } else {
      counter.value += 1;
    }
  }
}

for (const locked of [false, true]) {
  const counter = new Value('i', 0);
  const processes = [0, 1, 2, 3].map(() => new Process({ target: increment, args: [counter, locked] }));
  for (const p of processes) p.start();
  for (const p of processes) await p.join();
  console.log(`Counter value ${locked ? 'with' : 'without'} the lock: ${counter.value}`);
}
