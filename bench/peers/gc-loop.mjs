// A JSON-heavy, service-like loop (parse and stringify of 200-item
// documents): the cost --single-threaded puts on a parent, which moves V8's
// garbage collection onto the main thread. Prints its wall time in ms.
const rounds = Number(process.argv[2] ?? 4000);
const doc = JSON.stringify({
  items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item-${i}`, tags: ['a', 'b', 'c'], price: i * 1.5, meta: { created: Date.now(), ok: i % 2 === 0 } })),
});
const t0 = performance.now();
let total = 0;
for (let i = 0; i < rounds; i++) {
  const parsed = JSON.parse(doc);
  parsed.items[i % 200].price += 1;
  total += JSON.stringify(parsed).length;
}
if (total === 0) throw new Error('unreachable');
console.log((performance.now() - t0).toFixed(1));
