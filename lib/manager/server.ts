// A manager's server: the objects, their reference counts, and one
// event-loop thread serving every client (protocol.ts says what crosses).
// Nothing a client sends is trusted: frames over the limit are refused from
// their header, values are decoded by the msgpack codec only, only registered
// typeids are made and only exposed methods called, and whatever a request
// does wrong is answered with an error while every other client is served.
// Replies go out without waiting: a client that does not read its replies
// has what is left kept for it, and past OUTBOX_HIGH bytes of them is not
// read from until it takes them.
import { inspect } from 'node:util';
import { native } from '../native.js';
import { unwatchFd, watchFd, type Connection } from '../connection.js';
import { Listener, takeClient, type Address } from '../listener.js';
import { EOFError, ManagerError, OSError } from '../errors.js';
import { selfPid } from '../self.js';
import { onChildStart } from '../process.js';
import { FREED, setCaller, type Caller } from './referents.js';
import { FrameReader, NONE, frameOf } from './wire.js';
import { SpinGauge, pollPays } from '../spin.js';
import * as P from './protocol.js';

/** How the server makes the objects of one typeid (BaseManager.register()). */
export interface TypeEntry {
  readonly typeid: string;
  /** Called with `new` if it is a class, else as a function; null: the type can only be returned by methods. */
  readonly callable: Function | null;
  /** The methods clients may call; null: every public method of the object. */
  readonly exposed: readonly string[] | null;
  /** Methods whose result is kept on the server, the caller getting a proxy of this typeid. */
  readonly methodToTypeid: Readonly<Record<string, string>>;
}

interface Entry {
  readonly obj: object;
  readonly typeid: string;
  readonly exposed: ReadonlySet<string>;
  readonly methodToTypeid: Readonly<Record<string, string>>;
  // References: held by open connections (theirs, in their `refs`) and in transit.
  held: number;
  transit: number;
}

class Client implements Caller {
  readonly conn: Connection;
  readonly fd: number;
  readonly reader: FrameReader;
  // Whether looking again for this client's next request pays.
  readonly lookAgain = new SpinGauge();
  pid = 0;
  closed = false;
  readonly onClose = new Set<() => void>();
  readonly refs = new Map<number, number>();
  // Frames not yet taken by the socket, and how much of the first went.
  readonly outbox: Buffer[] = [];
  sent = 0;
  // Bytes in the outbox, and whether the watch is for room to write.
  queued = 0;
  watchingWritable = false;
  constructor(conn: Connection, limit: number) {
    this.conn = conn;
    this.fd = conn.fileno();
    this.reader = new FrameReader(this.fd, limit, true);
  }
}

// The server's own process, as a caller of its objects.
const LOCAL: Caller = {
  get pid() {
    return selfPid;
  },
  onClose: new Set(),
  closed: false,
};

function isClass(fn: Function): boolean {
  return /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

/** Every public method name of `obj`: own and inherited, not the constructor, not Object's, not starting with '_'. */
function publicMethods(obj: object): string[] {
  const names = new Set<string>();
  for (let o: object | null = obj; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (name === 'constructor' || name.startsWith('_')) continue;
      const d = Object.getOwnPropertyDescriptor(o, name);
      if (d !== undefined && typeof d.value === 'function') names.add(name);
    }
  }
  return [...names];
}

export interface ServerOptions {
  /** The longest frame taken from a client, in bytes (default 64 MiB). */
  maxMessageBytes?: number;
  /** Milliseconds a client has to authenticate (default 10 000). */
  handshakeTimeout?: number;
}

// Replies waiting for a client that does not read them: past this many bytes it is not read from either.
const OUTBOX_HIGH = 8 * 1024 * 1024;

// How long a client just served is looked at again for its next request, and how many it may have in a row.
const LOOK_AGAIN_MS = 0.05;
const SERVE_IN_A_ROW = 64;

/** accept()'s failures that last until descriptors or memory are given back, and how long the server waits before it tries again. */
const OUT_OF_RESOURCES = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);
const ACCEPT_RETRY_MS = 100;

// The server of this process, if it runs one: a proxy of its own objects
// decoded here stands for the object itself (proxy.ts asks).
let running: Server | null = null;
// The process that runs it: a forked child has a copy of the object, not the server.
let runningIn = 0;

// A child forked from a server process holds copies of its sockets: they
// would keep the address bound and clients' connections open after the
// server ends. The child lets go of them, saying nothing to anyone.
onChildStart((function forgetParentServer() {
  if (running === null || runningIn === selfPid) return;
  running.forget();
  running = null;
}));

/** Internal: the server this process runs, if any. */
export function runningServer(): Server | null {
  return runningIn === selfPid ? running : null;
}

/** Internal: the server this process runs, if it is the one at `address`. */
export function runningServerAt(address: Address): Server | null {
  const server = runningServer();
  return server !== null && P.addressKey(server.address) === P.addressKey(address) ? server : null;
}

/**
 * The server of a manager (Python's managers.Server): what a manager's
 * process runs, or what getServer() gives to run in this one.
 */
export class Server {
  readonly #listener: Listener;
  readonly #registry: ReadonlyMap<string, TypeEntry>;
  readonly #limit: number;
  readonly #objects = new Map<number, Entry>();
  readonly #clients = new Set<Client>();
  #nextId = 1;
  #serving: Promise<void> | null = null;
  #stop: (() => void) | null = null;
  #stopped = false;

  constructor(registry: ReadonlyMap<string, TypeEntry>, address: Address | null, authkey: Uint8Array, options: ServerOptions = {}) {
    this.#registry = registry;
    this.#limit = options.maxMessageBytes ?? P.DEFAULT_MAX_MESSAGE_BYTES;
    this.#listener = new Listener(address, { authkey, backlog: 128, handshakeTimeout: options.handshakeTimeout ?? 10_000 });
  }

  /** Where clients connect: for TCP with port 0, the port it got. */
  get address(): Address {
    return this.#listener.address;
  }

  /**
   * Serves clients until shutdown() (or a client's shutdown request);
   * resolves then. The event loop keeps running meanwhile: the server is
   * served from it, so there is no blocking form.
   */
  serveForever(): Promise<void> {
    if (this.#serving !== null) return this.#serving;
    if (this.#stopped) return Promise.reject(new ManagerError('ERR_MANAGER_STATE', 'serveForever(): the server was shut down'));
    running = this;
    runningIn = selfPid;
    this.#serving = new Promise<void>((resolve) => {
      this.#stop = resolve;
    });
    this.#acceptNext();
    return this.#serving;
  }

  /** Stops serving: closes the listener and every client's connection, drops every object. */
  shutdown(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#listener.close();
    const notice = new ManagerError('ERR_MANAGER_SHUT_DOWN', `the manager at ${P.showAddress(this.address)} was shut down`);
    for (const client of [...this.#clients]) {
      this.#reply(client, [0, P.FAILED, notice]);
      this.#close(client);
    }
    for (const entry of this.#objects.values()) freed(entry.obj);
    this.#objects.clear();
    if (running === this) running = null;
    this.#stop?.();
  }

  /** In a forked child: closes this process's copies of the server's sockets. */
  forget(): void {
    this.#stopped = true;
    this.#listener.close();
    for (const client of this.#clients) {
      client.closed = true;
      client.conn.close();
    }
    this.#clients.clear();
  }

  [inspect.custom](): string {
    return `<Server ${P.showAddress(this.address)} objects=${this.#objects.size} clients=${this.#clients.size}${this.#stopped ? ' shut down' : ''}>`;
  }

  // ---- objects and references, also for proxies decoded in this process ----

  /** The object `id` names, or a ManagerError. */
  objectOf(id: number): object {
    return this.#entry(id).obj;
  }

  /** A reference taken by this process itself (a proxy decoded here): from transit to held by the server. */
  adoptLocal(id: number): void {
    const entry = this.#objects.get(id);
    if (entry === undefined) return;
    entry.transit -= 1;
    entry.held += 1;
  }

  /** A reference this process got over its own connection to itself, moved to the process itself (the connection gives its own back). */
  holdLocal(id: number): void {
    const entry = this.#objects.get(id);
    if (entry !== undefined) entry.held += 1;
  }

  /** One of this process's own references dropped. */
  releaseLocal(id: number): void {
    const entry = this.#objects.get(id);
    if (entry === undefined) return;
    entry.held -= 1;
    this.#maybeFree(id, entry);
  }

  /** An object of this server put into a message (here, or by a client's SEND): in transit until a receiver adopts it. */
  inTransit(id: number): void {
    const entry = this.#objects.get(id);
    if (entry !== undefined) entry.transit += 1;
  }

  /**
   * A proxy's call made in this process, which runs the server: straight to
   * the object, as this process (which never closes). Returns what the
   * method returns, a Promise for one that waits.
   */
  callLocal(id: number, method: string, args: unknown[]): unknown {
    const entry = this.#entry(id);
    const fn = methodOf(entry, method);
    setCaller(LOCAL);
    return fn.apply(entry.obj, args);
  }

  #entry(id: number): Entry {
    const entry = this.#objects.get(id);
    if (entry === undefined) throw new ManagerError('ERR_OBJECT_GONE', `no object with id ${id} on the server: its last proxy was dropped, or it never existed`);
    return entry;
  }

  #maybeFree(id: number, entry: Entry): void {
    if (entry.held + entry.transit > 0) return;
    this.#objects.delete(id);
    freed(entry.obj);
  }

  /** Keeps `obj` as a new object of `typeid`, with one reference held by `client`. */
  #keep(client: Client, typeid: string, obj: unknown): P.WireToken {
    const type = this.#registry.get(typeid);
    if (type === undefined) throw new ManagerError('ERR_UNKNOWN_TYPEID', `no type is registered as ${JSON.stringify(typeid)}`);
    if (typeof obj !== 'object' && typeof obj !== 'function') {
      throw new ManagerError('ERR_BAD_REQUEST', `${typeid}: what its callable returned is not an object (got ${inspect(obj)})`);
    }
    const target = obj as object;
    const exposed = type.exposed ?? (target.constructor as { exposed?: string[] }).exposed ?? publicMethods(target);
    const id = this.#nextId++;
    this.#objects.set(id, { obj: target, typeid, exposed: new Set(exposed), methodToTypeid: type.methodToTypeid, held: 0, transit: 0 });
    this.#incref(client, id);
    return [typeid, id, [...exposed]];
  }

  #incref(client: Client, id: number): void {
    const entry = this.#entry(id);
    entry.held += 1;
    client.refs.set(id, (client.refs.get(id) ?? 0) + 1);
  }

  #decref(client: Client, id: number): void {
    const mine = client.refs.get(id) ?? 0;
    const entry = this.#objects.get(id);
    if (mine === 0 || entry === undefined) return;
    if (mine === 1) client.refs.delete(id);
    else client.refs.set(id, mine - 1);
    entry.held -= 1;
    this.#maybeFree(id, entry);
  }

  // ---- clients ----

  // Each client is taken as it comes and authenticated on its own, so that
  // clients slow to authenticate (or silent ones) hold up nobody else.
  #acceptNext(): void {
    if (this.#stopped) return;
    takeClient(this.#listener).then(
      (authenticate) => {
        this.#acceptNext();
        authenticate().then(
          (conn) => this.#welcome(conn),
          () => {
            // Refused (it was told), silent past the handshake timeout, or gone.
          },
        );
      },
      (error: unknown) => {
        // Out of descriptors or memory, accept() fails at once, and again
        // while the client waits in the backlog: trying again from this
        // microtask would spin without the event loop ever serving anyone
        // (the clients already connected included), so the next try waits.
        if (error instanceof OSError && OUT_OF_RESOURCES.has(error.code)) {
          setTimeout(() => this.#acceptNext(), ACCEPT_RETRY_MS);
          return;
        }
        // Another failure of one accept() (a client that went away meanwhile):
        // the next one is served. A closed listener ends the loop (#stopped).
        this.#acceptNext();
      },
    );
  }

  #welcome(conn: Connection): void {
    if (this.#stopped) {
      conn.close();
      return;
    }
    const client = new Client(conn, this.#limit);
    this.#clients.add(client);
    watchFd(client.fd, () => this.#readable(client));
    this.#reply(client, [0, P.GREETING, [selfPid, this.#limit]]);
  }

  #readable(client: Client): void {
    let served = 0;
    let idleSince = 0;
    while (!client.closed && client.queued < OUTBOX_HIGH) {
      let request: unknown;
      try {
        request = client.reader.next();
        // Until a whole frame is there, or the socket has nothing more: what
        // is already there (the rest of a frame, the end of the stream) is
        // not left to a next readiness event, which does not come once libuv
        // has stopped the poll handle on POLLERR (a peer that reset the
        // connection: its last bytes and its end would never be read).
        while (request === NONE && client.reader.fill(0)) request = client.reader.next();
      } catch (error) {
        if (error instanceof EOFError || error instanceof OSError) {
          this.#close(client);
          return;
        }
        if (error instanceof ManagerError && error.code === 'ERR_MESSAGE_TOO_LONG') {
          // The rest of that frame cannot be skipped cheaply: the client is told and let go.
          this.#reply(client, [0, P.FAILED, error]);
          this.#close(client);
          return;
        }
        const id = (error as { requestId?: number }).requestId ?? 0;
        this.#reply(client, [id, P.FAILED, badRequest(`a message that could not be decoded: ${(error as Error).message}`)]);
        continue;
      }
      if (request === NONE) {
        // A client in a loop of calls sends its next request within
        // microseconds of its reply: looking again for a moment answers it
        // without a trip through the event loop (its wake-up costs more
        // than the request). At most SERVE_IN_A_ROW in a row, so others wait little.
        if (served === 0 || served >= SERVE_IN_A_ROW) return;
        const now = performance.now();
        if (idleSince === 0) {
          if (!pollPays() || !client.lookAgain.allowed()) return;
          idleSince = now;
        } else if (now - idleSince > LOOK_AGAIN_MS) {
          client.lookAgain.miss();
          return;
        }
        continue;
      }
      if (idleSince !== 0) client.lookAgain.hit();
      idleSince = 0;
      served += 1;
      this.#handle(client, request);
    }
  }

  #handle(client: Client, request: unknown): void {
    if (!Array.isArray(request) || request.length < 2 || !Number.isSafeInteger(request[0]) || request[0] < 0 || typeof request[1] !== 'number') {
      this.#reply(client, [0, P.FAILED, badRequest(`a request must be [id, op, ...operands], got ${preview(request)}`)]);
      return;
    }
    const id = request[0] as number;
    try {
      switch (request[1]) {
        case P.CALL:
          this.#call(client, id, request);
          return;
        case P.CREATE: {
          const [, , typeid, args] = request as [number, number, unknown, unknown];
          if (typeof typeid !== 'string') throw badRequest(`CREATE: a typeid must be a string, got ${preview(typeid)}`);
          const type = this.#registry.get(typeid);
          if (type === undefined || type.callable === null) {
            throw new ManagerError('ERR_UNKNOWN_TYPEID', `no type that clients may create is registered as ${JSON.stringify(typeid)}`);
          }
          const list = argsOf(args);
          setCaller(client);
          const made: unknown = isClass(type.callable) ? Reflect.construct(type.callable, list) : type.callable(...list);
          if (!(made instanceof Promise)) {
            this.#reply(client, [id, P.PROXY, this.#keep(client, typeid, made)]);
            return;
          }
          // An async factory: the object is what it resolves to.
          made.then(
            (obj: unknown) => this.#settle(client, id, () => [id, P.PROXY, this.#keep(client, typeid, obj)]),
            (error: unknown) => this.#settle(client, id, () => [id, P.FAILED, error]),
          );
          return;
        }
        case P.INCREF:
          if (this.#objects.has(request[2] as number)) this.#incref(client, request[2] as number);
          return;
        case P.DECREF:
          this.#decref(client, request[2] as number);
          return;
        case P.SEND:
          this.inTransit(request[2] as number);
          return;
        case P.ADOPT: {
          const entry = this.#objects.get(request[2] as number);
          if (entry === undefined) return;
          entry.transit -= 1;
          this.#incref(client, request[2] as number);
          return;
        }
        case P.HELLO:
          if (Number.isSafeInteger(request[2])) client.pid = request[2] as number;
          return;
        case P.INFO:
          this.#reply(client, [id, P.OK, { objects: this.#objects.size, connections: this.#clients.size, pid: selfPid }]);
          return;
        case P.SHUTDOWN:
          this.#reply(client, [id, P.OK, null]);
          this.shutdown();
          return;
        default:
          throw badRequest(`unknown op ${preview(request[1])}`);
      }
    } catch (error) {
      this.#reply(client, [id, P.FAILED, error]);
    }
  }

  #call(client: Client, id: number, request: unknown[]): void {
    const [, , objectId, method, args] = request as [number, number, unknown, unknown, unknown];
    if (!Number.isSafeInteger(objectId)) throw badRequest(`CALL: an object id must be an integer, got ${preview(objectId)}`);
    const entry = this.#entry(objectId as number);
    const fn = methodOf(entry, method);
    const name = method as string;
    const list = argsOf(args);
    setCaller(client);
    const result: unknown = fn.apply(entry.obj, list);
    const typeid = Object.hasOwn(entry.methodToTypeid, name) ? entry.methodToTypeid[name] : undefined;
    if (typeid === undefined && !(result instanceof Promise)) {
      // The common case, answered without a closure.
      if (!this.#reply(client, [id, P.OK, result])) undelivered(entry.obj, name, result);
      return;
    }
    const answer = (value: unknown): void => {
      if (client.closed) {
        undelivered(entry.obj, name, value);
        return;
      }
      if (typeid === undefined) {
        if (!this.#reply(client, [id, P.OK, value])) undelivered(entry.obj, name, value);
      } else {
        this.#reply(client, [id, P.PROXY, this.#keep(client, typeid, value)]);
      }
    };
    if (result instanceof Promise) {
      result.then(
        (value: unknown) => {
          try {
            answer(value);
          } catch (error) {
            this.#settle(client, id, () => [id, P.FAILED, error]);
          }
        },
        (error: unknown) => this.#settle(client, id, () => [id, P.FAILED, error]),
      );
    } else answer(result);
  }

  /**
   * Replies to a call that finished later with what `make` gives. Whatever
   * it throws is the caller's error: an exception must not escape a promise
   * callback here, where it would end the server as an unhandled rejection.
   */
  #settle(client: Client, id: number, make: () => unknown[]): void {
    if (client.closed) return;
    try {
      this.#reply(client, make());
    } catch (error) {
      this.#reply(client, [id, P.FAILED, error]);
    }
  }

  /** Queues one reply and sends what the socket takes now; false if it could not even be encoded. */
  #reply(client: Client, message: unknown[]): boolean {
    if (client.closed) return false;
    let frame: Buffer;
    let encoded = true;
    try {
      frame = frameOf(message);
    } catch (error) {
      // A result the codec cannot copy (a function, a symbol): the caller is told.
      frame = frameOf([message[0], P.FAILED, error]);
      encoded = false;
    }
    client.outbox.push(frame);
    client.queued += frame.length;
    this.#flush(client);
    return encoded && !client.closed;
  }

  #flush(client: Client): void {
    try {
      while (client.outbox.length > 0) {
        const frame = client.outbox[0] as Buffer;
        const n = native.netWrite(client.fd, frame, client.sent, false);
        client.sent += n;
        client.queued -= n;
        if (client.sent < frame.length) break;
        client.outbox.shift();
        client.sent = 0;
      }
    } catch {
      this.#close(client);
      return;
    }
    // While replies wait for room, the watch is for room; the client is read
    // from meanwhile (as it waits for replies it may have more requests to
    // send) until OUTBOX_HIGH bytes of replies wait: then it must take them first.
    const blocked = client.outbox.length > 0;
    if (blocked === client.watchingWritable || client.closed) return;
    client.watchingWritable = blocked;
    if (blocked) watchFd(client.fd, () => this.#flushed(client), true);
    else watchFd(client.fd, () => this.#readable(client));
  }

  #flushed(client: Client): void {
    this.#flush(client);
    if (!client.closed && client.queued < OUTBOX_HIGH) this.#readable(client);
  }

  #close(client: Client): void {
    if (client.closed) return;
    client.closed = true;
    this.#clients.delete(client);
    try {
      unwatchFd(client.fd);
    } catch {
      // Not watched yet.
    }
    client.conn.close();
    for (const [id, count] of client.refs) {
      const entry = this.#objects.get(id);
      if (entry === undefined) continue;
      entry.held -= count;
      this.#maybeFree(id, entry);
    }
    client.refs.clear();
    for (const hook of [...client.onClose]) hook();
    client.onClose.clear();
  }
}

/** The function a client may call as `method` of `entry`'s object, or ERR_NOT_EXPOSED. */
function methodOf(entry: Entry, method: unknown): Function {
  if (typeof method !== 'string' || !entry.exposed.has(method)) {
    throw new ManagerError('ERR_NOT_EXPOSED', `${entry.typeid} has no exposed method ${typeof method === 'string' ? JSON.stringify(method) : preview(method)}`);
  }
  const fn = (entry.obj as Record<string, unknown>)[method];
  if (typeof fn !== 'function') throw new ManagerError('ERR_NOT_EXPOSED', `${entry.typeid}.${method} is not a method`);
  return fn;
}

function badRequest(message: string): ManagerError {
  return new ManagerError('ERR_BAD_REQUEST', message);
}

function argsOf(args: unknown): unknown[] {
  if (args === undefined || args === null) return [];
  if (!Array.isArray(args)) throw badRequest(`arguments must come as an array, got ${preview(args)}`);
  return args;
}

function preview(v: unknown): string {
  try {
    return inspect(v, { depth: 1, maxArrayLength: 5, maxStringLength: 80, breakLength: Infinity });
  } catch {
    // What a client sent may not even be printable (an error whose stack is an
    // object with no usable toString makes inspect() throw); the request is
    // still answered, not dropped with the exception.
    return `a value that cannot be shown (${Array.isArray(v) ? 'an array' : typeof v})`;
  }
}

/** An object the server let go of: one that holds what must be given back (a Pool's workers) says so with [FREED]. */
function freed(obj: object): void {
  const release = (obj as { [FREED]?: () => unknown })[FREED];
  if (typeof release !== 'function') return;
  try {
    const done = release.call(obj);
    if (done instanceof Promise) done.catch(() => {});
  } catch {
    // Its own failure to let go is not the server's.
  }
}

function undelivered(obj: object, method: string, value: unknown): void {
  if (method === 'get' || method === 'getNowait') (obj as { undelivered?: (v: unknown) => void }).undelivered?.(value);
}
