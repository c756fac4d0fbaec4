// How each of nodemp's objects crosses to another process in a message (a
// Queue, a Pipe, a Pool's arguments and results): see "nodemp's own objects
// in a message" in codec.ts. One table, so that a new class is added here.
import { sharedByInheritance, sharedByName } from './codec.js';
import { Lock, RLock } from './lock.js';
import { Semaphore } from './semaphore.js';
import { Event } from './event.js';
import { Condition } from './condition.js';
import { Barrier } from './barrier.js';
import { RawArray, RawValue } from './value.js';
import { Queue, SimpleQueue } from './queue.js';
import { Connection } from './connection.js';
import { Process } from './process.js';
import { AsyncResult, Pool } from './pool.js';
import { SharedMemory } from './shared-memory.js';
import { ShareableList } from './shareable-list.js';

// Subclasses (BoundedSemaphore, Value, Array, JoinableQueue, a Process
// subclass) inherit the mark from these prototypes.
sharedByInheritance(Lock, RLock, Semaphore, Event, Condition, Barrier, RawValue, RawArray, Queue, SimpleQueue, Connection, Process, Pool, AsyncResult);

sharedByName(SharedMemory, (shm) => shm.name, (name) => new SharedMemory({ name }));
sharedByName(ShareableList, (list) => list.shm.name, (name) => new ShareableList(null, { name }));
