// The tutorials' producer and two readers: one process writes 0..5, then two
// readers take turns emptying the queue.
// Run: npx nodemp examples/queue-two-readers.mjs
import { Process, Queue, QueueEmpty } from 'nodemp';

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function write(q) {
  for (let i = 0; i < 6; i++) {
    console.log('writer put', i);
    q.putSync(i);
    await pause(10);
  }
}

async function read(q, name) {
  for (;;) {
    try {
      console.log(`${name} got`, await q.get({ timeout: 100 }));
    } catch (error) {
      if (error instanceof QueueEmpty) return;
      throw error;
    }
    await pause(10);
  }
}

const q = new Queue();
const writer = new Process({ target: write, args: [q] });
writer.start();
await writer.join();
const readers = ['reader 1', 'reader 2'].map((name) => new Process({ target: read, args: [q, name] }));
for (const r of readers) r.start();
for (const r of readers) await r.join();
console.log('all received');
