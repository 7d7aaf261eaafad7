"""A probe never hurts its host (DESIGN.md, issue 11 items 1 and 2).

Item 1: programs of every kind run where the interrupted code holds locks:
uprobes and uretprobes on malloc, free and pthread_create, syscall
tracepoints on the mmap malloc makes for a large block (its arena lock held),
on clone and exit_group, sched_process_fork/exec/exit (inside fork(), exec
and exit), a uprobe in a signal handler, each the first run in a new process
or thread. `psvictim` does all of that from two threads at once, forks,
execs itself, and says "psvictim done" at the end. Each case must end within
a timeout (the process group is killed and the case fails otherwise: before
the fix, the first sched_process_fork hung in fork()), the victim must
finish, and where the output is deterministic it must be the kernel's. As
root and as uid 65534.

Item 2: a probe never connects, forks or starts a server. `workers` forks
workers that clear their environment and (as root) change to uid 65534, as
nginx's do, then call a probed function that prints (bpf_perf_event_output):
every event must arrive, as on the kernel. Before the fix each worker asked
the server for the perf ring from inside its first probe and, no longer
able to reach the runtime directory, lost its events. And nginx itself
(master and workers, default configuration: workers clear their environment
and, as root, run as nobody), started with `bpfshim run` before the tracer:
an sslsniff-like bpftrace script (SSL_read's buffer at its return) sees
every curl request, as on the kernel. (BCC's sslsniff itself does not build
against this kernel's headers, on the kernel either: "cannot call
non-static helper function" in min().)
"""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from compat_tests import hang
from compat_tests.env import ROOT, SHIM_LIB, UNPRIV_UID, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.test_bpftrace import BPFTRACE, LIBC, NOISE, runtime_dirs  # noqa: F401 (fixture)
from compat_tests.unpriv import readable_tmpdir

PSVICTIM_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#define SMALL 4242
#define BIG (4 << 20)    /* above the mmap threshold: mmap under the arena lock */
__attribute__((noinline)) void in_handler(int sig) { __asm__ volatile("" ::: "memory"); }
static void on_usr1(int sig) { in_handler(sig); }
static void *volatile keep;   /* so the compiler keeps each malloc/free pair */
static void alloc(size_t n) { void *p = malloc(n); keep = p; free(keep); }
static void churn(int n) { for (int i = 0; i < n; i++) alloc(SMALL); }
static void *thr(void *a) { churn(50); alloc(BIG); return NULL; }
int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "exec")) {   /* the image a child execs */
        churn(5);
        return 0;
    }
    signal(SIGUSR1, on_usr1);
    pid_t p = fork();                /* the first run in this process is inside fork() */
    if (p == 0)
        exit(0);
    waitpid(p, NULL, 0);
    for (int r = 0; r < 3; r++) {
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            pthread_create(&t[k], NULL, thr, NULL);
        churn(20);
        raise(SIGUSR1);
        alloc(BIG);
        p = fork();                  /* while the threads malloc */
        if (p == 0) {
            churn(10);
            raise(SIGUSR1);
            alloc(BIG);
            exit(0);
        }
        waitpid(p, NULL, 0);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
    }
    p = fork();
    if (p == 0) {
        execl(argv[0], "psvictim", "exec", (char *)NULL);   /* a path: bpftrace -c gives one */
        _exit(127);
    }
    waitpid(p, NULL, 0);
    printf("psvictim done\n");
    return 0;
}
"""

WORKERS_C = r"""
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
__attribute__((noinline)) int probed(int w, int i) { __asm__ volatile("" ::: "memory"); return w * 1000 + i; }
int main(int argc, char **argv)
{
    int nw = atoi(argv[1]), n = atoi(argv[2]);
    usleep(300000);
    for (int w = 0; w < nw; w++) {
        if (fork() == 0) {
            clearenv();                      /* nginx: no env directive */
            if (getuid() == 0 && (setgid(65534) || setuid(65534)))
                _exit(2);                    /* nginx: user nobody */
            for (int i = 0; i < n; i++) {
                probed(w, i);
                usleep(20000);
            }
            _exit(0);
        }
    }
    while (wait(NULL) > 0)
        ;
    return 0;
}
"""

P = "{P}"
C = "{C}"
ME = '/comm == "psvictim"/'
# name: (script, whether the output is deterministic: compared with the kernel's)
CASES = {
    "sched_process_fork": ("tracepoint:sched:sched_process_fork " + ME + " { @ = count(); }", True),
    "sched_process_fork_unfiltered": ("tracepoint:sched:sched_process_fork { @ = count(); }", False),
    "sched_process_exec": ("tracepoint:sched:sched_process_exec " + ME + " { @ = count(); }", True),
    "sched_process_exit": ("tracepoint:sched:sched_process_exit " + ME + " { @[args->pid == pid] = count(); }",
                           False),
    "sys_exit_clone": ("tracepoint:syscalls:sys_exit_clone " + ME + " { @[args->ret == 0] = count(); }", True),
    "sys_enter_exit_group": ("tracepoint:syscalls:sys_enter_exit_group " + ME + " { @ = count(); }", True),
    "sys_enter_mmap_in_malloc": ('tracepoint:syscalls:sys_enter_mmap /comm == "psvictim" && args->len >= 4194304/ '
                                 '{ printf("mmap %d\\n", pid == cpid); }', False),   # arenas: the agent's thread mallocs too
    "uprobe_malloc": ('uprobe:{C}:malloc /comm == "psvictim" && arg0 == 4242/ { @ = count(); }', True),
    "uprobe_malloc_printf": ('uprobe:{C}:malloc /comm == "psvictim" && arg0 == 4194304/ '
                             '{ printf("big %d\\n", pid == cpid); }', True),
    "uretprobe_malloc": ("uretprobe:{C}:malloc " + ME + " { @[retval != 0] = count(); @c[cpu >= 0] = count(); }",
                         False),
    "uprobe_free": ("uprobe:{C}:free " + ME + " { @h = hist(arg0 & 0xff); @s[tid] = count(); }", False),
    "uprobe_pthread_create": ("uprobe:{C}:pthread_create " + ME + " { @ = count(); }", True),
    "uprobe_signal_handler": ('uprobe:{P}:in_handler { printf("handler %d %d\\n", arg0, pid == cpid); }', True),
    "uprobe_curtask_first_run": ("uprobe:{C}:malloc " + ME + " { @[curtask->tgid == pid] = count(); }", False),
}

TIMEOUT = 60


@pytest.fixture(scope="module")
def bins():
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-probe-safety-")
    out = {}
    for name, src in (("psvictim", PSVICTIM_C), ("workers", WORKERS_C)):
        with open(os.path.join(d, name + ".c"), "w") as f:
            f.write(src)
        subprocess.run(["cc", "-O1", "-g", "-pthread", "-o", os.path.join(d, name), os.path.join(d, name + ".c")],
                       check=True)
        out[name] = os.path.join(d, name)
    yield out
    shutil.rmtree(d, ignore_errors=True)


def bounded_bpftrace(script, cmd, runtime_dir=None, unpriv=False):
    """(rc, output) of `bpftrace -e script -c cmd`; fails the test, after
    killing the whole process group, if it has not ended in TIMEOUT s."""
    env = dict(os.environ)
    argv = [BPFTRACE, "-e", script, "-c", cmd]
    if runtime_dir:
        env["BPFSHIM_RUNTIME_DIR"] = runtime_dir
        argv = (unpriv_cmd() if unpriv else []) + ["env", f"LD_PRELOAD={SHIM_LIB}"] + argv
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"hung for {TIMEOUT} s ({'uid 65534' if unpriv else 'root'}): {script}\n{out}")
    return p.returncode, out


def lines(out):
    return sorted(l for l in out.splitlines() if not NOISE.search(l) and not l.startswith("Attaching"))


def sides(rtdirs):
    """(label, runtime dir, unpriv) of the bpfshim runs this machine can make."""
    out = [("root", rtdirs[0], False)]
    if unpriv_reason() is None:
        out.append(("uid 65534", rtdirs[1], True))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_probe_in_locked_paths(name, bins, runtime_dirs):  # noqa: F811
    script, deterministic = CASES[name]
    script = script.replace(P, bins["psvictim"]).replace(C, LIBC)
    got = {}
    for label, rtdir, unpriv in sides(runtime_dirs):
        rc, out = bounded_bpftrace(script, bins["psvictim"], rtdir, unpriv)
        assert rc == 0 and "psvictim done" in out, f"{label}:\n{out}"
        got[label] = lines(out)
    if len(got) == 2 and deterministic:
        assert got["root"] == got["uid 65534"], got
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    rc, out = bounded_bpftrace(script, bins["psvictim"])
    assert rc == 0 and "psvictim done" in out, out
    if deterministic:
        assert got["root"] == lines(out), f"kernel:\n{out}\nbpfshim:\n{got['root']}"


def test_workers_with_cleared_environment(bins, runtime_dirs):  # noqa: F811
    script = "uprobe:" + bins["workers"] + ':probed { printf("%d %d\\n", arg0, arg1); }'
    cmd = bins["workers"] + " 3 8"
    want = sorted(f"{w} {i}" for w in range(3) for i in range(8))
    for label, rtdir, unpriv in sides(runtime_dirs):
        rc, out = bounded_bpftrace(script, cmd, rtdir, unpriv)
        assert (rc, [l for l in lines(out) if re.fullmatch(r"\d+ \d+", l)]) == (0, want), f"{label}:\n{out}"
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    rc, out = bounded_bpftrace(script, cmd)
    assert (rc, [l for l in lines(out) if re.fullmatch(r"\d+ \d+", l)]) == (0, want), f"kernel:\n{out}"


# ---- nginx: master and workers, traced by a tracer that comes later ----

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
LIBSSL = "/lib/x86_64-linux-gnu/libssl.so.3"
SSLSNIFF_BT = ("uprobe:{S}:SSL_read /comm == \"nginx\"/ { @buf[tid] = arg1; } "
               "uretprobe:{S}:SSL_read /@buf[tid] != 0/ { if ((int32)retval > 0) "
               "{ printf(\"%s\\n\", str(@buf[tid], 16)); } delete(@buf[tid]); }")
NGINX_CONF = """worker_processes 2;
daemon off;
master_process on;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location / {{ return 200 "ok $uri\\n"; }}
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_prefix(unpriv):
    d = tempfile.mkdtemp(prefix="bpfshim-nginx-")
    os.chmod(d, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days",
                    "2", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], check=True, capture_output=True)
    port = free_port()
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(d=d, port=port))
    for n in ("key.pem", "cert.pem", "nginx.conf"):
        os.chmod(f"{d}/{n}", 0o644)
    if unpriv:
        os.chown(d, UNPRIV_UID, UNPRIV_UID)
    return d, port


def sslsniff_nginx(rtdir=None, unpriv=False, n=8):
    """nginx started first (through `bpfshim run` unless on the kernel), the
    tracer after, then n requests: the request lines the tracer printed."""
    d, port = nginx_prefix(unpriv)
    pre = unpriv_cmd() if unpriv else []
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    run = []
    if rtdir:
        env["BPFSHIM_RUNTIME_DIR"] = rtdir
        run = [str(ROOT / ".venv" / "bin" / "python"), "-m", "syscall_server", "run", "--"]
    ng = subprocess.Popen(pre + ["env", f"PYTHONPATH={ROOT}"] + run + [NGINX, "-p", d, "-c", f"{d}/nginx.conf"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    bt = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("nginx did not start:\n" + open(f"{d}/error.log").read())
        argv = [BPFTRACE, "-e", SSLSNIFF_BT.replace("{S}", LIBSSL)]
        if rtdir:
            argv = pre + ["env", f"LD_PRELOAD={SHIM_LIB}"] + argv
        bt = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
        head = ""
        end = time.time() + TIMEOUT
        while "Attaching" not in head and time.time() < end and bt.poll() is None:
            if select.select([bt.stdout], [], [], 1)[0]:
                head += os.read(bt.stdout.fileno(), 65536).decode(errors="replace")
        assert "Attaching" in head, head
        time.sleep(1)
        for i in range(n):
            r = subprocess.run(["curl", "-sk", "--max-time", "10", f"https://127.0.0.1:{port}/r{i}"],
                               capture_output=True, text=True)
            assert r.stdout == f"ok /r{i}\n", (r.returncode, r.stdout, r.stderr)
        # until the tool has printed every request (or 15 s): bpftrace drops
        # what it has not read yet when SIGINT comes
        end = time.time() + 15
        while len(re.findall(r"^GET /r\d+", head, re.M)) < n and time.time() < end and bt.poll() is None:
            if select.select([bt.stdout], [], [], 1)[0]:
                head += os.read(bt.stdout.fileno(), 65536).decode(errors="replace")   # past the pipe's buffer
        try:
            out = hang.interrupt(bt, TIMEOUT, group=True)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bpftrace did not end {TIMEOUT} s after SIGINT\n{head}\n{hang.describe(bt.pid)}")
        return sorted(re.findall(r"^GET /r\d+", head + out, re.M)), head + out
    finally:
        for p in (bt, ng):
            if p and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_sslsniff_nginx_workers(runtime_dirs):  # noqa: F811
    if not NGINX or not shutil.which("curl") or not os.path.exists(LIBSSL):
        pytest.skip("nginx, curl or libssl.so.3 is not installed")
    want = sorted(f"GET /r{i}" for i in range(8))
    for label, rtdir, unpriv in sides(runtime_dirs):
        got, out = sslsniff_nginx(rtdir, unpriv)
        assert got == want, f"{label}:\n{out}"
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"kernel side not run: {why}")
    got, out = sslsniff_nginx()
    assert got == want, f"kernel:\n{out}"
