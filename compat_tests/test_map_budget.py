"""Bounded resources: MAP_CREATE of reasonable, huge and over-the-limit sizes
(compat_tests/map_budget_cases.py) inside a memory cgroup limited to 256 MiB
gives the kernel's verdict (fd or errno) through bpfshim, as root and as uid
65534 (the kernel side runs as root: for uid 65534 the kernel says EPERM to
every command while kernel.unprivileged_bpf_disabled is set, and bpfshim's
users get what a privileged user in their cgroup gets); the server lives
through all of it. And one caller cannot stall another: while a client sits
in the middle of a request without answering the server's memory read, or
while a big map is being allocated, another client's calls complete."""
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from compat_tests.env import ROOT, denied, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime

RUNNER = str(ROOT / "compat_tests" / "map_budget_cases.py")
PYTHON = "/usr/bin/python3"
LIMIT = 256 << 20

sys.path.insert(0, str(ROOT))
from syscall_server import budget  # noqa: E402
from syscall_server.conn import Conn  # noqa: E402
from syscall_server._native import proto as P  # noqa: E402


class MemCgroup:
    """A child of this process's memory cgroup with a limit (v1
    memory.limit_in_bytes or v2 memory.max); prefix() makes a command start
    inside it. The directory goes when its processes have."""

    def __init__(self, limit):
        parent = budget.memcg_of(os.getpid())
        if parent is None:
            pytest.skip("no memory cgroup controller here")
        self.dir = tempfile.mkdtemp(prefix="bpfshim-budget-", dir=parent)
        os.chmod(self.dir, 0o755)     # uid 65534's server reads the limit
        v1 = os.path.exists(os.path.join(self.dir, "memory.limit_in_bytes"))
        try:
            with open(os.path.join(self.dir, "memory.limit_in_bytes" if v1 else "memory.max"), "w") as f:
                f.write(str(limit))
        except OSError as e:
            os.rmdir(self.dir)
            pytest.skip(f"cannot limit a memory cgroup here: {e}")

    def prefix(self):
        return ["sh", "-c", f'echo $$ > "{self.dir}/cgroup.procs" && exec "$@"', "sh"]

    def close(self):
        for _ in range(100):
            try:
                os.rmdir(self.dir)
                return
            except OSError:
                time.sleep(0.05)


def run_side(side):
    """{case: trace} of one side, each in a fresh cgroup; the bpfshim sides
    also check that their server is still alive at the end. A side ending in
    "+memlock64k" runs its loader with RLIMIT_MEMLOCK at 64 KiB."""
    side, _, memlock = side.partition("+")
    limit = ["prlimit", "--memlock=65536:65536"] if memlock else []
    cg = MemCgroup(LIMIT)
    rt = None
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    try:
        if side == "kernel":
            cmd = cg.prefix() + limit + [PYTHON, RUNNER]
        else:
            # @tmpfs: the runtime directory (so the segments) in memory, not on disk
            rt = Runtime(unpriv=side == "bpfshim@65534", prefix="bpfshim-budget-rt-",
                         parent="/dev/shm" if side == "bpfshim@tmpfs" else None)
            cmd = cg.prefix() + limit + rt.cmd([PYTHON, RUNNER])
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert p.returncode == 0, f"{side}: exit {p.returncode}\n{p.stderr[-3000:]}"
        res = {c["name"]: c["trace"] for c in json.loads(p.stdout)}
        if rt is not None:
            pids = rt.server_pids()
            assert len(pids) == 1, f"{side}: the server was started {len(pids)} times (it died)\n{p.stderr[-2000:]}"
            os.kill(pids[0], 0)
            res["__stderr__"] = p.stderr
        return res
    finally:
        if rt is not None:
            rt.close()
        cg.close()


_cache = {}


def results(side):
    if side not in _cache:
        _cache[side] = run_side(side)
    return _cache[side]


@pytest.mark.parametrize("side", ["bpfshim", "bpfshim@65534", "bpfshim@tmpfs"])
def test_map_budget(side):
    why = kernel_bpf_reason()
    if why:
        pytest.skip(f"kernel side: {why}")
    if side == "bpfshim@tmpfs" and not any(ln.split()[1:3] == ["/dev/shm", "tmpfs"]
                                           for ln in open("/proc/mounts")):
        pytest.skip("no tmpfs at /dev/shm")
    if side == "bpfshim@65534" and unpriv_reason():
        pytest.skip(unpriv_reason())
    k, s = results("kernel"), results(side)
    # the cases must say something: some maps made, some refused
    verdicts = [t[1] for tr in k.values() for t in tr]
    assert "fd" in verdicts and -1 in verdicts
    diffs = {n: (k[n], s.get(n)) for n in k if k[n] != s.get(n) and not denied("map_budget", n)}
    assert not diffs, "\n".join(f"{n}:\n  kernel  {kt}\n  {side} {st}" for n, (kt, st) in diffs.items())
    # a refusal for the budget says which limit
    assert "do not fit the memory cgroup" in s["__stderr__"]


def test_memlock_rlimit_is_not_the_budget():
    """Since 5.11 the kernel charges maps to the memory cgroup only: with
    RLIMIT_MEMLOCK at 64 KiB its verdicts are the same, and so are bpfshim's."""
    why = kernel_bpf_reason()
    if why:
        pytest.skip(f"kernel side: {why}")
    k, km = results("kernel"), results("kernel+memlock64k")
    assert km == k
    s = results("bpfshim+memlock64k")
    assert {n: t for n, t in s.items() if n in k and not denied("map_budget", n)} == \
        {n: t for n, t in k.items() if not denied("map_budget", n)}


# ---- one caller cannot stall another ----

BPF_MAP_CREATE, BPF_OBJ_GET, BPF_MAP_GET_NEXT_ID = 0, 7, 12
BPF_MAP_TYPE_HASH = 1


@pytest.fixture
def server():
    """A server of this user on a fresh runtime directory; (path, process)."""
    d = tempfile.mkdtemp(prefix="bpfshim-lock-")
    os.chmod(d, 0o700)
    env = dict(os.environ, BPFSHIM_RUNTIME_DIR=d)
    env.pop("LD_PRELOAD", None)
    srv = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "syscall_server.server",
                            "--runtime-dir", d], cwd=str(ROOT), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = os.path.join(d, "server.sock")
    # until it accepts: its socket file exists from bind(), before listen()
    # (a connect then is refused), and a loaded machine starts it slowly
    for _ in range(1500):
        if srv.poll() is not None:
            break
        try:
            client(path).sock.close()
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.02)
    yield path, srv
    srv.terminate()
    srv.wait(10)
    shutil.rmtree(d, ignore_errors=True)


def client(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(60)        # a stalled server fails the test, never hangs it
    s.connect(path)
    return Conn(s)


def bpf(c, cmd, attr):
    """Send a bpf() request as the shim does (attr at a fake address)."""
    c.send(P.SHIM_OP_BPF, cmd, len(attr), struct.pack("<Q", 0x10000) + attr)


def done(c):
    """(ret, errno) of the request's end, closing fds it brought; the
    server's writes of results are taken, reads get EFAULT."""
    while True:
        op, a, b, _payload, fds = c.recv()
        for fd in fds:
            os.close(fd)
        if op == P.SHIM_OP_DONE:
            return a, b
        if op == P.SHIM_OP_WRITE:
            c.send(P.SHIM_OP_MEM)
        else:
            c.send(P.SHIM_OP_MEM_ERR, 14)


def map_create_attr(mtype, ks, vs, n):
    return struct.pack("<IIIIIII", mtype, ks, vs, n, 0, 0, 0).ljust(72, b"\0")


def small_calls(c, n):
    for _ in range(n):
        bpf(c, BPF_MAP_CREATE, map_create_attr(BPF_MAP_TYPE_HASH, 4, 8, 16))
        ret, err = done(c)
        assert ret >= 0 and err == 0
        bpf(c, BPF_MAP_GET_NEXT_ID, struct.pack("<I", 0).ljust(12, b"\0"))
        done(c)


def test_caller_that_never_answers(server):
    path, srv = server
    a, b = client(path), client(path)
    # A: OBJ_GET reads its pathname from A's memory; A does not answer
    bpf(a, BPF_OBJ_GET, struct.pack("<QII", 0x20000, 0, 0))
    op, addr, _n, _p, _f = a.recv()
    assert (op, addr) == (P.SHIM_OP_READSTR, 0x20000)
    # meanwhile B's calls complete
    small_calls(b, 20)
    assert not select.select([a.sock], [], [], 0)[0], "A's request ended without its answer"
    a.send(P.SHIM_OP_MEM_ERR, 14)
    assert done(a) == (-1, 14)        # EFAULT, as the kernel for a bad pathname
    assert srv.poll() is None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_calls_during_a_big_allocation(server):
    path, srv = server
    a, b = client(path), client(path)
    base = rss_kb(srv.pid)
    # a preallocated hash of 8M elements: its segment (320 MiB) is
    # written element by element when it is made
    bpf(a, BPF_MAP_CREATE, map_create_attr(BPF_MAP_TYPE_HASH, 8, 8, 1 << 23))
    # from the moment the server is seen writing the segment, another
    # client's calls complete before the big one ends
    while rss_kb(srv.pid) < base + 8 * 1024:
        assert not select.select([a.sock], [], [], 0.001)[0], "the big map ended before it was seen being made"
    served = 0
    while not select.select([a.sock], [], [], 0)[0]:
        small_calls(b, 1)
        # counted if it ended with the big one still going
        served += not select.select([a.sock], [], [], 0)[0]
    ret, err = done(a)
    assert ret >= 0 and err == 0, f"the big map: errno {err}"
    assert served >= 1, "no call of another client completed during the allocation"
    assert srv.poll() is None
