// The tiny task of bench/cluster.js, by reference for nodemp's workers.
export function square(x) {
  return x * x;
}
