"""The uapi header, syscall_server/uapi_facts.py and the command table
(syscall_server/bpf_cmd.py, libbpf_shim/bpf_cmd_table.h) against the running kernel.

User-space part (any user): the generated cdef is up to date and cffi lays out
every struct as gcc does. Kernel part: the header's layouts and enums equal the
kernel's BTF, and scripts/probe_kernel_attr.c re-measures the E2BIG boundary,
the info sizes and CHECK_ATTR last fields, which uapi_facts must agree with."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compat_tests.env import ROOT, kernel_bpf_reason
from syscall_server import bpf_cmd, uapi_facts
from syscall_server._native import ffi, uapi

UAPI = ROOT / "agent" / "include" / "uapi"
sys.path.insert(0, str(ROOT / "scripts"))
import gen_bpf_cmd  # noqa: E402
import gen_uapi  # noqa: E402

BTF = Path("/sys/kernel/btf/vmlinux")
needs_kernel = pytest.mark.skipif(kernel_bpf_reason() is not None, reason=f"kernel eBPF: {kernel_bpf_reason()}")


def test_cdef_is_generated_from_the_header():
    committed = (ROOT / "syscall_server" / "uapi_cdef.h").read_text()
    assert gen_uapi.generate() == committed, "run: python3 scripts/gen_uapi.py"


def test_command_table_header_is_generated():
    committed = (ROOT / "libbpf_shim" / "bpf_cmd_table.h").read_text()
    assert gen_bpf_cmd.generate() == committed, "run: python3 scripts/gen_bpf_cmd.py"


def test_command_table_offsets_equal_cffi(tmp_path):
    """The C compiler's offsetofend of each command's last field (the shim's
    table) equals cffi's (the server's)."""
    src = ('#include <stdio.h>\n#include "bpf_cmd_table.h"\nint main(void){for (int i = 0; i < BPF_CMD_MAX; i++)'
           ' printf("%d %d %d\\n", i, bpf_cmd_table[i].attr_end, bpf_cmd_table[i].where); return 0;}\n')
    r, out = _run_c("gcc", [f"-I{UAPI}", f"-I{ROOT / 'libbpf_shim'}"], src, tmp_path)
    assert out is not None, r.stderr
    where = {"NONE": 0, "SHIM": 1, "SERVER": 2}
    want = [(cmd, end, where[bpf_cmd.BY_CMD[cmd].where]) for cmd, (_f, end) in sorted(bpf_cmd.CMD_LAST_FIELD.items())]
    assert [tuple(map(int, l.split())) for l in out.splitlines()] == want


def test_cffi_layout_equals_gcc_layout():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_uapi.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_facts_are_named_in_the_header():
    assert ffi.sizeof("union bpf_attr") == uapi_facts.BPF_ATTR_SIZE
    assert sorted(bpf_cmd.CMD_LAST_FIELD) == list(range(uapi.__MAX_BPF_CMD))
    field, end = bpf_cmd.CMD_LAST_FIELD[uapi.BPF_PROG_LOAD]
    assert field == "keyring_id" and end == ffi.offsetof("union bpf_attr", "keyring_id") + 4


# ---- the header against the kernel's BTF ------------------------------------------------

@pytest.fixture(scope="module")
def vmlinux_h(tmp_path_factory):
    if not BTF.exists() or not shutil.which("bpftool") or not shutil.which("clang"):
        pytest.skip("needs /sys/kernel/btf/vmlinux, bpftool and clang")
    r = subprocess.run(["bpftool", "btf", "dump", "file", str(BTF), "format", "c"], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"bpftool btf dump: {r.stderr.strip()}")
    path = tmp_path_factory.mktemp("btf") / "vmlinux.h"
    path.write_text(r.stdout)
    return path


def _run_c(cc, args, src, tmp):
    exe = tmp / f"prog_{cc}"
    r = subprocess.run([cc, "-w", "-std=gnu11", *args, "-x", "c", "-o", str(exe), "-"], input=src,
                       capture_output=True, text=True)
    return r, (subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout if r.returncode == 0 else None)


def test_layouts_equal_kernel_btf(vmlinux_h, tmp_path):
    prog, _ = gen_uapi.layout_program((ROOT / "syscall_server" / "uapi_cdef.h").read_text())
    body = prog.split("int main(void){\n", 1)[1]
    lines = body.splitlines()[:-1]
    # types the kernel's BTF lacks (declared by the header, used by no kernel code)
    # are incomplete there: drop them, and say which
    dropped = set()
    while True:
        keep = [l for l in lines if l.split('"', 2)[1].split("|")[0] not in dropped]
        src = ('int printf(const char *, ...);\ntypedef __SIZE_TYPE__ size_t;\n#include "%s"\nint main(void){\n%s\nreturn 0;}\n'
               % (vmlinux_h, "\n".join(keep)))
        r, kern = _run_c("clang", [], src, tmp_path)
        if kern is not None:
            break
        new = set(re.findall(r"incomplete (?:definition of )?type '((?:struct|union) \w+)'", r.stderr))
        assert new and not new & dropped, r.stderr[:2000]
        dropped |= new
    assert dropped <= {"struct bpf_lpm_trie_key"}, dropped
    mine_src = "#include <stdio.h>\n#include <linux/bpf.h>\nint main(void){\n%s\nreturn 0;}\n" % "\n".join(keep)
    _, mine = _run_c("gcc", [f"-I{UAPI}"], mine_src, tmp_path)
    assert "union bpf_attr|SIZE|168|8" in mine
    diff = [(a, b) for a, b in zip(mine.splitlines(), kern.splitlines()) if a != b]
    assert not diff, diff[:20]


def _enums(text):
    out = []
    for m in re.finditer(r"\benum\s*(\w*)\s*\{(.*?)\}", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        out.append([re.match(r"\s*(\w+)", p).group(1) for p in body.split(",") if p.strip()])
    return out


def test_enums_equal_kernel_btf(vmlinux_h):
    hdr = subprocess.run(["gcc", "-E", "-P", f"-I{UAPI}", "-include", "linux/types.h", "-"], input="#include <linux/bpf.h>\n",
                         capture_output=True, text=True, check=True).stdout
    btf = vmlinux_h.read_text()
    kern_value = {n: int(v) for n, v in re.findall(r"^\s*(\w+) = (-?\d+),?$", btf, re.M)}
    kern_enum = {}
    for members in _enums(btf):
        for x in members:
            kern_enum.setdefault(x, members)
    checked = 0
    for members in _enums(hdr):
        k = next((kern_enum[x] for x in members if x in kern_enum), None)
        if k is None:
            continue                    # an enum no kernel code uses (BPF_DEVCG_*)
        assert set(k) == set(members), (sorted(set(members) - set(k)), sorted(set(k) - set(members)))
        for x in members:
            if x in kern_value and hasattr(uapi, x):
                assert getattr(uapi, x) & (2**64 - 1) == kern_value[x] & (2**64 - 1), x
        checked += 1
    assert checked > 50


# ---- re-measured on the kernel -----------------------------------------------------------

@pytest.fixture(scope="module")
def prober(tmp_path_factory):
    exe = tmp_path_factory.mktemp("probe") / "probe_kernel_attr"
    subprocess.run(["gcc", "-O2", f"-I{UAPI}", "-o", str(exe), str(ROOT / "scripts" / "probe_kernel_attr.c")], check=True)
    return exe


def _facts(prober, *args):
    out = subprocess.run([str(prober), *args], capture_output=True, text=True, check=True, timeout=300).stdout
    return [l.split() for l in out.splitlines()]


@needs_kernel
def test_size_info_and_commands_measured(prober):
    facts = {}
    for f in _facts(prober, "summary"):
        facts[" ".join(f[:-1])] = int(f[-1])
    assert facts["attr_size"] == uapi_facts.BPF_ATTR_SIZE
    assert facts["page_e2big"] == 1
    assert facts["max_cmd"] == uapi_facts.MAX_CMD
    for kind, size in uapi_facts.INFO_SIZE.items():
        assert facts[f"info {kind}"] == size, kind


LAST_FIELD_CASES = ["BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_PROG_LOAD", "BPF_OBJ_GET", "BPF_PROG_TEST_RUN",
                    "BPF_BTF_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_LINK_CREATE", "BPF_ITER_CREATE",
                    "BPF_PROG_STREAM_READ_BY_FD"]


@needs_kernel
@pytest.mark.parametrize("name", LAST_FIELD_CASES)
def test_last_field_measured(prober, name):
    cmd = getattr(uapi, name)
    field, end = bpf_cmd.CMD_LAST_FIELD[cmd]
    [(_, c, used, tail_ok)] = _facts(prober, "tail", str(cmd))
    used, tail_ok = int(used), int(tail_ok)
    # every byte from the highest accepted one on is EINVAL on the kernel ...
    assert int(c) == cmd and tail_ok == 1
    parts = field.split(".")
    start = ffi.offsetof("union bpf_attr", *parts)
    if name in bpf_cmd.LAST_FIELD_REJECTS_NONZERO:
        # ... the last field takes no non-zero value: the kernel accepts nothing in it
        assert used <= start
    else:
        # ... and the highest byte the kernel accepts lies in the named last field
        assert start < used <= end, (field, start, end, used)


@needs_kernel
def test_check_attr_agrees_with_kernel():
    """bpf_cmd.check_attr against the kernel on a few attrs with one stray byte."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def kernel(cmd, data):
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        r = libc.syscall(321, cmd, buf, len(data))     # the *_GET_NEXT_ID commands return no fd
        return 0 if r >= 0 else -ctypes.get_errno()

    for name in ("BPF_MAP_GET_NEXT_ID", "BPF_LINK_GET_NEXT_ID", "BPF_PROG_GET_NEXT_ID"):
        cmd = getattr(uapi, name)
        end = bpf_cmd.CMD_LAST_FIELD[cmd][1]
        for off, size in ((end, 168), (167, 168), (168, 200), (end, 4096), (0, 4097)):
            data = bytearray(size)
            data[off] = 1
            want = bpf_cmd.check_attr(cmd, data)
            got = kernel(cmd, data)
            if want == 0:
                assert got not in (-22, -7)
            else:
                assert got == want, (name, off, size, got, want)
