"""Programs that change their credentials under the preload library never
abort: glibc applies set*id()/setgroups() to every thread and aborts when
one thread's result differs, so no thread of the library may live through a
change (agent/rt_thread.c). Each command is run first without the library
(what it does on its own: exit 0, its output), then 1,000 times with it:
the same exit status and output every time."""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from .env import ROOT, SHIM_LIB, kernel_bpf_reason, unpriv_cmd
from .unpriv import Runtime

RUNS = 1000

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="not root: cannot change credentials")


@pytest.fixture(scope="module")
def setxid_threads(tmp_path_factory):
    exe = tmp_path_factory.mktemp("creds") / "setxid_threads"
    subprocess.run(["cc", "-O1", "-fno-inline", "-Wall", "-pthread", "-o", str(exe),
                    str(ROOT / "compat_tests" / "progs" / "setxid_threads.c")], check=True)
    return str(exe)


def run(argv, preload):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = str(SHIM_LIB)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout


def same_every_time(argv, runs=RUNS):
    want = run(argv, preload=False)
    assert want[0] == 0, f"{argv} fails without the library: {want}"
    # two cores: a few runs at a time keep 1,000 within seconds
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: run(argv, preload=True), range(runs)))
    aborts = sum(1 for rc, _ in got if rc == -6)
    others = [g for g in got if g != want]
    assert aborts == 0 and not others, \
        f"{aborts} aborts in {runs} runs; other results: {sorted(set(others))[:5]} (want {want})"


def test_setpriv_drops_to_nobody():
    same_every_time(unpriv_cmd() + ["--", "sh", "-c", "id -u; id -g; id -G"], runs=100)


def test_setpriv_true():
    same_every_time(unpriv_cmd() + ["--", "/bin/true"])


def test_set_ids_from_a_thread(setxid_threads):
    """setresuid/setresgid/setgroups/seteuid/setegid from a non-main thread
    while other threads (the library's trace-pipe pumps and follower
    included) start and stop, and setresgid refused (EPERM) on every thread
    alike; at the end every thread, the library's too, is uid/gid 65534."""
    same_every_time([setxid_threads])


def test_probes_through_credential_changes(setxid_threads):
    """bpftrace's uprobes in the program keep firing while it changes its
    credentials (the library's follower is stopped and started around each
    change): the counts are the kernel's."""
    why = kernel_bpf_reason()
    if why:
        pytest.skip(f"kernel side: {why}")
    script = (f"uprobe:{setxid_threads}:setgid_cap {{ @caps = count(); }} "
              f"uprobe:{setxid_threads}:all_threads_dropped {{ @end = count(); }}")
    argv = ["bpftrace", "-e", script, "-c", setxid_threads]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    k = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    rt = Runtime(prefix="bpfshim-creds-")
    try:
        s = subprocess.run(rt.cmd(argv), env=rt.env(), capture_output=True, text=True, timeout=120)
    finally:
        rt.close()
    assert k.returncode == 0 and "@caps: 60" in k.stdout, k.stdout + k.stderr
    assert (s.returncode, s.stdout) == (k.returncode, k.stdout), s.stderr
