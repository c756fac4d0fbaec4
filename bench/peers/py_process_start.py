# Python's multiprocessing Process start()+join() with the given start method.
import json
import multiprocessing as mp
import statistics
import sys
import time


def noop():
    pass


if __name__ == "__main__":
    method, rounds = sys.argv[1], int(sys.argv[2])
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
