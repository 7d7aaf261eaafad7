"""The function-hooking engine (agent/hook): uprobes/uretprobes by code patching.

The C suite (agent/hook/tests/test_hook.c) hooks functions with many
prologues (asm with exact encodings, gcc -O0, gcc -O2 -fcf-protection),
libc's strlen and malloc, recursion, longjmp, override_return, and runs 8
threads through a function while another attaches and detaches it. Expected
values come from calling the same functions unhooked.

The instruction length decoder is checked against objdump on whole system
libraries (instruction boundaries as binutils sees them).
"""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from compat_tests.env import UNPRIV_UID, unpriv_cmd

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "agent" / "hook" / "tests"
# seconds of the attach/detach stress (the brief's 10 s; shorter for quick runs)
STRESS_S = os.environ.get("BPFSHIM_HOOK_STRESS_S", "10")


@pytest.fixture(scope="module")
def build():
    if not shutil.which("cc") or not shutil.which("make"):
        pytest.skip("no C toolchain")
    out = tempfile.mkdtemp(prefix="bpfshim-hook-")
    os.chmod(out, 0o755)     # the unprivileged run reads it
    subprocess.run(["make", "-s", "-C", str(TESTS), f"OUT={out}"], check=True)
    yield Path(out)
    shutil.rmtree(out, ignore_errors=True)


def run_suite(argv, timeout):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0 and "all passed" in p.stdout, \
        f"rc {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout


def test_suite(build):
    out = run_suite([str(build / "test_hook"), STRESS_S], timeout=60 + 3 * float(STRESS_S))
    # the fallback is taken exactly where the brief wants it
    assert re.search(r"prologue ret_1byte\s+int3", out)
    assert re.search(r"prologue push_rbp\s+jmp", out)
    assert re.search(r"prologue endbr64\s+jmp", out)


@pytest.mark.skipif(os.getuid() != 0, reason="already unprivileged: test_suite covers it")
def test_suite_unprivileged(build):
    run_suite(unpriv_cmd() + [str(build / "test_hook"), "1"], timeout=120)


def objdump_insns(path):
    """Instruction byte strings of .text, as the CPU splits them: objdump
    prints a REX or prefix that another prefix follows as its own line, and
    folds fwait into the x87 instruction after it."""
    out = subprocess.run(["objdump", "-d", "--insn-width=16", "-j", ".text", path],
                         capture_output=True, text=True, check=True).stdout
    prefix_only = re.compile(r"^((rex(\.\w+)?|addr32|data16|lock|repz|repnz|rep|[cdefgs]s|notrack|bnd)\s*)+$")
    pend = ""
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            continue
        hexb, mnem = parts[1].replace(" ", ""), parts[2].strip()
        if "(bad)" in mnem or not hexb:
            pend = ""
            continue
        if prefix_only.match(mnem):
            pend += hexb
            continue
        hexb, pend = pend + hexb, ""
        if hexb.startswith("9b") and len(hexb) > 2 and not mnem.startswith("fwait"):
            yield "9b"
            hexb = hexb[2:]
        yield hexb


LIBS = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/lib/x86_64-linux-gnu/libm.so.6"]


@pytest.mark.parametrize("lib", LIBS, ids=lambda p: os.path.basename(p))
def test_decoder_vs_objdump(build, lib):
    if not os.path.exists(lib) or not shutil.which("objdump"):
        pytest.skip(f"no {lib} or objdump")
    insns = "\n".join(objdump_insns(lib)) + "\n"
    p = subprocess.run([str(build / "test_hook"), "--decode-stdin"], input=insns,
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"decoded (\d+) instructions, (\d+) mismatches", p.stdout)
    assert m and int(m.group(1)) > 10000, p.stdout + p.stderr
    assert p.returncode == 0 and m.group(2) == "0", p.stderr[-3000:]


def test_bench_runs(build):
    """The benchmark runs and reports every variant (timings are printed by
    scripts/bench, not asserted)."""
    p = subprocess.run([str(build / "hook_bench"), "200000"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    keys = {tuple(l.split()[:2]) for l in p.stdout.splitlines() if l.strip()}
    for k in [("push_rbp", "entry"), ("endbr64", "entry"), ("push_rbp", "entry+return"), ("int3", "entry")]:
        assert k in keys, p.stdout
