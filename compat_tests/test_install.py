"""The package outside the checkout: `pip wheel .` gives a wheel that, in a
fresh virtualenv with nothing of this tree on its path, runs `bpfshim lib`
and a bpftool map command through its own library and server."""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from compat_tests.env import ROOT

BPFTOOL = shutil.which("bpftool")


def _deps_dir(where):
    """The project's dependencies, and nothing of the project: links to
    what this interpreter's site-packages holds but our own package and its
    editable-install hooks."""
    site = sysconfig.get_paths()["purelib"]
    os.makedirs(where)
    for name in os.listdir(site):
        low = name.lower()
        if low.startswith(("syscall_server", "bpfshim", "__editable__", "_bpfshim")) or low.endswith(".pth"):
            continue
        os.symlink(os.path.join(site, name), os.path.join(where, name))
    return where


def test_wheel_outside_checkout():
    if not BPFTOOL:
        pytest.skip("bpftool is not installed")
    work = tempfile.mkdtemp(prefix="bpfshim-wheel-")
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", os.path.join(work, "dist"), str(ROOT)], check=True, cwd=work,
                       capture_output=True, timeout=600)
        wheel = [f for f in os.listdir(os.path.join(work, "dist")) if f.endswith(".whl")][0]
        venv = os.path.join(work, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
        vpy = os.path.join(venv, "bin", "python")
        vsite = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        # install the wheel with this pip into the fresh environment
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", vsite,
                        os.path.join(work, "dist", wheel)], check=True, timeout=300, capture_output=True)
        deps = _deps_dir(os.path.join(work, "deps"))
        env = {"PATH": "/usr/sbin:/usr/bin:/bin", "PYTHONPATH": deps, "HOME": work,
               "BPFSHIM_RUNTIME_DIR": os.path.join(work, "rt")}
        os.mkdir(env["BPFSHIM_RUNTIME_DIR"], 0o700)
        bpfshim = [vpy, "-m", "syscall_server.cli"]
        lib = subprocess.run(bpfshim + ["lib"], capture_output=True, text=True, env=env, cwd=work, timeout=60)
        assert lib.returncode == 0, lib.stderr
        assert lib.stdout.strip().startswith(vsite), lib.stdout
        pin = f"/sys/fs/bpf/wheel_{os.getpid()}"
        mk = subprocess.run(bpfshim + ["run", "--", BPFTOOL, "map", "create", pin, "type", "hash", "key", "4",
                                       "value", "8", "entries", "8", "name", "wheel"],
                            capture_output=True, text=True, env=env, cwd=work, timeout=120)
        assert mk.returncode == 0, mk.stderr
        show = subprocess.run(bpfshim + ["run", "--", BPFTOOL, "map", "show", "pinned", pin],
                              capture_output=True, text=True, env=env, cwd=work, timeout=60)
        assert show.returncode == 0 and "name wheel" in show.stdout, (show.stdout, show.stderr)
        with open(os.path.join(env["BPFSHIM_RUNTIME_DIR"], "server.log")) as f:
            log = f.read()
        pid = int(log.split("bpfshim server pid ")[1].split()[0])
        with open(f"/proc/{pid}/environ", "rb") as f:
            senv = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode()
        # the server runs the installed package with the fresh interpreter
        assert senv[b"PYTHONPATH"].decode().split(":")[0] == vsite, senv[b"PYTHONPATH"]
        assert argv0 == vpy, argv0
    finally:
        subprocess.run(["pkill", "-f", f"runtime-dir {work}/rt"])
        shutil.rmtree(work, ignore_errors=True)
