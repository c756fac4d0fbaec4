// How each of nodemp's objects crosses to another process: in a message (a
// Queue, a Pipe, a Pool's arguments and results; see "nodemp's own objects in
// a message" in codec.ts), and to a child started by spawn or forkserver
// (lib/start/descriptors.ts). One table, so that a new class is added here.
import { sharedByInheritance, sharedByName } from './codec.js';
import { Lock, RLock } from './lock.js';
import { BoundedSemaphore, Semaphore } from './semaphore.js';
import { Event } from './event.js';
import { Condition } from './condition.js';
import { Barrier } from './barrier.js';
import { RawArray, RawValue, SharedArray, Value } from './value.js';
import { JoinableQueue, Queue, SimpleQueue } from './queue.js';
import { Connection } from './connection.js';
import { Process } from './process.js';
import { AsyncResult, Pool } from './pool.js';
import { SharedMemory } from './shared-memory.js';
import { ShareableList } from './shareable-list.js';
import type { RebuiltInChild } from './start/handoff.js';

// Shared memory (or a descriptor) that no message can carry: a message
// refuses them, while a starting child is handed them by descriptor, each
// class writing itself down with [toChild] and rebuilt by its static
// [fromParent]. Every class is listed, subclasses too: the child makes an
// object of the class it is told by name, so a user's subclass is refused
// rather than rebuilt as its nodemp parent.
const byDescriptor: RebuiltInChild[] = [
  Lock,
  RLock,
  Semaphore,
  BoundedSemaphore,
  Event,
  Condition,
  Barrier,
  RawValue,
  Value,
  RawArray,
  SharedArray,
  Queue,
  JoinableQueue,
  SimpleQueue,
  Connection,
];

/** The classes a starting child is handed by descriptor, by name. */
export const passedToChild: ReadonlyMap<string, RebuiltInChild> = new Map(byDescriptor.map((Class) => [Class.name, Class]));

// Handles on this process's own children and pool: they cross nowhere.
const ownHandles = [Process, Pool, AsyncResult];
// Subclasses (a Process subclass, a user's Lock subclass) inherit the mark
// from these prototypes.
sharedByInheritance(...byDescriptor, ...ownHandles);

sharedByName(SharedMemory, (shm) => shm.name, (name) => new SharedMemory({ name }));
sharedByName(ShareableList, (list) => list.shm.name, (name) => new ShareableList(null, { name }));
