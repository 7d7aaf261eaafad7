"""Syscall tracepoints (syscalls:sys_enter_*/sys_exit_*, raw_syscalls:*):
bpftrace one-liners on the kernel (root) and through bpfshim (root, uid
65534), against tpvictim (compat_tests/victims.py), whose syscalls after its
start come from the main thread, threads, a signal handler and a forked
child. Each script selects syscalls a program's start-up never makes: the
kernel also traces the dynamic loader, which runs before bpfshim's agent.
Then the tracefs files bpfshim serves when tracefs is unreadable, against
the kernel's.
"""
import os
import subprocess

import pytest

from compat_tests.env import unpriv_reason
from compat_tests.test_bpftrace import compare_sides, runtime_dirs, victims  # noqa: F401 (fixtures)
from compat_tests.unpriv import Runtime
from compat_tests.victims import build_tp_victim
from syscall_server import tracepoints

T = "{T}"
ME = "/pid == cpid/"
SCRIPTS = {
    "enter_count": "tracepoint:syscalls:sys_enter_getppid " + ME + " { @ = count(); }",
    "enter_by_thread": "tracepoint:syscalls:sys_enter_getppid " + ME + " { @[tid == pid] = count(); }",
    "openat_args": 'tracepoint:syscalls:sys_enter_openat /pid == cpid && strncmp(str(args->filename), "/dev/", 5) '
                   '== 0/ { printf("%s %d %x\\n", str(args->filename), args->dfd, args->flags); }',
    "write_enter_exit": "tracepoint:syscalls:sys_enter_write " + ME + " { @w[args->fd, args->count] = count(); } "
                        "tracepoint:syscalls:sys_exit_write " + ME + " { @r[args->ret] = count(); }",
    "exit_errno": "tracepoint:syscalls:sys_exit_getcwd " + ME + " { @[args->ret] = count(); }",
    "syscall_nr_field": "tracepoint:syscalls:sys_enter_umask " + ME + " { printf(\"%d %o\\n\", args->__syscall_nr, "
                        "args->mask); } tracepoint:syscalls:sys_exit_umask " + ME
                        + " { printf(\"%d %o\\n\", args->__syscall_nr, args->ret); }",
    "raw_enter_exit": "tracepoint:raw_syscalls:sys_enter /pid == cpid && args->id == 110/ { @e = count(); } "
                      "tracepoint:raw_syscalls:sys_exit /pid == cpid && args->id == 1/ { @x[args->ret] = count(); }",
    "raw_args": "tracepoint:raw_syscalls:sys_enter /pid == cpid && args->id == 1/ "
                "{ @[args->args[0], args->args[2]] = count(); }",
    "kill_args": "tracepoint:syscalls:sys_enter_kill " + ME + " { @[args->sig, args->pid == cpid] = count(); } "
                 "tracepoint:syscalls:sys_exit_kill " + ME + " { @r = sum(args->ret); }",
    "signal_handler": "tracepoint:syscalls:sys_enter_rt_sigreturn " + ME + " { @sr = count(); } "
                      "tracepoint:syscalls:sys_enter_tgkill " + ME + " { @[args->sig] = count(); }",
    "fork_child": 'tracepoint:syscalls:sys_enter_getppid /comm == "tpvictim" && pid != cpid/ { @child = count(); } '
                  'tracepoint:syscalls:sys_enter_exit_group /comm == "tpvictim"/ { @[args->error_code] = count(); }',
    "clone_exit_in_both": "tracepoint:syscalls:sys_exit_clone3 " + ME + " { @[args->ret > 0] = count(); } "
                          'tracepoint:syscalls:sys_exit_clone /comm == "tpvictim"/ { @c[args->ret == 0] = count(); }',
    # the new image fires it: the execve of tpvictim by bpftrace's child
    "execve_exit": 'tracepoint:syscalls:sys_exit_execve /comm == "tpvictim"/ { printf("%s %d %d\\n", comm, '
                   'args->ret, pid == cpid); }',
    # threads (exit), the fork child and the process (exit_group)
    "sched_process_exit": 'tracepoint:sched:sched_process_exit /comm == "tpvictim"/ { @[args->comm, '
                          'args->pid == cpid, args->group_dead, args->prio] = count(); }',
    # in the parent of each thread and of the fork child (__data_loc comms)
    "sched_process_fork": "tracepoint:sched:sched_process_fork /args->parent_pid == (int32)cpid/ { "
                          'printf("%s %s %d\\n", str(args->parent_comm), str(args->child_comm), '
                          "args->child_pid > 0); }",
    # the new image of bpftrace's child (the file as execve got it)
    "sched_process_exec": "tracepoint:sched:sched_process_exec /pid == cpid/ { "
                          'printf("%s %d %d\\n", str(args->filename), args->pid == (int32)cpid, '
                          "args->old_pid == (int32)cpid); }",
    # raise() (tgkill), and the SIGCHLDs the fork child and the process send at exit
    "signal_generate": 'tracepoint:signal:signal_generate /comm == "tpvictim"/ { printf("%d %d %d %s %d %d %d '
                       '%d\\n", args->sig, args->errno, args->code, args->comm, args->pid == (int32)tid, '
                       "args->group, args->result, pid == cpid); }",
    "wildcard": "tracepoint:syscalls:sys_enter_get*pid " + ME + " { @[probe] = count(); }",
    "comm_and_printf": 'tracepoint:syscalls:sys_enter_kill /comm == "tpvictim"/ { printf("%s %d\\n", comm, '
                       'args->sig); }',
    "stat_path": 'tracepoint:syscalls:sys_enter_newfstatat /pid == cpid && '
                 'strncmp(str(args->filename), "/nonexistent", 12) == 0/ { printf("%s %d\\n", str(args->filename), '
                 'args->dfd); }',
}


@pytest.fixture(scope="module")
def tp_victim(victims):  # noqa: F811
    return build_tp_victim(os.path.dirname(victims[0]))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_syscall_tracepoint(name, tp_victim, runtime_dirs):  # noqa: F811
    out = compare_sides(SCRIPTS[name].replace(T, tp_victim), tp_victim, runtime_dirs)
    assert [l for l in out.splitlines() if l.strip() and not l.startswith("Attaching")], out


# ---- the tracefs files bpfshim serves when tracefs is unreadable ----

EVENTS = ["syscalls/sys_enter_openat", "syscalls/sys_exit_openat", "syscalls/sys_enter_getpid",
          "syscalls/sys_enter_newstat", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit",
          "sched/sched_process_exit"]


def _tracefs():
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.access(os.path.join(root, "events/syscalls/sys_enter_openat/format"), os.R_OK):
            return root
    return None


READER = r"""
import sys
for p in sys.argv[1:]:
    with open(p) as f:
        sys.stdout.write(f.read())
    sys.stdout.write("\0")
"""


def test_tracefs_files_served():
    """uid 65534 cannot read tracefs: through the shim it reads the kernel's
    format files (ids from the snapshot of the emulated kernel, the rest the
    kernel's), and available_events lists the served events."""
    root = _tracefs()
    if root is None:
        pytest.skip("tracefs is not readable here (needs root and tracefs mounted)")
    why = unpriv_reason()
    if why:
        pytest.skip(why)
    paths = [f"{root}/events/{e}/format" for e in EVENTS] + [f"{root}/available_events"]
    rt = Runtime(unpriv=True, prefix="bpfshim-tracefs-")
    try:
        p = subprocess.run(rt.cmd(["python3", "-c", READER] + paths), capture_output=True, text=True, timeout=60)
    finally:
        rt.close()
    assert p.returncode == 0, p.stderr
    got = p.stdout.split("\0")
    import re
    for path, text in zip(paths, got):
        if path.endswith("available_events"):
            served = set(text.split())
            kernel = {l for l in open(path).read().split()
                      if l.split(":")[0] in tracepoints.CATEGORIES or tuple(l.split(":")) in tracepoints.EVENTS}
            assert served == kernel, sorted(kernel ^ served)[:10]
            continue
        with open(path) as f:
            want = f.read()
        # ids differ between kernel builds and boots; the layout must not
        assert re.sub(r"ID: \d+", "ID: N", text) == re.sub(r"ID: \d+", "ID: N", want), path


# ---- a process that leans on what dispatch emulates ----

# threads, fork, system() and posix_spawn (clone3 with a stack, vfork-style
# clone), a 1 kHz SIGALRM whose handler (all signals masked) makes a syscall,
# sigprocmask, sigsuspend; it prints what it saw, which must not change
STRESS_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static volatile int alarms, usr1;
static void on_alarm(int s) { alarms++; getpgid(0); }
static void on_usr1(int s) { usr1++; }
static void *worker(void *a) { for (int i = 0; i < 2000; i++) getppid(); return 0; }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    pid_t p = fork();
    if (!p) { getppid(); _exit(7); }
    int st, st2;
    waitpid(p, &st, 0);
    int r = system("exit 3");
    pid_t sp;
    char *argv[] = {"/bin/sh", "-c", "exit 5", 0};
    posix_spawn(&sp, "/bin/sh", 0, 0, argv, environ);
    waitpid(sp, &st2, 0);
    struct itimerval z = {0};
    setitimer(ITIMER_REAL, &z, 0);
    signal(SIGUSR1, on_usr1);
    sigset_t m, old;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, &old);
    kill(getpid(), SIGUSR1);
    int before = usr1;
    sigsuspend(&old);
    sigprocmask(SIG_SETMASK, &old, 0);
    printf("fork=%d system=%d spawn=%d alarms>0=%d usr1 %d->%d\n", WEXITSTATUS(st), WEXITSTATUS(r),
           WEXITSTATUS(st2), alarms > 0, before, usr1);
    return 0;
}
"""


@pytest.fixture(scope="module")
def stress_victim(victims):  # noqa: F811
    exe = os.path.join(os.path.dirname(victims[0]), "tpstress")
    with open(exe + ".c", "w") as f:
        f.write(STRESS_C)
    subprocess.run(["cc", "-O1", "-pthread", "-o", exe, exe + ".c"], check=True)
    os.chmod(exe, 0o755)
    return exe


def test_syscall_tracepoint_stress(stress_victim, runtime_dirs):  # noqa: F811
    """Every syscall of the process dispatched (raw_syscalls) while it
    forks, spawns, takes signals and changes masks: it behaves as on the
    kernel, and the counts of its own calls agree."""
    script = ('tracepoint:raw_syscalls:sys_enter /comm == "tpstress"/ { @all = count(); } '
              'tracepoint:syscalls:sys_enter_getppid /comm == "tpstress"/ { @p[pid == cpid] = count(); } '
              'END { clear(@all); }')
    out = compare_sides(script, stress_victim, runtime_dirs)
    assert "fork=7 system=3 spawn=5 alarms>0=1 usr1 0->1" in out, out


def test_dispatch_off_by_env(tp_victim, runtime_dirs):  # noqa: F811
    """BPFSHIM_NO_SYSCALL_DISPATCH keeps a process out of syscall tracepoints
    (no kernel counterpart: bpfshim's own switch); the same script sees the
    process without it."""
    from compat_tests.test_bpftrace import run_bpftrace
    script = 'tracepoint:syscalls:sys_enter_getppid /comm == "tpvictim"/ { @n = count(); }'
    import re
    rc, out = run_bpftrace(script, tp_victim, runtime_dirs[0])
    assert rc == 0 and re.search(r"^@n: [1-9]", out, re.M), out
    rc, out = run_bpftrace(script, f"/usr/bin/env BPFSHIM_NO_SYSCALL_DISPATCH=1 {tp_victim}", runtime_dirs[0])
    assert rc == 0 and re.search(r"^@n: 0$", out, re.M), out


# CPython: threads, subprocess (vfork, then exec of sh), a signal handler, fork
PY_VICTIM = r"""
import os, signal, subprocess, threading
def work():
    for _ in range(100):
        os.getppid()
ts = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in ts]
[t.join() for t in ts]
out = subprocess.run(["/bin/sh", "-c", "exit 4"]).returncode
signal.signal(signal.SIGUSR1, lambda *a: os.getppid())
os.kill(os.getpid(), signal.SIGUSR1)
pid = os.fork()
if pid == 0:
    os.getppid()
    os._exit(5)
_, st = os.waitpid(pid, 0)
print("py", out, os.waitstatus_to_exitcode(st))
"""


def test_syscall_tracepoint_python(victims, runtime_dirs):  # noqa: F811
    """The interpreter under dispatch behaves, and its calls are counted, as
    on the kernel."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("/usr/bin/python3 is not installed")
    script = os.path.join(os.path.dirname(victims[0]), "pyvictim.py")
    with open(script, "w") as f:
        f.write(PY_VICTIM)
    os.chmod(script, 0o644)
    bt = ('tracepoint:syscalls:sys_enter_getppid /comm == "python3"/ { @[pid == cpid] = count(); } '
          'tracepoint:sched:sched_process_exec /comm == "sh"/ { @sh = count(); }')
    out = compare_sides(bt, f"/usr/bin/python3 {script}", runtime_dirs)
    assert "py 4 5" in out and "@[1]: 301" in out, out
