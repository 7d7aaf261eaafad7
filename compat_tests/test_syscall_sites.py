"""Syscall sites rewritten into jumps (agent/syscall/site.c): which sites a
process gets rewritten (bpfshim's own behaviour, asserted directly), and
that the counts of each syscall stay the kernel's while sites are being
rewritten under threads, forks, vfork+exec, signal handlers, cancellation,
and while other tracepoints attach and detach.
"""
import os
import re
import subprocess
import threading

import pytest

from compat_tests.env import kernel_bpf_reason, unpriv_reason
from compat_tests.test_bpftrace import compare_sides, normalise, run_bpftrace, runtime_dirs, victims  # noqa: F401

# Hand-written sites: one of the shape that is rewritten, the same shape with a
# branch into its bytes, a syscall after a 2-byte instruction with no padding
# near it and one with padding after it; and the first shape again in a
# library loaded with dlopen.
SITES_LIB_S = """
.text
.globl lib_getppid
.type lib_getppid,@function
lib_getppid:
    mov $110, %eax
    syscall
    ret
.size lib_getppid, .-lib_getppid
.section .note.GNU-stack,"",@progbits
"""

SITES_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
long plain_getppid(void);    /* mov $110,%eax; syscall */
long branchy_getppid(int);   /* the same, and a branch into the mov's bytes */
long short_getppid(long);    /* mov %edi,%eax; syscall; no padding near */
long padded_getppid(long);   /* the same, and alignment padding after it */
long padded_read(long, void *, long);   /* xor %eax,%eax; syscall; and padding after it */
__asm__(".text\n"
        ".globl plain_getppid\n.type plain_getppid,@function\nplain_getppid:\n"
        "   mov $110, %eax\n   syscall\n   ret\n.size plain_getppid, .-plain_getppid\n"
        ".globl branchy_getppid\n.type branchy_getppid,@function\nbranchy_getppid:\n"
        "   test %edi, %edi\n   jnz 1f\n"
        "2: mov $110, %eax\n   syscall\n   ret\n"
        "1: jmp 2b+1\n"
        ".size branchy_getppid, .-branchy_getppid\n"
        ".globl short_getppid\n.type short_getppid,@function\nshort_getppid:\n"
        "   mov %edi, %eax\n   syscall\n   ret\n.size short_getppid, .-short_getppid\n"
        ".globl padded_getppid\n.type padded_getppid,@function\npadded_getppid:\n"
        "   mov %edi, %eax\n   syscall\n   ret\n.size padded_getppid, .-padded_getppid\n"
        ".fill 8, 1, 0x90\n"
        ".globl padded_read\n.type padded_read,@function\npadded_read:\n"
        "   xor %eax, %eax\n   syscall\n   ret\n.size padded_read, .-padded_read\n"
        ".fill 8, 1, 0x90\n");

static int under_bpfshim(void)
{
    static char buf[1 << 16];
    FILE *f = fopen("/proc/self/maps", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return strstr(buf, "libbpfshim") != NULL;
}

static long (*lib_getppid)(void);

static void calls(int n)
{
    for (int i = 0; i < n; i++) {
        lib_getppid();
        plain_getppid();
        branchy_getppid(0);
        short_getppid(110);
        padded_getppid(110);
        padded_read(-1, 0, 0);
        getppid();
        syscall(SYS_getppid);
    }
}

int main(int argc, char **argv)
{
    const unsigned char *lg = (const unsigned char *)getppid;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h || !(lib_getppid = (long (*)(void))dlsym(h, "lib_getppid")))
        return 1;
    calls(100);
    if (under_bpfshim()) {
        /* the sites that trapped are rewritten by the agent's thread, soon */
        struct timespec ms = { 0, 1000000 };
        for (int k = 0; k < 3000 && (*(const unsigned char *)plain_getppid != 0xe9 ||
                                    ((const unsigned char *)padded_read)[2] != 0xeb ||
                                    *(const unsigned char *)lib_getppid != 0xe9 || lg[0] != 0xe9); k++)
            nanosleep(&ms, 0);
        nanosleep(&ms, 0);
    }
    calls(100);
    if (under_bpfshim())
        fprintf(stderr, "sites: plain %x branchy %x short %x padded %x padread %x libc %x dlopen %x\n",
                *(unsigned char *)plain_getppid, ((unsigned char *)branchy_getppid)[4],
                ((unsigned char *)short_getppid)[2], ((unsigned char *)padded_getppid)[2],
                ((unsigned char *)padded_read)[2], lg[0],
                *(unsigned char *)lib_getppid);
    return 0;
}
"""

# Threads, a fork child, a vfork child that execs this program again, a
# signal handler, a thread cancelled in a blocking read: the syscalls of each
# counted, through libc's wrappers (getppid, getuid), syscall() (getsid).
STRESS_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
static long n;
static void *worker(void *a)
{
    for (long i = 0; i < n; i++) {
        getppid();
        if (i % 10 == 0) {
            getuid();
            syscall(SYS_getsid, 0);
        }
    }
    return 0;
}
static void *blocker(void *a)
{
    char c;
    read(*(int *)a, &c, 1);
    return 0;
}
static void on_usr1(int s) { getppid(); }
int main(int argc, char **argv)
{
    n = argc > 1 ? atol(argv[1]) : 20000;
    if (argc > 2) {        /* the image a vfork child execs */
        for (int i = 0; i < 1000; i++)
            getppid();
        return 3;
    }
    signal(SIGUSR1, on_usr1);
    int fds[2];
    pipe(fds);
    pthread_t b, t[8];
    pthread_create(&b, 0, blocker, &fds[0]);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], 0, worker, 0);
    for (int i = 0; i < 100; i++)
        raise(SIGUSR1);
    pid_t p = fork();
    if (!p) {
        for (int i = 0; i < 1000; i++)
            getppid();
        _exit(2);
    }
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[k > 0 ? k : 0] = 0;
    pid_t v = vfork();
    if (!v) {
        execl(self, self, "0", "child", (char *)0);
        _exit(127);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], 0);
    usleep(1000);
    pthread_cancel(b);
    void *r;
    pthread_join(b, &r);
    int st, st2;
    waitpid(p, &st, 0);
    waitpid(v, &st2, 0);
    printf("fork=%d vfork+exec=%d cancelled=%d\n", WEXITSTATUS(st), WEXITSTATUS(st2), r == PTHREAD_CANCELED);
    return 0;
}
"""

COUNTS = ('tracepoint:syscalls:sys_enter_getppid /comm == "tpstress8"/ { @p[pid == cpid] = count(); } '
          'tracepoint:syscalls:sys_exit_getppid /comm == "tpstress8"/ { @px[args->ret > 0] = count(); } '
          'tracepoint:syscalls:sys_enter_getuid /comm == "tpstress8"/ { @u = count(); } '
          'tracepoint:syscalls:sys_enter_getsid /comm == "tpstress8"/ { @s[args->pid] = count(); }')


def _build(d, name, src, ext=".c", flags=()):
    exe = os.path.join(d, name)
    with open(exe + ext, "w") as f:
        f.write(src)
    subprocess.run(["cc", "-O1", "-pthread", *flags, "-o", exe, exe + ext], check=True)
    os.chmod(exe, 0o755)
    return exe


@pytest.fixture(scope="module")
def site_victims(victims):  # noqa: F811
    d = os.path.dirname(victims[0])
    lib = _build(d, "libtpsites.so", SITES_LIB_S, ".s", ["-shared"])
    return f"{_build(d, 'tpsites', SITES_C, flags=['-ldl'])} {lib}", _build(d, "tpstress8", STRESS_C)


SITES_LINE = re.compile(r"^sites: .*\n?", re.M)


def test_which_sites_are_rewritten(site_victims, runtime_dirs):  # noqa: F811
    """Each call is counted as on the kernel, before and after the rewrite;
    the site of the mov-then-syscall shape is a jmp (e9) afterwards, in the
    program, in libc and in a library loaded later (dlopen), a syscall after
    read's xor %eax,%eax; syscall with padding after it is a jmp rel8 (eb), while the
    same shape with a branch into its bytes, the syscall with no padding near
    and one whose number comes from a register (it could be one that must
    trap, e.g. fork: through padding there is no syscall instruction to go
    back to) keep their code (bpfshim's own behaviour: the kernel rewrites nothing)."""
    exe = site_victims[0]
    script = ('tracepoint:syscalls:sys_enter_getppid /pid == cpid/ { @ = count(); } '
              'tracepoint:syscalls:sys_exit_getppid /pid == cpid/ { @r[args->ret > 0] = count(); }')
    sides = [(False, runtime_dirs[0])] + ([(True, runtime_dirs[1])] if unpriv_reason() is None else [])
    outs = []
    for unpriv, rt in sides:
        rc, out = run_bpftrace(script, exe, rt, unpriv=unpriv)
        assert rc == 0, out
        assert "sites: plain e9 branchy b8 short f padded f padread eb libc e9 dlopen e9" in out, out
        outs.append(normalise(SITES_LINE.sub("", out)))
    assert "@: 1400" in outs[0], outs[0]
    assert all(o == outs[0] for o in outs), outs
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    rc, out = run_bpftrace(script, exe)
    assert (rc, normalise(out)) == (0, outs[0])


def test_counts_while_sites_are_rewritten(site_victims, runtime_dirs):  # noqa: F811
    """8 threads hammer the same sites while they are rewritten; a fork
    child, a vfork child's new image, a signal handler and a cancelled
    thread: each syscall's count is the kernel's."""
    out = compare_sides(COUNTS, f"{site_victims[1]} 20000", runtime_dirs)
    assert "fork=2 vfork+exec=3 cancelled=1" in out, out
    assert "@u: 16000" in out, out


def test_attach_detach_while_threads_run(site_victims, runtime_dirs):  # noqa: F811
    """Other programs attach to the same and other syscalls and detach while
    8 threads make syscalls through rewritten sites: the counts of the
    program attached throughout lose and duplicate nothing (the kernel's)."""
    stop = threading.Event()

    def churn(rt, unpriv):
        while not stop.is_set():
            run_bpftrace('tracepoint:syscalls:sys_enter_getppid { @a = count(); } '
                         'tracepoint:syscalls:sys_enter_getuid { @b = count(); }', "/bin/sleep 0.1", rt, unpriv)

    def with_churn(rt=None, unpriv=False):
        stop.clear()
        t = threading.Thread(target=churn, args=(rt, unpriv))
        t.start()
        try:
            return run_bpftrace(COUNTS, f"{site_victims[1]} 250000", rt, unpriv)
        finally:
            stop.set()
            t.join()

    rc, out = with_churn(runtime_dirs[0])
    assert rc == 0 and "@u: 200000" in out, out
    if unpriv_reason() is None:
        rc_u, out_u = with_churn(runtime_dirs[1], True)
        assert (rc_u, normalise(out_u)) == (rc, normalise(out)), out_u
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    rc_k, out_k = with_churn()
    assert (rc_k, normalise(out_k)) == (rc, normalise(out)), f"kernel:\n{out_k}\nbpfshim:\n{out}"


def test_status_lists_sites(site_victims, runtime_dirs):  # noqa: F811
    """`bpfshim status` shows, for a traced process, its rewritten and
    trapping syscall sites and its traced syscalls per second (bpfshim's own
    report: the kernel has none to compare with)."""
    import sys
    import time
    from compat_tests.env import SHIM_LIB
    from compat_tests.test_bpftrace import BPFTRACE
    from syscall_server import cli
    rt = runtime_dirs[0]
    env = dict(os.environ, BPFSHIM_RUNTIME_DIR=rt)
    p = subprocess.Popen(["env", f"LD_PRELOAD={SHIM_LIB}", BPFTRACE, "-e", COUNTS, "-c",
                          f"{site_victims[1]} 1000000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        rows, deadline = [], time.time() + 30
        while time.time() < deadline and p.poll() is None:
            rows = [r for r in cli.syscall_sites(rt, 0.3) if _comm(r["pid"]) == "tpstress8"]
            if rows and rows[0]["rewritten"] > 0 and rows[0]["events_per_s"] > 0:
                break
        assert rows and rows[0]["rewritten"] > 0 and rows[0]["events_per_s"] > 0, rows
        text = subprocess.run([sys.executable, "-c", "from syscall_server import cli; cli.main(['status'])"],
                              env=env, capture_output=True, text=True, timeout=60).stdout
        assert re.search(rf"^syscall sites pid {rows[0]['pid']}: rewritten=[1-9]\d* trapping=\d+ traps/s=\d+ "
                         r"traced/s=\d+$", text, re.M), text
    finally:
        out = p.communicate(timeout=120)[0]
    assert p.returncode == 0 and "cancelled=1" in out, out


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None
