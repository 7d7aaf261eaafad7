"""Objects outlive the server (syscall_server/durable.py): a loader working
on pinned maps of each type, a program and BTF while the bpfshim server is
SIGKILLed sees what it sees on the kernel, where nothing dies: the same
trace (compat_tests/durable_cases.py) on the kernel and through bpfshim, as
root and as uid 65534; afterwards the objects are gone, as on the kernel
once their last pin and fd are."""
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from compat_tests.env import ROOT, SHIM_LIB, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.unpriv import Runtime

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "durable_cases.py")
PYTHON = "/usr/bin/python3"
SIDES = ["kernel", "bpfshim", "bpfshim@65534"]


def ensure_bpffs():
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def kill_server(rt):
    """SIGKILL the server(s) of rt and wait until they are gone."""
    assert rt.server_pids(), "no server ran"
    rt.stop_servers(signal.SIGKILL)


def live_map_ids(rt):
    """The map ids the (possibly new) server knows, walked with GET_NEXT_ID
    through the shim."""
    code = ("import ctypes,struct;L=ctypes.CDLL(None,use_errno=True);L.syscall.restype=ctypes.c_long\n"
            "a=ctypes.create_string_buffer(64);c=0;o=[]\n"
            "while True:\n"
            " struct.pack_into('<I',a,0,c)\n"
            " if L.syscall(321,12,a,12): break\n"
            " c=struct.unpack_from('<I',a,4)[0];o.append(c)\n"
            "print(o)")
    p = subprocess.run(rt.cmd([PYTHON, "-c", code]), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_side(side):
    if side == "kernel":
        why = kernel_bpf_reason()
        if why:
            pytest.skip(f"kernel side: {why}")
        ensure_bpffs()
        argv, rt = [PYTHON, CASES], None
    else:
        if side.endswith("65534") and unpriv_reason():
            pytest.skip(unpriv_reason())
        rt = Runtime(unpriv=side.endswith("65534"))
        argv = rt.cmd([PYTHON, CASES])
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    try:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd="/")
        line = p.stdout.readline()
        assert line.strip() == "ready", (line, p.stderr.read() if p.poll() is not None else "")
        if rt:
            kill_server(rt)
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        trace = json.loads(out.strip().splitlines()[-1])
        ids = [t for t in trace if t[0] == "__ids__"][0][1]
        trace = [t for t in trace if t[0] != "__ids__"]
        if rt:
            log = open(os.path.join(rt.dir, "server.log")).read()
            assert re.search(r"recovered \d+ objects", log), log
            # every pin and fd is gone: so are the objects
            for _ in range(50):
                left = [i for i in live_map_ids(rt) if i in ids]
                if not left:
                    break
                time.sleep(0.1)
            assert not left, f"maps {left} outlived their last pin and fd"
        return trace, err
    finally:
        if rt:
            rt.close()


side_result = functools.lru_cache(None)(run_side)   # each side runs once for all tests


@pytest.mark.parametrize("side", SIDES[1:])
def test_loader_across_server_crash(side):
    trace, err = side_result(side)
    # bpfshim beyond the kernel's own check: nothing of what it held changed
    notes = {t[0]: t[1] for t in trace if len(t) == 2}
    assert all(v is True for k, v in notes.items() if isinstance(v, bool)), \
        {k: v for k, v in notes.items() if v is False}
    if kernel_bpf_reason():
        pytest.skip(f"kernel side: {kernel_bpf_reason()}")
    ktrace, _ = side_result("kernel")
    for k, b in zip(ktrace, trace):
        assert k == b, f"first difference: kernel {k} bpfshim {b}\nstderr: {err[-2000:]}"
    assert len(ktrace) == len(trace)


def test_pins_survive_without_loader():
    """No process holds the pinned map while the server dies: bpftool
    dumps the same contents afterwards (on the kernel: the same dump)."""
    rt = Runtime()
    dumps = {}
    try:
        sides = [("bpfshim", rt.cmd)]
        if not kernel_bpf_reason():
            ensure_bpffs()
            sides.append(("kernel", lambda argv: list(argv)))
        for side, wrap in sides:
            pin = f"/sys/fs/bpf/durable_{os.getpid()}"
            batch = os.path.join(rt.dir if side == "bpfshim" else "/tmp", f"durable_{os.getpid()}.batch")
            with open(batch, "w") as f:
                for i in range(100):
                    key = " ".join(f"{x:02x}" for x in i.to_bytes(4, "little"))
                    val = " ".join(f"{x:02x}" for x in (i * 7).to_bytes(8, "little"))
                    f.write(f"map update pinned {pin} key hex {key} value hex {val}\n")
            os.chmod(batch, 0o644)
            for s in (["bpftool", "map", "create", pin, "type", "hash", "key", "4", "value", "8",
                       "entries", "128", "name", "durable"], ["bpftool", "batch", "file", batch]):
                p = subprocess.run(wrap(s), capture_output=True, text=True, timeout=60)
                assert p.returncode == 0, (s, p.stderr)
            os.unlink(batch)
            if side == "bpfshim":
                kill_server(rt)
                st = subprocess.run([sys.executable, "-m", "syscall_server.cli", "status", "--json"],
                                    capture_output=True, text=True, timeout=60, cwd=ROOT,
                                    env=dict(rt.env(), PYTHONPATH=str(ROOT)))
                assert st.returncode == 0, st.stderr
                assert [m["recovered"] for m in json.loads(st.stdout)["maps"] if m["pins"] == [pin]] == [True]
            p = subprocess.run(wrap(["bpftool", "-j", "map", "dump", "pinned", pin]), capture_output=True,
                               text=True, timeout=60)
            subprocess.run(wrap(["rm", "-f", pin]), capture_output=True)
            assert p.returncode == 0, p.stderr
            dumps[side] = sorted(json.dumps(e, sort_keys=True) for e in json.loads(p.stdout))
        assert len(dumps["bpfshim"]) == 100
        if "kernel" in dumps:
            assert dumps["bpfshim"] == dumps["kernel"]
    finally:
        rt.close()
