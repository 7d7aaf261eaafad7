"""Scalar arithmetic on register states: adjust_scalar_min_max_vals() and the
branch refinements of check_cond_jmp_op() (kernel/bpf/verifier.c). Each
result is sound (every value the instruction can produce is inside it); where
the kernel knows more than this model, the result is marked not exact."""
from ..isa import (  # noqa: F401  (check.py reads the ops as A.MOV, A.NEG, ...)
    BPF_ADD as ADD, BPF_SUB as SUB, BPF_MUL as MUL, BPF_DIV as DIV, BPF_OR as OR, BPF_AND as AND,
    BPF_LSH as LSH, BPF_RSH as RSH, BPF_NEG as NEG, BPF_MOD as MOD, BPF_XOR as XOR, BPF_MOV as MOV,
    BPF_ARSH as ARSH, BPF_END as END,
    BPF_JEQ as JEQ, BPF_JGT as JGT, BPF_JGE as JGE, BPF_JSET as JSET, BPF_JNE as JNE, BPF_JSGT as JSGT,
    BPF_JSGE as JSGE, BPF_JLT as JLT, BPF_JLE as JLE, BPF_JSLT as JSLT, BPF_JSLE as JSLE,
)
from . import tnum as T
from .regs import M32, M64, S32_MAX, S32_MIN, S64_MAX, S64_MIN, s32, s64


def _unbounded32(d):
    d.s32min, d.s32max, d.u32min, d.u32max = S32_MIN, S32_MAX, 0, M32


def _unbounded64(d):
    d.smin, d.smax, d.umin, d.umax = S64_MIN, S64_MAX, 0, M64


def _add(d, s):
    lo, hi = d.s32min + s.s32min, d.s32max + s.s32max
    d.s32min, d.s32max = (lo, hi) if S32_MIN <= lo and hi <= S32_MAX else (S32_MIN, S32_MAX)
    lo, hi = d.u32min + s.u32min, d.u32max + s.u32max
    d.u32min, d.u32max = (lo, hi) if hi <= M32 else (0, M32)
    lo, hi = d.smin + s.smin, d.smax + s.smax
    d.smin, d.smax = (lo, hi) if S64_MIN <= lo and hi <= S64_MAX else (S64_MIN, S64_MAX)
    lo, hi = d.umin + s.umin, d.umax + s.umax
    d.umin, d.umax = (lo, hi) if hi <= M64 else (0, M64)
    d.var = T.add(d.var, s.var)


def _sub(d, s):
    lo, hi = d.s32min - s.s32max, d.s32max - s.s32min
    d.s32min, d.s32max = (lo, hi) if S32_MIN <= lo and hi <= S32_MAX else (S32_MIN, S32_MAX)
    d.u32min, d.u32max = (d.u32min - s.u32max, d.u32max - s.u32min) if d.u32min >= s.u32max else (0, M32)
    lo, hi = d.smin - s.smax, d.smax - s.smin
    d.smin, d.smax = (lo, hi) if S64_MIN <= lo and hi <= S64_MAX else (S64_MIN, S64_MAX)
    d.umin, d.umax = (d.umin - s.umax, d.umax - s.umin) if d.umin >= s.umax else (0, M64)
    d.var = T.sub(d.var, s.var)


def _mul(d, s):
    """scalar32_min_max_mul(), scalar_min_max_mul() (6.18): the products
    of the bounds unless one may overflow."""
    for umin, umax, smin, smax, ulim, slo, shi in (("u32min", "u32max", "s32min", "s32max", M32, S32_MIN, S32_MAX),
                                                  ("umin", "umax", "smin", "smax", M64, S64_MIN, S64_MAX)):
        hi, lo = getattr(d, umax) * getattr(s, umax), getattr(d, umin) * getattr(s, umin)
        setattr(d, umin, lo if hi <= ulim else 0)
        setattr(d, umax, hi if hi <= ulim else ulim)
        prods = [getattr(d, a) * getattr(s, b) for a in (smin, smax) for b in (smin, smax)]
        ok = all(slo <= p <= shi for p in prods)
        setattr(d, smin, min(prods) if ok else slo)
        setattr(d, smax, max(prods) if ok else shi)
    d.var = T.mul(d.var, s.var)


def _and(d, s):
    d.var = T.and_(d.var, s.var)
    v32, m32 = T.subreg(d.var)
    d.u32min, d.u32max = v32, min(d.u32max, s.u32max)
    if d.s32min < 0 or s.s32min < 0:
        d.s32min, d.s32max = S32_MIN, S32_MAX
    else:
        d.s32min, d.s32max = d.u32min, d.u32max
    d.umin, d.umax = d.var[0], min(d.umax, s.umax)
    if d.smin < 0 or s.smin < 0:
        d.smin, d.smax = S64_MIN, S64_MAX
    else:
        d.smin, d.smax = d.umin, d.umax


def _or(d, s):
    d.var = T.or_(d.var, s.var)
    v32, m32 = T.subreg(d.var)
    d.u32min, d.u32max = max(d.u32min, s.u32min), v32 | m32
    if d.s32min < 0 or s.s32min < 0:
        d.s32min, d.s32max = S32_MIN, S32_MAX
    else:
        d.s32min, d.s32max = d.u32min, d.u32max
    d.umin, d.umax = max(d.umin, s.umin), d.var[0] | d.var[1]
    if d.smin < 0 or s.smin < 0:
        d.smin, d.smax = S64_MIN, S64_MAX
    else:
        d.smin, d.smax = d.umin, d.umax


def _xor(d, s):
    neg32, neg64 = d.s32min < 0 or s.s32min < 0, d.smin < 0 or s.smin < 0
    d.var = T.xor(d.var, s.var)
    v32, m32 = T.subreg(d.var)
    d.u32min, d.u32max = v32, v32 | m32
    d.s32min, d.s32max = (S32_MIN, S32_MAX) if neg32 else (d.u32min, d.u32max)
    d.umin, d.umax = d.var[0], d.var[0] | d.var[1]
    d.smin, d.smax = (S64_MIN, S64_MAX) if neg64 else (d.umin, d.umax)


def _lsh(d, sh, alu32):
    if alu32:
        if d.u32max > (1 << (31 - sh)):
            d.u32min, d.u32max = 0, M32
        else:
            d.u32min, d.u32max = d.u32min << sh, d.u32max << sh
        d.s32min, d.s32max = S32_MIN, S32_MAX
        d.var = T.with_subreg(d.var, T.lshift(T.subreg(d.var), sh))
        return
    if sh == 32 and d.s32max >= 0:
        d.smax = d.s32max << 32
    else:
        d.smax = S64_MAX
    if sh == 32 and d.s32min >= 0:
        d.smin = d.s32min << 32
    else:
        d.smin = S64_MIN
    if d.umax > (1 << (63 - sh)):
        d.umin, d.umax = 0, M64
    else:
        d.umin, d.umax = d.umin << sh, d.umax << sh
    d.var = T.lshift(d.var, sh)


def _rsh(d, sh, alu32):
    if alu32:
        d.s32min, d.s32max = S32_MIN, S32_MAX
        d.var = T.with_subreg(d.var, T.rshift(T.subreg(d.var), sh))
        d.u32min, d.u32max = d.u32min >> sh, d.u32max >> sh
        return
    d.smin, d.smax = S64_MIN, S64_MAX
    d.var = T.rshift(d.var, sh)
    d.umin, d.umax = d.umin >> sh, d.umax >> sh
    _unbounded32(d)


def _arsh(d, sh, alu32):
    if alu32:
        d.s32min, d.s32max = d.s32min >> sh, d.s32max >> sh
        d.var = T.with_subreg(d.var, T.arshift(T.subreg(d.var), sh, 32))
        d.u32min, d.u32max = 0, M32
        return
    d.smin, d.smax = d.smin >> sh, d.smax >> sh
    d.var = T.arshift(d.var, sh, 64)
    d.umin, d.umax = 0, M64
    _unbounded32(d)


def scalar_alu(d, s, op, alu32):
    """dst = dst op src on scalars, in place (d and s are Regs; s may be a
    constant made from the immediate)."""
    exact = d.exact and s.exact
    if alu32:
        src_known = T.is_const(T.subreg(s.var))
        bad = (src_known and (s.s32min != s.s32max or s.u32min != s.u32max)) or \
            s.s32min > s.s32max or s.u32min > s.u32max
    else:
        src_known = s.is_const()
        bad = (src_known and (s.smin != s.smax or s.umin != s.umax)) or s.smin > s.smax or s.umin > s.umax
    bits = 32 if alu32 else 64
    if op in (DIV, MOD) or (op in (LSH, RSH, ARSH) and (not src_known or s.umax >= bits)):
        # is_safe_to_compute_dst_reg_range() is false: __mark_reg_unknown()
        # on all 64 bits, even for an alu32 op (measured on 6.18: no zero
        # extension); a shift's verdict depends on knowing its source
        d.unknown()
        d.exact = op in (DIV, MOD) or s.exact
        return
    if bad or (not src_known and op not in (ADD, SUB, AND, MUL)):
        # the kernel (since 6.x) bounds or and xor of an unknown src: this
        # model does not
        d.unknown()
        d.exact = exact and not (op in (OR, XOR) or bad)
        if alu32:
            d.zext32()
        d.sync()
        return
    if op == ADD:
        _add(d, s)
    elif op == SUB:
        _sub(d, s)
    elif op == MUL:
        _mul(d, s)
    elif op == AND:
        if src_known and d.is_const() and not alu32:
            d.known(d.var[0] & s.var[0])
        else:
            _and(d, s)
    elif op == OR:
        if src_known and d.is_const() and not alu32:
            d.known(d.var[0] | s.var[0])
        else:
            _or(d, s)
    elif op == XOR:
        if src_known and d.is_const() and not alu32:
            d.known(d.var[0] ^ s.var[0])
        else:
            _xor(d, s)
    elif op in (LSH, RSH, ARSH):
        sh = (s.var[0] & M32) if alu32 else s.var[0]
        if op == LSH:
            _lsh(d, sh, alu32)
            if not alu32:
                _unbounded32(d)
        elif op == RSH:
            _rsh(d, sh, alu32)
        else:
            _arsh(d, sh, alu32)
    d.exact = exact
    if alu32:
        d.zext32()
    d.sync()


def coerce(r, size):
    """coerce_reg_to_size(): the low `size` bytes of a scalar."""
    mask = (1 << (size * 8)) - 1
    r.var = T.cast(r.var, size)
    if (r.umin & ~mask) == (r.umax & ~mask):
        r.umin, r.umax = r.umin & mask, r.umax & mask
    else:
        r.umin, r.umax = 0, mask
    r.smin, r.smax = r.umin, r.umax
    if size < 4:
        r.s32min, r.s32max, r.u32min, r.u32max = S32_MIN, S32_MAX, 0, M32
    r.sync()


def scalar_neg(d, alu32):
    z = type(d)(d.type)
    z.known(0)
    z.exact = d.exact
    scalar_alu(z, d, SUB, alu32)
    for k in ("var", "smin", "smax", "umin", "umax", "s32min", "s32max", "u32min", "u32max", "exact"):
        setattr(d, k, getattr(z, k))


# ---------------------------------------------------------------- branches
def _view(r, is32):
    """(umin, umax, smin, smax) of the part a jump compares."""
    if is32:
        return r.u32min, r.u32max, r.s32min, r.s32max
    return r.umin, r.umax, r.smin, r.smax


def branch_taken(a, b, op, is32):
    """is_scalar_branch_taken(): 1, 0 or None (either way)."""
    amin, amax, asmin, asmax = _view(a, is32)
    bmin, bmax, bsmin, bsmax = _view(b, is32)
    ta = T.subreg(a.var) if is32 else a.var
    tb = T.subreg(b.var) if is32 else b.var
    if op == JEQ:
        if T.is_const(ta) and T.is_const(tb):
            return int(ta[0] == tb[0])
        if amin > bmax or amax < bmin or asmin > bsmax or asmax < bsmin:
            return 0
        if not is32 and (a.u32min > b.u32max or a.u32max < b.u32min or
                         a.s32min > b.s32max or a.s32max < b.s32min):
            return 0
        return None
    if op == JNE:
        r = branch_taken(a, b, JEQ, is32)
        return None if r is None else 1 - r
    if op == JSET:
        if (ta[0] & tb[0]):
            return 1
        if not ((ta[0] | ta[1]) & (tb[0] | tb[1])):
            return 0
        return None
    if op == JGT:
        return 1 if amin > bmax else 0 if amax <= bmin else None
    if op == JGE:
        return 1 if amin >= bmax else 0 if amax < bmin else None
    if op == JLT:
        return 1 if amax < bmin else 0 if amin >= bmax else None
    if op == JLE:
        return 1 if amax <= bmin else 0 if amin > bmax else None
    if op == JSGT:
        return 1 if asmin > bsmax else 0 if asmax <= bsmin else None
    if op == JSGE:
        return 1 if asmin >= bsmax else 0 if asmax < bsmin else None
    if op == JSLT:
        return 1 if asmax < bsmin else 0 if asmin >= bsmax else None
    if op == JSLE:
        return 1 if asmax <= bsmin else 0 if asmin > bsmax else None
    return None


# op -> (the bound raised on the greater side, the bound lowered on the lesser, strict, a is the greater)
ORDER = {JGE: ("umin", "umax", 0, True), JGT: ("umin", "umax", 1, True), JLE: ("umin", "umax", 0, False),
         JLT: ("umin", "umax", 1, False), JSGE: ("smin", "smax", 0, True), JSGT: ("smin", "smax", 1, True),
         JSLE: ("smin", "smax", 0, False), JSLT: ("smin", "smax", 1, False)}

# rev_opcode(): the negation; flip_opcode(): the same test with the operands swapped
FLIP = {JEQ: JNE, JNE: JEQ, JGT: JLE, JLE: JGT, JGE: JLT, JLT: JGE, JSGT: JSLE, JSLE: JSGT, JSGE: JSLT,
        JSLT: JSGE}
SWAP = {JEQ: JEQ, JNE: JNE, JSET: JSET, JGT: JLT, JLT: JGT, JGE: JLE, JLE: JGE, JSGT: JSLT, JSLT: JSGT,
        JSGE: JSLE, JSLE: JSGE}


def _set(r, is32, umin=None, umax=None, smin=None, smax=None):
    names = ("u32min", "u32max", "s32min", "s32max") if is32 else ("umin", "umax", "smin", "smax")
    for name, v, pick in zip(names, (umin, umax, smin, smax), (max, min, max, min)):
        if v is not None:
            setattr(r, name, pick(getattr(r, name), v))


def refine(a, b, op, is32):
    """regs_refine_cond_op(): a op b holds; narrow both (in place)."""
    amin, amax, asmin, asmax = _view(a, is32)
    bmin, bmax, bsmin, bsmax = _view(b, is32)
    if op == JEQ:
        lo, hi, slo, shi = max(amin, bmin), min(amax, bmax), max(asmin, bsmin), min(asmax, bsmax)
        for r in (a, b):
            _set(r, is32, lo, hi, slo, shi)
            if is32:
                r.var = T.with_subreg(r.var, T.intersect(T.subreg(a.var), T.subreg(b.var)))
            else:
                r.var = T.intersect(a.var, b.var)
        if not is32:
            b.var = a.var
    elif op == JNE:
        # only a constant at an end of the other's range narrows it
        for x, y in ((a, b), (b, a)):
            yt = T.subreg(y.var) if is32 else y.var
            if not T.is_const(yt):
                continue
            v = yt[0]
            xmin, xmax, xsmin, xsmax = _view(x, is32)
            sv = s32(v) if is32 else s64(v)
            if xmin == v:
                _set(x, is32, umin=v + 1)
            elif xmax == v:
                _set(x, is32, umax=v - 1)
            if xsmin == sv:
                _set(x, is32, smin=sv + 1)
            elif xsmax == sv:
                _set(x, is32, smax=sv - 1)
    elif op == JSET:
        bt = T.subreg(b.var) if is32 else b.var
        if T.is_const(bt) and bt[0] and not (bt[0] & (bt[0] - 1)):
            a.var = T.or_(a.var, (bt[0], 0))
    elif op in ORDER:
        # a >= b: a's minimum is at least b's, b's maximum at most a's (strict: by one more)
        lo, hi, strict, a_greater = ORDER[op]
        view = {"u": (amin, amax, bmin, bmax), "s": (asmin, asmax, bsmin, bsmax)}[lo[0]]
        a_lo, a_hi, b_lo, b_hi = view
        big, small = (a, b) if a_greater else (b, a)
        big_lo = b_lo if a_greater else a_lo
        small_hi = a_hi if a_greater else b_hi
        _set(big, is32, **{lo: big_lo + strict})
        _set(small, is32, **{hi: small_hi - strict})
    for r in (a, b):
        r.sync()


def refine_not(a, b, op, is32):
    """The branch where `a op b` does not hold."""
    if op == JSET:
        bt = T.subreg(b.var) if is32 else b.var
        if T.is_const(bt):
            # the tested bits are clear (in the low half only, for JMP32)
            keep = (~bt[0] & M32) | (M64 & ~M32) if is32 else ~bt[0] & M64
            a.var = T.and_(a.var, (keep, 0))
            a.sync()
        return
    refine(a, b, FLIP[op], is32)
