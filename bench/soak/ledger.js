// The soak's bookkeeping: what each participant was promised, checked against
// what arrived. Pure code with no processes in it, so its tests can feed it
// every kind of broken history and see each one caught.

/**
 * Messages of one queue. Producers are numbered once for the whole run; a
 * consumer reports each message it took, in the order it took them.
 *
 * The promise checked: every message of a producer that exited by itself (not
 * killed) arrives exactly once, intact, and no consumer sees a producer's
 * messages out of order. A consumer killed between taking a message and
 * reporting it loses that one message, so a run may be short by at most one
 * message per consumer killed. A killed producer's messages are checked for
 * duplicates, damage and order, not for completeness: what it had handed to its
 * feeder died with it, as in Python.
 */
export class MessageLedger {
  constructor(name) {
    this.name = name;
    this.producers = new Map();
    this.closed = new Set();
    this.consumerOrder = new Map();
    this.consumersKilled = 0;
    this.received = 0;
    this.bytes = 0;
  }

  producerStarted(p) {
    this.producers.set(p, { next: 0, ahead: new Set(), survived: null, acked: null, limit: null, count: 0 });
  }

  /** Returns a violation message, or null. */
  receive(consumer, p, s, intact, length) {
    const rec = this.producers.get(p);
    if (!intact) return `${this.name}: message ${p}/${s} arrived damaged (checksum or length wrong)`;
    if (rec === undefined) {
      return this.closed.has(p)
        ? `${this.name}: message ${p}/${s} arrived after every message of producer ${p} had been received`
        : `${this.name}: message ${p}/${s} from a producer that was never started`;
    }
    let order = this.consumerOrder.get(consumer);
    if (order === undefined) this.consumerOrder.set(consumer, (order = new Map()));
    const last = order.get(p);
    if (last !== undefined && s <= last) return `${this.name}: consumer ${consumer} took ${p}/${s} after ${p}/${last}`;
    order.set(p, s);
    if (s < rec.next || rec.ahead.has(s)) return `${this.name}: message ${p}/${s} arrived twice`;
    if (rec.limit !== null && s >= rec.limit) return this.#beyond(p, s, rec);
    rec.count++;
    this.received++;
    this.bytes += length;
    if (s === rec.next) {
      rec.next++;
      while (rec.ahead.delete(rec.next)) rec.next++;
    } else {
      rec.ahead.add(s);
    }
    this.#settle(p, rec);
    return null;
  }

  /**
   * `acked`: how many of its puts returned; `survived`: it exited by itself.
   * A killed producer may have died between a put and noting that it returned,
   * so one message past `acked` may still come from it.
   */
  producerEnded(p, survived, acked) {
    const rec = this.producers.get(p);
    if (rec === undefined) return null;
    rec.survived = survived;
    rec.acked = acked;
    rec.limit = survived ? acked : acked + 1;
    for (const s of rec.ahead) if (s >= rec.limit) return this.#beyond(p, s, rec);
    if (rec.next > rec.limit) return this.#beyond(p, rec.next - 1, rec);
    this.#settle(p, rec);
    return null;
  }

  #beyond(p, s, rec) {
    return `${this.name}: message ${p}/${s} arrived, but producer ${p} (${rec.survived ? 'exited' : 'killed'}) had ${rec.acked} puts return`;
  }

  consumerEnded(consumer, killed) {
    this.consumerOrder.delete(consumer);
    if (killed) this.consumersKilled++;
  }

  // A producer whose every message is in is folded into the counts: the
  // ledger stays the same size however long the run.
  #settle(p, rec) {
    if (rec.survived !== null && rec.next >= rec.limit && rec.ahead.size === 0) {
      this.producers.delete(p);
      this.closed.add(p);
    }
  }

  /** At the end, once every producer has ended and the queue is drained: the violations left. */
  finish() {
    const violations = [];
    let missing = 0;
    const where = [];
    for (const [p, rec] of this.producers) {
      if (rec.survived === null) {
        violations.push(`${this.name}: producer ${p} never ended`);
        continue;
      }
      if (!rec.survived) continue;
      const lost = rec.acked - rec.count;
      if (lost > 0) {
        missing += lost;
        if (where.length < 8) where.push(`${p}: ${lost} of ${rec.acked}, first missing ${rec.next}`);
      }
    }
    if (missing > this.consumersKilled) {
      violations.push(
        `${this.name}: ${missing} messages of producers that survived never arrived (${where.join('; ')}), ` +
          `more than the ${this.consumersKilled} consumers killed could have held`,
      );
    }
    return { violations, missing };
  }
}

/** The last `size` events of a run, for the report of a violation. */
export class History {
  constructor(size = 400) {
    this.size = size;
    this.events = [];
    this.start = Date.now();
  }

  add(what, detail = {}) {
    this.events.push({ t: Date.now() - this.start, what, ...detail });
    if (this.events.length > this.size * 2) this.events.splice(0, this.events.length - this.size);
  }

  recent() {
    return this.events.slice(-this.size);
  }
}

/** One value a pool call answered, against the right one; a violation or null. */
export function checkValue(what, i, value, expected) {
  return value === expected ? null : `${what}: item ${i} answered ${JSON.stringify(value)}, expected ${expected}`;
}

/**
 * A pool call that rejected: fine when a worker died (WorkerDiedError) or when
 * a task meant to throw did (same name and message, the worker's stack as its
 * cause); `throwing` holds the items that may have thrown.
 */
export function checkFailure(what, error, throwing) {
  if (error?.name === 'WorkerDiedError' && error.code === 'ERR_WORKER_DIED') return null;
  if (error?.name === 'SoakTaskError') {
    const m = /^task (\d+) failed on purpose$/.exec(error.message);
    if (m && throwing.has(Number(m[1]))) {
      if (error.cause?.name !== 'RemoteTraceback') return `${what}: SoakTaskError without its RemoteTraceback cause`;
      return null;
    }
  }
  return `${what}: failed with ${error?.name}: ${error?.message}`;
}
