# Python's side of bench/fork-aftermath.js: a parent that keeps writing across
# its heap starts a multiprocessing fork child on a fixed schedule, and its
# system time and page faults are counted. Subcommand, given as NAME:ARG:ARG:
#   run FORK_EVERY_MS SECONDS OBJECTS
#                        OBJECTS small dicts make the heap; a child (which
#                        sleeps 2 s) every FORK_EVERY_MS ms, none for 0; counted
#                        over SECONDS after 2 s of warm-up
# Prints a list of one JSON object per subcommand, with the fields of the Node side.
import json
import multiprocessing as mp
import sys
import time


def rss_mb():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def stat():
    with open("/proc/self/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[7]), int(fields[12])


def child():
    time.sleep(2)


def run(fork_every_ms, seconds, count):
    keep = [{"a": i, "b": "x" + str(i % 1000), "c": [i]} for i in range(count)]
    rss = rss_mb()
    ctx = mp.get_context("fork")
    alive, started, j, due = [], 0, 0, 1
    t_start = time.time()
    begin = t_start + 2
    end = begin + seconds
    a = None
    while time.time() < end:
        if a is None and time.time() >= begin:
            a, t0, s0 = stat(), time.time(), started
        # The parent's own work: it writes across its heap and allocates a little every few ms.
        for _ in range(20000):
            j = (j + 7919) % len(keep)
            keep[j]["a"] += 1
        [{"i": i} for i in range(2000)]
        alive = [p for p in alive if p.is_alive()]
        if fork_every_ms > 0 and time.time() >= t_start + due * fork_every_ms / 1000:
            due += 1
            if len(alive) < 15:
                p = ctx.Process(target=child)
                p.start()
                alive.append(p)
                started += 1
        time.sleep(0.005)
    b = stat()
    starts, dt = started - s0, time.time() - t0
    for p in alive:
        p.kill()
        p.join()
    return {
        "rssMb": rss,
        "startsPerSecond": round(starts / dt, 2),
        "sysPercent": round((b[1] - a[1]) / dt),
        "faultsPerSecond": round((b[0] - a[0]) / dt),
        "sysMsPerStart": round((b[1] - a[1]) * 10 / starts) if starts else None,
        "faultsPerStart": round((b[0] - a[0]) / starts) if starts else None,
    }


if __name__ == "__main__":
    out = []
    for command in sys.argv[1:]:
        name, *args = command.split(":")
        if name != "run":
            sys.exit(f"py_fork_aftermath.py: unknown subcommand {name}")
        out.append(run(float(args[0]), float(args[1]), int(args[2])))
    print(json.dumps(out))
