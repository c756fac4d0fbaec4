# Python's multiprocessing fork start()+join() with a parent holding `mb` MB of touched memory.
import json
import multiprocessing as mp
import statistics
import sys
import time


def noop():
    pass


if __name__ == "__main__":
    mb, rounds = int(sys.argv[1]), int(sys.argv[2])
    keep = b"\x01" * (mb << 20)
    ctx = mp.get_context("fork")
    samples = []
    for i in range(rounds + 2):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if i >= 2:
            samples.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"median_ms": statistics.median(samples), "kept": len(keep)}))
