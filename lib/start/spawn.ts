// The `spawn` start method: a fresh Node process (this one's executable and
// flags, less the debugger's) runs bootstrap.ts, which is sent everything
// else over a socket: works from any process and any thread, at the price of
// a Node start-up per child.
import { fileURLToPath } from 'node:url';
import { native } from '../native.js';
import { setLauncher, type ChildState, type Process } from '../process.js';
import { prepare } from './preparation.js';
import { sendMessage } from './channel.js';

const BOOTSTRAP = fileURLToPath(new URL('./bootstrap.js', import.meta.url));

// Flags that would make the child run something else than the bootstrap, or
// stop for a debugger the parent's user attached to the parent only.
const DROPPED_WITH_VALUE = new Set(['-e', '--eval', '-p', '--print', '-r', '--require', '--import', '--input-type']);
const DROPPED = /^(--inspect|--inspect-brk|--inspect-port|--inspect-wait|--debug|--debug-brk|--debug-port|-i$|--interactive$|-c$|--check$|--test$|--watch)/;

/**
 * The parent's execArgv as a child may take it. `--require`/`--import`
 * preloads are kept (they set up the environment the program's modules
 * expect); evaluation and debugger flags are not.
 */
export function childExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i];
    const name = arg.split('=', 1)[0];
    if (name === '-r' || name === '--require' || name === '--import') {
      out.push(arg);
      if (!arg.includes('=')) out.push(execArgv[++i]);
      continue;
    }
    if (DROPPED_WITH_VALUE.has(name)) {
      if (!arg.includes('=')) i++;
      continue;
    }
    if (DROPPED.test(arg)) continue;
    out.push(arg);
  }
  return out;
}

function environment(): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined) out.push(`${key}=${value}`);
  return out;
}

/** Starts `execPath [flags] script` with `sock` as its descriptor 3. */
export function spawnNode(script: string, extraArgs: string[], sock: number, execArgv: string[] = childExecArgv()): number {
  return native.spawnProcess(process.execPath, [process.execPath, ...execArgv, script, ...extraArgs], environment(), [sock]);
}

setLauncher('spawn', {
  launch(proc: Process, state: ChildState): number {
    const prepared = prepare(proc, state);
    const [mine, theirs] = native.socketPair();
    let pid = 0;
    try {
      pid = spawnNode(BOOTSTRAP, [], theirs);
    } finally {
      native.closeFd(theirs);
      if (pid === 0) native.closeFd(mine);
    }
    try {
      sendMessage(mine, { header: prepared.header, payload: prepared.payload }, prepared.fds);
    } catch (error) {
      // A child that died at once closed its end: its exit code says why. Anything else is ours to report.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET') {
        native.signal(pid, 9);
        native.waitSync(pid, -1);
        throw error;
      }
    } finally {
      native.closeFd(mine);
    }
    return pid;
  },
});
