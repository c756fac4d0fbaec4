// Node 20's libuv (1.46) can run timers back to back without ever polling for
// events (libuv#4245): two async loops that each do a few milliseconds of work
// after `await sleep(1)` keep it there. nodemp's wake-ups, exit notices and
// connection reads then come from its own guard (lib/loop-stall.ts). The soak
// met this as Pool calls that waited 35 s for answers already there.
import { describe, expect, it } from 'vitest';
import { runScript } from './helpers.js';

describe('an event loop whose timers never let it poll', () => {
  it('still settles a Pool call, a Queue get, a Pipe recv, a join and a lock acquire, while the timers run', () => {
    const r = runScript(
      `
      const { Lock, Pipe, Pool, Process, Queue } = await import(NODEMP);
      const { native } = await import(NODEMP.replace('index.js', 'native.js'));
      const { LOOP_CAN_STALL } = await import(NODEMP.replace('index.js', 'loop-stall.js'));
      const { setTimeout: sleep } = await import('node:timers/promises');
      const pool = new Pool({ processes: 2, startMethod: 'fork' });
      await pool.apply((x) => x, [1]);
      const q = new Queue();
      const [a, b] = Pipe();
      const lock = new Lock();
      lock.acquireSync();
      const settled = {};
      const note = (what) => (value) => (settled[what] = value);
      let ops = null;
      let done = false;
      // Called from inside the starving timers: everything starts there.
      const begin = () => {
        const child = new Process({
          daemon: true,
          target: () => {
            q.put('queued');
            b.send('piped');
            lock.release();
          },
        });
        ops = [
          pool.apply((x) => x * 2, [21]).then(note('apply')),
          pool.map((x) => x + 1, [1, 2, 3, 4, 5, 6, 7, 8]).then(note('map')),
          q.get().then(note('get')),
          a.recv().then(note('recv')),
          lock.acquire({ timeout: 30000 }).then(note('acquire')),
        ];
        child.start();
        ops.push(child.join().then(note('join')));
        Promise.all(ops).then(() => (done = true));
      };
      const busy = (ms) => { const t = Date.now(); while (Date.now() - t < ms); };
      // Each round: a 1 ms timer, then work that outlasts the other loop's timer.
      let rounds = 0;
      const spin = async (leader) => {
        const end = Date.now() + 20000;
        let quiet = 0;
        let turns = native.loopTurns();
        while (!done && Date.now() < end) {
          await sleep(1);
          rounds++;
          busy(4);
          if (!leader || ops !== null) continue;
          // Once the loop has gone 20 rounds without polling, the timers have it.
          const now = native.loopTurns();
          quiet = now === turns ? quiet + 1 : 0;
          turns = now;
          if (quiet === 20 || (!LOOP_CAN_STALL && rounds > 40)) begin();
        }
      };
      await Promise.all([spin(true), spin(false)]);
      // Settled while the timers still ran, or only once they stopped, 20 s on.
      const whileStarving = done;
      if (ops !== null) await Promise.all(ops);
      pool.terminate();
      console.log(JSON.stringify({ begun: ops !== null, whileStarving, settled }));
    `,
      { timeout: 60000 },
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    // Where libuv can stall (Node 20), the operations began once the loop had gone 20 rounds without polling.
    expect(out.begun).toBe(true);
    expect(out.whileStarving).toBe(true);
    expect(out.settled).toEqual({ apply: 42, map: [2, 3, 4, 5, 6, 7, 8, 9], get: 'queued', recv: 'piped', acquire: true, join: 0 });
  });
});
