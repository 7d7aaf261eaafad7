"""The kernel's recorded results are compared, not only read: with the kernel
side forced off (BPFSHIM_TEST_KERNEL=0), test_map_syscalls passes against
the committed record of a case and fails against a copy with one value
changed. bpfshim's own check of its test harness (no kernel behaviour)."""
import json
import os
import subprocess
import sys

from compat_tests import golden

CASE = "array_batch_other"


def run_case(tmp_path, cases):
    d = tmp_path / "golden"
    d.mkdir(exist_ok=True)
    (d / "map_syscalls.json").write_text(json.dumps({"kernel": os.uname().release, "cases": cases}))
    env = dict(os.environ, BPFSHIM_TEST_KERNEL="0", BPFSHIM_GOLDEN_DIR=str(d))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rP", "-p", "no:cacheprovider",
                        f"compat_tests/test_map_syscalls.py::test_map_syscalls[{CASE}-bpfshim]"],
                       cwd=golden.DIR.parent.parent, env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_recorded_result_is_compared(tmp_path):
    rec = golden.load("map_syscalls")["cases"][CASE]
    rc, out = run_case(tmp_path, {CASE: rec})
    assert rc == 0 and "compared with the kernel's recorded result" in out, out
    tampered = [step[:2] + ["EPERM"] + step[3:] if step[2:3] == [""] else step for step in rec]
    assert tampered != rec
    rc, out = run_case(tmp_path, {CASE: tampered})
    assert rc != 0 and "first difference at step" in out, out
