"""A traced process's fds are numbered as without bpfshim.

The kernel gives an open the lowest free number and programs count on it (a
daemon reopening stdin as 0 after closing it, a server's own bookkeeping).
The fds the runtime keeps in a traced process (/proc/self/mem for patching,
the task directory it walks to reach each thread, the server connection)
live above the application's numbers, and the walks made while the
application runs take no low number even for a moment: the victim's opens
return, in main, in a thread, after a fork, what they return under the
kernel's probes. Before, the task-directory walk of syscall dispatch made an
open of the victim's return 4 instead of 3 in about one run of two, and the
hook engine kept /proc/self/mem at the lowest free number for good.
"""
import pytest

from compat_tests.test_bpftrace import compare_sides, runtime_dirs  # noqa: F401 (fixture)
from compat_tests.victims import c_program

FDVICTIM_C = r"""
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
__attribute__((noinline)) int probed(int x) { __asm__ volatile("" ::: "memory"); return x + 1; }
static void *thread_main(void *a) {
    probed(2);
    int fd = open("/dev/null", O_RDONLY);
    printf("fd: thread %d\n", fd);
    close(fd);
    return 0;
}
int main(void) {
    probed(1);
    int a = open("/dev/null", O_RDONLY);
    for (int i = 0; i < 200; i++) {       /* while the runtime arms threads */
        getppid();
        int t = open("/dev/null", O_RDONLY);
        if (t != a + 1)
            printf("fd: open %d got %d\n", i, t);
        close(t);
        usleep(500);
    }
    pthread_t th;
    pthread_create(&th, 0, thread_main, 0);
    pthread_join(th, 0);
    pid_t p = fork();
    if (p == 0) {
        probed(3);
        getppid();
        dprintf(1, "fd: child %d\n", open("/dev/null", O_RDONLY));   /* unbuffered: it _exits */
        _exit(0);
    }
    waitpid(p, 0, 0);
    printf("fd: main %d %d\n", a, dup(0));
    return 0;
}
"""

SCRIPT = "uprobe:{V}:probed { @u = count(); }"
# With a syscall tracepoint attached from the start, the site rewriter reads
# the ELF file of each site that traps; libc's (nearly every site) is mapped
# before main() runs (agent/syscall/site.c syscall_site_premap): the victim's
# first open got fd 4, not 3, in 3 of 30 starts when the follower opened it.
SYSCALL_SCRIPT = "tracepoint:syscalls:sys_enter_getppid /comm == \"fdvictim\"/ { @s = count(); }"


@pytest.fixture(scope="module")
def fdvictim():
    with c_program("fdvictim", FDVICTIM_C, ["-pthread"]) as exe:
        yield exe


def fd_lines(out):
    return sorted(l for l in out.splitlines() if l.startswith("fd: "))


def test_fd_numbers_as_on_kernel(fdvictim, runtime_dirs):  # noqa: F811
    out = compare_sides(SCRIPT.replace("{V}", fdvictim), fdvictim, runtime_dirs, norm=fd_lines)
    assert "@u: 3" in out and "fd: child" in out and " got " not in out, out


@pytest.mark.parametrize("run", range(3))
def test_fd_numbers_with_syscall_tracepoint(fdvictim, runtime_dirs, run):  # noqa: F811
    out = compare_sides(SYSCALL_SCRIPT, fdvictim, runtime_dirs, norm=fd_lines)
    assert "fd: main" in out and "fd: child" in out and " got " not in out, out


# Every syscall the fork child's main thread makes, by number: the library's
# fork handlers (reopening its fds, starting the agent's thread) run before
# fork() returns to the child, and are not the application's syscalls.
# Heap growth (brk, mmap, munmap, mprotect) is left out: whether malloc needs
# it depends on what the heap already holds, which the library changes.
CHILD_SCRIPT = ('tracepoint:raw_syscalls:sys_enter /comm == "fdvictim" && pid != cpid && tid == pid && '
                'args->id != 12 && args->id != 9 && args->id != 11 && args->id != 10/ { @[args->id] = count(); }')


def test_fork_child_syscalls_as_on_kernel(fdvictim, runtime_dirs):  # noqa: F811
    out = compare_sides(CHILD_SCRIPT, fdvictim, runtime_dirs,
                        norm=lambda o: sorted(l for l in o.splitlines() if l.startswith("@[")))
    assert "fd: child" in out and "@[" in out, out
