// Pool: forked worker processes that run functions of this program.
//
// How a function reaches a worker: a worker is a fork of this process, so it
// holds a copy of every function that existed when it was forked. The pool
// gives each function it is handed a number, and a worker forked after that
// finds the function by its number in its copy of the table below. Workers
// are forked at the first task (not in the constructor), so the functions
// of that first call are known to them at no cost. A task whose function is
// newer than every worker retires the workers (each finishes what it was
// given) and forks fresh ones, which know it: one fork per worker, measured
// by `npm run bench`. Closures work either way, with what they captured as
// it was at the fork. Workers started by spawn or forkserver hold no copy of
// the table: a function's reference (module and export, found when the task
// is submitted) goes with the first task of it each worker gets, and the
// worker imports it once.
//
// Transport: each worker reads its own task Queue and every worker answers on
// one shared result Queue. A small task (lib/codec.ts's small format) for a
// worker that holds none sent through its ring goes through the worker's
// mailbox instead, and so does its answer: fixed slots each way, one wake,
// none of a ring's bookkeeping, which costs a process woken for each task
// more than the task. The rings take the rest: tasks behind a ring task,
// large ones, failures. The pool sends each worker a few tasks ahead, so it
// knows at all times which tasks a worker holds and in which order it runs
// them; when a worker dies, the first task it held (the one it was running)
// fails with WorkerDiedError and the rest go to other workers.
import { inspect } from 'node:util';
import { Process, bootstrappingError, cpuCount, processClassFor, setExitListener } from './process.js';
import { EMPTY, Queue, putWokeSleeper, takeNowait, takersAsleep, waitReadable, wakeTakers, whenReadable } from './queue.js';
import {
  ForkSafetyError,
  PoolError,
  ProcessError,
  QueueFull,
  RemoteTraceback,
  SerializationError,
  TimeoutError,
  WorkerDiedError,
  errorState,
  reviveError,
  type ErrorState,
} from './errors.js';
import { checkInteger, invalidType, invalidValue } from './args.js';
import { deadlineAfter, pendingSleeps, sleep, sleepAsync, timeLeft } from './waiting.js';
import { SpinGauge, cpuTag, pollPays, spinWhileEqual } from './spin.js';
import { selfPid } from './self.js';
import { forkSafetyProblem } from './fork-safety.js';
import { checkStartMethod, currentStartMethod, isBootstrapping, setBootstrapping, type StartMethod } from './start/method.js';
import { loadReference, referenceOf, type FunctionRef } from './start/reference.js';
import { RawArray } from './value.js';
import { native } from './native.js';
import { guardState, nextTurn } from './loop-stall.js';
import { SMALL, decodeRange, writeSmall } from './codec.js';
import {
  POOL_ANSWER_BYTES,
  POOL_ANSWER_LENGTHS,
  POOL_ANSWER_SEQ,
  POOL_ANSWER_WATCHED,
  POOL_MAILBOX_WORDS,
  POOL_RUNNING,
  POOL_SLOT_BYTES,
  POOL_SLOTS,
  POOL_TASK_BYTES,
  POOL_TASK_LENGTHS,
  POOL_TASK_SEQ,
  POOL_MORE,
  POOL_TASKER_CPU,
} from './layout.js';

// ---- the function table ------------------------------------------------------

const fnIds = new Map<Function, number>();
const fnsById = new Map<number, Function>();
let nextFnId = 1;
// Functions the pool has not seen for this many newer ones are dropped (a
// program that passes a fresh closure on every call would otherwise grow the
// table forever); one in use by a task is kept.
const FN_TABLE_LIMIT = 1024;
const fnUses = new Map<number, number>();
// The references of functions given to pools whose workers are not forked.
const fnRefs = new Map<number, FunctionRef>();

function fnIdOf(fn: Function): number {
  let id = fnIds.get(fn);
  if (id === undefined) {
    id = nextFnId++;
    fnIds.set(fn, id);
    fnsById.set(id, fn);
    if (fnsById.size > FN_TABLE_LIMIT) {
      for (const [old, f] of fnsById) {
        if (fnsById.size <= FN_TABLE_LIMIT) break;
        if (old === id || (fnUses.get(old) ?? 0) > 0) continue;
        fnsById.delete(old);
        fnIds.delete(f);
        fnRefs.delete(old);
      }
    }
  }
  return id;
}

function useFn(id: number, delta: number): void {
  const n = (fnUses.get(id) ?? 0) + delta;
  if (n > 0) fnUses.set(id, n);
  else fnUses.delete(id);
}

// ---- messages --------------------------------------------------------------------

const APPLY = 0;
const MAP = 1;
const STARMAP = 2;

/**
 * [batch id, function id, APPLY | MAP | STARMAP, args or items, the function's
 * reference for a worker that has not been given it]; null tells a worker to exit.
 */
type TaskMessage = [number, number, number, unknown, FunctionRef?] | null;
/** [batch id, true, value or values] | [batch id, false, failure]; batch 0: the initializer failed. */
type ResultMessage = [number, boolean, unknown] | typeof WAKE;
/** Sent to the result queue by the pool itself, to end a wait that has nothing left to wait for. */
const WAKE = -1;
const WORKER_POLL_MS = 0.2;
/**
 * A poll that finds its task later than this has cost more than the wake-up
 * it saved (15-25 µs here, counting both sides), and the gauge counts it as
 * a miss (SpinGauge.late). A Pool.apply ping-pong's worker finds its next
 * task within 2 µs (median; 20 µs at the 90th percentile under CPU-bound
 * processes). An HTTP server's workers, whose tasks come as the server's
 * thread gets to them, found theirs at a median of 62 µs, and half of their
 * 0.2 ms polls ran out: counted as hits, those polls kept going and took the
 * time that the client and the server's thread needed. With this rule the
 * server answered 4% more requests a second (5 interleaved runs, 2-5% in
 * each); with no polls at all, 8% more, but the ping-pong's round trip
 * would be a wake-up's instead of 3 µs.
 */
const WORKER_POLL_IN_TIME_MS = 0.02;

interface Failure {
  error: ErrorState | { thrown: unknown };
  /** Index within the batch of the item that failed; the values before it are in `done`. */
  index: number;
  done: unknown[];
}

/** The answer for `error` thrown at item `index` of a batch, after the values `done` before it. */
function failure(error: unknown, index = 0, done: unknown[] = []): Failure {
  return { error: describe(error), index, done };
}

function describe(error: unknown): Failure['error'] {
  if (error instanceof Error) return errorState(error);
  return { thrown: typeof error === 'object' && error !== null ? inspect(error) : error };
}

/** The worker's error as an error of the same class, name, message and fields here, its stack as `cause`. */
function rebuild(sent: Failure['error']): unknown {
  if ('thrown' in sent) return sent.thrown;
  return reviveError(sent, new RemoteTraceback(sent.stack));
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

// ---- the worker's side ----------------------------------------------------------

interface WorkerSetup {
  tasks: Queue<TaskMessage>;
  results: Queue<ResultMessage>;
  /** Its mailbox (native/layout.h, kPool*), whose running word is the batch it runs, or minus the batch once that is finished and its answer is being sent. */
  mailbox: RawArray<'i'>;
  initializer: ((...args: unknown[]) => unknown) | null;
  initargs: unknown[];
  maxtasks: number;
}

const RESOLVED = Promise.resolve();

/** Whether this worker's polls for the next task pay: they stop when tasks come too seldom for a poll to catch one. */
const workerPoll = new SpinGauge();

/** One side's view of a worker's mailbox; `read` counts the messages this side has taken from the other. */
interface Mailbox {
  words: Int32Array;
  bytes: Uint8Array;
  read: number;
}

function mailboxOf(words: Int32Array): Mailbox {
  return { words, bytes: new Uint8Array(words.buffer, words.byteOffset, words.byteLength), read: 0 };
}

/**
 * One direction of a mailbox: where its slots start (bytes), its slots'
 * length words, its sequence word, and the word where the writer publishes
 * its cpuTag() for the reader's spin decision (lib/spin.ts; -1: none, see
 * #watchMail).
 */
interface Way {
  slots: number;
  lengths: number;
  seq: number;
  cpu: number;
}

const TASKS: Way = { slots: POOL_TASK_BYTES, lengths: POOL_TASK_LENGTHS, seq: POOL_TASK_SEQ, cpu: POOL_TASKER_CPU };
const ANSWERS: Way = { slots: POOL_ANSWER_BYTES, lengths: POOL_ANSWER_LENGTHS, seq: POOL_ANSWER_SEQ, cpu: -1 };

/** Writes `message` into this side's next slot of `way` and publishes it; false if it does not fit the small format. */
function mail(box: Mailbox, way: Way, message: unknown): boolean {
  const at = way.slots + (box.words[way.seq]! & (POOL_SLOTS - 1)) * POOL_SLOT_BYTES;
  const end = writeSmall(box.bytes, at, POOL_SLOT_BYTES, message);
  if (end < 0) return false;
  publish(box, way, end - at);
  return true;
}

/** Publishes this side's next message of `way`, `length` bytes long (0: an answer sent through the result ring). */
function publish(box: Mailbox, way: Way, length: number): void {
  const n = box.words[way.seq]!;
  box.words[way.lengths + (n & (POOL_SLOTS - 1))] = length;
  if (way.cpu >= 0) box.words[way.cpu] = cpuTag();
  Atomics.store(box.words, way.seq, (n + 1) | 0);
}

/** Whether the other side has published a message of `way` that this side has not taken. */
function hasMail(box: Mailbox, way: Way): boolean {
  return Atomics.load(box.words, way.seq) !== box.read;
}

/** The byte offset, in the mailbox's buffer, of the word the pool sleeps on for answers. */
function answerSeqAt(box: Mailbox): number {
  return box.words.byteOffset + POOL_ANSWER_SEQ * 4;
}

/**
 * Wakes whatever sleeps on the mailbox's answer word: all of it, as the
 * queues' wakes do, not one. Only one watch is current, but on a stalled
 * loop the guard (lib/waiting.ts) ends a watch once its word has moved,
 * which can be before the worker's wake: the pool then watches again under
 * a new tag, the old tag's wake never comes, and the old kernel wait stays.
 * A wake of one goes to the oldest sleeper, that stale wait, and the
 * current watch would sleep on.
 */
function wakeAnswerSleepers(box: Mailbox): void {
  native.futexWake(box.words.buffer as ArrayBuffer, answerSeqAt(box), 0x7fffffff);
}

/** What unmail() returns for an answer that went through the result ring: only its count is in the mailbox. */
const IN_RING = Symbol('in the result ring');

/** The oldest message of `way` the other side published and this side has not taken; EMPTY if none, IN_RING for an answer sent the other way. */
function unmail(box: Mailbox, way: Way): unknown {
  if (!hasMail(box, way)) return EMPTY;
  const slot = box.read & (POOL_SLOTS - 1);
  box.read = (box.read + 1) | 0;
  const length = box.words[way.lengths + slot]!;
  if (length === 0) return IN_RING;
  const at = way.slots + slot * POOL_SLOT_BYTES;
  return decodeRange(SMALL, box.bytes, at, at + length);
}

/**
 * What the pool's watch word holds while it sleeps for the answer that will
 * make its mailbox's count `count`: never 0 (not watching). The count is
 * kept to 30 bits, far more answers than a watch can be behind.
 */
function watchTag(count: number): number {
  return (count & 0x3fffffff) + 1;
}

/**
 * The worker's side: after an answer to a mailed task, wakes the pool if it
 * sleeps for that answer. Only the answer a watch waits for takes its tag
 * and pays the wake: the answers after it, which came before the pool looked
 * again, made a futex call each that woke nobody (more than half of an HTTP
 * server's pool worker's calls, about 1 µs each here). The tag names the
 * answer and not merely "watching": a worker that published answer N and
 * was descheduled before its wake, while the pool took N by spinning and
 * began to watch for N + 1, would otherwise take that watch's flag with N's
 * wake, and N + 1 would wake nobody.
 */
function wakeMailWatcher(box: Mailbox): void {
  const tag = watchTag(box.words[POOL_ANSWER_SEQ]!);
  if (Atomics.compareExchange(box.words, POOL_ANSWER_WATCHED, tag, 0) === tag) wakeAnswerSleepers(box);
}

/** Whether the last task takeTask() returned came through the mailbox: its answer goes back the same way. */
let mailed = false;
/** A task taken from the ring while an older one waited in the mailbox: it runs next. */
let stashed: unknown = EMPTY;

/**
 * The worker's oldest task, or EMPTY. Tasks are mailed only while the worker
 * holds none sent through the ring, so a mailed one is older than every task
 * in the ring.
 */
function takeTask(tasks: Queue<TaskMessage>, box: Mailbox): unknown {
  let task = unmail(box, TASKS);
  mailed = task !== EMPTY;
  if (mailed) return task;
  if (stashed !== EMPTY) {
    task = stashed;
    stashed = EMPTY;
    return task;
  }
  task = takeNowait(tasks);
  if (task === EMPTY) return EMPTY;
  // Mailed between the look above and this take: it is the older one.
  const older = unmail(box, TASKS);
  if (older === EMPTY) return task;
  stashed = task;
  mailed = true;
  return older;
}

/**
 * Whether this worker, since it last chose its policy, found a task already
 * waiting when it finished one: it has a backlog, and is woken next as
 * SCHED_BATCH (native/sched.cc schedBatch), as it is when the pool had more
 * to hand out as it sent the latest task (POOL_MORE). A woken process
 * normally preempts the one running on the CPU it is woken onto, and on a
 * crowded machine that is often the dispatcher that woke it, with more tasks
 * to hand out and answers to deliver: an HTTP server at 30 us of work a
 * request, its main thread preempted 0.28 times a request by the worker it
 * had woken, 0.07 times with the backlog rule; in eight interleaved rounds
 * it served 1.39x piscina's requests a second with both rules, 1.36x with
 * the backlog rule alone, 1.31x with neither. A worker that runs each task
 * alone, for a caller waiting on every answer (an apply() round trip), is
 * woken as SCHED_OTHER, to answer at once: as SCHED_BATCH throughout, the
 * apply round trip beside two CPU-bound processes took 30-31 us instead of
 * 21-24 (it waited for the end of a CPU-bound process's slice).
 */
let backlog = false;

/**
 * The next task. A pool's tasks tend to come in runs: a worker polls for a
 * while before it sleeps, so that the next task of a run finds it awake
 * (a futex wake-up costs 30 to 100 µs here, the poll a fraction of a core).
 */
function nextTask(tasks: Queue<TaskMessage>, box: Mailbox, afterTask: boolean): TaskMessage {
  let task = takeTask(tasks, box);
  if (task !== EMPTY) {
    if (afterTask) backlog = true;
    return task as TaskMessage;
  }
  const poll = pollPays(Atomics.load(box.words, POOL_TASKER_CPU)) && workerPoll.allowed();
  if (poll) {
    const began = performance.now();
    const until = began + WORKER_POLL_MS;
    do {
      for (let i = 0; i < 64; i++) {
        task = takeTask(tasks, box);
        if (task !== EMPTY) {
          if (performance.now() - began <= WORKER_POLL_IN_TIME_MS) workerPoll.hit();
          else workerPoll.late();
          return task as TaskMessage;
        }
      }
    } while (performance.now() < until);
    workerPoll.miss();
  }
  // The poll above was this wait's spin, or the gauge found that polls do
  // not pay: either way the queue's own spin before it sleeps would not.
  const asleep = performance.now();
  const mailWaits = (): boolean => hasMail(box, TASKS);
  native.schedBatch(backlog || Atomics.load(box.words, POOL_MORE) === 1);
  backlog = false;
  for (;;) {
    waitReadable(tasks, false, Infinity, mailWaits);
    task = takeTask(tasks, box);
    if (task !== EMPTY) break;
  }
  if (!poll) workerPoll.slept(performance.now() - asleep < WORKER_POLL_MS);
  return task as TaskMessage;
}

/**
 * A worker's life: the initializer, then tasks until told to stop or
 * maxtasksperchild is reached. Exported: a worker started by spawn or
 * forkserver finds it by reference.
 */
export async function serve(s: WorkerSetup): Promise<void> {
  const box = mailboxOf(s.mailbox.typed);
  const running = box.words;
  if (s.initializer !== null) {
    try {
      const r = s.initializer(...s.initargs);
      if (isThenable(r)) await r;
    } catch (error) {
      s.results.putSync([0, false, failure(error)]);
      return;
    }
  }
  for (let served = 0; s.maxtasks === 0 || served < s.maxtasks; served++) {
    const task = nextTask(s.tasks, box, served > 0);
    if (task === null) return;
    const answerByMail = mailed;
    const [batch, fnId, kind, payload, ref] = task;
    Atomics.store(running, POOL_RUNNING, batch);
    let reply: ResultMessage;
    if (ref !== undefined && !fnsById.has(fnId)) {
      // Importing the function's module is bootstrapping too: a module that starts processes at its top level gets the guard's error.
      setBootstrapping(true);
      try {
        fnsById.set(fnId, await loadReference(ref));
      } catch (error) {
        // Every task of it fails the same way, not with "not a function".
        fnsById.set(fnId, () => {
          throw error;
        });
      } finally {
        setBootstrapping(false);
      }
    }
    const fn = fnsById.get(fnId) as (...args: unknown[]) => unknown;
    if (kind === APPLY) {
      try {
        let r = fn(...(payload as unknown[]));
        if (isThenable(r)) r = await r;
        reply = [batch, true, r];
      } catch (error) {
        reply = [batch, false, failure(error)];
      }
    } else {
      const items = payload as unknown[];
      const out = new Array<unknown>(items.length);
      let i = 0;
      try {
        for (; i < items.length; i++) {
          let r = kind === MAP ? fn(items[i]) : fn(...(items[i] as unknown[]));
          if (isThenable(r)) r = await r;
          out[i] = r;
        }
        reply = [batch, true, out];
      } catch (error) {
        reply = [batch, false, failure(error, i, out.slice(0, i))];
      }
    }
    // Finished: if this worker dies before the answer is out, the task is not run again.
    Atomics.store(running, POOL_RUNNING, -batch);
    if (answerByMail && mail(box, ANSWERS, reply)) {
      wakeMailWatcher(box);
      wakeTakers(s.results);
      continue;
    }
    try {
      s.results.putSync(reply);
    } catch (error) {
      const unsent = new SerializationError(`the result of a task could not be sent back: ${(error as Error).message}`);
      s.results.putSync([batch, false, failure(unsent)]);
    }
    if (answerByMail) {
      // Counted after the ring has it, so that the pool, told by the count, finds it there.
      publish(box, ANSWERS, 0);
      wakeMailWatcher(box);
    }
  }
}

// ---- jobs --------------------------------------------------------------------------

/** A unit of work sent to one worker: one apply(), or one chunk of a map. */
interface Batch {
  id: number;
  fnId: number;
  kind: number;
  payload: unknown;
  job: Job;
  /** Position of the batch's first item in the job's input. */
  start: number;
  count: number;
  worker: Worker | null;
  sentAt: number;
  /** Times it was sent to a worker (more than once when workers died before running it). */
  sends: number;
  /** Mailed to its worker, and its answer is awaited from the mailbox (not by the pump). */
  mailed: boolean;
  /** Sent through its worker's task ring. */
  ring: boolean;
}

let nextBatchId = 1;

/** What a call submitted: it hands out batches and takes their outcomes. */
abstract class Job {
  settled = false;
  /** Called once when the job ends, however it ends. */
  onFinish: (() => void) | null = null;
  readonly fnId: number;
  readonly what: string;
  constructor(fnId: number, what: string) {
    this.fnId = fnId;
    this.what = what;
    useFn(fnId, 1);
  }
  abstract nextBatch(): Batch | null;
  /** Whether nextBatch() may give another batch (for an input not yet at its end, yes). */
  abstract hasMore(): boolean;
  abstract succeeded(batch: Batch, value: unknown): void;
  abstract failed(batch: Batch, error: unknown, done: unknown[]): void;
  /** Ends the job with `error` unless it already ended. */
  abstract abort(error: unknown): void;
  protected finish(): void {
    if (this.settled) return;
    this.settled = true;
    useFn(this.fnId, -1);
    this.onFinish?.();
  }
  batch(kind: number, payload: unknown, start: number, count: number): Batch {
    return { id: nextBatchId++, fnId: this.fnId, kind, payload, job: this, start, count, worker: null, sentAt: 0, sends: 0, mailed: false, ring: false };
  }
}

export interface Settler<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

class ApplyJob extends Job {
  #args: unknown[] | null;
  #out: Settler<unknown>;
  constructor(fnId: number, args: unknown[], out: Settler<unknown>) {
    super(fnId, 'apply()');
    this.#args = args;
    this.#out = out;
  }
  nextBatch(): Batch | null {
    if (this.#args === null || this.settled) return null;
    const b = this.batch(APPLY, this.#args, 0, 1);
    this.#args = null;
    return b;
  }
  hasMore(): boolean {
    return this.#args !== null && !this.settled;
  }
  succeeded(_b: Batch, value: unknown): void {
    if (this.settled) return;
    this.finish();
    this.#out.resolve(value);
  }
  failed(_b: Batch, error: unknown): void {
    this.abort(error);
  }
  abort(error: unknown): void {
    if (this.settled) return;
    this.#args = null;
    this.finish();
    this.#out.reject(error);
  }
}

/** Pulls chunks of `chunksize` items from an iterator; an error it throws is remembered with its position. */
class Chunker {
  #it: Iterator<unknown> | null;
  #chunksize: number;
  position = 0;
  error: { at: number; error: unknown } | null = null;
  constructor(it: Iterator<unknown>, chunksize: number) {
    this.#it = it;
    this.#chunksize = chunksize;
  }
  get done(): boolean {
    return this.#it === null;
  }
  next(): unknown[] | null {
    if (this.#it === null) return null;
    const chunk: unknown[] = [];
    try {
      while (chunk.length < this.#chunksize) {
        const r = this.#it.next();
        if (r.done) {
          this.#it = null;
          break;
        }
        chunk.push(r.value);
      }
    } catch (error) {
      this.error = { at: this.position + chunk.length, error };
      this.#it = null;
    }
    if (chunk.length === 0) return null;
    this.position += chunk.length;
    return chunk;
  }
  stop(): void {
    this.#it = null;
  }
}

/** map(), starmap() and their Async forms: every result in input order, or the first error. */
class MapJob extends Job {
  #chunks: Chunker;
  #kind: number;
  #results: unknown[];
  #pending = 0;
  #out: Settler<unknown[]>;
  constructor(fnId: number, kind: number, items: unknown[], chunksize: number, out: Settler<unknown[]>, what: string) {
    super(fnId, what);
    this.#kind = kind;
    this.#chunks = new Chunker(items[Symbol.iterator](), chunksize);
    this.#results = new Array(items.length);
    this.#out = out;
    if (items.length === 0) {
      this.finish();
      out.resolve([]);
    }
  }
  nextBatch(): Batch | null {
    if (this.settled) return null;
    const start = this.#chunks.position;
    const chunk = this.#chunks.next();
    if (chunk === null) return null;
    this.#pending++;
    return this.batch(this.#kind, chunk, start, chunk.length);
  }
  hasMore(): boolean {
    return !this.settled && this.#chunks.position < this.#results.length;
  }
  succeeded(b: Batch, values: unknown): void {
    if (this.settled) return;
    const vs = values as unknown[];
    for (let i = 0; i < vs.length; i++) this.#results[b.start + i] = vs[i];
    if (--this.#pending === 0 && this.#chunks.done) {
      this.finish();
      this.#out.resolve(this.#results);
    }
  }
  failed(_b: Batch, error: unknown): void {
    this.abort(error);
  }
  abort(error: unknown): void {
    if (this.settled) return;
    this.#chunks.stop();
    this.finish();
    this.#out.reject(error);
  }
}

/** imap() and imapUnordered(): results stream out as they come, in input order or as they finish. */
class IMapJob extends Job implements AsyncIterableIterator<unknown> {
  #chunks: Chunker;
  #kind: number;
  #ordered: boolean;
  #ready = new Map<number, { ok: boolean; value: unknown }>();
  #arrivals: { ok: boolean; value: unknown }[] = [];
  #next = 0;
  #inFlight = 0;
  #reader: Settler<IteratorResult<unknown>> | null = null;
  /** Asks the pool for more work: results are being read, so more input may be pulled. */
  #pull: () => void;
  constructor(fnId: number, kind: number, it: Iterator<unknown>, chunksize: number, ordered: boolean, pull: () => void) {
    super(fnId, ordered ? 'imap()' : 'imapUnordered()');
    this.#kind = kind;
    this.#ordered = ordered;
    this.#chunks = new Chunker(it, chunksize);
    this.#pull = pull;
  }
  nextBatch(): Batch | null {
    if (this.settled) return null;
    const start = this.#chunks.position;
    const chunk = this.#chunks.next();
    this.#noteInputError();
    if (chunk === null) {
      this.#deliver();
      return null;
    }
    this.#inFlight += chunk.length;
    return this.batch(this.#kind, chunk, start, chunk.length);
  }
  // An iterator's end is known only once a read runs into it: at a chunk boundary, more.
  hasMore(): boolean {
    return !this.settled && !this.#chunks.done;
  }
  #noteInputError(): void {
    const e = this.#chunks.error;
    if (e === null) return;
    this.#chunks.error = null;
    this.#put(e.at, false, e.error);
  }
  #put(index: number, ok: boolean, value: unknown): void {
    if (this.#ordered) this.#ready.set(index, { ok, value });
    else this.#arrivals.push({ ok, value });
  }
  succeeded(b: Batch, values: unknown): void {
    if (this.settled) return;
    const vs = values as unknown[];
    this.#inFlight -= b.count;
    for (let i = 0; i < vs.length; i++) this.#put(b.start + i, true, vs[i]);
    this.#deliver();
  }
  failed(b: Batch, error: unknown, done: unknown[]): void {
    if (this.settled) return;
    this.#inFlight -= b.count;
    for (let i = 0; i < done.length; i++) this.#put(b.start + i, true, done[i]);
    this.#put(b.start + done.length, false, error);
    // The items after the failed one in its batch were never run: like an
    // error in the input, the failure ends the stream at its position.
    this.#chunks.stop();
    this.#deliver();
  }
  abort(error: unknown): void {
    if (this.settled) return;
    this.#chunks.stop();
    this.#ready.clear();
    this.#arrivals = [];
    this.#put(this.#ordered ? this.#next : 0, false, error);
    this.finish();
    this.#deliver();
  }
  #take(): { ok: boolean; value: unknown } | undefined {
    if (!this.#ordered) return this.#arrivals.shift();
    const r = this.#ready.get(this.#next);
    if (r !== undefined) {
      this.#ready.delete(this.#next);
      this.#next++;
    }
    return r;
  }
  get #exhausted(): boolean {
    return this.#chunks.done && this.#inFlight === 0 && this.#ready.size === 0 && this.#arrivals.length === 0;
  }
  #deliver(): void {
    const reader = this.#reader;
    if (reader === null) {
      if (this.#exhausted) this.finish();
      return;
    }
    const r = this.#take();
    if (r !== undefined) {
      this.#reader = null;
      if (r.ok) reader.resolve({ value: r.value, done: false });
      else {
        this.#end();
        reader.reject(r.value);
      }
    } else if (this.#exhausted) {
      this.#reader = null;
      this.#end();
      reader.resolve({ value: undefined, done: true });
    }
  }
  #end(): void {
    this.#chunks.stop();
    this.#ready.clear();
    this.#arrivals = [];
    this.finish();
  }
  next(): Promise<IteratorResult<unknown>> {
    if (this.#reader !== null) return Promise.reject(invalidValue('Pool.imap(): next() called again before the previous next() settled'));
    if (this.settled && this.#ready.size === 0 && this.#arrivals.length === 0) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#reader = { resolve, reject };
      this.#deliver();
      this.#pull();
    });
  }
  return(): Promise<IteratorResult<unknown>> {
    this.#end();
    return Promise.resolve({ value: undefined, done: true });
  }
  [Symbol.asyncIterator](): this {
    return this;
  }
}

// ---- AsyncResult -----------------------------------------------------------------

/** The pending outcome of applyAsync(), mapAsync() or starmapAsync(). */
export class AsyncResult<T = unknown> {
  #state: 'pending' | 'ok' | 'failed' = 'pending';
  #value: unknown;
  #settled: Promise<void>;
  #settle!: () => void;
  #drive: (done: () => boolean, deadline: number) => boolean;

  /** @internal */
  constructor(drive: (done: () => boolean, deadline: number) => boolean) {
    this.#drive = drive;
    this.#settled = new Promise((resolve) => (this.#settle = resolve));
  }

  /** @internal */
  resolve(value: T): void {
    this.#finish('ok', value);
  }

  /** @internal */
  reject(error: unknown): void {
    this.#finish('failed', error);
  }

  #finish(state: 'ok' | 'failed', value: unknown): void {
    if (this.#state !== 'pending') return;
    this.#state = state;
    this.#value = value;
    this.#settle();
  }

  /** Whether the call has finished (succeeded or failed). */
  ready(): boolean {
    return this.#state !== 'pending';
  }

  /** Whether it finished without an error; throws PoolError if it has not finished. */
  successful(): boolean {
    if (this.#state === 'pending') throw new PoolError('ERR_RESULT_NOT_READY', 'AsyncResult.successful(): the result is not ready yet');
    return this.#state === 'ok';
  }

  /** The result; rejects with the task's error, or with TimeoutError if `timeout` ms pass first. */
  async get(timeout?: number): Promise<T> {
    if (!(await this.wait(timeout))) throw new TimeoutError(`AsyncResult.get(): no result within ${timeout} ms`);
    if (this.#state === 'failed') throw this.#value;
    return this.#value as T;
  }

  /** get(), blocking this thread (and running the pool's bookkeeping on it meanwhile). */
  getSync(timeout?: number): T {
    if (!this.waitSync(timeout)) throw new TimeoutError(`AsyncResult.getSync(): no result within ${timeout} ms`);
    if (this.#state === 'failed') throw this.#value;
    return this.#value as T;
  }

  /** Resolves true once the result is ready, or false when `timeout` ms pass first. */
  async wait(timeout?: number): Promise<boolean> {
    const deadline = deadlineAfter('AsyncResult.wait', timeout);
    if (this.#state !== 'pending') return true;
    if (deadline === Infinity) {
      await this.#settled;
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, timeLeft(deadline), false)));
    try {
      return await Promise.race([this.#settled.then(() => true), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** wait(), blocking this thread. */
  waitSync(timeout?: number): boolean {
    const deadline = deadlineAfter('AsyncResult.waitSync', timeout);
    return this.#drive(() => this.#state !== 'pending', deadline);
  }
}

// ---- the pool ----------------------------------------------------------------------

export interface PoolOptions {
  /** Worker processes (default, or null: cpuCount()). */
  processes?: number | null;
  /** Runs once in each worker before its first task; may return a Promise. */
  initializer?: ((...args: any[]) => unknown) | null;
  initargs?: unknown[] | null;
  /** Tasks (chunks) a worker runs before it is replaced by a fresh one; absent: no limit. */
  maxtasksperchild?: number | null;
  /** How workers are started (default, or null: the current start method, see setStartMethod()). */
  startMethod?: StartMethod | null;
}

export interface TaskOptions {
  /** Aborting rejects the call; a worker running one of its tasks is killed and replaced. */
  signal?: AbortSignal;
}

export interface MapOptions extends TaskOptions {
  /** Items sent to a worker at once (map: about len / (4 × processes); imap: 1). */
  chunksize?: number;
}

export interface AsyncOptions<T> {
  callback?: (value: T) => void;
  errorCallback?: (error: unknown) => void;
}

interface Worker {
  proc: Process;
  pid: number;
  tasks: Queue<TaskMessage>;
  /** Its mailbox, from the pool's side: `read` counts the answers taken from it. */
  box: Mailbox;
  /** Functions numbered below this were in the table when it was forked (Infinity: it imports them). */
  knowsBelow: number;
  /** A worker not forked: the functions whose references it has been sent. */
  told: Set<number> | null;
  /** Batches sent to it and not answered, in the order it runs them. */
  held: Batch[];
  /**
   * The batches mailed to it whose answer's count the pool has not read, in
   * order: their slots are not free before that. Only reading a count frees
   * one; an answer that came through the ring first does not.
   */
  mailHeld: Batch[];
  /** How many batches it holds came through its ring: while any does, nothing is mailed to it, which would overtake them. */
  ringHeld: number;
  /** The pool sleeps on its mailbox's answer count. */
  mailWatched: boolean;
  /** Whether the latest task mailed to it woke it: its answer is a wake-up away, not worth a spin. */
  mailWoke: boolean;
  assigned: number;
  retiring: boolean;
  /** Retiring, and its stop message did not fit in its queue yet. */
  stopPending: boolean;
  /** How many batches it may hold. */
  ahead: number;
  /** The batch an abort killed it for: whatever else it was running goes to another worker. */
  killedFor: number;
}

/**
 * How many of the batches `w` holds it has yet to finish: none once it has
 * finished the newest (its running word is then minus that batch), whose
 * answer the pool may not have taken yet.
 */
function unfinished(w: Worker): number {
  const n = w.held.length;
  return n > 0 && Atomics.load(w.box.words, POOL_RUNNING) === -w.held[n - 1]!.id ? 0 : n;
}

const RUN = 0;
const CLOSE = 1;
const TERMINATE = 2;

// Batches sent ahead to each worker. A worker that ran out of work before
// the pool noticed its answers gets twice as many (tiny tasks end up 256
// deep, so the pool's wake-ups are amortized over many); a worker never left
// without work stays at 2, so long tasks spread evenly over the workers.
const AHEAD_MIN = 2;
const AHEAD_MAX = 256;
// A worker's task queue is bounded (AHEAD_MAX batches and a stop message) and
// is only ever put to without blocking: what does not fit waits in the pool,
// never in a feeder thread that would keep retrying a worker that died.
const TASK_RING_BYTES = 256 * 1024;
// A batch answered later than this after it was sent halves its worker's
// `ahead`: long tasks must not queue up behind each other on one worker.
const AHEAD_LATENCY_MS = 2;
// How often a blocking call looks for workers that died.
const EXIT_POLL_MS = 100;
const TERMINATE_GRACE_MS = 1000;
let workerCounter = 0;

// What a worker that is not forked runs: serve() of this module.
const SERVE: FunctionRef = { module: import.meta.url, name: 'serve' };

function checkFunction(what: string, fn: unknown): asserts fn is (...args: any[]) => unknown {
  if (typeof fn !== 'function') throw invalidType(`${what}: fn`, 'a function', fn);
}

/** @internal (ClusterPool's too) */
export function checkIterable(what: string, items: unknown): asserts items is Iterable<unknown> {
  if (items === null || items === undefined || typeof (items as Iterable<unknown>)[Symbol.iterator] !== 'function') {
    throw invalidType(`${what}: iterable`, 'an iterable (an array, a Set, a generator...)', items);
  }
}

/**
 * A pool of forked worker processes (Python's multiprocessing.Pool). Any
 * function can be a task, closures included; see the top of this file for
 * how it reaches the workers.
 */
export class Pool {
  readonly #processes: number;
  readonly #method: StartMethod;
  readonly #initializer: ((...args: unknown[]) => unknown) | null;
  readonly #initargs: unknown[];
  readonly #maxtasks: number;
  readonly #results: Queue<ResultMessage>;
  #workers: Worker[] = [];
  #jobs: Job[] = [];
  /** Batches taken back from a worker that died, sent again before anything new. */
  #again: Batch[] = [];
  #sent = new Map<number, Batch>();
  /** How many of the batches sent went through a worker's mailbox: their answers are watched there, not by the pump. */
  #mailed = 0;
  /** Answers taken, and when the last came: for the diagnostic state. */
  #answered = 0;
  #lastAnswerAt = 0;
  /** When the pump began its current wait for an answer (0: not waiting). */
  #pumpWaitingSince = 0;
  /** The pump awaits its one turn of the event loop (for the state snapshot). */
  #pumpAtTurn = false;
  #state = RUN;
  #broken: unknown = null;
  #pumping = false;
  /** Whether a batch sent since the last answers woke its worker from sleep: the pump then does not spin for them. */
  #wokeWorker = false;
  /** Whether a turn of the event loop tends to bring an answer (#pump). */
  readonly #loopLook = new SpinGauge();
  #dispatchQueued = false;
  #dispatching = false;
  #dispatchAgain = false;
  #idleWaiters: (() => void)[] = [];
  readonly #owner = selfPid;
  /** What an AsyncResult's blocking forms call. */
  readonly #drive = (done: () => boolean, deadline: number): boolean => this.#driveUntil(done, deadline);
  #terminated: Promise<void> | null = null;
  #exitHook = (): void => {
    // A worker inherits this listener with the rest of the process; only the pool's own process acts on it.
    if (selfPid === this.#owner) for (const w of this.#workers) w.proc.kill();
  };

  constructor(options: PoolOptions = {}) {
    if (typeof options !== 'object' || options === null) throw invalidType('Pool(options)', 'an object', options);
    if (isBootstrapping()) throw bootstrappingError('a Pool');
    // null, as Python's None, means the default.
    const { processes = null, initializer = null, initargs = null, maxtasksperchild = null, startMethod = null } = options;
    this.#processes = checkInteger('Pool: processes', processes ?? cpuCount(), 1, 4096);
    if (initializer !== null) checkFunction('Pool: initializer', initializer);
    if (initargs !== null && !Array.isArray(initargs)) throw invalidType('Pool: initargs', 'an array', initargs);
    this.#maxtasks = maxtasksperchild === null ? 0 : checkInteger('Pool: maxtasksperchild', maxtasksperchild, 1);
    this.#method = startMethod === null ? currentStartMethod() : checkStartMethod(startMethod);
    if (this.#method === 'fork') {
      // Workers are forked later, at the first task; a program that cannot fork
      // learns it here, as a Python program does from Pool().
      const problem = forkSafetyProblem();
      if (problem !== null) throw new ForkSafetyError(problem);
    } else if (initializer !== null) {
      referenceOf(initializer, 'Pool initializer');
    }
    this.#initializer = initializer as ((...args: unknown[]) => unknown) | null;
    this.#initargs = initargs ?? [];
    this.#results = new Queue<ResultMessage>();
    // Workers are daemons: a killed parent takes them along (PR_SET_PDEATHSIG),
    // and at a normal exit they are killed rather than waited for.
    process.prependListener('exit', this.#exitHook);
  }

  get processes(): number {
    return this.#processes;
  }

  /** How this pool's workers are started. */
  get startMethod(): StartMethod {
    return this.#method;
  }

  /** The function's number, and for workers that are not forked its reference, found now: a closure fails at submission. */
  #fnId(fn: Function, call: string): number {
    const id = fnIdOf(fn);
    if (this.#method !== 'fork' && !fnRefs.has(id)) {
      try {
        fnRefs.set(id, referenceOf(fn, `function given to Pool.${call}`));
      } catch (error) {
        if ((fnUses.get(id) ?? 0) === 0) {
          fnsById.delete(id);
          fnIds.delete(fn);
        }
        throw error;
      }
    }
    return id;
  }

  /**
   * What the pool holds now, for diagnosis (the soak reports it for a slow
   * or hung call): each worker's pid, the batches it holds and the one it
   * runs, the batches waiting to be sent, and how the pump and the event
   * loop stand.
   */
  [Symbol.for('nodemp.pool.state')](): object {
    return {
      state: this.#state,
      // Nothing here asks a worker's exitCode: that polls, and would deliver
      // the exit the snapshot is meant to show undelivered (the soak takes
      // one a third of the way to a call's deadline, and must not end the
      // wait it looks at). The exit watch says whether the process has ended.
      workers: this.#workers.map((w) => ({
        pid: w.pid,
        exitWatch: native.watchState(w.pid),
        retiring: w.retiring,
        running: Atomics.load(w.box.words, POOL_RUNNING),
        held: w.held.map((b) => b.id),
        assigned: w.assigned,
      })),
      waiting: this.#again.map((b) => b.id),
      // Each batch sent and not answered: to whom, how long ago, how many times so far.
      sent: [...this.#sent.values()].map((b) => ({ id: b.id, pid: b.worker?.pid, ms: Math.round(performance.now() - b.sentAt), sends: b.sends })),
      answered: this.#answered,
      lastAnswerMs: this.#answered === 0 ? null : Math.round(performance.now() - this.#lastAnswerAt),
      jobs: this.#jobs.length,
      // Whether anything reads the answers, and how many wait to be read.
      pumping: this.#pumping,
      pumpWaitMs: this.#pumpWaitingSince === 0 ? null : Math.round(performance.now() - this.#pumpWaitingSince),
      pumpAtTurn: this.#pumpAtTurn,
      answersWaiting: this.#results.qsize(),
      waits: native.waiterState(),
      sleeps: pendingSleeps(),
      guard: guardState(),
    };
  }

  /** The pids of the current workers (none before the first task). */
  get pids(): number[] {
    return this.#workers.filter((w) => !w.retiring).map((w) => w.pid);
  }

  // ---- submitting ----

  #checkOwner(call: string): void {
    if (selfPid !== this.#owner) {
      throw new PoolError('ERR_NOT_POOL_OWNER', `Pool: ${call} can only be made by the process that created the pool (pid ${this.#owner}), not by ${selfPid}`);
    }
  }

  #checkRunning(call: string): void {
    this.#checkOwner(`Pool.${call}`);
    if (this.#state !== RUN) {
      throw new PoolError(this.#state === CLOSE ? 'ERR_POOL_CLOSED' : 'ERR_POOL_TERMINATED', `Pool.${call}: the pool is ${this.#state === CLOSE ? 'closed' : 'terminated'}`);
    }
    if (this.#broken !== null) throw this.#broken;
  }

  #submit(job: Job, signal: AbortSignal | undefined): void {
    if (job.settled) return;
    if (signal !== undefined) {
      if (signal.aborted) {
        job.abort(signal.reason);
        return;
      }
      const onAbort = (): void => this.#abort(job, signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      job.onFinish = () => signal.removeEventListener('abort', onAbort);
    }
    this.#jobs.push(job);
    // In a microtask, so that every function submitted in this tick is in the
    // table before a worker is forked: a program that submits f and then g
    // gets workers that know both, not a fork for each.
    this.#dispatchSoon();
  }

  /**
   * #dispatch() in a microtask of its own. A worker forked there does not
   * inherit the microtasks queued before it (V8 drops the queue in the child
   * when the fork happens inside a checkpoint); forked from an event callback,
   * it would run them too: another job's continuation, say.
   */
  #dispatchSoon(): void {
    if (this.#dispatchQueued) return;
    this.#dispatchQueued = true;
    // A resolved promise's reaction, not queueMicrotask(), which makes an
    // AsyncResource for every call: a tenth of the main thread's time in a
    // pool given one task a millisecond.
    RESOLVED.then(() => {
      this.#dispatchQueued = false;
      // A process forked from one that had this queued is not the pool's.
      if (selfPid === this.#owner) this.#dispatch();
    });
  }

  /** Runs fn(...args) in a worker; resolves with what it returns (awaited if a Promise). */
  apply<R>(fn: (...args: any[]) => R | Promise<R>, args: unknown[] = [], options: TaskOptions = {}): Promise<Awaited<R>> {
    return new Promise((resolve, reject) => {
      this.#applyJob('apply()', fn, args, options, { resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** apply(), blocking this thread until the result is in. */
  applySync<R>(fn: (...args: any[]) => R, args: unknown[] = []): Awaited<R> {
    return this.applyAsync(fn, args).getSync() as Awaited<R>;
  }

  /** Starts fn(...args) in a worker and returns an AsyncResult at once. */
  applyAsync<R>(fn: (...args: any[]) => R | Promise<R>, args: unknown[] = [], options: TaskOptions & AsyncOptions<Awaited<R>> = {}): AsyncResult<Awaited<R>> {
    const result = new AsyncResult<Awaited<R>>(this.#drive);
    this.#applyJob('applyAsync()', fn, args, options, withCallbacks(result, options));
    return result;
  }

  #applyJob(call: string, fn: unknown, args: unknown, options: TaskOptions, out: Settler<unknown>): void {
    this.#checkRunning(call);
    checkFunction(`Pool.${call}`, fn);
    if (!Array.isArray(args)) throw invalidType(`Pool.${call}: args`, 'an array', args);
    this.#submit(new ApplyJob(this.#fnId(fn, call), args, out), checkOptions(call, options).signal);
  }

  /** fn(item) for every item, in a worker each; resolves with the results in order, or rejects with the first error. */
  map<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: MapOptions = {}): Promise<Awaited<R>[]> {
    return new Promise((resolve, reject) => this.#mapJob('map()', MAP, fn, iterable, options, { resolve: resolve as (v: unknown[]) => void, reject }));
  }

  /** map(), blocking this thread. */
  mapSync<T, R>(fn: (item: T) => R, iterable: Iterable<T>, options: Omit<MapOptions, 'signal'> = {}): Awaited<R>[] {
    return this.mapAsync(fn, iterable, options).getSync();
  }

  /** map() returning an AsyncResult. */
  mapAsync<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: MapOptions & AsyncOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    const result = new AsyncResult<Awaited<R>[]>(this.#drive);
    this.#mapJob('mapAsync()', MAP, fn, iterable, options, withCallbacks(result, options) as Settler<unknown[]>);
    return result;
  }

  /** fn(...args) for every args array; results in order. */
  starmap<R>(fn: (...args: any[]) => R | Promise<R>, iterable: Iterable<unknown[]>, options: MapOptions = {}): Promise<Awaited<R>[]> {
    return new Promise((resolve, reject) => this.#mapJob('starmap()', STARMAP, fn, iterable, options, { resolve: resolve as (v: unknown[]) => void, reject }));
  }

  /** starmap(), blocking this thread. */
  starmapSync<R>(fn: (...args: any[]) => R, iterable: Iterable<unknown[]>, options: Omit<MapOptions, 'signal'> = {}): Awaited<R>[] {
    return this.starmapAsync(fn, iterable, options).getSync();
  }

  /** starmap() returning an AsyncResult. */
  starmapAsync<R>(fn: (...args: any[]) => R | Promise<R>, iterable: Iterable<unknown[]>, options: MapOptions & AsyncOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    const result = new AsyncResult<Awaited<R>[]>(this.#drive);
    this.#mapJob('starmapAsync()', STARMAP, fn, iterable, options, withCallbacks(result, options) as Settler<unknown[]>);
    return result;
  }

  #mapJob(call: string, kind: number, fn: unknown, iterable: unknown, options: MapOptions, out: Settler<unknown[]>): void {
    this.#checkRunning(call);
    checkFunction(`Pool.${call}`, fn);
    checkIterable(`Pool.${call}`, iterable);
    const { chunksize, signal } = checkOptions(call, options);
    // Python's map() makes a list of its input first, and so does this one:
    // an error from the input surfaces here, before any task runs.
    const items = Array.from(iterable);
    if (kind === STARMAP) {
      for (const [i, args] of items.entries()) {
        if (!Array.isArray(args)) throw invalidType(`Pool.${call}: item ${i}`, 'an array of arguments', args);
      }
    }
    const size = chunksize ?? defaultChunksize(items.length, this.#processes);
    this.#submit(new MapJob(this.#fnId(fn, call), kind, items, size, out, call), signal);
  }

  /** fn(item) for every item, as an async iterable of the results in input order; they stream while later tasks run. */
  imap<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: MapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imapJob('imap()', fn, iterable, options, true) as AsyncIterableIterator<Awaited<R>>;
  }

  /** imap(), results in the order they finish. */
  imapUnordered<T, R>(fn: (item: T) => R | Promise<R>, iterable: Iterable<T>, options: MapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imapJob('imapUnordered()', fn, iterable, options, false) as AsyncIterableIterator<Awaited<R>>;
  }

  #imapJob(call: string, fn: unknown, iterable: unknown, options: MapOptions, ordered: boolean): IMapJob {
    this.#checkRunning(call);
    checkFunction(`Pool.${call}`, fn);
    checkIterable(`Pool.${call}`, iterable);
    const { chunksize = 1, signal } = checkOptions(call, options);
    const job = new IMapJob(this.#fnId(fn, call), MAP, iterable[Symbol.iterator](), chunksize, ordered, () => this.#dispatch());
    this.#submit(job, signal);
    return job;
  }

  // ---- dispatching ----

  #nextBatch(): Batch | null {
    if (this.#again.length > 0) return this.#again[0];
    while (this.#jobs.length > 0) {
      const job = this.#jobs[0];
      const b = job.nextBatch();
      if (b !== null) {
        this.#again.push(b);
        return b;
      }
      this.#jobs.shift();
    }
    return null;
  }

  /** Sends batches to workers that know their function and have room, forking workers as needed. */
  #dispatch(): void {
    // Exit notices and forks can come back into the pool from inside this loop; they ask for another pass.
    if (this.#dispatching) {
      this.#dispatchAgain = true;
      return;
    }
    this.#dispatching = true;
    try {
      do {
        this.#dispatchAgain = false;
        this.#dispatchPass();
      } while (this.#dispatchAgain);
    } finally {
      this.#dispatching = false;
    }
    if (this.#sent.size > this.#mailed && !this.#pumping) void this.#pump();
    for (let i = 0; i < this.#workers.length; i++) {
      const w = this.#workers[i]!;
      if (w.mailHeld.length > 0 && !w.mailWatched) this.#watchMail(w);
    }
    if (this.#idle()) this.#becameIdle();
  }

  /**
   * Takes `b` off the queue of batches to send. Not simply the head: starting
   * a worker through the fork server reads the server's news, and an exit in
   * it puts the dead worker's unstarted batches back at the head meanwhile.
   */
  #unqueue(b: Batch): void {
    const at = this.#again.indexOf(b);
    if (at >= 0) this.#again.splice(at, 1);
  }

  #dispatchPass(): void {
    if (this.#state === TERMINATE || this.#broken !== null) return;
    for (;;) {
      const b = this.#nextBatch();
      if (b === null) return;
      if (b.job.settled) {
        this.#unqueue(b);
        continue;
      }
      if (!this.#workers.some((x) => !x.retiring && x.knowsBelow > b.fnId)) {
        for (const x of this.#workers) if (!x.retiring) this.#retire(x);
      }
      let w: Worker | null;
      try {
        w = this.#pick(b.fnId);
      } catch (error) {
        // The fork failed (no memory, a thread started since, a daemon's pool): the call fails, not the program.
        this.#unqueue(b);
        b.job.abort(error);
        continue;
      }
      if (w === null) return;
      // Before the send and its wake, so that the worker reads it with the task; `b` itself is still queued.
      Atomics.store(w.box.words, POOL_MORE, this.#again.length > 1 || this.#jobs.some((j) => j.hasMore()) ? 1 : 0);
      const ref = w.told !== null && !w.told.has(b.fnId) ? fnRefs.get(b.fnId) : undefined;
      if (ref === undefined && w.mailHeld.length < POOL_SLOTS && w.ringHeld === 0 && mail(w.box, TASKS, [b.id, b.fnId, b.kind, b.payload])) {
        w.mailWoke = wakeTakers(w.tasks);
        this.#handOver(w, b, true);
        continue;
      }
      try {
        w.tasks.putSync(ref === undefined ? [b.id, b.fnId, b.kind, b.payload] : [b.id, b.fnId, b.kind, b.payload, ref], { block: false });
      } catch (error) {
        if (error instanceof QueueFull && w.held.length > 0) {
          // Its ring is full of earlier batches: no more for it until it answers some.
          w.ahead = Math.max(AHEAD_MIN, w.held.length);
          continue;
        }
        this.#unqueue(b);
        b.job.abort(error);
        continue;
      }
      if (ref !== undefined) w.told?.add(b.fnId);
      if (putWokeSleeper(w.tasks)) this.#wokeWorker = true;
      this.#handOver(w, b, false);
    }
  }

  /** `b` is now `w`'s to run. */
  #handOver(w: Worker, b: Batch, mailed: boolean): void {
    this.#unqueue(b);
    b.mailed = mailed;
    b.ring = !mailed;
    if (mailed) {
      w.mailHeld.push(b);
      this.#mailed++;
    } else {
      w.ringHeld++;
    }
    b.worker = w;
    b.sentAt = performance.now();
    b.sends++;
    w.held.push(b);
    w.assigned++;
    this.#sent.set(b.id, b);
    if (this.#maxtasks > 0 && w.assigned === this.#maxtasks) this.#retire(w);
  }

  /**
   * An idle worker, else a new one while there are fewer than `processes`,
   * else the least busy with room. Retiring workers count: a pool never has
   * more than `processes` processes, as in Python. A worker that has finished
   * what it holds is idle, though its answers are not taken yet; of idle
   * workers, one that is awake: a sleeping one costs a futex wake-up (23 µs
   * of this thread's time on this machine's virtual CPUs, median, and tens
   * of microseconds more before it runs). In an HTTP server's pool, 31% of
   * the picks that woke a worker had another one awake and holding one batch,
   * finished in three of four; with this rule the server's wake-ups per
   * request fell by 3% (0.519 to 0.504, three runs each), not by a third:
   * its workers mostly sleep as soon as they answer (their poll gauge).
   * Growing the pool still asks whether the best holds anything at all, as
   * before: a worker with an answer not read yet does not stop a fork, so a
   * pool reaches its size as it did. A worker killed for an abort takes
   * nothing: whatever it was given would come back only once its exit is read.
   */
  #pick(fnId: number): Worker | null {
    let best: Worker | null = null;
    let bestLoad = 0;
    let bestAsleep = false;
    for (const w of this.#workers) {
      if (w.retiring || w.killedFor !== 0 || w.knowsBelow <= fnId || w.held.length >= w.ahead) continue;
      const load = unfinished(w);
      if (best !== null && load > bestLoad) continue;
      const asleep = takersAsleep(w.tasks);
      if (best === null || load < bestLoad || (bestAsleep && !asleep)) {
        best = w;
        bestLoad = load;
        bestAsleep = asleep;
      }
    }
    if ((best === null || best.held.length > 0) && this.#workers.length < this.#processes) return this.#spawn();
    return best;
  }

  #retire(w: Worker): void {
    w.retiring = true;
    if (this.#maxtasks === 0 || w.assigned < this.#maxtasks) {
      w.stopPending = true;
      this.#sendStop(w);
    }
    // A worker's exit watch does not hold the event loop open, but work may
    // be waiting for this one to make room: a pending join() holds it. Not
    // now: join() may reap it at once and run #exited inside a dispatch.
    queueMicrotask(() => {
      if (selfPid === this.#owner) void w.proc.join();
    });
  }

  #sendStop(w: Worker): void {
    try {
      w.tasks.putSync(null, { block: false });
      w.stopPending = false;
    } catch (error) {
      if (!(error instanceof QueueFull)) throw error;
    }
  }

  #spawn(): Worker {
    const forked = this.#method === 'fork';
    const launch = (): [Process, WorkerSetup] => {
      const tasks = new Queue<TaskMessage>({ ringSize: TASK_RING_BYTES, maxsize: AHEAD_MAX + 1 });
      const setup: WorkerSetup = { tasks, results: this.#results, mailbox: new RawArray('i', POOL_MAILBOX_WORDS), initializer: this.#initializer, initargs: this.#initargs, maxtasks: this.#maxtasks };
      const name = `PoolWorker-${++workerCounter}`;
      const p = forked
        ? new Process({ daemon: true, name, target: () => serve(setup) })
        : new (processClassFor(this.#method))<unknown[]>({ daemon: true, name, target: SERVE, args: [setup] });
      p.start();
      return [p, setup];
    };
    let proc: Process;
    let setup: WorkerSetup;
    try {
      [proc, setup] = launch();
    } catch (error) {
      // The fork server died under this start and the next start makes a new
      // one: a task does not fail for that, as it does not for a worker's death.
      // The new worker gets queues of its own: a child the dying server may
      // have forked must not share them.
      if (!(error instanceof ProcessError && error.code === 'ERR_FORKSERVER_DIED')) throw error;
      [proc, setup] = launch();
    }
    const { tasks, mailbox } = setup;
    const w: Worker = {
      proc,
      pid: proc.pid as number,
      tasks,
      box: mailboxOf(mailbox.typed),
      knowsBelow: forked ? nextFnId : Infinity,
      told: forked ? null : new Set(),
      held: [],
      mailHeld: [],
      ringHeld: 0,
      mailWatched: false,
      mailWoke: false,
      assigned: 0,
      retiring: false,
      stopPending: false,
      ahead: AHEAD_MIN,
      killedFor: 0,
    };
    this.#workers.push(w);
    setExitListener(proc, (code) => this.#exited(w, code));
    return w;
  }

  // ---- results ----

  #handle(m: ResultMessage): void {
    if (m === WAKE) return;
    const [id, ok, value] = m;
    if (id === 0) {
      this.#breakPool(value as Failure);
      return;
    }
    const b = this.#sent.get(id);
    if (b === undefined) return;
    this.#sent.delete(id);
    this.#answered++;
    this.#lastAnswerAt = performance.now();
    const w = b.worker as Worker;
    const held = w.held;
    if (held[0] === b) held.shift();
    else held.splice(held.indexOf(b), 1);
    if (b.mailed) {
      b.mailed = false;
      this.#mailed--;
    } else if (b.ring) {
      w.ringHeld--;
    }
    if (w.stopPending) this.#sendStop(w);
    if (held.length === 0) {
      // It ran dry: while work is waiting it may hold more; with none, the next job starts small again.
      w.ahead = this.#again.length > 0 || this.#jobs.length > 0 ? Math.min(AHEAD_MAX, w.ahead * 2) : AHEAD_MIN;
    } else if (w.ahead > AHEAD_MIN && this.#lastAnswerAt - b.sentAt > AHEAD_LATENCY_MS) {
      w.ahead = Math.max(AHEAD_MIN, w.ahead >> 1);
    }
    if (ok) b.job.succeeded(b, value);
    else {
      const f = value as Failure;
      b.job.failed(b, rebuild(f.error), f.done);
    }
  }

  #drain(): void {
    // The mailboxes first: the count of an answer that went through the ring comes after it.
    for (let i = 0; i < this.#workers.length; i++) this.#takeMail(this.#workers[i]!);
    for (let m = takeNowait(this.#results); m !== EMPTY; m = takeNowait(this.#results)) this.#handle(m as ResultMessage);
  }

  /**
   * Waits for `w`'s answers to the tasks mailed to it: a worker that was
   * awake when it got one answers within microseconds, so a short spin
   * first, as the pump's; then one futex sleep, as the floor of a process
   * hop has, instead of the pump's round. On a busy machine, no spin even
   * when the worker runs on another CPU (it publishes no CPU for this): the
   * event loop has other work than one answer (see lib/spin.ts
   * spinLimitFor), and its answer often comes while the loop does it.
   */
  #watchMail(w: Worker): void {
    const words = w.box.words;
    const read = w.box.read;
    const woke = w.mailWoke;
    w.mailWoke = false;
    if (!woke && spinWhileEqual(words, POOL_ANSWER_SEQ, read) !== read) {
      this.#drain();
      this.#dispatchSoon();
      return;
    }
    w.mailWatched = true;
    Atomics.store(words, POOL_ANSWER_WATCHED, watchTag(read + 1));
    void sleepAsync(sleep(words.buffer as ArrayBuffer, answerSeqAt(w.box), read, undefined)).then(() => {
      w.mailWatched = false;
      Atomics.store(words, POOL_ANSWER_WATCHED, 0);
      this.#drain();
      this.#dispatch();
    });
  }

  /**
   * Handles the answers `w` has mailed. The count of one it sent through the
   * result ring hands its batch to the pump: the answer was put there before
   * the count, and the ring is read after the mailboxes.
   */
  #takeMail(w: Worker): void {
    for (;;) {
      const m = unmail(w.box, ANSWERS);
      if (m === EMPTY) return;
      const b = w.mailHeld.shift() as Batch;
      if (m !== IN_RING) this.#handle(m as ResultMessage);
      else if (b.mailed) {
        b.mailed = false;
        this.#mailed--;
      }
    }
  }

  /** Whether a worker has mailed an answer not taken yet: it ends the pool's waits as a message in the result queue does. */
  #mailWaits = (): boolean => {
    for (let i = 0; i < this.#workers.length; i++) if (hasMail(this.#workers[i]!.box, ANSWERS)) return true;
    return false;
  };

  /**
   * Handles answers as they come while any are due. It takes them only in the
   * tick it handles them, so a blocking call (which handles them on its own)
   * never waits for an answer the pump holds.
   */
  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (this.#sent.size > this.#mailed) {
        if (this.#results.qsize() === 0 && !pollPays() && this.#loopLook.allowed()) {
          // The cores are all taken, so the wait will not spin. A server
          // busy with other requests often finds an answer after one more
          // turn of the event loop, which costs it far less than handing the
          // wait to a helper thread and being woken by it.
          this.#pumpAtTurn = true;
          await nextTurn();
          this.#pumpAtTurn = false;
          if (this.#results.qsize() > 0) this.#loopLook.hit();
          else this.#loopLook.miss();
        }
        // A worker woken from sleep answers after its wake-up (tens of
        // microseconds), which a spin would only spend.
        const spin = !this.#wokeWorker;
        this.#wokeWorker = false;
        this.#pumpWaitingSince = performance.now();
        await whenReadable(this.#results, spin, this.#mailWaits);
        this.#pumpWaitingSince = 0;
        this.#drain();
        this.#dispatch();
      }
    } finally {
      this.#pumping = false;
      this.#pumpAtTurn = false;
      this.#pumpWaitingSince = 0;
    }
  }

  /** The pump waits for answers that will no longer come: give it a message that says so. */
  #wakePump(): void {
    if (this.#pumping && this.#sent.size === this.#mailed) this.#results.putSync(WAKE);
  }

  /** The blocking forms: does the pump's work on this thread until `done()` or the deadline. */
  #driveUntil(done: () => boolean, deadline: number): boolean {
    this.#checkOwner('a blocking call');
    while (!done()) {
      this.#dispatch();
      if (done()) break;
      const left = timeLeft(deadline);
      if (left === 0) return false;
      if (waitReadable(this.#results, true, performance.now() + Math.min(left ?? EXIT_POLL_MS, EXIT_POLL_MS), this.#mailWaits)) this.#drain();
      else {
        // Exit notices come through the event loop, which is blocked now.
        for (const w of [...this.#workers]) w.proc.isAlive();
      }
    }
    this.#dispatch();
    this.#wakePump();
    return true;
  }

  #exited(w: Worker, code: number): void {
    const at = this.#workers.indexOf(w);
    if (at >= 0) this.#workers.splice(at, 1);
    // It may have answered before it died.
    this.#takeMail(w);
    this.#drain();
    // Its mailbox is not watched any longer: wake the sleep on it.
    if (w.mailWatched) wakeAnswerSleepers(w.box);
    const held = w.held;
    w.held = [];
    // What it held is the pump's to wait for now, or goes to another worker.
    for (const b of w.mailHeld) {
      if (!b.mailed) continue;
      b.mailed = false;
      this.#mailed--;
    }
    w.mailHeld = [];
    const first = held[0];
    const state = Atomics.load(w.box.words, POOL_RUNNING);
    // A worker that finished a batch and then exited cleanly (its task limit
    // reached) put the answer first: a clean exit waits for the feeder. The
    // answer is in the result queue, perhaps behind a message whose producer
    // died and that recovery has yet to skip; it stays awaited, not failed.
    if (first !== undefined && state === -first.id && code === 0 && this.#state !== TERMINATE && this.#broken === null) held.shift();
    for (const b of held) this.#sent.delete(b.id);
    if (this.#state === TERMINATE || this.#broken !== null) {
      for (const b of held) b.job.abort(this.#broken ?? terminatedError());
      this.#wakePump();
      return;
    }
    // The first batch it held died with it if it was running it or had
    // finished it (the answer was lost); one killed for another call's abort
    // was not this one's fault; the rest never started.
    if (first !== undefined && held[0] === first && (state === first.id || state === -first.id) && (w.killedFor === 0 || w.killedFor === first.id)) {
      held.shift();
      const how = code < 0 ? `was killed by signal ${-code}` : `exited with code ${code}`;
      first.job.failed(first, new WorkerDiedError(`Pool worker ${w.pid} ${how} while running a task of ${first.job.what}`, w.pid, code), []);
    }
    this.#again.unshift(...held);
    // An exit notice comes in an event callback (see #dispatchSoon).
    this.#dispatchSoon();
    this.#wakePump();
  }

  #breakPool(f: Failure): void {
    if (this.#broken !== null) return;
    const cause = rebuild(f.error);
    this.#broken = new PoolError('ERR_POOL_BROKEN', `the pool's initializer failed in a worker, so no task can run: ${(cause as Error)?.message ?? String(cause)}`);
    Object.assign(this.#broken as object, { cause });
    this.#failEverything(this.#broken);
    for (const w of this.#workers) w.proc.kill();
  }

  #failEverything(error: unknown): void {
    const jobs = new Set<Job>([...this.#jobs, ...this.#again.map((b) => b.job), ...[...this.#sent.values()].map((b) => b.job)]);
    this.#jobs = [];
    this.#again = [];
    for (const b of this.#sent.values()) b.mailed = false;
    this.#sent.clear();
    for (const w of this.#workers) {
      w.held = [];
      w.ringHeld = 0;
    }
    this.#mailed = 0;
    for (const job of jobs) job.abort(error);
    this.#wakePump();
    this.#becameIdle();
  }

  #abort(job: Job, reason: unknown): void {
    if (job.settled) return;
    job.abort(reason);
    for (const b of this.#sent.values()) {
      const w = b.worker as Worker;
      if (b.job === job && Atomics.load(w.box.words, POOL_RUNNING) === b.id) {
        w.killedFor = b.id;
        w.proc.kill();
      }
    }
  }

  #idle(): boolean {
    return this.#jobs.length === 0 && this.#again.length === 0 && this.#sent.size === 0;
  }

  /** Nothing is left to do: a closed pool lets its workers go, and join() can wait for them. */
  #becameIdle(): void {
    if (this.#state === CLOSE) for (const w of this.#workers) if (!w.retiring) this.#retire(w);
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  // ---- shutting down ----

  /** No more tasks; the workers exit once the submitted ones are done. */
  close(): void {
    if (this.#state !== RUN) return;
    this.#state = CLOSE;
    this.#dispatchSoon();
  }

  /** Waits for every worker to exit; call close() or terminate() first. */
  async join(): Promise<void> {
    this.#checkJoinable('join()');
    for (;;) {
      if (this.#terminated !== null) return this.#terminated;
      // Until then the pump's wait holds the event loop open; after, the workers' joins do.
      if (!this.#idle()) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      else if (this.#workers.length > 0) await Promise.all(this.#workers.map((w) => w.proc.join()));
      else break;
    }
    process.removeListener('exit', this.#exitHook);
  }

  /** join(), blocking this thread. */
  joinSync(): void {
    this.#checkJoinable('joinSync()');
    this.#driveUntil(() => this.#idle(), Infinity);
    for (const w of [...this.#workers]) w.proc.joinSync();
    process.removeListener('exit', this.#exitHook);
  }

  #checkJoinable(call: string): void {
    this.#checkOwner(`Pool.${call}`);
    if (this.#state === RUN) throw new PoolError('ERR_POOL_RUNNING', `Pool.${call}: call close() or terminate() first`);
  }

  /** Stops at once: pending calls reject, workers get SIGTERM and, after a second, SIGKILL. */
  terminate(): Promise<void> {
    this.#checkOwner('Pool.terminate()');
    if (this.#terminated === null) this.#terminated = this.#terminate();
    return this.#terminated;
  }

  async #terminate(): Promise<void> {
    this.#stopAll();
    const workers = [...this.#workers];
    for (const w of workers) w.proc.terminate();
    const deadline = performance.now() + TERMINATE_GRACE_MS;
    for (const w of workers) {
      if ((await w.proc.join(timeLeft(deadline))) === null) {
        w.proc.kill();
        await w.proc.join();
      }
    }
    this.#workers = [];
    process.removeListener('exit', this.#exitHook);
  }

  /** terminate(), blocking this thread until the workers are gone. */
  terminateSync(): void {
    this.#checkOwner('Pool.terminateSync()');
    if (this.#terminated !== null) return;
    this.#stopAll();
    const workers = [...this.#workers];
    for (const w of workers) w.proc.terminate();
    const deadline = performance.now() + TERMINATE_GRACE_MS;
    for (const w of workers) {
      if (w.proc.joinSync(timeLeft(deadline)) === null) {
        w.proc.kill();
        w.proc.joinSync();
      }
    }
    this.#workers = [];
    process.removeListener('exit', this.#exitHook);
    this.#terminated ??= Promise.resolve();
  }

  #stopAll(): void {
    if (this.#state === TERMINATE) return;
    this.#state = TERMINATE;
    this.#failEverything(terminatedError());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.terminate();
  }

  [inspect.custom](): string {
    const state = ['running', 'closed', 'terminated'][this.#state];
    return `Pool { processes: ${this.#processes}, state: '${state}', workers: [${this.pids.join(', ')}] }`;
  }
}

function terminatedError(): PoolError {
  return new PoolError('ERR_POOL_TERMINATED', 'the pool was terminated before this task finished');
}

/** @internal (ClusterPool's too, with `what` 'ClusterPool') */
export function checkOptions(call: string, options: MapOptions, what = 'Pool'): MapOptions {
  if (typeof options !== 'object' || options === null) throw invalidType(`${what}.${call}: options`, 'an object', options);
  const { chunksize, signal } = options;
  if (chunksize !== undefined) checkInteger(`${what}.${call}: chunksize`, chunksize, 1);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidType(`${what}.${call}: signal`, 'an AbortSignal', signal);
  return options;
}

/** Python's rule: about four chunks per worker. */
function defaultChunksize(n: number, processes: number): number {
  return Math.max(1, Math.ceil(n / (processes * 4)));
}

/**
 * Settles `result` and calls the user's callbacks; a callback that throws is reported as an uncaught exception.
 * @internal (ClusterPool's too)
 */
export function withCallbacks<T>(result: AsyncResult<T>, options: AsyncOptions<T>, what = 'Pool'): Settler<unknown> {
  const { callback, errorCallback } = options;
  if (callback !== undefined && typeof callback !== 'function') throw invalidType(`${what}: callback`, 'a function', callback);
  if (errorCallback !== undefined && typeof errorCallback !== 'function') throw invalidType(`${what}: errorCallback`, 'a function', errorCallback);
  const call = (fn: ((v: never) => void) | undefined, v: unknown): void => {
    if (fn === undefined) return;
    try {
      fn(v as never);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  };
  return {
    resolve(value) {
      result.resolve(value as T);
      call(callback, value);
    },
    reject(error) {
      result.reject(error);
      call(errorCallback, error);
    },
  };
}
