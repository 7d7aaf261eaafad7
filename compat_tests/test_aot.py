"""AOT compiler (syscall_server/aot) + blob loader (agent/jit.c).

The ISA conformance corpus (bpf_conformance, ../shared/corpus) runs through
compile_program and bpf_jit_load; the expected r0 comes from the corpus. The
harness is a small C file built here together with agent/jit.c (and the
LD_ABS runtime of agent/helpers/skb_helpers.c), so the test
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
from syscall_server.isa import encode as I, encode_lddw as lddw  # noqa: E402

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

/* What a run charged: the counter before it, then read after it. */
BPFSHIM_API void harness_left_set(int32_t v)
{
	bpf_rt_backedges_left = v;
}

BPFSHIM_API int32_t harness_left(void)
{
	return bpf_rt_backedges_left;
}

BPFSHIM_API int32_t harness_chunk(void)
{
	return BPF_RT_BACKEDGE_CHUNK;
}
"""

CDEF = """
void *bpf_jit_load(const void *blob, size_t len);
void bpf_jit_free(void *p, size_t len);
uint64_t harness_run(void *fn, uint64_t r1, void **maps, void **values, int *unwound, int *tail_called);
uint64_t harness_last_arg(int i);
uint64_t harness_backedges(void);
void harness_left_set(int32_t v);
int32_t harness_left(void);
int32_t harness_chunk(void);
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
           "-o", str(so), str(src), str(ROOT / "agent" / "jit.c"),
           str(ROOT / "agent" / "helpers" / "skb_helpers.c")]     # bpf_rt_ld_abs, an import of the blobs
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
        "ld with mode mem": I(0x60, imm=0) + EXIT,
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


# -- the run budget charged at a loop's entry (syscall_server/aot/loops.py) ---
# bpfshim's own bound, so asserted directly: a loop whose trip count a constant
# bounds is charged that bound when it is entered, others each back edge; no
# run may take more back edges than it was charged.

_JOPS = ("jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle")
_JCODE = dict(zip(_JOPS, (0x10, 0x50, 0x20, 0x30, 0xa0, 0xb0, 0x60, 0x70, 0xc0, 0xd0)))
_LOOP_LIMIT = 70000      # the loop's own way out (r6 > r7): past BPF_RT_BACKEDGE_CHUNK


def _loop_prog(case, limit=_LOOP_LIMIT):
    """(the program, its loop header pc). r0 counts the times round; r2 is the
    induction register: set to start (None: from r1), stepped by d (`r2 += step`
    or `w2 += step`), tested against k by t, either at the bottom jumping back
    ("bottom") or at the top jumping out ("top"), or through a copy r3 made
    just before t (via: "mov" r3 = r2, "w" w3 = w2, "zext" r3 = r2; r3 <<= 32;
    r3 >>= 32); r8 (from r1 when start is known) ends the loop early, r6 > r7
    after limit times round."""
    start, step, alu64, jmp64, op, k, form, *via = case
    via = via[0] if via else None
    pre = I(0xb7, 0, imm=0) + I(0xb7, 6, imm=0) + I(0xb7, 7, imm=limit)
    if start is None:
        pre += I(0xbf, 2, 1) + lddw(8, -1)
    else:
        pre += (I(0xb7, 2, imm=start) if -2**31 <= start < 2**31 else lddw(2, start)) + I(0xbf, 8, 1)
    head = len(pre) // 8
    body = I(0x07, 0, imm=1) + I(0x07, 6, imm=1) + I(0x2d, 6, 7, off=0) + I(0x1d, 0, 8, off=0)
    d = I(0x07 if alu64 else 0x04, 2, imm=step)
    t = _JCODE[op] | (0x05 if jmp64 else 0x06)
    x, copy = (2, b"") if via is None else (3, {
        "mov": I(0xbf, 3, 2), "w": I(0xbc, 3, 2),
        "zext": I(0xbf, 3, 2) + I(0x67, 3, imm=32) + I(0x77, 3, imm=32)}[via])
    if form == "bottom":
        body += d + copy
        n = len(body) // 8
        body += I(t, x, imm=k, off=head - (head + n) - 1)
    else:
        body += copy + I(t, x, imm=k, off=2) + d
        n = len(body) // 8
        body += I(0x05, off=head - (head + n) - 1)
    # the two early exits jump to the exit past the body
    n = len(body) // 8
    body = body[:16] + I(0x2d, 6, 7, off=n - 3) + I(0x1d, 0, 8, off=n - 4) + body[32:]
    return pre + body + EXIT, head


def _loop_model(case, r1, limit=_LOOP_LIMIT):
    """r0 as the kernel's interpreter would leave it (what the loop computes)."""
    start, step, alu64, jmp64, op, k, form, *via = case
    low = via and via[0] in ("w", "zext")      # t sees r2's low 32 bits
    m64 = (1 << 64) - 1
    r2 = (r1 if start is None else start) & m64
    r8 = m64 if start is None else r1 & m64
    r0 = r6 = 0

    def holds():
        if jmp64:
            a, b, bits = r2 & 0xffffffff if low else r2, k & m64, 64
        else:
            a, b, bits = r2 & 0xffffffff, k & 0xffffffff, 32
        if op.startswith("js"):
            a, b = (x - (1 << bits) if x >> (bits - 1) else x for x in (a, b))
        return {"eq": a == b, "ne": a != b, "gt": a > b, "ge": a >= b, "lt": a < b,
                "le": a <= b}[op.lstrip("j").lstrip("s")]

    while True:
        r0 += 1
        r6 += 1
        if r6 > limit or r0 == r8:
            return r0
        if form == "top" and holds():
            return r0
        r2 = (r2 + step) & m64 if alu64 else ((r2 & 0xffffffff) + step) & 0xffffffff
        if form == "bottom" and not holds():
            return r0


def _charged(harness, prog, r1):
    """(r0, what the run charged the budget)."""
    lib = harness[1]
    lib.harness_left_set(1 << 30)
    r0, _, _ = prog.run(r1)
    return r0, (1 << 30) - lib.harness_left()


# shape -> how it is charged: "entry" (its bound, on entering), "edges" (each back edge)
_LOOP_SHAPES = {
    # for (i = 0; i != 4096; i++), test at the bottom (memcpy as clang emits it)
    (0, 1, True, True, "jne", 4096, "bottom"): "entry",
    # for (i = 0; i < 4095; i++) if (..) break, test at the top (strcmp)
    (0, 1, True, True, "jeq", 4095, "top"): "entry",
    (0, 1, True, True, "jgt", 254, "top"): "entry",
    # u32 counters: w2 += 1, 32-bit and 64-bit compares
    (0, 1, False, False, "jlt", 1000, "bottom"): "entry",
    (0, 1, False, True, "jge", 64, "top"): "entry",
    # counting down, signed and unsigned
    (100, -1, True, True, "jsgt", 0, "bottom"): "entry",
    (100, -2, True, True, "jne", 0, "bottom"): "entry",
    # any start below an unsigned bound
    (None, 1, True, True, "jlt", 512, "bottom"): "entry",
    # tested through a copy: u32 counters without alu32 (hash_update), w3 = w2
    (0, 1, True, True, "jgt", 254, "top", "zext"): "entry",
    (0, 1, True, True, "jlt", 100, "bottom", "w"): "entry",
    (5, 3, True, False, "jne", 305, "bottom", "mov"): "entry",
    # not bounded by a constant: any start with !=, any signed start, a bound
    # past one chunk, a start the step never meets, a step of 0
    (None, 1, True, True, "jne", 512, "bottom"): "edges",
    (None, 1, True, True, "jslt", 512, "bottom"): "edges",
    (0, 1, True, True, "jlt", 65537 + 2, "bottom"): "edges",
    (1, 2, True, True, "jne", 100, "bottom"): "edges",
    (0, 0, True, True, "jne", 100, "bottom"): "edges",
    # wraps round before it leaves: w2 += 1 against 2**31 in 64 bits is refused
    (0, 1, False, True, "jle", -1, "bottom"): "edges",
    # a zero-extended copy never reaches 2**64 - 1
    (0, 1, True, True, "jne", -1, "bottom", "zext"): "edges",
}


@pytest.mark.parametrize("shape", list(_LOOP_SHAPES), ids=lambda c: "_".join(map(str, c)))
def test_loop_charged_at_entry(harness, shape):
    """A loop bounded by a constant is charged its bound on entry (a run that
    leaves after one time round pays the same as a full one), others each back
    edge they take; a run never takes more back edges than it was charged."""
    prog, _ = _loop_prog(shape)
    p = Loaded(harness, compile_program(prog))
    # the full run (from the worst start when the start is r1), then a short one
    full_r1, early_r1 = (0, 500) if shape[0] is None else (1 << 63, 1)
    r0, full = _charged(harness, p, full_r1)
    early_r0, early = _charged(harness, p, early_r1)
    p.close()
    assert (r0, early_r0) == (_loop_model(shape, full_r1), _loop_model(shape, early_r1))
    assert early_r0 < r0 and full >= r0 - 1 and early >= early_r0 - 1
    if _LOOP_SHAPES[shape] == "entry":
        assert full == early and r0 - 1 <= full <= r0 + 1, (full, r0)
    else:
        assert (full, early) == (r0 - 1, early_r0 - 1)


def test_loop_charge_structures(harness):
    """Loops inside loops, and loops whose test or step is not on every way
    round: what a run is charged never falls below the back edges it takes."""
    # for (i = 0; i != 10; i++) for (j = 0; j != 100; j++) r0++: both charged
    # at entry, 10 (9 back edges and one) + 10 * 100
    nested = (I(0xb7, 0, imm=0) + I(0xb7, 2, imm=0) + I(0xb7, 3, imm=0) + I(0x07, 0, imm=1) +
              I(0x07, 3, imm=1) + I(0x55, 3, imm=100, off=-3) + I(0x07, 2, imm=1) +
              I(0x55, 2, imm=10, off=-6) + EXIT)
    head = I(0xb7, 0, imm=0) + I(0xb7, 6, imm=0) + I(0xb7, 7, imm=3000) + I(0xb7, 2, imm=0)
    # r0++; if r6++ > r7 out; if (r0 & 1) skip the test r2 == 4; r2++: the test
    # sees only odd r2, never 4: the loop ends at r7 (3001 times round)
    skip = (head + I(0x07, 0, imm=1) + I(0x07, 6, imm=1) + I(0x2d, 6, 7, off=4) +
            I(0x45, 0, imm=1, off=1) + I(0x15, 2, imm=4, off=2) + I(0x07, 2, imm=1) +
            I(0x05, off=-7) + EXIT)
    # the step inside an inner loop of 3: r2 goes 3, 6, 9, 12 past 10
    inner_step = (head + I(0x07, 0, imm=1) + I(0x07, 6, imm=1) + I(0x2d, 6, 7, off=6) +
                  I(0xb7, 4, imm=0) + I(0x07, 2, imm=1) + I(0x07, 4, imm=1) +
                  I(0xa5, 4, imm=3, off=-3) + I(0x15, 2, imm=10, off=1) + I(0x05, off=-9) + EXIT)
    # the header is a way round of its own (r0 odd: back to it), which passes
    # neither the test r2 == 4 nor r2++: 10 times round, 9 back edges
    self_loop = (head + I(0x07, 0, imm=1) + I(0x45, 0, imm=1, off=-2) + I(0x07, 6, imm=1) +
                 I(0x2d, 6, 7, off=3) + I(0x15, 2, imm=4, off=2) + I(0x07, 2, imm=1) +
                 I(0x05, off=-7) + EXIT)
    for code, want_r0, taken in ((nested, 1000, 999), (skip, 3001, 3000), (inner_step, 3001, 3 * 3000),
                                 (self_loop, 10, 9)):
        p = Loaded(harness, compile_program(code))
        r0, charged = _charged(harness, p, 0)
        p.close()
        assert r0 == want_r0 and charged >= taken, (r0, charged)
        if code is nested:
            assert charged == 10 + 10 * 100


def _random_loop_cases(n, seed):
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.choice([None, 0, 1, 5, -3, 2**31 - 2, 2**32 - 3, 2**63 - 2, -2**63, 1000])
        step = rng.choice([1, 1, 2, 3, -1, -2, 7, 2**31 - 1, -2**31])
        base = 0 if start is None else start
        k = rng.choice([base + step * rng.randrange(0, 40), base + rng.randrange(-3, 300),
                        rng.randrange(-2**31, 2**31), 0, -1, 2**31 - 1, 4096])
        k = ((k + 2**31) % 2**32) - 2**31
        out.append((start, step, rng.random() < 0.5, rng.random() < 0.5, rng.choice(_JOPS), k,
                    rng.choice(("top", "bottom")), rng.choice((None, None, "mov", "w", "zext"))))
    return out


def test_loop_charge_covers_every_back_edge():
    """The budget plan's bound for each loop it charges at entry is at least the
    back edges the loop takes (the model's count), over random loop shapes:
    every start, step, width, compare and place of the test."""
    from syscall_server.aot import insn, loops
    charged = 0
    for case in _random_loop_cases(3000, 11):
        code, head = _loop_prog(case)
        prog = insn.decode(code)
        n = loops.plan(prog, insn.analyze(prog)[0]).charge.get(head)
        if n is None:
            continue
        charged += 1
        for r1 in (0, 1 << 63, 2**32 - 1, 5):
            if case[0] is None or r1 == 1 << 63:
                # the program's own way out comes after n + 1 times round
                assert _loop_model(case, r1, limit=n + 1) - 1 <= n <= loops.MAX_CHARGE, (case, r1, n)
    assert charged > 300      # the sweep reaches the charged shapes


def test_loop_charge_at_most_a_chunk(harness):
    """Between two checks no more than two chunks of iterations run: what one
    entry is charged is at most the chunk the check refills."""
    from syscall_server.aot import loops
    assert loops.MAX_CHARGE == harness[1].harness_chunk()


def test_loop_charge_compiled(harness):
    """The same over compiled code: r0 as the model computes, and what a run
    was charged never below the back edges it took."""
    for case in _random_loop_cases(120, 12):
        code, _ = _loop_prog(case, limit=3000)
        p = Loaded(harness, compile_program(code))
        r1 = 3 if case[0] is None else (1 << 63)
        r0, charged = _charged(harness, p, r1)
        p.close()
        assert r0 == _loop_model(case, r1, limit=3000) and charged >= r0 - 1, (case, r0, charged)


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
