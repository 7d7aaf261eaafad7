"""Deterministic sample programs the tool tests probe: `victim` calls
work(0..99), fib(10), six(), greet() on four strings, neg(-3..2), worker()
50 times from each of 4 threads, and lib_add() from `libvictim.so` 10 times,
then exits; with VICTIM_STOP set it first stops itself (SIGSTOP). Built with -O1 -fno-inline so every function is a real call."""
import os
import subprocess

VICTIM_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
volatile long sink;
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
    if (getenv("VICTIM_STOP")) {
        raise(SIGSTOP);   /* a tool attaches to this pid, then SIGCONT */
        usleep(300000);   /* bpfshim patches a running process within ms, the kernel at once */
    }
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
