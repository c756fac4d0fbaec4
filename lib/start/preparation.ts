// What a child started by spawn or forkserver is given (Python's preparation
// data and pickled Process object): who it is, where it runs, and the
// encoded target, arguments and Process subclass, whose shared objects
// travel as descriptors and functions as references.
import { Process, adoptProcess, currentProcess, enterChild, processParts, type ChildState } from '../process.js';
import { ProcessError, SerializationError } from '../errors.js';
import { decodeInChild, encodeForChild } from './descriptors.js';
import { isFunctionRef, markChild, referenceOf, type FunctionRef } from './reference.js';
import { CONTEXT_CLASS, setBootstrapping } from './method.js';

// Linux passes at most 253 descriptors in one message; two are kept for the
// preparation's own mapping and the segment tracker's pipe.
const MAX_DESCRIPTORS = 250;

export interface Header {
  state: ChildState;
  cwd: string;
  argv: string[];
  /** Modules the child will import to rebuild its arguments: the forkserver imports them before it forks. */
  preload: FunctionRef[];
}

export interface Prepared {
  header: Header;
  payload: Uint8Array;
  fds: number[];
}

interface Encoded {
  cls: Function | null;
  target: Function | FunctionRef | null;
  args: unknown[];
  fields: Record<string, unknown>;
}

/** Everything `proc` needs in a child that does not share this heap. Throws for what cannot go there. */
export function prepare(proc: Process, state: ChildState): Prepared {
  const { target, args } = processParts(proc);
  const Class = proc.constructor;
  const own = Class === Process || Object.prototype.hasOwnProperty.call(Class, CONTEXT_CLASS);
  const preload: FunctionRef[] = [];
  const targetRef = target === null ? null : referenceOf(target, `target of ${state.name}`);
  if (targetRef !== null) preload.push(targetRef);
  if (!own) preload.push(referenceOf(Class, `Process subclass of ${state.name}`));
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(proc)) fields[key] = (proc as unknown as Record<string, unknown>)[key];
  // An explicit reference goes as its normal form (an ImportMeta in it would not cross).
  const value: Encoded = { cls: own ? null : Class, target: isFunctionRef(target) ? targetRef : (target as Function | null), args, fields };
  const { bytes, fds } = encodeForChild(value);
  if (fds.length > MAX_DESCRIPTORS) {
    throw new SerializationError(
      `the arguments of ${state.name} hold ${fds.length} shared mappings and descriptors; one start can pass at most ${MAX_DESCRIPTORS} ` +
        '(one per 64 KiB of small shared objects, one per queue, array or connection): pass fewer, or share them through a Queue of names',
      { code: 'ERR_TOO_MANY_DESCRIPTORS' },
    );
  }
  return { header: { state, cwd: process.cwd(), argv: process.argv, preload }, payload: bytes, fds };
}

/**
 * In the child: becomes the process the parent started, ready for run().
 * Importing the user's modules happens here, under the bootstrapping flag,
 * so that a module that starts processes at its top level gets the clear
 * error of Process.start() rather than starting them again.
 */
export async function becomeStarted(header: Header, payload: Uint8Array, fds: number[]): Promise<Process> {
  markChild();
  setBootstrapping(true);
  let decoded: Encoded;
  try {
    try {
      process.chdir(header.cwd);
    } catch {
      // The parent's directory is gone or out of reach: stay where we are, as Python does.
    }
    process.argv = [process.execPath, ...header.argv.slice(1)];
    // Before the arguments: a manager's proxies among them connect with it.
    currentProcess().authkey = header.state.authkey;
    decoded = (await decodeInChild(payload, fds)) as Encoded;
  } finally {
    setBootstrapping(false);
  }
  const { state } = header;
  const Class = decoded.cls ?? Process;
  if (Class !== Process && !(Class.prototype instanceof Process)) {
    throw new ProcessError('ERR_START_METHOD', `${Class.name} is not a Process subclass in this process`);
  }
  const proc = adoptProcess(Class, { target: decoded.target as never, args: decoded.args, name: state.name, daemon: state.daemon }, state);
  Object.assign(proc, decoded.fields);
  enterChild(proc, state);
  return proc;
}
