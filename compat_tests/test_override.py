"""bpf_override_return from unmodified loaders (issue 16): a libbpf loader
(progs/override_loader.c, progs/override_loader.bpf.c) and a BCC one
(progs/override_bcc.py) make every 2nd call of three functions of the
victim (progs/override_victim.c: an endbr64 entry, a push %rbp entry, a
4-byte function that gets an int3) return OVERRIDE_RC without running, and
every 3rd openat() of the victim fail with ENOENT without being made, every
2nd getppid() return 4242 unmade (raw_syscalls:sys_enter) and the others
4343 (a sys_exit program replacing the result); the
victim says what each call returned and how often each body ran, the
programs what they did. 8 threads for 5 s; a detach while they run.

The kernel refuses these programs (bpf_override_return is a kprobe helper
for functions on the kernel's error-injection list, and only with
CONFIG_BPF_KPROBE_OVERRIDE; never for uprobes or tracepoints): its verdict
is checked where it runs, and bpfshim's behaviour (an extension) is
asserted directly, as root and as uid 65534.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from compat_tests.env import ROOT, clang_bpf, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

PROGS = os.path.join(os.path.dirname(__file__), "progs")
FUNCS = ("ov_endbr", "ov_push", "ov_tiny")
BCC_PYTHON = "/usr/bin/python3"      # python3-bpfcc's interpreter
REFUSED = "program of this type cannot use helper bpf_override_return#58"


@pytest.fixture(scope="module")
def setup():
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    for tool in ("clang", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    d = readable_tmpdir("bpfshim-override-")
    p = {k: os.path.join(d, k) for k in ("victim", "loader", "obj")}
    src = os.path.join(PROGS, "override_victim.c")
    push = os.path.join(d, "push.o")
    subprocess.run(["cc", "-O0", "-fcf-protection=none", "-DOV_PUSH", "-c", "-o", push, src], check=True)
    subprocess.run(["cc", "-O1", "-fcf-protection=full", "-Wall", "-pthread", "-o", p["victim"], src, push],
                   check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", p["loader"], os.path.join(PROGS, "override_loader.c"), "-lbpf"],
                   check=True)
    clang_bpf(os.path.join(PROGS, "override_loader.bpf.c"), p["obj"], "-mcpu=v3")
    for f in p.values():
        os.chmod(f, 0o755)
    sides = [("bpfshim", Runtime(prefix="bpfshim-override-rt-"))]
    if unpriv_reason() is None:
        sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-override-rtu-")))
    yield p, sides
    for _, rt in sides:
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


def parse(out):
    """{(who, name): {field: int}} from lines `[who ]name: k v k v ...`."""
    res = {}
    for line in out.splitlines():
        m = re.match(r"(?:(program|before|after|victim) )?([\w ]+?): (.*)$", line)
        if not m:
            continue
        words = m.group(3).split()
        res[(m.group(1) or "victim", m.group(2))] = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    return res


def loader_argv(p, *args):
    return [p["loader"], p["obj"], p["victim"], *args]


def bcc_argv(p, *args):
    return [BCC_PYTHON, os.path.join(PROGS, "override_bcc.py"), p["victim"], *args]


def run_sides(sides, argv, extra_env=()):
    """(side, parsed output, text for messages) of argv run through each
    bpfshim side, after it succeeded."""
    for name, rt in sides:
        rc, out, err = run(rt.cmd(argv, extra_env), timeout=120)
        assert rc == 0 and "victim: exit 0" in out, f"{name}: rc={rc}\n{out}\n{err}"
        yield name, parse(out), f"{name}:\n{out}\n{err}"


def check_calls(r, n, m, out):
    """n calls of each function, m openat: every 2nd call and every 3rd
    openat overridden, as the victim saw them and as the programs counted."""
    for f in FUNCS:
        v, prog = r[("victim", f)], r[("program", f)]
        assert (v["calls"], v["real"], v["overridden"]) == (n, n - n // 2, n // 2), out
        assert (prog["hits"], prog["overridden"]) == (n, n // 2), out
        if f != "ov_tiny":
            assert v["body"] == n - n // 2, out          # the overridden calls did not run
    assert r[("victim", "openat")] == {"calls": m, "opened": m - m // 3, "ENOENT": m // 3, "other": 0}, out
    assert r[("program", "openat")] == {"hits": m, "overridden": m // 3}, out
    # raw_syscalls:sys_enter skips every 2nd; sys_exit_getppid sees its value and replaces the others
    assert r[("victim", "getppid")] == {"calls": m, "faked": m // 2, "replaced": m - m // 2}, out
    assert r[("program", "getppid")] == {"hits": m, "overridden": m // 2}, out
    # a uretprobe fires on an overridden call too and sees the override's value
    assert r[("program", "uretprobe ov_endbr")] == {"returns": n, "overridden": n // 2}, out
    # the program attached after the overriding one on the same site runs on every call
    assert r[("program", "second ov_endbr")] == {"hits": n}, out


def kernel_verdict(argv):
    """The kernel's verdict on the loader's programs: refused at load."""
    if kernel_bpf_reason() is not None:
        return
    rc, out, err = run(argv)
    assert rc == 1 and out.startswith("load: ") and REFUSED in out + err, f"kernel: rc={rc}\n{out}\n{err}"


@pytest.mark.parametrize("loader", ["libbpf", "bcc"])
def test_calls(loader, setup):
    p, sides = setup
    if loader == "bcc" and subprocess.run([BCC_PYTHON, "-c", "import bcc"], capture_output=True).returncode:
        pytest.skip("python3-bpfcc is not installed")
    argv = (loader_argv if loader == "libbpf" else bcc_argv)(p, "calls", "100", "30")
    kernel_verdict(argv)
    for _, r, out in run_sides(sides, argv):
        check_calls(r, 100, 30, out)


def test_special_sites(setup):
    """Probed past its first instruction, a function cannot be skipped (no
    `ret` there goes back to its caller): the override has no effect, and
    the process is told (the kernel refuses such probes too:
    trace_kprobe_on_func_entry). In a uretprobe, the override replaces the
    value the caller gets (as a kernel kretprobe's regs->ax)."""
    p, sides = setup
    from compat_tests.test_libbpf_uprobe import insn_offset
    env = [("OV_INSIDE", hex(insn_offset(p["victim"], "ov_endbr", 1))), ("OV_FORCE_RC", "1")]
    for _, r, out in run_sides(sides, loader_argv(p, "calls", "10", "0"), env):
        assert r[("victim", "ov_endbr")] == {"calls": 10, "real": 10, "overridden": 0, "body": 10}, out
        assert r[("program", "ov_endbr")] == {"hits": 10, "overridden": 5}, out     # it asked
        assert r[("program", "ov_push")] == {"hits": 10, "overridden": 5}, out
        assert re.search(r"bpfshim: bpf_override_return has no effect at \S+victim\+0x[0-9a-f]+: not a function "
                         r"entry\n", out), out
        # skipped or not at entry, every call of ov_tiny returns what its uretprobe says
        assert r[("victim", "ov_tiny")] == {"calls": 10, "real": 0, "overridden": 10, "body": -1}, out
        assert r[("program", "ov_tiny")] == {"hits": 10, "overridden": 5}, out


def test_threads(setup):
    """8 threads calling the three functions for 5 s: every call counted
    once, exactly every 2nd overridden, the others run."""
    p, sides = setup
    for name, r, out in run_sides(sides, loader_argv(p, "threads", "8", "5")):
        for f in FUNCS:
            v, prog = r[("victim", f)], r[("program", f)]
            n = v["calls"]
            assert n > 1000 and prog == {"hits": n, "overridden": n // 2}, f"{name}: {f}\n{out}"
            assert (v["real"], v["overridden"]) == (n - n // 2, n // 2), f"{name}: {f}\n{out}"
            if f != "ov_tiny":
                assert v["body"] == n - n // 2, f"{name}: {f}\n{out}"
        n = r[("victim", "ov_endbr")]["calls"]
        assert r[("program", "uretprobe ov_endbr")] == {"returns": n, "overridden": n // 2}, out
        assert r[("program", "second ov_endbr")] == {"hits": n}, out


def test_detach_while_running(setup):
    """The uprobes detached while 8 threads call the functions: what was
    overridden is what the programs overrode, and 0.3 s later every call
    runs the function again."""
    p, sides = setup
    for name, r, out in run_sides(sides, loader_argv(p, "detach", "8", "0")):
        for f in FUNCS:
            before, after, prog = r[("before", f)], r[("after", f)], r[("program", f)]
            assert prog["overridden"] == before["overridden"] > 0, f"{name}: {f}\n{out}"
            assert prog["hits"] <= before["calls"] and before["real"] + before["overridden"] == before["calls"], out
            assert after["calls"] > 0 and after["real"] == after["calls"] and after["overridden"] == 0, \
                f"{name}: {f}\n{out}"


# PROG_LOAD of `r1 = ctx; r2 = 1; call bpf_override_return; r0 = 0; exit`
# for program types, then (bpfshim) `bpfshim status` while the programs live.
LOAD_SCRIPT = r"""
import ctypes, json, os, struct, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)
prog = insn(0xb7, 2, imm=1) + insn(0x85, imm=58) + insn(0xb7, 0, imm=0) + insn(0x95)
out = {}
for t in map(int, sys.argv[1:]):
    ib = ctypes.create_string_buffer(prog)
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    a = ctypes.create_string_buffer(144)
    struct.pack_into("<IIQQIIQ", a, 0, t, len(prog) // 8, ctypes.addressof(ib), ctypes.addressof(lic), 1, 65536,
                     ctypes.addressof(log))
    a[48:48 + 7] = b"ov_prog"
    fd = libc.syscall(321, 5, a, 144)
    text = log.value.decode(errors="replace")
    out[t] = {"ok": fd >= 0, "errno": 0 if fd >= 0 else ctypes.get_errno(),
              "verdict": [l for l in text.splitlines() if "bpf_override_return" in l and not l[:1].isdigit()]}
if os.environ.get("LD_PRELOAD"):
    st = subprocess.run([sys.executable, "-m", "syscall_server.cli", "status", "--json"], capture_output=True,
                        text=True)
    out["status"] = [p.get("type") for p in json.loads(st.stdout)["progs"] if p.get("override_return")]
print(json.dumps(out))
"""
PROG_TYPES = {"KPROBE": 2, "TRACEPOINT": 5, "SOCKET_FILTER": 1, "PERF_EVENT": 7, "RAW_TRACEPOINT": 17}


def test_prog_types(setup):
    """Which program types may call it: bpfshim gives it to KPROBE and
    TRACEPOINT programs (the kernel here to none: no
    CONFIG_BPF_KPROBE_OVERRIDE, and never to tracepoints); the others are
    refused as the kernel refuses them. `bpfshim status` names the
    programs that call it."""
    _, sides = setup
    argv = [sys.executable, "-c", LOAD_SCRIPT, *map(str, PROG_TYPES.values())]
    kernel = None
    if kernel_bpf_reason() is None:
        rc, out, err = run(argv, cwd=ROOT)
        assert rc == 0, err
        kernel = json.loads(out)
        for t in PROG_TYPES.values():
            assert kernel[str(t)] == {"ok": False, "errno": 22, "verdict": [REFUSED]}, kernel
    for name, rt in sides:
        rc, out, err = run(rt.cmd(argv), cwd=ROOT)
        assert rc == 0, f"{name}: {err}"
        res = json.loads(out)
        for type_name, t in PROG_TYPES.items():
            if type_name in ("KPROBE", "TRACEPOINT"):
                assert res[str(t)] == {"ok": True, "errno": 0, "verdict": []}, f"{name}: {type_name} {res}"
            elif kernel:
                assert res[str(t)] == kernel[str(t)], f"{name}: {type_name} {res} kernel {kernel}"
            else:
                assert res[str(t)] == {"ok": False, "errno": 22, "verdict": [REFUSED]}, f"{name}: {type_name}"
        assert sorted(res["status"]) == ["BPF_PROG_TYPE_KPROBE", "BPF_PROG_TYPE_TRACEPOINT"], f"{name}: {res}"


@pytest.mark.parametrize("what", ["function", "syscall"])
def test_faultinject(what, setup):
    """scripts/faultinject (the example tool, a BCC program): every 2nd call
    of ov_push returns -7777 unrun, or every 3rd of the victim's openat()
    fails with ENOENT."""
    p, sides = setup
    if subprocess.run([BCC_PYTHON, "-c", "import bcc"], capture_output=True).returncode:
        pytest.skip("python3-bpfcc is not installed")
    how = ["-n", "2", "-f", "ov_push", "-r", "-7777"] if what == "function" else ["-n", "3", "-s", "openat", "-e",
                                                                                   "ENOENT"]
    argv = [BCC_PYTHON, str(ROOT / "scripts" / "faultinject"), *how, "--", p["victim"], "calls", "10", "30"]
    for name, rt in sides:
        rc, out, err = run(rt.cmd(argv), timeout=120)
        assert rc == 0, f"{name}: rc={rc}\n{out}\n{err}"
        r = parse(out)
        if what == "function":
            assert r[("victim", "ov_push")] == {"calls": 10, "real": 5, "overridden": 5, "body": 5}, out
            assert "faultinject: ov_push: 10 calls, 5 failed\n" in err, err
        else:
            assert r[("victim", "openat")] == {"calls": 30, "opened": 20, "ENOENT": 10, "other": 0}, out
            assert re.search(r"faultinject: openat: \d+ calls, \d+ failed\n", err), err
