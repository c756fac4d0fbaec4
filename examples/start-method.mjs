// The tutorial's set_start_method('spawn') program: a fresh Node process
// runs foo(), which puts a value in a Queue the parent reads.
// Run: node examples/start-method.mjs   (no flag needed: spawn forks nothing)
import { Process, Queue, isMainModule, setStartMethod } from 'nodemp';

// Exported: a spawned child imports this module and calls foo by name.
export function foo(q) {
  console.log(`new process started: (${process.pid})`);
  q.put('Python');
}

// Python's `if __name__ == '__main__'`: false in the child that imports this module.
if (isMainModule(import.meta)) {
  setStartMethod('spawn');
  const q = new Queue();
  const mp = new Process({ target: foo, args: [q] });
  mp.start();
  console.log(await q.get()); // Python
  await mp.join();
}
