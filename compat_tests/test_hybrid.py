"""Hybrid mode (`bpfshim run --kernel`, BPFSHIM_KERNEL=1): the loader's maps,
programs and kernel attachments are the kernel's. Each case runs the same
tool on the kernel (root, no library) and under `bpfshim run --kernel`, and
compares the outputs normalised as test_bpftrace.py does; the refusal of an
ordinary user and `bpfshim status`'s modes go beyond the kernel and are
asserted directly. Root only: hybrid mode needs kernel eBPF.
"""
import json
import os
import shutil
import subprocess

import pytest

from compat_tests.env import SHIM_LIB, ROOT, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.test_bpftrace import normalise
from compat_tests.unpriv import Runtime, readable_tmpdir

BPFTRACE = shutil.which("bpftrace")
BPFTOOL = shutil.which("bpftool")
BPFSHIM = str(ROOT / ".venv" / "bin" / "bpfshim")

# getppid() then work(i), 100 times: a kernel tracepoint and a uprobe of the
# same thread, in a known order
VICTIM_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
volatile long sink;
__attribute__((noinline)) int work(int x) { sink += x; return x * 2 + 1; }
int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    for (int i = 0; i < n; i++) {
        sink += getppid();
        sink += work(i);
    }
    return 0;
}
"""

V = "{V}"
TP = "tracepoint:syscalls:sys_enter_getppid /pid == cpid/"
SCRIPTS = {
    # kernel tracepoint and uprobe counting into one map
    "count_same_map": TP + " { @[probe] = count(); } uprobe:{V}:work { @[probe] = count(); }",
    "count_same_key": TP + " { @n = count(); } uprobe:{V}:work { @n = count(); @s = sum(arg0); }",
    "hist_same_map": TP + " { @h = hist(1000); } uprobe:{V}:work { @h = hist(arg0); }",
    # a start time stored by the kernel probe, read by the user probe of the thread
    "tp_start_uprobe_reads": TP + " { @start[tid] = nsecs; } "
                             "uprobe:{V}:work /@start[tid]/ { @ok[nsecs >= @start[tid]] = count(); delete(@start[tid]); }",
    # and the reverse: stored by the uprobe, read by the exit tracepoint
    "uprobe_stores_tp_reads": "uprobe:{V}:work { @arg[tid] = arg0 + 1; } "
                              "tracepoint:syscalls:sys_exit_getppid /pid == cpid && @arg[tid]/ "
                              "{ @seen = count(); @sum = sum(@arg[tid]); } END { clear(@arg); }",
    "uretprobe_and_tp": "uretprobe:{V}:work { @r = sum(retval); } "
                        "tracepoint:syscalls:sys_exit_getppid /pid == cpid/ { @x = count(); }",
    # a sched tracepoint (served only by the kernel) beside a uprobe; the main
    # thread's: the kernel also sees the agent's thread exit (ARCHITECTURE.md)
    "sched_exit_and_uprobe": "tracepoint:sched:sched_process_exit /pid == cpid && tid == pid/ { @exit = count(); } "
                             "uprobe:{V}:work { @w = count(); }",
    "interval_and_begin": 'BEGIN { @b = 1; } interval:ms:50 { @i = count(); if (@i == 2) { exit(); } }',
}


@pytest.fixture(scope="module")
def hybrid():
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"hybrid mode needs kernel eBPF: {why}")
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-hybrid-")
    exe = os.path.join(d, "hvictim")
    with open(exe + ".c", "w") as f:
        f.write(VICTIM_C)
    subprocess.run(["cc", "-O1", "-fno-inline", "-o", exe, exe + ".c"], check=True)
    rt = Runtime(prefix="bpfshim-hybrid-rt-")
    yield exe, rt
    rt.close()
    shutil.rmtree(d, ignore_errors=True)


def hybrid_cmd(rt, argv):
    return [BPFSHIM, "run", "--kernel", "--"] + list(argv)


def run(argv, env=None, timeout=60):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def compare(rt, argv):
    """argv on the kernel, then under `bpfshim run --kernel`; bpftrace's
    output normalised. Returns the hybrid run's output."""
    rc_k, out_k = run(argv, env=rt.env())
    rc_h, out_h = run(hybrid_cmd(rt, argv), env=rt.env())
    assert (rc_h, normalise(out_h)) == (rc_k, normalise(out_k)), f"kernel:\n{out_k}\nhybrid:\n{out_h}"
    return out_h


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_hybrid_bpftrace(name, hybrid):
    exe, rt = hybrid
    out = compare(rt, [BPFTRACE, "-e", SCRIPTS[name].replace(V, exe), "-c", exe])
    assert "@" in out, out     # the maps were printed: the probes ran


def test_hybrid_processes_with_and_without_library(hybrid):
    """One uprobe, two processes at once: one runs the library (the agent),
    one does not; each call is counted once in each."""
    exe, rt = hybrid
    lib_exe = exe + "_lib"
    if not os.path.exists(lib_exe):
        os.link(exe, lib_exe)      # same file (one uprobe), another comm
    both = exe + "_both.sh"        # bpftrace -c does not parse quotes
    with open(both, "w") as f:
        f.write(f"#!/bin/sh\nenv LD_PRELOAD={SHIM_LIB} BPFSHIM_RUNTIME_DIR={rt.dir} {lib_exe} 300 &\n"
                f"env -u LD_PRELOAD {exe} 200 &\nwait\n")
    os.chmod(both, 0o755)
    out = compare(rt, [BPFTRACE, "-e", f"uprobe:{exe}:work {{ @[comm] = count(); }}", "-c", f"/bin/sh {both}"])
    assert "hvictim_lib]: 300" in out and "hvictim]: 200" in out, out


def test_hybrid_bpftool_sees_kernel_maps(hybrid):
    """A map made and filled under the library is the kernel's: bpftool run
    without the library shows and dumps it as it shows one made on the kernel."""
    if not BPFTOOL:
        pytest.skip("bpftool is not installed")
    _exe, rt = hybrid
    outs = []
    for side, wrap in (("kernel", lambda a: a), ("hybrid", lambda a: hybrid_cmd(rt, a))):
        pin = f"/sys/fs/bpf/bpfshim_hybrid_{os.getpid()}_{side}"
        try:
            for argv in (["map", "create", pin, "type", "hash", "key", "4", "value", "8", "entries", "16",
                          "name", "hy_counts"],
                         ["map", "update", "pinned", pin, "key", "1", "0", "0", "0", "value", "7", "0", "0", "0",
                          "0", "0", "0", "0"]):
                rc, out = run(wrap([BPFTOOL] + argv), env=rt.env())
                assert rc == 0, out
            assert os.path.exists(pin)              # the real bpffs
            rc, show = run([BPFTOOL, "-j", "map", "show", "pinned", pin])
            assert rc == 0, show
            info = json.loads(show)
            rc, dump = run([BPFTOOL, "-j", "map", "dump", "pinned", pin])
            assert rc == 0, dump
            outs.append(({k: info[k] for k in ("type", "name", "flags", "bytes_key", "bytes_value", "max_entries")},
                         json.loads(dump)))
        finally:
            if os.path.exists(pin):
                os.unlink(pin)
    assert outs[1] == outs[0]


def test_hybrid_status_modes(hybrid):
    """bpfshim status names each process's mode (beyond the kernel: asserted)."""
    _exe, rt = hybrid
    env = rt.env()
    procs = [subprocess.Popen(hybrid_cmd(rt, ["sleep", "3"]), env=env),
             subprocess.Popen([BPFSHIM, "run", "--", "sleep", "3"], env=env)]
    try:
        want = {p.pid: m for p, m in zip(procs, ("kernel", "user"))}
        for _ in range(50):
            rc, out = run([BPFSHIM, "status", "--json"], env=env)
            assert rc == 0, out
            got = {pr["pid"]: pr["mode"] for pr in json.loads(out[out.index("{"):])["processes"]}
            if all(pid in got for pid in want):
                break
        assert {pid: got.get(pid) for pid in want} == want, got
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_hybrid_refused_for_ordinary_user(hybrid):
    """uid 65534 has no kernel eBPF: the command fails before it runs, with
    one line naming what is missing; the same with BPFSHIM_KERNEL=1."""
    why = unpriv_reason()
    if why is not None:
        pytest.skip(why)
    urt = Runtime(unpriv=True, prefix="bpfshim-hybrid-u-")
    try:
        for argv in (unpriv_cmd() + ["env", f"BPFSHIM_RUNTIME_DIR={urt.dir}", BPFSHIM, "run", "--kernel", "--",
                                     "sh", "-c", "echo ran"],
                     urt.cmd(["sh", "-c", "echo ran"], extra_env=[("BPFSHIM_KERNEL", "1")])):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert p.returncode == 1 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
            lines = p.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("bpfshim: hybrid mode") and \
                "CAP_BPF and CAP_PERFMON are missing" in lines[0], p.stderr
    finally:
        urt.close()
