// Python: class MyProcess(multiprocessing.Process) overriding run()
// Run: npx nodemp examples/process-subclass.mjs
import { Process } from 'nodemp';

class MyProcess extends Process {
  constructor(max) {
    super();
    this.max = max;
  }

  run() {
    for (let i = 0; i < this.max; i++) console.log(`(${process.pid}) child (parent: ${process.ppid}): ${i}`);
  }
}

let mp2;
for (let i = 0; i < 5; i++) {
  console.log(`(${process.pid}) main: ${i}`);
  if (i === 2) {
    new MyProcess(3).start();
    mp2 = new MyProcess(3);
    mp2.start();
    await mp2.join();
  }
}
console.log('main process done');
