"""The bpf_conformance ISA suite (313 programs, written elsewhere) on the
interpreter, in-process, and through `bpfshim conformance-plugin`; the
interpreter's superinstructions."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from syscall_server._native import ffi, lib
from syscall_server.isa import encode as _i, encode_lddw as _lddw

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "bpf_conformance" / "assembled.json"


def cases():
    if not CORPUS.exists():
        return []
    return json.loads(CORPUS.read_text())


CASES = cases()


def run_interp(code_hex, mem_hex):
    code = bytes.fromhex(code_hex)
    insns = ffi.new("char[]", code)
    mem = ffi.new("char[]", bytes.fromhex(mem_hex)) if mem_hex else ffi.NULL
    r0 = ffi.new("uint64_t *")
    rc = lib.bpf_conformance_run(insns, len(code) // 8, mem, len(mem_hex) // 2, ffi.NULL, r0)
    assert rc == 0
    return r0[0]


@pytest.mark.skipif(not CASES, reason=f"{CORPUS} is absent")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_interpreter(case):
    assert run_interp(case["code"], case["mem"]) == case["result"] & (2**64 - 1)


@pytest.mark.skipif(not CASES, reason=f"{CORPUS} is absent")
@pytest.mark.parametrize("engine", ["interp", "aot"])
def test_plugin_command(engine):
    """A sample through the plugin protocol: hex program on stdin, memory as
    the argument, r0 in hex on stdout."""
    for case in CASES[::29]:
        p = subprocess.run([sys.executable, "-m", "syscall_server.conformance", "--engine", engine] +
                           ([case["mem"]] if case["mem"] else []),
                           input=case["code"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert int(p.stdout.strip(), 16) == case["result"] & (2**64 - 1), case["name"]


# The interpreter's superinstructions (agent/interp.c fuse()): each pattern,
# with registers aliased or not, entered in the middle, and near misses that
# must run unfused; r1 points at two u64, a and b.
M64 = 2**64 - 1
JMP_K = {0x15: lambda x, k: x == k, 0x55: lambda x, k: x != k, 0x25: lambda x, k: x > k,
          0x35: lambda x, k: x >= k, 0xa5: lambda x, k: x < k, 0xb5: lambda x, k: x <= k,
          0x65: lambda x, k: _s64(x) > _s64(k), 0x75: lambda x, k: _s64(x) >= _s64(k),
          0xc5: lambda x, k: _s64(x) < _s64(k), 0xd5: lambda x, k: _s64(x) <= _s64(k)}
VALUES = (0, 1, 6, 7, 8, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, M64 - 6, M64)
KS = (0, 1, 7, -1, -7, 2**31 - 1, -2**31)


def _s64(x):
    return x - 2**64 if x >> 63 else x


LDA, LDB, EXIT = _i(0x79, 0, 1, 0), _i(0x79, 3, 1, 8), _i(0x95)   # r0 = a, r3 = b


def _superinstruction_cases():
    m32 = 2**32 - 1
    yield LDA + _i(0x67, 0, imm=32) + _i(0x77, 0, imm=32) + EXIT, lambda a, b: a & m32
    for lsh, rsh in ((16, 32), (32, 16)):
        yield LDA + _i(0x67, 0, imm=lsh) + _i(0x77, 0, imm=rsh) + EXIT, \
            lambda a, b, lsh=lsh, rsh=rsh: (a << lsh & M64) >> rsh
    yield LDA + LDB + _i(0x67, 0, imm=32) + _i(0x77, 3, imm=32) + _i(0xaf, 0, 3) + EXIT, \
        lambda a, b: (a << 32 & M64) ^ b >> 32
    # b == 0 jumps to the rsh alone
    yield (LDA + LDB + _i(0x15, 3, off=1) + _i(0x67, 0, imm=32) + _i(0x77, 0, imm=32) + EXIT,
           lambda a, b: a >> 32 if b == 0 else a & m32)
    yield LDB + _i(0xbf, 0, 3) + _i(0x67, 0, imm=32) + _i(0x77, 0, imm=32) + _i(0x0f, 0, 3) + EXIT, \
        lambda a, b: ((b & m32) + b) & M64
    yield LDA + _i(0xbf, 0, 0) + _i(0x67, 0, imm=32) + _i(0x77, 0, imm=32) + EXIT, lambda a, b: a & m32
    # the mov's dst is not the shifted register
    yield LDA + _i(0xbf, 4, 0) + _i(0x67, 0, imm=32) + _i(0x77, 0, imm=32) + _i(0x1f, 0, 4) + EXIT, \
        lambda a, b: ((a & m32) - a) & M64
    k = 0x123456789abcdef0
    yield LDA + _lddw(4, k) + _i(0x0f, 0, 4) + EXIT, lambda a, b: (a + k) & M64
    yield LDA + _lddw(0, k) + _i(0x0f, 0, 0) + EXIT, lambda a, b: 2 * k & M64
    yield LDA + LDB + _lddw(0, k) + _i(0x0f, 0, 3) + EXIT, lambda a, b: (k + b) & M64
    yield LDA + _lddw(4, k) + _i(0xaf, 0, 4) + EXIT, lambda a, b: a ^ k
    # a JMP32 condition: not fused
    yield (LDA + _i(0x07, 0, imm=1) + _i(0x26, 0, off=1, imm=7) + _i(0xb7, 0, imm=3) + EXIT,
           lambda a, b: (a + 1) & M64 if (a + 1) & m32 > 7 else 3)
    for code, cond in JMP_K.items():
        for k in KS:
            ku = k & M64
            # r += k; if r' op k' (the same register, and another)
            yield (LDA + _i(0x07, 0, imm=k) + _i(code, 0, off=2, imm=1) + _i(0xb7, 0, imm=7) + EXIT +
                   _i(0xa7, 0, imm=0x55) + EXIT,
                   lambda a, b, cond=cond, ku=ku: (((a + ku) & M64) ^ 0x55) if cond((a + ku) & M64, 1) else 7)
            yield (LDA + LDB + _i(0x07, 3, imm=1) + _i(code, 0, off=2, imm=k) + _i(0xb7, 0, imm=7) + EXIT +
                   _i(0xaf, 0, 3) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a ^ ((b + 1) & M64) if cond(a, ku) else 7)
            # if r op k goto L; r' = k'; L:   (r' another register, and r itself)
            yield (LDA + LDB + _i(code, 0, off=1, imm=k) + _i(0xb7, 3, imm=-5) + _i(0xaf, 0, 3) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a ^ (b if cond(a, ku) else M64 - 4))
            yield (LDA + _i(code, 0, off=1, imm=k) + _i(0xb7, 0, imm=9) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a if cond(a, ku) else 9)
            # if r op k goto L; r' = k'; ja L   (and a ja elsewhere: not fused)
            yield (LDA + LDB + _i(code, 0, off=3, imm=k) + _i(0xb7, 3, imm=5) + _i(0x05, off=1) +
                   _i(0xb7, 3, imm=99) + _i(0xaf, 0, 3) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a ^ (b if cond(a, ku) else 5))
            yield (LDA + LDB + _i(code, 0, off=3, imm=k) + _i(0xb7, 3, imm=5) + _i(0x05, off=0) +
                   _i(0xb7, 3, imm=99) + _i(0xaf, 0, 3) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a ^ (b if cond(a, ku) else 99))
            # b == 6 jumps to the conditional move's mov alone
            yield (LDA + LDB + _i(0x15, 3, off=1, imm=6) + _i(code, 0, off=1, imm=k) + _i(0xb7, 3, imm=5) +
                   _i(0xaf, 0, 3) + EXIT,
                   lambda a, b, cond=cond, ku=ku: a ^ (5 if b == 6 else b if cond(a, ku) else 5))


def test_superinstructions():
    for code, expect in _superinstruction_cases():
        for a in VALUES:
            for b in (0, 6, a):
                mem = struct.pack("<QQ", a, b)
                assert run_interp(code.hex(), mem.hex()) == expect(a, b), (code.hex(), a, b)
