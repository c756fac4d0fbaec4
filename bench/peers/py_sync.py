# Python's multiprocessing synchronization primitives, the peers of
# bench/sync-*.js, timed the same way. Subcommands:
#   lock ROUNDS ITERS          uncontended acquire+release, ns/op per round
#   value N K ROUNDS           Value increment under its lock, N processes x K each, ns per increment per round
#   event ROUNDS               Event ping-pong between two processes, one-way latency (round trip / 2) in us
#   semaphore ROUNDS           Semaphore ping-pong between two processes, round trip in us
# Each prints one JSON object of sample lists on stdout: the caller runs this
# in several passes between its own and takes the median of all samples, so a
# noisy stretch of the machine's time does not land on one side only.
import json
import multiprocessing as mp
import sys
import threading
import time

ctx = mp.get_context("fork")
WARMUP = 200


def lock_ns(lock, rounds, iters):
    # Bound methods hoisted so the loop measures the lock, not attribute lookups.
    acquire, release = lock.acquire, lock.release
    samples = []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        for _ in range(iters):
            acquire()
            release()
        if r > 0:
            samples.append((time.perf_counter() - t0) * 1e9 / iters)
    return samples


def cmd_lock(rounds, iters):
    locks = {
        "mp_lock": ctx.Lock(),
        "mp_rlock": ctx.RLock(),
        "threading_lock": threading.Lock(),
        "threading_rlock": threading.RLock(),
    }
    return {name: lock_ns(lock, rounds, iters) for name, lock in locks.items()}


def incrementer(v, k, ready, gate, done):
    ready.release()
    gate.wait()
    for _ in range(k):
        with v.get_lock():
            v.value += 1
    done.release()


def cmd_value(n, k, rounds):
    v = ctx.Value("i", 0)
    samples = []
    for _ in range(rounds):
        v.value = 0
        ready, gate, done = ctx.Semaphore(0), ctx.Event(), ctx.Semaphore(0)
        procs = [ctx.Process(target=incrementer, args=(v, k, ready, gate, done), daemon=True) for _ in range(n)]
        for p in procs:
            p.start()
        # Forks are out of the timing: the clock starts when every child waits at the gate.
        for _ in range(n):
            ready.acquire()
        t0 = time.perf_counter()
        gate.set()
        for _ in range(n):
            done.acquire()
        samples.append((time.perf_counter() - t0) * 1e9 / (n * k))
        for p in procs:
            p.join()
        if v.value != n * k:
            sys.exit(f"py_sync value: final value {v.value}, expected {n * k}")
    return {"ns_per_op": samples}


def event_child(a, b, count):
    for _ in range(count):
        a.wait()
        a.clear()
        b.set()


def cmd_event(rounds):
    a, b = ctx.Event(), ctx.Event()
    p = ctx.Process(target=event_child, args=(a, b, WARMUP + rounds), daemon=True)
    p.start()
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        a.set()
        b.wait()
        b.clear()
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6 / 2)
    p.join()
    return {"one_way_us": samples}


def semaphore_child(s1, s2, count):
    for _ in range(count):
        s1.acquire()
        s2.release()


def cmd_semaphore(rounds):
    s1, s2 = ctx.Semaphore(0), ctx.Semaphore(0)
    p = ctx.Process(target=semaphore_child, args=(s1, s2, WARMUP + rounds), daemon=True)
    p.start()
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        s1.release()
        s2.acquire()
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    p.join()
    return {"round_trip_us": samples}


if __name__ == "__main__":
    cmd, args = sys.argv[1], [int(a) for a in sys.argv[2:]]
    commands = {"lock": cmd_lock, "value": cmd_value, "event": cmd_event, "semaphore": cmd_semaphore}
    print(json.dumps(commands[cmd](*args)))
