// BaseManager, SyncManager and Manager(): Python's multiprocessing.managers.
// A manager starts a server process (with the current start method, or the
// one it is given), or connects to a server that runs elsewhere; its typeid
// methods make objects there and return proxies to them.
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inspect } from 'node:util';
import { Pipe, type Connection } from '../connection.js';
import { ManagerError } from '../errors.js';
import type { Address } from '../listener.js';
import { invalidType } from '../args.js';
import { currentProcess, processClassFor, type Process } from '../process.js';
import { checkStartMethod, currentStartMethod, type StartMethod } from '../start/method.js';
import { selfPid } from '../self.js';
import { Server, type ServerOptions, type TypeEntry } from './server.js';
import { BaseProxy, connectionTo, defineMethod, proxyTypes, rememberAuthkey, resetConnection, type ManagerConnection } from './proxy.js';
import type {
  PoolProxy,
  ArrayProxy,
  BarrierProxy,
  ConditionProxy,
  DictProxy,
  EventProxy,
  JoinableQueueProxy,
  ListProxy,
  LockProxy,
  NamespaceProxy,
  QueueProxy,
  RLockProxy,
  SemaphoreProxy,
  ValueProxy,
} from './proxies.js';
import {
  ManagedArray,
  ManagedBarrier,
  ManagedBoundedSemaphore,
  ManagedCondition,
  ManagedDict,
  ManagedEvent,
  ManagedJoinableQueue,
  ManagedList,
  ManagedLock,
  ManagedNamespace,
  ManagedQueue,
  ManagedRLock,
  ManagedSemaphore,
  ManagedValue,
} from './referents.js';
import { ManagedIterator, ManagedPool, allowModules, asyncResultExposed } from './pool.js';
import * as P from './protocol.js';

type ProxyClass = new (token: P.Token, authkey: Buffer, how: number) => BaseProxy;

export interface RegisterOptions {
  /** The methods proxies may call; by default every public method of the object (names not starting with '_'). */
  exposed?: readonly string[] | null;
  /** The proxy class (a BaseProxy subclass); by default an AutoProxy with `m()` and `mSync()` per exposed method. */
  proxytype?: ProxyClass | null;
  /** Methods whose result stays on the server, the caller getting a proxy of the given typeid. */
  methodToTypeid?: Readonly<Record<string, string>> | null;
  /** Whether the manager gets `typeid()` / `typeidSync()` methods making the object (default true). */
  create?: boolean;
}

export interface ManagerOptions extends ServerOptions {
  /** Where the server listens: a Unix socket path, a Linux abstract name ('\0name'), or TCP [host, port] (port 0: a free one). */
  address?: Address | null;
  /** The key clients must prove (default: `currentProcess().authkey`). */
  authkey?: Uint8Array | null;
  /** How start() starts the server process (default: the current start method). */
  startMethod?: StartMethod | null;
  /** Milliseconds shutdown() waits for the server process before it kills it (default 1000). */
  shutdownTimeout?: number;
  /**
   * Modules (paths or file URLs) a manager Pool's tasks may come from,
   * besides the main module of the program that starts the server: the
   * server loads no other module for a client.
   */
  poolModules?: readonly string[];
}

interface Registration extends TypeEntry {
  readonly proxytype: ProxyClass | null;
}

/** What a started server process is given of its manager's registry: the callables travel by reference. */
type TypeSpec = [typeid: string, callable: Function | null, exposed: readonly string[] | null, methodToTypeid: Record<string, string>];

const registries = new WeakMap<Function, Map<string, Registration>>();

function registryOf(Class: Function): Map<string, Registration> {
  let registry = registries.get(Class);
  if (registry === undefined) {
    const parent = Object.getPrototypeOf(Class) as Function;
    registry = new Map(parent !== Function.prototype && parent !== null ? registryOf(parent) : []);
    registries.set(Class, registry);
  }
  return registry;
}

function defaultAddress(): Address {
  const name = `nodemp-manager-${selfPid}-${randomBytes(6).toString('hex')}`;
  // Linux's abstract names leave no file behind, whatever kills the server.
  return process.platform === 'linux' ? `\0${name}` : join(tmpdir(), name);
}

const INITIAL = 0;
const STARTED = 1;
const CONNECTED = 2;
const SHUT_DOWN = 3;
const STATE_NAMES = ['not started', 'started', 'connected', 'shut down'];

/**
 * Python's BaseManager: subclass it and register() types, then start() a
 * server process for them, or connect() to one running elsewhere, or run
 * one in this process with getServer().serveForever().
 */
export class BaseManager {
  readonly #options: ManagerOptions;
  #address: Address;
  readonly #authkey: Buffer;
  #state = INITIAL;
  #process: Process | null = null;
  #ready: Connection | null = null;
  #starting: Promise<void> | null = null;
  #connection: ManagerConnection | null = null;

  constructor(options: ManagerOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw invalidType(`${new.target.name}(options)`, 'an object like { address, authkey, startMethod }', options);
    }
    const { address = null, authkey = null, startMethod = null, maxMessageBytes, handshakeTimeout, shutdownTimeout, poolModules = [] } = options;
    if (!Array.isArray(poolModules) || !poolModules.every((m) => typeof m === 'string')) {
      throw invalidType(`${new.target.name}: options.poolModules`, 'an array of module paths or file URLs', poolModules);
    }
    if (authkey !== null && !(authkey instanceof Uint8Array)) throw invalidType(`${new.target.name}: options.authkey`, 'a Buffer or Uint8Array', authkey);
    if (startMethod !== null) checkStartMethod(startMethod);
    if (maxMessageBytes !== undefined && (!Number.isSafeInteger(maxMessageBytes) || maxMessageBytes < 64)) {
      throw invalidType(`${new.target.name}: options.maxMessageBytes`, 'an integer number of bytes >= 64', maxMessageBytes);
    }
    if (handshakeTimeout !== undefined && !(typeof handshakeTimeout === 'number' && handshakeTimeout >= 0)) {
      throw invalidType(`${new.target.name}: options.handshakeTimeout`, 'a number of milliseconds >= 0', handshakeTimeout);
    }
    if (shutdownTimeout !== undefined && !(typeof shutdownTimeout === 'number' && shutdownTimeout >= 0)) {
      throw invalidType(`${new.target.name}: options.shutdownTimeout`, 'a number of milliseconds >= 0', shutdownTimeout);
    }
    this.#options = options;
    this.#address = address ?? defaultAddress();
    this.#authkey = Buffer.from(authkey ?? currentProcess().authkey);
  }

  /**
   * Registers a type: `callable` (called with `new` if it is a class) makes
   * its objects on the server; the manager gets `typeid()` and
   * `typeidSync()` making one and returning its proxy. A server started by
   * spawn or forkserver gets `callable` by reference: it must be an export
   * of a module, as a Process target must.
   */
  static register(typeid: string, callable: Function | null = null, options: RegisterOptions = {}): void {
    if (typeof typeid !== 'string' || typeid === '' || !/^[A-Za-z_$][\w$]*$/.test(typeid)) {
      throw invalidType(`${this.name}.register(typeid)`, 'a name like an identifier', typeid);
    }
    if (callable !== null && typeof callable !== 'function') throw invalidType(`${this.name}.register(callable)`, 'a function or class, or null', callable);
    if (typeof options !== 'object' || options === null) throw invalidType(`${this.name}.register(options)`, 'an object like { exposed, proxytype, methodToTypeid }', options);
    const { exposed = null, proxytype = null, methodToTypeid = null, create = true } = options;
    if (exposed !== null && (!Array.isArray(exposed) || !exposed.every((m) => typeof m === 'string'))) {
      throw invalidType(`${this.name}.register: options.exposed`, 'an array of method names', exposed);
    }
    if (proxytype !== null && !(typeof proxytype === 'function' && proxytype.prototype instanceof BaseProxy)) {
      throw invalidType(`${this.name}.register: options.proxytype`, 'a subclass of BaseProxy', proxytype);
    }
    if (methodToTypeid !== null && (typeof methodToTypeid !== 'object' || !Object.values(methodToTypeid).every((t) => typeof t === 'string'))) {
      throw invalidType(`${this.name}.register: options.methodToTypeid`, 'an object mapping method names to typeids', methodToTypeid);
    }
    registryOf(this).set(typeid, { typeid, callable, exposed, methodToTypeid: { ...methodToTypeid }, proxytype });
    if (proxytype !== null) proxyTypes.set(typeid, proxytype);
    if (!create) return;
    // Not over a method the class has, its own or inherited (SyncManager's typed ones, create()...).
    const proto = this.prototype as unknown as Record<string, unknown>;
    if (!(typeid in proto)) {
      defineMethod(proto, typeid, function (this: BaseManager, ...args: unknown[]) {
        return this.create(typeid, args);
      });
    }
    if (!(`${typeid}Sync` in proto)) {
      defineMethod(proto, `${typeid}Sync`, function (this: BaseManager, ...args: unknown[]) {
        return this.createSync(typeid, args);
      });
    }
  }

  /** Where the server listens (for TCP port 0, the port it got once started). */
  get address(): Address {
    return Array.isArray(this.#address) ? [this.#address[0], this.#address[1]] : this.#address;
  }

  /** The key (a copy). */
  get authkey(): Buffer {
    return Buffer.from(this.#authkey);
  }

  /** The server process start() made, or null. */
  get process(): Process | null {
    return this.#process;
  }

  /**
   * Starts the server process and resolves once it listens. The manager's
   * methods may be called at once: they wait for it. On a manager already
   * started (as Manager() returns them) it only waits (Python raises).
   */
  start(): Promise<void> {
    try {
      if (this.#state !== STARTED) this.#launch('start');
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#whenReady();
  }

  /** start() that blocks this thread until the server listens. */
  startSync(): void {
    if (this.#state !== STARTED) this.#launch('startSync');
    this.#readySync();
  }

  /** Checks that a server answers at `address` with this authkey (Python's connect()). */
  async connect(): Promise<void> {
    const conn = this.#beginConnect('connect');
    await conn.call(P.INFO, []);
    this.#connected(conn);
  }

  connectSync(): void {
    const conn = this.#beginConnect('connectSync');
    conn.callSync(P.INFO, []);
    this.#connected(conn);
  }

  /**
   * A Server for this manager's types, to run in this process:
   * `await manager.getServer().serveForever()`.
   */
  getServer(): Server {
    if (this.#state !== INITIAL) throw new ManagerError('ERR_MANAGER_STATE', 'getServer(): the manager has already been started or connected');
    allowModules(this.#poolModules(null));
    return new Server(registryOf(this.constructor), this.#address, this.#authkey, this.#serverOptions());
  }

  /** Makes an object of `typeid` on the server; resolves with its proxy. */
  async create(typeid: string, args: unknown[] = []): Promise<BaseProxy> {
    await this.#whenReady();
    return (await this.#conn().call(P.CREATE, [typeid, args])) as BaseProxy;
  }

  createSync(typeid: string, args: unknown[] = []): BaseProxy {
    this.#readySync();
    return this.#conn().callSync(P.CREATE, [typeid, args]) as BaseProxy;
  }

  /** How many objects the server holds (for tests and monitoring). */
  async numberOfObjects(): Promise<number> {
    await this.#whenReady();
    return ((await this.#conn().call(P.INFO, [])) as { objects: number }).objects;
  }

  numberOfObjectsSync(): number {
    this.#readySync();
    return (this.#conn().callSync(P.INFO, []) as { objects: number }).objects;
  }

  /**
   * Stops the server process start() made (asking it, then killing it after
   * `shutdownTimeout`); every proxy call after it fails with ManagerError
   * ERR_MANAGER_SHUT_DOWN (other processes' calls: ERR_MANAGER_SHUT_DOWN or
   * ERR_MANAGER_DEAD). A connected manager leaves the server and the
   * proxies already made as they are. Twice does nothing.
   */
  async shutdown(): Promise<void> {
    const proc = this.#beginShutdown();
    if (proc === null) return;
    await proc.join(this.#options.shutdownTimeout ?? 1000);
    if (proc.exitCode === null) {
      proc.kill();
      await proc.join();
    }
  }

  shutdownSync(): void {
    const proc = this.#beginShutdown();
    if (proc === null) return;
    proc.joinSync(this.#options.shutdownTimeout ?? 1000);
    if (proc.exitCode === null) {
      proc.kill();
      proc.joinSync();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  [Symbol.dispose](): void {
    this.shutdownSync();
  }

  [inspect.custom](): string {
    return `<${this.constructor.name} ${P.showAddress(this.#address)} ${STATE_NAMES[this.#state]}${this.#process?.pid ? ` pid=${this.#process.pid}` : ''}>`;
  }

  /**
   * The modules a Pool task may come from: the options', and this program's
   * main module for a server started by spawn or forkserver, which imports it
   * afresh. A forked server (or one in this process) cannot import it: its
   * copy of the main module is still evaluating, and would never finish.
   */
  #poolModules(method: StartMethod | null): string[] {
    const main = process.argv[1];
    const withMain = method !== null && method !== 'fork' && main !== undefined && main !== '';
    return [...(withMain ? [resolve(main)] : []), ...(this.#options.poolModules ?? [])];
  }

  #serverOptions(): ServerOptions {
    const { maxMessageBytes, handshakeTimeout } = this.#options;
    return { maxMessageBytes, handshakeTimeout };
  }

  #launch(method: string): void {
    if (this.#state !== INITIAL) throw new ManagerError('ERR_MANAGER_STATE', `${method}(): the manager has already been ${STATE_NAMES[this.#state]}`);
    const startMethod = this.#options.startMethod ?? currentStartMethod();
    const specs: TypeSpec[] = [...registryOf(this.constructor).values()].map((r) => [r.typeid, r.callable, r.exposed, { ...r.methodToTypeid }]);
    const [reader, writer] = Pipe({ duplex: false });
    const Class = processClassFor(startMethod);
    const proc: Process = new Class({
      target: serveManager as (...args: unknown[]) => Promise<void>,
      args: [specs, this.#address, this.#authkey, this.#serverOptions(), this.#poolModules(startMethod), writer] as unknown[],
      name: `${this.constructor.name}-${currentProcess().name}`,
      // It dies with this process, and does not keep its event loop alive.
      daemon: true,
    });
    try {
      proc.start();
    } finally {
      writer.close();
    }
    this.#process = proc;
    this.#ready = reader;
    this.#state = STARTED;
  }

  // Connected, or started and its server has reported that it listens.
  get #isReady(): boolean {
    return this.#state === CONNECTED || (this.#state === STARTED && this.#ready === null);
  }

  #whenReady(): Promise<void> {
    if (this.#isReady) return Promise.resolve();
    if (this.#state !== STARTED) return Promise.reject(this.#notRunning());
    this.#starting ??= (this.#ready as Connection).recv().then(
      (report) => this.#started(report),
      (error: unknown) => {
        throw this.#failedToStart(error);
      },
    );
    return this.#starting;
  }

  #readySync(): void {
    if (this.#isReady) return;
    if (this.#state !== STARTED) throw this.#notRunning();
    let report: unknown;
    try {
      report = (this.#ready as Connection).recvSync();
    } catch (error) {
      throw this.#failedToStart(error);
    }
    this.#started(report);
  }

  #started(report: unknown): void {
    if (this.#ready === null) return;
    this.#ready.close();
    this.#ready = null;
    const [address, error] = report as [Address | null, Error | null];
    if (error !== null) {
      this.#state = SHUT_DOWN;
      throw error;
    }
    this.#address = address as Address;
    rememberAuthkey(this.#address, this.#authkey);
    this.#connection = resetConnection(this.#address, this.#authkey);
  }

  #failedToStart(error: unknown): ManagerError {
    this.#ready?.close();
    this.#ready = null;
    this.#state = SHUT_DOWN;
    const proc = this.#process as Process;
    proc.joinSync(1000);
    return new ManagerError('ERR_MANAGER_DEAD', `the manager's server process (pid ${proc.pid}) ended before it listened, exit code ${proc.exitCode}`, { cause: error });
  }

  // A connect() that fails leaves the manager as it was, to be tried again.
  #beginConnect(method: string): ManagerConnection {
    if (this.#state !== INITIAL) throw new ManagerError('ERR_MANAGER_STATE', `${method}(): the manager has already been started or connected`);
    return resetConnection(this.#address, this.#authkey);
  }

  #connected(conn: ManagerConnection): void {
    if (this.#state !== INITIAL) throw new ManagerError('ERR_MANAGER_STATE', 'connect(): the manager was started or connected meanwhile');
    this.#state = CONNECTED;
    rememberAuthkey(this.#address, this.#authkey);
    this.#connection = conn;
  }

  #conn(): ManagerConnection {
    return this.#connection ?? connectionTo(this.#address, this.#authkey);
  }

  #notRunning(): ManagerError {
    if (this.#state === INITIAL) return new ManagerError('ERR_MANAGER_STATE', 'the manager is not started: call start() (or connect())');
    return new ManagerError('ERR_MANAGER_SHUT_DOWN', 'the manager was shut down');
  }

  #beginShutdown(): Process | null {
    const state = this.#state;
    if (state === SHUT_DOWN || state === INITIAL) {
      this.#state = SHUT_DOWN;
      return null;
    }
    this.#state = SHUT_DOWN;
    // A connected manager leaves the server, and the connection its proxies use, as they are.
    if (state === CONNECTED) return null;
    const proc = this.#process as Process;
    if (this.#ready === null && this.#connection !== null && this.#connection.connected) {
      // Asked without waiting for an answer: a server that does not stop in time is killed.
      this.#connection.notify(P.SHUTDOWN, 0);
      this.#connection.close(new ManagerError('ERR_MANAGER_SHUT_DOWN', `the manager at ${P.showAddress(this.#address)} was shut down`));
    } else {
      this.#ready?.close();
      this.#ready = null;
      proc.terminate();
    }
    return proc;
  }
}

/**
 * The server process's target: makes the Server, reports its address (or why
 * it could not listen) on `ready`, and serves until shut down.
 */
export async function serveManager(
  specs: TypeSpec[],
  address: Address,
  authkey: Uint8Array,
  options: ServerOptions,
  poolModules: string[],
  ready: Connection,
): Promise<void> {
  // A ^C meant for the program's processes must not take its manager away from them first (as Python's server).
  process.on('SIGINT', () => {});
  // Started as a daemon, so that it dies with its owner; not one from now on, so that a manager Pool may have workers
  // (which die with it in turn).
  currentProcess().daemon = false;
  allowModules(poolModules);
  let server: Server;
  try {
    const registry = new Map<string, TypeEntry>(specs.map(([typeid, callable, exposed, methodToTypeid]) => [typeid, { typeid, callable, exposed, methodToTypeid }]));
    server = new Server(registry, address, authkey, options);
  } catch (error) {
    ready.send([null, error]);
    ready.close();
    return;
  }
  const serving = server.serveForever();
  ready.send([server.address, null]);
  ready.close();
  await serving;
  // Waits of clients now gone may have timers left: they are nobody's.
  process.exit(0);
}

/** Python's SyncManager: a BaseManager with the types of `multiprocessing`. */
export class SyncManager extends BaseManager {
  dict<K = unknown, V = unknown>(init?: Map<K, V> | Record<string, V> | Array<[K, V]>): Promise<DictProxy<K, V>> {
    return this.create('dict', [init]) as Promise<DictProxy<K, V>>;
  }
  dictSync<K = unknown, V = unknown>(init?: Map<K, V> | Record<string, V> | Array<[K, V]>): DictProxy<K, V> {
    return this.createSync('dict', [init]) as DictProxy<K, V>;
  }
  list<T = unknown>(init?: Iterable<T>): Promise<ListProxy<T>> {
    return this.create('list', [init === undefined ? undefined : [...init]]) as Promise<ListProxy<T>>;
  }
  listSync<T = unknown>(init?: Iterable<T>): ListProxy<T> {
    return this.createSync('list', [init === undefined ? undefined : [...init]]) as ListProxy<T>;
  }
  Namespace(init?: Record<string, unknown>): Promise<NamespaceProxy> {
    return this.create('Namespace', [init]) as Promise<NamespaceProxy>;
  }
  NamespaceSync(init?: Record<string, unknown>): NamespaceProxy {
    return this.createSync('Namespace', [init]) as NamespaceProxy;
  }
  Value<T extends number | bigint = number>(typecode: string, value?: T): Promise<ValueProxy<T>> {
    return this.create('Value', [typecode, value]) as Promise<ValueProxy<T>>;
  }
  ValueSync<T extends number | bigint = number>(typecode: string, value?: T): ValueProxy<T> {
    return this.createSync('Value', [typecode, value]) as ValueProxy<T>;
  }
  Array<T extends number | bigint = number>(typecode: string, sizeOrInit: number | Iterable<T>): Promise<ArrayProxy<T>> {
    return this.create('Array', [typecode, typeof sizeOrInit === 'number' ? sizeOrInit : [...sizeOrInit]]) as Promise<ArrayProxy<T>>;
  }
  ArraySync<T extends number | bigint = number>(typecode: string, sizeOrInit: number | Iterable<T>): ArrayProxy<T> {
    return this.createSync('Array', [typecode, typeof sizeOrInit === 'number' ? sizeOrInit : [...sizeOrInit]]) as ArrayProxy<T>;
  }
  Lock(): Promise<LockProxy> {
    return this.create('Lock') as Promise<LockProxy>;
  }
  LockSync(): LockProxy {
    return this.createSync('Lock') as LockProxy;
  }
  RLock(): Promise<RLockProxy> {
    return this.create('RLock') as Promise<RLockProxy>;
  }
  RLockSync(): RLockProxy {
    return this.createSync('RLock') as RLockProxy;
  }
  Semaphore(value = 1): Promise<SemaphoreProxy> {
    return this.create('Semaphore', [value]) as Promise<SemaphoreProxy>;
  }
  SemaphoreSync(value = 1): SemaphoreProxy {
    return this.createSync('Semaphore', [value]) as SemaphoreProxy;
  }
  BoundedSemaphore(value = 1): Promise<SemaphoreProxy> {
    return this.create('BoundedSemaphore', [value]) as Promise<SemaphoreProxy>;
  }
  BoundedSemaphoreSync(value = 1): SemaphoreProxy {
    return this.createSync('BoundedSemaphore', [value]) as SemaphoreProxy;
  }
  Condition(lock?: LockProxy | RLockProxy | null): Promise<ConditionProxy> {
    return this.create('Condition', [lock ?? null]) as Promise<ConditionProxy>;
  }
  ConditionSync(lock?: LockProxy | RLockProxy | null): ConditionProxy {
    return this.createSync('Condition', [lock ?? null]) as ConditionProxy;
  }
  Event(): Promise<EventProxy> {
    return this.create('Event') as Promise<EventProxy>;
  }
  EventSync(): EventProxy {
    return this.createSync('Event') as EventProxy;
  }
  Barrier(parties: number, options?: { timeout?: number | null }): Promise<BarrierProxy> {
    return this.create('Barrier', [parties, options]) as Promise<BarrierProxy>;
  }
  BarrierSync(parties: number, options?: { timeout?: number | null }): BarrierProxy {
    return this.createSync('Barrier', [parties, options]) as BarrierProxy;
  }
  Queue<T = unknown>(maxsize = 0): Promise<QueueProxy<T>> {
    return this.create('Queue', [maxsize]) as Promise<QueueProxy<T>>;
  }
  QueueSync<T = unknown>(maxsize = 0): QueueProxy<T> {
    return this.createSync('Queue', [maxsize]) as QueueProxy<T>;
  }
  JoinableQueue<T = unknown>(maxsize = 0): Promise<JoinableQueueProxy<T>> {
    return this.create('JoinableQueue', [maxsize]) as Promise<JoinableQueueProxy<T>>;
  }
  JoinableQueueSync<T = unknown>(maxsize = 0): JoinableQueueProxy<T> {
    return this.createSync('JoinableQueue', [maxsize]) as JoinableQueueProxy<T>;
  }
  /** A Pool in the server process: `{ processes, maxtasksperchild }`. Its tasks' functions go by reference (see PoolProxy). */
  Pool(options: { processes?: number | null; maxtasksperchild?: number | null } = {}): Promise<PoolProxy> {
    return this.create('Pool', [options]) as Promise<PoolProxy>;
  }
  PoolSync(options: { processes?: number | null; maxtasksperchild?: number | null } = {}): PoolProxy {
    return this.createSync('Pool', [options]) as PoolProxy;
  }
}

for (const [typeid, callable] of [
  ['dict', ManagedDict],
  ['list', ManagedList],
  ['Namespace', ManagedNamespace],
  ['Value', ManagedValue],
  ['Array', ManagedArray],
  ['Lock', ManagedLock],
  ['RLock', ManagedRLock],
  ['Semaphore', ManagedSemaphore],
  ['BoundedSemaphore', ManagedBoundedSemaphore],
  ['Condition', ManagedCondition],
  ['Event', ManagedEvent],
  ['Barrier', ManagedBarrier],
  ['Queue', ManagedQueue],
  ['JoinableQueue', ManagedJoinableQueue],
] as const) {
  SyncManager.register(typeid, callable, { create: false });
}
SyncManager.register('Pool', ManagedPool, { create: false, methodToTypeid: ManagedPool.methodToTypeid });
SyncManager.register('AsyncResult', null, { create: false, exposed: asyncResultExposed });
SyncManager.register('Iterator', ManagedIterator, { create: false });

/**
 * Python's Manager(): a SyncManager, started. Its methods wait for the
 * server to listen, so the first call may take the server's start time.
 */
export function Manager(options: ManagerOptions = {}): SyncManager {
  const manager = new SyncManager(options);
  manager.start().catch(() => {
    // The first call on the manager reports it.
  });
  return manager;
}
