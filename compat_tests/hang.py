"""A tool's process from the outside: until it waits in its event loop
(wait_idle), ended as at a terminal (interrupt), and when it does not end,
explained (describe): what a hung process group is doing, for the failure
message of a test that timed out, each process and thread with its state,
the syscall it is in, its kernel stack (root) and its user stack (when gdb
is installed). CI output is all a failed run leaves, so a hang has to
explain itself there.
"""
import os
import shutil
import signal
import subprocess
import time


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"({e.strerror})"


def _group(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid:
                    pids.append(int(d))
            except OSError:
                pass
    return sorted(pids)


def describe(pgid, gdb_timeout=20):
    """The processes of group pgid, thread by thread (call before killing it)."""
    out = []
    gdb = shutil.which("gdb")
    for pid in _group(pgid):
        out.append(f"--- pid {pid} {_read(f'/proc/{pid}/cmdline').replace(chr(0), ' ')[:200]}")
        try:
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        for tid in tids:
            t = f"/proc/{pid}/task/{tid}"
            stat = _read(f"{t}/stat")
            state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
            out.append(f"  tid {tid} {_read(f'{t}/comm')} state {state} wchan {_read(f'{t}/wchan')} "
                       f"syscall {_read(f'{t}/syscall').split(' ')[0]}")
            if os.getuid() == 0:
                out.extend("    k " + line for line in _read(f"{t}/stack").splitlines()[:8])
        if gdb:
            try:
                r = subprocess.run([gdb, "-batch", "-nx", "-p", str(pid), "-ex", "thread apply all bt 25"],
                                   capture_output=True, text=True, timeout=gdb_timeout)
                out.extend("    " + line for line in r.stdout.splitlines()
                           if line.startswith(("#", "Thread")))
            except subprocess.TimeoutExpired:
                out.append("    (gdb timed out)")
    return "\n".join(out)


def interrupt(p, timeout, group=False, every=2.0):
    """End a tool with SIGINT as a user at a terminal would, and return its
    output: the signal again every `every` seconds until it exits (SIGKILL
    and TimeoutExpired after `timeout`). bpftrace 0.17 looks at its exit flag
    only when epoll_wait fails with EINTR or an event arrives: a SIGINT that
    lands after epoll_wait has returned on its 100 ms timeout and before the
    next call is seen at no later time (measured here with the kernel's
    signal_deliver tracepoint, on the kernel and through bpfshim alike; more
    often the busier the machine)."""
    end = time.monotonic() + timeout
    while True:
        try:
            (os.killpg if group else os.kill)(p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            out, _ = p.communicate(timeout=max(0.1, min(every, end - time.monotonic())))
            return out
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                raise


# poll, select, nanosleep, epoll_wait, ppoll, clock_nanosleep, pselect6, epoll_pwait
EVENT_LOOP_SYSCALLS = {"7", "23", "35", "232", "271", "230", "270", "281"}


def in_event_loop(pid):
    """Whether the tool's main thread sleeps in its event loop (poll, epoll,
    sleep) now; True when it is gone."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] in EVENT_LOOP_SYSCALLS
    except (OSError, IndexError):
        return True


def wait_idle(pid):
    """Until the tool's main thread sleeps in its event loop: its perf
    buffers are open then."""
    for _ in range(3000):
        if in_event_loop(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} does not reach its event loop")


def settle(tool, quiet=0.3, limit=20):
    """Until a tool on a pexpect pty has printed nothing for `quiet` s and
    waits in its event loop: what the probes wrote has been read and
    printed (a fixed sleep is too short on a busy machine). Its output stays
    in the pty's buffer for the caller's next expect."""
    import pexpect
    end, seen = time.monotonic() + limit, -1
    while time.monotonic() < end:
        if tool.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=quiet) == 1:
            return
        if len(tool.before) == seen and in_event_loop(tool.pid):
            return
        seen = len(tool.before)
