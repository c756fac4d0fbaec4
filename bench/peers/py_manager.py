# Python's multiprocessing.Manager(), the peer of bench/manager.js, timed the
# same way. One subcommand, given as NAME:ARG:
#   proxies ROUNDS   one manager (its server process started outside the
#                    clock), then ROUNDS calls of each proxy operation, each
#                    timed by itself, in us:
#   dict_set    d["k"] = i
#   dict_get    d["k"]
#   list_append l.append(3)
#   queue       q.put(i) then q.get() by this same process (two round trips)
#   lock        lk.acquire() then lk.release() (two round trips)
# The first WARMUP calls of each are dropped (the first call of a proxy
# connects to the manager). Answers are checked; a mismatch exits non-zero.
# Gives one JSON object of samples, printed in a list: the caller runs this
# once per pass, between its own rounds, so a noisy stretch of the machine's
# time does not land on one side only.
import json
import sys
import time
from multiprocessing import Manager

WARMUP = 2000


def timed(rounds, op):
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter()
        op(i)
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def check(what, got, expected):
    if got != expected:
        sys.exit(f"py_manager: {what} gave {got!r} where {expected!r} was expected")


def cmd_proxies(rounds):
    with Manager() as m:
        d, l, q, lk = m.dict(), m.list(), m.Queue(), m.Lock()
        out = {}

        def dict_set(i):
            d["k"] = i

        out["dict_set"] = timed(rounds, dict_set)
        check("d['k'] after the sets", d["k"], WARMUP + rounds - 1)
        d["k"] = 1
        out["dict_get"] = timed(rounds, lambda i: check("d['k']", d["k"], 1))
        out["list_append"] = timed(rounds, lambda i: l.append(3))
        check("len(l) after the appends", len(l), WARMUP + rounds)

        def queue(i):
            q.put(i)
            check("q.get()", q.get(), i)

        out["queue"] = timed(rounds, queue)

        def lock(i):
            lk.acquire()
            lk.release()

        out["lock"] = timed(rounds, lock)
        return out


COMMANDS = {"proxies": cmd_proxies}


def run(spec):
    name, *args = spec.split(":")
    if name not in COMMANDS:
        sys.exit(f"py_manager: unknown subcommand {name}")
    return COMMANDS[name](*(int(a) for a in args))


if __name__ == "__main__":
    print(json.dumps([run(spec) for spec in sys.argv[1:]]))
