"""A C program linked against Debian's libbpf (progs/libbpf_maps.c) drives
map commands — create, element ops, batch ops, pin/get, info, freeze,
mmap, BTF with bpf_spin_lock, error paths — and prints a trace without ids
or pointers. The trace from the kernel (root) is compared, section by
section, with the trace through bpfshim as root and as uid 65534.
"""
import difflib
import os
import shutil
import subprocess

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason, denied
from compat_tests.unpriv import Runtime, readable_tmpdir, run

SRC = os.path.join(os.path.dirname(__file__), "progs", "libbpf_maps.c")
PIN_DIR = "/sys/fs/bpf/bpfshim_compat_libbpf"
SECTIONS = ["create errors", "hash", "array", "percpu", "lru_hash", "queue", "stack", "hash batch",
            "array batch", "queue batch", "pin / get", "get_info_by_fd", "mmapable array",
            "bpf_spin_lock value (BTF)"]


def split_sections(out):
    secs = {"": []}
    cur = ""
    for line in out.splitlines():
        if line.startswith("== "):
            cur = line[3:]
            secs[cur] = []
        else:
            secs[cur].append(line)
    return secs


@pytest.fixture(scope="module")
def traces():
    if not os.path.exists("/usr/include/bpf/bpf.h"):
        pytest.skip("libbpf-dev is not installed")
    d = readable_tmpdir("bpfshim-libbpf-")
    exe = os.path.join(d, "libbpf_maps")
    subprocess.run(["cc", "-O1", "-Wall", "-o", exe, SRC, "-lbpf"], check=True)
    os.chmod(exe, 0o755)
    other = os.path.join(d, "notbpffs")
    os.mkdir(other)
    os.chmod(other, 0o777)
    res = {}
    try:
        if kernel_bpf_reason() is None:
            shutil.rmtree(PIN_DIR, ignore_errors=True)
            try:
                res["kernel"] = run([exe, PIN_DIR, other])
            finally:
                shutil.rmtree(PIN_DIR, ignore_errors=True)
        sides = [("bpfshim", Runtime(prefix="bpfshim-libbpf-rt-"))]
        if unpriv_reason() is None:
            sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-libbpf-rtu-")))
        try:
            for name, rt in sides:
                res[name] = run(rt.cmd([exe, PIN_DIR, other]))
        finally:
            for _, rt in sides:
                rt.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res


def test_libbpf_program_completes(traces):
    for name, (rc, out, err) in traces.items():
        assert rc == 0 and out.rstrip().endswith("done"), f"{name}: rc={rc}\n{out[-2000:]}\n{err}"
        assert set(SECTIONS) <= set(split_sections(out)), f"{name}: sections missing"


@pytest.mark.parametrize("section", SECTIONS)
def test_libbpf_section(section, traces):
    why = denied("libbpf_c", section)
    if why:
        pytest.skip(f"DENYLIST: {why}")
    ref_name = "kernel" if "kernel" in traces else "bpfshim"
    ref = split_sections(traces[ref_name][1]).get(section)
    assert ref, f"{ref_name} printed no section {section!r}"
    fails = []
    for name, (rc, out, err) in traces.items():
        if name == ref_name:
            continue
        got = split_sections(out).get(section)
        if got is None:
            fails.append(f"{name}: no section {section!r} (rc={rc})\n{err}")
        elif got != ref:
            diff = "\n".join(difflib.unified_diff(ref, got, ref_name, name, lineterm="", n=2))
            fails.append(f"section {section!r}: {ref_name} vs {name}\n{diff}\nstderr of {name}:\n{err}")
    if fails:
        pytest.fail("\n".join(fails))
    if "kernel" not in traces:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
