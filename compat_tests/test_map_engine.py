"""The C map engine on its own (agent/maps/tests): kdiff runs every map type's
element operations against the same operations on the kernel's maps (root,
kernel eBPF) and stress runs many processes on one segment with dead lock
holders and SIGKILLed writers."""
import os
import subprocess

import pytest

from compat_tests.env import ROOT, kernel_bpf_reason

RUN = ROOT / "agent" / "maps" / "tests" / "run.sh"


def _run(test):
    p = subprocess.run(["sh", str(RUN), test], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def test_kdiff_against_kernel():
    why = kernel_bpf_reason()
    if why:
        pytest.skip(f"kernel side: {why}")
    out = _run("kdiff")
    assert "checks, 0 failures" in out, out[-3000:]


def test_stress_many_processes():
    out = _run("stress")
    assert out.count(": ok") >= 3 and "FAIL" not in out, out[-3000:]
