// The one public entry of nodemp.
export * from './api.js';
export { getContext } from './context.js';
export type { Context } from './context.js';
export { setStartMethod, getStartMethod, getAllStartMethods } from './start/method.js';
export type { StartMethod } from './start/method.js';
export { setForkserverPreload } from './start/forkserver.js';
export { isMainModule } from './start/reference.js';
export type { FunctionRef, FunctionRefInput } from './start/reference.js';
