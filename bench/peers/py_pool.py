# Python's multiprocessing.Pool (fork), the peer of bench/pool.js, timed the
# same way. Arguments: PASSES N_TASKS APPLY_ROUNDS CPU_TASKS CPU_ITERS.
# Prints one JSON object of sample lists: per-task time of map() at chunksize 1
# and at the default chunksize (us), apply_async().get() round trips (us), and
# the wall time of a CPU-bound map against the same work in this process (ms).
import json
import multiprocessing as mp
import sys
import time


def square(x):
    return x * x


def burn(n):
    x = 0
    for i in range(n):
        x = (x + i * i) % 1000003
    return x


def main():
    passes, n, apply_rounds, cpu_tasks, cpu_iters = map(int, sys.argv[1:6])
    out = {"map_cs1_us": [], "map_default_us": [], "apply_us": [], "cpu_single_ms": [], "cpu_pool_ms": []}
    items = list(range(n))
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(square, items[:1000], chunksize=1)
        for _ in range(passes):
            t0 = time.perf_counter()
            r = pool.map(square, items, chunksize=1)
            out["map_cs1_us"].append((time.perf_counter() - t0) * 1e6 / n)
            assert r[-1] == (n - 1) ** 2
            t0 = time.perf_counter()
            pool.map(square, items)
            out["map_default_us"].append((time.perf_counter() - t0) * 1e6 / n)
            for i in range(apply_rounds):
                t0 = time.perf_counter()
                pool.apply_async(square, (i,)).get()
                out["apply_us"].append((time.perf_counter() - t0) * 1e6)
            work = [cpu_iters] * cpu_tasks
            t0 = time.perf_counter()
            single = [burn(k) for k in work]
            out["cpu_single_ms"].append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            assert pool.map(burn, work, chunksize=1) == single
            out["cpu_pool_ms"].append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
