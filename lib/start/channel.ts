// Messages between a parent and what starts its children (a spawned child's
// bootstrap, the forkserver): plain values with descriptors attached, over a
// socket pair that keeps message boundaries (native/start.cc). A value larger
// than one socket message goes in parts; its descriptors ride on the first.
import { Packr } from 'msgpackr';
import { native } from '../native.js';

const packr = new Packr({ useRecords: false, moreTypes: true, mapsAsObjects: true });

// Below native/start.cc's limit of 64 KiB, with room for the flag byte.
const PART = 60 * 1024;
const LAST = 0;
const MORE = 1;

export interface Message {
  value: unknown;
  fds: number[];
}

export function sendMessage(sock: number, value: unknown, fds: number[] = []): void {
  const body = packr.pack(value);
  for (let at = 0, first = true; first || at < body.length; first = false) {
    const end = Math.min(body.length, at + PART);
    const part = new Uint8Array(1 + end - at);
    part[0] = end < body.length ? MORE : LAST;
    part.set(body.subarray(at, end), 1);
    native.fdSend(sock, part, first ? fds : []);
    at = end;
  }
}

const NO_FDS: number[] = [];
// A number msgpack writes in four big-endian bytes after its type byte, found again in the framed message.
const SLOT = 0x7fffffff;

/**
 * A one-part message framed ahead of time, with one non-negative 31-bit
 * number to fill in when it is sent. Sending it allocates nothing and writes
 * only those four bytes: the fork server answers a start with one right after
 * fork(), when each first write to a page the child shares is a page copy.
 */
export class PresetMessage {
  readonly #bytes: Uint8Array;
  readonly #at: number;

  constructor(make: (n: number) => unknown) {
    const body = packr.pack(make(SLOT));
    this.#bytes = new Uint8Array(1 + body.length);
    this.#bytes[0] = LAST;
    this.#bytes.set(body, 1);
    const framed = Buffer.from(this.#bytes);
    const slot = Buffer.from([0x7f, 0xff, 0xff, 0xff]);
    this.#at = framed.indexOf(slot);
    if (this.#at < 0 || framed.lastIndexOf(slot) !== this.#at || body.length > PART) {
      throw new Error('PresetMessage: the message must hold its number once, in one part');
    }
  }

  send(sock: number, n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > SLOT) throw new RangeError(`PresetMessage.send: expected an integer from 0 to ${SLOT}, got ${n}`);
    const b = this.#bytes;
    b[this.#at] = n >>> 24;
    b[this.#at + 1] = (n >>> 16) & 0xff;
    b[this.#at + 2] = (n >>> 8) & 0xff;
    b[this.#at + 3] = n & 0xff;
    native.fdSend(sock, b, NO_FDS);
  }
}

/**
 * The next message; null once the other end has closed; undefined when
 * timeoutMs (undefined: forever) passes first. A message begun is read whole.
 */
export function recvMessage(sock: number, timeoutMs?: number): Message | null | undefined {
  const first = native.fdRecv(sock, timeoutMs ?? -1);
  if (first === undefined || first === null) return first;
  const fds = first.fds;
  const parts: Uint8Array[] = [first.bytes.subarray(1)];
  let flag = first.bytes[0];
  while (flag === MORE) {
    const next = native.fdRecv(sock, -1);
    if (next === null || next === undefined) {
      for (const fd of fds) native.closeFd(fd);
      return null;
    }
    parts.push(next.bytes.subarray(1));
    flag = next.bytes[0];
  }
  const body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  return { value: packr.unpack(body), fds };
}
