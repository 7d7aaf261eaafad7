"""Register states (struct bpf_reg_state): a type, a fixed offset and, for
scalars and the variable part of pointers, a tnum with signed/unsigned 64-
and 32-bit bounds kept consistent as reg_bounds_sync() keeps them.

`exact` is bpfshim's own: False when what is known of a value is less than
the kernel would know (an operation whose bounds the kernel computes more
precisely than this model does). The verifier does not reject on a path
where such a value decided anything: it cannot be sure the kernel would.
"""
from . import tnum as T

M64, M32 = T.M64, T.M32
S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
MAX_VAR_OFF = 1 << 29            # BPF_MAX_VAR_OFF

# enum bpf_reg_type, by the names reg_type_str() prints
NOT_INIT, SCALAR = "?", "scalar"
CTX, MAP_PTR, MAP_VALUE, MAP_KEY, STACK = "ctx", "map_ptr", "map_value", "map_key", "fp"
PACKET, PACKET_META, PACKET_END, MEM, RINGBUF_MEM = "pkt", "pkt_meta", "pkt_end", "mem", "ringbuf_mem"
FUNC = "func"                    # PTR_TO_FUNC: off is the callback's first insn
SOCK_COMMON = "sock_common"      # PTR_TO_SOCK_COMMON: __sk_buff->sk (struct bpf_sock's common part)
SOCKET, TCP_SOCK = "sock", "tcp_sock"   # PTR_TO_SOCKET (struct bpf_sock), PTR_TO_TCP_SOCK (struct bpf_tcp_sock)
# type_is_sk_pointer(): read-only views of a socket, no arithmetic
SK_POINTERS = (SOCK_COMMON, SOCKET, TCP_SOCK)


class Unmodelled(Exception):
    """do_check cannot give the kernel's verdict for this program."""


def s64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def s32(v):
    v &= M32
    return v - (1 << 32) if v >> 31 else v


class Reg:
    __slots__ = ("type", "off", "var", "smin", "smax", "umin", "umax", "s32min", "s32max", "u32min", "u32max",
                 "id", "ref", "map", "range", "size", "null", "exact", "frame")

    def __init__(self, type=NOT_INIT):
        self.type = type
        self.off = 0
        self.id = 0
        self.ref = 0
        self.map = None
        self.range = 0
        self.size = 0
        self.null = False        # PTR_MAYBE_NULL
        self.exact = True
        self.frame = 0
        self.unknown()

    def copy(self):
        r = Reg.__new__(Reg)
        r.type, r.off, r.var, r.id, r.ref, r.map, r.range, r.size = \
            self.type, self.off, self.var, self.id, self.ref, self.map, self.range, self.size
        r.smin, r.smax, r.umin, r.umax = self.smin, self.smax, self.umin, self.umax
        r.s32min, r.s32max, r.u32min, r.u32max = self.s32min, self.s32max, self.u32min, self.u32max
        r.null, r.exact, r.frame = self.null, self.exact, self.frame
        return r

    def key(self):
        return tuple(getattr(self, k) for k in Reg.__slots__ if k != "map") + (id(self.map),)

    # ---- __mark_reg_unknown / __mark_reg_known ----
    def unknown(self):
        self.var = T.UNKNOWN
        self.smin, self.smax, self.umin, self.umax = S64_MIN, S64_MAX, 0, M64
        self.s32min, self.s32max, self.u32min, self.u32max = S32_MIN, S32_MAX, 0, M32

    def known(self, v):
        v &= M64
        self.var = (v, 0)
        self.smin = self.smax = s64(v)
        self.umin = self.umax = v
        self.s32min = self.s32max = s32(v)
        self.u32min = self.u32max = v & M32

    def is_const(self):
        return self.var[1] == 0

    def is_ptr(self):
        return self.type not in (SCALAR, NOT_INIT)

    def type_str(self):
        return self.type + ("_or_null" if self.null else "")

    # ---- reg_bounds_sync() ----
    def update_bounds(self):
        v, m = T.subreg(self.var)
        self.s32min = max(self.s32min, s32(v | (m & (1 << 31))))
        self.s32max = min(self.s32max, s32(v | (m & S32_MAX)))
        self.u32min = max(self.u32min, v)
        self.u32max = min(self.u32max, v | m)
        v, m = self.var
        self.smin = max(self.smin, s64(v | (m & (1 << 63))))
        self.smax = min(self.smax, s64(v | (m & S64_MAX)))
        self.umin = max(self.umin, v)
        self.umax = min(self.umax, v | m)

    def deduce_bounds(self):
        # the signed and unsigned ranges agree where the sign is known (32, then 64 bits)
        self._deduce("s32min", "s32max", "u32min", "u32max", s32, M32)
        self._deduce("smin", "smax", "umin", "umax", s64, M64)
        # the 64-bit range within one 2^32 block: the halves bound each other
        if (self.umin >> 32) == (self.umax >> 32):
            self.umin = max(self.umin, (self.umin & ~M32) | self.u32min)
            self.umax = min(self.umax, (self.umax & ~M32) | self.u32max)
        if (self.smin >> 32) == (self.smax >> 32):
            self.smin = max(self.smin, (self.smin & ~M32) | self.u32min)
            self.smax = min(self.smax, (self.smax & ~M32) | self.u32max)
        if (self.umin >> 32) == (self.umax >> 32):
            self.u32min = max(self.u32min, self.umin & M32)
            self.u32max = min(self.u32max, self.umax & M32)
            if s32(self.umin) <= s32(self.umax):
                self.s32min = max(self.s32min, s32(self.umin))
                self.s32max = min(self.s32max, s32(self.umax))

    def _deduce(self, smin_n, smax_n, umin_n, umax_n, signed, mask):
        smin, smax, umin, umax = (getattr(self, n) for n in (smin_n, smax_n, umin_n, umax_n))
        if smin >= 0 or smax < 0:
            umin, umax = max(smin & mask, umin), min(smax & mask, umax)
            smin, smax = signed(umin), signed(umax)
        elif signed(umax) >= 0:
            smin = umin
            umax = min(smax & mask, umax)
            smax = signed(umax)
        elif signed(umin) < 0:
            umin = max(smin & mask, umin)
            smin, smax = signed(umin), signed(umax)
        for n, v in zip((smin_n, smax_n, umin_n, umax_n), (smin, smax, umin, umax)):
            setattr(self, n, v)

    def bound_offset(self):
        v64 = T.intersect(self.var, T.tnum_range(self.umin, self.umax))
        v32 = T.intersect(T.subreg(self.var), T.tnum_range(self.u32min, self.u32max))
        self.var = T.or_(T.clear_subreg(v64), v32)

    def sync(self):
        self.update_bounds()
        self.deduce_bounds()
        self.bound_offset()
        self.update_bounds()

    def bounds_ok(self):
        return self.smin <= self.smax and self.umin <= self.umax and \
            self.s32min <= self.s32max and self.u32min <= self.u32max

    # ---- zext_32_to_64() ----
    def zext32(self):
        self.var = T.subreg(self.var)
        self.umin, self.umax = self.u32min, self.u32max
        if 0 <= self.s32min and 0 <= self.s32max:
            self.smin, self.smax = self.s32min, self.s32max
        else:
            self.smin, self.smax = 0, M32

    def combine_64_into_32(self):
        """__reg_combine_64_into_32(): the 32-bit bounds of a 64-bit result."""
        self.s32min, self.s32max, self.u32min, self.u32max = S32_MIN, S32_MAX, 0, M32
        if S32_MIN <= self.smin and self.smax <= S32_MAX:
            self.s32min, self.s32max = self.smin, self.smax
        if self.umax <= M32:
            self.u32min, self.u32max = self.umin, self.umax
        self.sync()

    def __repr__(self):
        if self.type == NOT_INIT:
            return "?"
        return fmt_reg(self)


def fmt_reg(r):
    """print_verifier_state()'s form of one register (enough of it for the log)."""
    if r.type == SCALAR:
        if r.is_const():
            return str(s64(r.var[0]))
        return "scalar()"
    s = r.type_str() + "("
    if r.off:
        s += f"off={r.off}"
    return s + ")"


def scalar_const(v):
    r = Reg(SCALAR)
    r.known(v)
    return r


def scalar_unknown(exact=True):
    r = Reg(SCALAR)
    r.exact = exact
    return r
