# Python's multiprocessing (fork), the peer of bench/idle-cpu.js, measured the
# same way. Subcommands:
#   pool WINDOW_MS TICK_MS  mp.Pool(2) given one tiny task (apply_async().get())
#                           every TICK_MS for WINDOW_MS
#   blocked WINDOW_MS       a child process blocked in mp.Queue().get() for WINDOW_MS
# Prints a JSON list, one object per subcommand: CPU seconds used over the
# window (pool: by the parent and its workers together, and by the parent alone,
# its main thread and the pool's handler threads; blocked: by the child) and
# the window's actual wall time (ms).
import json
import multiprocessing as mp
import os
import sys
import time

ctx = mp.get_context("fork")


def process_cpu_ns(pid):
    # The scheduler's count (ns) over the process's live threads, as
    # bench/lib.js's processCpuNs: /proc/<pid>/stat only has clock ticks.
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return ns


def square(x):
    return x * x


def cmd_pool(window_ms, tick_ms):
    with ctx.Pool(2) as pool:
        # Both workers up before the window opens.
        pool.map(square, range(100), chunksize=1)
        pids = [w.pid for w in pool._pool]
        workers0 = sum(process_cpu_ns(pid) for pid in pids)
        parent0 = time.process_time()
        t0 = time.perf_counter()
        for k in range(1, window_ms // tick_ms + 1):
            wait = t0 + k * tick_ms / 1e3 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if pool.apply_async(square, (k,)).get() != k * k:
                sys.exit("py_idle_cpu: wrong result")
        wall_ms = (time.perf_counter() - t0) * 1e3
        parent_s = time.process_time() - parent0
        workers_s = (sum(process_cpu_ns(pid) for pid in pids) - workers0) / 1e9
    return {"total_s": parent_s + workers_s, "parent_s": parent_s, "wall_ms": wall_ms}


def wait_for_message(ready, q):
    ready.set()
    q.get()


def cmd_blocked(window_ms):
    ready = ctx.Event()
    q = ctx.Queue()
    p = ctx.Process(target=wait_for_message, args=(ready, q), daemon=True)
    p.start()
    ready.wait()
    cpu0 = process_cpu_ns(p.pid)
    t0 = time.perf_counter()
    time.sleep(window_ms / 1e3)
    cpu_s = (process_cpu_ns(p.pid) - cpu0) / 1e9
    wall_ms = (time.perf_counter() - t0) * 1e3
    q.put(None)
    p.join()
    return {"cpu_s": cpu_s, "wall_ms": wall_ms}


COMMANDS = {"pool": cmd_pool, "blocked": cmd_blocked}


def run(spec):
    name, *args = spec.split(":")
    if name not in COMMANDS:
        sys.exit(f"py_idle_cpu: unknown subcommand {name}")
    return COMMANDS[name](*map(int, args))


if __name__ == "__main__":
    print(json.dumps([run(spec) for spec in sys.argv[1:]]))
