// The run's clock, read by the harness: wall time scaled by the share of the
// machine's CPU the run got (bench/soak/cpu-share.js writes it, a sample a
// second: "wall ms, run ms, share" per line). The watchdog deadlines are on
// this clock, as the fault rate is: beside programs that take two thirds of
// the CPU, 30 s of the run's clock is about 90 s of the wall's, and an
// operation that needs them is starved, not stuck. On an idle machine the
// two clocks agree.
import { readFileSync } from 'node:fs';

export class RunClock {
  #file;
  /** [wall ms, run ms, share] samples, oldest first. */
  #samples = [];
  #readAt = 0;

  constructor(file) {
    this.#file = file;
  }

  /** The run's clock, in ms, at wall time `wall` (Date.now() ms). */
  at(wall) {
    this.#refresh();
    const s = this.#samples;
    if (s.length === 0 || wall < s[0][0]) return wall;
    let i = s.length - 1;
    while (i > 0 && s[i][0] > wall) i--;
    const [w, run, share] = s[i];
    const next = s[i + 1];
    // Between two samples the share is the later one's (it was measured over that second).
    return run + (wall - w) * (next === undefined ? share : next[2]);
  }

  /** The share of the CPU the run gets now (1 before the first sample). */
  get share() {
    this.#refresh();
    return this.#samples.at(-1)?.[2] ?? 1;
  }

  #refresh() {
    const now = Date.now();
    if (now - this.#readAt < 250) return;
    this.#readAt = now;
    let text;
    try {
      text = readFileSync(this.#file, 'latin1');
    } catch {
      return;
    }
    const lines = text.split('\n');
    // The last line is being written, or empty.
    lines.pop();
    this.#samples = lines.map((line) => line.split(' ').map(Number));
  }
}
