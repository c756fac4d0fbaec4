# Python's multiprocessing Process start()+join() with the given start method,
# or with "raw" the bare os.fork()/os._exit()/os.waitpid() under it.
import json
import multiprocessing as mp
import os
import statistics
import sys
import time


def noop():
    pass


def raw_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    method, rounds = sys.argv[1], int(sys.argv[2])
    if method == "raw":
        for _ in range(2):
            raw_fork()
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            raw_fork()
            samples.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"median_ms": statistics.median(samples)}))
        sys.exit(0)
    ctx = mp.get_context(method)
    for _ in range(2):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        samples.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"median_ms": statistics.median(samples)}))
