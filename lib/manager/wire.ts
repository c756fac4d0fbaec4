// Frames on a manager connection, read and written here rather than by
// Connection: each end owns its socket alone (a forked child drops its
// parent's, proxy.ts), so a read may take whatever has come, several frames
// or part of one, in one system call, where Connection peeks and takes
// exactly one frame so that processes sharing an end can take turns. The
// framing is Connection's ([tag u8][length u32 LE][body], the long form
// 0xFFFFFFFF + u64 LE), and a frame's length is checked against the limit
// from its header, before anything is allocated for its body.
import { native } from '../native.js';
import { codecFor, decodeRange, decodeUntrusted } from '../codec.js';
import { EOFError, ManagerError } from '../errors.js';

const codec = codecFor('msgpack');
const HEADER = 5;
const LONG_HEADER = 13;
const LONG = 0xffffffff;
const FIRST_SIZE = 64 * 1024;

/** What next() returns when no whole frame is buffered. */
export const NONE = Symbol('none');

/** Reads frames from a socket this process alone reads. */
export class FrameReader {
  readonly #fd: number;
  readonly #limit: number;
  readonly #untrusted: boolean;
  #buf = Buffer.allocUnsafe(FIRST_SIZE);
  #start = 0;
  #end = 0;

  /** `untrusted`: values decode with decodeUntrusted() (a server's clients). */
  constructor(fd: number, limit: number, untrusted: boolean) {
    this.#fd = fd;
    this.#limit = limit;
    this.#untrusted = untrusted;
  }

  /**
   * Reads what has come, waiting up to `timeoutMs` (< 0: forever) for some;
   * false if nothing came. EOFError at the end of the stream. `sleepAtOnce`:
   * no spin before sleeping (connRead's own short one), as a SpinGauge (lib/spin.ts) says.
   */
  fill(timeoutMs: number, sleepAtOnce = false): boolean {
    if (this.#end === this.#buf.length) this.#makeRoom(this.#buf.length - this.#start + 1);
    if (sleepAtOnce && timeoutMs !== 0 && !native.connPoll(this.#fd, timeoutMs)) return false;
    const n = native.connRead(this.#fd, this.#buf, this.#end, this.#buf.length - this.#end, sleepAtOnce ? 0 : timeoutMs);
    if (n === 0) throw new EOFError(this.#end > this.#start ? 'the peer closed the connection in the middle of a message' : 'the peer closed the connection');
    if (n < 0) return false;
    this.#end += n;
    return true;
  }

  /**
   * The next whole frame's value, or NONE. A frame over the limit throws
   * ManagerError ERR_MESSAGE_TOO_LONG (the reader is then unusable); one that
   * does not decode throws what the decoder threw, the frame consumed.
   */
  next(): unknown {
    const have = this.#end - this.#start;
    if (have < HEADER) return NONE;
    const buf = this.#buf;
    const at = this.#start;
    let length = buf.readUInt32LE(at + 1);
    let header = HEADER;
    if (length === LONG) {
      if (have < LONG_HEADER) return NONE;
      length = Number(buf.readBigUInt64LE(at + HEADER));
      header = LONG_HEADER;
    }
    if (length > this.#limit) {
      throw new ManagerError('ERR_MESSAGE_TOO_LONG', `a message of ${length} bytes came, over the limit of ${this.#limit} bytes (maxMessageBytes)`);
    }
    if (have < header + length) {
      // Room as the body comes (fill() doubles the buffer when it is full),
      // not all at once from a header: a peer's 5 bytes do not make us
      // allocate its stated length up to the limit.
      this.#makeRoom(Math.min(header + length, this.#buf.length));
      return NONE;
    }
    const tag = buf[at] as number;
    const from = at + header;
    this.#start = from + length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (!this.#untrusted) return decodeRange(tag, buf, from, from + length);
    // A peer's frame is decoded from a view of it alone. msgpackr checks a
    // string's or an array's length against the end it is given only once the
    // whole value is read; meanwhile an extension's reader (nodemp's by-name
    // crossing, RegExp) gets what it read, and its error, which goes back to
    // the client, would carry the bytes past the frame: this buffer's stale
    // contents, earlier frames, or memory allocUnsafe() never cleared.
    const frame = buf.subarray(from, from + length);
    try {
      return decodeUntrusted(tag, frame, 0, length);
    } catch (error) {
      // The request's id, if its first bytes give one, so that the answer
      // reaches the call that waits for it.
      if (typeof error === 'object' && error !== null) (error as { requestId?: number }).requestId = leadingId(frame);
      throw error;
    }
  }

  /** Room for `need` bytes from the current frame's start: moved to the front, or a larger buffer. */
  #makeRoom(need: number): void {
    const have = this.#end - this.#start;
    if (need <= this.#buf.length - this.#start) return;
    const target = need <= this.#buf.length ? this.#buf : Buffer.allocUnsafe(Math.max(need, this.#buf.length * 2));
    this.#buf.copy(target, 0, this.#start, this.#end);
    this.#buf = target;
    this.#start = 0;
    this.#end = have;
  }
}

/** The id of a request that does not decode: the first element of the msgpack array it starts with (0: none). */
export function leadingId(body: Buffer): number {
  let at = 0;
  const head = body[at++];
  if (head === undefined) return 0;
  if (head === 0xdc) at += 2;
  else if (head === 0xdd) at += 4;
  else if (head < 0x90 || head > 0x9f) return 0;
  const b = body[at];
  if (b === undefined) return 0;
  if (b <= 0x7f) return b;
  if (b === 0xcc && body.length >= at + 2) return body.readUInt8(at + 1);
  if (b === 0xcd && body.length >= at + 3) return body.readUInt16BE(at + 1);
  if (b === 0xce && body.length >= at + 5) return body.readUInt32BE(at + 1);
  return 0;
}

/** `value` as one frame, in a buffer of its own. */
export function frameOf(value: unknown): Buffer {
  const body = codec.encode(value);
  const length = body.byteLength;
  const long = length >= LONG;
  const frame = Buffer.allocUnsafe((long ? LONG_HEADER : HEADER) + length);
  frame[0] = codec.tag;
  if (long) {
    frame.writeUInt32LE(LONG, 1);
    frame.writeBigUInt64LE(BigInt(length), HEADER);
  } else frame.writeUInt32LE(length, 1);
  frame.set(body, long ? LONG_HEADER : HEADER);
  return frame;
}

