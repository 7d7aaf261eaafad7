"""The stock BCC python tools (bpfcc-tools) and libbpf-tools binaries that
work on uprobes, unmodified, on the kernel (root) and through bpfshim (root,
and uid 65534). Each case starts the tool on a pty (so its output is line
buffered, as on a terminal), waits for the line it prints once attached, runs
the deterministic victim (compat_tests/victims.py) or types into an
interactive bash, then ends the tool with SIGINT (or lets its own -n/-d end
it). Outputs are compared after masking pids, wall-clock times, latencies
(histograms of times by their number of calls) and the order of equal-count
lines (hash order).
"""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from compat_tests import golden
from compat_tests.hang import settle, wait_idle
from compat_tests.env import denied, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir
from compat_tests.victims import build_tp_victim, build_victims

pexpect = pytest.importorskip("pexpect")

BASH = "/bin/bash"
# on one CPU: events go to that CPU's perf buffer, so they are read in order
VICTIM = ["taskset", "-c", "0", "{V}"]
# the syscall tracepoints' victim ({VT}: compat_tests/victims.py tpvictim)
TPVICTIM = ["taskset", "-c", "0", "{VT}"]
# a shell under the shim that execs two commands, one missing; the marker is
# in their arguments only (execsnoop -l)
EXECS = ["sh", "-c", 'M=bpfshim-ex; /bin/true "$M-mark" a; /nonexistent/x "$M-mark" 2>/dev/null; exit 0']
EXITS = ["sh", "-c", '/bin/sh -c "exit 3"; /bin/true; exit 0']
# waiting for -p (a shell that reads a line, then execs getent)
GETENT = ["sh", "-c", 'read go; exec "$0" "$@"', "getent", "ahosts", "localhost"]
# waiting for -p: python (its USDT probes are behind semaphores, which a -p
# attach sets in the running process) reads a line, then imports threading;
# python 3.11's function__entry fires where the C eval loop is entered
# (types.py's helpers, called from C), not at python-to-python calls
PYTHON = ["/usr/bin/python3", "-c", "import sys; sys.stdin.readline()\nimport threading\n"]

# name -> (tool argv, line printed once attached, what drives it, how it ends)
# {V} victim, {L} libvictim.so. The driver is a command run to completion
# (started waiting when the tool needs its pid, {PID}), or "bash": typing
# into an interactive bash. Ends: "sigint", or "exit" (the tool's own -n).
# Some tools print their header before they open the perf buffer (events
# output before that are lost, on the kernel too): after the line, the tool
# is also waited for until it sleeps in its event loop (wait_idle).
CASES = {
    "funccount_regex": (["funccount-bpfcc", "-r", "{V}:^(work|fib|neg)$"], "Hit Ctrl-C", VICTIM, "sigint"),
    "funccount_lib_pid": (["funccount-bpfcc", "-p", "{PID}", "c:pthread_create"], "Hit Ctrl-C", VICTIM, "sigint"),
    "trace": (["trace-bpfcc", 'p:{V}:work "x=%d", arg1',
               'p:{V}:six "%d %d %d %d %d %d", arg1, arg2, arg3, arg4, arg5, arg6', 'p:{V}:greet "%s", arg1',
               'r:{V}:neg "ret=%d", retval', 'r:{V}:work (retval > 190) "big=%d", retval'], "PID", VICTIM, "sigint"),
    "trace_pid": (["trace-bpfcc", "-p", "{PID}", 'p:{V}:neg "%d", arg1'], "PID", VICTIM, "sigint"),
    "trace_usdt_python": (["trace-bpfcc", "-p", "{PID}", 'u:/usr/bin/python3:function__entry "%s %s", arg2, arg1'],
                          "PID", PYTHON, "sigint"),
    "funcinterval": (["funcinterval-bpfcc", "-m", "{V}:work"], "Hit Ctrl-C", VICTIM, "sigint"),
    "funclatency": (["funclatency-bpfcc", "-m", "{V}:work"], "Hit Ctrl-C", VICTIM, "sigint"),
    "argdist_count": (["argdist-bpfcc", "-v", "-i", "1", "-n", "1",
                       "-C", "p:{V}:work(unsigned int x):unsigned int:x%4",
                       "-C", "p:{V}:worker(long t, long i):long:t",
                       "-C", "p:{L}:lib_add(int a, int b):int:a+b"], "open kprobes", VICTIM, "exit"),
    "argdist_hist": (["argdist-bpfcc", "-v", "-i", "1", "-n", "1", "-H", "r:{V}:work():int:$retval",
                      "-H", "p:{V}:fib(int n):int:n"], "open kprobes", VICTIM, "exit"),
    "stackcount": (["stackcount-bpfcc", "-U", "{V}:work"], "Hit Ctrl-C", VICTIM, "sigint"),
    "bashreadline_bcc": (["bashreadline-bpfcc"], "COMMAND", "bash", "sigint"),
    "libbpf_funclatency": (["funclatency", "-m", "{V}:work"], "Hit Ctrl-C", VICTIM, "sigint"),
    "libbpf_funclatency_pid": (["funclatency", "-m", "-p", "{PID}", ":work"], "Hit Ctrl-C", VICTIM, "sigint"),
    "libbpf_funclatency_cgroup": (["funclatency", "-m", "-c", "/sys/fs/cgroup/unified", "{V}:work"], "Hit Ctrl-C",
                                  VICTIM, "sigint"),
    "libbpf_bashreadline": (["bashreadline"], "COMMAND", "bash", "sigint"),
    "funcslower": (["funcslower-bpfcc", "-u", "0.001", "-a", "2", "{V}:six", "{V}:neg"], "ARGS",
                   VICTIM, "sigint"),
    "gethostlatency_bcc": (["gethostlatency-bpfcc", "-p", "{PID}"], "HOST", GETENT, "sigint"),
    "libbpf_gethostlatency": (["gethostlatency", "-p", "{PID}"], "HOST", GETENT, "sigint"),
    # syscall tracepoints (the victim's start-up is over before it is traced)
    "libbpf_opensnoop_pid": (["opensnoop", "-p", "{PID}"], "PATH", TPVICTIM, "sigint"),
    "libbpf_opensnoop_failed_name": (["opensnoop", "-x", "-n", "tpvictim"], "PATH", TPVICTIM, "sigint"),
    "libbpf_syscount_errors": (["syscount", "-x", "-p", "{PID}"], "Ctrl+C", TPVICTIM, "sigint"),
    "libbpf_syscount_errno": (["syscount", "-e", "ENOENT", "-p", "{PID}"], "Ctrl+C", TPVICTIM, "sigint"),
    # -P: the process name from BPF_CORE_READ_STR_INTO(task->group_leader->comm)
    "libbpf_syscount_errno_by_process": (["syscount", "-e", "ENOENT", "-P", "-p", "{PID}"], "Ctrl+C", TPVICTIM,
                                         "sigint"),
    "libbpf_killsnoop": (["killsnoop", "-p", "{PID}"], "PID", TPVICTIM, "sigint"),
    "syscount_bcc_errors": (["syscount-bpfcc", "-x", "-p", "{PID}"], "Ctrl+C", TPVICTIM, "sigint"),
    "libbpf_execsnoop": (["execsnoop", "-x", "-l", "bpfshim-ex-mark"], "PCOMM", EXECS, "sigint"),
    # sched:sched_process_exit, system-wide: the shell and what it starts
    "libbpf_exitsnoop": (["exitsnoop"], "PCOMM", EXITS, "sigint"),
    # signal:signal_generate; SIGUSR1 only (a stopped process's parent also gets a
    # SIGCHLD when it continues, which the kernel generates)
    "libbpf_sigsnoop": (["sigsnoop", "-n", "-s", "10", "-p", "{PID}"], "RESULT", TPVICTIM, "sigint"),
}

BASH_LINES = ["echo one", "true two three", "x=4; echo $x"]


@pytest.fixture(scope="module")
def setup():
    for tool in ("funccount-bpfcc", "funclatency", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    d = readable_tmpdir("bpfshim-tools-")
    exe, lib = build_victims(d)
    sides = []
    if kernel_bpf_reason() is None:
        sides.append(("kernel", None))
    sides.append(("bpfshim", Runtime(prefix="bpfshim-tools-rt-")))
    if unpriv_reason() is None:
        sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-tools-rtu-")))
    yield {"{V}": exe, "{L}": lib, "{VT}": build_tp_victim(d)}, sides
    for _, rt in sides:
        if rt:
            rt.close()
    shutil.rmtree(d, ignore_errors=True)


def wrap(rt, argv, extra_env=()):
    return rt.cmd(argv, extra_env) if rt else list(argv)


def spawn(rt, argv, extra_env=()):
    argv = wrap(rt, argv, extra_env)
    env = rt.env() if rt else {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(extra_env)
    return pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", codec_errors="replace",
                         timeout=60, dimensions=(50, 200))


def waiting(rt, argv):
    """argv started so that it waits, blocked reading stdin, for go() (the
    victim with VICTIM_WAIT): its pid is known, and its files mapped, before
    any probe is placed. It runs meanwhile (not SIGSTOPped): bpfshim's
    attach returns once every running process applied it, as the kernel's
    once the breakpoint is in every mapping; a stopped process's agent
    cannot apply it before the process runs again (ARCHITECTURE.md)."""
    p = subprocess.Popen(wrap(rt, argv, [("VICTIM_WAIT", "1")]), stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, env=dict(os.environ, VICTIM_WAIT="1"))
    for _ in range(500):
        try:
            with open(f"/proc/{p.pid}/syscall") as f:
                if f.read().split()[:2] == ["0", "0x0"]:     # read(0, ...)
                    return p
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError("the victim does not wait on stdin")


def go(victim):
    victim.stdin.write(b"go\n")
    victim.stdin.close()


def drive_bash(rt):
    """An interactive bash (readline) on its own pty typing BASH_LINES."""
    sh = spawn(rt, [BASH, "--norc", "--noprofile", "-i"], [("PS1", "$ "), ("HISTFILE", "/dev/null")])
    sh.expect_exact("$ ")
    for line in BASH_LINES:
        sh.sendline(line)
        sh.expect_exact("$ ")
    pid = sh.pid
    sh.sendline("exit")
    sh.expect(pexpect.EOF)
    sh.close()
    return pid


def run_case(case, subst, rt):
    argv, ready, driver, end = CASES[case]
    sub = lambda args: [re.sub(r"{[VLP]\w*}", lambda m: subst[m.group(0)], a) for a in args]
    victim = None
    if driver != "bash" and any("{PID}" in a for a in argv):
        victim = waiting(rt, sub(driver))
        subst = dict(subst, **{"{PID}": str(victim.pid)})
    tool = spawn(rt, sub(argv))
    try:
        if tool.expect_exact([ready, pexpect.EOF, pexpect.TIMEOUT]):
            raise AssertionError(f"{argv[0]} did not attach:\n{tool.before}")
        wait_idle(tool.pid)
        if driver == "bash":
            pids = [drive_bash(rt)]
        else:
            if victim:
                go(victim)
            else:
                victim = subprocess.Popen(wrap(rt, sub(driver)), stdout=subprocess.DEVNULL)
            assert victim.wait(timeout=60) == 0
            pids = [victim.pid]
        if end == "sigint":
            settle(tool)      # the tool has drained what the probes wrote
            tool.kill(signal.SIGINT)
        tool.expect(pexpect.EOF)
        out = tool.before
    finally:
        tool.close(force=True)
        if victim and victim.poll() is None:
            victim.kill()
    return tool.exitstatus, tool.signalstatus, normalise(case, out, pids)


TIME = re.compile(r"\b\d\d:\d\d:\d\d\b")
LATENCY = re.compile(r"\s+\d+\.\d+\b")       # and its padding
ADDR = re.compile(r"\b0x[0-9a-f]{12}\b")       # user-space addresses (ASLR)
HIST_ROW = re.compile(r"^\s+\d+ -> \d+\s+: (\d+)\s")
EQUAL_COUNTS = re.compile(r"^\s+\d+\s+\S.* = ")
NAME_COUNT = re.compile(r"^(\w+)\s+(\d+)$")       # syscount's table


def normalise(case, out, pids):
    """Lines with the driver's pids, wall-clock times, latencies and
    addresses masked; runs of equal-count lines (hash order) sorted."""
    lines = [l.rstrip() for l in out.replace("\r\n", "\n").split("\n")]
    lines = [l for l in lines if l and "^C" not in l]
    pid = re.compile(r"\b(%s)\b" % "|".join(map(str, pids)))
    # a masked pid takes its column's padding with it: a 4-digit pid on one
    # side and a 5-digit one on the other are padded differently
    pid_col = re.compile(r" *\b(%s)\b *" % "|".join(map(str, pids)))
    if "bashreadline" in case:
        # a system-wide probe: the header and our shell's lines only
        lines = [l for l in lines if "COMMAND" in l or pid.search(l)]
    if case.startswith("trace"):
        # one perf buffer per probe, drained in turn: order kept within a probe
        lines = lines[:1] + sorted(lines[1:], key=lambda l: re.sub(r"[-\d]+", "", l))
    if re.search("funclatency|funcinterval", case):
        # times: how many calls the histogram holds, not which buckets
        total = sum(int(HIST_ROW.match(l).group(1)) for l in lines if HIST_ROW.match(l))
        lines = [l for l in lines if not HIST_ROW.match(l)] + [f"calls in the histogram: {total}"]
        lines = [re.sub(r"(avg|total)\W+\d+", r"\1 N", l) for l in lines]
    if "exitsnoop" in case:
        # system-wide: the header, the shell (PID) and its children (PPID)
        drv = {str(p) for p in pids}
        keep = []
        for l in lines:
            f = l.split()
            if f[:1] == ["PCOMM"] or (len(f) >= 6 and (f[1] in drv or f[2] in drv)):
                keep.append(" ".join([f[0], "PID" if f[1] in drv else "CPID", "PID" if f[2] in drv else "PPID",
                                      "TID" if f[3] == f[1] else "OTHER"] + f[5:]) if f[0] != "PCOMM" else l)
        lines = keep
    if "execsnoop" in case:
        # the pids of the commands the shell starts (its own is masked below)
        lines = [re.sub(r"^(\S+\s+)\d+", r"\1CPID", l) for l in lines]
    if "syscount" in case:
        # sorted by count; equal counts in hash order
        rows = sorted((l for l in lines if NAME_COUNT.match(l)),
                      key=lambda l: (-int(NAME_COUNT.match(l).group(2)), NAME_COUNT.match(l).group(1)))
        lines = [l for l in lines if not NAME_COUNT.match(l)] + rows
    lines = [ADDR.sub("ADDR", LATENCY.sub(" LAT", TIME.sub("TIME", pid_col.sub(" PID ", l)))).rstrip()
             for l in lines]
    out, run = [], []
    for l in lines + [None]:
        if l is not None and EQUAL_COUNTS.match(l):
            run.append(l)
            continue
        out += sorted(run)
        run = []
        if l is not None:
            out.append(l)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_tool(case, setup):
    subst, sides = setup
    argv = CASES[case][0]
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    why = denied("tools", case)
    if why:
        pytest.skip(f"DENYLIST: {why}")
    res = {name: run_case(case, subst, rt) for name, rt in sides}
    ref = sides[0][0]
    def result(r):      # as compat_tests/golden/tools.json records it
        return golden.masked(golden.jsonable(r), os.path.dirname(subst["{V}"]), "{DIR}")
    if ref == "kernel":
        golden.live("tools", {case: result(res[ref])})
    rc, sig, lines = res[ref]
    assert any(l.strip() for l in lines), f"{ref}: no output"
    for name, got in res.items():
        assert got == res[ref], f"{case}: {ref} vs {name}\n" + "\n".join(
            f"--- {n}: rc={r[0]} sig={r[1]}\n" + "\n".join(r[2]) for n, r in ((ref, res[ref]), (name, got)))
    if ref != "kernel":
        rec = golden.recorded("tools", case)
        if rec is None:
            pytest.skip(f"kernel side not run: {kernel_bpf_reason()}, and no recorded result")
        assert result(res[ref]) == rec, f"{case}: kernel (recorded) vs {ref}\n{rec}\n" + "\n".join(res[ref][2])
