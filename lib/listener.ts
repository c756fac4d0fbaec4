// Listener and Client: Python's multiprocessing.connection over stream
// sockets. A Unix socket path, a Linux abstract name ('\0name') or TCP
// [host, port]; the accepted and connected ends are Connections (a stream
// socket there: frames as one writev, receives peek at the header).
//
// With an authkey both ends prove it before anything else crosses, with
// Python 3.12's handshake and its framing (a 4-byte big-endian signed length,
// then the bytes), so a Python peer can authenticate against nodemp and
// nodemp against Python. The listener challenges first, then answers the
// client's challenge; the client the other way round:
//   challenger -> '#CHALLENGE#{sha256}' + 40 random bytes
//   answerer   -> '{sha256}' + HMAC-SHA256(authkey, '{sha256}' + those bytes)
//   challenger -> '#WELCOME#' or '#FAILURE#'
// A listener whose handshakeTimeout passes sends '#TIMEOUT#' before it
// closes (nodemp's own word, not Python's): the client, told, can tell a
// listener that gave up on it from one that died (a Python client reads it as
// a refusal).
// Nothing the peer sends is decoded before both directions succeed: the
// handshake reads raw bytes, refuses any message longer than
// MAX_AUTH_MESSAGE before reading its body, and only then is the socket
// wrapped in a Connection. Only HMAC-SHA256 is accepted, in either role: a
// Python 3.11 peer (HMAC-MD5 only) is refused.
//
// Each handshake step is a generator yielding what it reads and writes, so
// that the blocking forms (acceptSync, ClientSync) and the event-loop ones
// (accept, Client) run the same protocol code.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { unlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { native } from './native.js';
import { Connection, unwatchFd, watchFd } from './connection.js';
import { codecFor, type Serializer } from './codec.js';
import { AuthenticationError, ClosedError, EOFError, OSError, osError } from './errors.js';
import { checkInteger, invalidType, invalidValue } from './args.js';
import { selfPid } from './self.js';

/** A Unix socket path, a Linux abstract name (a string starting with '\0'), or TCP [host, port]. */
export type Address = string | [host: string, port: number];
export type Family = 'AF_UNIX' | 'AF_INET' | 'AF_INET6';

export interface ListenerOptions {
  /** The address family; by default the address's ('AF_UNIX' when there is no address). */
  family?: Family;
  /** How many connections the kernel queues before accept() takes them (default 1, as Python). */
  backlog?: number;
  /** Clients must prove they hold this key (see the README); none by default. */
  authkey?: Uint8Array | null;
  /** How the accepted connections' send() encodes values: 'msgpack' (default) or 'v8'. */
  serializer?: Serializer;
  /**
   * Milliseconds a client has to complete the authkey handshake, after which
   * accept() gives up on it with AuthenticationError; null (the default, as
   * Python): no limit, so a silent client holds that accept().
   */
  handshakeTimeout?: number | null;
}

export interface ClientOptions {
  family?: Family;
  /** Both ends must hold this key; none by default. */
  authkey?: Uint8Array | null;
  serializer?: Serializer;
}

// native/listener.cc's Family.
const FAMILY_UNIX = 0;
const FAMILY_INET = 1;
const FAMILY_INET6 = 2;
const FAMILIES: Record<Family, number> = { AF_UNIX: FAMILY_UNIX, AF_INET: FAMILY_INET, AF_INET6: FAMILY_INET6 };

const ADDRESS_EXPECTED = "a Unix socket path (a string), a Linux abstract name (a string starting with '\\0') or TCP [host, port]";

// Python's handshake (Lib/multiprocessing/connection.py, 3.12).
const CHALLENGE = Buffer.from('#CHALLENGE#');
const WELCOME = Buffer.from('#WELCOME#');
const FAILURE = Buffer.from('#FAILURE#');
const TIMED_OUT = Buffer.from('#TIMEOUT#');
const DIGEST = Buffer.from('{sha256}');
const NONCE_LENGTH = 40;
// Python's shortest acceptable challenge (its legacy one's length).
const MIN_CHALLENGE = 20;
// The longest handshake message read, as Python's recv_bytes(256): a longer
// one is refused before its body is read.
const MAX_AUTH_MESSAGE = 256;

interface Target {
  family: number;
  host: Buffer | string;
  port: number;
  address: Address;
}

function checkFamily(method: string, family: unknown): number | undefined {
  if (family === undefined) return undefined;
  if (typeof family !== 'string' || !Object.hasOwn(FAMILIES, family)) {
    throw invalidType(`${method}: options.family`, "'AF_UNIX', 'AF_INET' or 'AF_INET6'", family);
  }
  return FAMILIES[family as Family];
}

function parseAddress(method: string, address: unknown, family: number | undefined): Target {
  if (typeof address === 'string') {
    if (address.length === 0 || address.indexOf('\0', 1) > 0) {
      throw invalidType(`${method}(address)`, `${ADDRESS_EXPECTED}, with no NUL byte inside a path`, address);
    }
    if (family !== undefined && family !== FAMILY_UNIX) {
      throw invalidValue(`${method}(address): a string is a Unix socket address, but options.family is not 'AF_UNIX'`);
    }
    return { family: FAMILY_UNIX, host: Buffer.from(address), port: 0, address };
  }
  if (Array.isArray(address) && address.length === 2 && typeof address[0] === 'string') {
    const [host, port] = address as [string, unknown];
    checkInteger(`${method}(address) port`, port, 0, 65535);
    if (family === FAMILY_UNIX) {
      throw invalidValue(`${method}(address): [host, port] is a TCP address, but options.family is 'AF_UNIX'`);
    }
    const inet = family ?? (isIP(host) === 6 ? FAMILY_INET6 : FAMILY_INET);
    return { family: inet, host, port: port as number, address: [host, port as number] };
  }
  throw invalidType(`${method}(address)`, ADDRESS_EXPECTED, address);
}

// What native.netName gives, as an Address.
function toAddress([family, address, port]: [number, Buffer | string, number]): Address {
  return family === FAMILY_UNIX ? (address as Buffer).toString() : [address as string, port];
}

function checkAuthkey(method: string, authkey: unknown): Buffer | null {
  if (authkey === undefined || authkey === null) return null;
  if (!(authkey instanceof Uint8Array)) throw invalidType(`${method}: options.authkey`, 'a Buffer or Uint8Array', authkey);
  // A copy: a key changed after the call must not change this end's.
  return Buffer.from(authkey);
}

// ---- the handshake ----

// toListener: a client's write, which may find that the listener gave up on it.
type WriteStep = { write: Buffer; bestEffort?: boolean; toListener?: boolean };
type Step = { read: number } | WriteStep;
type Handshake = Generator<Step, void, Buffer>;

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeInt32BE(payload.length, 0);
  payload.copy(out, 4);
  return out;
}

/** One handshake message in Python's framing, or why it was refused unread. */
function* readMessage(): Generator<Step, Buffer | string, Buffer> {
  const size = (yield { read: 4 }).readInt32BE(0);
  // -1 announces a 64-bit length: more than 2 GiB, far over the bound.
  if (size < 0 || size > MAX_AUTH_MESSAGE) return `a handshake message of ${size < 0 ? 'over 2 GiB' : `${size} bytes`} (at most ${MAX_AUTH_MESSAGE})`;
  return size === 0 ? Buffer.alloc(0) : yield { read: size };
}

function mac(authkey: Buffer, message: Buffer): Buffer {
  return Buffer.concat([DIGEST, createHmac('sha256', authkey).update(message).digest()]);
}

/** readMessage(), where a client reads the listener: its notice that it gave up on us is thrown. */
function* readReply(toListener: boolean): Generator<Step, Buffer | string, Buffer> {
  const message = yield* readMessage();
  if (toListener && typeof message !== 'string' && message.equals(TIMED_OUT)) throw peerTimedOut();
  return message;
}

/**
 * Python's deliver_challenge: the peer must answer with the HMAC of a fresh
 * nonce. `toListener`: this is the client, and the listener may instead say
 * it gave up on us.
 */
function* deliverChallenge(authkey: Buffer, toListener: boolean): Handshake {
  const message = Buffer.concat([DIGEST, randomBytes(NONCE_LENGTH)]);
  yield { write: frame(Buffer.concat([CHALLENGE, message])), toListener };
  const response = yield* readReply(toListener);
  const expected = mac(authkey, message);
  if (typeof response !== 'string' && response.length === expected.length && timingSafeEqual(response, expected)) {
    yield { write: frame(WELCOME) };
    return;
  }
  // The peer learns it failed; if it is already gone, the error here says enough.
  yield { write: frame(FAILURE), bestEffort: true };
  throw new AuthenticationError(
    typeof response === 'string'
      ? `authentication failed: the peer answered the challenge with ${response}`
      : 'authentication failed: the peer answered the challenge wrongly (it does not hold the same authkey, or does not use HMAC-SHA256)',
  );
}

/** Python's answer_challenge: prove the key by the HMAC of the peer's nonce. `toListener` as above. */
function* answerChallenge(authkey: Buffer, toListener: boolean): Handshake {
  const message = yield* readMessage();
  if (typeof message === 'string') throw new AuthenticationError(`authentication failed: the peer sent ${message} instead of a challenge`);
  if (!message.subarray(0, CHALLENGE.length).equals(CHALLENGE)) {
    throw new AuthenticationError('authentication failed: the peer did not send a challenge (does it use an authkey?)');
  }
  const challenge = message.subarray(CHALLENGE.length);
  if (challenge.length < MIN_CHALLENGE || !challenge.subarray(0, DIGEST.length).equals(DIGEST)) {
    throw new AuthenticationError(
      challenge.length === MIN_CHALLENGE
        ? 'authentication failed: the peer uses the legacy HMAC-MD5 handshake (Python 3.11 or older); nodemp requires HMAC-SHA256 (Python 3.12 or newer)'
        : 'authentication failed: the challenge does not ask for HMAC-SHA256',
    );
  }
  yield { write: frame(mac(authkey, challenge)), toListener };
  const reply = yield* readReply(toListener);
  if (typeof reply === 'string' || !reply.equals(WELCOME)) {
    throw new AuthenticationError('authentication failed: the peer refused our answer to its challenge (it does not hold the same authkey)');
  }
}

function* listenerSide(authkey: Buffer): Handshake {
  yield* deliverChallenge(authkey, false);
  yield* answerChallenge(authkey, false);
}

function* clientSide(authkey: Buffer): Handshake {
  yield* answerChallenge(authkey, true);
  yield* deliverChallenge(authkey, true);
}

function handshakeEOF(): EOFError {
  return new EOFError('the peer closed the connection during authentication');
}

function write(fd: number, step: WriteStep): void {
  try {
    native.netWrite(fd, step.write);
  } catch (error) {
    if (step.bestEffort) return;
    // A listener that gave up on us closed after its notice: the write finds
    // the socket shut, and the notice, unread, says why.
    if (step.toListener && error instanceof OSError && (error.code === 'EPIPE' || error.code === 'ECONNRESET') && noticeWaits(fd)) throw peerTimedOut();
    throw error;
  }
}

function noticeWaits(fd: number): boolean {
  const notice = frame(TIMED_OUT);
  const buf = Buffer.alloc(notice.length);
  let got = 0;
  try {
    while (got < buf.length) {
      const n = native.connRead(fd, buf, got, buf.length - got, 0);
      if (n <= 0) break;
      got += n;
    }
  } catch {
    return false;
  }
  return got === buf.length && buf.equals(notice);
}

/** The listener gives up on a peer at its handshakeTimeout: tells it so, and returns the error for this end. */
function giveUp(fd: number, ms: number): AuthenticationError {
  try {
    native.netWrite(fd, frame(TIMED_OUT), 0, false);
  } catch {
    // Gone already: it needs no reason.
  }
  return new AuthenticationError(`authentication failed: the peer did not complete the handshake within ${ms} ms`, { timedOut: true });
}

function peerTimedOut(): AuthenticationError {
  return new AuthenticationError(
    "authentication failed: the listener gave up waiting for this process's side of the handshake (its handshakeTimeout passed; was this process stopped, or its event loop held up?)",
    { timedOut: true },
  );
}

// How long a handshake read may wait: -1 forever, else what is left until `deadline`.
function leftUntil(deadline: number): number {
  return deadline === Infinity ? -1 : Math.max(0, deadline - performance.now());
}

function handshakeSync(fd: number, steps: Handshake, timeoutMs: number | null = null): void {
  const deadline = timeoutMs === null ? Infinity : performance.now() + timeoutMs;
  let next = steps.next();
  while (!next.done) {
    const step = next.value;
    if ('write' in step) {
      write(fd, step);
      next = steps.next();
      continue;
    }
    const buf = Buffer.allocUnsafe(step.read);
    for (let got = 0; got < step.read; ) {
      const n = native.connRead(fd, buf, got, step.read - got, leftUntil(deadline));
      if (n === 0) throw handshakeEOF();
      if (n < 0) throw giveUp(fd, timeoutMs as number);
      got += n;
    }
    next = steps.next(buf);
  }
}

/**
 * Resolves once `fd` is readable (`writable`: has room to write), waiting on
 * the event loop; resolves false if `deadline` passes first.
 */
function ready(fd: number, writable = false, deadline = Infinity): Promise<boolean> {
  return new Promise((resolve) => {
    const timer =
      deadline === Infinity
        ? null
        : setTimeout(() => {
            unwatchFd(fd);
            resolve(false);
          }, leftUntil(deadline));
    watchFd(
      fd,
      () => {
        unwatchFd(fd);
        if (timer !== null) clearTimeout(timer);
        resolve(true);
      },
      writable,
    );
  });
}

async function handshake(fd: number, steps: Handshake, timeoutMs: number | null = null): Promise<void> {
  const deadline = timeoutMs === null ? Infinity : performance.now() + timeoutMs;
  let next = steps.next();
  while (!next.done) {
    const step = next.value;
    if ('write' in step) {
      write(fd, step);
      next = steps.next();
      continue;
    }
    const buf = Buffer.allocUnsafe(step.read);
    let late = false;
    for (let got = 0; got < step.read; ) {
      const n = native.connRead(fd, buf, got, step.read - got, 0);
      if (n === 0) throw handshakeEOF();
      if (n > 0) got += n;
      else if (late) throw giveUp(fd, timeoutMs as number);
      // A loop held up past the deadline runs the timer before it polls: what
      // came meanwhile is read once more before the peer is called late.
      else late = !(await ready(fd, false, deadline));
    }
    next = steps.next(buf);
  }
}

// A Listener dropped without close() gives its descriptor back, and its
// socket file, in the process that made it.
const finalizer = new FinalizationRegistry<{ fd: number; path: string | null; owner: number }>(({ fd, path, owner }) => {
  try {
    native.connClose(fd);
  } catch {
    // Already gone.
  }
  if (path !== null && owner === selfPid) removeSocketFile(path);
});

function removeSocketFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Removed by someone else already: nothing left to clean.
  }
}

// What native.netAccept gives: the descriptor, then the client's address as netName gives one.
type Accepted = [fd: number, family: number, address: Buffer | string, port: number];

interface Waiter {
  resolve(client: Accepted): void;
  reject(error: unknown): void;
}

/**
 * Internal (lib/manager/): the next client, taken from the kernel but not yet
 * authenticated; the function runs its handshake. A server takes the next
 * client at once, however long this one's handshake lasts.
 */
export let takeClient: (listener: Listener) => Promise<() => Promise<Connection>>;

/**
 * Python's multiprocessing.connection.Listener: a bound, listening socket
 * whose accept() gives a Connection per client, authenticated first when
 * an authkey is given. `accept()` waits on the event loop, `acceptSync()`
 * blocks this thread.
 */
export class Listener {
  #fd: number;
  readonly #address: Address;
  readonly #family: number;
  readonly #authkey: Buffer | null;
  readonly #serializer: Serializer;
  readonly #handshakeTimeout: number | null;
  // The socket file bind() made, removed by close() in the process that made it.
  readonly #path: string | null;
  readonly #owner = selfPid;
  #lastAccepted: Address | null = null;
  #waiters: Waiter[] = [];
  #waitersPid = selfPid;
  #watching = false;
  readonly #onReadable = (): void => this.#serveWaiters();

  /**
   * Binds and listens on `address`: a Unix socket path, a Linux abstract
   * name ('\0name'), or [host, port] (port 0: a free one, which `address`
   * then tells). Without an address: a fresh socket file in the temporary
   * directory for 'AF_UNIX' (the default), ['127.0.0.1', 0] for 'AF_INET',
   * ['::1', 0] for 'AF_INET6'.
   */
  constructor(address?: Address | null, options: ListenerOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw invalidType('Listener(address, options)', 'an object like { family, backlog, authkey }', options);
    }
    const family = checkFamily('Listener', options.family);
    const backlog = checkInteger('Listener: options.backlog', options.backlog ?? 1, 0, 0x7fffffff);
    this.#authkey = checkAuthkey('Listener', options.authkey);
    this.#serializer = options.serializer ?? 'msgpack';
    codecFor(this.#serializer);
    const timeout = options.handshakeTimeout ?? null;
    if (timeout !== null && (typeof timeout !== 'number' || !(timeout >= 0))) {
      throw invalidType('Listener: options.handshakeTimeout', 'a number of milliseconds >= 0, or null', timeout);
    }
    this.#handshakeTimeout = timeout === Infinity ? null : timeout;
    if (address === undefined || address === null) {
      if (family === FAMILY_INET) address = ['127.0.0.1', 0];
      else if (family === FAMILY_INET6) address = ['::1', 0];
      else address = join(tmpdir(), `nodemp-listener-${selfPid}-${randomBytes(6).toString('hex')}`);
    }
    const target = parseAddress('Listener', address, family);
    this.#fd = native.netListen(target.family, target.host, target.port, backlog);
    this.#family = target.family;
    const abstract = target.family === FAMILY_UNIX && (address as string)[0] === '\0';
    this.#path = target.family === FAMILY_UNIX && !abstract ? (address as string) : null;
    // TCP: the port bound, and the address as the kernel has it; Unix: as given.
    this.#address = target.family === FAMILY_UNIX ? target.address : toAddress(native.netName(this.#fd));
    finalizer.register(this, { fd: this.#fd, path: this.#path, owner: this.#owner }, this);
  }

  /** The address bound: for TCP the real port (and numeric host) once port 0 picked one. */
  get address(): Address {
    return Array.isArray(this.#address) ? [this.#address[0], this.#address[1]] : this.#address;
  }

  /** The address of the last client accepted ('' for an unnamed Unix socket), null before the first. */
  get lastAcceptedAddress(): Address | null {
    const last = this.#lastAccepted;
    return Array.isArray(last) ? [last[0], last[1]] : last;
  }

  /** True once close() was called in this process. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The listening descriptor. */
  fileno(): number {
    if (this.#fd < 0) throw new ClosedError('fileno(): the listener is closed');
    return this.#fd;
  }

  /**
   * Blocks until a client connects, authenticates it if there is an authkey,
   * and returns its Connection. A client that fails authentication throws
   * AuthenticationError here (and gets one too); the listener stays open for
   * the next.
   */
  acceptSync(): Connection {
    const client = native.netAccept(this.#listening('acceptSync'), -1) as Accepted;
    const fd = this.#took(client);
    try {
      if (this.#authkey !== null) handshakeSync(fd, listenerSide(this.#authkey), this.#handshakeTimeout);
      return new Connection(fd, { serializer: this.#serializer });
    } catch (error) {
      native.connClose(fd);
      throw error;
    }
  }

  /** acceptSync() on the event loop: resolves with the next client's Connection. */
  async accept(): Promise<Connection> {
    return (await takeClient(this))();
  }

  static {
    takeClient = async (listener) => {
      listener.#listening('accept');
      const fd = listener.#took(await listener.#nextClient());
      return async () => {
        try {
          if (listener.#authkey !== null) await handshake(fd, listenerSide(listener.#authkey), listener.#handshakeTimeout);
          return new Connection(fd, { serializer: listener.#serializer });
        } catch (error) {
          native.connClose(fd);
          throw error;
        }
      };
    };
  }

  /**
   * Closes the listening socket and, in the process that bound it, removes
   * its socket file. Pending accept() calls reject with ClosedError;
   * connections already accepted stay open. Closing twice does nothing.
   */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    finalizer.unregister(this);
    const waiters = this.#waitersPid === selfPid ? this.#waiters : [];
    this.#waiters = [];
    if (this.#watching && this.#waitersPid === selfPid) unwatchFd(fd);
    this.#watching = false;
    native.connClose(fd);
    if (this.#path !== null && this.#owner === selfPid) removeSocketFile(this.#path);
    for (const w of waiters) w.reject(new ClosedError('the listener was closed while accept() was pending'));
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [inspect.custom](): string {
    const shown = typeof this.#address === 'string' ? JSON.stringify(this.#address) : `[${JSON.stringify(this.#address[0])}, ${this.#address[1]}]`;
    const family = Object.keys(FAMILIES)[this.#family];
    return `<Listener ${family} ${shown}${this.#fd < 0 ? ' closed' : ''}${this.#authkey ? ' authkey' : ''}>`;
  }

  #listening(method: string): number {
    if (this.#fd < 0) throw new ClosedError(`${method}(): the listener is closed`);
    // A forked child's copy: the parent's pending accepts and watch are the parent's.
    if (this.#waitersPid !== selfPid) {
      this.#waitersPid = selfPid;
      this.#waiters = [];
      this.#watching = false;
    }
    return this.#fd;
  }

  // As Python, the client's address is the last accepted one before it authenticates.
  #took([fd, family, address, port]: Accepted): number {
    this.#lastAccepted = toAddress([family, address, port]);
    return fd;
  }

  #nextClient(): Promise<Accepted> {
    if (this.#waiters.length === 0) {
      const client = native.netAccept(this.#fd, 0);
      if (client !== -1) return Promise.resolve(client);
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      if (!this.#watching) {
        watchFd(this.#fd, this.#onReadable);
        this.#watching = true;
      }
    });
  }

  // From the event loop: clients are queued; each pending accept() takes one, in order.
  #serveWaiters(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    try {
      while (this.#waiters.length > 0) {
        const client = native.netAccept(fd, 0);
        if (client === -1) break;
        (this.#waiters.shift() as Waiter).resolve(client);
      }
    } catch (error) {
      // EMFILE and the like: the queued client stays, and would wake this watch at once again.
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const w of waiters) w.reject(error);
    }
    if (this.#waiters.length === 0 && this.#watching) {
      unwatchFd(fd);
      this.#watching = false;
    }
  }
}

function clientArgs(method: string, address: unknown, options: ClientOptions): [Target, Buffer | null, Serializer] {
  if (typeof options !== 'object' || options === null) {
    throw invalidType(`${method}(address, options)`, 'an object like { family, authkey }', options);
  }
  const target = parseAddress(method, address, checkFamily(method, options.family));
  const authkey = checkAuthkey(method, options.authkey);
  const serializer = options.serializer ?? 'msgpack';
  codecFor(serializer);
  return [target, authkey, serializer];
}

function connected(fd: number, authkey: Buffer | null, serializer: Serializer, authenticate: (authkey: Buffer) => void): Connection {
  try {
    if (authkey !== null) authenticate(authkey);
    return new Connection(fd, { serializer });
  } catch (error) {
    native.connClose(fd);
    throw error;
  }
}

/**
 * Python's multiprocessing.connection.Client: connects to a Listener at
 * `address` and returns the Connection, once both ends have proved the
 * authkey if one is given (AuthenticationError otherwise). Blocks this thread.
 */
export function ClientSync(address: Address, options: ClientOptions = {}): Connection {
  const [target, authkey, serializer] = clientArgs('ClientSync', address, options);
  const [fd] = native.netConnect(target.family, target.host, target.port, -1);
  return connected(fd, authkey, serializer, (key) => handshakeSync(fd, clientSide(key)));
}

// A host name's address without blocking the event loop, failing as ClientSync does: an OSError.
async function resolve(host: string, family: 4 | 6): Promise<string> {
  try {
    return (await lookup(host, { family })).address;
  } catch (error) {
    const { code = 'ENOTFOUND', errno = 0 } = error as NodeJS.ErrnoException;
    throw osError(code, errno, 'getaddrinfo', `getaddrinfo failed for ${host} (${code})`);
  }
}

// How long an async Client waits before asking again a Unix listener whose backlog is full.
const BACKLOG_RETRY_MS = [1, 2, 5, 10, 20, 50];

/**
 * ClientSync() on the event loop: the host name is resolved with the dns
 * module, the connect and the handshake wait for readiness, nothing blocks.
 */
export async function Client(address: Address, options: ClientOptions = {}): Promise<Connection> {
  const [target, authkey, serializer] = clientArgs('Client', address, options);
  if (typeof target.host === 'string' && isIP(target.host) === 0) {
    target.host = await resolve(target.host, target.family === FAMILY_INET6 ? 6 : 4);
  }
  let fd: number;
  for (let attempt = 0; ; attempt++) {
    const [made, inProgress] = native.netConnect(target.family, target.host, target.port, 0);
    if (made < 0) {
      const ms = BACKLOG_RETRY_MS[Math.min(attempt, BACKLOG_RETRY_MS.length - 1)];
      await new Promise((resolve) => setTimeout(resolve, ms));
      continue;
    }
    fd = made;
    if (!inProgress) break;
    await ready(fd, true);
    try {
      native.netConnected(fd);
    } catch (error) {
      native.connClose(fd);
      throw error;
    }
    break;
  }
  if (authkey === null) return new Connection(fd, { serializer });
  try {
    await handshake(fd, clientSide(authkey));
  } catch (error) {
    native.connClose(fd);
    throw error;
  }
  return new Connection(fd, { serializer });
}
