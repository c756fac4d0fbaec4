// Reading an empty queue: at once with { block: false }, or after a timeout.
// Run: npx nodemp examples/queue-timeout.mjs
import { Queue, QueueEmpty } from 'nodemp';

const q = new Queue({ maxsize: 3 });
try {
  q.getSync({ block: false });
} catch (error) {
  console.log('block: false ->', error instanceof QueueEmpty ? 'QueueEmpty' : error);
}
const t0 = Date.now();
try {
  await q.get({ timeout: 300 });
} catch (error) {
  const waited = Date.now() - t0;
  console.log(`timeout: 300 -> ${error.name} ${waited >= 295 ? 'after the timeout' : `too early (${waited} ms)`}`);
}
