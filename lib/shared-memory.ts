// Named shared memory, as Python's multiprocessing.shared_memory.SharedMemory.
//
// Ownership: the process that creates a segment owns its name together with
// every process forked from it (at any depth). When all of them have exited,
// normally or by SIGKILL, a tracker process removes the name: it holds the
// read end of a pipe whose write end they all share, and end-of-file means
// they are gone (native/tracker.cc). A process that attaches by name without
// being forked from the creator owns nothing: its exit removes nothing, and
// the creator's side may remove the name while it still has the segment
// mapped (its mapping stays valid; only the name is gone). `track: false`
// opts a new segment out: its name then lasts until someone calls unlink().
import { randomBytes } from 'node:crypto';
import { ClosedError, FileExistsError } from './errors.js';
import { native } from './native.js';

export interface SharedMemoryOptions {
  /** The segment's name, without a leading '/'. Generated when creating without one. */
  name?: string;
  /** True: make a new segment (FileExistsError if the name is taken). False or absent: attach (FileNotFoundError if none). */
  create?: boolean;
  /**
   * Bytes, a positive integer, when creating. Ignored when attaching: the
   * segment's own size is used (on macOS, rounded up to a whole page).
   */
  size?: number;
  /** When creating: remove the name once this process and all processes forked from it have exited. Default true. */
  track?: boolean;
}

function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

// Short: macOS allows 31 bytes, the leading '/' included.
function generatedName(): string {
  return `nodemp_${randomBytes(6).toString('hex')}`;
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new TypeError(`SharedMemory: expected name to be a string, got ${typeof name}`);
  if (name === '' || /[/\n\0]/.test(name)) {
    throw new TypeError(`SharedMemory: expected a non-empty name without '/', newline or NUL, got ${shown(name)}`);
  }
  // Linux's NAME_MAX; macOS stops at 30 and says so itself (ENAMETOOLONG).
  const bytes = Buffer.byteLength(name);
  if (bytes > 255) throw new RangeError(`SharedMemory: expected a name of at most 255 bytes, got ${bytes}`);
}

function checkSize(size: unknown, create: boolean): void {
  if (typeof size !== 'number') throw new TypeError(`SharedMemory: expected size to be a number, got ${typeof size}`);
  const ok = Number.isSafeInteger(size) && (create ? size > 0 : size >= 0);
  if (!ok) throw new RangeError(`SharedMemory: expected size to be a ${create ? 'positive' : 'non-negative'} integer, got ${size}`);
}

function open(name: string | undefined, create: boolean, size: number, track: boolean): { name: string; buffer: ArrayBuffer } {
  if (name !== undefined) return { name, buffer: native.shmOpen(name, create, size, track) };
  for (;;) {
    const generated = generatedName();
    try {
      return { name: generated, buffer: native.shmOpen(generated, true, size, track) };
    } catch (error) {
      // Taken: draw another name, as Python does.
      if (!(error instanceof FileExistsError)) throw error;
    }
  }
}

/**
 * A POSIX shared-memory segment mapped into this process.
 *
 * `buf` is a Buffer over the whole segment. `close()` unmaps this process's
 * view: a Buffer or view taken from `buf` earlier then has length 0, and
 * reading `buf` itself throws a TypeError. Processes forked after the
 * SharedMemory was made inherit the mapping and may close their own view.
 */
export class SharedMemory {
  readonly name: string;
  readonly size: number;
  #buffer: ArrayBuffer;
  #buf: Buffer;
  #closed = false;

  constructor(options: SharedMemoryOptions) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`SharedMemory: expected an options object such as { create: true, size: 1024 } or { name }, got ${shown(options)}`);
    }
    const { name, create = false, size, track = true } = options;
    if (typeof create !== 'boolean') throw new TypeError(`SharedMemory: expected create to be a boolean, got ${typeof create}`);
    if (typeof track !== 'boolean') throw new TypeError(`SharedMemory: expected track to be a boolean, got ${typeof track}`);
    if (name !== undefined) checkName(name);
    else if (!create) throw new TypeError('SharedMemory: expected a name to attach to, or create: true to make a new segment');
    if (create || size !== undefined) checkSize(size, create);

    const { name: opened, buffer } = open(name, create, create ? (size as number) : 0, track);
    this.name = opened;
    this.size = buffer.byteLength;
    this.#buffer = buffer;
    this.#buf = Buffer.from(buffer);
  }

  /** The whole segment. Throws a TypeError after close(). */
  get buf(): Buffer {
    if (this.#closed) throw new ClosedError(`SharedMemory ${JSON.stringify(this.name)} is closed; its buf is gone with the mapping`);
    return this.#buf;
  }

  /** Unmaps this process's view (the segment and its name stay). Closing twice does nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.shmClose(this.#buffer);
  }

  /**
   * Removes the segment's name, so nothing can attach to it any more; the
   * memory is freed once every process has closed it or exited. Throws
   * FileNotFoundError if the name is already gone.
   */
  unlink(): void {
    native.shmUnlink(this.name);
  }

  /** `using shm = new SharedMemory(...)` closes it when the block ends, as Python's `with` does. */
  [Symbol.dispose](): void {
    this.close();
  }
}
