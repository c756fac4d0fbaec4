// exitCode as in Python: 0 ok, 1 uncaught error, n for process.exit(n), -N when killed by signal N.
// Run: npx nodemp examples/exit-codes.mjs
import { setTimeout as sleep } from 'node:timers/promises';
import { Process } from 'nodemp';

const jobs = {
  ok: () => {},
  throws: () => {
    throw new Error('boom');
  },
  rejects: async () => {
    await sleep(10);
    throw new Error('async boom');
  },
  exits: () => process.exit(3),
  terminated: () => sleep(60_000),
};

for (const [name, target] of Object.entries(jobs)) {
  const p = new Process({ name, target });
  p.start();
  if (name === 'terminated') p.terminate();
  console.log(`${name}: exitCode ${await p.join()}`);
}
