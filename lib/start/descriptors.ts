// What a child started by spawn or forkserver is given (its args, initargs,
// a Process subclass's own fields), and how it gets it back. Such a child
// inherits no memory, so nodemp's shared objects cannot reach it as they
// reach a forked child; they cross by descriptor instead, as Python's do
// while a process is being started (reduction.DupFd): the memory of a Lock
// or a Queue is a memfd (native/shm.cc) that the child maps again, a
// Connection is its socket. Functions cross by reference
// (lib/start/reference.ts). Everything else crosses as the Queue's codec
// carries it. In a Queue or a Pipe these objects are still refused
// (lib/codec.ts): as in Python, only a starting child is handed them.
//
// The parent lists one descriptor per mapping, however many objects live in
// it (Locks share a 64 KiB arena chunk), and the write end of its
// shared-memory tracker's pipe, so that the child shares the tracker as a
// forked child does: a segment the child makes (a large message it puts in a
// Queue) is removed only once the whole family is gone, not when the child
// exits. The caller passes the descriptors to the child (posix_spawn's dup2,
// or SCM_RIGHTS), which hands them to decodeInChild in the same order.
import { closeSync } from 'node:fs';
import { Packr } from 'msgpackr';
import { native } from '../native.js';
import { packForChild, unpackForChild } from '../codec.js';
import { passedToChild } from '../crossing.js';
import { SerializationError } from '../errors.js';
import { loadReference, referenceOf, type FunctionRef } from './reference.js';
import { fromParent, toChild, type ChildDecoder, type ChildEncoder, type PassedToChild, type State } from './handoff.js';

// Changed with the encoding: a child running another nodemp says so.
const FORMAT = 1;

// What each descriptor is.
const MEMORY = 0;
const DESCRIPTOR = 1;
const TRACKER = 2;
type Entry = [typeof MEMORY, size: number] | [typeof DESCRIPTOR] | [typeof TRACKER, pid: number];

// In the payload, a function is [FUNCTION, the index of its reference], a
// shared object [the name of its class, its state].
const FUNCTION = 0;

const envelope = new Packr({ useRecords: false, mapsAsObjects: true });

function article(name: string): string {
  return /^[AEIOU]/.test(name) ? 'an' : 'a';
}

function notPassable(obj: object): SerializationError {
  const name = obj.constructor.name;
  const base = [...passedToChild.values()].find((Class) => Class.prototype.isPrototypeOf(obj));
  if (base !== undefined) {
    return new SerializationError(
      `nodemp: ${article(name)} ${name} (a subclass of ${base.name}) cannot be given to a child started by spawn or forkserver: ` +
        `the child rebuilds nodemp's own classes only. Pass ${article(base.name)} ${base.name}, or start the child with fork`,
    );
  }
  return new SerializationError(
    `nodemp: ${article(name)} ${name} cannot be given to a child process: it is a handle that only this process can use (on a process of its own, or its Pool)`,
  );
}

class Encoding implements ChildEncoder {
  readonly entries: Entry[] = [];
  readonly fds: number[] = [];
  readonly refs: FunctionRef[] = [];
  readonly #memory = new Map<ArrayBuffer, number>();
  readonly #descriptors = new Map<number, number>();
  readonly #functions = new Map<Function, number>();
  // The class whose state is being written, for memory()'s error.
  #writing = '';

  write(obj: object): unknown {
    if (typeof obj === 'function') return [FUNCTION, this.reference(obj, 'function given to a child process')];
    const Class = passedToChild.get(obj.constructor.name);
    if (Class === undefined || Class.prototype !== Object.getPrototypeOf(obj)) throw notPassable(obj);
    // Nested shared objects come back in the state and are written after it.
    this.#writing = Class.name;
    return [Class.name, (obj as PassedToChild)[toChild](this)];
  }

  memory(buffer: ArrayBuffer): number {
    let index = this.#memory.get(buffer);
    if (index === undefined) {
      let fd: number;
      try {
        fd = native.sharedFd(buffer);
      } catch (cause) {
        throw new SerializationError(`nodemp: ${article(this.#writing)} ${this.#writing} cannot be given to a child process: ${(cause as Error).message}`, { cause });
      }
      index = this.#add([MEMORY, buffer.byteLength], fd);
      this.#memory.set(buffer, index);
    }
    return index;
  }

  descriptor(fd: number): number {
    let index = this.#descriptors.get(fd);
    if (index === undefined) {
      index = this.#add([DESCRIPTOR], fd);
      this.#descriptors.set(fd, index);
    }
    return index;
  }

  reference(fn: Function, what: string): number {
    let index = this.#functions.get(fn);
    if (index === undefined) {
      index = this.refs.push(referenceOf(fn, what)) - 1;
      this.#functions.set(fn, index);
    }
    return index;
  }

  tracker(fd: number, pid: number): void {
    this.#add([TRACKER, pid], fd);
  }

  #add(entry: Entry, fd: number): number {
    this.entries.push(entry);
    return this.fds.push(fd) - 1;
  }
}

/**
 * Encodes what a spawned or forkserver child is given (args, initargs, a
 * Process subclass's own fields). `bytes` are a copy, unchanged by later
 * encodes. `fds` are this process's own descriptors, not duplicates: the
 * caller passes them to the child (dup2 in posix_spawn, or SCM_RIGHTS), and
 * they stay open and owned by their objects here. They must stay open until
 * the child has them (dup2 done, or the SCM_RIGHTS message sent), so the
 * objects must be kept alive until then; the child need not have mapped them.
 * One descriptor per mapping, whatever number of objects live in it; the
 * last may be the tracker's pipe (see the header).
 */
export function encodeForChild(value: unknown): { bytes: Uint8Array; fds: number[] } {
  const encoding = new Encoding();
  const body = packForChild(value, (obj) => encoding.write(obj));
  const tracker = native.trackerFd();
  if (tracker >= 0) encoding.tracker(tracker, native.trackerPid());
  const bytes = Buffer.from(envelope.pack([FORMAT, encoding.entries, encoding.refs, body]));
  return { bytes, fds: encoding.fds };
}

class Decoding implements ChildDecoder {
  readonly #entries: readonly Entry[];
  readonly #fds: readonly number[];
  readonly #buffers: ReadonlyArray<ArrayBuffer | undefined>;
  readonly #functions: readonly Function[];
  readonly #taken: boolean[];

  constructor(entries: readonly Entry[], fds: readonly number[], buffers: ReadonlyArray<ArrayBuffer | undefined>, functions: readonly Function[], taken: boolean[]) {
    this.#entries = entries;
    this.#fds = fds;
    this.#buffers = buffers;
    this.#functions = functions;
    this.#taken = taken;
  }

  read(data: unknown): unknown {
    const [kind, x] = data as [string | typeof FUNCTION, unknown];
    if (kind === FUNCTION) return this.reference(x as number);
    const Class = passedToChild.get(kind);
    if (Class === undefined) throw new TypeError(`nodemp: the child was given ${article(String(kind))} ${String(kind)}, which it cannot rebuild`);
    return Class[fromParent](x as State, this);
  }

  memory(index: number): ArrayBuffer {
    const buffer = this.#buffers[index];
    if (buffer === undefined) throw malformed(`descriptor ${index} is not memory`);
    return buffer;
  }

  descriptor(index: number): number {
    if (this.#entries[index]?.[0] !== DESCRIPTOR || this.#taken[index]) throw malformed(`descriptor ${index} is not a connection's, or is taken twice`);
    this.#taken[index] = true;
    return this.#fds[index];
  }

  reference(index: number): Function {
    const fn = this.#functions[index];
    if (fn === undefined) throw malformed(`there is no function ${index}`);
    return fn;
  }
}

function malformed(what: string): TypeError {
  return new TypeError(`nodemp: what the child was given is malformed: ${what}`);
}

/**
 * In the child: the value encodeForChild() encoded, its shared objects over
 * the same memory as the parent's (one object here for each object there).
 * `fds` are the descriptors in the order encodeForChild() listed them, open
 * in this process, which owns them from now on: each is mapped, becomes a
 * Connection's or the tracker's, or is closed, whether or not this throws.
 * Function references are loaded first, so that the rest is synchronous.
 */
export async function decodeInChild(bytes: Uint8Array, fds: number[]): Promise<unknown> {
  const taken = fds.map(() => false);
  try {
    const [format, entries, refs, body] = envelope.unpack(bytes) as [number, Entry[], FunctionRef[], Uint8Array];
    if (format !== FORMAT) {
      throw new TypeError(`nodemp: the child cannot read what its parent encoded (format ${format}, this nodemp reads ${FORMAT}): parent and child must run the same nodemp`);
    }
    if (entries.length !== fds.length) throw malformed(`${fds.length} descriptors were given for ${entries.length}`);
    const functions = await Promise.all(refs.map((ref) => loadReference(ref)));
    // The tracker before any object: a Queue made without one would start its own.
    const buffers: Array<ArrayBuffer | undefined> = [];
    entries.forEach((entry, i) => {
      if (entry[0] !== TRACKER) return;
      taken[i] = true;
      native.trackerAdopt(fds[i], entry[1]);
    });
    entries.forEach((entry, i) => {
      if (entry[0] !== MEMORY) return;
      buffers[i] = native.mapFd(fds[i], entry[1]);
      taken[i] = true;
    });
    const decoding = new Decoding(entries, fds, buffers, functions, taken);
    return unpackForChild(body, (data) => decoding.read(data));
  } finally {
    taken.forEach((owned, i) => {
      if (owned) return;
      try {
        closeSync(fds[i]);
      } catch {
        // Not open after all: nothing to give back.
      }
    });
  }
}
