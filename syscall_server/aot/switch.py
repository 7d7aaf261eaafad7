"""Decision trees of compares back into one switch.

eBPF has no indirect jump, so compilers lower a C switch to a tree of
conditional jumps on one register against constants. Given back to LLVM as
an IR `switch`, it becomes a jump table, or a lookup table when the cases
only select values, as in native code. A tree here: from a conditional jump
(imm form, 64-bit) on rX, every jump target or fall-through that is a block
holding nothing but another such jump on rX is followed; the other blocks
reached are the leaves. The tree's outcome as a function of rX is computed
exactly on the intervals between the constants' change points, so the switch
sends every value where the jumps would (test nodes write no register, so a
leaf sees the same state either way).
"""
from .insn import (
    BPF_JMP, BPF_ALU, BPF_ALU64, BPF_LD, BPF_LDX, BPF_STX, BPF_MEM, BPF_ATOMIC, BPF_FETCH,
    BPF_CMPXCHG, BPF_CALL, BPF_X, BPF_W, BPF_H, BPF_B, BPF_END, BPF_JEQ, BPF_JNE, BPF_JGT,
    BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE, jump_target,
)

U64 = (1 << 64) - 1
_OPS = {
    BPF_JEQ: lambda u, s, ku, ks: u == ku, BPF_JNE: lambda u, s, ku, ks: u != ku,
    BPF_JGT: lambda u, s, ku, ks: u > ku, BPF_JGE: lambda u, s, ku, ks: u >= ku,
    BPF_JLT: lambda u, s, ku, ks: u < ku, BPF_JLE: lambda u, s, ku, ks: u <= ku,
    BPF_JSGT: lambda u, s, ku, ks: s > ks, BPF_JSGE: lambda u, s, ku, ks: s >= ks,
    BPF_JSLT: lambda u, s, ku, ks: s < ks, BPF_JSLE: lambda u, s, ku, ks: s <= ks,
}
MIN_LEAVES = 4          # fewer: the branches are as good
MAX_NODES = 256
MAX_CASES = 512
SMALL = 16              # an interval this small is listed value by value


def _test(ins, reg=None):
    """A 64-bit conditional jump on a register against an immediate (on reg if given)."""
    return (ins is not None and ins.cls == BPF_JMP and ins.op in _OPS and not ins.code & BPF_X
            and (reg is None or ins.dst == reg))


def _writes(ins, r):
    cls = ins.cls
    if cls in (BPF_ALU, BPF_ALU64, BPF_LDX, BPF_LD):
        return ins.dst == r
    if cls == BPF_JMP and ins.op == BPF_CALL:
        return r <= 5
    if cls == BPF_STX and ins.mode == BPF_ATOMIC:
        return (ins.imm == BPF_CMPXCHG and r == 0) or (ins.imm & BPF_FETCH and ins.src == r)
    return False


def _value_max(prog, f, pc, r):
    """The largest value r can hold at pc, from its last write before pc in pc's block."""
    if pc in f.leaders:
        return U64
    for q in range(pc - 1, f.start - 1, -1):
        ins = prog[q]
        if ins is not None and _writes(ins, r):
            if ins.cls == BPF_LDX and ins.mode == BPF_MEM and ins.size in (BPF_W, BPF_H, BPF_B):
                return {BPF_W: 0xffffffff, BPF_H: 0xffff, BPF_B: 0xff}[ins.size]
            if ins.cls == BPF_ALU and ins.op != BPF_END:
                return 0xffffffff
            return U64
        if q in f.leaders:
            break
    return U64


def plan(prog, f, pc):
    """(default leaf pc, [(value, leaf pc)]) for the tree rooted at the jump at
    pc, or None when there is no tree worth a switch."""
    p = plan_tree(prog, f, pc)
    return p and p[:2]


def plan_tree(prog, f, pc):
    """plan(), and the set of the tree's test nodes (pcs) as a third element."""
    root = prog[pc]
    if not _test(root):
        return None
    r = root.dst
    nodes = {}

    def walk(p, depth):
        if p in nodes or depth > 32 or len(nodes) >= MAX_NODES:
            return p in nodes
        nodes[p] = prog[p]
        for c in (jump_target(prog[p]), p + 1):
            if c in f.leaders and c != f.start and _test(prog[c], r) and c + 1 in f.leaders:
                if not walk(c, depth + 1):
                    return False
        return True

    if not walk(pc, 0):
        return None
    if len(nodes) < MIN_LEAVES - 1:
        return None

    def leaf_of(u):
        s = u - (1 << 64) if u >> 63 else u
        p = pc
        seen = 0
        while p in nodes:
            ins = nodes[p]
            ku = ins.imm & U64
            p = jump_target(ins) if _OPS[ins.op](u, s, ku, ins.imm) else p + 1
            seen += 1
            if seen > len(nodes):
                return None       # a cycle of tests (a loop doing nothing): not a tree
        return p

    top = _value_max(prog, f, pc, r)
    points = {0, 1 << 63}
    for ins in nodes.values():
        k = ins.imm & U64
        points.update((k, (k + 1) & U64))
    points = sorted(p for p in points if p <= top)
    segs = []          # (lo, hi, leaf)
    for i, lo in enumerate(points):
        hi = points[i + 1] - 1 if i + 1 < len(points) else top
        leaf = leaf_of(lo)
        if leaf is None:
            return None
        if segs and segs[-1][2] == leaf:
            segs[-1] = (segs[-1][0], hi, leaf)
        else:
            segs.append((lo, hi, leaf))
    big = {leaf for lo, hi, leaf in segs if hi - lo + 1 > SMALL}
    if len(big) > 1:
        return None
    default = big.pop() if big else segs[-1][2]
    cases = [(v, leaf) for lo, hi, leaf in segs if leaf != default for v in range(lo, hi + 1)]
    if len(cases) > MAX_CASES or len({leaf for _, leaf in cases}) + 1 < MIN_LEAVES:
        return None
    return default, cases, set(nodes)
