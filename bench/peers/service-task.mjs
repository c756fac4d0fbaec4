// The CPU work of one request in bench/service.js's servers, the same
// function in all of them. Unlike pool-task.mjs's burn, whose i * i leaves
// the int32 range past 46341 iterations and turns the loop to doubles, it
// stays in int32 arithmetic at any count, so its time is proportional to the
// count and calibrates simply.
export function work(n) {
  let x = 0;
  for (let i = 0; i < n; i++) x = (x + (Math.imul(i, i) & 0xfffff)) % 1000003;
  return x;
}

export default work;
