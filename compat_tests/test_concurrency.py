"""Concurrent writers on shared maps (progs/stress.c, built against libbpf):
8 processes x 200k iterations of lookup(BPF_F_LOCK) + update(BPF_F_LOCK)
on a hash and an array map with a struct bpf_spin_lock value (no torn
value may be read), 8 x 200k __atomic_fetch_add through mmaps of one
BPF_F_MMAPABLE array (the total must be exact), the same with one writer
killed by SIGKILL part-way (several rounds, some with large values so the
victim is often stopped while writing under the lock: the others must
finish and read no torn value), and a map fd inherited over exec. Through
bpfshim as root and as uid 65534, and on the kernel (root), whose results
must be the same.
"""
import difflib
import os
import re
import shutil
import subprocess
import time

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason, denied
from compat_tests.unpriv import Runtime, readable_tmpdir, run

SRC = os.path.join(os.path.dirname(__file__), "progs", "stress.c")
PIN_DIR = "/sys/fs/bpf/bpfshim_compat_stress"
NPROC, ITERS = 8, 200000
KILL_ROUNDS = 2
ROUNDS = {"lock": 1, "kill-lock": KILL_ROUNDS, "kill-lock-4k": KILL_ROUNDS, "kill-in-copy": 20 * KILL_ROUNDS}
SCENARIOS = ["lock", "mmap", "kill-lock", "kill-lock-4k", "kill-in-copy", "kill-mmap", "inherit, update first",
             "inherit, mmap first"]


def by_scenario(out):
    res = {}
    for line in out.splitlines():
        name, sep, rest = line.partition(": ")
        if sep:
            res.setdefault(name, []).append(rest)
    return res


@pytest.fixture(scope="module")
def results():
    if not os.path.exists("/usr/include/bpf/bpf.h"):
        pytest.skip("libbpf-dev is not installed")
    d = readable_tmpdir("bpfshim-stress-")
    exe = os.path.join(d, "stress")
    subprocess.run(["cc", "-O2", "-Wall", "-o", exe, SRC, "-lbpf"], check=True)
    os.chmod(exe, 0o755)
    argv = [exe, PIN_DIR, str(NPROC), str(ITERS), str(KILL_ROUNDS)]
    res = {}
    try:
        if kernel_bpf_reason() is None:
            shutil.rmtree(PIN_DIR, ignore_errors=True)
            try:
                t = time.time()
                res["kernel"] = run(argv, timeout=150) + (time.time() - t,)
            finally:
                shutil.rmtree(PIN_DIR, ignore_errors=True)
        sides = [("bpfshim", Runtime(prefix="bpfshim-stress-rt-"))]
        if unpriv_reason() is None:
            sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-stress-rtu-")))
        try:
            for name, rt in sides:
                t = time.time()
                res[name] = run(rt.cmd(argv), timeout=150) + (time.time() - t,)
        finally:
            for _, rt in sides:
                rt.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for name, (rc, out, err, secs) in res.items():
        print(f"{name}: {secs:.1f} s; {' '.join(err.split())}")
    return res


def test_stress_completes(results):
    for name, (rc, out, err, _s) in results.items():
        assert rc == 0 and out.rstrip().endswith("done"), f"{name}: rc={rc}\n{out}\n{err}"


def check_invariants(scenario, lines):
    """What must hold whatever the side (the kernel's results are
    compared separately)."""
    bad = [l for l in lines if re.search(r"torn [1-9]|stuck [1-9]|errors [1-9]|equal 0|write 0|lock word [1-9]|"
                                         r"running: 0|complete 0", l)]
    text = "\n".join(bad or lines)
    if scenario in ROUNDS:
        rounds = ROUNDS[scenario]
        runs = [l for l in lines if "iterations: stuck" in l]
        assert len(runs) == rounds and all(re.search(r"stuck 0 torn 0 errors 0$", l) for l in runs), text
        assert text.count("words equal 1, a worker's last write 1, lock word 0") == 2 * rounds, text
        if scenario != "lock":
            assert lines.count("victim killed while running: 1") == rounds, text
    if scenario == "mmap":
        assert lines == [f"{NPROC} workers x {ITERS} increments: stuck 0 count {NPROC * ITERS}"], text
    if scenario == "kill-mmap":
        assert lines[0].endswith("stuck 0 survivors' count complete 1"), text


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stress_scenario(scenario, results):
    why = denied("concurrency", scenario)
    if why:
        pytest.skip(f"DENYLIST: {why}")
    got = {name: by_scenario(r[1]).get(scenario) for name, r in results.items()}
    fails = []
    for name, lines in got.items():
        if not lines:
            fails.append(f"{name}: no result for {scenario}\n{results[name][1]}\n{results[name][2]}")
            continue
        try:
            check_invariants(scenario, lines)
        except AssertionError as e:
            fails.append(f"{name}: {e}")
    if "kernel" in got:
        for name, lines in got.items():
            if name != "kernel" and lines != got["kernel"]:
                diff = difflib.unified_diff(got["kernel"] or [], lines or [], "kernel", name, lineterm="", n=0)
                fails.append("\n".join(diff))
    if fails:
        pytest.fail("\n".join(fails))
    if "kernel" not in got:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
