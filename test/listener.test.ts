import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  Client,
  ClientSync,
  ClosedError,
  Connection,
  EOFError,
  FileNotFoundError,
  Listener,
  OSError,
  wait,
  type Address,
} from '../dist/index.js';
import { connectUnderWay, openFds, shared } from './helpers.js';
import { busySleep, sleepMs, spawnChild } from './sync-helpers.js';

const KEY = Buffer.from('the right key');

const addresses: [string, () => Address | undefined][] = [
  ['a Unix socket path', () => undefined],
  ['a Linux abstract name', () => `\0nodemp-test-${process.pid}-${randomBytes(4).toString('hex')}`],
  ['TCP port 0', () => ['127.0.0.1', 0]],
];

/** Codes a child reports in shared memory: how its client ended. */
const OK = 1;
const AUTH_FAILED = 2;
const OTHER_ERROR = 3;

function outcome(error: unknown): number {
  return error instanceof AuthenticationError ? AUTH_FAILED : OTHER_ERROR;
}

/** A child that connects with ClientSync, answers one message and exits; `report[slot]` says how it went. */
function syncClient(address: Address, report: Int32Array, slot: number, authkey?: Buffer) {
  return spawnChild(() => {
    try {
      const conn = ClientSync(address, { authkey });
      const got = conn.recvSync<{ n: number }>();
      conn.send({ n: got.n + 1, pid: process.pid });
      conn.sendBytes(Buffer.from('bytes back'));
      conn.recvSync();
      Atomics.store(report, slot, OK);
    } catch (error) {
      Atomics.store(report, slot, outcome(error));
    }
  });
}

/** The same with the async Client. */
function asyncClient(address: Address, report: Int32Array, slot: number, authkey?: Buffer) {
  return spawnChild(async () => {
    try {
      const conn = await Client(address, { authkey });
      const got = await conn.recv<{ n: number }>();
      conn.send({ n: got.n + 1, pid: process.pid });
      conn.sendBytes(Buffer.from('bytes back'));
      await conn.recv();
      Atomics.store(report, slot, OK);
    } catch (error) {
      Atomics.store(report, slot, outcome(error));
    }
  });
}

/** The listener's half of the exchange the clients above expect. */
async function serve(conn: Connection, pid: number): Promise<void> {
  conn.send({ n: 41 });
  expect(await conn.recv()).toEqual({ n: 42, pid });
  expect(conn.poll(5000)).toBe(true);
  expect((await conn.recvBytes()).toString()).toBe('bytes back');
  conn.send('bye');
  expect(await conn.recv().catch((e: unknown) => e)).toBeInstanceOf(EOFError);
  conn.close();
}

function withoutMemfd(fds: string[]): string[] {
  return fds.filter((fd) => !fd.includes('/memfd:'));
}

describe('Listener and Client: addresses', () => {
  for (const [name, make] of addresses) {
    it(`${name}: accept() with a ClientSync child, acceptSync() with a Client child`, async () => {
      using listener = new Listener(make());
      const address = listener.address;
      if (name === 'TCP port 0') {
        expect((address as [string, number])[0]).toBe('127.0.0.1');
        expect((address as [string, number])[1]).toBeGreaterThan(0);
      } else if (name === 'a Linux abstract name') {
        expect((address as string)[0]).toBe('\0');
      } else {
        expect(statSync(address as string).isSocket()).toBe(true);
      }
      expect(listener.lastAcceptedAddress).toBeNull();
      const report = shared(2);

      const first = syncClient(address, report, 0);
      await serve(await listener.accept(), first.pid as number);
      await first.join();
      expect(report[0]).toBe(OK);

      const second = asyncClient(address, report, 1);
      await serve(listener.acceptSync(), second.pid as number);
      await second.join();
      expect(report[1]).toBe(OK);

      const last = listener.lastAcceptedAddress;
      if (name === 'TCP port 0') {
        expect((last as [string, number])[0]).toBe('127.0.0.1');
        expect((last as [string, number])[1]).toBeGreaterThan(0);
      } else {
        expect(last).toBe(''); // a client's socket is unnamed, as in Python
      }
    });
  }

  it('listens on IPv6 loopback; picks a free TCP port with { family: "AF_INET" } and no address; resolves host names', async () => {
    using v6 = new Listener(['::1', 0]);
    expect((v6.address as [string, number])[0]).toBe('::1');
    const pending = v6.accept();
    using client = await Client(v6.address);
    using server = await pending;
    client.send('over IPv6');
    expect(await server.recv()).toBe('over IPv6');
    using v4 = new Listener(null, { family: 'AF_INET' });
    const [, port] = v4.address as [string, number];
    expect(port).toBeGreaterThan(0);
    // Host names resolve: with node:dns for Client, getaddrinfo for ClientSync.
    const accepted = v4.accept();
    using byName = await Client(['localhost', port]);
    using other = await accepted;
    byName.send('by name');
    expect(await other.recv()).toBe('by name');
    const report = shared(1);
    const child = syncClient(['localhost', port], report, 0);
    await serve(v4.acceptSync(), child.pid as number);
    await child.join();
    expect(report[0]).toBe(OK);
  });

  it('serves several pending accept() calls in order, each with its own client', async () => {
    using listener = new Listener();
    const accepts = [listener.accept(), listener.accept(), listener.accept()];
    const children = [0, 1, 2].map((i) =>
      spawnChild(() => {
        const conn = ClientSync(listener.address);
        conn.send(i);
        conn.recvSync();
      }),
    );
    const conns = await Promise.all(accepts);
    const got = await Promise.all(conns.map((c) => c.recv()));
    expect([...got].sort()).toEqual([0, 1, 2]);
    for (const c of conns) c.send('done');
    for (const child of children) await child.join();
    for (const c of conns) c.close();
  });
});

describe('Listener and Client: authkey', () => {
  it('authenticates both ways with the right key, and the connection works after', async () => {
    using listener = new Listener(['127.0.0.1', 0], { authkey: KEY });
    const report = shared(2);
    const a = asyncClient(listener.address, report, 0, KEY);
    await serve(await listener.accept(), a.pid as number);
    const b = syncClient(listener.address, report, 1, Buffer.from(KEY));
    await serve(listener.acceptSync(), b.pid as number);
    await a.join();
    await b.join();
    expect([report[0], report[1]]).toEqual([OK, OK]);
  });

  it('refuses a wrong key with AuthenticationError on both sides, and keeps accepting others', async () => {
    using listener = new Listener(undefined, { authkey: KEY });
    const report = shared(3);
    const wrong = asyncClient(listener.address, report, 0, Buffer.from('a wrong key'));
    const error = await listener.accept().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as AuthenticationError).code).toBe('ERR_AUTHENTICATION');
    await wrong.join();
    expect(report[0]).toBe(AUTH_FAILED);

    const wrongSync = syncClient(listener.address, report, 1, Buffer.from('another wrong key'));
    expect(() => listener.acceptSync()).toThrow(AuthenticationError);
    await wrongSync.join();
    expect(report[1]).toBe(AUTH_FAILED);

    const right = syncClient(listener.address, report, 2, KEY);
    await serve(await listener.accept(), right.pid as number);
    await right.join();
    expect(report[2]).toBe(OK);
  });

  it('a client with a key refuses a listener that answers wrongly (no challenge, or garbage)', async () => {
    using plain = new Listener();
    const report = shared(1);
    const child = spawnChild(async () => {
      try {
        await Client(plain.address, { authkey: KEY });
        Atomics.store(report, 0, OK);
      } catch (error) {
        Atomics.store(report, 0, outcome(error));
      }
    });
    using conn = await plain.accept();
    // What a listener without a key sends: a nodemp frame, not a challenge.
    conn.send('hello, no challenge here');
    await child.join();
    expect(report[0]).toBe(AUTH_FAILED);
  });

  it('survives clients that send garbage, oversized lengths or nothing before authenticating', async () => {
    using listener = new Listener(['127.0.0.1', 0], { authkey: KEY });
    const [, port] = listener.address as [string, number];
    const raw = (payload: Buffer | null): Socket => {
      const socket = createConnection({ host: '127.0.0.1', port });
      socket.on('error', () => {});
      socket.on('connect', () => (payload === null ? socket.end() : socket.end(payload)));
      return socket;
    };
    const header = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeInt32BE(n);
      return b;
    };
    const cases: [Buffer | null, new (...args: never[]) => Error][] = [
      [randomBytes(64 * 1024), AuthenticationError], // a huge length: refused unread
      [Buffer.concat([header(-1), Buffer.alloc(8, 0xff)]), AuthenticationError], // a 64-bit length
      [Buffer.concat([header(40), randomBytes(40)]), AuthenticationError], // well framed, wrong
      [header(200), EOFError], // a length, then the client is gone
      [null, EOFError], // connects and leaves at once
    ];
    for (const [payload, expected] of cases) {
      const socket = raw(payload);
      const error = await listener.accept().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(expected);
      socket.destroy();
    }
    const report = shared(1);
    const good = asyncClient(listener.address, report, 0, KEY);
    await serve(await listener.accept(), good.pid as number);
    await good.join();
    expect(report[0]).toBe(OK);
  });

  it('a listener that gives up at its handshakeTimeout says so: a late Client gets AuthenticationError with timedOut (Unix and TCP)', async () => {
    for (const address of [undefined, ['127.0.0.1', 0] as Address]) {
      using listener = new Listener(address, { authkey: KEY, handshakeTimeout: 200 });
      const report = shared(2);
      const acceptor = spawnChild(async () => {
        const accepted = listener.accept().catch((e: unknown) => e);
        Atomics.store(report, 1, 1);
        const error = await accepted;
        Atomics.store(report, 0, error instanceof AuthenticationError && error.timedOut ? OK : OTHER_ERROR);
      });
      while (Atomics.load(report, 1) === 0) await sleepMs(5);
      const late = await connectUnderWay(() => Client(listener.address, { authkey: KEY }));
      // This process's event loop is held up well past the listener's timeout.
      busySleep(1500);
      const error = await late.outcome;
      expect(error).toBeInstanceOf(AuthenticationError);
      expect((error as AuthenticationError).timedOut).toBe(true);
      expect((error as Error).message).toMatch(/gave up waiting .* handshakeTimeout/);
      await acceptor.join();
      expect(report[0]).toBe(OK);
    }
  });

  it('a listener held up past its handshakeTimeout still takes a client whose answer came in time', async () => {
    using listener = new Listener(['127.0.0.1', 0], { authkey: KEY, handshakeTimeout: 300 });
    const [, port] = listener.address as [string, number];
    const report = shared(2);
    const acceptor = spawnChild(async () => {
      const accepted = listener.accept().catch((e: unknown) => e);
      Atomics.store(report, 1, 1);
      const conn = await accepted;
      Atomics.store(report, 0, conn instanceof Connection ? OK : OTHER_ERROR);
    });
    while (Atomics.load(report, 1) === 0) await sleepMs(5);
    // A raw client, to answer while the listener is stopped: its timer is
    // overdue when it runs again, and the answer waits in its socket.
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    const received: Buffer[] = [];
    socket.on('data', (d) => received.push(d));
    const frame = (payload: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, payload.length]), payload]);
    while (Buffer.concat(received).length < 4 + 11 + 48) await sleepMs(2);
    process.kill(acceptor.pid as number, 'SIGSTOP');
    const challenge = Buffer.concat(received).subarray(4 + 11);
    received.length = 0;
    socket.write(frame(Buffer.concat([Buffer.from('{sha256}'), createHmac('sha256', KEY).update(challenge).digest()])));
    await sleepMs(1000);
    process.kill(acceptor.pid as number, 'SIGCONT');
    while (Buffer.concat(received).length < 4 + 9) await sleepMs(2);
    expect(Buffer.concat(received).subarray(4, 13).toString()).toBe('#WELCOME#');
    socket.destroy();
    await acceptor.join();
    // The raw client left before its own challenge: the listener's accept failed after the welcome.
    expect(report[0]).toBe(OTHER_ERROR);
  });

  it('checks the key argument', () => {
    expect(() => new Listener(undefined, { authkey: 'a string' as never })).toThrow(/options.authkey must be a Buffer or Uint8Array/);
    expect(() => ClientSync('/nonexistent', { authkey: 42 as never })).toThrow(TypeError);
  });
});

describe('Listener and Client: connections, close and descriptors', () => {
  it('wait() reports the accepted connections that have data', async () => {
    using listener = new Listener();
    const release = shared(1);
    const children = [0, 1, 2].map((i) =>
      spawnChild(() => {
        const conn = ClientSync(listener.address);
        while (Atomics.load(release, 0) <= i) busySleep(5);
        conn.send(`from ${i}`);
        conn.recvSync();
      }),
    );
    const conns: Connection[] = [];
    for (let i = 0; i < 3; i++) conns.push(await listener.accept());
    expect(await wait(conns, 50)).toEqual([]);
    Atomics.store(release, 0, 2); // children 0 and 1 send
    let ready: unknown[] = [];
    while (ready.length < 2) {
      ready = await wait(conns, 5000);
      if (ready.length < 2) await sleepMs(10);
    }
    expect(ready.length).toBe(2);
    const texts = await Promise.all((ready as Connection[]).map((c) => c.recv()));
    expect(texts.sort()).toEqual(['from 0', 'from 1']);
    Atomics.store(release, 0, 3);
    // Clients are accepted in the order they connect, not the order they were started.
    const rest = conns.find((c) => !ready.includes(c)) as Connection;
    expect(await wait([rest], 5000)).toEqual([rest]);
    expect(await rest.recv()).toBe('from 2');
    for (const c of conns) c.send('done');
    for (const child of children) await child.join();
    for (const c of conns) c.close();
  });

  it('close() removes the socket file it made, rejects pending accepts, and is idempotent', async () => {
    const listener = new Listener();
    const path = listener.address as string;
    expect(existsSync(path)).toBe(true);
    const pending = listener.accept();
    listener.close();
    listener.close();
    expect(existsSync(path)).toBe(false);
    expect(listener.closed).toBe(true);
    await expect(pending).rejects.toBeInstanceOf(ClosedError);
    expect(() => listener.acceptSync()).toThrow(ClosedError);
    let scopedPath: string;
    {
      using scoped = new Listener();
      scopedPath = scoped.address as string;
      expect(existsSync(scopedPath)).toBe(true);
    }
    expect(existsSync(scopedPath)).toBe(false);
  });

  it('a forked child closing its copy leaves the parent listening, and the socket file in place', async () => {
    using listener = new Listener();
    const child = spawnChild(() => listener.close());
    await child.join();
    expect(existsSync(listener.address as string)).toBe(true);
    const report = shared(1);
    const client = syncClient(listener.address, report, 0);
    await serve(await listener.accept(), client.pid as number);
    await client.join();
    expect(report[0]).toBe(OK);
  });

  it('leaks no descriptors over listens, accepts, refusals and closes', async () => {
    const round = async (): Promise<void> => {
      for (const [, make] of addresses) {
        using listener = new Listener(make(), { authkey: KEY });
        const report = shared(2);
        const bad = asyncClient(listener.address, report, 0, Buffer.from('wrong'));
        await listener.accept().catch(() => {});
        const good = syncClient(listener.address, report, 1, KEY);
        await serve(await listener.accept(), good.pid as number);
        await bad.join();
        await good.join();
        const pending = listener.accept();
        listener.close();
        await pending.catch(() => {});
      }
      await Client(['127.0.0.1', await closedPort()]).catch(() => {});
    };
    await round(); // the first round opens what stays open for the process (pidfds' machinery, ...)
    const before = withoutMemfd(openFds());
    await round();
    await round();
    expect(withoutMemfd(openFds()).filter((fd) => !before.includes(fd))).toEqual([]);
  });
});

async function closedPort(): Promise<number> {
  const listener = new Listener(['127.0.0.1', 0]);
  const [, port] = listener.address as [string, number];
  listener.close();
  return port;
}

describe('Listener and Client: errors', () => {
  it('a bad address is a TypeError that says what was expected', () => {
    for (const bad of [42, '', ['host'], ['host', 1, 2], { host: 'x', port: 1 }, 'a\0b']) {
      expect(() => new Listener(bad as never)).toThrow(/Unix socket path.*abstract name.*\[host, port\]/);
      expect(() => ClientSync(bad as never)).toThrow(TypeError);
    }
    expect(() => new Listener(['127.0.0.1', 70000])).toThrow(RangeError);
    expect(() => new Listener('/tmp/x', { family: 'AF_INET' })).toThrow(/options.family is not 'AF_UNIX'/);
    expect(() => new Listener(undefined, { family: 'AF_APPLETALK' as never })).toThrow(/'AF_UNIX', 'AF_INET' or 'AF_INET6'/);
    expect(() => new Listener(undefined, { backlog: -1 })).toThrow(RangeError);
  });

  it('a refused connection is an OSError ECONNREFUSED (sync and async); a missing socket file ENOENT', async () => {
    const port = await closedPort();
    const syncError = (() => {
      try {
        ClientSync(['127.0.0.1', port]);
      } catch (error) {
        return error;
      }
    })();
    expect(syncError).toBeInstanceOf(OSError);
    expect((syncError as OSError).code).toBe('ECONNREFUSED');
    const asyncError = await Client(['127.0.0.1', port]).catch((e: unknown) => e);
    expect(asyncError).toBeInstanceOf(OSError);
    expect((asyncError as OSError).code).toBe('ECONNREFUSED');
    expect(() => ClientSync('/nonexistent/nodemp.sock')).toThrow(FileNotFoundError);
    await expect(Client('\0nodemp-no-such-abstract-name')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('an address in use is an OSError EADDRINUSE; an unknown host is ENOTFOUND', async () => {
    using listener = new Listener(['127.0.0.1', 0]);
    expect(() => new Listener(listener.address)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
    expect(() => ClientSync(['no-such-host.invalid', 1])).toThrow(expect.objectContaining({ code: 'ENOTFOUND' }));
    const asyncError = await Client(['no-such-host.invalid', 1]).catch((e: unknown) => e);
    expect(asyncError).toBeInstanceOf(OSError);
    expect((asyncError as OSError).code).toBe('ENOTFOUND');
  });
});

// A Python 3.12+ peer speaks the same handshake: checked when one is installed.
const python = ['python3.13', 'python3.12', 'python3', process.env.NODEMP_PYTHON ?? ''].find((exe) => {
  if (exe === '') return false;
  const r = spawnSync(exe, ['-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)']);
  return r.status === 0;
});

describe.skipIf(python === undefined)('Listener and Client: a Python peer', () => {
  it('a Python Client authenticates against a nodemp Listener, and a wrong Python key is refused', async () => {
    using listener = new Listener(['127.0.0.1', 0], { authkey: KEY });
    const [, port] = listener.address as [string, number];
    const script = (key: string) =>
      `from multiprocessing.connection import Client\ntry:\n  Client(('127.0.0.1', ${port}), authkey=${key}).close(); print('ok')\nexcept Exception as e: print(type(e).__name__)`;
    const run = (key: string): Promise<string> =>
      new Promise((resolve) => {
        const child = spawn(python as string, ['-c', script(key)]);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('exit', () => resolve(out.trim()));
      });
    const good = run(`b'${KEY.toString()}'`);
    (await listener.accept()).close();
    expect(await good).toBe('ok');
    const bad = run("b'wrong'");
    await expect(listener.accept()).rejects.toBeInstanceOf(AuthenticationError);
    expect(await bad).toBe('AuthenticationError');
  });
});
