// Node 20's event loop (libuv 1.46) can stop polling for events altogether.
// libuv runs due timers in a loop until none is due, and Node moves the loop's
// clock forward inside timer callbacks (every setTimeout() does), so callbacks
// whose work outlasts the next timer's delay keep it in that loop: two async
// functions that each do 5 ms of work after `await sleep(1)` starve every
// descriptor for as long as they run (libuv#4245, fixed in libuv 1.48, which
// Node 22 has). nodemp's wake-ups, exit notices and connections all come
// through polling, and the soak saw Pool calls wait 35 s for answers that were
// there. On such a loop a timer of ours, which still runs, notices that the
// loop has not polled since its last tick and looks for them itself.
import { native } from './native.js';
import { selfPid } from './self.js';

/** libuv before 1.48, whose timers can starve polling. */
export const LOOP_CAN_STALL = ((): boolean => {
  const [major, minor] = process.versions.uv.split('.').map(Number);
  return major === 1 && minor < 48;
})();

/**
 * What one mechanism would have been told by the loop. `active()`: whether it
 * has something waiting now (the guard ticks while any has); `poll()`: looks
 * for news itself, without blocking, and delivers it as the loop would.
 */
export interface StallPoller {
  active(): boolean;
  poll(): void;
}

// Ten looks a second: a stalled loop is found within 0.2 s, and an idle
// process with something waiting wakes no more often than that.
const TICK_MS = 100;

const pollers = new Set<StallPoller>();
let timer: ReturnType<typeof setInterval> | null = null;
// A forked child loses the parent's timers: the guard is the starting process's.
let timerPid = 0;
let lastTurns = -1;
// For guardState(): the ticks that found the loop stalled.
let stallTicks = 0;
let lastStallAt = 0;
// The latest ticks, oldest first: [when (performance.now()), turns since the tick before].
const recentTicks: Array<[number, number]> = [];
const RECENT_TICKS = 30;

// Callers of nextTurn() still waiting for theirs, with the immediate that would end the wait.
const turnWaiters = new Map<() => void, NodeJS.Immediate>();
// A forked child inherits the map; the work awaiting those turns is the parent's.
let turnWaitersPid = selfPid;

function turnWaitersHere(): Map<() => void, NodeJS.Immediate> {
  if (turnWaitersPid !== selfPid) {
    turnWaitersPid = selfPid;
    turnWaiters.clear();
  }
  return turnWaiters;
}

/**
 * Resolves after the event loop has polled for events once more, as
 * `new Promise(setImmediate)` does; on a loop that has stopped polling,
 * whose check phase never comes, at the guard's next look instead.
 */
export function nextTurn(): Promise<void> {
  if (!LOOP_CAN_STALL) return new Promise(setImmediate);
  return new Promise((resolve) => {
    turnWaitersHere().set(
      resolve,
      setImmediate(() => {
        turnWaiters.delete(resolve);
        resolve();
      }),
    );
    guardLoop();
  });
}

addStallPoller({
  active: () => turnWaitersHere().size > 0,
  poll() {
    const waiters = turnWaitersHere();
    for (const [resolve, immediate] of waiters) {
      clearImmediate(immediate);
      resolve();
    }
    waiters.clear();
  },
});

export function addStallPoller(poller: StallPoller): void {
  if (LOOP_CAN_STALL) pollers.add(poller);
}

/** Starts the guard, if it is needed and not running: something now waits for the loop. */
export function guardLoop(): void {
  if (!LOOP_CAN_STALL || (timer !== null && timerPid === selfPid)) return;
  if (timerPid !== selfPid) {
    // A forked child's guard starts its own account, not the parent's.
    stallTicks = 0;
    lastStallAt = 0;
  }
  // Ticks from before the guard last stopped are apart by the pause, not by a stall: they go.
  recentTicks.length = 0;
  timerPid = selfPid;
  lastTurns = native.loopTurns();
  timer = setInterval(tick, TICK_MS);
  timer.unref();
}

/**
 * For diagnosis (a Pool's state, which the soak reports for a slow or hung
 * call): whether the guard is ticking, its latest ticks and the loop turns
 * between them, and what waits on it.
 */
export function guardState(): object {
  const lastTickAt = recentTicks.at(-1)?.[0];
  return {
    canStall: LOOP_CAN_STALL,
    ticking: timer !== null && timerPid === selfPid,
    lastTickMs: lastTickAt === undefined ? null : Math.round(performance.now() - lastTickAt),
    turnsSinceTick: lastTickAt === undefined ? null : native.loopTurns() - lastTurns,
    stallTicks,
    lastStallMs: lastStallAt === 0 ? null : Math.round(performance.now() - lastStallAt),
    // [ms ago, turns since the tick before] of the latest ticks: whether the loop polled between them.
    recentTicks: recentTicks.map(([at, turns]) => [Math.round(performance.now() - at), turns]),
    turnWaiters: turnWaitersHere().size,
    activePollers: [...pollers].filter((p) => p.active()).length,
  };
}

function tick(): void {
  const at = performance.now();
  const turns = native.loopTurns();
  recentTicks.push([at, turns - lastTurns]);
  if (recentTicks.length > RECENT_TICKS) recentTicks.shift();
  if (turns === lastTurns) {
    stallTicks++;
    lastStallAt = at;
    for (const p of pollers) p.poll();
  }
  lastTurns = turns;
  for (const p of pollers) if (p.active()) return;
  clearInterval(timer as ReturnType<typeof setInterval>);
  timer = null;
}
