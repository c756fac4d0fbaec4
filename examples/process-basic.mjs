// Python: Process(target=f, args=('bob',)).start(); p.join()
// Run: npx nodemp examples/process-basic.mjs
import { Process } from 'nodemp';

function info(title) {
  console.log(title);
  console.log('parent process:', process.ppid);
  console.log('process id:', process.pid);
}

function f(name) {
  info('function f');
  console.log('hello', name);
}

info('main line');
const p = new Process({ target: f, args: ['bob'] });
p.start();
await p.join();
