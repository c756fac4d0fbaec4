// Proxies: handles on objects a manager's server holds. Each process has one
// connection per server, made on first use and shared by all its proxies;
// requests carry ids, so Promise-form calls may be many at once while a
// Sync-form call blocks this thread in the socket read, answering the others
// as their replies pass.
//
// Each proxy object holds one reference on the server (protocol.ts):
//   - made by a manager method or a reply: the reference came with it;
//   - decoded from a message: the sender made one in transit, which this
//     process adopts (at once, after the decode);
//   - copied into a forked child: the child takes a reference of its own as
//     it starts, while its parent still holds its copy.
// A FinalizationRegistry gives it back when the proxy is collected; a
// process that ends gives back all of its own as its connection closes.
import { inspect } from 'node:util';
import { native } from '../native.js';
import { decodingUntrusted, sharedByName } from '../codec.js';
import { Client, ClientSync, type Address } from '../listener.js';
import { unwatchFd, watchFd, type Connection } from '../connection.js';
import { AuthenticationError, EOFError, ManagerError, OSError } from '../errors.js';
import { selfPid } from '../self.js';
import { currentProcess, onChildStart } from '../process.js';
import { runningServerAt } from './server.js';
import { FrameReader, NONE, frameOf } from './wire.js';
import { SpinGauge, pollPays } from '../spin.js';
import * as P from './protocol.js';

// How long a Sync call re-reads for its reply before it sleeps in the read.
const REPLY_SPIN_MS = 0.05;

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

// The authkeys of the managers this process made or connected to, by
// address: a proxy decoded here for one of them uses it; for any other,
// this process's own authkey (as Python).
const authkeys = new Map<string, Buffer>();

/** Internal: `authkey` is the key of the manager at `address`. */
export function rememberAuthkey(address: Address, authkey: Uint8Array): void {
  authkeys.set(P.addressKey(address), Buffer.from(authkey));
}

function authkeyFor(address: Address): Buffer {
  return authkeys.get(P.addressKey(address)) ?? currentProcess().authkey;
}

/** A request with id 0 and one integer operand, encoded by hand: it may be sent while the codec is busy encoding the message a proxy is in. */
function smallRequest(op: number, operand: number): Buffer {
  const out = Buffer.allocUnsafe(5 + 4 + 9);
  out[0] = 1;
  let at = 5;
  out[at++] = 0x93;
  out[at++] = 0;
  out[at++] = op;
  if (operand >= 0 && operand < 0x80) out[at++] = operand;
  else if (operand >= 0 && operand <= 0xffffffff) {
    out[at++] = 0xce;
    out.writeUInt32BE(operand, at);
    at += 4;
  } else {
    out[at++] = 0xd3;
    out.writeBigInt64BE(BigInt(operand), at);
    at += 8;
  }
  out.writeUInt32LE(at - 5, 1);
  return out.subarray(0, at);
}

/** This process's connection to one manager server. */
export class ManagerConnection {
  readonly address: Address;
  /** The process this connection is of: a forked child has a copy of its parent's. */
  readonly owner = selfPid;
  readonly #authkey: Buffer;
  #conn: Connection | null = null;
  #fd = -1;
  #reader: FrameReader | null = null;
  #connecting: Promise<void> | null = null;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #limit = Infinity;
  #watching = false;
  #failure: ManagerError | null = null;
  readonly #spin = new SpinGauge();
  // Frames the socket has not taken yet, and how much of the first it has.
  readonly #outbox: Buffer[] = [];
  #outSent = 0;
  #flushTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #onReadable = (): void => this.#drain();

  constructor(address: Address, authkey: Buffer) {
    this.address = address;
    this.#authkey = authkey;
  }

  /** Whether this process has connected (and not closed since). */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** Why calls fail from now on, or null. */
  get failure(): ManagerError | null {
    return this.#failure;
  }

  async call(op: number, operands: unknown[]): Promise<unknown> {
    this.#check();
    if (this.#conn === null) await this.#connect();
    this.#check();
    const id = this.#nextId++;
    this.#send([id, op, ...operands]);
    const reply = new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    // As a Sync call does: a reply that comes within microseconds is taken
    // without the event loop's poll and wake-up.
    if (pollPays() && this.#spin.allowed()) {
      const spinUntil = performance.now() + REPLY_SPIN_MS;
      do this.#drain();
      while (this.#pending.has(id) && this.#reader !== null && performance.now() < spinUntil);
      if (this.#pending.has(id)) this.#spin.miss();
      else this.#spin.hit();
    }
    if (this.#pending.has(id) && !this.#watching && this.#conn !== null) {
      watchFd(this.#fd, this.#onReadable);
      this.#watching = true;
    }
    return reply;
  }

  callSync(op: number, operands: unknown[]): unknown {
    this.#check();
    this.#notSelf();
    this.connectSync();
    const id = this.#nextId++;
    this.#send([id, op, ...operands]);
    if (this.#outbox.length > 0) {
      try {
        this.#flushSync();
      } catch (error) {
        this.#lost(error);
        throw this.#failure;
      }
    }
    const reader = this.#reader as FrameReader;
    // A server that answers at once is read without the sleep and wake-up of a blocking read.
    let spinUntil = pollPays() && this.#spin.allowed() ? performance.now() + REPLY_SPIN_MS : 0;
    for (;;) {
      let message: unknown;
      try {
        message = reader.next();
        while (message === NONE) {
          if (spinUntil !== 0 && performance.now() >= spinUntil) {
            this.#spin.miss();
            spinUntil = 0;
          }
          if (spinUntil !== 0) reader.fill(0);
          else reader.fill(-1, true);
          message = reader.next();
        }
      } catch (error) {
        this.#lost(error);
        throw this.#failure;
      }
      if (Array.isArray(message) && message[0] === id) {
        if (spinUntil !== 0) this.#spin.hit();
        return this.#result(message);
      }
      this.#dispatch(message);
    }
  }

  /** A request with no reply; a failure to send it only marks the connection lost. */
  notify(op: number, operand: number): void {
    if (this.#conn === null || this.#failure !== null) return;
    try {
      this.#write(smallRequest(op, operand));
    } catch (error) {
      this.#lost(error);
    }
  }

  /**
   * Sends a frame without waiting for room: what the socket does not take
   * waits in the outbox. A sender that waited could wait forever: a server
   * whose replies to us are not read stops reading our requests.
   */
  #write(frame: Buffer): void {
    if (this.#outbox.length === 0) {
      const n = native.netWrite(this.#fd, frame, 0, false);
      if (n === frame.length) return;
      this.#outSent = n;
    }
    this.#outbox.push(frame);
    this.#flushLater();
  }

  /** Sends what the outbox holds as far as the socket takes it; true once it is empty. */
  #flushNow(): boolean {
    while (this.#outbox.length > 0) {
      const frame = this.#outbox[0] as Buffer;
      this.#outSent += native.netWrite(this.#fd, frame, this.#outSent, false);
      if (this.#outSent < frame.length) return false;
      this.#outbox.shift();
      this.#outSent = 0;
    }
    return true;
  }

  // The outbox is flushed from a timer, replies being read meanwhile (the
  // watch reads them as they come).
  #flushLater(): void {
    if (this.#flushTimer !== null) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      if (this.#conn === null) return;
      try {
        if (!this.#flushNow()) this.#flushLater();
      } catch (error) {
        this.#lost(error);
      }
    }, 1);
  }

  /** For a Sync call: flushes the outbox, reading replies while the socket has no room. */
  #flushSync(): void {
    const reader = this.#reader as FrameReader;
    while (!this.#flushNow()) {
      for (let m = reader.next(); m !== NONE; m = reader.next()) this.#dispatch(m);
      if (!reader.fill(0)) native.connPoll(this.#fd, 1);
    }
  }

  connectSync(): void {
    if (this.#conn !== null) return;
    let conn: Connection;
    try {
      conn = dialSync(this.address, this.#authkey);
    } catch (error) {
      throw this.#unreachable(error);
    }
    const reader = new FrameReader(conn.fileno(), Infinity, false);
    this.#greeted(conn, reader, () => {
      let message = reader.next();
      while (message === NONE) {
        reader.fill(-1);
        message = reader.next();
      }
      return message;
    });
  }

  /** Closes this process's connection; later calls fail with `failure`. */
  close(failure: ManagerError): void {
    if (this.#failure === null) this.#failure = failure;
    const pending = [...this.#pending.values()];
    if (this.#watching) unwatchFd(this.#fd);
    this.#drop();
    for (const p of pending) p.reject(this.#failure);
  }

  /**
   * In a forked child: the parent's descriptor is let go without a word to
   * the server, and its pending calls, which are the parent's, are forgotten.
   */
  forget(): void {
    this.#drop();
  }

  #drop(): void {
    this.#pending.clear();
    this.#outbox.length = 0;
    if (this.#flushTimer !== null) clearTimeout(this.#flushTimer);
    this.#flushTimer = null;
    this.#watching = false;
    if (this.#conn !== null) {
      try {
        this.#conn.close();
      } catch {
        // Closed already.
      }
    }
    this.#conn = null;
    this.#reader = null;
  }

  /** Gives back a reference this process put in transit and nobody adopted. */
  takeBack(id: number): void {
    this.notify(P.ADOPT, id);
    this.notify(P.DECREF, id);
  }

  #connect(): Promise<void> {
    this.#connecting ??= (async () => {
      let conn: Connection;
      try {
        conn = await dial(this.address, this.#authkey);
      } catch (error) {
        throw this.#unreachable(error);
      }
      if (this.#conn !== null) {
        // A Sync call connected meanwhile.
        conn.close();
        return;
      }
      const reader = new FrameReader(conn.fileno(), Infinity, false);
      let greeting: unknown;
      try {
        greeting = await firstMessage(conn.fileno(), reader);
      } catch (error) {
        conn.close();
        throw this.#unreachable(error);
      }
      if (this.#conn !== null) {
        conn.close();
        return;
      }
      this.#greeted(conn, reader, () => greeting);
    })().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  #greeted(conn: Connection, reader: FrameReader, greeting: () => unknown): void {
    let message: unknown;
    try {
      message = greeting();
    } catch (error) {
      conn.close();
      throw this.#unreachable(error);
    }
    if (!Array.isArray(message) || message[1] !== P.GREETING || !Array.isArray(message[2])) {
      conn.close();
      throw new ManagerError('ERR_MANAGER_UNREACHABLE', `the server at ${P.showAddress(this.address)} is not a nodemp manager (its first message was ${inspect(message).slice(0, 100)})`);
    }
    this.#limit = (message[2] as [pid: number, limit: number])[1];
    this.#conn = conn;
    this.#fd = conn.fileno();
    this.#reader = reader;
    this.notify(P.HELLO, selfPid);
  }

  #unreachable(error: unknown): Error {
    if (error instanceof ManagerError || (error instanceof Error && error.name === 'AuthenticationError')) return error;
    const code = (error as { code?: string }).code ?? '';
    // Connected, then cut off before the greeting: the server was there and went away (killed as it accepted).
    if (error instanceof EOFError || code === 'EPIPE' || code === 'ECONNRESET') {
      return new ManagerError(
        'ERR_MANAGER_DEAD',
        `the manager at ${P.showAddress(this.address)} closed the connection before it greeted this process: it was shut down or died`,
        { cause: error },
      );
    }
    const why = code === 'ECONNREFUSED' || code === 'ENOENT' ? 'no server listens there' : (error as Error).message;
    return new ManagerError('ERR_MANAGER_UNREACHABLE', `cannot reach the manager at ${P.showAddress(this.address)}: ${why}`, { cause: error });
  }

  #check(): void {
    if (this.#failure !== null) throw this.#failure;
  }

  // The server's own process would wait for itself: it serves from the event loop this thread would block.
  #notSelf(): void {
    if (runningServerAt(this.address) !== null) {
      throw new ManagerError('ERR_MANAGER_STATE', `the process that runs the manager server at ${P.showAddress(this.address)} cannot wait for it with a Sync call; use the Promise form`);
    }
  }

  #send(message: unknown[]): void {
    // The proxies in the message put a reference in transit as it is
    // encoded: if it then does not go, they are taken back.
    const sent: Array<() => void> = [];
    sending = sent;
    let frame: Buffer;
    try {
      frame = frameOf(message);
      const length = frame.length - (frame.readUInt32LE(1) === 0xffffffff ? 13 : 5);
      if (length > this.#limit) {
        throw new ManagerError('ERR_MESSAGE_TOO_LONG', `a request of ${length} bytes, over the server's limit of ${this.#limit} bytes (its maxMessageBytes)`);
      }
    } catch (error) {
      for (const undo of sent) undo();
      throw error;
    } finally {
      sending = null;
    }
    try {
      this.#write(frame);
    } catch (error) {
      this.#lost(error);
      throw this.#failure;
    }
  }

  #drain(): void {
    while (this.#reader !== null) {
      let message: unknown;
      try {
        message = this.#reader.next();
        if (message === NONE && this.#reader.fill(0)) message = this.#reader.next();
      } catch (error) {
        this.#lost(error);
        return;
      }
      if (message === NONE) break;
      this.#dispatch(message);
    }
    if (this.#pending.size === 0 && this.#watching) {
      unwatchFd(this.#fd);
      this.#watching = false;
    }
  }

  #dispatch(message: unknown): void {
    if (!Array.isArray(message)) return;
    const [id, kind, value] = message as [number, number, unknown];
    if (id === 0) {
      // The server's word to this whole connection: it is shutting down.
      if (kind === P.FAILED && value instanceof ManagerError && value.code === 'ERR_MANAGER_SHUT_DOWN') this.#failure ??= value;
      return;
    }
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    try {
      pending.resolve(this.#result(message));
    } catch (error) {
      pending.reject(error);
    }
  }

  #result(message: unknown[]): unknown {
    const [, kind, value] = message as [number, number, unknown];
    if (kind === P.OK) return value;
    if (kind === P.PROXY) {
      const [typeid, id, exposed] = value as P.WireToken;
      return proxyFor({ typeid, address: this.address, id, exposed }, this.#authkey, HELD);
    }
    throw value instanceof Error ? value : new ManagerError('ERR_BAD_REQUEST', `the server failed: ${inspect(value)}`);
  }

  #lost(error: unknown): void {
    if (this.#failure === null) {
      const why = error instanceof EOFError ? 'closed the connection' : error instanceof OSError ? `broke the connection (${error.code})` : String(error);
      this.#failure = new ManagerError(
        'ERR_MANAGER_DEAD',
        `the manager at ${P.showAddress(this.address)} ${why}: it was shut down or died, and the objects it held are gone`,
        { cause: error },
      );
    }
    this.close(this.#failure);
  }
}

/**
 * The server gives up on a client that has not finished the handshake within
 * its handshakeTimeout, and says so. A client that was only late (stopped
 * for a while, or its event loop held up on a starved machine) connects
 * again rather than fail its call: the server is there. Up to LATE_TRIES
 * connects in all; then the AuthenticationError (timedOut) is the call's.
 */
const LATE_TRIES = 4;

function connectAgain(error: unknown, tries: number): boolean {
  return error instanceof AuthenticationError && error.timedOut && tries < LATE_TRIES;
}

/** ClientSync(), connecting again while the server drops us as late. */
function dialSync(address: Address, authkey: Buffer, tries = 1): Connection {
  try {
    return ClientSync(address, { authkey });
  } catch (error) {
    if (!connectAgain(error, tries)) throw error;
    return dialSync(address, authkey, tries + 1);
  }
}

/** Client(), likewise. */
async function dial(address: Address, authkey: Buffer, tries = 1): Promise<Connection> {
  try {
    return await Client(address, { authkey });
  } catch (error) {
    if (!connectAgain(error, tries)) throw error;
    return dial(address, authkey, tries + 1);
  }
}

/** The first message on a new connection, waiting for it on the event loop. */
async function firstMessage(fd: number, reader: FrameReader): Promise<unknown> {
  for (;;) {
    const message = reader.next();
    if (message !== NONE) return message;
    if (reader.fill(0)) continue;
    await new Promise<void>((resolve) => {
      watchFd(fd, () => {
        unwatchFd(fd);
        resolve();
      });
    });
  }
}

const connections = new Map<string, ManagerConnection>();

/** This process's connection to the server at `address` (made on first use). */
export function connectionTo(address: Address, authkey: Buffer = authkeyFor(address)): ManagerConnection {
  const key = P.addressKey(address);
  let c = connections.get(key);
  if (c === undefined) {
    c = new ManagerConnection(address, authkey);
    connections.set(key, c);
  }
  return c;
}

/** Internal: this process's connection to `address` for a manager started or connected anew: the one there is, or a fresh one if it failed. */
export function resetConnection(address: Address, authkey: Buffer): ManagerConnection {
  const key = P.addressKey(address);
  const existing = connections.get(key);
  // A live one is every manager's and proxy's of that server in this process.
  if (existing !== undefined && existing.failure === null) return existing;
  const c = new ManagerConnection(address, authkey);
  connections.set(key, c);
  return c;
}

// ---- proxies ----

// While ManagerConnection.#send() encodes a request: how to take back the
// references its proxies put in transit, should it not go.
let sending: Array<() => void> | null = null;

// How a proxy got its server reference.
const HELD = 0;
const IN_TRANSIT = 1;

interface Holding {
  readonly address: Address;
  readonly id: number;
  // The process whose reference this is (a forked child takes its own).
  owner: number;
  // A reference of this process's own server (no connection).
  local: boolean;
  // Still in transit: not yet adopted.
  transit: boolean;
}

const held = new FinalizationRegistry<Holding>((h) => {
  live.delete(h);
  if (h.owner !== selfPid) return;
  if (h.local) {
    runningServerAt(h.address)?.releaseLocal(h.id);
    return;
  }
  const c = connections.get(P.addressKey(h.address));
  if (h.transit) c?.takeBack(h.id);
  else c?.notify(P.DECREF, h.id);
});

// The proxies alive in this process, for a forked child to take references of its own.
const live = new Map<Holding, WeakRef<BaseProxy>>();

/**
 * A handle on an object a manager's server holds (Python's BaseProxy). Call
 * its methods with callMethod() / callMethodSync(); the proxy classes of the
 * built-in types, and AutoProxy classes of registered ones, name them.
 * Proxies cross to other processes in a Process's args, a Queue, a Pipe,
 * and inside a manager's own objects.
 */
export class BaseProxy {
  readonly #token: P.Token;
  readonly #authkey: Buffer;
  readonly #holding: Holding;

  /** Internal: proxies are made by a manager, or arrive in messages. */
  constructor(token: P.Token, authkey: Buffer, how: number) {
    this.#token = token;
    this.#authkey = authkey;
    const server = runningServerAt(token.address);
    const local = server !== null;
    this.#holding = { address: token.address, id: token.id, owner: selfPid, local, transit: how === IN_TRANSIT && !local };
    if (server !== null && how === IN_TRANSIT) server.adoptLocal(token.id);
    if (server !== null && how === HELD) {
      // A reply over this process's connection to its own server: the
      // reference moves from the connection to the process itself.
      server.holdLocal(token.id);
      connectionTo(token.address).notify(P.DECREF, token.id);
    }
    held.register(this, this.#holding);
    live.set(this.#holding, new WeakRef(this));
    if (this.#holding.transit) {
      queueMicrotask(() => {
        try {
          this.#adopt();
        } catch {
          // The server is gone or refuses this process: its calls will say so.
        }
      });
    }
  }

  /** Which server, which object there, what it exposes. */
  get token(): P.Token {
    return this.#token;
  }

  /** Calls `method` of the object on the server; resolves with its result (a proxy for a method that returns one). */
  callMethod(method: string, args: unknown[] = []): Promise<unknown> {
    if (this.#holding.local) return Promise.resolve().then(() => this.#callLocal(method, args));
    try {
      this.#adopt();
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#connection().call(P.CALL, [this.#token.id, method, args]);
  }

  /** callMethod() that blocks this thread until the server answers. */
  callMethodSync(method: string, args: unknown[] = []): unknown {
    if (this.#holding.local) {
      const result = this.#callLocal(method, args);
      if (result instanceof Promise) {
        throw new ManagerError('ERR_MANAGER_STATE', `${this.#token.typeid}.${method}: the server's own process cannot wait for its objects with a Sync call; use ${method}()`);
      }
      return result;
    }
    this.#adopt();
    return this.#connection().callSync(P.CALL, [this.#token.id, method, args]);
  }

  /** Internal: for a forked child, a reference of its own. */
  static takeOver(proxy: BaseProxy): void {
    const h = proxy.#holding;
    if (h.owner === selfPid) return;
    h.owner = selfPid;
    // The parent's reference (held, local to its server, or still in transit:
    // the parent adopts that one itself) stays the parent's; the child takes
    // one of its own over its own connection.
    h.local = false;
    h.transit = false;
    const c = proxy.#connection();
    try {
      c.connectSync();
    } catch {
      // The server is gone: calls will say so.
      return;
    }
    c.notify(P.INCREF, h.id);
  }

  /** Internal: the by-name crossing's text, with a reference put in transit for the receiver. */
  static sent(proxy: BaseProxy): string {
    const h = proxy.#holding;
    if (h.local) {
      const server = runningServerAt(h.address);
      server?.inTransit(h.id);
      sending?.push(() => {
        server?.adoptLocal(h.id);
        server?.releaseLocal(h.id);
      });
    } else {
      const c = proxy.#connection();
      if (c.failure === null) {
        try {
          c.connectSync();
        } catch {
          // The server is gone: the receiver's calls will say so.
        }
        c.notify(P.SEND, h.id);
        sending?.push(() => c.takeBack(h.id));
      }
    }
    return P.tokenText(proxy.#token);
  }

  #callLocal(method: string, args: unknown[]): unknown {
    const server = runningServerAt(this.#token.address);
    if (server === null) throw new ManagerError('ERR_MANAGER_SHUT_DOWN', 'the manager server of this process was shut down');
    return server.callLocal(this.#token.id, method, args);
  }

  // This process's connection to the server, looked up once per process.
  #conn: ManagerConnection | null = null;

  #connection(): ManagerConnection {
    const c = this.#conn;
    if (c !== null && c.owner === selfPid) return c;
    return (this.#conn = connectionTo(this.#token.address, this.#authkey));
  }

  #adopt(): void {
    const h = this.#holding;
    if (!h.transit) return;
    const c = this.#connection();
    if (c.failure !== null) throw c.failure;
    c.connectSync();
    h.transit = false;
    c.notify(P.ADOPT, h.id);
  }

  [inspect.custom](): string {
    return this.toString();
  }

  toString(): string {
    return `<${this.constructor.name} ${this.#token.typeid} #${this.#token.id} at ${P.showAddress(this.#token.address)}>`;
  }
}

// The forked child's copies of its parent's proxies: each gets a reference
// of the child's own before the parent can drop its copy (as Python's
// BaseProxy._after_fork), and the parent's connections are let go.
onChildStart((function dropParentConnections() {
  for (const [key, c] of connections) {
    if (c.owner === selfPid) continue;
    c.forget();
    connections.delete(key);
  }
  for (const [h, ref] of live) {
    const proxy = ref.deref();
    if (proxy === undefined) live.delete(h);
    else BaseProxy.takeOver(proxy);
  }
}));

/** Proxy classes by typeid, for proxies that arrive in messages (BaseManager.register() adds to it). */
export const proxyTypes = new Map<string, new (token: P.Token, authkey: Buffer, how: number) => BaseProxy>();

/** A proxy of the class its typeid is registered with, or an AutoProxy of its exposed methods. */
export function proxyFor(token: P.Token, authkey: Buffer, how: number): BaseProxy {
  const Class = proxyTypes.get(token.typeid) ?? autoProxyClass(token.typeid, token.exposed);
  return new Class(token, authkey, how);
}

const autoClasses = new Map<string, new (token: P.Token, authkey: Buffer, how: number) => BaseProxy>();

/**
 * Python's AutoProxy: a proxy class with `name()` (a Promise) and
 * `nameSync()` for each exposed method name.
 */
export function autoProxyClass(typeid: string, exposed: readonly string[]): new (token: P.Token, authkey: Buffer, how: number) => BaseProxy {
  const key = JSON.stringify([typeid, exposed]);
  let Class = autoClasses.get(key);
  if (Class === undefined) {
    Class = { [`AutoProxy[${typeid}]`]: class extends BaseProxy {} }[`AutoProxy[${typeid}]`] as typeof BaseProxy;
    definePairs(Class, exposed);
    autoClasses.set(key, Class);
  }
  return Class;
}

const reserved = new Set(['constructor', 'token', 'callMethod', 'callMethodSync', 'toString']);

/** Defines `name(...args)` and `nameSync(...args)` on Class's prototype for each method not defined there already. */
export function definePairs(Class: { prototype: object }, names: readonly string[]): void {
  const proto = Class.prototype as Record<string, unknown>;
  for (const name of names) {
    if (reserved.has(name)) continue;
    defineMethod(proto, name, function (this: BaseProxy, ...args: unknown[]) {
      return this.callMethod(name, args);
    });
    defineMethod(proto, `${name}Sync`, function (this: BaseProxy, ...args: unknown[]) {
      return this.callMethodSync(name, args);
    });
  }
}

/** Defines `fn` as the method `name` of `proto`, unless `proto` has one of its own. */
export function defineMethod(proto: Record<string, unknown>, name: string, fn: Function): void {
  if (Object.hasOwn(proto, name)) return;
  Object.defineProperty(fn, 'name', { value: name });
  Object.defineProperty(proto, name, { value: fn, writable: true, configurable: true });
}

sharedByName(
  BaseProxy,
  (proxy) => BaseProxy.sent(proxy),
  (text) => {
    const token = P.parseToken(text);
    const server = runningServerAt(token.address);
    // A server does not reach out to addresses its clients name.
    if (decodingUntrusted() && server === null) {
      throw new ManagerError('ERR_BAD_REQUEST', `a proxy of another server (${P.showAddress(token.address)}) cannot be sent to this one`);
    }
    server?.objectOf(token.id);
    return proxyFor(token, authkeyFor(token.address), IN_TRANSIT);
  },
  true,
);

