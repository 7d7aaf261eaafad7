"""A libbpf loader in C (progs/uprobe_loader.c, built here against Debian's
libbpf) with a BPF object built here by clang (progs/uprobe_loader.bpf.c):
bpf_object__open_file/load, a uprobe and a uretprobe through
bpf_program__attach_uprobe_opts (by name, by offset, with pid filters),
counts in a hash map, events through a perf buffer (perf_buffer__new/poll),
global data (.rodata set before load, .bss/.data read back), attach errors.
The loader starts the target (progs/uprobe_target.c) itself and prints a
trace without ids, pids or addresses; the kernel's trace (root) is compared
with bpfshim's as root and as uid 65534.
"""
import difflib
import os
import shutil
import subprocess

import pytest

from compat_tests.env import clang_bpf, hook_modes, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run
from compat_tests.victims import build_usdt_victim, func_offset

PROGS = os.path.join(os.path.dirname(__file__), "progs")


def insn_offset(exe, name, k):
    """File offset of the k-th instruction of a function (objdump's
    decoding), for a probe inside it."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", exe], capture_output=True, text=True,
                         check=True).stdout
    body = out.split(f"<{name}>:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    vaddr = int(body[k].split(":", 1)[0], 16)
    return func_offset(exe, name) + vaddr - int(body[0].split(":", 1)[0], 16)


def build(d):
    """Compile the target, the loader and both BPF objects into d (readable
    by uid 65534); returns their paths."""
    if not os.path.exists("/usr/include/bpf/libbpf.h"):
        pytest.skip("libbpf-dev is not installed")
    for tool in ("clang", "cc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    p = {k: os.path.join(d, k) for k in ("target", "loader", "plain.o", "glob.o")}
    subprocess.run(["cc", "-O1", "-Wall", "-pthread", "-o", p["target"], os.path.join(PROGS, "uprobe_target.c")],
                   check=True)
    subprocess.run(["cc", "-O1", "-Wall", "-o", p["loader"], os.path.join(PROGS, "uprobe_loader.c"), "-lbpf"],
                   check=True)
    src = os.path.join(PROGS, "uprobe_loader.bpf.c")
    clang_bpf(src, p["plain.o"])
    clang_bpf(src, p["glob.o"], "-DGLOBALS")
    for f in p.values():
        os.chmod(f, 0o755)
    return p


def dead_pid():
    """A pid that no process has (one that just exited and was reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# name -> loader arguments; {T} target, {P} plain object, {G} globals object
CASES = {
    "uprobe_uretprobe_events": "-o {P} -f probed_fn -r -e -- {T} seq 200",
    "uprobe_only_counts": "-o {P} -f probed_fn -- {T} seq 1000",
    "by_offset": "-o {P} -a {OFF} -r -e -- {T} seq 50",
    # past the first instruction (the hook engine checks no branch lands
    # in the bytes its jump covers)
    "inside_function": "-o {P} -a {OFF1} -e -- {T} seq 50",
    "entry_without_symbol_size": "-o {P} -a {OFFNS} -- {T} seq 50",
    "pid_filter_child": "-o {P} -f probed_fn -r -e -P -- {T} seq 50",
    "pid_filter_other": "-o {P} -f probed_fn -r -e -p 1 -- {T} seq 50",
    "many_events": "-o {P} -f probed_fn -r -e -- {T} seq 3000",
    "global_data": "-o {G} -G -f probed_fn -r -e -- {T} seq 100",
    "err_no_symbol": "-o {P} -f no_such_function -b {T}",
    "err_no_binary": "-o {P} -f probed_fn -b {T}.missing",
    "err_dead_pid": "-o {P} -f probed_fn -r -p {DEAD} -b {T}",
}


@pytest.fixture(scope="module")
def setup():
    d = readable_tmpdir("bpfshim-uprobe-")
    p = build(d)
    sides = [("bpfshim", Runtime(prefix="bpfshim-uprobe-rt-"))]
    if unpriv_reason() is None:
        sides.append(("bpfshim uid 65534", Runtime(unpriv=True, prefix="bpfshim-uprobe-rtu-")))
    yield p, sides
    for _, rt in sides:
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


def argv_of(case, p):
    subst = {"{T}": p["target"], "{P}": p["plain.o"], "{G}": p["glob.o"],
             "{OFF}": hex(func_offset(p["target"], "probed_fn")), "{DEAD}": str(dead_pid()),
             "{OFF1}": hex(insn_offset(p["target"], "probed_fn", 1)),
             "{OFFNS}": hex(func_offset(p["target"], "nosize_fn"))}
    argv = [p["loader"]]
    for a in CASES[case].split():
        argv.append(subst.get(a, a))
    return argv


@pytest.mark.parametrize("case", sorted(CASES))
def test_libbpf_uprobe(case, setup):
    p, sides = setup
    argv = argv_of(case, p)
    res = {}
    if kernel_bpf_reason() is None:
        res["kernel"] = run(argv)
    for name, rt in sides:
        res[name] = run(rt.cmd(argv))
    ref_name = "kernel" if "kernel" in res else "bpfshim"
    rc_ref, out_ref, err_ref = res[ref_name]
    if case.startswith("err_"):
        assert rc_ref == 1 and out_ref.startswith("attach uprobe: "), f"{ref_name}: rc={rc_ref}\n{out_ref}\n{err_ref}"
    else:
        assert rc_ref == 0 and out_ref.rstrip().endswith("done"), f"{ref_name}: rc={rc_ref}\n{out_ref}\n{err_ref}"
    fails = []
    for name, (rc, out, err) in res.items():
        if (rc, out) != (rc_ref, out_ref):
            diff = "\n".join(difflib.unified_diff(out_ref.splitlines(), out.splitlines(), ref_name, name,
                                                  lineterm="", n=2))
            fails.append(f"{ref_name} rc={rc_ref} vs {name} rc={rc}\n{diff}\nstderr of {name}:\n{err}")
    if fails:
        pytest.fail("\n".join(fails))
    if "kernel" not in res:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")


@pytest.mark.parametrize("mode", ["child", "all processes"])
def test_libbpf_usdt(mode, setup):
    """bpf_program__attach_usdt (libbpf's USDT: argument specs, cookies, the
    semaphore through ref_ctr_offset) on the USDT victim."""
    p, sides = setup
    d = os.path.dirname(p["loader"])
    victim = build_usdt_victim(d)
    if not victim:
        pytest.skip("sys/sdt.h is not installed (systemtap-sdt-dev)")
    loader, obj = os.path.join(d, "usdt_loader"), os.path.join(d, "usdt_loader.bpf.o")
    subprocess.run(["cc", "-O1", "-Wall", "-o", loader, os.path.join(PROGS, "usdt_loader.c"), "-lbpf"], check=True)
    clang_bpf(os.path.join(PROGS, "usdt_loader.bpf.c"), obj)
    os.chmod(loader, 0o755)
    argv = [loader, obj, victim] + (["-a"] if mode != "child" else [])
    res = {name: run(rt.cmd(argv)) for name, rt in sides}
    if kernel_bpf_reason() is None:
        res["kernel"] = run(argv)
    ref = res.get("kernel", res["bpfshim"])
    assert ref[0] == 0 and ref[1].endswith("done\n") and "0: 40" in ref[1], ref
    for name, r in res.items():
        assert r[:2] == ref[:2], f"{name}: {r}\nreference: {ref}"
    if "kernel" not in res:
        pytest.skip(f"kernel side not run: {kernel_bpf_reason()}")


@pytest.mark.parametrize("case", ["by_offset", "inside_function", "entry_without_symbol_size"])
def test_hook_mode(case, setup):
    """The patch a site gets (BPFSHIM_DEBUG_HOOKS): the 5-byte jump, the
    tens-of-ns path, for a function entry with or without a symbol size and
    for a site inside a function that no branch lands in."""
    p, sides = setup
    rt = sides[0][1]
    rc, out, err = run(rt.cmd(argv_of(case, p), extra_env=[("BPFSHIM_DEBUG_HOOKS", "1")]))
    modes = [mode for _, mode in hook_modes(err)]
    assert rc == 0 and modes and set(modes) == {"jmp"}, f"rc={rc}\n{out}\n{err}"
