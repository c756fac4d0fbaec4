// Shared helpers for the workload scripts.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

export async function timeRounds(rounds, warmup, fn) {
  for (let i = 0; i < warmup; i++) await fn();
  const samples = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = nowMs();
    await fn();
    samples.push(nowMs() - t0);
  }
  return median(samples);
}

/**
 * Runs several subcommands of a Python peer (bench/peers/`script`), each
 * given as [name, ...args], in one interpreter (its start-up is outside every
 * timing but still costs the run's time). Returns their results in order, or
 * null if there is no such interpreter.
 */
export function pythonPeer(script, commands, interpreter = 'python3') {
  const r = spawnSync(interpreter, [`${here}peers/${script}`, ...commands.map((c) => c.join(':'))], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.error?.code === 'ENOENT') return null;
  if (r.error || r.status !== 0) throw new Error(`${script} under ${interpreter} failed: ${r.error ?? `status ${r.status}`}`);
  return JSON.parse(r.stdout);
}

/** `total` blocking round trips of a small object over `conn` (the far end runs echoLoop); samples in us, the first `warmup` dropped. */
export function pingLoop(conn, total, warmup) {
  const samples = [];
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    conn.send({ i });
    const m = conn.recvSync();
    const t = performance.now();
    if (m.i !== i) throw new Error(`ping-pong answer ${m.i} where ${i} was expected`);
    if (i >= warmup) samples.push((t - t0) * 1000);
  }
  return samples;
}

/** Sends back each of the next `total` messages on `conn`. */
export function echoLoop(conn, total) {
  for (let i = 0; i < total; i++) conn.send(conn.recvSync());
}

/**
 * CPU time (ns) one thread has used so far: the first field of its
 * /proc/<pid>/task/<tid>/schedstat, the scheduler's own count, where
 * /proc/<pid>/stat only has clock ticks (10 ms).
 */
export function threadCpuNs(pid, tid = pid) {
  return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
}

/** CPU time (ns) a process has used so far, summed over its live threads (one that has exited is no longer counted). */
export function processCpuNs(pid) {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += threadCpuNs(pid, tid);
    } catch (error) {
      // The thread exited after the directory was read.
      if (error.code !== 'ENOENT' && error.code !== 'ESRCH') throw error;
    }
  }
  return ns;
}

/**
 * Calls `fn(k)` (and awaits it) for k = 1..count, each call at k * tickMs
 * after the start at the earliest; a call that comes late is followed at once
 * by the next one due, so `count` calls always take about count * tickMs.
 * Returns the wall time taken (ms).
 */
export async function tickLoop(count, tickMs, fn) {
  const t0 = performance.now();
  for (let k = 1; k <= count; k++) {
    const wait = t0 + k * tickMs - performance.now();
    if (wait > 0) await sleep(wait);
    await fn(k);
  }
  return performance.now() - t0;
}

/**
 * Live processes whose environment holds `marker` (NAME=value), which every
 * process of a run inherits: what a run left behind. Zombies are not counted.
 */
export function markedProcesses(marker) {
  const found = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (!readFileSync(`/proc/${d}/environ`, 'latin1').split('\0').includes(marker)) continue;
      if (procState(d) === 'Z') continue;
      found.push({ pid: Number(d), cmd: readFileSync(`/proc/${d}/cmdline`, 'latin1').replaceAll('\0', ' ').trim() });
    } catch {
      // Gone as we looked, or not ours to read.
    }
  }
  return found;
}

/** The state letter of pid in /proc (R, S, T, Z...), or null once it is gone. */
export function procState(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2];
  } catch {
    return null;
  }
}

/** Whether pid has ended (gone, or a zombie nobody reaped yet). */
export function pidGone(pid) {
  const state = procState(pid);
  return state === null || state === 'Z' || state === 'X';
}
