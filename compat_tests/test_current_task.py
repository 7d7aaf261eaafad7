"""bpf_get_current_task(): the task_struct a program reads for the current
thread (bpftrace's `curtask`, offsets from the kernel's BTF). bpfshim builds
one in the traced process with the kernel's layout (agent/task_layout.h,
agent/helpers/current_task.c); the same scripts run on the kernel (root) and
through bpfshim (root and uid 65534), against a victim that calls probed
functions with what it knows of itself (its pid, tid, parent, ids,
namespaces, start time), from its main thread, a renamed thread, after a
rename, in a forked child and with another effective uid. The scripts print
comparisons and names, so the outputs of the three runs must be the same.
The same from a libbpf program (progs/current_task.bpf.c, built against this
kernel's vmlinux.h): bpf_get_current_task_btf() with direct loads, and CO-RE
reads (BPF_CORE_READ, BPF_CORE_READ_STR_INTO) of bpf_get_current_task().
"""
import os
import re
import shutil
import subprocess

import pytest

from compat_tests.env import clang_bpf, kernel_bpf_reason, unpriv_reason
from compat_tests.test_bpftrace import BPFTRACE, compare_sides, runtime_dirs  # noqa: F401 (fixture)
from compat_tests.unpriv import Runtime, readable_tmpdir, run

PROGS = os.path.join(os.path.dirname(__file__), "progs")

VICTIM_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
volatile long sink;
static char **argv0;
extern char **environ;
static char *env0;
__attribute__((noinline)) void ids(long ppid, long tgid, long tid, long uid, long gid, long start_ticks) { sink += ppid; }
__attribute__((noinline)) void nss(long pidns, long mntns, long netns, long utsns, long arg0, long env0) { sink += pidns; }
__attribute__((noinline)) void creds(long uid, long euid, long gid, long egid, long fsuid, long suid) { sink += uid; }
static long ns(const char *name) {
    char p[64]; struct stat st;
    snprintf(p, sizeof(p), "/proc/self/ns/%s", name);
    return stat(p, &st) ? -1 : (long)st.st_ino;
}
static long start_ticks(void) {   /* field 22 of the thread's stat */
    char p[64], buf[1024]; unsigned long long v = 0;
    snprintf(p, sizeof(p), "/proc/self/task/%ld/stat", (long)syscall(SYS_gettid));
    FILE *f = fopen(p, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')') + 2;
    for (int k = 3; k < 22; k++) s = strchr(s, ' ') + 1;
    sscanf(s, "%llu", &v);
    return (long)v;
}
static void report(void) {
    ids(getppid(), getpid(), syscall(SYS_gettid), getuid(), getgid(), start_ticks());
    nss(ns("pid_for_children"), ns("mnt"), ns("net"), ns("uts"), (long)argv0[0], (long)env0);
}
static void *thread_main(void *a) {
    prctl(PR_SET_NAME, "worker");
    report();
    return 0;
}
int main(int argc, char **argv) {
    pthread_t t;
    uid_t r, e, s;
    argv0 = argv;
    env0 = environ[0];
    report();
    pthread_create(&t, 0, thread_main, 0);
    pthread_join(t, 0);
    pthread_setname_np(pthread_self(), "renamed");
    report();
    pid_t c = fork();
    if (c == 0) {
        report();
        _exit(0);
    }
    waitpid(c, 0, 0);
    /* root changes its effective ids; uid 65534 keeps its own */
    getresuid(&r, &e, &s);
    if (setegid(r ? getegid() : 4321) || seteuid(r ? geteuid() : 1234))
        return 1;
    getresuid(&r, &e, &s);
    creds(r, e, getgid(), getegid(), setfsuid(-1), s);
    return 0;
}
"""

# pid/tgid/parent/leader, names, flags (PF_* of a user thread), ids, start time;
# `name=` prints a comparison (1: equal), `name:` a value
IDS = ('uprobe:{V}:ids { printf("ids %s ppid=%d,%d tgid=%d pid=%d leader=%d,%d uid=%d gid=%d start=%d '
       'self_leader:%d asleep_s:%d comm:%s leader_comm:%s parent_comm:%s flags:%x\\n", comm, '
       'curtask->real_parent->tgid == arg0, curtask->parent->tgid == arg0, curtask->tgid == arg1, '
       'curtask->pid == arg2, curtask->group_leader->pid == arg1, curtask->group_leader->tgid == arg1, '
       'curtask->real_cred->uid.val == arg3, curtask->cred->gid.val == arg4, '
       'curtask->start_boottime / 10000000 == arg5, (uint64)curtask->group_leader == (uint64)curtask, '
       '(curtask->start_boottime - curtask->start_time) / 1000000000, curtask->comm, '
       'curtask->group_leader->comm, curtask->real_parent->comm, curtask->flags); }')
# namespaces through nsproxy, the mm's argument and environment bounds
NSS = ('uprobe:{V}:nss { printf("nss %s pidns=%d mntns=%d netns=%d utsns=%d arg_start=%d env_start=%d\\n", comm, '
       'curtask->nsproxy->pid_ns_for_children->ns.inum == arg0, curtask->nsproxy->mnt_ns->ns.inum == arg1, '
       'curtask->nsproxy->net_ns->ns.inum == arg2, curtask->nsproxy->uts_ns->ns.inum == arg3, '
       'curtask->mm->arg_start == arg4, curtask->mm->env_start == arg5); }')
# credentials after seteuid/setegid (read again when read)
CREDS = ('uprobe:{V}:creds { printf("creds uid=%d euid=%d gid=%d egid=%d fsuid=%d suid=%d\\n", '
         'curtask->cred->uid.val == arg0, curtask->cred->euid.val == arg1, curtask->cred->gid.val == arg2, '
         'curtask->real_cred->egid.val == arg3, curtask->cred->fsuid.val == arg4, '
         'curtask->cred->suid.val == arg5); }')
SCRIPTS = {"ids": IDS, "namespaces_mm": NSS, "creds": CREDS}


@pytest.fixture(scope="module")
def victim():
    d = readable_tmpdir("bpfshim-curtask-")
    src, exe = os.path.join(d, "victim.c"), os.path.join(d, "victim")
    with open(src, "w") as f:
        f.write(VICTIM_C)
    subprocess.run(["cc", "-O1", "-fno-inline", "-pthread", "-o", exe, src], check=True)
    os.chmod(exe, 0o755)
    yield exe
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_curtask(name, victim, runtime_dirs):  # noqa: F811 (fixture)
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    script = SCRIPTS[name].replace("{V}", victim)
    out = compare_sides(script, victim, runtime_dirs)
    word = re.search(r'printf\("(\w+) ', script).group(1)
    lines = [l for l in out.splitlines() if l.startswith(word + " ")]
    assert lines and all(re.search(r"=\d", l) and not re.search(r"[=,]0", l) for l in lines), out


def test_libbpf_current_task(victim):
    for tool in ("clang", "bpftool"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    d = readable_tmpdir("bpfshim-curtask-libbpf-")
    sides = []
    try:
        with open(os.path.join(d, "vmlinux.h"), "w") as f:
            subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"], stdout=f,
                           check=True)
        obj, loader = os.path.join(d, "current_task.o"), os.path.join(d, "loader")
        clang_bpf(os.path.join(PROGS, "current_task.bpf.c"), obj, "-mcpu=v3", f"-I{d}")
        subprocess.run(["cc", "-O1", "-Wall", "-o", loader, os.path.join(PROGS, "current_task.c"), "-lbpf"], check=True)
        os.chmod(loader, 0o755)
        argv = [loader, obj, victim]
        res = {}
        if kernel_bpf_reason() is None:
            res["kernel"] = run(argv)
        sides.append(("bpfshim", Runtime(prefix="bpfshim-curtask-rt-")))
        if unpriv_reason() is None:
            sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-curtask-rtu-")))
        for name, rt in sides:
            res[name] = run(rt.cmd(argv))
    finally:
        for _, rt in sides:
            rt.close()
        shutil.rmtree(d, ignore_errors=True)
    ref = "kernel" if "kernel" in res else "bpfshim"
    rc, out, err = res[ref]
    assert rc == 0 and out.startswith("victim exit 0\n") and len(out.splitlines()) == 5, f"{ref}:\n{out}\n{err}"
    assert not re.search(r"=0", out), out
    for name, got in res.items():
        assert got[:2] == res[ref][:2], f"{ref}:\n{out}\n{name}:\n{got[1]}\n{got[2]}"
    if ref != "kernel":
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")
