// This process's id, read on every lock operation: a module binding is cheaper
// than process.pid, and lib/child.ts refreshes it the moment a fork returns.
import { native } from './native.js';

export let selfPid: number = native.getpid();

export function refreshSelfPid(): void {
  selfPid = native.getpid();
}
