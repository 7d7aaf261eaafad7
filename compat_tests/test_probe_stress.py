"""Stress (issue 11, its last "must be true" line): uprobes on malloc and free
of a program that for 10 s mallocs and frees from 4 threads while its main
thread sends them signals (their handler runs inside malloc and free,
probes included), forks children that malloc and then exec themselves
(which malloc again): no hang, no crash, and exact counts. The program
counts its own calls (threads, signal handlers' interruptions aside, each
child and exec'd image a fixed number) and the probes count what they see:
malloc of a size nothing else asks for, free of a block holding the
program's mark. Both must agree, on the kernel (root) and through bpfshim
with both engines as root and as uid 65534 (the four bpfshim runs at
once, after the kernel's).
"""
import os
import re
import shutil
import signal
import subprocess

import pytest

from compat_tests import hang
from compat_tests.env import SHIM_LIB, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.test_bpftrace import BPFTRACE, LIBC
from compat_tests.unpriv import Runtime, readable_tmpdir

SECONDS = 10
TIMEOUT = 60

STRESS_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#define SIZE 4243                      /* the size the probes count */
#define MARK 0x5354524553534d41ull     /* what a counted free's block holds */
#define CHILD_PAIRS 20
#define THREADS 4
static volatile int stop;
static volatile sig_atomic_t handled;
static uint64_t pairs[THREADS];
static void pair(void)
{
    uint64_t *volatile p = malloc(SIZE);
    if (!p)
        abort();
    *(volatile uint64_t *)p = MARK;   /* not a dead store before free */
    free(p);
}
static void on_usr1(int sig) { handled++; }
static void *thr(void *a)
{
    uint64_t *n = a;
    while (!stop) {
        pair();
        (*n)++;
    }
    return NULL;
}
int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "exec")) {
        for (int i = 0; i < CHILD_PAIRS; i++)
            pair();
        return 0;
    }
    int secs = atoi(argv[1]);
    struct sigaction sa = { .sa_handler = on_usr1 };
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++)
        pthread_create(&t[k], NULL, thr, &pairs[k]);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t children = 0, main_pairs = 0, kills = 0;
    do {
        for (int k = 0; k < THREADS; k++, kills++)
            pthread_kill(t[k], SIGUSR1);
        pid_t p = fork();
        if (p == 0) {
            for (int i = 0; i < CHILD_PAIRS; i++)
                pair();
            execl(argv[0], "stressvic", "exec", (char *)NULL);   /* a path: bpftrace -c gives one */
            _exit(127);
        }
        int st;
        if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st)) {
            fprintf(stderr, "child failed\n");
            return 1;
        }
        children++;
        pair();
        main_pairs++;
        usleep(2000);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - t0.tv_sec < secs);
    stop = 1;
    uint64_t total = main_pairs + children * 2 * CHILD_PAIRS;
    for (int k = 0; k < THREADS; k++) {
        pthread_join(t[k], NULL);
        total += pairs[k];
    }
    printf("stressvic pairs %llu children %llu signals %llu\n", (unsigned long long)total,
           (unsigned long long)children, (unsigned long long)kills);
    return 0;
}
"""

SCRIPT = ('uprobe:{C}:malloc /comm == "stressvic" && arg0 == 4243/ { @m = count(); } '
          'uprobe:{C}:free /comm == "stressvic" && arg0 != 0/ '
          '{ if (*(uint64 *)uptr(arg0) == 0x5354524553534d41) { @f = count(); } }').replace("{C}", LIBC)


@pytest.fixture(scope="module")
def victim():
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-stress-")
    src = os.path.join(d, "stressvic.c")
    with open(src, "w") as f:
        f.write(STRESS_C)
    exe = os.path.join(d, "stressvic")
    subprocess.run(["cc", "-O1", "-pthread", "-o", exe, src], check=True)
    yield exe
    shutil.rmtree(d, ignore_errors=True)


def start(argv, env=None):
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(label, p):
    try:
        out, _ = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        stacks = hang.describe(p.pid)
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"{label}: hung for {TIMEOUT} s\n{out}\n{stacks}")
    assert p.returncode == 0, f"{label}: rc {p.returncode}\n{out}"
    own = re.search(r"stressvic pairs (\d+) children (\d+)", out)
    m, f = re.search(r"@m: (\d+)", out), re.search(r"@f: (\d+)", out)
    assert own and m and f, f"{label}:\n{out}"
    pairs, children = int(own.group(1)), int(own.group(2))
    assert children > 0, f"{label}: no fork made it\n{out}"
    assert (int(m.group(1)), int(f.group(1))) == (pairs, pairs), f"{label}: counted by the program {pairs}\n{out}"
    print(f"{label}: {pairs} malloc/free pairs, {children} children, all counted")
    return pairs


def test_malloc_free_stress(victim):
    cmd = [BPFTRACE, "-e", SCRIPT, "-c", f"{victim} {SECONDS}"]
    why = kernel_bpf_reason()
    if why is None:
        finish("kernel", start(cmd))
    sides = [("root", False)] + ([("uid 65534", True)] if unpriv_reason() is None else [])
    # a server each: a tracer's probes apply to every process of its runtime
    runs = [(f"{label} {engine}", unpriv, extra, Runtime(unpriv=unpriv, prefix="bpfshim-stress-rt-"))
            for label, unpriv in sides for engine, extra in (("aot", []), ("interp", ["BPFSHIM_NO_JIT=1"]))]
    try:
        running = []
        for label, unpriv, extra, rt in runs:
            argv = (unpriv_cmd() if unpriv else []) + ["env", f"LD_PRELOAD={SHIM_LIB}",
                                                       f"BPFSHIM_RUNTIME_DIR={rt.dir}", *extra] + cmd
            running.append((label, start(argv)))
        for label, p in running:
            finish(label, p)
    finally:
        for run in runs:
            run[3].close()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
