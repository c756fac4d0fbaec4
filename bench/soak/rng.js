// A seeded generator, so one --seed gives the same sequence of choices: which
// process is hit and when, message sizes, task lengths, which tasks throw.
// Timing still varies between runs; the decisions do not.

/** mulberry32: 32 bits of state, fast, and good enough to spread choices. */
export function makeRng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    /** log-uniform in [lo, hi]: as many 1-10 byte messages as 100 KiB-1 MiB ones. */
    logInt: (lo, hi) => Math.min(hi, Math.floor(Math.exp(Math.log(lo) + next() * (Math.log(hi + 1) - Math.log(lo))))),
    /** exponential with the given mean: the gaps of a Poisson process. */
    expo: (mean) => -Math.log(1 - next()) * mean,
    /** a seed for a child generator, so each process draws its own sequence. */
    fork: () => Math.floor(next() * 4294967296) >>> 0,
  };
}

/** Latency histogram buckets: a quarter octave each, from 1 µs to about 70 s. */
export const BUCKETS = 104;

export function bucketOf(us) {
  if (!(us > 1)) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log2(us) * 4));
}

/** The upper edge of bucket b, in ms. */
export function bucketMs(b) {
  return 2 ** ((b + 1) / 4) / 1000;
}

/** The q-quantile (0..1) of a histogram, as its bucket's upper edge in ms; null if it is empty. */
export function quantileMs(hist, q) {
  let total = 0;
  for (let b = 0; b < BUCKETS; b++) total += hist[b];
  if (total === 0) return null;
  const want = Math.ceil(q * total);
  let seen = 0;
  for (let b = 0; b < BUCKETS; b++) {
    seen += hist[b];
    if (seen >= want) return bucketMs(b);
  }
  return bucketMs(BUCKETS - 1);
}
