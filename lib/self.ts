// This process's id, read on every lock operation: a module binding is cheaper
// than process.pid, and lib/child.ts refreshes it the moment a fork returns.
import { native } from './native.js';

export let selfPid: number = native.getpid();

export const refreshSelfPid = (function refreshSelfPid(): void {
  selfPid = native.getpid();
});

// A forked child's process.pid and process.ppid must be its own. Node's are
// values fixed at start-up; accessors, installed once here, follow a fork
// with nothing to do in the child, where redefining both cost a tenth of a
// millisecond of every start (the process object's pages copied on write,
// a getter compiled). ppid is asked each time: a child re-parented when its
// parent dies sees the change.
Object.defineProperty(process, 'pid', { get: () => selfPid, enumerable: true, configurable: true });
Object.defineProperty(process, 'ppid', { get: () => native.getppid(), enumerable: true, configurable: true });
