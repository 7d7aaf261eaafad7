"""Tristate numbers (kernel/bpf/tnum.c): what is known of a 64-bit value, bit
by bit. A tnum is (value, mask): a bit set in mask is unknown, else it is the
bit of value. Plain tuples, for speed."""
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

UNKNOWN = (0, M64)


def const(v):
    return (v & M64, 0)


def is_const(t):
    return t[1] == 0


def tnum_range(lo, hi):
    """The tnum of every u64 in [lo, hi]."""
    chi = lo ^ hi
    bits = chi.bit_length()
    if bits > 63:
        return UNKNOWN
    delta = (1 << bits) - 1
    return (lo & ~delta & M64, delta)


def lshift(a, s):
    return ((a[0] << s) & M64, (a[1] << s) & M64)


def rshift(a, s):
    return (a[0] >> s, a[1] >> s)


def _s64(v):
    return v - (1 << 64) if v & (1 << 63) else v


def arshift(a, s, bits=64):
    if bits == 32:
        v, m = a[0] & M32, a[1] & M32
        v = (v - (1 << 32) if v & (1 << 31) else v) >> s
        m = (m - (1 << 32) if m & (1 << 31) else m) >> s
        return (v & M32, m & M32)
    return ((_s64(a[0]) >> s) & M64, (_s64(a[1]) >> s) & M64)


def add(a, b):
    sm = (a[1] + b[1]) & M64
    sv = (a[0] + b[0]) & M64
    sigma = (sm + sv) & M64
    chi = sigma ^ sv
    mu = chi | a[1] | b[1]
    return (sv & ~mu & M64, mu)


def sub(a, b):
    dv = (a[0] - b[0]) & M64
    alpha = (dv + a[1]) & M64
    beta = (dv - b[1]) & M64
    chi = alpha ^ beta
    mu = chi | a[1] | b[1]
    return (dv & ~mu & M64, mu)


def neg(a):
    return sub((0, 0), a)


def and_(a, b):
    alpha = a[0] | a[1]
    beta = b[0] | b[1]
    v = a[0] & b[0]
    return (v, alpha & beta & ~v & M64)


def or_(a, b):
    v = a[0] | b[0]
    mu = a[1] | b[1]
    return (v, mu & ~v & M64)


def xor(a, b):
    v = a[0] ^ b[0]
    mu = a[1] | b[1]
    return (v & ~mu & M64, mu)


def mul(a, b):
    """tnum_mul(): the long multiplication of the kernel, bit by bit."""
    acc_v = (a[0] * b[0]) & M64
    acc_m = (0, 0)
    av, am = a
    while av or am:
        if av & 1:
            acc_m = add(acc_m, (0, b[1]))
        elif am & 1:
            acc_m = add(acc_m, (0, b[0] | b[1]))
        av, am = av >> 1, am >> 1
        b = lshift(b, 1)
    return add((acc_v, 0), acc_m)


def intersect(a, b):
    v = a[0] | b[0]
    mu = a[1] & b[1]
    return (v & ~mu & M64, mu)


def cast(a, size):
    """tnum_cast(): the low `size` bytes."""
    m = (1 << (size * 8)) - 1
    return (a[0] & m, a[1] & m)


def is_aligned(a, size):
    if not size:
        return True
    return not ((a[0] | a[1]) & (size - 1))


def tnum_in(a, b):
    """b is a subset of a."""
    if b[1] & ~a[1]:
        return False
    return a[0] == (b[0] & ~a[1])


def subreg(a):
    return cast(a, 4)


def clear_subreg(a):
    return lshift(rshift(a, 32), 32)


def with_subreg(reg, sub):
    return or_(clear_subreg(reg), subreg(sub))


def const_subreg(a, v):
    return with_subreg(a, const(v & M32))


def sbin(a):
    """tnum_sbin(): the kernel's printed form, for the log."""
    return f"({a[0]:#x}; {a[1]:#x})"
