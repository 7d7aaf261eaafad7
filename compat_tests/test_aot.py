"""AOT compiler (syscall_server/aot) + blob loader (agent/jit.c).

The ISA conformance corpus (bpf_conformance, ../shared/corpus) runs through
compile_program and bpf_jit_load; the expected r0 comes from the corpus. The
harness is a small C file built here together with agent/jit.c, so the test
does not depend on the rest of the native build.
"""
import errno
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "bpf_conformance" / "assembled.json"

from syscall_server.aot import AotError, compile_program  # noqa: E402

HARNESS_C = r"""
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include "bpf_rt.h"

void *bpf_jit_load(const void *blob, size_t len);
void bpf_jit_free(void *p, size_t len);

__thread struct bpf_run_ctx *bpf_cur_run_ctx;

static __thread jmp_buf unwind_jb;
static bpf_helper_fn helpers[BPF_RT_HELPER_MAX];
static __thread uint64_t last_args[5];
static const struct bpf_prog_rt tail_target;

/* bpf_conformance test helper 5: returns its argument; 0 ends the program with r0 = 0. */
static uint64_t h_unwind(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
	if (!a)
		longjmp(unwind_jb, 1);
	return a;
}

/* Records its arguments, returns their weighted sum (checks argument passing). */
static uint64_t h_args(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
	last_args[0] = a; last_args[1] = b; last_args[2] = c; last_args[3] = d; last_args[4] = e;
	return a + 2 * b + 3 * c + 4 * d + 5 * e;
}

/* bpf_tail_call as the runtime does it: records the target when index r3 is 1. */
static uint64_t h_tail_call(uint64_t ctx, uint64_t map, uint64_t idx, uint64_t d, uint64_t e)
{
	if (idx == 1)
		bpf_cur_run_ctx->tail_call_next = &tail_target;
	return 0;
}

BPFSHIM_API uint64_t harness_run(void *fn, uint64_t r1, void **maps, void **values,
                                 int *unwound, int *tail_called)
{
	struct bpf_run_ctx rc;
	struct bpf_jit_env env = { helpers, (void *const *)maps, (void *const *)values, NULL };
	volatile uint64_t r0 = 0;

	helpers[5] = h_unwind;
	helpers[6] = h_args;
	helpers[BPF_FUNC_tail_call] = h_tail_call;
	memset(&rc, 0, sizeof(rc));
	bpf_cur_run_ctx = &rc;
	*unwound = 0;
	if (setjmp(unwind_jb))
		*unwound = 1;
	else
		r0 = ((bpf_jit_fn)fn)(r1, &env);
	*tail_called = rc.tail_call_next != NULL;
	bpf_cur_run_ctx = NULL;
	return r0;
}

BPFSHIM_API uint64_t harness_last_arg(int i)
{
	return last_args[i];
}

/* The run budget's slow path (agent/prog_run.c): here it only counts. */
__thread int32_t bpf_rt_backedges_left;
static uint64_t backedge_calls;
void bpf_rt_backedge(void)
{
	bpf_rt_backedges_left = BPF_RT_BACKEDGE_CHUNK;
	backedge_calls++;
}

BPFSHIM_API uint64_t harness_backedges(void)
{
	return backedge_calls;
}
"""

CDEF = """
void *bpf_jit_load(const void *blob, size_t len);
void bpf_jit_free(void *p, size_t len);
uint64_t harness_run(void *fn, uint64_t r1, void **maps, void **values, int *unwound, int *tail_called);
uint64_t harness_last_arg(int i);
uint64_t harness_backedges(void);
"""


@pytest.fixture(scope="module", autouse=True)
def _no_disk_cache():
    """Compile for real here: a stale on-disk blob would hide a compiler change."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BPFSHIM_AOT_CACHE", "0")
        yield


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("aot")
    src = d / "harness.c"
    src.write_text(HARNESS_C)
    so = d / "harness.so"
    cmd = ["cc", "-O2", "-g", "-std=gnu11", "-shared", "-fPIC", "-fvisibility=hidden", "-D_GNU_SOURCE",
           "-Wall", "-Wno-unused-parameter", f"-I{ROOT}/agent/include/uapi", f"-I{ROOT}/agent",
           "-o", str(so), str(src), str(ROOT / "agent" / "jit.c")]
    subprocess.run(cmd, check=True)
    ffi = FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(so))


class Loaded:
    def __init__(self, h, blob):
        self.ffi, self.lib = h
        self.len = len(blob)
        self.fn = self.lib.bpf_jit_load(blob, len(blob))
        assert self.fn != self.ffi.NULL, "bpf_jit_load failed"

    def run(self, r1=0, maps=(), values=()):
        ffi = self.ffi
        m = ffi.new("void *[]", [ffi.cast("void *", x) for x in maps] or [ffi.NULL])
        v = ffi.new("void *[]", [ffi.cast("void *", x) for x in values] or [ffi.NULL])
        unw = ffi.new("int *")
        tc = ffi.new("int *")
        r0 = self.lib.harness_run(self.fn, r1, m, v, unw, tc)
        return r0, bool(unw[0]), bool(tc[0])

    def close(self):
        self.lib.bpf_jit_free(self.fn, self.len)


def I(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def lddw(dst, v, src=0):
    return I(0x18, dst, src, 0, v & 0xffffffff if v & 0x80000000 == 0 else (v & 0xffffffff) - 2**32) + \
        I(0, 0, 0, 0, ((v >> 32) & 0xffffffff) - (2**32 if (v >> 32) & 0x80000000 else 0))


EXIT = I(0x95)


def _corpus():
    if not CORPUS.exists():
        return []
    return json.loads(CORPUS.read_text())


_CASES = _corpus()


@pytest.mark.skipif(not CORPUS.exists(), reason=f"corpus absent: {CORPUS}")
@pytest.mark.parametrize("case", _CASES, ids=[c["name"] for c in _CASES])
def test_conformance(harness, case):
    ffi = harness[0]
    code = bytes.fromhex(case["code"])
    mem = bytes.fromhex(case["mem"])
    # r2 = length of mem at entry: a `mov r2, len` prologue (jumps are relative, so
    # shifting the program by one slot changes nothing else).
    code = I(0xb7, 2, 0, 0, len(mem)) + code
    prog = Loaded(harness, compile_program(code))
    buf = ffi.new("uint8_t[]", mem) if mem else None
    r1 = int(ffi.cast("uintptr_t", buf)) if mem else 0
    try:
        r0, unwound, _ = prog.run(r1)
    finally:
        prog.close()
    assert r0 == case["result"] & 0xffffffffffffffff, f"{case['name']}: r0={r0:#x} unwound={unwound}"


# -- behaviours the corpus does not cover ------------------------------------

def test_bad_programs_raise_einval():
    bad = {
        "empty": b"",
        "odd length": EXIT[:5],
        "jump out of range": I(0x05, off=5) + EXIT,
        "into lddw": I(0x05, off=1) + lddw(0, 1) + EXIT,
        "falls off the end": I(0xb7, 0, imm=1),
        "legacy ld_abs": I(0x20, imm=0) + EXIT,
        "unknown opcode": I(0xff) + EXIT,
        "write r10": I(0xb7, 10, imm=1) + EXIT,
        "unrelocated map fd": lddw(1, 3, src=1) + EXIT,
        "kfunc": I(0x85, src=2, imm=1) + EXIT,
        "bad call target": I(0x85, src=1, imm=10) + EXIT,
    }
    for name, code in bad.items():
        with pytest.raises(AotError) as ei:
            compile_program(code)
        assert isinstance(ei.value, OSError) and ei.value.errno == errno.EINVAL, name


def test_unknown_helper_with_helper_ids():
    code = I(0x85, imm=6) + EXIT
    compile_program(code)
    with pytest.raises(OSError) as ei:
        compile_program(code, helper_ids={1, 2})
    assert ei.value.errno == errno.EINVAL and "helper 6" in str(ei.value)


def test_helper_arguments(harness):
    ffi, lib = harness
    code = b"".join(I(0xb7, r, imm=r * 10) for r in range(1, 6)) + I(0x85, imm=6) + EXIT
    p = Loaded(harness, compile_program(code))
    r0, _, _ = p.run()
    p.close()
    assert [lib.harness_last_arg(i) for i in range(5)] == [10, 20, 30, 40, 50]
    assert r0 == 10 + 40 + 90 + 160 + 250


def test_back_edges_count_the_run_budget(harness):
    """bpfshim's own bound (the kernel's verifier bounds loops at load): a
    loop's taken back edges reach bpf_rt_backedge once per
    BPF_RT_BACKEDGE_CHUNK (65536), whether the loop's jump is conditional or a
    ja; forward jumps never."""
    lib = harness[1]
    n = 65536 * 3
    # r0 = 0; r1 = n; loop: r0 += 1; if r0 < r1 goto loop; exit
    cond = I(0xb7, 0, imm=0) + I(0xb7, 1, imm=n) + I(0x07, 0, imm=1) + I(0xad, 0, 1, off=-2) + EXIT
    # r0 = 0; loop: r0 += 1; if r0 >= n goto out; ja loop; out: exit
    ja = I(0xb7, 0, imm=0) + I(0x07, 0, imm=1) + I(0x35, 0, off=1, imm=n) + I(0x05, off=-3) + EXIT
    # forward only: r0 = 2; if r1 > 0 goto +1; r0 = 1; exit (r1 = 0)
    fwd = I(0xb7, 0, imm=2) + I(0x25, 1, off=1, imm=0) + I(0xb7, 0, imm=1) + EXIT
    for code, want_r0, calls in ((cond, n, 3), (ja, n, 3), (fwd, 1, 0)):
        p = Loaded(harness, compile_program(code))
        before = lib.harness_backedges()
        r0, _, _ = p.run(0)
        p.close()
        got = lib.harness_backedges() - before
        assert r0 == want_r0 and calls <= got <= calls + 1, (r0, got)


def test_map_references(harness):
    ffi = harness[0]
    vals = ffi.new("uint64_t[4]", [11, 22, 33, 44])
    base = int(ffi.cast("uintptr_t", vals))
    # r1 = maps[1]; r0 = *(u64 *)(map_values[1] + 16) + r1
    code = (lddw(1, 1, src=5) + I(0x18, 2, 6, 0, 1) + I(0, imm=16) +
            I(0x79, 0, 2, 0) + I(0x0f, 0, 1) + EXIT)
    p = Loaded(harness, compile_program(code))
    r0, _, _ = p.run(maps=[0, 0x1000], values=[0, base])
    p.close()
    assert r0 == 33 + 0x1000


def test_tail_call_returns_at_once(harness):
    # main: r3 = r1; call tail_call; r0 = 7; exit  -> pending when r1 == 1
    code = I(0xbf, 3, 1) + I(0x85, imm=12) + I(0xb7, 0, imm=7) + EXIT
    p = Loaded(harness, compile_program(code))
    assert p.run(0)[0] == 7 and not p.run(0)[2]
    r0, _, tc = p.run(1)
    assert tc and r0 != 7
    p.close()


def test_tail_call_from_subprogram(harness):
    # main: call sub; r0 += 100; exit.  sub: r3 = r1; call tail_call; r0 = 5; exit
    code = (I(0x85, src=1, imm=3) + I(0x07, 0, imm=100) + EXIT + EXIT +
            I(0xbf, 3, 1) + I(0x85, imm=12) + I(0xb7, 0, imm=5) + EXIT)
    p = Loaded(harness, compile_program(code))
    assert p.run(0)[0] == 105
    r0, _, tc = p.run(1)
    assert tc and r0 != 105
    p.close()


def test_stack_pointer_escapes(harness):
    # *(u64 *)(r10 - 8) = 0x1234; r1 = r10; r1 -= 8; r0 = *(u64 *)(r1 + 0); exit
    code = (I(0x7a, 10, off=-8, imm=0x1234) + I(0xbf, 1, 10) + I(0x17, 1, imm=8) +
            I(0x79, 0, 1, 0) + EXIT)
    p = Loaded(harness, compile_program(code))
    assert p.run()[0] == 0x1234
    p.close()


def test_blob_runs_anywhere(harness):
    """The blob needs no relocation: two copies at different addresses both run."""
    from syscall_server.aot.link import TRAILER, TRAILER_MAGIC
    code = (I(0xb7, 0, imm=0) + I(0xb7, 1, imm=10) + I(0x0f, 0, 1) + I(0x17, 1, imm=1) +
            I(0x55, 1, off=-3, imm=0) + EXIT)
    blob = compile_program(code)
    assert TRAILER.unpack_from(blob, len(blob) - TRAILER.size)[2] == TRAILER_MAGIC
    a, b = Loaded(harness, blob), Loaded(harness, blob)
    assert a.fn != b.fn
    assert a.run()[0] == b.run()[0] == 55
    a.close()
    b.close()


def test_bad_blob_rejected(harness):
    ffi, lib = harness
    assert lib.bpf_jit_load(b"\xc3" * 16, 16) == ffi.NULL
    assert lib.bpf_jit_load(b"", 0) == ffi.NULL


def test_cache_returns_same_blob():
    code = I(0xb7, 0, imm=3) + EXIT
    assert compile_program(code) is compile_program(code)


def test_may_goto_budget(harness):
    # r0 = 0; loop: may_goto +2; r0 += 1; ja loop; exit  (the verifier's BPF_MAX_LOOPS budget)
    code = I(0xb7, 0, imm=0) + I(0xe5, off=2) + I(0x07, 0, imm=1) + I(0x05, off=-3) + EXIT
    p = Loaded(harness, compile_program(code))
    assert p.run()[0] == 8 * 1024 * 1024
    p.close()


def test_recursion_rejected():
    # main: call main-like subprogram that calls itself
    code = I(0x85, src=1, imm=1) + EXIT + I(0x85, src=1, imm=-1) + EXIT
    with pytest.raises(AotError, match="recursive"):
        compile_program(code)


def test_disk_cache(tmp_path, monkeypatch):
    import syscall_server.aot.codegen as cg
    monkeypatch.setenv("BPFSHIM_AOT_CACHE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code = I(0xb7, 0, imm=0x5eed) + EXIT
    monkeypatch.setattr(cg, "_cache", {})
    blob = compile_program(code)
    files = list((tmp_path / "bpfshim" / "aot").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == blob
    monkeypatch.setattr(cg, "_cache", {})
    monkeypatch.setattr(cg.ProgramLibrary, "finalize", lambda self: pytest.fail("not served from disk"))
    assert compile_program(code) == blob


def test_dumps(capfd, monkeypatch):
    import syscall_server.aot.codegen as cg
    monkeypatch.setenv("BPFSHIM_DUMP_IR", "1")
    monkeypatch.setenv("BPFSHIM_DUMP_ASM", "1")
    monkeypatch.setattr(cg, "_cache", {})
    compile_program(I(0xb7, 0, imm=0xd0d0) + EXIT)
    err = capfd.readouterr().err
    assert "---- bpfshim aot IR ----" in err and "define i64 @bpf_prog" in err
    assert "---- bpfshim aot asm ----" in err and "bpf_prog:" in err


# Compare trees (a C switch as compilers lower it for eBPF) come back as one
# LLVM switch (syscall_server/aot/switch.py): each value must still reach the
# leaf the jumps reach, for every op, signedness and constant, on registers
# loaded as u32 (the value range known) and as u64. The interpreter is the
# reference (it matches the kernel on the random programs).
_TREE_OPS = (0x15, 0x55, 0x25, 0x35, 0xa5, 0xb5, 0x65, 0x75, 0xc5, 0xd5)
_TREE_K = (0, 1, 2, 3, 7, 31, 32, 63, 64, 100, -1, -2, -64, 0x7fffffff, -0x80000000)


def _tree_prog(rng, load_size):
    out = [I(0x61 if load_size == 4 else 0x79, dst=2, src=1)]
    leaves = [0]

    def emit(depth):
        if depth == 0 or rng.random() < 0.15:
            leaves[0] += 1
            out.append(I(0xb7, dst=0, imm=leaves[0]))
            out.append(EXIT)
            return
        pos = len(out)
        out.append(None)
        emit(depth - 1)
        right = len(out)
        emit(depth - 1)
        # mostly dense small constants, as the cases of a switch are
        k = rng.randrange(-2, 24) if rng.random() < 0.8 else rng.choice(_TREE_K)
        out[pos] = I(rng.choice(_TREE_OPS), dst=2, off=right - pos - 1, imm=k)

    emit(rng.randrange(3, 7))
    return b"".join(out)


def test_compare_tree_switch():
    import random
    from syscall_server.aot import insn as _insn
    from syscall_server.aot.switch import plan
    from syscall_server.conformance import run
    rng = random.Random(20261125)
    inputs = {0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1}
    inputs.update(k % 2**64 for k in range(-4, 27))
    for k in _TREE_K:
        inputs.update((k + d) % 2**64 for d in (-1, 0, 1))
    switched = 0
    for n in range(240):
        code = _tree_prog(rng, 4 if n % 2 else 8)
        prog = _insn.decode(code)
        switched += plan(prog, _insn.analyze(prog)[0], 1) is not None
        for v in sorted(inputs):
            mem = struct.pack("<Q", v)
            assert run(code, mem, "aot") == run(code, mem, "interp"), (code.hex(), v)
    assert switched >= 40, switched   # the trees that became a switch
