// The child_process peer of bench/queue.js: a Node program fork()ed with an
// IPC channel. `sink N` checks N messages { i } (in order), answers
// { count, sum } and starts over; `echo` sends every message straight back.
const [mode, n] = [process.argv[2], Number(process.argv[3])];
let count = 0;
let sum = 0;
process.on('message', mode === 'echo' ? (m) => process.send(m) : (m) => {
  if (m.i !== count) {
    console.error(`ipc-peer: message ${m.i} arrived where ${count} was expected`);
    process.exit(1);
  }
  count++;
  sum += m.i;
  if (count === n) {
    process.send({ count, sum });
    count = sum = 0;
  }
});
process.send('ready');
