// What the soak's processes run. Every role is an exported function, so it
// starts the same way under fork, forkserver and spawn (by reference), and
// gets its shared objects in `args`:
//   ctl    RawArray('i'): run-wide flags (CTL below)
//   watch  RawArray('d'): per slot, when the operation in progress began (0: none), for the watchdog
//   acked  RawArray('i'): per slot, how many operations returned (a producer's puts, a client's appends)
//   hist   RawArray('i'): the latency histogram all roles add to
//   conn   a Connection to the harness: reports and violations
import { randomFillSync } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { QueueEmpty, SharedMemory } from '../../dist/index.js';
import { pidGone, procState } from '../lib.js';
import { bucketOf, makeRng } from './rng.js';

export const CTL = { STOP: 0, DRAIN: 1, MANAGER_STOP: 2, FOREIGN: 3, SIZE: 4 };
/** Counter cells (an Int32 RawArray per guarded counter). */
export const CELL = { COUNT: 0, INSIDE: 1, JOURNAL: 2, OLD: 3, OLD_SLOT: 4, OLD_MINE: 5, MINE: 8 };
export const HEADER = 16;

/** Exit code of a manager client whose server died: expected when chaos killed the server. */
export const EXIT_MANAGER_DEAD = 3;

export function messageSeed(p, s) {
  return (Math.imul(p, 2654435761) + s) >>> 0;
}

class Ops {
  constructor(watch, hist, slot) {
    this.watch = watch.typed;
    this.hist = hist.typed;
    this.slot = slot;
    this.t0 = 0;
  }

  begin() {
    this.watch[this.slot] = Date.now();
    this.t0 = performance.now();
  }

  end() {
    this.watch[this.slot] = 0;
    Atomics.add(this.hist, bucketOf((performance.now() - this.t0) * 1000), 1);
  }

  idle() {
    this.watch[this.slot] = 0;
  }
}

function makeMessage(rng, p, s, cap) {
  const n = rng.logInt(1, cap);
  if (rng.chance(0.5)) {
    const b = Buffer.allocUnsafe(n);
    randomFillSync(b);
    return { p, s, n, c: crc32(b, messageSeed(p, s)), b };
  }
  const m = Buffer.allocUnsafe(HEADER + n);
  randomFillSync(m, HEADER);
  m.writeUInt32LE(p, 0);
  m.writeUInt32LE(s, 4);
  m.writeUInt32LE(n, 8);
  m.writeUInt32LE(crc32(m.subarray(HEADER), messageSeed(p, s)), 12);
  return m;
}

/** [producer, seq, intact, length] of a message taken from a queue. */
export function inspectMessage(m) {
  if (Buffer.isBuffer(m)) {
    if (m.length < HEADER) return [-1, -1, 0, m.length];
    const p = m.readUInt32LE(0);
    const s = m.readUInt32LE(4);
    const body = m.subarray(HEADER);
    const ok = body.length === m.readUInt32LE(8) && crc32(body, messageSeed(p, s)) === m.readUInt32LE(12);
    return [p, s, ok ? 1 : 0, body.length];
  }
  // A Buffer inside a value comes back as a Uint8Array (msgpackr's bin type).
  const ok = m?.b instanceof Uint8Array && m.b.length === m.n && crc32(m.b, messageSeed(m.p, m.s)) === m.c;
  return [m?.p ?? -1, m?.s ?? -1, ok ? 1 : 0, m?.b?.length ?? 0];
}

/** Puts `count` messages of 1 B to `cap` bytes, each carrying its producer, number and checksum. */
export async function producer(ctl, watch, acked, hist, slot, conn, q, p, count, seed, cap, useAsync) {
  const flags = ctl.typed;
  const ops = new Ops(watch, hist, slot);
  const rng = makeRng(seed);
  const done = acked.typed;
  for (let s = 0; s < count && flags[CTL.STOP] === 0; s++) {
    const m = makeMessage(rng, p, s, cap);
    ops.begin();
    if (useAsync) await q.put(m, { timeout: 60_000 });
    else q.putSync(m, { timeout: 60_000 });
    ops.end();
    done[slot] = s + 1;
  }
}

/** Takes messages and reports each to the harness until told to drain and the queue is empty. */
export function consumer(ctl, watch, acked, hist, slot, conn, q, joinable) {
  const flags = ctl.typed;
  const ops = new Ops(watch, hist, slot);
  for (;;) {
    const draining = flags[CTL.DRAIN] !== 0;
    let m;
    ops.begin();
    try {
      m = q.getSync({ timeout: draining ? 3000 : 500 });
    } catch (error) {
      if (!(error instanceof QueueEmpty)) throw error;
      ops.idle();
      if (draining) return;
      continue;
    }
    ops.end();
    conn.send(inspectMessage(m));
    if (joinable) q.taskDone();
  }
}

function spinFor(us) {
  const until = performance.now() + us / 1000;
  while (performance.now() < until);
}

export { procState, pidGone };

/**
 * Increments a counter under `lock`, journalling each increment so that the
 * process taking over from a holder that died can undo a half-done one.
 * Checks mutual exclusion on the way in and out: finding someone else inside
 * is a violation unless the lock says its owner died and that owner is really
 * gone (a stopped holder must never be taken over).
 */
export async function counter(ctl, watch, acked, hist, slot, conn, kind, guard, cells, worker, seed, value) {
  const flags = ctl.typed;
  const c = cells.typed;
  const ops = new Ops(watch, hist, slot);
  const rng = makeRng(seed);
  const lock = kind === 'value' ? value.getLock() : guard;
  const pid = process.pid;
  const read = () => (kind === 'value' ? value.value : c[CELL.COUNT]);
  const write = (x) => (kind === 'value' ? (value.value = x) : (c[CELL.COUNT] = x));
  while (flags[CTL.STOP] === 0) {
    const useAsync = rng.chance(0.3);
    const reenter = kind !== 'lock' && kind !== 'sem' && rng.chance(0.3);
    ops.begin();
    const got = useAsync ? await lock.acquire({ timeout: 10_000 }) : lock.acquireSync({ timeout: 10_000 });
    if (!got) {
      ops.idle();
      conn.send({ hang: `${kind}: acquire waited 10 s (holder pid ${c[CELL.INSIDE]})` });
      continue;
    }
    const died = lock.ownerDied;
    const inside = c[CELL.INSIDE];
    if (inside !== 0 || c[CELL.JOURNAL] !== 0) {
      if (!died) conn.send({ v: `${kind}: pid ${pid} got the lock while pid ${inside} was inside, and no owner died` });
      else if (inside !== 0 && !pidGone(inside)) conn.send({ v: `${kind}: the lock was taken over from pid ${inside}, which is alive (stopped?)` });
      if (c[CELL.JOURNAL] !== 0) {
        write(c[CELL.OLD]);
        c[CELL.MINE + c[CELL.OLD_SLOT]] = c[CELL.OLD_MINE];
        c[CELL.JOURNAL] = 0;
      }
    }
    c[CELL.INSIDE] = pid;
    if (reenter) lock.acquireSync();
    c[CELL.OLD] = read();
    c[CELL.OLD_SLOT] = worker;
    c[CELL.OLD_MINE] = c[CELL.MINE + worker];
    c[CELL.JOURNAL] = 1;
    write(read() + 1);
    c[CELL.MINE + worker]++;
    spinFor(rng.int(0, 200));
    c[CELL.JOURNAL] = 0;
    if (c[CELL.INSIDE] !== pid) conn.send({ v: `${kind}: pid ${c[CELL.INSIDE]} entered while pid ${pid} held the lock` });
    c[CELL.INSIDE] = 0;
    if (reenter) lock.release();
    lock.release();
    ops.end();
  }
}

/** Does nothing: a start and an exit. */
export function idle() {}

/** Sends back every message until it gets null. */
export function echo(ctl, watch, acked, hist, slot, conn) {
  for (;;) {
    const m = conn.recvSync();
    if (m === null) return;
    conn.send(m);
  }
}

/**
 * Creates a segment, fills it, has the harness attach by name and check it,
 * attaches a second view itself, then closes and unlinks: a killed one leaves
 * its segment to the tracker.
 */
export function shmWorker(ctl, watch, acked, hist, slot, conn, seed) {
  const flags = ctl.typed;
  const ops = new Ops(watch, hist, slot);
  const rng = makeRng(seed);
  while (flags[CTL.STOP] === 0) {
    ops.begin();
    const n = rng.logInt(1, 1 << 20);
    const shm = new SharedMemory({ create: true, size: n });
    randomFillSync(shm.buf, 0, n);
    const crc = crc32(shm.buf.subarray(0, n));
    conn.send({ shm: shm.name, n, crc });
    const verdict = conn.recvSync();
    if (verdict !== 'ok') conn.send({ v: `SharedMemory ${shm.name}: the harness found ${verdict}` });
    const other = new SharedMemory({ name: shm.name });
    if (other.size < n || crc32(other.buf.subarray(0, n)) !== crc) conn.send({ v: `SharedMemory ${shm.name}: a second view differs` });
    other.close();
    shm.close();
    shm.unlink();
    ops.end();
  }
}

/** Appends (id, seq) to a manager list under a manager lock until its generation ends. */
export async function managerClient(ctl, watch, acked, hist, slot, conn, list, mlock, id, gen) {
  const flags = ctl.typed;
  const ops = new Ops(watch, hist, slot);
  const done = acked.typed;
  try {
    for (let seq = 0; flags[CTL.STOP] === 0 && flags[CTL.MANAGER_STOP] < gen; seq++) {
      ops.begin();
      const useAsync = seq % 3 === 0;
      const got = useAsync ? await mlock.acquire({ timeout: 10_000 }) : mlock.acquireSync({ timeout: 10_000 });
      if (!got) {
        ops.idle();
        conn.send({ hang: `manager lock: acquire waited 10 s` });
        continue;
      }
      if (useAsync) await list.append([id, seq]);
      else list.appendSync([id, seq]);
      mlock.releaseSync();
      ops.end();
      done[slot] = seq + 1;
    }
  } catch (error) {
    // A client started after its server died cannot reach it at all.
    if (error?.code === 'ERR_MANAGER_DEAD' || error?.code === 'ERR_MANAGER_UNREACHABLE') process.exit(EXIT_MANAGER_DEAD);
    throw error;
  }
}

export class SoakTaskError extends Error {
  name = 'SoakTaskError';
}

/** A pool task: spins `us` microseconds, then answers 2x+1 or throws on purpose. */
export function work(x, us, fail) {
  spinFor(us);
  if (fail) throw new SoakTaskError(`task ${x} failed on purpose`);
  return 2 * x + 1;
}

/** The same task, answering through a promise. */
export async function workAsync(x, us, fail) {
  await null;
  return work(x, us, fail);
}

/** `work` for map and imap, which pass one argument: [x, us, fail]. */
export function task(args) {
  return work(...args);
}

export function taskAsync(args) {
  return workAsync(...args);
}
