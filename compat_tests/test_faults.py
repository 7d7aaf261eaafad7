"""A program that faults at run time (a NULL or wild pointer the kernel's
verifier would have refused, which bpfshim's load-time checks let through:
today, behind a loop longer than its verifier follows, ARCHITECTURE.md)
must never take its host down: the run stops, an error is returned (or the
hit is dropped) and the process goes on — in PROG_TEST_RUN in the loader
and in a traced target."""
import os
import struct
import subprocess
import sys
import tempfile
import textwrap

import pytest

from compat_tests.env import SHIM_LIB, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from syscall_server.isa import encode, encode_lddw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# r1 = addr; r0 = *(u64 *)(r1 + 0); exit
def wild_load(addr):
    return encode_lddw(1, addr) + encode(0x79, 0, 1) + encode(0x95)


LOOPS = 6000


def past_budget(insns):
    """the program after a counted loop of LOOPS rounds (for (r6 = 0; r6 <
    LOOPS; r6++);): bpfshim's verifier gives up on it (more states at the
    loop head, and more instructions, than it follows; the kernel follows
    1M) and leaves it to the structural checks, so the fault reaches the
    runtime; the kernel, which follows it to the end, refuses it, as
    bpfshim refuses the same program without the loop."""
    return (struct.pack("<BBhi", 0xB7, 6, 0, 0) + struct.pack("<BBhi", 0x07, 6, 0, 1) +
            struct.pack("<BBhi", 0xA5, 6, -2, LOOPS) + insns)


OK_PROG = struct.pack("<BBhi", 0xB7, 0, 0, 7) + struct.pack("<BBhi", 0x95, 0, 0, 0)

LOADER = textwrap.dedent(r"""
    import ctypes, struct, sys, os, json
    libc = ctypes.CDLL(None, use_errno=True)
    def bpf(cmd, attr):
        buf = ctypes.create_string_buffer(bytes(attr), len(attr))
        r = libc.syscall(321, cmd, buf, len(attr))
        return r, ctypes.get_errno(), buf.raw
    def load(insns, prog_type):
        ib = ctypes.create_string_buffer(insns)
        lic = ctypes.create_string_buffer(b"GPL")
        a = bytearray(128)
        struct.pack_into("<IIQQ", a, 0, prog_type, len(insns) // 8, ctypes.addressof(ib), ctypes.addressof(lic))
        return bpf(5, a)[:2]
    out = {}
    for name, hexprog, ptype in json.loads(sys.argv[1]):
        fd, err = load(bytes.fromhex(hexprog), ptype)
        out[name + ".load"] = [fd >= 0, err if fd < 0 else 0]
        if fd < 0:
            continue
        if ptype in (1, 31):   # SOCKET_FILTER, SYSCALL: PROG_TEST_RUN
            data = ctypes.create_string_buffer(64)
            t = bytearray(80)
            if ptype == 1:
                struct.pack_into("<IIIIQQ", t, 0, fd, 0, 64, 64, ctypes.addressof(data), ctypes.addressof(data))
            else:
                struct.pack_into("<I", t, 0, fd)
            for i in range(3):   # again and again: the host must stay usable
                r, e, raw = bpf(10, t)
                out[f"{name}.run{i}"] = [r, e if r < 0 else 0, struct.unpack_from("<I", raw, 4)[0] if r == 0 else None]
    print(json.dumps(out))
""")


def run_loader(progs, unpriv=False, rt=None):
    cmd = ["/usr/bin/python3", "-c", LOADER, json_dumps(progs)]
    env = dict(os.environ, BPFSHIM_RUNTIME_DIR=rt)
    cmd = (unpriv_cmd() if unpriv else []) + ["env", f"LD_PRELOAD={SHIM_LIB}"] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return p


def json_dumps(x):
    import json
    return json.dumps(x)


PROGS = [
    ["null_deref_skb", past_budget(wild_load(0)).hex(), 1],
    ["wild_deref_skb", past_budget(wild_load(0xDEAD0000BEEF)).hex(), 1],
    ["null_deref_syscall", past_budget(wild_load(8)).hex(), 31],
    ["null_deref_plain", wild_load(0).hex(), 1],
    ["ok_after", OK_PROG.hex(), 1],
]


@pytest.fixture(scope="module")
def runtime_dirs():
    d = tempfile.mkdtemp(prefix="bpfshim-faults-")
    os.chmod(d, 0o755)
    u = os.path.join(d, "unpriv")
    os.mkdir(u, 0o700)
    if os.getuid() == 0:
        os.chown(u, 65534, 65534)
    yield os.path.join(d, "root"), u
    subprocess.run(["pkill", "-f", "--", f"--runtime-dir {d}"], check=False)


@pytest.mark.parametrize("who", ["root", "uid 65534"])
def test_faulting_program_in_test_run(who, runtime_dirs):
    if who != "root" and unpriv_reason():
        pytest.skip(unpriv_reason())
    import json
    p = run_loader(PROGS, unpriv=who != "root", rt=runtime_dirs[0 if who == "root" else 1])
    assert p.returncode == 0, f"the loader died ({p.returncode}): {p.stderr}"
    out = json.loads(p.stdout)
    # refused at load as the kernel refuses it: R1 invalid mem access 'scalar'
    assert out["null_deref_plain.load"] == [False, 13], out
    for name in ("null_deref_skb", "wild_deref_skb", "null_deref_syscall"):
        assert out[f"{name}.load"] == [True, 0], out
        for i in range(3):
            r, err, _ = out[f"{name}.run{i}"]
            assert (r, err) == (-1, 14), f"{name}: {out}"
    assert out["ok_after.run0"] == [0, 0, 7]


def test_the_kernel_refuses_them():
    """The programs whose faults the runtime contains are ones the kernel
    refuses at load (bpfshim goes beyond the kernel only in loading them)."""
    from compat_tests import progs_gen as G, verifier_corpus as C
    if not G.kernel_ok():
        pytest.skip(f"kernel side: {kernel_bpf_reason()}")
    for name, hexprog, ptype in PROGS:
        fd, err, log, _ns = C.prog_load(ptype, bytes.fromhex(hexprog), prog_flags=16 if ptype == 31 else 0)
        if name == "ok_after":
            assert fd >= 0, log
            os.close(fd)
        else:
            assert (fd, err) == (-1, 13) and "R1 invalid mem access 'scalar'" in log, (name, err, log[-300:])


CALLS = 2000
TARGET_C = r"""
#include <stdio.h>
volatile long sink;
__attribute__((noinline)) int work(int x) { sink += x; return x + 1; }
int main(void) { long s = 0; for (int i = 0; i < CALLS; i++) s += work(i); printf("%ld\n", s); return 0; }
"""


def test_faulting_probe_in_target(tmp_path, runtime_dirs):
    """A uprobe program with a wild load, attached to a target started by
    bpftrace -c: bpftrace's own programs cannot fault, so the probe is
    loaded and attached by hand (perf_event_open of the uprobe PMU)."""
    from elftools.elf.elffile import ELFFile
    src, exe = tmp_path / "t.c", tmp_path / "t"
    src.write_text(TARGET_C)
    subprocess.run(["cc", "-O1", "-fno-inline", f"-DCALLS={CALLS}", "-o", str(exe), str(src)], check=True)
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        sym = next(s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name == "work")
        seg = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and
                   s["p_vaddr"] <= sym["st_value"] < s["p_vaddr"] + s["p_memsz"])
        off = sym["st_value"] - seg["p_vaddr"] + seg["p_offset"]
    attach = textwrap.dedent(f"""
        import ctypes, struct, subprocess, sys, time
        libc = ctypes.CDLL(None, use_errno=True)
        # an array map counts the hits before each one faults
        ma = bytearray(72); struct.pack_into("<IIII", ma, 0, 2, 4, 8, 1)
        mb = ctypes.create_string_buffer(bytes(ma), 72)
        mfd = libc.syscall(321, 0, mb, 72)
        assert mfd >= 0, ctypes.get_errno()
        I = lambda c, regs, off, imm: struct.pack("<BBhi", c, regs, off, imm)
        insns = (bytes.fromhex("{past_budget(b"").hex()}") +        # the loop the verifier does not follow
                 I(0x62, 0x0a, -4, 0) +                          # *(u32 *)(r10 - 4) = 0
                 I(0x18, 0x11, 0, mfd) + I(0, 0, 0, 0) +          # r1 = map
                 I(0xbf, 0xa2, 0, 0) + I(0x07, 2, 0, -4) +        # r2 = r10 - 4
                 I(0x85, 0, 0, 1) +                               # map_lookup_elem
                 I(0x15, 0, 5, 0) +                               # if r0 == 0 goto exit
                 I(0xb7, 1, 0, 1) + I(0xdb, 0x10, 0, 0) +         # lock *(u64 *)r0 += 1
                 bytes.fromhex("{wild_load(0).hex()}")[:-8] +     # r0 = *(u64 *)0
                 I(0x95, 0, 0, 0))
        ib = ctypes.create_string_buffer(insns); lic = ctypes.create_string_buffer(b"GPL")
        a = bytearray(128); struct.pack_into("<IIQQ", a, 0, 2, len(insns) // 8, ctypes.addressof(ib), ctypes.addressof(lic))
        buf = ctypes.create_string_buffer(bytes(a), 128)
        pfd = libc.syscall(321, 5, buf, 128)
        assert pfd >= 0, ctypes.get_errno()
        path = ctypes.create_string_buffer({str(exe).encode()!r})
        attr = bytearray(128)
        struct.pack_into("<IIQQ", attr, 0, int(open("/sys/bus/event_source/devices/uprobe/type").read()), 128, 0, 1)
        struct.pack_into("<QQ", attr, 56, ctypes.addressof(path), {off})
        ab = ctypes.create_string_buffer(bytes(attr), 128)
        efd = libc.syscall(298, ab, -1, 0, -1, 8)
        assert efd >= 0, ctypes.get_errno()
        assert libc.ioctl(efd, 0x40042408, pfd) == 0
        assert libc.ioctl(efd, 0x2400, 0) == 0
        p = subprocess.run([{str(exe)!r}], capture_output=True, text=True, timeout=60)
        key = ctypes.c_uint32(0); val = ctypes.c_uint64(0)
        la = bytearray(32); struct.pack_into("<IIQQ", la, 0, mfd, 0, ctypes.addressof(key), ctypes.addressof(val))
        lb = ctypes.create_string_buffer(bytes(la), 32)
        assert libc.syscall(321, 1, lb, 32) == 0
        print(p.returncode, p.stdout.strip(), val.value)
    """)
    env = dict(os.environ, BPFSHIM_RUNTIME_DIR=runtime_dirs[0], LD_PRELOAD=str(SHIM_LIB))
    p = subprocess.run(["/usr/bin/python3", "-c", attach], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rc, total, hits = p.stdout.split()
    assert rc == "0" and int(total) == sum(i + 1 for i in range(CALLS)), p.stdout + p.stderr
    assert int(hits) == CALLS, "every hit ran (and faulted) in the target"
