// How nodemp's waits spin before they sleep. A spin pays on idle cores,
// where the partner that will wake us runs at the same time on another core
// and answers within microseconds: it saves the two system calls and the
// scheduler round trip of a futex sleep and wake. On a busy machine it does
// not: the partner is often queued behind the spinner on the same core, and
// every microsecond spent spinning is one it cannot run. So a wait re-reads
// its word a few times (a fraction of a microsecond, cheap anywhere), and
// spins on while this process does not find itself waiting for a CPU
// (native/sched.cc), or, when it does, while the partner that will wake it
// last ran on another CPU: the spin then takes time only from strangers.
// Right after a wake-up of its own, with no core free, a wait does not spin
// for a partner that last ran on its CPU, whatever the verdict (spinLimitFor).
import { availableParallelism } from 'node:os';
import { native } from './native.js';

/**
 * How many times a waiter re-reads its word before it sleeps on an idle
 * machine (7 to 30 µs here, by the day: each Atomics call is a builtin call on Node
 * 20). With one CPU the other side cannot run while we spin, so there is no
 * spinning at all.
 */
export const SPIN_LIMIT = availableParallelism() > 1 ? 800 : 0;

/**
 * Re-reads made before asking whether the machine allows more: a fraction of
 * a microsecond, within which a partner that is running often answers.
 */
export const FIRST_READS = SPIN_LIMIT > 0 ? 32 : 0;

/**
 * The first reads on a busy machine. There a partner that is running answers
 * no sooner than one that was woken, a few microseconds on: 32 reads caught
 * nothing, and cost a Queue await get() ping-pong on one CPU about 1 us of
 * its 26 us round trip (a Semaphore's, no difference seen).
 */
export const BUSY_FIRST_READS = SPIN_LIMIT > 0 ? 4 : 0;

/**
 * Re-reads on a busy machine while the partner last ran on another CPU
 * (about 40 µs here). Its answer comes later than on idle cores, since it
 * shares its CPU too; and a wait that gives up costs more: the wake-up of a
 * process on a CPU that runs something else took about 50 µs here. Two
 * processes in a Semaphore ping-pong under two CPU-bound ones: with 1600
 * re-reads, one pass of three fell asleep on every round (103 µs a round
 * trip); with 4000, both kept spinning (0.2-0.3 µs).
 */
export const FAR_SPIN_LIMIT = SPIN_LIMIT > 0 ? 4000 : 0;

// 1 + the CPU this process last ran on, as native/sched.cc last looked
// (after each sleep, at each spin decision); 0: not known.
const cpuWord = new Int32Array(native.cpuWord);
const wokeWord = new Int32Array(native.wokeWord);
const busyWord = new Int32Array(native.busyWord);

/** How many first reads a wait makes now: FIRST_READS, or BUSY_FIRST_READS on a busy machine (read with no call). */
export function firstReads(): number {
  return busyWord[0] === 0 ? FIRST_READS : BUSY_FIRST_READS;
}

/**
 * What a process publishes beside a word that others wait on when it changes
 * it (a release, a set, a put): 1 + the CPU it last ran on, 0 if not known.
 */
export function cpuTag(): number {
  return cpuWord[0] + 1;
}

/**
 * Whether a wait that found nothing in its first reads may go on spinning.
 * On a busy machine a spin takes the time slice of whoever shares this CPU:
 * it pays only if the partner that will wake us, `partner` (its cpuTag(),
 * published beside the word), runs elsewhere.
 */
export function spinPays(partner = 0): boolean {
  return spinLimit(partner) > 0;
}

/**
 * spinPays() for a long poll (a pool worker's for its next task, a manager's
 * for its next request or reply; the pool's look at the loop). It takes the
 * note of a wake-up it made without the yield a spin makes for it, and, as a
 * spin decision does, the note of one it had (spinLimit): a pool
 * worker that yielded after waking the pool's thread lost its CPU to a
 * CPU-bound process for a whole slice whenever the busy verdict read idle,
 * and an applySync() round trip under two of them took 36 us against 15.
 */
export function pollPays(partner = 0): boolean {
  wokeWord[0] = 0;
  return spinPays(partner);
}

// Whether the wait now deciding runs on the event loop (a promise form's step).
let loopWait = false;

// Whether a sleep of this process ended in a wake-up since its last spin decision.
let wokenSince = false;

/** A sleep of this process ended in a wake-up (lib/waiting.ts); the next spin decision takes the note. */
export function noteWoken(): void {
  wokenSince = true;
}

/** Marks the steps that follow as the event loop's (true) or not; returns what was marked before. */
export function setLoopWait(on: boolean): boolean {
  const was = loopWait;
  loopWait = on;
  return was;
}

/**
 * How many re-reads in all a wait that found nothing in its first reads may
 * make, as spinPays() decides: 0 for none. `loop`: the wait holds the event
 * loop (by default, as setLoopWait() last marked). A wait that will spin
 * after this process woke a sleeper first yields the CPU, on idle cores.
 * It takes the note of this process's latest wake-up (noteWoken()): the
 * first decision after one, which may be a later wait's (one whose first
 * reads found what they waited for takes nothing), asks whether its partner
 * waits behind it (spinLimitFor's wokenBehind). Taken late, the note costs
 * at most a sleep instead of a spin, and only when no core is free. A pool
 * worker's poll for its next task is such a decision: woken for a task onto
 * the CPU of the pool's thread, it does not poll for the next one while no
 * core is free, since that thread waits behind it.
 */
export function spinLimit(partner = 0, loop = loopWait): number {
  if (SPIN_LIMIT === 0) return 0;
  const busy = native.machineBusy();
  const mine = cpuTag();
  // Busy, a partner on this CPU gets no spin anyway: the run-queue count
  // (a /proc read) is asked only where it can change the answer.
  const wokenBehind = !busy && wokenSince && partner !== 0 && partner === mine && native.machineCrowded();
  wokenSince = false;
  const limit = spinLimitFor(busy, partner, mine, loop, wokenBehind);
  if (wokeWord[0] !== 0) {
    wokeWord[0] = 0;
    // A process this one woke since its last wait may be queued on this CPU
    // (native/sched.cc woke_sleeper). Not on a busy machine: there the yield
    // gives the CPU to a stranger for its whole slice as well.
    if (limit > 0 && !busy) native.schedYield();
  }
  return limit;
}

/**
 * spinLimit()'s rule, given the busy verdict, the partner's cpuTag() and
 * this process's (0: not known), and whether the wait holds the event loop.
 * On a busy machine the loop does not spin, even for a partner on another
 * CPU: it has other work (a server's requests) than one wait, and a Pool's
 * loop spinning for its answers made an HTTP server's main thread cost 1.3x
 * piscina's CPU a request (71 against 55 µs), against 0.8x without (60
 * against 75, each in the same run).
 *
 * `wokenBehind`: this process was woken since its last decision, the
 * partner last ran on this CPU, and more tasks are runnable than there are
 * cores: the kernel put us on the CPU of the process that woke us, which
 * waits behind us here for a CPU, and none is free to take it. No spin then,
 * busy verdict or not: the partner cannot answer until we sleep. The
 * verdict can read idle there, since a process woken this way runs at once:
 * in a Queue await get() ping-pong beside two CPU-bound processes, the side
 * that slept spun 800 re-reads on every round (42 µs of a 48 µs round trip,
 * in a trace of the scheduler). A pair beside two CPU-bound processes here
 * lands on two CPUs and spins (1-7 µs a round trip), or shares one; there,
 * with this rule, a Queue getSync() ping-pong took 16-19 µs against 27-35,
 * a Semaphore's 12-13 against 16-17, await get() 33-45 against 38-54
 * (medians of the runs on one CPU, 8 and 20 runs of each code in turn), and
 * as many runs landed on two CPUs. With a core free the spin stays: the
 * kernel soon moves one of the two there, while a pair that slept on every
 * round stayed on one CPU (the Semaphore ping-pong on idle cores 4.8 µs
 * against 3.9 without the check, three quick runs each).
 */
export function spinLimitFor(busy: boolean, partner: number, mine: number, loop = false, wokenBehind = false): number {
  if (SPIN_LIMIT === 0 || wokenBehind) return 0;
  if (!busy) return SPIN_LIMIT;
  return !loop && partner !== 0 && mine !== 0 && partner !== mine ? FAR_SPIN_LIMIT : 0;
}

/** Re-reads words[index] while it equals `value`, as far as the machine and the partner's CPU (`partner`, as spinPays) allow; returns the last value read. */
export function spinWhileEqual(words: Int32Array, index: number, value: number, partner = 0): number {
  const first = firstReads();
  let seen = Atomics.load(words, index);
  for (let i = 0; seen === value && i < first; i++) seen = Atomics.load(words, index);
  if (seen !== value) return seen;
  const limit = spinLimit(partner);
  for (let i = first; seen === value && i < limit; i++) seen = Atomics.load(words, index);
  return seen;
}

/** Re-reads words[index] while it differs from `value`, as far as the machine and the partner's CPU allow (as spinWhileEqual); returns the last value read. */
export function spinWhileNotEqual(words: Int32Array, index: number, value: number, partner = 0): number {
  const first = firstReads();
  let seen = Atomics.load(words, index);
  for (let i = 0; seen !== value && i < first; i++) seen = Atomics.load(words, index);
  if (seen === value) return seen;
  const limit = spinLimit(partner);
  for (let i = first; seen !== value && i < limit; i++) seen = Atomics.load(words, index);
  return seen;
}

/**
 * Whether a long poll (a pool worker's for its next task, a manager's for
 * its next request or reply) is worth its time, learned from how recent ones
 * went; callers ask spinPays() first. A worker given a task every millisecond
 * would otherwise poll a fifth of its time in vain. After MISSES fruitless
 * polls in a row the waits go straight to sleep for a rest of FIRST_REST
 * waits; then one wait polls again as a probe: a hit brings polling back, a
 * miss doubles the rest (up to LONGEST_REST).
 */
export class SpinGauge {
  #misses = 0;
  #rest = 0;
  #nextRest = FIRST_REST;
  #soon = 0;
  // The rest began with polls that caught what they waited for, but late (see late()).
  #restIsLate = false;

  /** Whether this wait may poll. */
  allowed(): boolean {
    if (this.#rest === 0) return true;
    this.#rest -= 1;
    return false;
  }

  /** The poll found what it waited for, or one would have: polls pay again, from the next wait. */
  hit(): void {
    this.#rest = 0;
    this.#misses = 0;
    this.#nextRest = FIRST_REST;
    this.#restIsLate = false;
  }

  /**
   * The poll found what it waited for, but later than a wake-up would have
   * cost: it counts as a miss, and the rest that follows is not ended by
   * sleeps that a poll would have cut short (slept()), which come at the
   * same intervals. A probe that hits in time ends it, as any hit does.
   */
  late(): void {
    this.miss();
    if (this.#rest > 0) this.#restIsLate = true;
  }

  /**
   * A wait that did not poll slept, and what it waited for came within a
   * poll's time (`soon`) or later. Twice soon in a row, polls would have
   * caught both: the rest ends at once. Counted in waits alone, a rest grown
   * long while tasks came seldom went on for a thousand of them once they
   * came every few microseconds, each paying a wake-up (a Pool's apply round
   * trip 10-30 µs instead of 3). Once alone was too often: the two tasks a
   * timer tick sends back to back ended the rest of a pool given a task a
   * millisecond, and its polls cost it a fifth more CPU.
   */
  slept(soon: boolean): void {
    if (!soon || this.#restIsLate) {
      this.#soon = 0;
    } else if (++this.#soon === SOON_IN_A_ROW) {
      this.#soon = 0;
      this.hit();
    }
  }

  /** The poll ran out: the wait has to sleep. */
  miss(): void {
    this.#misses += 1;
    if (this.#misses < MISSES) return;
    this.#misses = 0;
    this.#rest = this.#nextRest;
    this.#nextRest = Math.min(this.#nextRest * 2, LONGEST_REST);
    this.#restIsLate = false;
  }
}

const MISSES = 2;
const SOON_IN_A_ROW = 2;
const FIRST_REST = 16;
const LONGEST_REST = 1024;
