// The other end of bullmq-worker.mjs --hop-floor: squares what its parent
// puts in a slot, with bare futex words between them (see there).
//   node hop-floor-child.mjs SHM_NAME SLOTS
import { SharedMemory } from '../../dist/index.js';
import { native } from '../../dist/native.js';

const [name, slots] = process.argv.slice(2);
const shm = new SharedMemory({ name, track: false });
const buffer = shm.buf.buffer;
const w = new Int32Array(buffer, shm.buf.byteOffset, 1 + 3 * Number(slots));
const parent = process.ppid;
Atomics.store(w, 0, 1);
native.futexWake(buffer, shm.buf.byteOffset, 1);
for (;;) {
  const bell = Atomics.load(w, 0);
  for (let s = 0; s < Number(slots); s++) {
    const at = 1 + 3 * s;
    if (Atomics.load(w, at) !== 1) continue;
    w[at + 2] = w[at + 1] * w[at + 1];
    Atomics.store(w, at, 2);
    native.futexWake(buffer, shm.buf.byteOffset + 4 * at, 1);
  }
  // A second each, to see whether the parent is gone (then this ends too).
  if (native.futexWait(buffer, shm.buf.byteOffset, bell, 1000) === 2 && process.ppid !== parent) process.exit(0);
}
