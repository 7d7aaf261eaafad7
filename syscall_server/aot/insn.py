"""eBPF instruction decoding and the program's static shape (subprograms, blocks).

Only what the code generator needs: opcodes by their uapi names, one decoded
record per instruction slot, and the checks the kernel's verifier does on the
shape of a program (jump targets inside it and not into the second half of an
lddw, calls to subprogram starts, last instruction of a function being an exit
or a jump).
"""
import errno

from ..isa import (  # noqa: F401  (the aot modules import the ISA from here)
    BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64,
    BPF_W, BPF_H, BPF_B, BPF_DW, SIZE_BYTES, BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC,
    BPF_K, BPF_X, BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG,
    BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END, BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET,
    BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_CALL, BPF_EXIT, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE,
    BPF_JCOND, BPF_FETCH, BPF_XCHG, BPF_CMPXCHG, BPF_LOAD_ACQ, BPF_STORE_REL, BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL, BPF_MAY_GOTO, BPF_MAX_LOOPS,
    BPF_REG_FP, BPF_FUNC_tail_call, MAX_BPF_STACK, INSN,
)
from .. import isa

HELPER_MAX = 256   # BPF_RT_HELPER_MAX in agent/bpf_rt.h


class AotError(OSError):
    """A program the AOT compiler cannot translate (the interpreter still can run it)."""

    def __init__(self, msg, pc=None):
        if pc is not None:
            msg = f"insn {pc}: {msg}"
        super().__init__(errno.EINVAL, msg)


class Insn(isa.Insn):
    __slots__ = ("pc", "imm64")

    def __init__(self, pc, code, regs, off, imm):
        super().__init__(code, regs, off, imm)
        self.pc = pc
        self.imm64 = None    # lddw: the second slot's imm as u32 << 32 | (u32)imm

    def __repr__(self):
        return f"Insn({self.pc}: {self.code:#04x} dst={self.dst} src={self.src} off={self.off} imm={self.imm})"


def decode(insns):
    """bytes -> list of Insn, one per 8-byte slot (the lddw second slot is None)."""
    if not insns or len(insns) % 8:
        raise AotError(f"program length {len(insns)} is not a non-zero multiple of 8")
    out = [Insn(i, *INSN.unpack_from(insns, 8 * i)) for i in range(len(insns) // 8)]
    i = 0
    n = len(out)
    while i < n:
        ins = out[i]
        if ins.is_lddw():
            if i + 1 >= n:
                raise AotError("lddw without its second slot", i)
            nxt = out[i + 1]
            if nxt.code or nxt.dst or nxt.src or nxt.off:
                raise AotError("invalid lddw second slot", i + 1)
            ins.imm64 = (ins.imm & 0xffffffff) | ((nxt.imm & 0xffffffff) << 32)
            out[i + 1] = None
            i += 2
        else:
            i += 1
    return out


def jump_target(ins):
    """Target pc of a jump (None for call/exit/non-jumps)."""
    cls = ins.cls
    if cls not in (BPF_JMP, BPF_JMP32):
        return None
    op = ins.op
    if op in (BPF_CALL, BPF_EXIT):
        return None
    if op == BPF_JA and cls == BPF_JMP32:     # gotol: 32-bit offset in imm
        return ins.pc + ins.imm + 1
    return ins.pc + ins.off + 1


def is_pseudo_call(ins):
    return ins.code == (BPF_JMP | BPF_CALL) and ins.src == BPF_PSEUDO_CALL


class Func:
    """One subprogram: pcs [start, end)."""
    __slots__ = ("idx", "start", "end", "callees", "helpers", "callx", "may_tail_call", "leaders", "is_callback")

    def __init__(self, idx, start, end):
        self.idx, self.start, self.end = idx, start, end
        self.callees = set()
        self.helpers = set()
        self.callx = False
        self.may_tail_call = False
        self.leaders = set()
        self.is_callback = False     # its address is taken (lddw BPF_PSEUDO_FUNC)


def analyze(prog, helper_ids=None):
    """Subprograms with their basic-block leaders, checked like the verifier's check_subprogs/check_cfg."""
    n = len(prog)
    starts = {0}
    callbacks = set()
    for ins in prog:
        if ins is not None and is_pseudo_call(ins):
            t = ins.pc + ins.imm + 1
            if not 0 <= t < n or prog[t] is None:
                raise AotError(f"call to invalid destination {t}", ins.pc)
            starts.add(t)
        elif ins is not None and ins.is_lddw() and ins.src == BPF_PSEUDO_FUNC:
            t = ins.pc + ins.imm + 1
            if not 0 < t < n or prog[t] is None:
                raise AotError(f"callback at invalid destination {t}", ins.pc)
            starts.add(t)
            callbacks.add(t)
    starts = sorted(starts)
    funcs = []
    for k, s in enumerate(starts):
        funcs.append(Func(k, s, starts[k + 1] if k + 1 < len(starts) else n))
    by_start = {f.start: f for f in funcs}
    for t in callbacks:
        by_start[t].is_callback = True
    for f in funcs:
        f.leaders.add(f.start)
        last = None
        for pc in range(f.start, f.end):
            ins = prog[pc]
            if ins is None:
                continue
            last = ins
            t = jump_target(ins)
            if t is not None:
                if not f.start <= t < f.end or prog[t] is None:
                    raise AotError(f"jump out of range from insn {pc} to {t}", pc)
                f.leaders.add(t)
                if pc + 1 < f.end:
                    f.leaders.add(pc + 1)
            elif ins.cls in (BPF_JMP, BPF_JMP32) and ins.op == BPF_EXIT:
                if pc + 1 < f.end:
                    f.leaders.add(pc + 1)
            elif ins.cls == BPF_JMP and ins.op == BPF_CALL:
                if ins.code & BPF_X:
                    f.callx = True
                elif ins.src == BPF_PSEUDO_CALL:
                    f.callees.add(by_start[ins.pc + ins.imm + 1])
                elif ins.src == BPF_PSEUDO_KFUNC_CALL:
                    raise AotError("kfunc calls are not supported", pc)
                elif ins.src == 0:
                    if not 0 <= ins.imm < HELPER_MAX or (helper_ids is not None and ins.imm not in helper_ids):
                        raise AotError(f"unknown helper {ins.imm}", pc)
                    f.helpers.add(ins.imm)
                else:
                    raise AotError(f"invalid call src_reg {ins.src}", pc)
        ok_last = last is not None and last.cls in (BPF_JMP, BPF_JMP32) and (
            last.op == BPF_EXIT or (last.op == BPF_JA and last.code & BPF_X == 0))
        if not ok_last:
            raise AotError("last insn of a function is not an exit or jmp", f.end - 1)
    # No recursion (the verifier's check_max_stack_depth): it would overflow the native stack.
    state = {}

    def visit(f):
        state[f.idx] = 1
        for c in f.callees:
            if state.get(c.idx) == 1:
                raise AotError(f"recursive call to the function at insn {c.start}", f.start)
            if c.idx not in state:
                visit(c)
        state[f.idx] = 2

    for f in funcs:
        if f.idx not in state:
            visit(f)
    # A tail call (or a callx that might be one) anywhere below a function ends it too.
    for f in funcs:
        f.may_tail_call = BPF_FUNC_tail_call in f.helpers or f.callx
    changed = True
    while changed:
        changed = False
        for f in funcs:
            if not f.may_tail_call and any(c.may_tail_call for c in f.callees):
                f.may_tail_call = changed = True
    return funcs


def has_back_edge(prog):
    """True if some jump goes backwards (a loop, as far as the pipeline choice goes)."""
    for ins in prog:
        if ins is not None:
            t = jump_target(ins)
            if t is not None and t <= ins.pc:
                return True
    return False


def predecessors(prog):
    """pc -> the pcs that jump or fall through to it."""
    preds = {}
    prev = None       # the previous instruction, if it falls through
    for ins in prog:
        if ins is None:
            continue
        pc = ins.pc
        if prev is not None:
            preds.setdefault(pc, []).append(prev)
        t = jump_target(ins)
        if t is not None:
            preds.setdefault(t, []).append(pc)
        ends = ins.cls in (BPF_JMP, BPF_JMP32) and (
            ins.op == BPF_EXIT or (ins.op == BPF_JA and not ins.code & BPF_X))
        prev = None if ends else pc
    return preds


def loops_all_call(prog, preds=None):
    """True if the program has loops and each one calls a helper on its way
    round: the body of every back edge's natural loop (what reaches the jump
    without passing the loop head) holds a call. The loop vectorizer gives up
    on a loop with a call it cannot see into, so such loops need none of it."""
    back = [(ins.pc, t) for ins in prog if ins is not None
            for t in (jump_target(ins),) if t is not None and t <= ins.pc]
    if not back:
        return False
    if preds is None:
        preds = predecessors(prog)
    for src, head in back:
        body = {head}
        work = [src]
        called = _is_call(prog[head])
        while work and not called:
            pc = work.pop()
            if pc in body:
                continue
            body.add(pc)
            called = _is_call(prog[pc])
            work.extend(preds.get(pc, ()))
        if not called:
            return False
    return True


def _is_call(ins):
    return ins.cls == BPF_JMP and ins.op == BPF_CALL and not is_pseudo_call(ins)
