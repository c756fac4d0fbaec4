// Argument checks shared by the public classes. Errors carry Node's own codes
// for the same mistakes, and say what was expected and what came.
import { inspect } from 'node:util';

function describe(value: unknown): string {
  return inspect(value, { depth: 0, breakLength: Infinity, maxStringLength: 40 });
}

export function invalidType(what: string, expected: string, got: unknown): TypeError {
  const error = new TypeError(`${what} must be ${expected}, got ${describe(got)}`);
  (error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE';
  return error;
}

export function outOfRange(what: string, expected: string, got: unknown): RangeError {
  const error = new RangeError(`${what} must be ${expected}, got ${describe(got)}`);
  (error as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE';
  return error;
}

export function invalidValue(message: string): TypeError {
  const error = new TypeError(message);
  (error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

export function checkInteger(what: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw invalidType(what, 'an integer', value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw outOfRange(what, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** The bytes of a Buffer, TypedArray, DataView or ArrayBuffer, as a Uint8Array over the same memory. */
export function bytesOf(method: string, buf: unknown): Uint8Array {
  if (buf instanceof Uint8Array) return buf;
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf instanceof ArrayBuffer || buf instanceof SharedArrayBuffer) return new Uint8Array(buf);
  throw invalidType(`${method}(buf)`, 'a Buffer, TypedArray, DataView or ArrayBuffer', buf);
}

/** An offset into a buffer of `length` bytes (0 if absent). */
export function checkOffset(method: string, offset: unknown, length: number): number {
  if (offset === undefined) return 0;
  if (typeof offset !== 'number') throw invalidType(`${method}(offset)`, 'an integer', offset);
  if (!Number.isInteger(offset) || offset < 0 || offset > length) {
    throw outOfRange(`${method}(offset)`, `an integer from 0 to the buffer's byte length ${length}`, offset);
  }
  return offset;
}
