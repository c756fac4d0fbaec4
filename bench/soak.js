// npm run soak [-- --seconds N --seed S --rate R]: one soak run (bench/soak/harness.js)
// in a process of its own, then the checks that need it gone: no process of the
// run left, no /dev/shm segment left. Prints a table, writes
// bench/results/soak.json (and bench/SOAK.md for a run of 10 minutes or more),
// and exits non-zero on any violation, hang or leak, printing the seed and the
// history that broke.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Chaos } from './soak/chaos.js';
import { CpuShare } from './soak/cpu-share.js';
import { markedProcesses } from './lib.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const opts = { seconds: 60, seed: randomBytes(4).readUInt32LE(0), rate: 25 };
for (let i = 2; i < process.argv.length; i++) {
  const m = /^--(seconds|seed|rate)(?:=(.*))?$/.exec(process.argv[i]);
  const value = m ? (m[2] ?? process.argv[++i]) : undefined;
  if (!m || value === undefined || !/^\d+(\.\d+)?$/.test(value)) {
    console.error(`soak: expected --seconds N, --seed S or --rate R (numbers), got ${process.argv[i] ?? process.argv[i - 1]}`);
    process.exit(2);
  }
  opts[m[1]] = Number(value);
}

const run = randomBytes(6).toString('hex');
const marker = `NODEMP_SOAK_RUN=${run}`;
const dir = mkdtempSync(join(tmpdir(), 'nodemp-soak-'));
const out = join(dir, 'result.json');
const targets = join(dir, 'targets');
const faults = join(dir, 'faults');
const clock = join(dir, 'clock');
writeFileSync(faults, '');

function shmEntries() {
  return readdirSync('/dev/shm').filter((n) => n.startsWith('nodemp_'));
}

console.error(`soak: ${opts.seconds} s, seed ${opts.seed}, about ${opts.rate} faults a second of the CPU the run gets (a second, on an idle machine)`);
const shmBefore = new Set(shmEntries());
const child = spawn(
  process.execPath,
  ['--single-threaded', '--expose-gc', '--no-warnings', `${here}soak/harness.js`, '--seconds', String(opts.seconds), '--seed', String(opts.seed), '--out', out, '--targets', targets, '--faults', faults, '--clock', clock],
  { stdio: ['ignore', 'inherit', 'pipe', 'pipe'], env: { ...process.env, NODEMP_SOAK_RUN: run } },
);
// Every process of the run writes to this stderr: a native crash of one whose
// death is otherwise excused (a pool worker, a server) shows only here.
const crashes = [];
let errTail = '';
child.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  const lines = (errTail + chunk.toString('latin1')).split('\n');
  errTail = lines.pop();
  for (const line of lines) if (/FATAL ERROR|Segmentation fault|core dumped|Assertion .*failed|Check failed|terminate called/.test(line)) crashes.push(line.trim());
});
// The harness writes "R" when the run starts and "C" when it stops; the
// driver sends no faults outside that.
const pace = new CpuShare(marker, clock);
const chaos = new Chaos({ seed: opts.seed, rate: opts.rate, pace, harnessPid: child.pid, marker, targets, faults });
let pending = '';
child.stdio[3].setEncoding('latin1').on('data', (chunk) => {
  const lines = (pending + chunk).split('\n');
  pending = lines.pop();
  for (const line of lines) {
    if (line === 'R') chaos.start();
    else if (line === 'C') chaos.end();
  }
});
let overran = false;
const limit = setTimeout(() => {
  overran = true;
  child.kill('SIGKILL');
}, (opts.seconds + 240) * 1000);
const [code, sig] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
clearTimeout(limit);
chaos.end();

let result;
try {
  result = JSON.parse(readFileSync(out, 'utf8'));
} catch {
  result = {
    seconds: null, seed: opts.seed, operations: null, faults: null, violations: 0, hangs: overran ? 1 : 0, leaks: 0, p50Ms: null, p99Ms: null,
    violationList: overran ? [] : [{ message: `the harness ended with ${sig ?? `exit code ${code}`} before writing its result` }],
    hangList: overran ? [{ message: `the harness did not finish within ${opts.seconds + 240} s` }] : [],
    leakList: [],
  };
  if (!overran) result.violations = 1;
}
rmSync(dir, { recursive: true, force: true });
result = { seconds: result.seconds, seed: result.seed, rate: opts.rate, cpuShare: pace.summary(), ...result };

// Daemons die with the harness and the segment tracker once its last owner is
// gone; give them a moment, then whatever is left is a leak.
let left = markedProcesses(marker);
for (let i = 0; i < 50 && left.length > 0; i++) {
  await sleep(100);
  left = markedProcesses(marker);
}
for (const p of left) {
  result.leakList.push(`process ${p.pid} left running: ${p.cmd}`);
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    // Ended meanwhile.
  }
}
const shmLeft = shmEntries().filter((n) => !shmBefore.has(n));
for (const name of shmLeft) {
  result.leakList.push(`/dev/shm/${name} left behind`);
  rmSync(`/dev/shm/${name}`, { force: true });
}
const rss = result.detail?.rssMb;
if (rss && rss.growthAfterQuarter > Math.max(64, rss.quarter * 0.5)) {
  result.leakList.push(`the harness's RSS grew ${rss.growthAfterQuarter} MB after the first quarter of the run (from ${rss.quarter} MB)`);
}
const fds = result.detail?.fds;
if (fds && fds.unexplained.length > 0) result.leakList.push(`descriptors left open: ${fds.unexplained.join(', ')}`);
const memfds = result.detail?.memfds;
if (memfds && memfds.after > memfds.before + 4) result.leakList.push(`shared mappings (memfds) grew from ${memfds.before} to ${memfds.after}`);
for (const line of crashes) {
  result.violationList.push({ message: `a process of the run crashed: ${line}` });
  result.violations++;
}

result.leaks = result.leakList.length;

const row = (k, v) => console.log(`| ${k.padEnd(28)} | ${String(v).padStart(14)} |`);
console.log(`\n| ${'soak'.padEnd(28)} | ${'result'.padStart(14)} |\n|${'-'.repeat(30)}|${'-'.repeat(16)}|`);
row('seconds', result.seconds);
row('seed', result.seed);
row('operations', result.operations);
row('faults: SIGKILL', result.faults?.kill);
row('faults: SIGSTOP+SIGCONT', result.faults?.stop);
row('CPU share: mean, lowest', `${result.cpuShare.mean}, ${result.cpuShare.min}`);
row('violations', result.violations);
row('hangs', result.hangs);
row('leaks', result.leaks);
row('operation p50 (ms)', result.p50Ms?.toFixed(3));
row('operation p99 (ms)', result.p99Ms?.toFixed(3));
row('slowest operation (ms)', result.detail?.slowest.ms);
if (result.detail) {
  const d = result.detail;
  for (const [name, m] of Object.entries(d.messages)) row(`${name} messages`, m.received);
  row('pool tasks', d.poolTasks);
  row('pool calls failed: worker died', d.poolWorkerDied);
  row('processes started', d.starts);
  row('harness RSS quarter → end MB', `${d.rssMb.quarter} → ${d.rssMb.end}`);
  row('longest time the loop did not poll (ms)', d.loopStallMaxMs);
  if (d.mainThread) row('harness main thread on a CPU / waiting for one (s)', `${d.mainThread.onCpuS} / ${d.mainThread.runQueueS}`);
}

const { history, ...summary } = result;
mkdirSync(`${here}results`, { recursive: true });
writeFileSync(`${here}results/soak.json`, `${JSON.stringify(summary, null, 2)}\n`);
if (result.seconds >= 600) writeSoakMd(summary);

const failed = result.violations + result.hangs + result.leaks;
if (failed > 0) {
  // The history first and the failures last: a CI log that keeps only its tail keeps the seed and what failed.
  if (history) {
    console.error('history up to the first failure (ms since start):');
    for (const e of history) console.error(`  ${JSON.stringify(e)}`);
  }
  console.error(`\nsoak FAILED with seed ${result.seed} (repeat: npm run soak -- --seconds ${opts.seconds} --seed ${result.seed} --rate ${opts.rate})`);
  for (const v of result.violationList) console.error(`  violation at ${v.t ?? '?'} ms: ${v.message}`);
  for (const h of result.hangList) console.error(`  hang at ${h.t ?? '?'} ms: ${h.message}`);
  for (const l of result.leakList) console.error(`  leak: ${l}`);
  process.exit(1);
}

function writeSoakMd(s) {
  const d = s.detail;
  const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const text = `# Soak: the latest 10-minute run

Written by \`npm run soak -- --seconds ${opts.seconds} --seed ${s.seed} --rate ${opts.rate}\` on ${when} UTC (this 2-core machine).
What runs and what is checked: [the README's "Soak"](../README.md#soak-and-fault-injection).

| | |
|---|---|
| seconds | ${s.seconds} |
| seed | ${s.seed} |
| operations | ${s.operations} |
| faults: SIGKILL | ${s.faults.kill} |
| faults: SIGSTOP, then SIGCONT 1-150 ms later | ${s.faults.stop} |
| share of the machine's CPU the run got (the fault rate is per second of it): mean, lowest | ${s.cpuShare.mean}, ${s.cpuShare.min} |
| **violations** | **${s.violations}** |
| **hangs** | **${s.hangs}** |
| **leaks** (processes, /dev/shm, descriptors, RSS) | **${s.leaks}** |
| operation latency p50 / p99 | ${s.p50Ms.toFixed(3)} / ${s.p99Ms.toFixed(3)} ms |
| the slowest of the harness's own operations | ${(s.detail.slowest.ms / 1000).toFixed(1)} s (${s.detail.slowest.what}) |

SIGKILLs by target: ${Object.entries(d.killsBy).map(([k, v]) => `${k} ${v}`).join(', ')}.

| workload | |
|---|---|
${Object.entries(d.messages).map(([n, m]) => `| ${n}: messages received intact and in order | ${m.received} (${(m.bytes / 2 ** 20).toFixed(0)} MiB; ${m.consumersKilled} consumers killed) |`).join('\n')}
| Pool calls / tasks | ${d.poolCalls} / ${d.poolTasks} |
| Pool calls failed with WorkerDiedError / a task's own error / aborted | ${d.poolWorkerDied} / ${d.poolThrown} / ${d.poolAborted} |
| counters (Lock, RLock, Semaphore, Value) | ${Object.values(d.counters).join(', ')} increments, each equal to the increments that returned |
| Pipe echoes | ${d.echoes} (${(d.echoBytes / 2 ** 20).toFixed(0)} MiB) |
| SharedMemory segments checked across processes | ${d.shmChecked} (at most ${d.shmSegmentsMax} in /dev/shm at once) |
| manager generations (lost with a killed server) | ${d.managerGenerations} (${d.managerGenerationsLost}); ${d.managerAppends} appends checked |
| fork servers killed | ${d.forkserverDeaths} |
| processes started | ${d.starts} |
| harness RSS (MB): a quarter in, at the end, max | ${d.rssMb.quarter}, ${d.rssMb.end}, ${d.rssMb.max} |
| descriptors before / after | ${d.fds.before} / ${d.fds.after} |
| longest time the harness's event loop went without polling for events (Node 20's libuv; nodemp's guard looked for its news meanwhile) | ${d.loopStallMaxMs} ms |
${d.mainThread ? `| the harness's main thread over the run: on a CPU / runnable and waiting for a CPU | ${d.mainThread.onCpuS} s / ${d.mainThread.runQueueS} s of ${s.seconds} s |\n` : ''}`;
  writeFileSync(`${here}SOAK.md`, text);
}
