"""`bpfshim attach PID`: a target started without the library gets the agent
(frida), then bpftrace through bpfshim counts calls of one of its functions;
the same bpftrace on the kernel against a second instance of the target is
the reference. As root and as uid 65534 (the target, `bpfshim attach` and
bpftrace all as that user). Also: a pid that does not exist and a pid that
cannot be ptraced give the errno's message and exit 1.
"""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from compat_tests import hang
from compat_tests.env import ROOT, SHIM_LIB, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.test_libbpf_uprobe import func_offset
from compat_tests.hang import wait_idle
from compat_tests.unpriv import Runtime, readable_tmpdir

BPFTRACE = shutil.which("bpftrace")
CALLS = 1000
SCRIPT = "uprobe:{T}:work { @n = count(); @s = sum(arg0); } END { printf(\"end\\n\"); }"
NOISE = re.compile(r"couldn't set RLIMIT_MEMLOCK|^$")
BPFSHIM = [sys.executable, "-m", "syscall_server.cli"]


class Target:
    """attach_target.c, started without the shim (as uid 65534 if unpriv)."""

    def __init__(self, exe, unpriv=False):
        self.exe = exe
        self.p = subprocess.Popen((unpriv_cmd() if unpriv else []) + [exe], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env={"PATH": os.environ["PATH"]})
        assert self.p.stdout.readline().strip() == "ready"
        self.pid = self.p.pid
        if unpriv:   # setpriv execs the target: same pid
            assert open(f"/proc/{self.pid}/comm").read().strip() == os.path.basename(exe)[:15]

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def first_byte(self, addr):
        with open(f"/proc/{self.pid}/mem", "rb") as f:
            f.seek(addr)
            return f.read(1)

    def work_addr(self):
        off = func_offset(self.exe, "work")
        real = os.path.realpath(self.exe)
        with open(f"/proc/{self.pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == real and "x" in parts[1]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    foff = int(parts[2], 16)
                    if foff <= off < foff + hi - lo:
                        return lo + off - foff
        raise LookupError("work not mapped")

    def close(self):
        try:
            self.ask("quit")
            self.p.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


def trace(target, shim_cmd=None):
    """bpftrace counting work() while the target makes CALLS calls; its
    output. `shim_cmd` wraps the command through bpfshim. The calls start
    once the probe is in the target's code: the kernel's int3 and bpfshim's
    jump both show in /proc/PID/mem."""
    addr = target.work_addr()
    before = target.first_byte(addr)
    argv = [BPFTRACE, "-e", SCRIPT.replace("{T}", target.exe)]
    bt = subprocess.Popen(shim_cmd(argv) if shim_cmd else argv, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while True:
            line = bt.stdout.readline()
            assert line, "bpftrace exited:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("Attaching"):
                break
        deadline = time.monotonic() + 10
        while target.first_byte(addr) == before:
            assert time.monotonic() < deadline, "the agent did not apply the probe in 10 s"
            time.sleep(0.01)
        # and bpftrace is past its attach (a SIGINT before that is not an
        # exit request to it): its main thread waits in its event loop
        wait_idle(bt.pid)
        assert target.ask(f"go {CALLS}") == "done"
        out = hang.interrupt(bt, 30)
    finally:
        if bt.poll() is None:
            bt.kill()
            bt.wait()
    return sorted(l for l in out.splitlines() if not NOISE.search(l))


def attach(pid, rt, unpriv=False):
    cmd = (unpriv_cmd() if unpriv else []) + ["env", f"BPFSHIM_RUNTIME_DIR={rt.dir}", f"PYTHONPATH={ROOT}"] + BPFSHIM
    p = subprocess.run(cmd + ["attach", str(pid)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def exe():
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-attach-")
    path = os.path.join(d, "attach_target")
    subprocess.run(["cc", "-O1", "-Wall", "-pthread", "-o", path,
                    os.path.join(ROOT, "compat_tests", "progs", "attach_target.c")], check=True)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def shim_side(exe, unpriv):
    rt = Runtime(unpriv=unpriv, prefix="bpfshim-attach-rt-")
    t = Target(exe, unpriv)
    try:
        t.ask("gap")
        rc, msg = attach(t.pid, rt, unpriv)
        assert rc == 0, msg
        gap_us = int(t.ask("gap").split()[1])
        out = trace(t, rt.cmd)
        return out, gap_us
    finally:
        t.close()
        rt.close()


@pytest.mark.parametrize("who", ["root", "uid 65534"])
def test_attach_then_bpftrace(exe, who):
    unpriv = who != "root"
    if unpriv and unpriv_reason():
        pytest.skip(unpriv_reason())
    out, gap_us = shim_side(exe, unpriv)
    why = kernel_bpf_reason()
    if why is None:
        t = Target(exe)
        try:
            ref = trace(t)
        finally:
            t.close()
        assert out == ref, f"kernel:\n{ref}\nbpfshim ({who}):\n{out}"
    assert f"@n: {CALLS}" in out, out
    # the target is stopped only while frida bootstraps (bench: scripts/bench uprobe)
    assert gap_us < 1_000_000, f"target stopped {gap_us} us during attach"
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")


def test_attach_errors(exe):
    rt = Runtime(prefix="bpfshim-attach-rt-")
    try:
        p = subprocess.Popen(["true"])
        p.wait()
        rc, msg = attach(p.pid, rt)
        assert (rc, msg.strip()) == (1, f"bpfshim attach: pid {p.pid}: {os.strerror(3)}")
        if unpriv_reason() is None:
            t = Target(exe)    # root's: uid 65534 may not ptrace it
            try:
                urt = Runtime(unpriv=True, prefix="bpfshim-attach-rtu-")
                rc, msg = attach(t.pid, urt, unpriv=True)
                urt.close()
                assert rc == 1 and os.strerror(1) in msg, msg
                assert t.ask("go 3") == "done"     # untouched
            finally:
                t.close()
    finally:
        rt.close()
