"""Concurrent writers on shared maps (progs/stress.c, built against libbpf):
8 processes x 200k iterations of lookup(BPF_F_LOCK) + update(BPF_F_LOCK)
on a hash and an array map with a struct bpf_spin_lock value (no torn
value may be read), 8 x 200k __atomic_fetch_add through mmaps of one
BPF_F_MMAPABLE array (the total must be exact), the same with one writer
killed by SIGKILL part-way (4 rounds for the locked maps; the others
finish, the maps stay consistent),
and a map fd inherited over exec. Through bpfshim as root and as uid 65534,
and on the kernel (root), whose results must be the same.
"""
import os
import re
import shutil
import subprocess
import time

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

SRC = os.path.join(os.path.dirname(__file__), "progs", "stress.c")
PIN_DIR = "/sys/fs/bpf/bpfshim_compat_stress"
NPROC, ITERS = 8, 200000
KILL_ROUNDS = 4
SCENARIOS = ["lock", "mmap", "kill-lock", "kill-mmap", "inherit, update first", "inherit, mmap first"]


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
    text = "\n".join(lines)
    if scenario in ("lock", "kill-lock"):
        rounds = KILL_ROUNDS if scenario == "kill-lock" else 1
        runs = [l for l in lines if "iterations: stuck" in l]
        assert len(runs) == rounds and all(re.search(r"stuck 0 torn 0 errors 0$", l) for l in runs), text
        assert text.count("halves equal 1, a survivor's last write 1, lock word 0") == 2 * rounds, text
    if scenario == "mmap":
        assert lines == [f"{NPROC} workers x {ITERS} increments: stuck 0 count {NPROC * ITERS}"], text
    if scenario == "kill-mmap":
        assert lines[0].endswith("stuck 0 survivors' count complete 1"), text
    if scenario == "kill-lock":
        assert lines.count("victim progress in (0, iterations): 1") == KILL_ROUNDS, text


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stress_scenario(scenario, results):
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
                fails.append(f"kernel vs {name}:\n  " + "\n  ".join(got["kernel"] or []) + "\n  ---\n  "
                             + "\n  ".join(lines or []))
    if fails:
        pytest.fail("\n".join(fails))
    if "kernel" not in got:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
