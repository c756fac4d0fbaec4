// Python's Manager example ("server process"): a manager's server holds a
// dict and a list; a child process changes them through proxies, and the
// parent sees the changes.
// Run: node examples/manager-dict-list.mjs   (or: npx nodemp examples/manager-dict-list.mjs)
import { Manager, Process, isMainModule } from 'nodemp';

export function f(d, l) {
  d.setSync(1, '1');
  d.setSync('2', 2);
  d.setSync(0.25, null);
  l.reverseSync();
}

if (isMainModule(import.meta)) {
  const manager = Manager();
  try {
    const d = await manager.dict();
    const l = await manager.list(Array.from({ length: 10 }, (_, i) => i));

    const p = new Process({ target: f, args: [d, l] });
    p.start();
    await p.join();

    console.log(await d.copy()); // Map(3) { 1 => '1', '2' => 2, 0.25 => null }
    console.log(await l.copy()); // [ 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 ]
  } finally {
    await manager.shutdown();
  }
}
