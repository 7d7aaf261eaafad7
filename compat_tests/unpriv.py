"""Running commands through bpfshim, as root or as uid 65534, each test
session with its own server: a fresh runtime directory (mode 0700, owned by
the user that runs the commands), stopped by the pid the server logged.
`run_side` runs one command on one backend of a differential test: the
kernel (as root), bpfshim as root, or bpfshim as uid 65534."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from compat_tests.env import SHIM_LIB, UNPRIV_UID, unpriv_cmd


class Runtime:
    """One bpfshim server for one user: `cmd(argv)` wraps argv so it runs
    with the shim preloaded (after the switch of user: setpriv itself is not
    traced); `close()` stops the server and removes the directory."""

    def __init__(self, unpriv=False, prefix="bpfshim-rt-", parent=None, lib=SHIM_LIB):
        self.unpriv = unpriv
        self.lib = lib
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=parent)
        os.chmod(self.dir, 0o700)
        if unpriv and os.getuid() == 0:
            os.chown(self.dir, UNPRIV_UID, UNPRIV_UID)

    def env(self, base=None):
        env = dict(os.environ if base is None else base)
        env.pop("LD_PRELOAD", None)
        env["BPFSHIM_RUNTIME_DIR"] = self.dir
        return env

    def cmd(self, argv, extra_env=()):
        pre = unpriv_cmd() if self.unpriv else []
        return pre + ["env", f"LD_PRELOAD={self.lib}", f"BPFSHIM_RUNTIME_DIR={self.dir}",
                      *[f"{k}={v}" for k, v in extra_env]] + list(argv)

    def server_log(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def server_pids(self):
        return [int(p) for p in re.findall(r"bpfshim server pid (\d+)", self.server_log())]

    def stop_servers(self, sig=signal.SIGTERM):
        """Send sig to the server(s) and wait until they are gone (SIGKILL
        after a second)."""
        for pid in self.server_pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self):
        self.stop_servers()
        shutil.rmtree(self.dir, ignore_errors=True)


KERNEL, BPFSHIM, BPFSHIM_UNPRIV = "kernel", "bpfshim", "bpfshim@65534"   # the backends


def run_side(side, argv, extra_env=(), prefix="bpfshim-rt-", lib=SHIM_LIB, env=None, **kw):
    """argv run once on the backend `side`: on the kernel (the caller's
    credentials, no preload library) or through bpfshim as root or as uid
    65534, with a server of its own for this run, stopped after it; extra_env
    is set in argv's environment. Returns (the subprocess.run result, the
    server's log: "" for the kernel)."""
    env = dict(os.environ if env is None else env)
    env.pop("LD_PRELOAD", None)
    if side == KERNEL:
        env.update(extra_env)
        return subprocess.run(list(argv), capture_output=True, env=env, **kw), ""
    rt = Runtime(unpriv=side == BPFSHIM_UNPRIV, prefix=prefix, lib=lib)
    try:
        p = subprocess.run(rt.cmd(argv, extra_env), capture_output=True, env=env, **kw)
        return p, rt.server_log()
    finally:
        rt.close()


def readable_tmpdir(prefix):
    """A temporary directory uid 65534 can read and execute from."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def run(argv, timeout=60, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    return p.returncode, p.stdout, p.stderr
