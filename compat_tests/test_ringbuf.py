"""BPF ringbuf end to end: a libbpf loader in C (progs/ringbuf_loader.c, with
progs/ringbuf_loader.bpf.c built here by clang) on the kernel and through
bpfshim (root and uid 65534, AOT and interpreter):

- uprobe: a uprobe program in another process sends events with
  bpf_ringbuf_reserve/submit/discard/output/query and the BPF_RB_* wake-up
  flags; the loader sleeps in ring_buffer__poll(-1) (epoll on the map fd)
  until all arrived, so a lost wake-up fails the case by timeout;
- testrun: a BPF_PROG_TYPE_SYSCALL program run by PROG_TEST_RUN does one
  ringbuf operation at a time; the trace has the helpers' results, the
  epoll readiness after each wake-up rule (NO_WAKEUP, FORCE_WAKEUP, a commit
  at or behind the consumer, level-triggered re-reports), the consumer and
  producer positions, and every record header (busy/discard bits, page
  offset) and data checksum as mapped, including records that wrap;
- stress: 4 producer processes (PROG_TEST_RUN of a syscall program: reserve/
  submit, output, discard) and one consumer in ring_buffer__poll(-1): every
  record once and in order per producer, no lost wake-up;
- inherit: a process that got the ring's fd over exec (unseen by the shim
  until then) sleeps in epoll_wait on it and is woken by another process;
- leak: programs the kernel's verifier refuses (a reservation never
  submitted, a fault while one is held) load under bpfshim (DENYLIST); what
  they leave behind is discarded when their run ends, so an output after
  them is consumed as on the kernel.
"""
import difflib
import os
import shutil
import subprocess

import pytest

from compat_tests.env import clang_bpf, denied, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

PROGS = os.path.join(os.path.dirname(__file__), "progs")

CASES = {
    "testrun": ["testrun"],
    "uprobe": ["uprobe", "{T}", "1199"],   # 1199 % 6 == 5: the last event forces a wake-up
    "leak": ["leak"],
    "inherit": ["inherit"],
    "stress": ["stress", "50000"],
}
# lines a DENYLISTed case leaves out of the comparison
DENIED_LINES = ("verifier ", "query:")
ENGINES = {"aot": (), "interp": (("BPFSHIM_NO_JIT", "1"),)}


def build(d):
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    for tool in ("clang", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    p = {k: os.path.join(d, k) for k in ("target", "loader", "rb.o")}
    subprocess.run(["cc", "-O1", "-Wall", "-pthread", "-o", p["target"], os.path.join(PROGS, "uprobe_target.c")],
                   check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", p["loader"], os.path.join(PROGS, "ringbuf_loader.c"), "-lbpf"],
                   check=True)
    clang_bpf(os.path.join(PROGS, "ringbuf_loader.bpf.c"), p["rb.o"])
    for f in p.values():
        os.chmod(f, 0o755)
    return p


@pytest.fixture(scope="module")
def setup():
    d = readable_tmpdir("bpfshim-ringbuf-")
    p = build(d)
    sides = {}
    for eng in ENGINES:
        sides[f"bpfshim {eng}"] = (Runtime(prefix=f"bpfshim-ringbuf-{eng}-"), ENGINES[eng])
        if unpriv_reason() is None:
            sides[f"bpfshim {eng} uid 65534"] = (Runtime(unpriv=True, prefix=f"bpfshim-ringbuf-{eng}-u-"),
                                                 ENGINES[eng])
    yield p, sides
    for rt, _ in sides.values():
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ringbuf(case, setup):
    p, sides = setup
    argv = [p["loader"], p["rb.o"]] + [a.replace("{T}", p["target"]) for a in CASES[case]]
    res = {}
    if kernel_bpf_reason() is None:
        res["kernel"] = run(argv)
    for name, (rt, env) in sides.items():
        res[name] = run(rt.cmd(argv, extra_env=env))
    ref = "kernel" if "kernel" in res else "bpfshim aot"
    rc_ref, out_ref, err_ref = res[ref]
    assert rc_ref == 0 and out_ref.rstrip().endswith("done"), f"{ref}: rc={rc_ref}\n{out_ref}\n{err_ref}"
    why = denied("ringbuf", case)
    if why:
        for name, (rc, out, err) in res.items():
            assert name == "kernel" or "avail 0 " in out, f"{name}: ring not drained\n{out}\n{err}"
        res = {k: (rc, "".join(l for l in out.splitlines(True) if not l.startswith(DENIED_LINES)), err)
               for k, (rc, out, err) in res.items()}
        rc_ref, out_ref, err_ref = res[ref]
    fails = []
    for name, (rc, out, err) in res.items():
        if (rc, out) != (rc_ref, out_ref):
            diff = "\n".join(difflib.unified_diff(out_ref.splitlines(), out.splitlines(), ref, name,
                                                  lineterm="", n=2))
            fails.append(f"{ref} rc={rc_ref} vs {name} rc={rc}\n{diff}\nstderr of {name}:\n{err}")
    if fails:
        pytest.fail("\n".join(fails))
    if why:
        pytest.skip(f"DENYLIST (the rest compared): {why}")
    if "kernel" not in res:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
