"""The programs of `scripts/bench jit` (scripts/bench.d/jit.d/progs) give the
same return value on the kernel, on bpfshim's AOT engine and on its
interpreter (as root and as uid 65534), and the same as their native build:
one BPF_PROG_TEST_RUN each, on a fresh load, through the bench's own harness."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "scripts" / "bench.d" / "jit.d" / "build"


def retvals(out):
    """harness output -> {program: retval, or None when it did not load}."""
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 5:
            res[f[0]] = None if f[2] == "-" else int(f[2])
    return res


@pytest.fixture(scope="module")
def built():
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    d = readable_tmpdir("bpfshim-benchprogs-")
    subprocess.run([str(BUILD), d], check=True)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o755)
    names = Path(d, "names").read_text().split()
    yield d, names
    shutil.rmtree(d, ignore_errors=True)


def test_bench_progs_retvals(built):
    d, names = built
    harness = os.path.join(d, "harness")
    rc, out, err = run([harness, "-1", "native"] + names)
    assert rc == 0, err
    native = retvals(out)
    assert sorted(native) == sorted(names)
    res = {}
    if kernel_bpf_reason() is None:
        rc, out, err = run([harness, "-1", "bpf", d] + names)
        assert rc == 0, err
        res["kernel"] = retvals(out)
    sides = [("bpfshim", Runtime(prefix="bpfshim-benchprogs-rt-"))]
    if unpriv_reason() is None:
        sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-benchprogs-rtu-")))
    try:
        for side, rt in sides:
            for engine, extra in (("aot", ()), ("interpreter", (("BPFSHIM_NO_JIT", "1"),))):
                rc, out, err = run(rt.cmd([harness, "-1", "bpf", d] + names, extra_env=extra))
                assert rc == 0, f"{side} {engine}: {err}"
                res[f"{side} {engine}"] = retvals(out)
    finally:
        for _, rt in sides:
            rt.close()
    for side, got in res.items():
        assert None not in got.values(), f"{side}: not loaded: {[n for n, v in got.items() if v is None]}"
        assert got == native, f"{side} differs from native: {got} != {native}"
