// The task of bench/pool.js for the worker_threads pools (piscina, tinypool,
// workerpool): the same square and CPU burn that nodemp's workers run.
export function square(x) {
  return x * x;
}

export function burn(n) {
  let x = 0;
  for (let i = 0; i < n; i++) x = (x + i * i) % 1000003;
  return x;
}

export default function run({ op, x }) {
  return op === 'burn' ? burn(x) : square(x);
}
