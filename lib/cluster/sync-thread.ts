// The worker thread behind ClusterPool's blocking forms (applySync, mapSync,
// starmapSync): it makes each call on a JobClient of its own and wakes the
// waiting thread through the shared flag once the answer is posted. It must
// not load nodemp's native side (see client.ts).
import { workerData, type MessagePort } from 'node:worker_threads';
import { errorState, type ErrorState } from '../errors.js';
import { pack, unpack, type JobKind } from './job.js';
import { JobClient, type ClusterPoolOptions } from './client.js';
import type { FunctionRef } from '../start/reference.js';

export interface SyncRequest {
  kind: JobKind;
  fn: FunctionRef;
  payload: string;
  chunksize?: number | undefined;
}

export type SyncAnswer = { ok: true; value: string } | { ok: false; error: ErrorState; cause?: { message: string; stack: string } };

const { options, port, flag } = workerData as { options: ClusterPoolOptions; port: MessagePort; flag: Int32Array };
const client = new JobClient(options);

async function answer(request: SyncRequest): Promise<SyncAnswer> {
  try {
    const value = await client.run(request.fn, request.kind, unpack(request.payload) as unknown[], { chunksize: request.chunksize });
    return { ok: true, value: pack(value) };
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    const cause = e.cause instanceof Error ? { message: e.cause.message, stack: String(e.cause.stack) } : undefined;
    return { ok: false, error: errorState(e), cause };
  }
}

port.on('message', (request: SyncRequest) => {
  void answer(request).then((a) => {
    port.postMessage(a);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  });
});
