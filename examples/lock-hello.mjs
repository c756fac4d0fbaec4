// Python's Lock example: ten processes print one at a time.
// Run: npx nodemp examples/lock-hello.mjs
import { Process, Lock } from 'nodemp';

function f(lock, i) {
  lock.acquireSync();
  try {
    console.log('hello world', i);
  } finally {
    lock.release();
  }
}

const lock = new Lock();
for (let num = 0; num < 10; num++) new Process({ target: f, args: [lock, num] }).start();
