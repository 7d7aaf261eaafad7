"""Deterministic sample programs the tool tests probe: `victim` calls
work(0..99), fib(10), six(), greet() on four strings, neg(-3..2), worker()
50 times from each of 4 threads, and lib_add() from `libvictim.so` 10 times,
then exits; with VICTIM_WAIT set it first waits for a line on stdin (a
tool attaches to its pid meanwhile). Built with -O1 -fno-inline so every function is a real call."""
import contextlib
import os
import shutil
import subprocess

VICTIM_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
volatile long sink;
/* Blocked reading stdin while a tool attaches to this pid: a running
 * process, which the kernel and bpfshim both have probed when the tool's
 * attach returns (a stopped one bpfshim can only patch once it runs again). */
static void wait_for_go(void) {
    char c;
    if (getenv("VICTIM_WAIT")) while (read(0, &c, 1) < 0) ;
}
int lib_add(int a, int b);
__attribute__((noinline)) int work(int x) { sink += x; return x * 2 + 1; }
__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) long six(long a, long b, long c, long d, long e, long f) { sink += a; return a + b + c + d + e + f; }
__attribute__((noinline)) int greet(const char *s) { sink += s[0]; return (int)s[0]; }
__attribute__((noinline)) int neg(int x) { sink += x; return -x; }
__attribute__((noinline)) void worker(long t, long i) { sink += t + i; }
static void *thread_main(void *arg) {
    for (long i = 0; i < 50; i++) worker((long)(intptr_t)arg, i);
    return 0;
}
int main(void) {
    static const char *names[] = {"alpha", "beta", "gamma", "beta"};
    pthread_t th[4];
    wait_for_go();
    for (int i = 0; i < 100; i++) sink += work(i);
    sink += fib(10);
    for (int i = 0; i < 5; i++) sink += six(i, 2 * i, 3 * i, 4 * i, 5 * i, 6 * i);
    /* touch the strings first: a kernel uprobe cannot fault pages in, so
       str() of a never-read .rodata page reads "" there */
    for (int i = 0; i < 4; i++) for (const char *p = names[i]; *p; p++) sink += *p;
    for (int i = 0; i < 4; i++) sink += greet(names[i]);
    for (int i = -3; i < 3; i++) sink += neg(i);
    for (long t = 0; t < 4; t++) pthread_create(&th[t], 0, thread_main, (void *)(intptr_t)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], 0);
    for (int i = 0; i < 10; i++) sink += lib_add(i, 100);
    return 0;
}
"""

LIB_C = r"""
__attribute__((noinline)) int lib_add(int a, int b) { return a + b; }
"""


def build_victims(d):
    """Compile victim and libvictim.so into d (a directory uid 65534 can
    read); returns their paths (exe, lib)."""
    lib = os.path.join(d, "libvictim.so")
    exe = os.path.join(d, "victim")
    with open(os.path.join(d, "lib.c"), "w") as f:
        f.write(LIB_C)
    with open(os.path.join(d, "victim.c"), "w") as f:
        f.write(VICTIM_C)
    subprocess.run(["cc", "-O1", "-fno-inline", "-shared", "-fPIC", "-o", lib, os.path.join(d, "lib.c")], check=True)
    subprocess.run(["cc", "-O1", "-fno-inline", "-o", exe, os.path.join(d, "victim.c"), f"-L{d}", "-lvictim",
                    f"-Wl,-rpath,{d}", "-pthread"], check=True)
    for p in (lib, exe):
        os.chmod(p, 0o755)
    return exe, lib

# USDT probes (sys/sdt.h, systemtap-sdt-dev) with semaphores: `tick` and
# `twice` (a probe with two sites) are gated by their semaphores, as real
# applications gate costly arguments; at exit the victim prints the
# semaphores, which count the probed sites (the kernel adds 1 per site).
# With "watch" it instead prints each change of the semaphore of `watched`
# (one site) until it is back to 0 after a tracer came and went (10 s at most).
USDT_C = r"""
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
volatile unsigned short app_tick_semaphore __attribute__((section(".probes")));
volatile unsigned short app_twice_semaphore __attribute__((section(".probes")));
volatile unsigned short app_plain_semaphore __attribute__((section(".probes")));
volatile unsigned short app_watched_semaphore __attribute__((section(".probes")));
volatile long sink;
__attribute__((noinline)) void gated(long i) { sink += i; }
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "watch")) {
        unsigned last = 0, seen = 0;
        printf("ready\n");
        fflush(stdout);
        for (int t = 0; t < 10000 && !(seen && !last); t++) {
            if (app_watched_semaphore != last) {
                last = app_watched_semaphore;
                seen = 1;
                printf("semaphore %u\n", last);
                fflush(stdout);
            }
            STAP_PROBE1(app, watched, t);
            usleep(1000);
        }
        return 0;
    }
    for (long i = 0; i < 40; i++) {
        if (app_tick_semaphore)
            gated(i);
        STAP_PROBE2(app, tick, i, i * 2);
        STAP_PROBE1(app, plain, i + 100);
        if (app_twice_semaphore) {
            if (i % 2)
                STAP_PROBE1(app, twice, i);
            else
                STAP_PROBE1(app, twice, -i);
        }
    }
    printf("tick semaphore %u, twice semaphore %u\n", app_tick_semaphore, app_twice_semaphore);
    return 0;
}
"""


def build_usdt_victim(d):
    """The USDT victim in d, or None without sys/sdt.h."""
    exe = os.path.join(d, "usdt_victim")
    with open(exe + ".c", "w") as f:
        f.write(USDT_C)
    if subprocess.run(["cc", "-O1", "-o", exe, exe + ".c"], capture_output=True).returncode:
        return None
    os.chmod(exe, 0o755)
    return exe


def func_offset(exe, name):
    """File offset of a function of a victim, as loaders compute it from
    the ELF (.symtab)."""
    from elftools.elf.elffile import ELFFile
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        for seg in elf.iter_segments():
            h = seg.header
            if h.p_type == "PT_LOAD" and h.p_vaddr <= sym["st_value"] < h.p_vaddr + h.p_filesz:
                return sym["st_value"] - h.p_vaddr + h.p_offset
    raise LookupError(name)

# Syscalls for the tracepoint tests: after its start (and, with VICTIM_WAIT,
# after a line on stdin) `tpvictim` makes a fixed set of syscalls that a program's
# start-up never makes, from the main thread, 4 threads, a forked child and
# a signal handler, then exits.
TP_VICTIM_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile int got;
static void on_usr1(int s) { got++; getppid(); }
static void *thread_main(void *arg) {
    for (int i = 0; i < 25; i++) getppid();
    syscall(SYS_getcwd, (void *)0, (long)(intptr_t)arg);   /* EFAULT/ERANGE by arg */
    return 0;
}
int main(void) {
    char name[64], buf[16] = "0123456789abcdef";
    struct stat st;
    pthread_t th[4];
    if (getenv("VICTIM_WAIT")) {
        char c;
        while (read(0, &c, 1) < 0) ;
    }
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "/nonexistent/tp-%d", i);
        open(name, O_RDONLY | O_CLOEXEC);
        stat(name, &st);
    }
    int fd = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 6; i++) write(i % 2 ? fd : -1, buf, i);
    close(fd);
    for (int i = 0; i < 10; i++) getppid();
    kill(getpid(), 0);
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    for (long t = 0; t < 4; t++) pthread_create(&th[t], 0, thread_main, (void *)(intptr_t)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], 0);
    pid_t p = fork();
    if (p == 0) {
        getppid();
        _exit(3);
    }
    waitpid(p, 0, 0);
    umask(022);
    return got == 1 ? 0 : 1;
}
"""


def build_tp_victim(d):
    exe = os.path.join(d, "tpvictim")
    with open(exe + ".c", "w") as f:
        f.write(TP_VICTIM_C)
    subprocess.run(["cc", "-O1", "-o", exe, exe + ".c", "-pthread"], check=True)
    os.chmod(exe, 0o755)
    return exe


@contextlib.contextmanager
def c_program(name, src, flags=()):
    """The C program `src` built as `name` in a directory uid 65534 can
    read, removed afterwards."""
    from compat_tests.unpriv import readable_tmpdir
    d = readable_tmpdir(f"bpfshim-{name}-")
    exe = os.path.join(d, name)
    try:
        with open(exe + ".c", "w") as f:
            f.write(src)
        subprocess.run(["cc", "-O1", *flags, "-o", exe, exe + ".c"], check=True)
        yield exe
    finally:
        shutil.rmtree(d, ignore_errors=True)
