"""What bpfshim does not serve names itself (issue: every unsupported
feature, once, in words a user understands): each probe below fails through
bpfshim with the loader's own error and one line from bpfshim naming the
probe, that it is not served in user space, and what it needs; the loader
exits through its error path (no signal, no hang), as when the kernel
refuses. The kernel serves all of these, so there is no kernel side to
compare: the line and the clean exit are asserted directly."""
import os
import shutil
import subprocess
import tempfile

import pytest

from compat_tests.env import SHIM_LIB, unpriv_cmd, unpriv_reason

BPFTRACE = shutil.which("bpftrace")
TCPCONNECT = shutil.which("tcpconnect-bpfcc") or "/usr/sbin/tcpconnect-bpfcc"

CASES = {
    # script, the line bpfshim prints, whether bpftrace still runs
    "sched_switch": ("tracepoint:sched:sched_switch { @ = count(); }",
                     "sched:sched_switch", False),
    "kprobe": ("kprobe:do_nanosleep { @ = count(); }", "kprobes are not served in user space", False),
    "hardware": ("hardware:cycles:1000000 { @ = count(); }",
                 "hardware event cpu-cycles is not served in user space", False),
    "profile": ("profile:hz:99 { @[comm] = count(); }",
                "cpu-clock sampling (profile) runs on a timer in the loader", True),
    # bpftrace's kfunc probe loads an fentry program: refused, so bpftrace
    # says kfunc is not available (its own error) instead of failing at attach
    "kfunc": ("kfunc:do_nanosleep { @ = count(); }", "BPF_PROG_TYPE_TRACING programs", False),
}


def _run(argv, unpriv, timeout=60):
    rt = tempfile.mkdtemp(prefix="bpfshim-unsup-")
    os.chmod(rt, 0o700)
    pre = []
    if unpriv:
        os.chown(rt, 65534, 65534)
        pre = unpriv_cmd()
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    try:
        return subprocess.run(pre + ["env", f"LD_PRELOAD={SHIM_LIB}", f"BPFSHIM_RUNTIME_DIR={rt}"] + argv,
                              capture_output=True, text=True, timeout=timeout, cwd="/", env=env)
    finally:
        subprocess.run(["pkill", "-f", f"runtime-dir {rt}"])
        shutil.rmtree(rt, ignore_errors=True)


def _user(unpriv):
    if unpriv and unpriv_reason():
        pytest.skip(unpriv_reason())
    if not unpriv and os.getuid() != 0:
        pytest.skip("not root")


@pytest.mark.parametrize("unpriv", [False, True], ids=["root", "uid65534"])
@pytest.mark.parametrize("name", list(CASES))
def test_bpftrace_names_what_is_not_served(name, unpriv):
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    _user(unpriv)
    script, line, runs = CASES[name]
    p = _run([BPFTRACE, "-e", script + " interval:ms:300 { exit(); }"], unpriv)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("bpfshim: ")]
    assert any(line in ln for ln in lines), p.stderr
    assert len([ln for ln in lines if line in ln]) == 1, p.stderr      # once
    assert (p.returncode == 0) if runs else (p.returncode > 0), (p.returncode, p.stderr)   # an exit, no signal


def test_bcc_kprobe_tool_names_kprobes():
    """BCC tcpconnect (kprobes) as uid 65534: bpfshim's line before BCC's
    "not traceable", and BCC's clean error exit."""
    if not os.path.exists(TCPCONNECT):
        pytest.skip("bpfcc-tools is not installed")
    _user(True)
    p = _run([TCPCONNECT], True, timeout=120)
    assert "bpfshim: kprobes are not served in user space" in p.stderr, p.stderr
    assert p.returncode > 0, (p.returncode, p.stderr[-2000:])
