"""Attaching is synchronous, as on the kernel: when a loader's attach
returns (PERF_EVENT_IOC_SET_BPF + ENABLE of a uprobe event, BPF_LINK_CREATE
on it, a syscalls:sys_enter_getppid event), the probe is in place in a
process that is running, and when its detach (close of the event or the
link) returns, it is out. progs/attach_sync_loader.c (raw bpf() and
perf_event_open(), the kernel's way) starts progs/attach_sync_victim.c,
which calls the probed function (or getppid) in a tight loop and counts its
calls in memory the loader reads: every call begun after the attach
returned is counted, none begun after the detach returned. The kernel's
result (root) is compared with bpfshim's as root and as uid 65534."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run
from compat_tests.victims import func_offset

PROGS = os.path.join(os.path.dirname(__file__), "progs")
TRACEFS_ID = "/sys/kernel/tracing/events/syscalls/sys_enter_getppid/id"
MODES = ["ioctl", "early", "link", "syscall"]


@pytest.fixture(scope="module")
def setup():
    if not shutil.which("cc"):
        pytest.skip("cc is not installed")
    d = readable_tmpdir("bpfshim-attach-sync-")
    loader, victim = os.path.join(d, "loader"), os.path.join(d, "victim")
    subprocess.run(["cc", "-O1", "-Wall", "-o", loader, os.path.join(PROGS, "attach_sync_loader.c")], check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", victim, os.path.join(PROGS, "attach_sync_victim.c")], check=True)
    for f in (loader, victim, d):
        os.chmod(f, 0o755)
    sides = [("bpfshim", Runtime(prefix="bpfshim-attach-sync-rt-"))]
    if unpriv_reason() is None:
        sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-attach-sync-rtu-")))
    yield loader, victim, sides
    for _, rt in sides:
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


def tracepoint_id():
    """sys_enter_getppid's id: tracefs when readable, else the snapshot the
    server serves (the same numbers on this kernel)."""
    try:
        with open(TRACEFS_ID) as f:
            return f.read().strip()
    except OSError:
        from syscall_server.tracepoints import catalogue
        return str(catalogue().by_name[("syscalls", "sys_enter_getppid")].id)


@pytest.mark.parametrize("mode", MODES)
def test_attach_sync(mode, setup):
    loader, victim, sides = setup
    where = tracepoint_id() if mode == "syscall" else hex(func_offset(victim, "probed"))
    argv = [loader, victim, where, mode]
    res = {}
    if kernel_bpf_reason() is None:
        res["kernel"] = run(argv)
    if mode == "early":     # servers that do not run yet when the victim starts
        sides = [(name, Runtime(unpriv=rt.unpriv, prefix="bpfshim-attach-sync-early-")) for name, rt in sides]
    try:
        for name, rt in sides:
            res[name] = run(rt.cmd(argv))
    finally:
        if mode == "early":
            for _, rt in sides:
                rt.close()
    expected = "missed after attach: 0\nhits after detach: 0\nvictim ran: yes\n"
    report = "\n".join(f"--- {n}: rc={r[0]}\n{r[1]}{r[2]}" for n, r in res.items())
    # the kernel's result when it ran (and what it shows); the behaviour itself otherwise
    if "kernel" in res:
        assert res["kernel"][:2] == (0, expected), report
    for rc, out, _err in res.values():
        assert (rc, out) == (0, expected), report
    if "kernel" not in res:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")


def test_stopped_agent_not_waited_for(setup):
    """bpfshim only (the kernel writes a stopped process's breakpoint like
    any other): an agent process that is stopped cannot apply an attach
    until it runs again, so the loader does not wait for it (the wait would
    otherwise run out, 1 s), and the running victim is probed as before."""
    loader, victim, sides = setup
    rt = sides[0][1]
    other = subprocess.Popen(rt.cmd(["sleep", "60"]))
    try:
        time.sleep(0.5)          # its agent has registered
        os.kill(other.pid, signal.SIGSTOP)
        rc, out, err = run(rt.cmd([loader, victim, hex(func_offset(victim, "probed")), "ioctl"]))
        took = float(re.search(r"attach took ([\d.]+) ms", err).group(1))
        assert (rc, out) == (0, "missed after attach: 0\nhits after detach: 0\nvictim ran: yes\n"), err
        assert took < 900, f"the attach waited for the stopped process: {took} ms"
    finally:
        other.kill()
        other.wait()
