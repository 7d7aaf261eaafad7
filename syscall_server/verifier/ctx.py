"""What a program type's context and exit are (kernel/trace/bpf_trace.c,
net/core/filter.c, kernel/bpf/cgroup.c, kernel/bpf/verifier.c): what a load
or store at (off, size) through PTR_TO_CTX may do, as its is_valid_access()
says, the pointer type a load gives (info->reg_type), which program types
may write packet data (may_access_direct_pkt_data), and the range R0 must
be in at exit (check_return_code).

valid() answers False (the kernel's "invalid bpf_context access"), True (a
scalar) or the register type the load gives. A field that loads a socket
pointer is not modelled (Unmodelled: the caller gives up on the program).
"""
from .regs import PACKET, PACKET_END, PACKET_META, SOCK_COMMON, Unmodelled

# enum bpf_prog_type
(SOCKET_FILTER, KPROBE, SCHED_CLS, SCHED_ACT, TRACEPOINT, XDP, PERF_EVENT, CGROUP_SKB, CGROUP_SOCK, LWT_IN,
 LWT_OUT, LWT_XMIT, SOCK_OPS, SK_SKB, CGROUP_DEVICE, SK_MSG, RAW_TRACEPOINT, CGROUP_SOCK_ADDR) = range(1, 19)
CGROUP_SYSCTL, CGROUP_SOCKOPT, SK_LOOKUP, SYSCALL = 23, 25, 30, 31

PT_REGS_SIZE = 168             # sizeof(struct pt_regs), x86-64
PERF_EVENT_DATA_SIZE = 184     # sizeof(struct bpf_perf_event_data)
PERF_MAX_TRACE_SIZE = 2048

# enum bpf_attach_type, the ones a context's rules name
(INET_SOCK_CREATE, INET4_BIND, INET6_BIND, INET4_CONNECT, INET6_CONNECT, INET4_POST_BIND, INET6_POST_BIND,
 UDP4_SENDMSG, UDP6_SENDMSG) = 2, 8, 9, 10, 11, 12, 13, 14, 15
UDP4_RECVMSG, UDP6_RECVMSG, GETSOCKOPT, SETSOCKOPT = 19, 20, 21, 22
INET4_GETPEERNAME, INET6_GETPEERNAME, INET4_GETSOCKNAME, INET6_GETSOCKNAME = 29, 30, 31, 32
XDP_DEVMAP, INET_SOCK_RELEASE = 33, 34
INET_EGRESS, UNIX_RECVMSG, UNIX_GETPEERNAME, UNIX_GETSOCKNAME = 1, 51, 52, 53

# __sk_buff fields by program type (the *_is_valid_access() before
# bpf_skb_is_valid_access): refused ones, writable ones. "sock" is the
# family..local_port range.
SKB_SOCK = ("family", "remote_ip4", "local_ip4", "remote_ip6", "local_ip6", "remote_port", "local_port")
SKB_RULES = {
    SOCKET_FILTER: ({"tc_classid", "data", "data_meta", "data_end", *SKB_SOCK, "tstamp", "wire_len", "hwtstamp"},
                    {"cb"}),
    SCHED_CLS: (set(SKB_SOCK), {"mark", "tc_index", "priority", "tc_classid", "cb", "tstamp", "queue_mapping"}),
    CGROUP_SKB: ({"tc_classid", "data_meta", "wire_len"}, {"mark", "priority", "cb", "tstamp"}),
    LWT_IN: ({"tc_classid", *SKB_SOCK, "data_meta", "tstamp", "wire_len", "hwtstamp"}, {"mark", "priority", "cb"}),
    SK_SKB: ({"tc_classid", "data_meta", "tstamp", "wire_len", "hwtstamp", "mark"}, {"tc_index", "priority"}),
}
SKB_RULES[SCHED_ACT] = SKB_RULES[SCHED_CLS]
SKB_RULES[LWT_OUT] = SKB_RULES[LWT_XMIT] = SKB_RULES[LWT_IN]
SKB_PTRS = {"data": PACKET, "data_end": PACKET_END, "data_meta": PACKET_META}

# may_access_direct_pkt_data(): the program types that may write packet data
PKT_WRITE = {SCHED_CLS, SCHED_ACT, XDP, LWT_XMIT, SK_SKB, SK_MSG, CGROUP_SOCKOPT}
# ... and those that may only read it (+ LWT_SEG6LOCAL, SK_REUSEPORT, FLOW_DISSECTOR)
PKT_READ = {LWT_IN, LWT_OUT, CGROUP_SKB, 19, 21, 22}


def helper_pkt_access(pt, proto_pkt_access):
    """may_access_direct_pkt_data() for a helper's argument: the helper's
    prototype says it may take packet memory (pkt_access), except for
    sockopt programs, whose optval any helper may take."""
    return pt == CGROUP_SOCKOPT or (pt in PKT_READ | PKT_WRITE and proto_pkt_access)

_FIELDS = {}


def fields(ffi, struct):
    """{offset: (size, name)} of a uapi struct, arrays by element."""
    f = _FIELDS.get(struct)
    if f is None:
        # filled, then published: loads verify concurrently (cmd_prog.py)
        f = {}
        t = ffi.typeof("struct " + struct)
        for name, fl in t.fields:
            if name is None:
                continue
            if fl.type.kind == "array":
                esz = ffi.sizeof(fl.type.item)
                for k in range(fl.type.length):
                    f[fl.offset + k * esz] = (esz, name)
            else:
                f[fl.offset] = (ffi.sizeof(fl.type), name)
        f[None] = ffi.sizeof(t)
        _FIELDS[struct] = f
    return f


def field_at(f, off):
    """(field offset, size, name) of the field holding byte off, or None (padding)."""
    for foff in range(off, off - 8, -1):
        e = f.get(foff)
        if e is not None:
            return (foff, e[0], e[1]) if off < foff + e[0] else None
    return None


def narrow_ok(size, default=4):
    """bpf_ctx_narrow_access_ok()."""
    return size <= default and not size & (size - 1)


class Ctx:
    def __init__(self, prog_type, expected_attach_type, ffi):
        if prog_type == CGROUP_SOCK and not expected_attach_type:
            expected_attach_type = INET_SOCK_CREATE     # bpf_prog_load_fixup_attach_type()
        self.pt, self.eat, self.ffi = prog_type, expected_attach_type, ffi

    def valid(self, off, size, kind):
        pt = self.pt
        if pt == KPROBE:
            return not (off < 0 or off >= PT_REGS_SIZE or kind != "read" or off % size or off + size > PT_REGS_SIZE)
        if pt == TRACEPOINT:
            return not (off < 8 or off >= PERF_MAX_TRACE_SIZE or kind != "read" or off % size)
        if pt == RAW_TRACEPOINT:
            return not (off < 0 or off >= 8 * 12 or kind != "read" or off % size)
        if pt == PERF_EVENT:
            if off < 0 or off >= PERF_EVENT_DATA_SIZE or kind != "read" or off % size:
                return False
            if off >= PT_REGS_SIZE:
                return size in (1, 2, 4, 8)     # sample_period, addr: narrow loads of u64
            return size == 8
        if pt == SYSCALL:
            return not (off < 0 or off >= 0xFFFF or off % size)
        if pt == XDP:
            return self.xdp(off, size, kind)
        if pt in SKB_RULES:
            return self.skb(off, size, kind)
        m = getattr(self, CTX_OF.get(pt, ""), None)
        if m is None:
            raise Unmodelled("program type")
        return m(off, size, kind)

    def _at(self, struct, off, size):
        f = fields(self.ffi, struct)
        if off < 0 or off >= f[None] or off % size:
            return None
        return field_at(f, off)

    def xdp(self, off, size, kind):
        ptrs = {0: PACKET, 4: PACKET_END, 8: PACKET_META}
        if kind == "write":
            return False
        if off == 20 and self.eat != XDP_DEVMAP:    # egress_ifindex
            return False
        if off < 0 or off >= fields(self.ffi, "xdp_md")[None] or off % size or size != 4:
            return False
        return ptrs.get(off, True)

    def skb(self, off, size, kind):
        deny, writable = SKB_RULES[self.pt]
        f = self._at("__sk_buff", off, size) if off >= 0 else None
        name = f[2] if f else None
        if name in deny or (kind == "write" and name not in writable):
            return False
        if name == "tstamp_type" and self.pt in (SCHED_CLS, SCHED_ACT):
            return size == 1 and off == f[0]
        # bpf_skb_is_valid_access()
        if f is None:
            return False
        name = f[2]
        if name == "cb":
            return off + size <= self.ffi.offsetof("struct __sk_buff", "cb") + 20
        if name in ("remote_ip6", "local_ip6", "remote_ip4", "local_ip4", "data", "data_meta", "data_end"):
            return size == 4 and SKB_PTRS.get(name, True)
        if name in ("flow_keys", "tstamp_type"):
            return False
        if name == "hwtstamp":
            return kind == "read" and size == 8
        if name == "tstamp":
            return size == 8
        if name == "sk":
            return kind == "read" and size == 8 and SOCK_COMMON     # PTR_TO_SOCK_COMMON_OR_NULL
        if kind == "write":
            return size == 4
        return narrow_ok(size)

    def sock_field(self, off, size):
        """bpf_sock_is_valid_access(): the field of struct bpf_sock, or None."""
        f = self._at("bpf_sock", off, size)
        if f is None:
            return None
        name = f[2]
        if name in ("state", "family", "type", "protocol", "src_port", "rx_queue_mapping", "src_ip4", "src_ip6",
                    "dst_ip4", "dst_ip6"):
            ok = off == f[0] or name in ("src_ip4", "src_ip6", "dst_ip4", "dst_ip6")
            ok = ok and narrow_ok(size)
        elif name == "dst_port":
            ok = narrow_ok(size, 4 if size == 4 else 2)
        else:
            ok = size == 4
        return name if ok else None

    def sock_common(self, off, size):
        """bpf_sock_common_is_valid_access(): not the fields of a full socket (type..priority)."""
        name = self.sock_field(off, size)
        return name is not None and name not in ("type", "protocol", "mark", "priority")

    def tcp_sock(self, off, size):
        """bpf_tcp_sock_is_valid_access(): up to bytes_acked, aligned, u64 counters read whole, the rest u32."""
        end = self.ffi.offsetof("struct bpf_tcp_sock", "bytes_acked") + 8
        f = self._at("bpf_tcp_sock", off, size) if 0 <= off < end else None
        return f is not None and f[0] == off and size == f[1]

    def bpf_sock(self, off, size, kind):
        """sock_filter_is_valid_access(): bpf_sock_is_valid_access(), then the attach type's fields."""
        name = self.sock_field(off, size)
        if name is None:
            return False
        if name in ("bound_dev_if", "mark", "priority"):
            return self.eat in (INET_SOCK_CREATE, INET_SOCK_RELEASE)
        if name == "src_ip4" and self.eat != INET4_POST_BIND:
            return False
        if name == "src_ip6" and self.eat != INET6_POST_BIND:
            return False
        if name == "src_port" and self.eat not in (INET4_POST_BIND, INET6_POST_BIND):
            return False
        return kind == "read"

    def sock_addr(self, off, size, kind):
        """sock_addr_is_valid_access()."""
        f = self._at("bpf_sock_addr", off, size)
        if f is None:
            return False
        name = f[2]
        eat = self.eat
        if name == "user_ip4" and eat not in (INET4_BIND, INET4_CONNECT, INET4_GETPEERNAME, INET4_GETSOCKNAME,
                                              UDP4_SENDMSG, UDP4_RECVMSG):
            return False
        if name == "user_ip6" and eat not in (INET6_BIND, INET6_CONNECT, INET6_GETPEERNAME, INET6_GETSOCKNAME,
                                              UDP6_SENDMSG, UDP6_RECVMSG):
            return False
        if name == "msg_src_ip4" and eat != UDP4_SENDMSG:
            return False
        if name == "msg_src_ip6" and eat != UDP6_SENDMSG:
            return False
        if name in ("user_ip4", "user_ip6", "msg_src_ip4", "msg_src_ip6", "user_port"):
            if self._wide_ok("bpf_sock_addr", off, size, ("user_ip6", "msg_src_ip6")):
                return True
            return narrow_ok(size) if kind == "read" else size == 4
        if name == "sk":
            if kind != "read" or size != 8:
                return False
            raise Unmodelled("bpf_sock_addr->sk")
        if name in ("user_family", "family", "type", "protocol"):
            return kind == "read" and size == 4
        return False

    def _wide_ok(self, struct, off, size, names):
        """bpf_ctx_wide_access_ok(): an aligned 8-byte access inside an array of u32."""
        if size != 8 or off % 8:
            return False
        for name in names:
            start = self.ffi.offsetof("struct " + struct, name)
            if start <= off and off + 8 <= start + 16:
                return True
        return False

    def sock_ops(self, off, size, kind):
        """sock_ops_is_valid_access()."""
        f = self._at("bpf_sock_ops", off, size)
        if f is None:
            return False
        name = f[2]
        if kind == "write":
            return name in ("reply", "sk_txhash") and off == f[0] and size == 4
        if name in ("bytes_received", "bytes_acked"):
            return size == 8
        if name in ("sk", "skb_data", "skb_data_end"):
            if size != 8:
                return False
            if name == "sk":
                raise Unmodelled("bpf_sock_ops->sk")
            return PACKET if name == "skb_data" else PACKET_END
        if name == "skb_tcp_flags":
            return narrow_ok(size)
        return size == 4

    def sk_msg(self, off, size, kind):
        """sk_msg_is_valid_access()."""
        if kind == "write" or off % size:
            return False
        f = self._at("sk_msg_md", off, size) if off >= 0 else None
        if f is None:
            return False
        name = f[2]
        if name in ("data", "data_end", "sk"):
            if size != 8:
                return False
            if name == "sk":
                raise Unmodelled("sk_msg_md->sk")
            return PACKET if name == "data" else PACKET_END
        return size == 4

    def sk_lookup(self, off, size, kind):
        """sk_lookup_is_valid_access()."""
        if kind != "read":
            return False
        if off < 0 or off >= fields(self.ffi, "bpf_sk_lookup")[None] or off % size:
            return False
        f = field_at(fields(self.ffi, "bpf_sk_lookup"), off)
        if f is None:
            # the zero padding after remote_port: narrow reads, for backward compatibility
            return narrow_ok(size, 2) and off < self.ffi.offsetof("struct bpf_sk_lookup", "local_ip4")
        name = f[2]
        if name in ("sk", "cookie"):
            if size != 8:
                return False
            raise Unmodelled("bpf_sk_lookup->sk")
        if name == "remote_port":
            return size == 4 or narrow_ok(size, 2)
        return narrow_ok(size)

    def sysctl(self, off, size, kind):
        """sysctl_is_valid_access()."""
        if off < 0 or off + size > fields(self.ffi, "bpf_sysctl")[None] or off % size:
            return False
        name = field_at(fields(self.ffi, "bpf_sysctl"), off)[2]
        if name == "write":
            return kind == "read" and narrow_ok(size)
        return narrow_ok(size) if kind == "read" else size == 4

    def sockopt(self, off, size, kind):
        """cg_sockopt_is_valid_access()."""
        f = self._at("bpf_sockopt", off, size)
        if f is None:
            return False
        foff, _fsize, name = f
        if kind == "write":
            if off != foff:
                return False
            if name == "retval":
                return size == 4 and self.eat == GETSOCKOPT
            if name in ("optname", "level"):
                return size == 4 and self.eat == SETSOCKOPT
            return name == "optlen" and size == 4
        if name in ("sk", "optval", "optval_end"):
            if size != 8:
                return False
            if name == "sk":
                raise Unmodelled("bpf_sockopt->sk")
            return PACKET if name == "optval" else PACKET_END
        if name == "retval":
            return size == 4 and self.eat == GETSOCKOPT
        return size == 4

    def cgroup_dev(self, off, size, kind):
        """cgroup_dev_is_valid_access()."""
        if kind == "write" or off < 0 or off + size > fields(self.ffi, "bpf_cgroup_dev_ctx")[None] or off % size:
            return False
        name = field_at(fields(self.ffi, "bpf_cgroup_dev_ctx"), off)[2]
        return narrow_ok(size) if name == "access_type" else size == 4


def retval_range(pt, eat):
    """check_return_code(): the (min, max) R0 must be in at the main
    program's exit, or None where any value goes."""
    if pt == CGROUP_SOCK_ADDR:
        if eat in (UDP4_RECVMSG, UDP6_RECVMSG, INET4_GETPEERNAME, INET6_GETPEERNAME, INET4_GETSOCKNAME,
                   INET6_GETSOCKNAME, UNIX_RECVMSG, UNIX_GETPEERNAME, UNIX_GETSOCKNAME):
            return 1, 1
        if eat in (INET4_BIND, INET6_BIND):
            return 0, 3
        return 0, 1
    if pt == CGROUP_SKB:
        return (0, 3) if eat == INET_EGRESS else (0, 1)
    if pt in (CGROUP_SOCK, SOCK_OPS, CGROUP_DEVICE, CGROUP_SYSCTL, CGROUP_SOCKOPT, SK_LOOKUP):
        return 0, 1         # SK_LOOKUP: SK_DROP, SK_PASS
    return None


CTX_OF = {CGROUP_SOCK: "bpf_sock", CGROUP_SOCK_ADDR: "sock_addr", SOCK_OPS: "sock_ops", SK_MSG: "sk_msg",
          SK_LOOKUP: "sk_lookup", CGROUP_SYSCTL: "sysctl", CGROUP_SOCKOPT: "sockopt", CGROUP_DEVICE: "cgroup_dev"}
MODELLED = {SOCKET_FILTER, KPROBE, SCHED_CLS, SCHED_ACT, TRACEPOINT, XDP, PERF_EVENT, RAW_TRACEPOINT, SYSCALL,
            *SKB_RULES, *CTX_OF}
