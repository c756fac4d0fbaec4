// The fork server's program (forkserver-server.ts does the work). Before any
// of nodemp's modules or the program's is compiled: V8 then compiles every
// function when its module loads rather than when it first runs, and keeps
// that code, so that a child forked from the server inherits it compiled
// instead of compiling what it runs itself (its bootstrap and its target:
// 0.9 ms of a 5.3 ms start->join here). An engine that lacks a flag only
// warns: nothing else depends on them.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-lazy');
setFlagsFromString('--no-flush-bytecode');
await import('./forkserver-server.js');
