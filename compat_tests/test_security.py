"""Who can reach a user's bpfshim (README "Security").

The kernel has no server to impersonate, so these cases go beyond it and
assert the behaviour directly: another local user who prepares the
victim's runtime directory (any of the three ways it is chosen) and listens
in it gets no request and no byte of the victim's memory; the victim refuses
at once with a line naming the directory. A server that does answer (here a
fake one of the user's own uid) can touch only the memory the request's attr
names, and never receives one of the caller's fds."""
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from compat_tests.env import ROOT, SHIM_LIB, UNPRIV_UID, unpriv_cmd, unpriv_reason
from compat_tests.unpriv import Runtime

OTHER_USER = "bpfshim-other"
FAKE = ROOT / "compat_tests" / "fake_server.py"
EACCES, EFAULT, EPERM = 13, 14, 1

# The victim: a loader making two requests the server serves (MAP_CREATE,
# OBJ_GET with a path), with a secret in its memory whose address it
# publishes for the fake server to aim at.
VICTIM = r'''
import ctypes, json, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
secret = ctypes.create_string_buffer(b"SECRET-0123456789", 32)
with open(sys.argv[1], "w") as f:
    f.write(hex(ctypes.addressof(secret)))
os.chmod(sys.argv[1], 0o644)
out = []
attr = ctypes.create_string_buffer(struct.pack("<IIII", 2, 4, 8, 4), 128)
path = ctypes.create_string_buffer(b"/sys/fs/bpf/nothing")
pin = ctypes.create_string_buffer(struct.pack("<Q", ctypes.addressof(path)), 128)
for cmd, a in ((0, attr), (7, pin)):
    t = time.monotonic()
    r = libc.syscall(321, cmd, a, 128)
    out.append({"cmd": cmd, "ret": r, "errno": ctypes.get_errno() if r < 0 else 0,
                "s": time.monotonic() - t})
print(json.dumps({"calls": out, "secret": secret.value.decode(errors="replace")}))
'''


def _need_root_users():
    if os.getuid() != 0:
        pytest.skip("needs root: the cases run as two users")
    why = unpriv_reason()
    if why:
        pytest.skip(why)


def _other_uid():
    try:
        return pwd.getpwnam(OTHER_USER).pw_uid
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/false", OTHER_USER], check=True)
        return pwd.getpwnam(OTHER_USER).pw_uid


def _as(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def _run_victim(work, env, pre):
    script = os.path.join(work, "victim.py")
    addr = os.path.join(work, "secret_addr")
    with open(script, "w") as f:
        f.write(VICTIM)
    os.chmod(script, 0o644)
    p = subprocess.run(pre + ["env", "-i", *[f"{k}={v}" for k, v in env.items()],
                              f"LD_PRELOAD={SHIM_LIB}", sys.executable, script, addr],
                       capture_output=True, text=True, timeout=60, cwd=work)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def _fake_log(log):
    if not os.path.exists(log):
        return []
    return [json.loads(line) for line in open(log) if line.startswith("{")]


def _start_fake(pre, sock, log, addr_file=None):
    argv = pre + [sys.executable, str(FAKE), sock, log] + ([addr_file] if addr_file else [])
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(log) and "ready" in open(log).read():
            return p
        if p.poll() is not None:
            raise AssertionError(p.stderr.read().decode())
        time.sleep(0.02)
    raise AssertionError("fake server did not start")


VARIANTS = ["tmpdir-0755", "tmpdir-0700", "xdg-0755", "env-0755", "env-0700", "symlink"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_foreign_runtime_dir(variant):
    """Another user created the victim's runtime directory first and listens
    in it: the victim (uid 65534) refuses within a second, with a line
    naming the directory; the fake server sees no connection at all."""
    _need_root_users()
    other = _other_uid()
    work = tempfile.mkdtemp(prefix="bpfshim-sec-")
    os.chmod(work, 0o1777)       # a shared /tmp: sticky, world-writable
    victim_env = {"PATH": "/usr/bin:/bin", "TMPDIR": work}
    how, _, mode = variant.partition("-")
    if how == "xdg":
        victim_env["XDG_RUNTIME_DIR"] = work
        rdir = os.path.join(work, "bpfshim")
    elif how == "env":
        rdir = os.path.join(work, "shared-rt")
        victim_env["BPFSHIM_RUNTIME_DIR"] = rdir
    else:
        rdir = os.path.join(work, f"bpfshim-{UNPRIV_UID}")
    log = os.path.join(work, "fake.log")
    fake = None
    try:
        if how == "symlink":
            # a symlink the other user owns, to a directory where it listens
            real_dir = os.path.join(work, "elsewhere")
            subprocess.run(_as(other) + ["sh", "-c", f"mkdir -m 0777 {real_dir} && ln -s {real_dir} {rdir}"],
                           check=True)
            listen_dir = real_dir
        else:
            subprocess.run(_as(other) + ["mkdir", "-m", "0" + mode, rdir], check=True)
            listen_dir = rdir
        fake = _start_fake(_as(other), os.path.join(listen_dir, "server.sock"), log,
                           os.path.join(work, "secret_addr"))
        res, err = _run_victim(work, victim_env, unpriv_cmd())
        for c in res["calls"]:
            assert c["ret"] == -1 and c["errno"] == EACCES, res
            assert c["s"] < 1.0, res       # fails fast: no wait for a server
        assert f"refusing runtime directory {rdir}" in err, err
        assert res["secret"] == "SECRET-0123456789"
        assert not [e for e in _fake_log(log) if e.get("event") == "connect"], _fake_log(log)
    finally:
        if fake:
            fake.kill()
            fake.wait()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("unpriv", [False, True], ids=["root", "uid65534"])
def test_server_touches_only_named_memory(unpriv):
    """A server of the user's own uid that asks for more than the request
    names gets EFAULT for every byte outside it and no fd of the caller."""
    if unpriv:
        _need_root_users()
    rt = Runtime(unpriv=unpriv)
    work = tempfile.mkdtemp(prefix="bpfshim-sec-")
    os.chmod(work, 0o1777)
    log = os.path.join(work, "fake.log")
    pre = unpriv_cmd() if unpriv else []
    fake = _start_fake(pre, os.path.join(rt.dir, "server.sock"), log, os.path.join(work, "secret_addr"))
    try:
        res, err = _run_victim(work, {"PATH": "/usr/bin:/bin", "BPFSHIM_RUNTIME_DIR": rt.dir}, pre)
        assert [c["errno"] for c in res["calls"]] == [EPERM, EPERM], (res, err)
        tries = _fake_log(log)
        by = {}
        for t in tries:
            by.setdefault(t.get("name"), []).append(t)
        assert all(t["ok"] for t in by["attr"]), by["attr"]
        for name in ("past_attr", "below_attr", "str_at_past", "write_past",
                     "secret", "secret_str", "secret_write"):
            assert by[name] and all(not t["ok"] and t["errno"] == EFAULT for t in by[name]), (name, by[name])
        for name in ("fd0", "fd2"):
            assert all(t["fds"] == 0 for t in by[name]), by[name]
        assert res["secret"] == "SECRET-0123456789"
    finally:
        fake.kill()
        fake.wait()
        rt.close()
        shutil.rmtree(work, ignore_errors=True)


def test_server_refuses_unsafe_dir_and_other_users():
    """The server starts only in a directory of its own uid with mode 0700,
    and serves only its own uid (SO_PEERCRED)."""
    d = tempfile.mkdtemp(prefix="bpfshim-sec-")
    try:
        os.chmod(d, 0o755)
        p = subprocess.run([sys.executable, "-m", "syscall_server.server", "--runtime-dir", d],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert p.returncode != 0 and f"refusing runtime directory {d}" in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if os.getuid() != 0 or unpriv_reason():
        return
    rt = Runtime()
    try:
        # start root's server, then knock as uid 65534
        ok = subprocess.run(rt.cmd(["bpftool", "map", "list"]), capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        os.chmod(rt.dir, 0o711)    # let the other uid reach the socket for this probe only
        os.chmod(os.path.join(rt.dir, "server.sock"), 0o666)
        knock = ("import socket,struct;s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET);"
                 f"s.connect('{rt.dir}/server.sock');"
                 "s.send(struct.pack('<IIqq',6,0,6,0))\n"
                 "try: print(len(s.recv(70000)))\n"
                 "except ConnectionResetError: print(0)")
        p = subprocess.run(unpriv_cmd() + [sys.executable, "-c", knock], capture_output=True, text=True, timeout=30)
        assert p.stdout.strip() == "0", (p.stdout, p.stderr)    # closed without an answer
    finally:
        os.chmod(rt.dir, 0o700)
        rt.close()


@pytest.mark.parametrize("unpriv", [False, True], ids=["root", "uid65534"])
def test_server_not_taken_from_working_directory(unpriv):
    """A syscall_server/ package in the directory a tool runs from (another
    user's, in a shared directory such as /tmp) is not the server the shim
    starts: `python -m` would put the working directory first on sys.path.
    The planted package only leaves a mark; the loader's MAP_CREATE is
    answered by bpfshim's server all the same (beyond the kernel: asserted
    directly)."""
    if unpriv:
        _need_root_users()
    rt = Runtime(unpriv=unpriv)
    work = tempfile.mkdtemp(prefix="bpfshim-sec-cwd-")
    mark = os.path.join(work, "planted_server_ran")
    os.makedirs(os.path.join(work, "syscall_server"))
    for name, text in (("__init__.py", ""),
                       ("server.py", f"open({mark!r}, 'w').write('ran')\n")):
        with open(os.path.join(work, "syscall_server", name), "w") as f:
            f.write(text)
    for d, _, files in os.walk(work):
        os.chmod(d, 0o1777)
        for n in files:
            os.chmod(os.path.join(d, n), 0o666)
    pre = unpriv_cmd() if unpriv else []
    try:
        res, err = _run_victim(work, {"PATH": "/usr/bin:/bin", "BPFSHIM_RUNTIME_DIR": rt.dir}, pre)
        assert res["calls"][0]["ret"] >= 0, (res, err, rt.server_log())
        assert not os.path.exists(mark), "the shim started the working directory's syscall_server"
    finally:
        rt.close()
        shutil.rmtree(work, ignore_errors=True)
