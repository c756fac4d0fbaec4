// The tutorial's get_context() program: a context carries the whole API,
// bound to one start method, without changing the program's default.
// Run: node examples/get-context.mjs [forkserver|spawn|fork]
// (fork needs `npx nodemp examples/get-context.mjs fork`: see "Start methods" in the README.)
import { getContext, isMainModule } from 'nodemp';

export function foo(q) {
  console.log(`new process started: (${process.pid})`);
  q.put('Python');
}

if (isMainModule(import.meta)) {
  const ctx = getContext(process.argv[2] ?? 'forkserver');
  const q = new ctx.Queue();
  const mp = new ctx.Process({ target: foo, args: [q] });
  mp.start();
  console.log(await q.get()); // Python
  await mp.join();
}
