"""Uprobes under stress, through bpfshim (and on the kernel where the
numbers mean the same), with the libbpf loader of test_libbpf_uprobe.py:

- a probe on a function 8 threads call for 10 s loses no hit: the count in
  the map equals the calls the target counted itself;
- attach/detach 20 times under 8 calling threads: the target never crashes
  and exits 0;
- a target that exits while the loader is attached to its pid (or before):
  the loader ends in time with a clean status and message;
- kill -9 of the loader while attached: the target keeps running and the
  function's entry bytes (read in /proc/PID/mem) are restored within 1 s;
  the server keeps no program or link of the dead loader.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from compat_tests.env import ROOT, SHIM_LIB, kernel_bpf_reason, unpriv_reason
from compat_tests.test_libbpf_uprobe import build, dead_pid
from compat_tests.unpriv import Runtime, readable_tmpdir, run


@pytest.fixture(scope="module")
def setup():
    d = readable_tmpdir("bpfshim-uprobe-rob-")
    p = build(d)
    rt = Runtime(prefix="bpfshim-uprobe-rob-rt-")
    rtu = Runtime(unpriv=True, prefix="bpfshim-uprobe-rob-rtu-") if unpriv_reason() is None else None
    yield p, rt, rtu
    rt.close()
    if rtu:
        rtu.close()
    shutil.rmtree(d, ignore_errors=True)


def sides(rt, rtu, kernel=True):
    """(name, wrap) for each side this machine can run."""
    out = []
    if kernel and kernel_bpf_reason() is None:
        out.append(("kernel", lambda argv: list(argv)))
    out.append(("bpfshim", rt.cmd))
    if rtu:
        out.append(("bpfshim uid 65534", rtu.cmd))
    return out


def numbers(out):
    calls = re.search(r"^target: calls (\d+)$", out, re.M)
    tot = re.search(r"^total entry (\d+) ret (\d+)$", out, re.M)
    return (int(calls.group(1)) if calls else None, *(map(int, tot.groups()) if tot else (None, None)))


@pytest.mark.parametrize("side,ms", [("bpfshim", 10000), ("kernel", 2000), ("bpfshim uid 65534", 2000)])
def test_threads_count_exact(setup, side, ms):
    """8 threads call the probed function for `ms`: entry and return counts
    equal the target's own count (probes exist before the target starts)."""
    p, rt, rtu = setup
    wrap = dict(sides(rt, rtu)).get(side)
    if wrap is None:
        pytest.skip(f"{side} cannot run here")
    rc, out, err = run(wrap([p["loader"], "-o", p["plain.o"], "-f", "probed_fn", "-r", "-q", "-T", "60", "--",
                             p["target"], "threads", "8", str(ms)]), timeout=90)
    calls, entry, ret = numbers(out)
    assert rc == 0 and "target exit 0" in out, f"rc={rc}\n{out}\n{err}"
    assert calls and calls > 1000, out
    assert (entry, ret) == (calls, calls), f"target counted {calls}, probes {entry} / {ret}\n{err}"


@pytest.mark.parametrize("retprobe", [True, False], ids=["uprobe+uretprobe", "uprobe"])
def test_attach_detach_loop(setup, retprobe):
    """20 attach/detach cycles while 8 threads run through the function (and
    its return): the target neither crashes nor misbehaves, exits 0, and no
    probe counted more calls than the target made."""
    p, rt, _ = setup
    argv = [p["loader"], "-o", p["plain.o"], "-f", "probed_fn", "-F", "20", "-T", "60"]
    if retprobe:
        argv.append("-r")
    rc, out, err = run(rt.cmd(argv + ["--", p["target"], "threads", "8", "0"]), timeout=90)
    calls, entry, ret = numbers(out)
    assert rc == 0, f"rc={rc}\n{out}\n{err}"
    assert "flaps: 20/20 attached" in out and "target exit 0" in out, f"{out}\n{err}"
    assert calls is not None and entry is not None and entry <= calls and ret <= calls, out
    assert entry > 0, f"no attach cycle saw a hit\n{out}"


def test_attach_to_dead_pid(setup):
    """A pid filter naming a process that no longer exists: ESRCH from the
    perf event, as on the kernel (libbpf's message, exit 1, no hang)."""
    p, rt, rtu = setup
    res = {}
    for name, wrap in sides(rt, rtu):
        t0 = time.monotonic()
        rc, out, err = run(wrap([p["loader"], "-o", p["plain.o"], "-f", "probed_fn", "-r", "-p", str(dead_pid()),
                                 "-b", p["target"], "-T", "20"]), timeout=30)
        res[name] = (rc, out)
        assert time.monotonic() - t0 < 20
    assert set(res.values()) == {(1, "attach uprobe: No such process\n")}, res


def start_target(wrap_env, p, nthreads, ms):
    t = subprocess.Popen([p["target"], "threads", str(nthreads), str(ms)], env=wrap_env, stdout=subprocess.PIPE,
                         text=True)
    line = t.stdout.readline()
    m = re.search(r"fn (0x[0-9a-f]+)", line)
    assert m, line
    return t, int(m.group(1), 16)


def target_env(side, rt):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if side != "kernel":
        env = rt.env(env)
        env["LD_PRELOAD"] = str(SHIM_LIB)
    return env


@pytest.mark.parametrize("side", ["kernel", "bpfshim"])
def test_target_exits_while_attached(setup, side):
    """The loader attaches to the pid of a running target (not its child)
    and waits for it (pidfd); the target exits after 1.5 s: the loader
    detaches and ends at once with exit 0, and counted no more calls than
    the target made."""
    p, rt, _ = setup
    if side == "kernel" and kernel_bpf_reason() is not None:
        pytest.skip(kernel_bpf_reason())
    t, _ = start_target(target_env(side, rt), p, 2, 1500)
    argv = [p["loader"], "-o", p["plain.o"], "-f", "probed_fn", "-r", "-q", "-p", str(t.pid), "-w", str(t.pid),
            "-b", p["target"], "-T", "20"]
    t0 = time.monotonic()
    rc, out, err = run(argv if side == "kernel" else rt.cmd(argv), timeout=30)
    took = time.monotonic() - t0
    tout = t.stdout.read()
    assert t.wait() == 0, tout
    calls = int(re.search(r"target: calls (\d+)", tout).group(1))
    _, entry, ret = numbers(out)
    assert rc == 0 and "target gone after less than the timeout" in out, f"rc={rc}\n{out}\n{err}"
    assert took < 5, f"loader took {took:.1f} s"
    assert entry is not None and 0 < entry <= calls and ret <= calls, f"{out}\ntarget: {tout}"


def read_entry(pid, addr):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        return f.read(5)


def server_objects(rt):
    p = subprocess.run([sys.executable, "-m", "syscall_server.cli", "status", "--json"], cwd=ROOT,
                       env=rt.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    return st.get("progs", []), st.get("links", [])


@pytest.mark.parametrize("side", ["kernel", "bpfshim"])
def test_kill_loader_while_attached(setup, side):
    p, rt, _ = setup
    if side == "kernel" and kernel_bpf_reason() is not None:
        pytest.skip(kernel_bpf_reason())
    t, addr = start_target(target_env(side, rt), p, 8, 0)
    loader = None
    try:
        orig = read_entry(t.pid, addr)
        argv = [p["loader"], "-o", p["plain.o"], "-f", "probed_fn", "-r", "-H", "-T", "60", "-b", p["target"]]
        loader = subprocess.Popen(argv if side == "kernel" else rt.cmd(argv), stdout=subprocess.PIPE, text=True)
        line = loader.stdout.readline()
        while line and not line.startswith("attached"):
            line = loader.stdout.readline()
        assert line.startswith("attached"), "loader did not attach"
        deadline = time.monotonic() + 2
        while read_entry(t.pid, addr) == orig and time.monotonic() < deadline:
            time.sleep(0.002)
        patched = read_entry(t.pid, addr)
        assert patched != orig, "the probe never reached the function entry"
        time.sleep(0.2)
        loader.kill()
        loader.wait()
        t0 = time.monotonic()
        while read_entry(t.pid, addr) != orig and time.monotonic() - t0 < 5:
            time.sleep(0.002)
        took = time.monotonic() - t0
        now = read_entry(t.pid, addr)
        assert now == orig, f"entry bytes {now.hex()} (original {orig.hex()}) 5 s after kill -9 of the loader"
        assert took < 1, f"probe removed {took * 1000:.0f} ms after kill -9 of the loader"
        assert t.poll() is None, "the target died with the loader"
        if side == "bpfshim":
            progs, links = server_objects(rt)
            assert not progs and not links, f"stale objects after kill -9: {progs} {links}"
    finally:
        if loader and loader.poll() is None:
            loader.kill()
            loader.wait()
        t.send_signal(signal.SIGTERM)
        tout = t.stdout.read()
        rc = t.wait(timeout=30)
    assert rc == 0 and "target: calls" in tout, f"target rc={rc}\n{tout}"


HOT_C = r"""
#include <pthread.h>
#include <stdio.h>
volatile long sink;
__attribute__((noinline)) void hot(long i) { sink += i; }
static void *run(void *a) { for (long i = 0; i < 50000; i++) hot(i); return a; }
int main(void) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) pthread_create(&t[i], 0, run, 0);
    for (int i = 0; i < 8; i++) pthread_join(t[i], 0);
    printf("calls %d\n", 8 * 50000);
    return 0;
}
"""


@pytest.mark.parametrize("side", ["kernel", "bpfshim", "bpfshim@65534"])
def test_bpftrace_percpu_count_exact(side):
    """bpftrace's count() is a read-modify-write of this CPU's slot of a
    per-CPU map: 8 threads on fewer CPUs, preempted and migrated, lose no
    count (a run holds its CPU slot, as the kernel's runs hold their CPU)."""
    bpftrace = shutil.which("bpftrace")
    if not bpftrace:
        pytest.skip("bpftrace is not installed")
    if side == "kernel" and kernel_bpf_reason():
        pytest.skip(kernel_bpf_reason())
    if side.endswith("65534") and unpriv_reason():
        pytest.skip(unpriv_reason())
    d = readable_tmpdir("bpfshim-percpu-")
    exe = os.path.join(d, "hot")
    with open(exe + ".c", "w") as f:
        f.write(HOT_C)
    subprocess.run(["cc", "-O1", "-pthread", "-o", exe, exe + ".c"], check=True)
    os.chmod(exe, 0o755)
    argv = [bpftrace, "-e", f"uprobe:{exe}:hot {{ @n = count(); }}", "-c", exe]
    if side == "kernel":
        rc, out, err = run(argv, timeout=300)
    else:
        rt = Runtime(unpriv=side.endswith("65534"), prefix="bpfshim-percpu-rt-")
        try:
            rc, out, err = run(rt.cmd(argv), timeout=300)
        finally:
            rt.close()
    shutil.rmtree(d, ignore_errors=True)
    assert rc == 0, err
    assert "calls 400000" in out, out
    assert re.search(r"^@n: 400000$", out, re.M), out + err
