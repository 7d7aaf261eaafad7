"""Raw bpf() map commands on the kernel and through bpfshim (as root and as
uid 65534): every case of compat_tests/map_cases.py gives the same trace of
(return value or "fd", errno name, output bytes).

Each backend runs all cases in one child process (/usr/bin/python3, stdlib
only), so the module takes seconds. Known divergences are listed in
compat_tests/DENYLIST as `map_syscalls <case>: reason` and skipped.
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import map_cases  # noqa: E402
from env import denied, kernel_bpf_reason, unpriv_reason  # noqa: E402
from compat_tests import golden, unpriv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "map_cases.py")
PYTHON = "/usr/bin/python3"
CASE_NAMES = list(map_cases.CASES)
SIDES = [unpriv.BPFSHIM, unpriv.BPFSHIM_UNPRIV]


def ensure_bpffs():
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def attr_ends():
    """The last-field ends of every command (map_cases c_attr_tail_every_command)."""
    from syscall_server import bpf_cmd
    return ",".join(str(bpf_cmd.CMD_LAST_FIELD[c][1]) for c in sorted(bpf_cmd.CMD_LAST_FIELD))


def run_side(side, names=()):
    """{case: trace} of one backend (the cases `names`, else all), or
    {"__error__": why} when the child died or printed no JSON."""
    if side == unpriv.KERNEL:
        ensure_bpffs()
    p, _log = unpriv.run_side(side, [PYTHON, RUNNER, *names], [("BPFSHIM_ATTR_ENDS", attr_ends())],
                              prefix="bpfshim-mapsys-", timeout=120, cwd="/")
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


def kernel_results(name):
    """The kernel's {case: trace}: live when kernel eBPF works here (and
    checked against, or in record mode written to, golden/map_syscalls.json),
    else the recorded trace of `name`."""
    why = kernel_bpf_reason()
    if why:
        rec = golden.recorded("map_syscalls", name)
        if rec is None:
            pytest.skip(f"kernel side: {why}, and no recorded result")
        return {name: rec}
    if unpriv.KERNEL not in _cache:
        k = results(unpriv.KERNEL)
        assert "__error__" not in k, k.get("__error__")
        golden.live("map_syscalls", k)
    return results(unpriv.KERNEL)


def fmt(trace):
    return "\n".join("    " + json.dumps(t)[:400] for t in trace)


def test_enough_cases():
    assert len(CASE_NAMES) >= 80


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_map_syscalls(name, side):
    if side == unpriv.BPFSHIM_UNPRIV and unpriv_reason():
        pytest.skip(unpriv_reason())
    why = denied("map_syscalls", name)
    if why:
        pytest.skip(f"DENYLIST: {why}")
    k = kernel_results(name)
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
