// The share of this machine's CPU the soak's processes get: what paces the
// chaos driver. Faults come per second of the run's CPU, not of the wall
// clock: with other programs taking most of the cores, the run's processes
// start, answer and recover several times slower, and a fault rate meant for
// the whole machine would kill each pool worker before it could start (the
// busy-machine soak at a wall-clock rate did exactly that: calls took up to
// 92 s to be answered while their workers were replaced, killed, replaced).
//
// Sampled once a second from /proc: the machine's busy time, less what the
// processes that are not the run's used (the run's carry `marker` in their
// environment; this driver is the run's too). On an idle machine the share
// is 1 and the rate is the one asked for. Each sample also goes to `clock`,
// the run's clock the harness's deadlines are on (run-clock.js).
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100;
// Below this a starved run would get almost no faults; it is reported as is.
const FLOOR = 0.1;

function machineBusyTicks() {
  const [, ...fields] = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal (guest time is in user already)
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return user + nice + system + irq + softirq + (steal || 0);
}

/** [utime + stime, starttime] of a process, or null if it ended. */
function cpuTicks(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: fields count from the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return [Number(f[11]) + Number(f[12]), f[19]];
}

export class CpuShare {
  #marker;
  #clock;
  #timer = null;
  #wall = 0;
  #run = 0;
  #busy = 0;
  /** pid -> { start, ticks, ours } at the last sample. */
  #seen = new Map();
  #share = 1;
  #samples = [];

  constructor(marker, clock) {
    this.#marker = marker;
    this.#clock = clock;
  }

  start() {
    this.#busy = machineBusyTicks();
    this.#foreignTicks();
    this.#wall = Date.now();
    this.#run = this.#wall;
    appendFileSync(this.#clock, `${this.#wall} ${this.#run} 1\n`);
    this.#timer = setInterval(() => this.#sample(), 1000);
  }

  stop() {
    clearInterval(this.#timer);
  }

  /** The share now, between FLOOR and 1. */
  get share() {
    return this.#share;
  }

  /** Over the run: mean and lowest share of the CPU the run got. */
  summary() {
    const n = this.#samples.length;
    if (n === 0) return { mean: 1, min: 1, samples: 0 };
    const mean = this.#samples.reduce((a, b) => a + b, 0) / n;
    return { mean: Math.round(mean * 1000) / 1000, min: Math.round(Math.min(...this.#samples) * 1000) / 1000, samples: n };
  }

  #sample() {
    const busy = machineBusyTicks();
    const foreign = this.#foreignTicks();
    const spent = busy - this.#busy;
    this.#busy = busy;
    // Under half a core-tick of work in the second, the machine is idle: nothing to share.
    if (spent < TICKS_PER_SECOND / 2) {
      this.#share = 1;
    } else {
      this.#share = Math.min(1, Math.max(FLOOR, (spent - foreign) / spent));
    }
    this.#samples.push(this.#share);
    const wall = Date.now();
    this.#run += (wall - this.#wall) * this.#share;
    this.#wall = wall;
    appendFileSync(this.#clock, `${wall} ${Math.round(this.#run)} ${this.#share.toFixed(3)}\n`);
  }

  // Ticks the processes that are not the run's used since the last sample.
  #foreignTicks() {
    let foreign = 0;
    const seen = new Map();
    for (const name of readdirSync('/proc')) {
      const pid = Number(name);
      if (!(pid > 0)) continue;
      const now = cpuTicks(pid);
      if (now === null) continue;
      const [ticks, start] = now;
      const before = this.#seen.get(pid);
      const same = before !== undefined && before.start === start;
      const ours = same ? before.ours : this.#isOurs(pid);
      seen.set(pid, { start, ticks, ours });
      // One born since the last sample used all its time in the window.
      if (!ours) foreign += same ? ticks - before.ticks : ticks;
    }
    this.#seen = seen;
    return foreign;
  }

  #isOurs(pid) {
    if (pid === process.pid) return true;
    try {
      return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(this.#marker);
    } catch {
      // A zombie's environment cannot be read; the run makes most of them.
      return true;
    }
  }
}
