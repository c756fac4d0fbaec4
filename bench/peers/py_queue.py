# Python's multiprocessing.Queue and Pipe, the peers of bench/queue.js and
# bench/pipe.js, timed the same way. Subcommands, given as NAME:ARG:ARG, any
# number of them in one run:
#   queue KIND P C N      P producers and C consumers on one mp.Queue, N messages
#                         in all; wall time per message in ns from the gate to
#                         the last message consumed
#   queue_ping ROUNDS     round trip through two mp.Queues between two processes, us
#   pipe KIND N           one producer child sends N messages through an mp.Pipe,
#                         a consumer child receives them; ns per message
#   pipe_ping ROUNDS      round trip over one duplex mp.Pipe between two processes, us
# KIND: obj ({"i": i}), b64 (64 bytes), mib (1 MiB), mib16 (16 MiB).
# Each gives one JSON object of samples, printed as a list: the caller runs this once
# per pass, between its own rounds, so a noisy stretch of the machine's time
# does not land on one side only. Counts are checked; a mismatch exits non-zero.
import json
import multiprocessing as mp
import struct
import sys
import time

ctx = mp.get_context("fork")
WARMUP = 200
SIZES = {"b64": 64, "mib": 1 << 20, "mib16": 16 << 20}


def make_message(kind):
    # One payload per process, with the sequence number stamped in its first
    # four bytes: what the Node side does with its reused Buffer.
    if kind == "obj":
        return lambda i: {"i": i}
    buf = bytearray(SIZES[kind])

    def message(i):
        struct.pack_into("<I", buf, 0, i)
        return bytes(buf)

    return message


def number_of(kind, m):
    if kind == "obj":
        return m["i"]
    if len(m) != SIZES[kind]:
        sys.exit(f"py_queue: a {kind} message of {len(m)} bytes")
    return struct.unpack_from("<I", m, 0)[0]


def gated(targets, n_consumers):
    """Starts every target, opens the gate once all wait at it, returns ns from then to the last consumer's done."""
    ready, gate, done = ctx.Semaphore(0), ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=t, args=(ready, gate, done, *a), daemon=True) for t, a in targets]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    gate.set()
    for _ in range(n_consumers):
        done.acquire()
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"py_queue: a child exited with {p.exitcode}")
    return elapsed


def producer(ready, gate, done, q, kind, start, count):
    message = make_message(kind)
    ready.release()
    gate.wait()
    put = q.put
    for i in range(start, start + count):
        put(message(i))


def consumer(ready, gate, done, q, kind, count, ordered, results):
    ready.release()
    gate.wait()
    get = q.get
    total = 0
    for k in range(count):
        i = number_of(kind, get())
        if ordered and i != k:
            sys.exit(f"py_queue: message {i} arrived where {k} was expected")
        total += i
    done.release()
    results.put((count, total))


def cmd_queue(kind, p, c, n):
    q, results = ctx.Queue(), ctx.Queue()
    per_p, per_c = n // p, n // c
    targets = [(producer, (q, kind, j * per_p, per_p)) for j in range(p)]
    targets += [(consumer, (q, kind, per_c, p == 1 and c == 1, results)) for _ in range(c)]
    elapsed = gated(targets, c)
    got = [results.get() for _ in range(c)]
    count, total = sum(g[0] for g in got), sum(g[1] for g in got)
    if count != n or total != n * (n - 1) // 2:
        sys.exit(f"py_queue: consumers got {count} messages summing to {total}, expected {n}")
    return {"ns_per_msg": [elapsed * 1e9 / n]}


def echo(q_in, q_out, count):
    get, put = q_in.get, q_out.put
    for _ in range(count):
        put(get())


def cmd_queue_ping(rounds):
    a, b = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(a, b, WARMUP + rounds), daemon=True)
    p.start()
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        a.put({"i": i})
        if b.get()["i"] != i:
            sys.exit("py_queue: ping-pong answer out of order")
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    return {"round_trip_us": samples}


def pipe_producer(ready, gate, done, conn, kind, count):
    message = make_message(kind)
    ready.release()
    gate.wait()
    if kind == "obj":
        send = conn.send
        for i in range(count):
            send(message(i))
    else:
        send = conn.send_bytes
        for i in range(count):
            send(message(i))


def pipe_consumer(ready, gate, done, conn, kind, count):
    ready.release()
    gate.wait()
    recv = conn.recv if kind == "obj" else conn.recv_bytes
    for k in range(count):
        i = number_of(kind, recv())
        if i != k:
            sys.exit(f"py_queue: pipe message {i} arrived where {k} was expected")
    done.release()


def cmd_pipe(kind, n):
    r, w = ctx.Pipe(duplex=False)
    elapsed = gated([(pipe_producer, (w, kind, n)), (pipe_consumer, (r, kind, n))], 1)
    return {"ns_per_msg": [elapsed * 1e9 / n]}


def pipe_echo(conn, count):
    recv, send = conn.recv, conn.send
    for _ in range(count):
        send(recv())


def cmd_pipe_ping(rounds):
    a, b = ctx.Pipe()
    p = ctx.Process(target=pipe_echo, args=(b, WARMUP + rounds), daemon=True)
    p.start()
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        a.send({"i": i})
        if a.recv()["i"] != i:
            sys.exit("py_queue: pipe ping-pong answer out of order")
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    return {"round_trip_us": samples}


COMMANDS = {"queue": cmd_queue, "queue_ping": cmd_queue_ping, "pipe": cmd_pipe, "pipe_ping": cmd_pipe_ping}


def run(spec):
    name, *args = spec.split(":")
    if name not in COMMANDS:
        sys.exit(f"py_queue: unknown subcommand {name}")
    return COMMANDS[name](*(a if a in SIZES or a == "obj" else int(a) for a in args))


if __name__ == "__main__":
    # One interpreter runs every subcommand given (NAME:ARG:ARG ...), so the
    # run pays Python's start-up once per pass; prints a JSON list of results.
    print(json.dumps([run(spec) for spec in sys.argv[1:]]))
