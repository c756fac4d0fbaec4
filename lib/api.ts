// Everything a context carries (lib/context.ts); lib/index.ts adds the context functions.
import './crossing.js';
import './start/spawn.js';
import './start/forkserver.js';
export { Process, ParentProcess, currentProcess, parentProcess, activeChildren, cpuCount } from './process.js';
export type { ProcessOptions } from './process.js';
export { Lock, RLock } from './lock.js';
export type { Held } from './lock.js';
export { Semaphore, BoundedSemaphore } from './semaphore.js';
export { Event } from './event.js';
export { Condition } from './condition.js';
export { Barrier } from './barrier.js';
export type { BarrierOptions } from './barrier.js';
export { Queue, JoinableQueue, SimpleQueue } from './queue.js';
export type { QueueOptions, PutOptions } from './queue.js';
export type { Serializer } from './codec.js';
export { Value, RawValue, SharedArray, SharedArray as Array, RawArray } from './value.js';
export type { Typecode, ValueOptions } from './value.js';
export type { WaitOptions } from './waiting.js';
export {
  OSError,
  ProcessError,
  ForkSafetyError,
  TimeoutError,
  SyncError,
  BrokenBarrierError,
  FileExistsError,
  FileNotFoundError,
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
} from './errors.js';
export type { ProcessErrorCode, SyncErrorCode, ManagerErrorCode } from './errors.js';
export { isSingleThreaded } from './fork-safety.js';
export { SharedMemory } from './shared-memory.js';
export type { SharedMemoryOptions } from './shared-memory.js';
export { ShareableList } from './shareable-list.js';
export type { ShareableValue, ShareableListOptions } from './shareable-list.js';
export { Pipe, Connection } from './connection.js';
export type { PipeOptions, ConnectionOptions } from './connection.js';
export { Listener, Client, ClientSync } from './listener.js';
export type { Address, Family, ListenerOptions, ClientOptions } from './listener.js';
export { wait, waitSync } from './wait.js';
export { Manager, BaseManager, SyncManager } from './manager/manager.js';
export type { ManagerOptions, RegisterOptions } from './manager/manager.js';
export { BaseProxy } from './manager/proxy.js';
export { Server } from './manager/server.js';
export { Managed } from './manager/referents.js';
export type { Token } from './manager/protocol.js';
export {
  DictProxy,
  ListProxy,
  NamespaceProxy,
  ValueProxy,
  ArrayProxy,
  AcquirerProxy,
  LockProxy,
  RLockProxy,
  SemaphoreProxy,
  ConditionProxy,
  EventProxy,
  BarrierProxy,
  QueueProxy,
  JoinableQueueProxy,
  PoolProxy,
  AsyncResultProxy,
  IteratorProxy,
} from './manager/proxies.js';
export { Pool, AsyncResult } from './pool.js';
export type { PoolOptions, TaskOptions, MapOptions, AsyncOptions } from './pool.js';
export type { Waitable } from './wait.js';
