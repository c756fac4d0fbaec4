// The program a `spawn` child runs: it receives its preparation on
// descriptor 3, becomes the Process its parent started, and runs it with
// Python's exit semantics (0; 1 and the error on stderr for a throw; n for
// process.exit(n)). Node's own exit path serves: this process was started
// normally, unlike a forked one.
import { inspect } from 'node:util';
import { native } from '../native.js';
import { UNSETTLED, UNSETTLED_EXIT_CODE, report } from '../child.js';
import { recvMessage } from './channel.js';
import { becomeStarted, type Header } from './preparation.js';

const SOCK = 3;

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
    report(label, UNSETTLED);
    process.exit(UNSETTLED_EXIT_CODE);
  });
  try {
    const proc = await becomeStarted(header, payload, message.fds);
    await proc.run();
  } catch (error) {
    report(label, inspect(error));
    process.exitCode = 1;
  }
  settled = true;
}

void main();
