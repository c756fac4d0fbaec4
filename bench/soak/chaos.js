// The chaos driver: SIGKILL, and SIGSTOP followed later by SIGCONT, to random
// participants of the run, as a Poisson process at `rate` faults a second of
// the CPU the run gets (`pace`, a CpuShare: on an idle machine, a second).
//
// It runs in bench/soak.js, not in the harness: the harness's event loop runs
// late whenever a synchronous start forks (hundreds of milliseconds on a busy
// machine), and a driver on it sent its faults in bursts that hit the few
// participants alive and then found nobody. The harness publishes who may be
// hit (`targets`, a file it replaces as participants come and go); the driver
// appends each fault to `faults` before it signals, so the harness, reading
// that log when it judges how a participant ended, always knows a kill of its
// own from a crash.
import { appendFileSync, readFileSync } from 'node:fs';
import { pidGone } from '../lib.js';
import { makeRng } from './rng.js';

export class Chaos {
  #rng;
  #rate;
  #pace;
  #harnessPid;
  #marker;
  #targets;
  #faults;
  #timer = null;
  #due = 0;
  #ended = false;
  /** pid -> the timer that continues it. */
  #stopped = new Map();
  /** pid -> when it was killed: it can look alive for a moment after kill() returns. */
  #killedAt = new Map();

  constructor({ seed, rate, pace, harnessPid, marker, targets, faults }) {
    this.#rng = makeRng((seed ^ 0x9e3779b9) >>> 0);
    this.#rate = rate;
    this.#pace = pace;
    this.#harnessPid = harnessPid;
    this.#marker = marker;
    this.#targets = targets;
    this.#faults = faults;
  }

  start() {
    this.#pace.start();
    this.#due = performance.now();
    this.#tick();
  }

  /** No more faults; every stopped participant is continued now. */
  end() {
    this.#ended = true;
    this.#pace.stop();
    clearTimeout(this.#timer);
    for (const pid of [...this.#stopped.keys()]) this.#resume(pid);
  }

  #tick() {
    if (this.#ended) return;
    // A late turn sends the faults that fell due meanwhile, to keep the rate.
    while (this.#due <= performance.now()) {
      this.#due += this.#rng.expo(1000 / (this.#rate * this.#pace.share));
      this.#inject();
    }
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, this.#due - performance.now()));
  }

  #candidates() {
    let text;
    try {
      text = readFileSync(this.#targets, 'latin1');
    } catch {
      return [];
    }
    const list = [];
    for (const line of text.split('\n')) {
      const [pid, kind, share] = line.split('\t');
      const p = Number(pid);
      if (!(p > 1) || p === process.pid || p === this.#harnessPid) continue;
      if (Number(share) < 1 && !this.#rng.chance(Number(share))) continue;
      if (this.#stopped.has(p) || this.#killedJustNow(p) || pidGone(p)) continue;
      list.push({ pid: p, kind });
    }
    return list;
  }

  #killedJustNow(pid) {
    const at = this.#killedAt.get(pid);
    if (at === undefined) return false;
    if (performance.now() - at < 1000 && !pidGone(pid)) return true;
    // Pids come round again (pid_max may be as low as 32768).
    this.#killedAt.delete(pid);
    return false;
  }

  #ours(pid) {
    try {
      return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(this.#marker);
    } catch {
      return false;
    }
  }

  #log(line) {
    appendFileSync(this.#faults, `${line}\t${Date.now()}\n`);
  }

  /** One fault to one participant; one that ends between the pick and the signal is no fault, and another is picked. */
  #inject() {
    for (let tries = 0; tries < 4; tries++) {
      const all = this.#candidates();
      if (all.length === 0) return;
      const { pid, kind } = this.#rng.pick(all);
      // The list can be a moment old: a pid ended and reused since by a
      // process of another run, or of nobody's run, is not ours to hit.
      if (!this.#ours(pid)) continue;
      if (this.#rng.chance(0.4)) {
        this.#log(`K\t${pid}\t${kind}`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          this.#log(`U\t${pid}\t${kind}`);
          continue;
        }
        this.#killedAt.set(pid, performance.now());
      } else {
        const ms = this.#rng.int(1, 150);
        try {
          process.kill(pid, 'SIGSTOP');
        } catch {
          continue;
        }
        this.#log(`S\t${pid}\t${kind}\t${ms}`);
        this.#stopped.set(pid, setTimeout(() => this.#resume(pid), ms));
      }
      return;
    }
  }

  #resume(pid) {
    clearTimeout(this.#stopped.get(pid));
    this.#stopped.delete(pid);
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // Killed meanwhile.
    }
  }
}
