"""Runs are bounded (issue 11 item 3; agent/bpf_rt.h, agent/prog_run.c).

The deadline loop (progs/bounded_loader.c: loop until bpf_ktime_get_ns()
passes start + N s) is refused by the kernel's verifier: that verdict is
checked on the kernel. bpfshim loads it (no model of its verifier decides
it), so what ends its runs is bpfshim's own bound, asserted directly, beyond
what the kernel does: attached to a uprobe of a victim, every run stops at
the run budget (BPFSHIM_RUN_BUDGET_MS, 200 ms here; 10 s by default), is
counted in `bpfshim status` (overruns), and the victim finishes; a run stuck
when the loader exits (its probe detached) stops at once, without waiting
for the budget. Both engines (AOT, and the interpreter with
BPFSHIM_NO_JIT=1), as root and as uid 65534.

bpf_loop's limit is the kernel's: nr_loops up to BPF_MAX_LOOPS (1 << 23)
runs, one more gives -E2BIG (as a 32-bit value: the kernel inlines the loop),
compared with the kernel's BPF_PROG_TEST_RUN of the same raw_tracepoint
program.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from compat_tests.env import ROOT, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir
from compat_tests.victims import func_offset

PROGS = os.path.join(os.path.dirname(__file__), "progs")
BPFSHIM = str(ROOT / ".venv" / "bin" / "bpfshim")
BUDGET_MS = 200
ENGINES = {"aot": (), "interp": (("BPFSHIM_NO_JIT", "1"),)}

VICTIM_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) int probed(int i) { __asm__ volatile("" ::: "memory"); return i; }
int main(int argc, char **argv)
{
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++)
        probed(i);
    printf("victim done %d\n", n);
    return 0;
}
"""


@pytest.fixture(scope="module")
def bins():
    d = readable_tmpdir("bpfshim-bounded-")
    with open(os.path.join(d, "victim.c"), "w") as f:
        f.write(VICTIM_C)
    out = {"victim": os.path.join(d, "victim"), "loader": os.path.join(d, "bounded_loader")}
    subprocess.run(["cc", "-O1", "-o", out["victim"], os.path.join(d, "victim.c")], check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", out["loader"], os.path.join(PROGS, "bounded_loader.c")], check=True)
    out["offset"] = func_offset(out["victim"], "probed")
    yield out
    shutil.rmtree(d, ignore_errors=True)


def _sides():
    out = [("root", False)]
    if unpriv_reason() is None:
        out.append(("uid 65534", True))
    return out


@pytest.fixture(scope="module")
def runtimes():
    rts = {label: Runtime(unpriv=unpriv, prefix="bpfshim-bounded-rt-") for label, unpriv in _sides()}
    yield rts
    for rt in rts.values():
        rt.close()


def status(rt):
    argv = (unpriv_cmd() if rt.unpriv else []) + ["env", f"BPFSHIM_RUNTIME_DIR={rt.dir}", BPFSHIM, "status", "--json"]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout)


class Attached:
    """bounded_loader deadline SECS on the victim's probed(), through bpfshim,
    until close() (or for `hold` seconds)."""

    def __init__(self, rt, bins, secs, hold=0):
        self.p = subprocess.Popen(rt.cmd([bins["loader"], "deadline", str(secs), bins["victim"], str(bins["offset"]),
                                          str(hold)]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        lines = [self.p.stdout.readline().strip() for _ in range(2)]
        if lines != ["load 0", "attached"]:
            self.p.kill()
            pytest.fail(f"loader: {lines} {self.p.stderr.read()}")

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
        self.p.wait(timeout=30)


def run_victim(rt, bins, calls, extra_env, timeout=30):
    t0 = time.monotonic()
    p = subprocess.run(rt.cmd([bins["victim"], str(calls)], extra_env=extra_env), capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


def test_kernel_refuses_deadline_loop(bins, runtimes):
    why = kernel_bpf_reason()
    for label, rt in runtimes.items():   # bpfshim loads it: its run budget must bound it
        p = subprocess.run(rt.cmd([bins["loader"], "deadline", "5"]), capture_output=True, text=True, timeout=60)
        assert p.stdout.split() == ["load", "0"], f"{label}: {p.stdout} {p.stderr}"
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    p = subprocess.run([bins["loader"], "deadline", "5"], capture_output=True, text=True, timeout=60)
    load = int(p.stdout.split()[1])
    assert load < 0, p.stdout
    print(f"kernel: {os.strerror(-load)}: {p.stderr.strip()}")


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_deadline_loop_stops_at_budget(engine, bins, runtimes):
    calls = 3
    for label, rt in runtimes.items():
        a = Attached(rt, bins, 60)
        try:
            p, took = run_victim(rt, bins, calls, ENGINES[engine] + (("BPFSHIM_RUN_BUDGET_MS", str(BUDGET_MS)),))
            progs = status(rt)["progs"]
        finally:
            a.close()
        assert p.returncode == 0 and f"victim done {calls}" in p.stdout, f"{label}: {p.stdout} {p.stderr}"
        # each run ends after the budget, not at its 60 s deadline
        assert calls * BUDGET_MS / 1000 <= took < 10, f"{label}: {took:.2f} s"
        assert [pr["overruns"] for pr in progs if pr["type"] == "BPF_PROG_TYPE_KPROBE"] == [calls], f"{label}: {progs}"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_detach_stops_a_stuck_run(engine, bins, runtimes):
    """The loader exits after 1 s while the victim's first run is stuck in a
    60 s loop, with the default budget (10 s): the run stops when the probe
    goes, the victim goes on."""
    for label, rt in runtimes.items():
        a = Attached(rt, bins, 60, hold=1)
        p, took = run_victim(rt, bins, 1, ENGINES[engine])
        a.close()
        assert p.returncode == 0 and "victim done 1" in p.stdout, f"{label}: {p.stdout} {p.stderr}"
        assert took < 6, f"{label}: the victim took {took:.2f} s"


@pytest.mark.parametrize("nr", [1 << 23, (1 << 23) + 1, 0xffffffff])
def test_bpf_loop_limit(nr, bins, runtimes):
    got = {}
    for label, rt in runtimes.items():
        for engine, env in ENGINES.items():
            p = subprocess.run(rt.cmd([bins["loader"], "loop", str(nr)], extra_env=env), capture_output=True,
                               text=True, timeout=60)
            got[label, engine] = p.stdout.split()
    assert len(set(map(tuple, got.values()))) == 1, got
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    p = subprocess.run([bins["loader"], "loop", str(nr)], capture_output=True, text=True, timeout=60)
    assert got["root", "aot"] == p.stdout.split(), f"kernel: {p.stdout} {p.stderr}\nbpfshim: {got}"
