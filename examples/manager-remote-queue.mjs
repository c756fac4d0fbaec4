// Python's "shared queue on a server": one process serves a queue over TCP;
// programs anywhere that hold the authkey put jobs in it and take them out.
// Run, in three terminals:
//   node examples/manager-remote-queue.mjs server 50000
//   node examples/manager-remote-queue.mjs worker 50000
//   node examples/manager-remote-queue.mjs put 50000
// (the authkey comes from NODEMP_AUTHKEY, 'abracadabra' if unset; the server
// listens on 127.0.0.1 unless a host is given as a third argument).
import { BaseManager, Managed, QueueProxy } from 'nodemp';

const [role, port = '50000', host = '127.0.0.1'] = process.argv.slice(2);
const authkey = Buffer.from(process.env.NODEMP_AUTHKEY ?? 'abracadabra');

class QueueManager extends BaseManager {}

if (role === 'server') {
  const queue = new Managed.Queue();
  QueueManager.register('getQueue', () => queue, { proxytype: QueueProxy });
  const server = new QueueManager({ address: [host, Number(port)], authkey }).getServer();
  const serving = server.serveForever();
  console.log('serving a queue at', server.address);
  process.on('SIGINT', () => server.shutdown());
  process.on('SIGTERM', () => server.shutdown());
  await serving;
} else {
  QueueManager.register('getQueue', null, { proxytype: QueueProxy });
  const manager = new QueueManager({ address: [host, Number(port)], authkey });
  await manager.connect();
  const queue = await manager.getQueue();
  if (role === 'put') {
    for (let i = 1; i <= 5; i++) await queue.put({ job: i });
    await queue.put(null);
    console.log('put 5 jobs');
  } else {
    for (;;) {
      const item = await queue.get();
      if (item === null) break;
      console.log('worker', process.pid, 'did job', item.job);
    }
  }
  await manager.shutdown();
}
