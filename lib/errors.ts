/** An operating-system call failed. `code` is the errno name (`'EAGAIN'`), as in Node's own errors. */
export class OSError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(code: string, errno: number, syscall: string, message: string) {
    super(message);
    this.name = 'OSError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** A named shared-memory segment (or other file) already exists: `code` is `'EEXIST'`. */
export class FileExistsError extends OSError {
  constructor(code: string, errno: number, syscall: string, message: string) {
    super(code, errno, syscall, message);
    this.name = 'FileExistsError';
  }
}

/** A named shared-memory segment (or other file) does not exist: `code` is `'ENOENT'`. */
export class FileNotFoundError extends OSError {
  constructor(code: string, errno: number, syscall: string, message: string) {
    super(code, errno, syscall, message);
    this.name = 'FileNotFoundError';
  }
}

/** The OSError subclass for an errno name, as Python maps errno to its OSError subclasses. */
export function osError(code: string, errno: number, syscall: string, message: string): OSError {
  if (code === 'EEXIST') return new FileExistsError(code, errno, syscall, message);
  if (code === 'ENOENT') return new FileNotFoundError(code, errno, syscall, message);
  return new OSError(code, errno, syscall, message);
}

export type ProcessErrorCode =
  | 'ERR_PROCESS_STARTED'
  | 'ERR_PROCESS_NOT_STARTED'
  | 'ERR_PROCESS_ALIVE'
  | 'ERR_PROCESS_CLOSED'
  | 'ERR_NOT_A_CHILD'
  | 'ERR_DAEMON_CHILDREN'
  | 'ERR_BOOTSTRAPPING'
  | 'ERR_CONTEXT_SET'
  | 'ERR_START_METHOD'
  | 'ERR_FORKSERVER_DIED';

/** A `Process` was used in a way its state does not allow (start twice, join before start, ...). */
export class ProcessError extends Error {
  readonly code: ProcessErrorCode;
  constructor(code: ProcessErrorCode, message: string) {
    super(message);
    this.name = 'ProcessError';
    this.code = code;
  }
}

/** This process cannot `fork()` safely; the message says how to run it instead. */
export class ForkSafetyError extends Error {
  readonly code = 'ERR_FORK_UNSAFE';
  constructor(message: string) {
    super(message);
    this.name = 'ForkSafetyError';
  }
}

/** A wait that was given a deadline did not finish in time (Python's `TimeoutError`). */
export class TimeoutError extends Error {
  readonly code = 'ERR_TIMEOUT';
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

export type SyncErrorCode = 'ERR_LOCK_NOT_HELD' | 'ERR_NOT_OWNER' | 'ERR_SEMAPHORE_OVERFLOW' | 'ERR_TOO_MANY_TASK_DONE';

/**
 * A lock, semaphore or condition was used against its rules: releasing a Lock
 * nobody holds, releasing an RLock or waiting on a Condition without owning
 * its lock, releasing a BoundedSemaphore past its initial value.
 */
export class SyncError extends Error {
  readonly code: SyncErrorCode;
  constructor(code: SyncErrorCode, message: string) {
    super(message);
    this.name = 'SyncError';
    this.code = code;
  }
}

/** A `Barrier` was broken (aborted, timed out, or its action threw) while or before waiting on it. */
export class BrokenBarrierError extends Error {
  readonly code = 'ERR_BROKEN_BARRIER';
  constructor(message = 'the barrier is broken') {
    super(message);
    this.name = 'BrokenBarrierError';
  }
}

/** get() found nothing to take: the queue was empty, or stayed empty until the timeout. */
export class QueueEmpty extends Error {
  readonly code = 'ERR_QUEUE_EMPTY';
  constructor(message = 'the queue is empty') {
    super(message);
    this.name = 'QueueEmpty';
  }
}

/** put() found no room: the queue was full, or stayed full until the timeout. */
export class QueueFull extends Error {
  readonly code = 'ERR_QUEUE_FULL';
  constructor(message = 'the queue is full') {
    super(message);
    this.name = 'QueueFull';
  }
}

/**
 * A Queue that was shut down (Python 3.13's `queue.ShutDown`): every put()
 * after shutdown(), and every get() once nothing is left to take.
 */
export class ShutDown extends Error {
  readonly code = 'ERR_QUEUE_SHUT_DOWN';
  constructor(message = 'the queue was shut down') {
    super(message);
    this.name = 'ShutDown';
  }
}

/** A Queue, Connection or SharedMemory was used after this process closed it (or a Connection end a child inherited halfway through a message). */
export class ClosedError extends Error {
  readonly code = 'ERR_CLOSED';
  constructor(message: string) {
    super(message);
    this.name = 'ClosedError';
  }
}

/** recv() found the other end of a Connection closed, with nothing left to read. */
export class EOFError extends Error {
  readonly code = 'ERR_EOF';
  constructor(message = 'the other end of the connection is closed') {
    super(message);
    this.name = 'EOFError';
  }
}

/** A received message did not fit the buffer or the maximum length given; `data` holds it whole. */
export class BufferTooShort extends Error {
  readonly code = 'ERR_BUFFER_TOO_SHORT';
  readonly data: Buffer;
  constructor(message: string, data: Buffer) {
    super(message);
    this.name = 'BufferTooShort';
    this.data = data;
  }
}

/**
 * A Listener or Client handshake failed: the peer does not hold the same
 * authkey, or did not follow the challenge protocol, or (`timedOut`) the
 * listener's handshakeTimeout passed first. Raised on both ends.
 */
export class AuthenticationError extends Error {
  readonly code = 'ERR_AUTHENTICATION';
  readonly timedOut: boolean;
  constructor(message: string, { timedOut = false }: { timedOut?: boolean } = {}) {
    super(message);
    this.name = 'AuthenticationError';
    this.timedOut = timedOut;
  }
}

/** A one-way Connection was used in the direction it cannot go (send on the read end, recv on the write end). */
export class DirectionError extends Error {
  readonly code = 'ERR_WRONG_DIRECTION';
  constructor(message: string) {
    super(message);
    this.name = 'DirectionError';
  }
}

/**
 * Why a value cannot cross: `'ERR_NOT_SERIALIZABLE'`, no codec can copy it;
 * `'ERR_NOT_EXPORTED'`, a function that must travel by reference (start methods
 * 'spawn' and 'forkserver') is not an export of a module the child can import.
 */
export type SerializationErrorCode = 'ERR_NOT_SERIALIZABLE' | 'ERR_NOT_EXPORTED' | 'ERR_TOO_MANY_DESCRIPTORS';

/** A value cannot cross processes: a function, a symbol, or something else no codec can copy. */
export class SerializationError extends TypeError {
  readonly code: SerializationErrorCode;
  constructor(message: string, options?: { cause?: unknown; code?: SerializationErrorCode }) {
    super(message, options !== undefined && 'cause' in options ? { cause: options.cause } : undefined);
    this.name = 'SerializationError';
    this.code = options?.code ?? 'ERR_NOT_SERIALIZABLE';
  }
}

/**
 * A Pool was used after close() or terminate(), after its initializer failed,
 * from a process other than its creator, or misused (join() while it still
 * runs, successful() before the result is ready).
 */
export class PoolError extends Error {
  readonly code: 'ERR_POOL_CLOSED' | 'ERR_POOL_RUNNING' | 'ERR_RESULT_NOT_READY' | 'ERR_POOL_TERMINATED' | 'ERR_POOL_BROKEN' | 'ERR_NOT_POOL_OWNER';
  constructor(code: PoolError['code'], message: string) {
    super(message);
    this.name = 'PoolError';
    this.code = code;
  }
}

/** The pool worker running a task died (killed, out of memory, process.exit) before answering. */
export class WorkerDiedError extends Error {
  readonly code = 'ERR_WORKER_DIED';
  readonly pid: number;
  readonly exitCode: number | null;
  constructor(message: string, pid: number, exitCode: number | null) {
    super(message);
    this.name = 'WorkerDiedError';
    this.pid = pid;
    this.exitCode = exitCode;
  }
}

/** The `cause` of an error rethrown from a pool worker: the worker's own stack. */
export class RemoteTraceback extends Error {
  constructor(stack: string, from = 'the pool worker') {
    super(stack.split('\n', 1)[0]);
    this.name = 'RemoteTraceback';
    this.stack = `RemoteTraceback (from ${from}):\n${stack}`;
  }
}

/**
 * Why a manager call failed on the way, not in the object it calls:
 * `'ERR_MANAGER_UNREACHABLE'` no server answers at the address;
 * `'ERR_MANAGER_DEAD'` the server went away (killed, or its connection broke)
 * with the call in flight; `'ERR_MANAGER_SHUT_DOWN'` shutdown() was called;
 * `'ERR_MANAGER_STATE'` start() twice, a call before start(), register() after;
 * `'ERR_OBJECT_GONE'` no object has that id (its last proxy was dropped);
 * `'ERR_UNKNOWN_TYPEID'` nothing is registered under that name;
 * `'ERR_NOT_EXPOSED'` the object has no exposed method of that name;
 * `'ERR_BAD_REQUEST'` the server could not decode or use what came;
 * `'ERR_MESSAGE_TOO_LONG'` a message is over the server's stated limit.
 */
export type ManagerErrorCode =
  | 'ERR_MANAGER_UNREACHABLE'
  | 'ERR_MANAGER_DEAD'
  | 'ERR_MANAGER_SHUT_DOWN'
  | 'ERR_MANAGER_STATE'
  | 'ERR_OBJECT_GONE'
  | 'ERR_UNKNOWN_TYPEID'
  | 'ERR_NOT_EXPOSED'
  | 'ERR_BAD_REQUEST'
  | 'ERR_MESSAGE_TOO_LONG';

/** A Manager, its server or the wire between them failed; `code` says how. */
export class ManagerError extends Error {
  readonly code: ManagerErrorCode;
  constructor(code: ManagerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ManagerError';
    this.code = code;
  }
}

/** Python's KeyError: a managed dict (or Namespace) has no such key. `key` is the key asked for. */
export class KeyError extends Error {
  readonly code = 'ERR_KEY_NOT_FOUND';
  readonly key: unknown;
  constructor(message: string, key: unknown) {
    super(message);
    this.name = 'KeyError';
    this.key = key;
  }
}

/**
 * A ClusterPool (nodemp/cluster) or its Redis failed, not a task:
 * `'ERR_BULLMQ_MISSING'` the optional peers bullmq and ioredis are not installed;
 * `'ERR_REDIS_UNREACHABLE'` no Redis answered at the address;
 * `'ERR_REDIS_LOST'` the connection broke and did not come back within `reconnectTimeout`;
 * `'ERR_JOB_FAILED'` BullMQ failed a job for a reason of its own (stalled
 * more often than allowed, removed by someone else) with no task error to pass on;
 * `'ERR_BAD_URL'` the Redis address is not one;
 * `'ERR_WORKER_START'` a `nodemp worker`'s local process ended before it connected.
 */
export class ClusterError extends Error {
  readonly code: 'ERR_BULLMQ_MISSING' | 'ERR_REDIS_UNREACHABLE' | 'ERR_REDIS_LOST' | 'ERR_JOB_FAILED' | 'ERR_BAD_URL' | 'ERR_WORKER_START';
  constructor(code: ClusterError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClusterError';
    this.code = code;
  }
}

type ErrorClass = new (...args: never[]) => Error;

/** nodemp's own error classes: each crosses processes as itself (see lib/codec.ts, and Pool's failures). */
export const ownErrorClasses: readonly ErrorClass[] = [
  OSError,
  FileExistsError,
  FileNotFoundError,
  ProcessError,
  ForkSafetyError,
  TimeoutError,
  SyncError,
  BrokenBarrierError,
  QueueEmpty,
  QueueFull,
  ShutDown,
  ClosedError,
  EOFError,
  BufferTooShort,
  DirectionError,
  AuthenticationError,
  SerializationError,
  PoolError,
  WorkerDiedError,
  RemoteTraceback,
  ManagerError,
  KeyError,
  ClusterError,
];

// What an error received from another process is rebuilt as, by name.
const builtinClasses = new Map<string, ErrorClass>(
  [Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError, AggregateError].map((Class) => [Class.name, Class]),
);
const ownClasses = new Map<string, ErrorClass>(ownErrorClasses.map((Class) => [Class.name, Class]));

/** An error as it crosses to another process: what reviveError() rebuilds it from. */
export interface ErrorState {
  name: string;
  message: string;
  stack: string;
  /** Own enumerable properties that are data (code, errno, pid, data, ...), `name` included. */
  fields: Record<string, unknown>;
  /** One of nodemp's classes: only then is it rebuilt as nodemp's class of that name. */
  own: boolean;
}

export function errorState(error: Error): ErrorState {
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(error)) {
    if (key === 'stack' || key === 'message' || key === 'cause') continue;
    const v = (error as unknown as Record<string, unknown>)[key];
    // Only data: an error carrying a socket or a function still crosses, without it.
    if (v === null || v instanceof Uint8Array || (typeof v !== 'object' && typeof v !== 'function' && typeof v !== 'symbol')) fields[key] = v;
  }
  const own = ownErrorClasses.some((Class) => error.constructor === Class);
  return { name: error.name, message: error.message, stack: String(error.stack ?? `${error.name}: ${error.message}`), fields, own };
}

/**
 * The error `state` describes, as an instance of the class of that name
 * (nodemp's own or a built-in; Error for a class this process does not know,
 * under the original name), with its fields, and `cause` if given. Its
 * constructor does not run: the fields come from the sender as they were.
 */
export function reviveError(state: ErrorState, cause?: unknown): Error {
  // A user's error (or a DOMException) named like one of nodemp's is not one.
  const Class = (state.own ? ownClasses : builtinClasses).get(state.name) ?? Error;
  const options = cause === undefined ? undefined : { cause };
  const error: Error = Reflect.construct(Error, [state.message, options], Class);
  for (const [key, v] of Object.entries(state.fields)) {
    // Bytes arrive as a Uint8Array; nodemp's errors hold Buffers (BufferTooShort.data).
    (error as unknown as Record<string, unknown>)[key] = v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v;
  }
  if (error.name !== state.name) Object.defineProperty(error, 'name', { value: state.name, configurable: true, writable: true });
  return error;
}
