// Waits on a busy machine (issue #15): a process that finds itself waiting
// for a CPU stops spinning before it sleeps (native/sched.cc, lib/spin.ts),
// and every wait still ends as it should. The load is one CPU-bound process
// more than there are cores, started here and killed after.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { availableParallelism, cpus } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Event, Pipe, Pool, Process, Queue, Semaphore } from '../dist/index.js';
import { native } from '../dist/native.js';
import { BUSY_FIRST_READS, FAR_SPIN_LIMIT, SPIN_LIMIT, SpinGauge, firstReads, spinLimitFor } from '../dist/spin.js';
import { root } from './helpers.js';

describe('spin budget', () => {
  it('spins on idle cores; on a busy machine only while the partner last ran on another CPU', () => {
    expect(SPIN_LIMIT).toBeGreaterThan(0);
    expect(spinLimitFor(false, 0, 1)).toBe(SPIN_LIMIT);
    expect(spinLimitFor(false, 1, 1)).toBe(SPIN_LIMIT);
    expect(spinLimitFor(true, 2, 1)).toBe(FAR_SPIN_LIMIT);
    expect(FAR_SPIN_LIMIT).toBeGreaterThan(SPIN_LIMIT);
    // Sharing this CPU, the partner would wait for the spin to end.
    expect(spinLimitFor(true, 1, 1)).toBe(0);
    // Not known, on either side: the busy verdict alone decides.
    expect(spinLimitFor(true, 0, 1)).toBe(0);
    expect(spinLimitFor(true, 2, 0)).toBe(0);
    // On a busy machine the event loop does not spin; on idle cores as any wait.
    expect(spinLimitFor(true, 2, 1, true)).toBe(0);
    expect(spinLimitFor(true, 1, 1, true)).toBe(0);
    expect(spinLimitFor(false, 1, 1, true)).toBe(SPIN_LIMIT);
    // Woken onto the CPU the partner last ran on, it is queued behind us: no spin, idle or busy.
    expect(spinLimitFor(false, 1, 1, false, true)).toBe(0);
    expect(spinLimitFor(true, 2, 1, false, true)).toBe(0);
  });

  it.runIf(process.platform === 'linux' && availableParallelism() > 1)('a wait that follows a wake-up does not spin for a partner that last ran on its CPU while no core is free; once the note is taken, for a partner elsewhere, or with a core free, it spins', () => {
    // The verdicts and the yield are replaced, so the rule is seen whatever the load here.
    const script = `
      import { Process } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'index.js')).href)};
      import { native } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'native.js')).href)};
      import { SPIN_LIMIT, cpuTag, spinLimit } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'spin.js')).href)};
      import { runSync, sleep, sleepAsync } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'waiting.js')).href)};
      native.machineBusy = () => false;
      let crowded = true;
      native.machineCrowded = () => crowded;
      native.schedYield = () => {};
      const buffer = native.mapShared(4);
      const sleepOnce = () => runSync((function* () { return yield sleep(buffer, 0, 0, 5000); })());
      // A child that wakes this process once it sleeps on the word.
      const waker = () => {
        const child = new Process({ daemon: true, target: () => {
          for (let i = 0; i < 5000 && native.futexWake(buffer, 0, 1) === 0; i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        } });
        child.start();
        return child;
      };
      const here = () => cpuTag();
      const seen = {};
      runSync((function* () { return yield sleep(buffer, 0, 0, 1); })());
      seen.timedOut = spinLimit(here()) === SPIN_LIMIT;
      let child = waker();
      seen.woken = sleepOnce();
      seen.behind = spinLimit(here());
      seen.noteTaken = spinLimit(here()) === SPIN_LIMIT;
      child.joinSync();
      child = waker();
      sleepOnce();
      seen.elsewhere = spinLimit(here() + 1) === SPIN_LIMIT;
      child.joinSync();
      child = waker();
      seen.wokenAsync = await sleepAsync(sleep(buffer, 0, 0, 5000));
      seen.behindAsync = spinLimit(here());
      child.joinSync();
      crowded = false;
      child = waker();
      sleepOnce();
      seen.coreFree = spinLimit(here()) === SPIN_LIMIT;
      child.joinSync();
      console.log(JSON.stringify(seen));
    `;
    const r = spawnSync(process.execPath, ['--single-threaded', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ timedOut: true, woken: 0, behind: 0, noteTaken: true, elsewhere: true, wokenAsync: 0, behindAsync: 0, coreFree: true });
  });

  it.runIf(process.platform === 'linux' && availableParallelism() > 1)('knows the CPU it runs on, and so does a child it forks', () => {
    // Pinned by taskset to one CPU and then another: the tag must follow.
    const script = `
      import { Process, Queue } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'index.js')).href)};
      import { native } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'native.js')).href)};
      import { cpuTag } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'spin.js')).href)};
      native.machineBusy();
      const tags = new Queue();
      const child = new Process({ target: () => tags.putSync(cpuTag()) });
      child.start();
      console.log(JSON.stringify([cpuTag(), tags.getSync()]));
      child.joinSync();
    `;
    for (const cpu of [0, availableParallelism() - 1]) {
      const r = spawnSync('taskset', ['-c', String(cpu), process.execPath, '--single-threaded', '--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([cpu + 1, cpu + 1]);
    }
  });

  it.runIf(process.platform === 'linux' && availableParallelism() > 1)('a wake that woke a sleeper is noted; the next spin decision yields for it on idle cores, and a long poll, a spin on a busy machine and a sleep take it without a yield', () => {
    // The yield lets the process woken run if it was queued on this CPU (native/sched.cc woke_sleeper).
    // The machine's verdict and the yield are replaced, so the rule is seen whatever the load here.
    const script = `
      import { Process } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'index.js')).href)};
      import { native } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'native.js')).href)};
      import { pollPays, spinLimit } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'spin.js')).href)};
      const woke = new Int32Array(native.wokeWord);
      const buffer = native.mapShared(8);
      const word = new Int32Array(buffer);
      let yields = 0;
      let busy = false;
      native.schedYield = () => { yields += 1; };
      native.machineBusy = () => busy;
      const seen = {};
      native.futexWake(buffer, 4, 1);
      seen.nobodyWoken = woke[0];
      const child = new Process({ daemon: true, target: () => { for (let i = 0; i < 60 && Atomics.load(word, 0) === 0; i++) native.futexWait(buffer, 0, 0, 1000); } });
      child.start();
      let woken = 0;
      for (let i = 0; i < 5000 && woken === 0; i++) {
        woken = native.futexWake(buffer, 0, 1);
        if (woken === 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
      seen.woken = [woken, woke[0]];
      spinLimit();
      seen.spin = [woke[0], yields];
      spinLimit();
      seen.spinAgain = [woke[0], yields];
      woke[0] = 1;
      pollPays();
      seen.poll = [woke[0], yields];
      woke[0] = 1;
      busy = true;
      spinLimit(0);
      seen.busySpin = [woke[0], yields];
      woke[0] = 1;
      native.futexWait(buffer, 4, 1, 0);
      seen.sleep = woke[0];
      woke[0] = 1;
      await new Promise((resolve) => native.waitAsync(buffer, 4, 1, 0, resolve));
      seen.asyncSleep = woke[0];
      Atomics.store(word, 0, 1);
      native.futexWake(buffer, 0, 1);
      child.joinSync();
      seen.exitCode = child.exitCode;
      console.log(JSON.stringify(seen));
    `;
    const r = spawnSync(process.execPath, ['--single-threaded', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      nobodyWoken: 0,
      woken: [1, 1],
      spin: [0, 1],
      spinAgain: [0, 1],
      poll: [0, 1],
      busySpin: [0, 1],
      sleep: 0,
      asyncSleep: 0,
      exitCode: 0,
    });
  });
});

describe('SpinGauge', () => {
  it('stops polling after two misses in a row, probes again after a rest, and doubles the rest while probes miss', () => {
    const g = new SpinGauge();
    expect(g.allowed()).toBe(true);
    g.miss();
    expect(g.allowed()).toBe(true);
    g.miss();
    const rest = (): number => {
      let n = 0;
      while (!g.allowed()) n++;
      return n;
    };
    expect(rest()).toBe(16);
    // The probe misses (and the one after it): twice the rest.
    g.miss();
    g.miss();
    expect(rest()).toBe(32);
  });

  it('a hit ends the misses in a row and brings the first rest back', () => {
    const g = new SpinGauge();
    g.miss();
    g.hit();
    g.miss();
    expect(g.allowed()).toBe(true);
    g.miss();
    let n = 0;
    while (!g.allowed()) n++;
    expect(n).toBe(16);
    g.miss();
    g.hit();
    g.miss();
    g.miss();
    n = 0;
    while (!g.allowed()) n++;
    expect(n).toBe(16);
  });

  it('a hit in the middle of a rest (a wait a poll would have caught) ends the rest at once', () => {
    const g = new SpinGauge();
    for (let i = 0; i < 6; i++) g.miss();
    expect(g.allowed()).toBe(false);
    expect(g.allowed()).toBe(false);
    g.hit();
    expect(g.allowed()).toBe(true);
    g.miss();
    expect(g.allowed()).toBe(true);
  });

  it('two sleeps in a row that a poll would have cut short end a rest; one alone, or one then a long one, does not', () => {
    const g = new SpinGauge();
    g.miss();
    g.miss();
    expect(g.allowed()).toBe(false);
    g.slept(true);
    g.slept(false);
    g.slept(true);
    expect(g.allowed()).toBe(false);
    g.slept(true);
    expect(g.allowed()).toBe(true);
  });

  it('a late hit counts as a miss, and sleeps a poll would have cut short do not end the rest it starts; a hit in time does', () => {
    const g = new SpinGauge();
    g.late();
    expect(g.allowed()).toBe(true);
    g.late();
    expect(g.allowed()).toBe(false);
    g.slept(true);
    g.slept(true);
    g.slept(true);
    expect(g.allowed()).toBe(false);
    g.hit();
    expect(g.allowed()).toBe(true);
    // A rest that polls running out began ends after two such sleeps, as before.
    g.late();
    g.miss();
    expect(g.allowed()).toBe(false);
    g.slept(true);
    g.slept(true);
    expect(g.allowed()).toBe(true);
  });
});

describe('the busy verdict of one window (native/sched.cc)', () => {
  const MS = 1_000_000;
  it('counts a share of the window spent waiting for a CPU as busy, and a small one as idle', () => {
    // 10 time slices in 2 ms, 0.8 ms of it runnable without a CPU.
    expect(native.schedVerdict(false, 0.8 * MS, 10, 2 * MS, false)).toBe(true);
    expect(native.schedVerdict(false, 0.05 * MS, 10, 2 * MS, true)).toBe(false);
    // Between the two thresholds the verdict stays what it was.
    expect(native.schedVerdict(false, 0.22 * MS, 1, 2 * MS, false)).toBe(false);
    expect(native.schedVerdict(true, 0.22 * MS, 1, 2 * MS, false)).toBe(true);
  });

  it('a wait that is mostly wake-ups counts as busy only while more tasks are runnable than there are cores', () => {
    // 1000 wake-ups of 6 µs each in 12 ms: half the window, all of it wake-ups.
    // A process that sleeps on every wait of an idle machine is idle...
    expect(native.schedVerdict(false, 6 * MS, 1000, 12 * MS, false)).toBe(false);
    expect(native.schedVerdict(true, 6 * MS, 1000, 12 * MS, false)).toBe(false);
    // ...and one that sleeps on every wait of a crowded machine is busy.
    expect(native.schedVerdict(false, 6 * MS, 1000, 12 * MS, true)).toBe(true);
    expect(native.schedVerdict(true, 6 * MS, 1000, 12 * MS, true)).toBe(true);
  });
});

describe('on a machine whose cores are all taken', () => {
  const burners: ChildProcess[] = [];

  beforeAll(() => {
    // Each checks now and then that this test process still lives, so none outlives it.
    const check = `const p = ${process.pid}; for (let i = 1; ; i++) if ((i & 0xffffff) === 0 && process.ppid !== p) process.exit(0);`;
    for (let i = 0; i <= availableParallelism(); i++) burners.push(spawn(process.execPath, ['-e', check], { stdio: 'ignore' }));
  });

  afterAll(async () => {
    await Promise.all(
      burners.map((b) => {
        const gone = new Promise((resolve) => b.once('exit', resolve));
        b.kill('SIGKILL');
        return gone;
      }),
    );
  });

  it('a process that works and waits here finds the machine busy', () => {
    // The verdict is taken as a wait goes to sleep.
    const idle = new Event();
    let busy = false;
    const until = Date.now() + 10_000;
    while (!busy && Date.now() < until) {
      // Work for a while, so that this process competes for a CPU too.
      const t = performance.now();
      while (performance.now() - t < 20);
      idle.waitSync(1);
      busy = native.machineBusy();
    }
    expect(busy).toBe(true);
    // Read with no call by the waits, which then make fewer first reads.
    expect(new Int32Array(native.busyWord)[0]).toBe(1);
    expect(firstReads()).toBe(BUSY_FIRST_READS);
  });

  // The count is the whole machine's: where this process may use only some of its cores, the burners cannot fill them all.
  it.runIf(process.platform === 'linux' && availableParallelism() === cpus().length)('finds more tasks runnable than cores, with a CPU-bound process per core and one more running', () => {
    // The burners may still be starting: they count once the kernel runs them.
    let crowded = false;
    const until = Date.now() + 10_000;
    while (!crowded && Date.now() < until) crowded = native.machineCrowded();
    expect(crowded).toBe(true);
  });

  it('semaphore, event and queue ping-pongs between processes give every round, in order', async () => {
    const rounds = 2000;
    const s1 = new Semaphore(0);
    const s2 = new Semaphore(0);
    const go = new Event();
    const a = new Queue<number>();
    const b = new Queue<number>();
    const child = new Process({
      daemon: true,
      target: () => {
        for (let i = 0; i < rounds; i++) {
          s1.acquireSync();
          s2.release();
        }
        go.waitSync();
        for (let i = 0; i < rounds; i++) b.putSync(a.getSync() + 1);
      },
    });
    child.start();
    for (let i = 0; i < rounds; i++) {
      s1.release();
      expect(await s2.acquire({ timeout: 10_000 })).toBe(true);
    }
    go.set();
    for (let i = 0; i < rounds; i++) {
      a.putSync(i);
      expect(i % 2 === 0 ? b.getSync({ timeout: 10_000 }) : await b.get({ timeout: 10_000 })).toBe(i + 1);
    }
    expect(await child.join(10_000)).toBe(0);
  });

  it('a Pipe ping-pong, sync and async receives, gives every message in order', async () => {
    const [left, right] = Pipe();
    const child = new Process({
      daemon: true,
      target: () => {
        for (let m = right.recvSync(); m !== null; m = right.recvSync()) right.send(m);
      },
    });
    child.start();
    for (let i = 0; i < 1000; i++) {
      left.send({ i });
      expect(i % 2 === 0 ? left.recvSync() : await left.recv()).toEqual({ i });
    }
    left.send(null);
    expect(await child.join(10_000)).toBe(0);
    left.close();
    right.close();
  });

  it('a Pool answers apply, map with chunksize 1 and tasks that come one at a time', async () => {
    await using pool = new Pool({ processes: 2 });
    const square = (x: number): number => x * x;
    const items = Array.from({ length: 3000 }, (_, i) => i);
    expect(await pool.map(square, items, { chunksize: 1 })).toEqual(items.map(square));
    for (let i = 0; i < 200; i++) {
      expect(await pool.apply(square, [i])).toBe(i * i);
      if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(pool.applySync(square, [7])).toBe(49);
  });
});

/** Field `n` (1-based, as proc(5) counts) of /proc/PID/stat. */
function statField(pid: number, n: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[n - 3]!;
}

/** Resolves once `pid` sleeps (state S: the worker waits for its next task), or throws after 10 s. */
async function asleep(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (statField(pid, 3) !== 'S') {
    if (Date.now() > deadline) throw new Error(`process ${pid} did not go to sleep within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The scheduling policy (field 41) of `pid` once it sleeps: the one it chose for that sleep. */
async function sleepingPolicy(pid: number): Promise<string> {
  await asleep(pid);
  return statField(pid, 41);
}

const SCHED_OTHER = '0';
const SCHED_BATCH = '3';
const SCHED_IDLE = '5';
const hasChrt = process.platform === 'linux' && spawnSync('chrt', ['--version']).status === 0;

// One function for every task: a fork pool forks a fresh worker for a function first given to it after its workers were forked.
const pidOf = (): number => process.pid;

// The workers inherit this process's policy, which must be the default for them to manage their own.
const defaultPolicy = process.platform === 'linux' && statField(process.pid, 41) === SCHED_OTHER;

describe.runIf(defaultPolicy)("a pool worker's scheduling policy", () => {
  it('is SCHED_BATCH while it sleeps after a backlog of tasks (the last one sent while the pool had no more), and SCHED_OTHER once it runs each task alone', async () => {
    await using pool = new Pool({ processes: 1 });
    const pid = await pool.apply(pidOf, []);
    expect(await sleepingPolicy(pid)).toBe(SCHED_OTHER);
    // Whether the worker finds its last task already waiting depends on how
    // the two processes are scheduled: on a loaded machine the dispatcher can
    // fall behind, and the worker then sleeps and is woken for each of the
    // last tasks alone. Some run of a few finds a backlog; without the rule
    // none would sleep as SCHED_BATCH, since a map's last task is sent as
    // 'no more'.
    const items = Array.from({ length: 2000 }, (_, i) => i);
    let policy = -1;
    for (let run = 0; run < 10 && policy !== SCHED_BATCH; run++) {
      expect(await pool.map(pidOf, items, { chunksize: 1 })).toEqual(items.map(() => pid));
      policy = await sleepingPolicy(pid);
    }
    expect(policy).toBe(SCHED_BATCH);
    for (let i = 0; i < 3; i++) {
      expect(await pool.apply(pidOf, [])).toBe(pid);
      expect(await sleepingPolicy(pid)).toBe(SCHED_OTHER);
    }
  });

  it('is SCHED_BATCH after a task sent while the pool had more to hand out, though it found no backlog', async () => {
    await using pool = new Pool({ processes: 2 });
    // Each of two sleeping workers gets one item: the first while the second still waits in the pool.
    let pids: number[] = [];
    for (let attempt = 0; attempt < 10 && (pids.length === 0 || pids[0] === pids[1]); attempt++) {
      await Promise.all([pool.apply(pidOf, []), pool.apply(pidOf, [])]);
      for (const pid of pool.pids) await asleep(pid);
      pids = await pool.map(pidOf, [0, 1], { chunksize: 1 });
    }
    expect(pids[0]).not.toBe(pids[1]);
    expect(await sleepingPolicy(pids[0]!)).toBe(SCHED_BATCH);
    expect(await sleepingPolicy(pids[1]!)).toBe(SCHED_OTHER);
  });

  it.runIf(hasChrt)('keeps a policy chosen for the worker by someone else', async () => {
    await using pool = new Pool({
      processes: 1,
      initializer: () => {
        const r = spawnSync('chrt', ['--idle', '-p', '0', String(process.pid)], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`chrt --idle failed: ${r.stderr || r.error}`);
      },
    });
    const pid = await pool.apply(pidOf, []);
    expect(await sleepingPolicy(pid)).toBe(SCHED_IDLE);
    const items = Array.from({ length: 50 }, (_, i) => i);
    expect(await pool.map(pidOf, items, { chunksize: 1 })).toEqual(items.map(() => pid));
    expect(await sleepingPolicy(pid)).toBe(SCHED_IDLE);
  });
});
