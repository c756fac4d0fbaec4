// What a ClusterPool job carries through Redis, shared by the pool and the
// worker. Jobs are plain BullMQ jobs: data and return value are JSON, the
// arguments and results inside them nodemp's codec (msgpack, so a Date, a Map,
// a typed array or an error arrive as themselves) in base64.
import { codecFor, decodeUntrusted } from '../codec.js';
import { errorState, reviveError, RemoteTraceback, type ErrorState } from '../errors.js';
import type { FunctionRef } from '../start/reference.js';

/** apply: payload is the arguments, the answer the value; map and starmap: payload is a chunk of items, the answer their values. */
export type JobKind = 'apply' | 'map' | 'starmap';

export interface JobData {
  readonly nodemp: 1;
  readonly fn: FunctionRef;
  readonly kind: JobKind;
  readonly payload: string;
}

/** Sent as the job's progress just before its last attempt fails: the task's error whole (a failed job keeps only a message). */
export interface FailureProgress {
  readonly nodempError: ErrorState;
  readonly host: string;
  readonly pid: number;
}

const codec = codecFor('msgpack');

export function pack(value: unknown): string {
  const body = codec.encode(value);
  const out = Buffer.allocUnsafe(body.length + 1);
  out[0] = codec.tag;
  out.set(body, 1);
  return out.toString('base64');
}

/** Only msgpack is read, and nothing is attached by name: a job comes from the network. */
export function unpack(text: string): unknown {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length === 0) throw new TypeError('nodemp: an empty ClusterPool payload');
  return decodeUntrusted(bytes[0]!, bytes, 1, bytes.length);
}

export function isJobData(data: unknown): data is JobData {
  if (typeof data !== 'object' || data === null) return false;
  const d = data as Record<string, unknown>;
  const fn = d.fn as Record<string, unknown> | null;
  return (
    d.nodemp === 1 &&
    (d.kind === 'apply' || d.kind === 'map' || d.kind === 'starmap') &&
    typeof d.payload === 'string' &&
    typeof fn === 'object' &&
    fn !== null &&
    typeof fn.module === 'string' &&
    typeof fn.name === 'string'
  );
}

/**
 * The task's error as it crosses: a pool worker's error arrives at the
 * worker as a rebuilt error whose cause holds the task's own stack, and that
 * stack is the one to pass on.
 */
export function failureState(error: unknown): ErrorState {
  const e = error instanceof Error ? error : new Error(String(error));
  const state = errorState(e);
  if (e.cause instanceof RemoteTraceback) state.stack = String(e.cause.stack).replace(/^RemoteTraceback \(from [^\n]*\):\n/, '');
  return state;
}

export function reviveFailure(p: FailureProgress): Error {
  return reviveError(p.nodempError, new RemoteTraceback(p.nodempError.stack, `cluster worker pid ${p.pid} on ${p.host}`));
}

export function isFailureProgress(data: unknown): data is FailureProgress {
  if (typeof data !== 'object' || data === null) return false;
  const e = (data as Record<string, unknown>).nodempError as Record<string, unknown> | undefined;
  return typeof e === 'object' && e !== null && typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string';
}
