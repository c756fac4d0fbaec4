// Where the time of one start goes (bench/process-start.js): each phase of
// the fork path stamps the monotonic clock into a buffer the benchmark maps
// shared, so the child's stamps reach the parent. The phases are defined once,
// in native/internal.h (kTrace*), and stamped there too where they happen in
// C++. Off, a stamp is one read of a module variable.
import { native } from '../native.js';

let on = false;

/** The phase numbers, by name (kTraceStart ... kTracePhases). */
export const phases: Readonly<Record<string, number>> = native.trace;

/** Internal (bench): stamps go into `buffer` (8 bytes per phase, shared with children), or nowhere. */
export function traceStarts(buffer: ArrayBuffer | null): void {
  native.traceStart(buffer);
  on = buffer !== null;
}

export function stamp(phase: number): void {
  if (on) native.traceStamp(phase);
}
