// Python: two Process(target=action, args=(max,)) started from the main loop at i == 20, then joined.
// Run: npx nodemp examples/two-processes.mjs
import { Process } from 'nodemp';

function action(max) {
  for (let i = 0; i < max; i++) console.log(`(${process.pid}) child (parent ${process.ppid}): ${i}`);
}

for (let i = 0; i < 30; i++) {
  console.log(`(${process.pid}) main: ${i}`);
  if (i === 20) {
    const mp1 = new Process({ target: action, args: [10] });
    mp1.start();
    const mp2 = new Process({ target: action, args: [10] });
    mp2.start();
    mp1.joinSync();
    mp2.joinSync();
  }
}
console.log('main process done');
