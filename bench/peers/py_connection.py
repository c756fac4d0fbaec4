# Python's multiprocessing.connection, the peer of bench/connection.js, timed
# the same way. Subcommands, given as NAME:ARG:ARG, any number of them in one run:
#   auth ROUNDS          Client(address, authkey) + close() against a Listener
#                        (127.0.0.1, port 0) accepting in a forked child, us each
#   connect ROUNDS       the same without an authkey: the connect and close alone
#                        (backlog 1024, as bench/connection.js: the client does not
#                        wait for the accept, and may run ahead of it)
#   ping FAMILY ROUNDS [PLACEMENT]
#                        round trip of {"i": i} (send, then recv of the echo) to a
#                        forked child that accepted the connection; FAMILY tcp
#                        (127.0.0.1, port 0) or unix (a socket file), us.
#                        PLACEMENT: free (the scheduler's choice, the default),
#                        apart (the two processes pinned to two CPUs) or same
#                        (both pinned to one CPU)
# Each gives one JSON object of samples, printed as a list: the caller runs this
# once per pass, between its own rounds, so a noisy stretch of the machine's
# time does not land on one side only. "auth" also names the digest this Python
# authenticates with (3.11 and older: HMAC-MD5; 3.12 and newer: HMAC-SHA256).
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Client, Listener

ctx = mp.get_context("fork")
WARMUP = 200
AUTHKEY = b"nodemp bench authkey"
ADDRESSES = {"tcp": lambda: Listener(("127.0.0.1", 0)), "unix": lambda: Listener(family="AF_UNIX")}
PLACEMENTS = ("free", "apart", "same")


def digest():
    return "HMAC-SHA256" if sys.version_info >= (3, 12) else "HMAC-MD5"


def accept_and_close(listener, count):
    for _ in range(count):
        listener.accept().close()


def forked(target, *args):
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def joined(p):
    p.join()
    if p.exitcode != 0:
        sys.exit(f"py_connection: a child exited with {p.exitcode}")


def connect_rounds(rounds, authkey):
    listener = Listener(("127.0.0.1", 0), backlog=1 if authkey else 1024, authkey=authkey)
    p = forked(accept_and_close, listener, WARMUP + rounds)
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        Client(listener.address, authkey=authkey).close()
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    joined(p)
    listener.close()
    return samples


def cmd_auth(rounds):
    return {"us": connect_rounds(rounds, AUTHKEY), "digest": digest()}


def cmd_connect(rounds):
    return {"us": connect_rounds(rounds, None)}


def echo(listener, count, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conn = listener.accept()
    recv, send = conn.recv, conn.send
    for _ in range(count):
        send(recv())
    conn.close()


def cmd_ping(family, rounds, placement="free"):
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    if placement != "free":
        os.sched_setaffinity(0, {cpus[0]})
    listener = ADDRESSES[family]()
    p = forked(echo, listener, WARMUP + rounds, cpus[1] if placement == "apart" else None)
    conn = Client(listener.address)
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        conn.send({"i": i})
        if conn.recv()["i"] != i:
            sys.exit("py_connection: ping-pong answer out of order")
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    conn.close()
    joined(p)
    listener.close()
    os.sched_setaffinity(0, allowed)
    return {"round_trip_us": samples}


COMMANDS = {"auth": cmd_auth, "connect": cmd_connect, "ping": cmd_ping}


def run(spec):
    name, *args = spec.split(":")
    if name not in COMMANDS:
        sys.exit(f"py_connection: unknown subcommand {name}")
    return COMMANDS[name](*(a if a in ADDRESSES or a in PLACEMENTS else int(a) for a in args))


if __name__ == "__main__":
    print(json.dumps([run(spec) for spec in sys.argv[1:]]))
