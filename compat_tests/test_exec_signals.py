"""Syscall dispatch and the application's own SIGRTMAX.

bpfshim asks threads to arm for syscall tracepoints with a queued SIGRTMAX
(agent/syscall/dispatch.c ASK_SIG); before an exec it takes out a request still
pending (it would kill the new image), and must give back the application's
own SIGRTMAX: here one queued with a value, blocked, across a failed execve
and an execve that runs a child image, is received with its value as on the
kernel. Root and uid 65534.
"""
import pytest

from compat_tests.test_bpftrace import compare_sides, runtime_dirs  # noqa: F401 (fixture)
from compat_tests.victims import c_program

VICTIM_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) {                 /* the new image: what it has pending */
        sigset_t m;
        sigpending(&m);
        printf("sigv: image pending %d\n", sigismember(&m, SIGRTMAX));
        return 0;
    }
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMAX);
    sigprocmask(SIG_BLOCK, &m, 0);
    union sigval v = { .sival_int = 42 };
    sigqueue(getpid(), SIGRTMAX, v);
    for (int i = 0; i < 3; i++)
        execl("/nonexistent/sigv", "sigv", (char *)0);    /* fails: ENOENT */
    getppid();
    siginfo_t si;
    struct timespec z = { 0, 0 };
    int s = sigtimedwait(&m, &si, &z);
    printf("sigv: got %d value %d\n", s == SIGRTMAX, s == SIGRTMAX ? si.si_value.sival_int : -1);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        sigqueue(getpid(), SIGRTMAX, v);
        execl("/proc/self/exe", "sigv", "image", (char *)0);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    printf("sigv: child exit %d signal %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 0;
}
"""

SCRIPT = 'tracepoint:syscalls:sys_enter_getppid /comm == "sigv"/ { @ = count(); }'


@pytest.fixture(scope="module")
def victim():
    with c_program("sigv", VICTIM_C) as exe:
        yield exe


def lines(out):
    return sorted(l for l in out.splitlines() if l.startswith("sigv: "))


def test_application_sigrtmax_across_exec(victim, runtime_dirs):  # noqa: F811
    out = compare_sides(SCRIPT, victim, runtime_dirs, norm=lines)
    assert "@: 1" in out and "sigv: got 1 value 42" in out and "image pending 1" in out, out
