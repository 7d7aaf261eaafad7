#!/usr/bin/python3
"""MAP_CREATE of reasonable, huge and over-the-limit sizes, run in one
process per backend inside a memory cgroup (compat_tests/test_map_budget.py):
`python3 map_budget_cases.py` prints one JSON list of {"name", "trace"} as
map_cases.py does. Each case closes its maps, except those of `sum`, which
keeps creating 64 MiB arrays until one is refused (the limit counts every
live map), and of `sum_written`, which writes every page of each first.

Standard library only: uid 65534 runs this with /usr/bin/python3.
"""
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from map_cases import (ARRAY, HASH, LRU_HASH, MMAPABLE, NO_PREALLOC, PAGE, PERCPU_ARRAY, PROT_READ,  # noqa: E402
                       PROT_WRITE, STACK_TRACE, Case, _mmap)

MIB = 1 << 20
SIZES = {   # name: (type, key_size, value_size, max_entries, flags)
    "hash_small": (HASH, 4, 8, 1024, 0),
    "array_8m": (ARRAY, 4, 8, MIB, 0),
    "array_400m": (ARRAY, 4, 4096, 100000, 0),
    "array_u32max": (ARRAY, 4, 4, 0xFFFFFFFF, 0),
    "hash_1g": (HASH, 8, 8, 1 << 24, 0),
    "hash_over_2g_entries": (HASH, 8, 8, 0x80000001, 0),
    "hash_no_prealloc_huge": (HASH, 8, 8, 1 << 24, NO_PREALLOC),
    "lru_hash_huge": (LRU_HASH, 128, 8, 0x04000010, 0),
    "stack_trace_2g": (STACK_TRACE, 4, 1016, 0x80000000, 0),
    "stack_trace_over_2g": (STACK_TRACE, 4, 1016, 0x80000001, 0),
    "stack_trace_256m": (STACK_TRACE, 4, 1016, 0x10000000, 0),
    "stack_trace_small": (STACK_TRACE, 4, 1016, 1024, 0),
    "percpu_array_320m": (PERCPU_ARRAY, 4, 4096, 40000, 0),
}
SUM_MAX = 8       # 64 MiB arrays: the 256 MiB limit refuses one before this


def memcg_usage():
    """This process's memory cgroup usage (v1 or v2), or None."""
    for line in open("/proc/self/cgroup").read().splitlines():
        _h, ctrls, path = line.split(":", 2)
        for f in ((f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes",) if "memory" in ctrls.split(",") else
                  (f"/sys/fs/cgroup{path}/memory.current", f"/sys/fs/cgroup/unified{path}/memory.current")
                  if ctrls == "" else ()):
            try:
                return int(open(f).read())
            except OSError:
                pass
    return None


def settle(baseline, slack=32 << 20):
    """The kernel frees a closed map later (a work item): before a case that
    needs the room, wait (at most 10 s) until the cgroup is back near its
    usage with no map alive."""
    for _ in range(200):
        u = memcg_usage()
        if baseline is None or u is None or u <= baseline + slack:
            return
        time.sleep(0.05)


def run():
    out = []
    baseline = None
    for name, (t, ks, vs, n, fl) in SIZES.items():
        c = Case(name)
        try:
            c.create(name, t, ks, vs, n, fl)
        finally:
            c.close()
        out.append({"name": name, "trace": c.trace})
        if baseline is None:      # after the first case: the server, if any, is up
            baseline = memcg_usage()
    for name, write in (("sum", False), ("sum_written", True)):
        settle(baseline)
        c = Case(name)
        try:
            for i in range(SUM_MAX):
                fd = c.create(f"array_64m_{i}", ARRAY, 4, 4096, 16384, MMAPABLE if write else 0)
                if fd is None:
                    break
                if write:    # every page of the values touched, through the loader's mapping
                    addr = _mmap(c, f"mmap_{i}", fd, 16384 * 4096, PROT_READ | PROT_WRITE)
                    for off in range(0, 16384 * 4096 if addr else 0, PAGE):
                        ctypes.memset(addr + off, 1, 1)
            # after the refusal, the live maps still leave room for a small one
            c.create("then_small", HASH, 4, 8, 1024)
        finally:
            c.close()
        out.append({"name": name, "trace": c.trace})
    return out


if __name__ == "__main__":
    json.dump(run(), sys.stdout)
    sys.stdout.write("\n")
