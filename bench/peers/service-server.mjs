// An HTTP server of bench/service.js, run in a process of its own. Arguments:
// KIND ITERATIONS, KIND one of nodemp (a Pool of 2 processes runs each
// request's work(): forked from the fork server in a plain node, from the
// server itself under --single-threaded), piscina (2 threads run it) or
// inline (the handler runs it). GET / runs work(ITERATIONS) (service-task.mjs)
// and answers its result; GET /stats answers { requests, mainThreadCpuNs }:
// the requests to / served so far and the CPU time of the main thread (the one
// that accepts, parses and answers every request), from its schedstat. Listens
// on an ephemeral port of 127.0.0.1 and writes { port } as a line to stdout;
// on SIGTERM it shuts its pool down and exits.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { threadCpuNs } from '../lib.js';
import { work } from './service-task.mjs';

const [kind, iterationsArg] = process.argv.slice(2);
const iterations = Number(iterationsArg);
const WORKERS = 2;

async function open() {
  if (kind === 'nodemp') {
    const { Pool } = await import('../../dist/index.js');
    const pool = new Pool({ processes: WORKERS });
    return { run: (n) => pool.apply(work, [n]), close: () => pool.terminate() };
  }
  if (kind === 'piscina') {
    const { Piscina } = createRequire(import.meta.url)('piscina');
    const filename = fileURLToPath(new URL('./service-task.mjs', import.meta.url));
    const pool = new Piscina({ filename, minThreads: WORKERS, maxThreads: WORKERS });
    return { run: (n) => pool.run(n), close: () => pool.destroy() };
  }
  if (kind === 'inline') return { run: async (n) => work(n), close: async () => {} };
  throw new Error(`unknown server kind ${kind}`);
}

const runner = await open();
let requests = 0;

const server = createServer(async (req, res) => {
  if (req.url === '/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ requests, mainThreadCpuNs: threadCpuNs(process.pid) }));
    return;
  }
  try {
    const x = await runner.run(iterations);
    requests += 1;
    res.end(String(x));
  } catch (error) {
    res.statusCode = 500;
    res.end(String(error));
  }
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

process.once('SIGTERM', async () => {
  server.closeAllConnections();
  server.close();
  await runner.close();
  process.exit(0);
});
