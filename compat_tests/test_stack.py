"""bpf_get_stack and bpf_get_stackid from a uprobe (progs/stack_loader.c with
progs/stack_loader.bpf.c, built here against libbpf) on the kernel and
through bpfshim (root and uid 65534, AOT and interpreter): user stacks with
skip counts, truncation, sizes that are not a multiple of a frame, invalid
flags, BPF_F_USER_BUILD_ID without BPF_F_USER_STACK, kernel stacks from a
uprobe (empty: -EFAULT from get_stackid, 0 bytes from get_stack), stack map
ids (the kernel's jhash of the frames), BPF_F_FAST_STACK_CMP, -EEXIST on a
bucket collision and BPF_F_REUSE_STACKID. The target is progs/uprobe_target.c
built without PIE and with frame pointers.
"""
import difflib
import os
import shutil
import subprocess

import pytest

from compat_tests.env import clang_bpf, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

PROGS = os.path.join(os.path.dirname(__file__), "progs")
ENGINES = {"aot": (), "interp": (("BPFSHIM_NO_JIT", "1"),)}


def build(d):
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    for tool in ("clang", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    p = {k: os.path.join(d, k) for k in ("target", "loader", "stack.o")}
    subprocess.run(["cc", "-O1", "-fno-omit-frame-pointer", "-no-pie", "-pthread", "-o", p["target"],
                    os.path.join(PROGS, "uprobe_target.c")], check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", p["loader"], os.path.join(PROGS, "stack_loader.c"), "-lbpf"],
                   check=True)
    clang_bpf(os.path.join(PROGS, "stack_loader.bpf.c"), p["stack.o"])
    for f in p.values():
        os.chmod(f, 0o755)
    return p


@pytest.fixture(scope="module")
def setup():
    d = readable_tmpdir("bpfshim-stack-")
    p = build(d)
    sides = {}
    for eng, env in ENGINES.items():
        sides[f"bpfshim {eng}"] = (Runtime(prefix=f"bpfshim-stack-{eng}-"), env)
        if unpriv_reason() is None:
            sides[f"bpfshim {eng} uid 65534"] = (Runtime(unpriv=True, prefix=f"bpfshim-stack-{eng}-u-"), env)
    yield p, sides
    for rt, _ in sides.values():
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


def test_stack_helpers(setup):
    p, sides = setup
    argv = [p["loader"], p["stack.o"], p["target"]]
    res = {}
    if kernel_bpf_reason() is None:
        res["kernel"] = run(argv)
    for name, (rt, env) in sides.items():
        res[name] = run(rt.cmd(argv, extra_env=env))
    ref = "kernel" if "kernel" in res else "bpfshim aot"
    rc_ref, out_ref, err_ref = res[ref]
    assert rc_ref == 0 and out_ref.rstrip().endswith("done") and "case 26:" in out_ref, \
        f"{ref}: rc={rc_ref}\n{out_ref}\n{err_ref}"
    fails = []
    for name, (rc, out, err) in res.items():
        if (rc, out) != (rc_ref, out_ref):
            diff = "\n".join(difflib.unified_diff(out_ref.splitlines(), out.splitlines(), ref, name,
                                                  lineterm="", n=2))
            fails.append(f"{ref} rc={rc_ref} vs {name} rc={rc}\n{diff}\nstderr of {name}:\n{err}")
    if fails:
        pytest.fail("\n".join(fails))
    if "kernel" not in res:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
