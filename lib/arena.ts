// Shared memory for small objects. One mapping per Lock would cost a page and
// a VMA each; instead each process carves cache-line cells out of 64 KiB
// chunks of anonymous shared memory, which forked children inherit. A chunk
// serves only the process that mapped it: a child that allocated from an
// inherited chunk would hand out the same cells as its parent. Cells are not
// reused; a chunk is unmapped in a process once none of its objects is
// reachable there (the ArrayBuffer's finalizer).
import { native } from './native.js';
import { ARENA_CHUNK_SIZE, CELL_SIZE } from './layout.js';
import { selfPid } from './self.js';

export interface Cells {
  readonly buffer: ArrayBuffer;
  readonly byteOffset: number;
  readonly byteLength: number;
}

let chunk: ArrayBuffer | null = null;
let chunkOwner = 0;
let used = 0;

/** Zeroed shared memory for `bytes` bytes, cache-line aligned. */
export function allocShared(bytes: number): Cells {
  const size = Math.max(CELL_SIZE, Math.ceil(bytes / CELL_SIZE) * CELL_SIZE);
  if (size > ARENA_CHUNK_SIZE / 4) return { buffer: native.mapShared(size), byteOffset: 0, byteLength: size };
  if (chunk === null || chunkOwner !== selfPid || used + size > ARENA_CHUNK_SIZE) {
    chunk = native.mapShared(ARENA_CHUNK_SIZE);
    chunkOwner = selfPid;
    used = 0;
  }
  const cells = { buffer: chunk, byteOffset: used, byteLength: size };
  used += size;
  return cells;
}

export function allocCells(count: number): Cells {
  return allocShared(count * CELL_SIZE);
}
