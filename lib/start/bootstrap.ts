// The program a `spawn` child runs: it receives its preparation on
// descriptor 3, becomes the Process its parent started, and runs it with
// Python's exit semantics (0; 1 and the error on stderr for a throw; n for
// process.exit(n)). Node's own exit path serves: this process was started
// normally, unlike a forked one.
import { writeSync } from 'node:fs';
import { inspect } from 'node:util';
import { native } from '../native.js';
import { recvMessage } from './channel.js';
import { becomeStarted, type Header } from './preparation.js';

// Node's code for a program that ended with its work unsettled.
const UNSETTLED_EXIT_CODE = 13;
const SOCK = 3;

function report(label: string, error: unknown): void {
  try {
    writeSync(2, `Process ${label}:\n${typeof error === 'string' ? error : inspect(error)}\n`);
  } catch {
    // stderr closed: the exit code still tells the parent.
  }
}

async function main(): Promise<void> {
  const message = recvMessage(SOCK);
  native.closeFd(SOCK);
  if (message === null || message === undefined) {
    // The parent died before it could say what to run.
    process.exitCode = 1;
    return;
  }
  const { header, payload } = message.value as { header: Header; payload: Uint8Array };
  if (header.state.daemon) native.dieWithParent(header.state.parentPid);
  const label = header.state.name;
  let settled = false;
  process.on('beforeExit', () => {
    if (settled) return;
    settled = true;
    report(label, 'the promise returned by run() never settled, and nothing is left that could settle it');
    process.exit(UNSETTLED_EXIT_CODE);
  });
  try {
    const proc = await becomeStarted(header, payload, message.fds);
    await proc.run();
  } catch (error) {
    report(label, error);
    process.exitCode = 1;
  }
  settled = true;
}

void main();
