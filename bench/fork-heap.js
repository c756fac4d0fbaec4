// fork start->join with a parent holding `MB` megabytes of live JS heap.
import { Process } from '../dist/index.js';
import { timeRounds } from './lib.js';

const mb = Number(process.argv[2]);
const rounds = process.argv.includes('--quick') ? 5 : 15;
// 8 MB double arrays: the memory is V8 heap, and cheap to allocate.
const keep = [];
for (let i = 0; i < Math.round(mb / 8); i++) keep.push(new Array(1 << 20).fill(i + 0.5));
const rss = process.memoryUsage().rss / 2 ** 20;
const ms = await timeRounds(rounds, 2, () => {
  const p = new Process({ target: () => {} });
  p.start();
  p.joinSync();
});
console.log(JSON.stringify({ mb, rssMb: Math.round(rss), ms, kept: keep.length }));
