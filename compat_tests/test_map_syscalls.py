"""Raw bpf() map commands on the kernel and through bpfshim (as root and as
uid 65534): every case of compat_tests/map_cases.py gives the same trace of
(return value or "fd", errno name, output bytes).

Each backend runs all cases in one child process (/usr/bin/python3, stdlib
only), so the module takes seconds. Known divergences are listed in
compat_tests/DENYLIST as `map_syscalls <case>: reason` and skipped.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import map_cases  # noqa: E402
from env import SHIM_LIB, UNPRIV_UID, kernel_bpf_reason, unpriv_cmd, unpriv_reason  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "map_cases.py")
PYTHON = "/usr/bin/python3"
CASE_NAMES = list(map_cases.CASES)
SIDES = ["bpfshim", "bpfshim@65534"]


def denylist():
    out = {}
    try:
        with open(os.path.join(HERE, "DENYLIST")) as f:
            for line in f:
                m = re.match(r"map_syscalls (\S+): (.*)", line.strip())
                if m:
                    out[m.group(1)] = m.group(2)
    except OSError:
        pass
    return out


def ensure_bpffs():
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def stop_server(rt):
    try:
        with open(os.path.join(rt, "server.log")) as f:
            pids = [int(p) for p in re.findall(r"bpfshim server pid (\d+)", f.read())]
    except OSError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def attr_ends():
    """The last-field ends of every command (map_cases c_attr_tail_every_command)."""
    from syscall_server import bpf_cmd
    return ",".join(str(bpf_cmd.CMD_LAST_FIELD[c][1]) for c in sorted(bpf_cmd.CMD_LAST_FIELD))


def run_side(side, names=()):
    """{case: trace} of one backend (the cases `names`, else all), or
    {"__error__": why} when the child died or printed no JSON."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["BPFSHIM_ATTR_ENDS"] = attr_ends()
    rt = None
    if side == "kernel":
        ensure_bpffs()
        cmd = [PYTHON, RUNNER, *names]
    else:
        rt = tempfile.mkdtemp(prefix="bpfshim-mapsys-")
        os.chmod(rt, 0o700)
        pre = []
        if side == "bpfshim@65534":
            os.chown(rt, UNPRIV_UID, UNPRIV_UID)
            pre = unpriv_cmd()
        # LD_PRELOAD after the switch of user: setpriv itself is not traced
        cmd = pre + ["env", f"LD_PRELOAD={SHIM_LIB}", f"BPFSHIM_RUNTIME_DIR={rt}", PYTHON, RUNNER, *names]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120, cwd="/")
    finally:
        if rt:
            stop_server(rt)
            subprocess.run(["rm", "-rf", rt])
    err = p.stderr.decode(errors="replace")[-3000:]
    try:
        res = {c["name"]: c["trace"] for c in json.loads(p.stdout)}
    except ValueError:
        res = None
    if p.returncode != 0 or res is None:
        return {"__error__": f"{side} runner exited with {p.returncode}\nstderr:\n{err}"}
    return res


_cache = {}


def results(side):
    if side not in _cache:
        _cache[side] = run_side(side)
    return _cache[side]


def kernel_results():
    why = kernel_bpf_reason()
    if why:
        pytest.skip(f"kernel side: {why}")
    k = results("kernel")
    assert "__error__" not in k, k.get("__error__")
    return k


def fmt(trace):
    return "\n".join("    " + json.dumps(t)[:400] for t in trace)


def test_enough_cases():
    assert len(CASE_NAMES) >= 80


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_map_syscalls(name, side):
    if side == "bpfshim@65534" and unpriv_reason():
        pytest.skip(unpriv_reason())
    deny = denylist()
    if name in deny:
        pytest.skip(f"DENYLIST: {deny[name]}")
    k = kernel_results()
    s = results(side)
    assert "__error__" not in s, s.get("__error__")
    assert name in k and name in s, f"case missing: kernel {name in k}, {side} {name in s}"
    kt, st = k[name], s[name]
    if kt != st:
        first = next(i for i in range(max(len(kt), len(st))) if i >= len(kt) or i >= len(st) or kt[i] != st[i])
        pytest.fail(f"{name}: first difference at step {first}\n"
                    f"kernel:  {json.dumps(kt[first]) if first < len(kt) else '(end)'}\n"
                    f"{side}: {json.dumps(st[first]) if first < len(st) else '(end)'}\n"
                    f"kernel trace:\n{fmt(kt)}\n{side} trace:\n{fmt(st)}")
