export { Process, ParentProcess, currentProcess, parentProcess, activeChildren, cpuCount } from './process.js';
export type { ProcessOptions } from './process.js';
export { OSError, ProcessError, ForkSafetyError } from './errors.js';
export type { ProcessErrorCode } from './errors.js';
export { isSingleThreaded } from './fork-safety.js';
