#!/usr/bin/env node
// nodemp [node options] script [args]: runs the script under Node with the
// flags that make fork() safe. The launcher replaces itself with that Node
// (execve), so the program keeps this pid and gets signals and job control
// directly, and its exit status is the launcher's.
import { native } from '../dist/native.js';
import { isSingleThreaded } from '../dist/fork-safety.js';

const args = process.argv.slice(2);
if (args[0] === 'worker') {
  // A ClusterPool worker (nodemp/cluster): plain Node will do, its processes start from the fork server.
  const { main } = await import('../dist/cluster/worker.js');
  await main(args.slice(1));
  process.exit(0);
}
if (args.length === 0 || args[0] === '--help' || args[0] === '-h') {
  process.stdout.write(
    'usage: nodemp [node options] script.js [args...]\n' +
      'Runs script.js with `node --single-threaded`, which nodemp needs to fork() this process safely.\n' +
      'usage: nodemp worker --redis URL --queue NAME [--processes N] [--preload MODULE]...\n' +
      'Takes the jobs of a ClusterPool (nodemp/cluster) from Redis and runs them in N local processes.\n',
  );
  process.exit(args.length === 0 ? 2 : 0);
}
const flags = isSingleThreaded(args) ? [] : ['--single-threaded'];
const env = Object.entries(process.env).map(([key, value]) => `${key}=${value}`);
native.execve(process.execPath, [process.execPath, ...flags, ...args], env);
