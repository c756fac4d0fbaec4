// What happens to nodemp's own objects put in a message (Queue, Pipe, Pool
// arguments and results): shared objects refuse to be copied, SharedMemory and
// ShareableList cross by name, nodemp's errors cross as themselves.
import { afterEach, describe, expect, it } from 'vitest';
import {
  Array as SharedArray,
  Barrier,
  BoundedSemaphore,
  BufferTooShort,
  ClosedError,
  Condition,
  Event,
  FileNotFoundError,
  JoinableQueue,
  Lock,
  OSError,
  Pipe,
  Pool,
  PoolError,
  Process,
  Queue,
  QueueEmpty,
  RawArray,
  RawValue,
  RemoteTraceback,
  RLock,
  Semaphore,
  SerializationError,
  ShareableList,
  SharedMemory,
  ShutDown,
  SimpleQueue,
  SyncError,
  TimeoutError,
  Value,
  WorkerDiedError,
} from '../dist/index.js';
import { shmEntries } from './helpers.js';

let pools: Pool[] = [];
afterEach(async () => {
  for (const p of pools) await p.terminate();
  pools = [];
});

// Every object that is shared by inheritance only, made fresh for each use.
const inherited: [string, () => object][] = [
  ['Lock', () => new Lock()],
  ['RLock', () => new RLock()],
  ['Semaphore', () => new Semaphore(2)],
  ['BoundedSemaphore', () => new BoundedSemaphore(1)],
  ['Event', () => new Event()],
  ['Condition', () => new Condition()],
  ['Barrier', () => new Barrier(2)],
  ['Value', () => new Value('i', 1)],
  ['RawValue', () => new RawValue('d', 1)],
  ['Array', () => new SharedArray('i', [1, 2])],
  ['RawArray', () => new RawArray('i', 2)],
  ['Queue', () => new Queue()],
  ['JoinableQueue', () => new JoinableQueue()],
  ['SimpleQueue', () => new SimpleQueue()],
  ['Connection', () => Pipe()[0]],
  ['Process', () => new Process({ target: () => {} })],
];

describe('shared objects in a message', () => {
  it.each(inherited)('a %s put in a Queue or sent through a Pipe throws SerializationError naming it; nothing is lost', (name, make) => {
    for (const serializer of ['msgpack', 'v8'] as const) {
      const q = new Queue({ maxsize: 3, serializer });
      q.putSync('before');
      for (const message of [make(), { nested: [1, { deep: make() }] }]) {
        const error = (() => {
          try {
            q.putSync(message);
          } catch (e) {
            return e;
          }
          return null;
        })();
        expect(error, `${name} with ${serializer}`).toBeInstanceOf(SerializationError);
        expect(error).toBeInstanceOf(TypeError);
        expect((error as SerializationError).code).toBe('ERR_NOT_SERIALIZABLE');
        expect((error as Error).message).toContain(name);
        expect((error as Error).message).toMatch(/before start\(\).*args/);
      }
      // The failed puts took no room and left no message behind.
      expect(q.qsize()).toBe(1);
      q.putSync('after');
      expect([q.getSync(), q.getSync()]).toEqual(['before', 'after']);
      expect(q.empty()).toBe(true);
    }
    const [a, b] = Pipe();
    expect(() => a.send({ x: make() })).toThrow(SerializationError);
    a.send('still open');
    expect(b.recvSync()).toBe('still open');
    a.close();
    b.close();
  });

  it('is found however deep it lies, past the size at which the codec stops looking for cycles', () => {
    const q = new Queue();
    const big = Array.from({ length: 600 }, (_, i) => ({ i }));
    (big[599] as Record<string, unknown>).lock = new Lock();
    expect(() => q.putSync(big)).toThrow(/a Lock cannot be put/);
    const wide = new Map<number, unknown>(Array.from({ length: 300 }, (_, i) => [i, new Set([i])]));
    wide.set(300, new Set([new Event()]));
    expect(() => q.putSync(wide)).toThrow(/an Event cannot be put/);
    expect(q.qsize()).toBe(0);
  });

  it('a Lock as a Pool argument rejects that call only; the pool goes on', async () => {
    const p = new Pool({ processes: 1 });
    pools.push(p);
    const echo = (x: unknown): unknown => x;
    await expect(p.apply(echo, [new Lock()])).rejects.toThrow(SerializationError);
    await expect(p.map(echo, [1, new Value('i', 0)])).rejects.toThrow(/a Value cannot be put/);
    expect(await p.apply(echo, [7])).toBe(7);
  });
});

describe('SharedMemory and ShareableList in a message', () => {
  it('cross by name: the receiver in another process attaches to the same segment', async () => {
    const before = shmEntries();
    const shm = new SharedMemory({ create: true, size: 64 });
    const list = new ShareableList([1, 'two', 3.5]);
    shm.buf[0] = 7;
    const q = new Queue();
    const [parentEnd, childEnd] = Pipe();
    const child = new Process({
      daemon: true,
      target: async () => {
        const got = (await q.get()) as { shm: SharedMemory; list: ShareableList };
        got.shm.buf[1] = got.shm.buf[0] + 1;
        got.list.set(1, 'TWO');
        childEnd.send(got.shm);
        const viaPipe = childEnd.recvSync() as ShareableList;
        viaPipe.set(0, 100);
        childEnd.send([got.shm instanceof SharedMemory, got.list instanceof ShareableList, got.shm.name, viaPipe.shm.name]);
        got.shm.close();
        got.list.shm.close();
        viaPipe.shm.close();
      },
    });
    child.start();
    q.putSync({ shm, list });
    const back = (await parentEnd.recv()) as SharedMemory;
    parentEnd.send(list);
    const [isShm, isList, shmName, listName] = (await parentEnd.recv()) as [boolean, boolean, string, string];
    expect(await child.join()).toBe(0);
    expect([isShm, isList, shmName, listName]).toEqual([true, true, shm.name, list.shm.name]);
    expect(back).toBeInstanceOf(SharedMemory);
    expect(back.name).toBe(shm.name);
    expect(back.buf[1]).toBe(8);
    expect(shm.buf[1]).toBe(8);
    expect(list.get(1)).toBe('TWO');
    expect(list.get(0)).toBe(100);
    back.close();
    shm.close();
    shm.unlink();
    list.shm.close();
    list.shm.unlink();
    parentEnd.close();
    childEnd.close();
    expect(shmEntries()).toEqual(before);
  });

  it('a segment unlinked before the message is taken: get() throws FileNotFoundError, and the queue goes on', () => {
    const q = new Queue();
    const shm = new SharedMemory({ create: true, size: 8 });
    q.putSync(shm);
    q.putSync('next');
    shm.close();
    shm.unlink();
    expect(() => q.getSync()).toThrow(FileNotFoundError);
    expect(q.getSync()).toBe('next');
  });

  it("the 'v8' serializer refuses them with a clear error", () => {
    const q = new Queue({ serializer: 'v8' });
    const shm = new SharedMemory({ create: true, size: 8 });
    try {
      expect(() => q.putSync({ shm })).toThrow(/SharedMemory objects cross processes by name.*'msgpack'/);
    } finally {
      shm.close();
      shm.unlink();
    }
  });
});

// Every error class of nodemp's, made as a worker or a producer would throw it.
const errors: [string, () => Error, Record<string, unknown>][] = [
  ['OSError', () => new OSError('EAGAIN', 11, 'read', 'try again'), { code: 'EAGAIN', errno: 11, syscall: 'read' }],
  ['FileNotFoundError', () => new FileNotFoundError('ENOENT', 2, 'shm_open', 'no such segment'), { code: 'ENOENT', errno: 2 }],
  ['SyncError', () => new SyncError('ERR_NOT_OWNER', 'not yours'), { code: 'ERR_NOT_OWNER' }],
  ['TimeoutError', () => new TimeoutError('too slow'), { code: 'ERR_TIMEOUT' }],
  ['QueueEmpty', () => new QueueEmpty(), { code: 'ERR_QUEUE_EMPTY' }],
  ['ShutDown', () => new ShutDown(), { code: 'ERR_QUEUE_SHUT_DOWN' }],
  ['ClosedError', () => new ClosedError('closed'), { code: 'ERR_CLOSED' }],
  ['BufferTooShort', () => new BufferTooShort('short', Buffer.from('whole message')), { code: 'ERR_BUFFER_TOO_SHORT', data: Buffer.from('whole message') }],
  ['SerializationError', () => new SerializationError('cannot'), { code: 'ERR_NOT_SERIALIZABLE' }],
  ['PoolError', () => new PoolError('ERR_POOL_CLOSED', 'closed pool'), { code: 'ERR_POOL_CLOSED' }],
  ['WorkerDiedError', () => new WorkerDiedError('died', 1234, -9), { code: 'ERR_WORKER_DIED', pid: 1234, exitCode: -9 }],
];

const classes: Record<string, new (...args: never[]) => Error> = {
  OSError,
  FileNotFoundError,
  SyncError,
  TimeoutError,
  QueueEmpty,
  ShutDown,
  ClosedError,
  BufferTooShort,
  SerializationError,
  PoolError,
  WorkerDiedError,
};

describe("nodemp's errors between processes", () => {
  it.each(errors)('a %s crosses a Queue and a Pipe as itself, with its fields and stack', (name, make, fields) => {
    const original = make();
    for (const serializer of ['msgpack'] as const) {
      const q = new Queue({ serializer });
      q.putSync({ error: original });
      const { error } = q.getSync() as { error: Error };
      expect(error).toBeInstanceOf(classes[name]);
      expect(error.name).toBe(name);
      expect(error.message).toBe(original.message);
      expect(error.stack).toBe(original.stack);
      expect(error).toMatchObject(fields);
    }
    const [a, b] = Pipe();
    a.send(original);
    const viaPipe = b.recvSync() as Error;
    expect(viaPipe).toBeInstanceOf(classes[name]);
    expect(viaPipe).toMatchObject(fields);
    a.close();
    b.close();
  });

  it.each(errors)('a %s thrown by a Pool task rejects as itself, fields kept, the stack in a RemoteTraceback', async (name, make, fields) => {
    const p = new Pool({ processes: 1 });
    pools.push(p);
    const error = await p.apply(() => {
      throw make();
    }, []).catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(classes[name]);
    expect(error.name).toBe(name);
    expect(error).toMatchObject(fields);
    expect(error.cause).toBeInstanceOf(RemoteTraceback);
  });

  it("an error only named like one of nodemp's (a DOMException TimeoutError, a user's OSError) is not made one", async () => {
    const p = new Pool({ processes: 1 });
    pools.push(p);
    const timeout = await p.apply(() => {
      throw new DOMException('timed out', 'TimeoutError');
    }, []).catch((e: unknown) => e as Error);
    expect(timeout).not.toBeInstanceOf(TimeoutError);
    expect(timeout.name).toBe('TimeoutError');
    const q = new Queue();
    class OSErrorLike extends Error {
      code = 'EIO';
      constructor() {
        super('not nodemp');
        this.name = 'OSError';
      }
    }
    q.putSync(new OSErrorLike());
    const got = q.getSync() as Error;
    expect(got).not.toBeInstanceOf(OSError);
    expect(got.name).toBe('OSError');
  });

  it('a result that cannot be sent back is a real SerializationError, and a TypeError', async () => {
    const p = new Pool({ processes: 1 });
    pools.push(p);
    const error = await p.apply(() => () => 42, []).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SerializationError);
    expect(error).toBeInstanceOf(TypeError);
    expect(error).toMatchObject({ name: 'SerializationError', code: 'ERR_NOT_SERIALIZABLE' });
  });

  it("a user's error keeps its name and its data fields; fields that are not data are left out", async () => {
    const p = new Pool({ processes: 1 });
    pools.push(p);
    const error = (await p.apply(() => {
      class ParseError extends Error {
        line = 3;
        detail = { nested: true };
        socket = () => {};
        constructor() {
          super('bad input');
          this.name = 'ParseError';
        }
      }
      throw Object.assign(new ParseError(), { code: 'E_PARSE' });
    }, []).catch((e: unknown) => e)) as Error & Record<string, unknown>;
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ name: 'ParseError', message: 'bad input', line: 3, code: 'E_PARSE' });
    expect(error.detail).toBeUndefined();
    expect(error.socket).toBeUndefined();
  });
});
