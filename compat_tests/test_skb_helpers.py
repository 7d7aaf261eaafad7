"""Legacy packet loads and packet helpers on the kernel and through bpfshim
(both engines, and as uid 65534): LD_ABS / LD_IND (big-endian loads from
skb->data, SKF_NET_OFF / SKF_LL_OFF, out of the packet the program returns
0), bpf_csum_diff (the folded sum, any sizes), bpf_csum_update,
bpf_skb_vlan_push / bpf_skb_vlan_pop (the __sk_buff vlan fields the program
reads, the packet in data_out).

Each case is a small hand-assembled socket filter or tc program run with
BPF_PROG_TEST_RUN on a packet (progs_gen.py's batch runner, one process per
backend). Compared: load errno and the log's last line, test errno, retval,
data_out.
"""
import os
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402
from progs_gen import LD, LDX, ST, STX, ALU64, JMP, MEM, DW, W, H, B, MOV, ADD, K, X, CALL, EXIT  # noqa: E402
from compat_tests.env import kernel_bpf_reason, unpriv_reason  # noqa: E402

SOCKET_FILTER, SCHED_CLS = 1, 3
ABS, IND = 0x20, 0x40
SKF_NET_OFF, SKF_LL_OFF = -0x100000, -0x200000
F = dict(skb_vlan_push=18, skb_vlan_pop=19, csum_diff=28, csum_update=40)
MUL, XOR, LSH = 0x20, 0xA0, 0x60
# __sk_buff offsets
SKB_LEN, SKB_PROTOCOL, SKB_VLAN_PRESENT, SKB_VLAN_TCI, SKB_VLAN_PROTO = 0, 16, 20, 24, 28
PKT = bytes(range(0x10, 0x10 + 64))
IPV4_PKT = bytes(12) + b"\x08\x00" + bytes(range(0x40, 0x40 + 50))
VLAN_PKT = bytes(range(1, 13)) + b"\x81\x00\x20\x05" + b"\x86\xdd" + bytes(range(0x60, 0x60 + 30))


class P(G.Asm):
    def mov(self, dst, imm):
        self.emit(ALU64 | MOV | K, dst, 0, 0, imm)

    def movx(self, dst, src):
        self.emit(ALU64 | MOV | X, dst, src)

    def call(self, name):
        self.emit(JMP | CALL, 0, 0, 0, F[name])

    def fold(self):
        """r7 = r7 * 31 ^ r0: every value seen counts in retval."""
        self.emit(ALU64 | MUL | K, 7, 0, 0, 31)
        self.emit(ALU64 | XOR | X, 7, 0)

    def ret7(self):
        self.movx(0, 7)
        self.emit(JMP | EXIT)


def case(p, prog_type, data):
    return {"prog_type": prog_type, "insns": p.assemble().hex(), "maps": [], "data_in": data.hex()}


# ---------------------------------------------------------------- LD_ABS / LD_IND
SZ = {1: B, 2: H, 4: W}


def ld_case(loads, prog_type=SOCKET_FILTER, data=PKT):
    """loads: (mode, size, imm, index register value or None); each value
    folded into r7 (r1-r5 are clobbered by each load: the index is set
    again before each)."""
    p = P()
    p.movx(6, 1)
    p.mov(7, 1)
    for mode, size, imm, idx in loads:
        if mode == IND:
            p.ld64(8, idx)
            p.emit(LD | IND | SZ[size], 0, 8, 0, imm)
        else:
            p.emit(LD | ABS | SZ[size], 0, 0, 0, imm)
        p.fold()
    p.ret7()
    return case(p, prog_type, data)


def ld_cases():
    n = len(PKT) - 14          # a socket filter's skb->data is the network header
    c = {
        "ld_abs_bytes": ld_case([(ABS, 1, i, None) for i in (0, 1, 7, n - 1)]),
        "ld_abs_half_word": ld_case([(ABS, 2, 0, None), (ABS, 2, 3, None), (ABS, 4, 0, None), (ABS, 4, n - 4, None)]),
        "ld_abs_past_end": ld_case([(ABS, 1, 0, None), (ABS, 4, n - 3, None), (ABS, 1, 2, None)]),
        "ld_abs_at_end": ld_case([(ABS, 1, n, None)]),
        "ld_abs_huge": ld_case([(ABS, 4, 0x7FFFFFFF, None)]),
        "ld_abs_net_off": ld_case([(ABS, 1, SKF_NET_OFF, None), (ABS, 4, SKF_NET_OFF + 5, None),
                                   (ABS, 2, SKF_NET_OFF + n - 2, None)]),
        "ld_abs_net_off_past_end": ld_case([(ABS, 2, SKF_NET_OFF + n - 1, None)]),
        "ld_abs_ll_off": ld_case([(ABS, 4, SKF_LL_OFF, None), (ABS, 2, SKF_LL_OFF + 12, None),
                                  (ABS, 1, SKF_LL_OFF + len(PKT) - 1, None)]),
        "ld_abs_ll_off_past_end": ld_case([(ABS, 1, SKF_LL_OFF + len(PKT), None)]),
        "ld_abs_below_ll_off": ld_case([(ABS, 1, SKF_LL_OFF - 1, None)]),
        "ld_abs_negative": ld_case([(ABS, 1, -1, None)]),
        "ld_ind_bytes": ld_case([(IND, 1, 0, 3), (IND, 2, 4, 1), (IND, 4, -2, 10)]),
        "ld_ind_negative_index": ld_case([(IND, 1, 5, -3), (IND, 1, 0, -1)]),
        "ld_ind_wraps_to_int": ld_case([(IND, 1, 0, (1 << 32) + 2)]),
        "ld_ind_net_off": ld_case([(IND, 2, SKF_NET_OFF, 6), (IND, 1, 0, SKF_NET_OFF + 1)]),
        "ld_ind_past_end": ld_case([(IND, 4, 0, n - 2)]),
        "ld_abs_tc": ld_case([(ABS, 2, 12, None), (ABS, 4, 0, None), (ABS, 1, len(PKT) - 1, None),
                              (ABS, 1, SKF_NET_OFF, None), (ABS, 1, SKF_LL_OFF + 3, None)], SCHED_CLS),
        "ld_abs_tc_past_end": ld_case([(ABS, 2, 0, None), (ABS, 1, len(PKT), None)], SCHED_CLS),
    }
    # r6 must be the ctx, and only socket filters and tc have LD_ABS
    p = P()
    p.mov(6, 0)
    p.emit(LD | ABS | B, 0, 0, 0, 0)
    p.emit(JMP | EXIT)
    c["misuse_ld_abs_r6_not_ctx"] = case(p, SOCKET_FILTER, PKT)
    p = P()
    p.movx(6, 1)
    p.emit(LD | ABS | B, 0, 0, 0, 0)
    p.emit(JMP | EXIT)
    c["misuse_ld_abs_xdp"] = case(p, 6, PKT)
    return c


# ---------------------------------------------------------------- bpf_csum_diff / csum_update
def csum_case(from_bytes, to_bytes, seed=0, from_size=None, to_size=None, at=(-256, -128), null=(), prog_type=SCHED_CLS):
    """bpf_csum_diff(fp+at[0], from_size, fp+at[1], to_size, seed) with the
    buffers on the stack (an odd offset tests an odd address); null: the
    arguments passed as NULL."""
    p = P()
    p.movx(6, 1)
    for base, data in zip(at, (from_bytes, to_bytes)):
        for i, v in enumerate(data):
            p.emit(ST | MEM | B, 10, 0, base + i, v)
    for r, base, data, size in ((1, at[0], from_bytes, from_size), (3, at[1], to_bytes, to_size)):
        if r in null:
            p.mov(r, 0)
        else:
            p.movx(r, 10)
            p.emit(ALU64 | ADD | K, r, 0, 0, base)
        p.mov(r + 1, len(data) if size is None else size)
    p.ld64(5, seed)
    p.call("csum_diff")
    p.movx(7, 0)
    p.emit(ALU64 | 0x70 | K, 0, 0, 0, 32)      # r0 >>= 32: the high half counts too
    p.fold()
    p.ret7()
    return case(p, prog_type, PKT)


def csum_cases():
    hdr = bytes.fromhex("4500003c1c4640004006b1e6ac100a63ac100a0c")
    hdr2 = bytes.fromhex("4500003c1c4640004006b1e6ac100a63c0a80001")
    ones = b"\xff" * 16
    c = {
        "csum_diff_push": csum_case(b"", hdr),
        "csum_diff_pull": csum_case(hdr, b"", seed=0x1234),
        "csum_diff_diff": csum_case(hdr, hdr2),
        "csum_diff_same": csum_case(hdr, hdr),
        "csum_diff_seeded": csum_case(b"\x01\x02\x03\x04", b"\xa0\xb0\xc0\xd0\xe0\xf0\x00\x11", seed=0xFFFFFFFF),
        "csum_diff_big_seed": csum_case(b"", b"\x12\x34\x56\x78", seed=0xDEADBEEFCAFEF00D),
        "csum_diff_ones": csum_case(ones, ones[:8], seed=0xFFFF),
        "csum_diff_carry": csum_case(b"", ones + ones[:4], seed=0xFFFFFFFF),
        "csum_diff_odd_address": csum_case(hdr, hdr2, at=(-255, -127)),
        "csum_diff_odd_address_to": csum_case(b"", bytes(range(200, 236)), at=(-256, -101), seed=7),
        "csum_diff_long": csum_case(bytes(range(100)), bytes(range(7, 107)), at=(-512, -256)),
        "csum_diff_zero_sizes": csum_case(b"", b"", seed=0x55),
        "csum_diff_null_zero": csum_case(b"", b"\x01\x00\x00\x02", null=(1,), seed=3),
        "csum_diff_size_not_4": csum_case(b"\x01\x02\x03", b"\x01\x02\x03\x04"),
        "csum_diff_to_size_not_4": csum_case(b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05\x06"),
        "csum_diff_odd_sizes_odd_address": csum_case(bytes(range(9, 22)), bytes(range(40, 47)), at=(-255, -127),
                                                     seed=0x10001),
        "csum_diff_xdp": csum_case(hdr, hdr2, prog_type=6),
        "misuse_csum_diff_socket_filter": csum_case(hdr, hdr2, prog_type=SOCKET_FILTER),
        "misuse_csum_diff_null_size": csum_case(b"", b"\x01\x00\x00\x02", null=(1,), from_size=4),
    }
    p = P()
    p.movx(1, 1)
    p.mov(2, 0x1234)
    p.call("csum_update")
    p.movx(7, 0)
    p.ret7()
    c["csum_update"] = case(p, SCHED_CLS, PKT)
    return c


# ---------------------------------------------------------------- VLAN
def vlan_case(ops, data=VLAN_PKT, ld_after=True):
    """ops: ("push", proto, tci) / ("pop",); after each, its return value and
    the skb's vlan_present, vlan_tci, vlan_proto, protocol and len folded
    into r7 (and the first bytes of the packet by LD_ABS)."""
    p = P()
    p.movx(6, 1)
    p.mov(7, 1)
    for op in ops:
        p.movx(1, 6)
        if op[0] == "push":
            p.mov(2, op[1])
            p.mov(3, op[2])
            p.call("skb_vlan_push")
        else:
            p.call("skb_vlan_pop")
        p.fold()
        for off in (SKB_VLAN_PRESENT, SKB_VLAN_TCI, SKB_VLAN_PROTO, SKB_PROTOCOL, SKB_LEN):
            p.emit(LDX | MEM | W, 0, 6, off)
            p.fold()
        if ld_after:
            p.emit(LD | ABS | W, 0, 0, 0, 12)
            p.fold()
    p.ret7()
    return case(p, SCHED_CLS, data)


def vlan_cases():
    q, ad = 0x0081, 0xA888        # htons(ETH_P_8021Q), htons(ETH_P_8021AD)
    return {
        "vlan_push_once": vlan_case([("push", q, 5)]),
        "vlan_push_twice": vlan_case([("push", q, 5), ("push", ad, 0x1007)]),
        "vlan_push_three": vlan_case([("push", q, 1), ("push", q, 2), ("push", ad, 3)], data=PKT),
        "vlan_push_other_proto": vlan_case([("push", 0x1234, 9), ("push", 0, 0xFFFF)]),
        "vlan_pop_untagged": vlan_case([("pop",)], data=PKT),
        "vlan_pop_in_packet": vlan_case([("pop",)]),
        "vlan_pop_accel": vlan_case([("push", q, 5), ("pop",)], data=PKT),
        "vlan_push_pop_all": vlan_case([("push", q, 5), ("push", ad, 6), ("push", q, 7), ("pop",), ("pop",),
                                        ("pop",), ("pop",), ("pop",)]),
        "vlan_pop_short": vlan_case([("pop",)], data=VLAN_PKT[:16]),
        "vlan_pop_encap_8023": vlan_case([("pop",)], data=VLAN_PKT[:16] + b"\x00\x40\xff\xff" + bytes(10)),
        "vlan_pop_encap_8022": vlan_case([("pop",)], data=VLAN_PKT[:16] + b"\x00\x40\x12\x34" + bytes(10)),
        "vlan_push_ipv4": vlan_case([("push", q, 0x0123), ("push", q, 0x0456)], data=IPV4_PKT),
        "misuse_vlan_push_socket_filter": dict(vlan_case([("push", q, 5)], ld_after=False),
                                               prog_type=SOCKET_FILTER),
    }


def cases():
    c = {}
    c.update(ld_cases())
    c.update(csum_cases())
    c.update(vlan_cases())
    return c


# ---------------------------------------------------------------- pytest side
CASES = cases()
NAMES = sorted(CASES)
BACKENDS = ["interp", "aot", "interp@65534", "aot@65534"]
_results = {}


def _side(backend):
    if backend not in _results:
        progs = [CASES[n] for n in NAMES]
        if backend is None:
            out = G.run_backend(progs)
        else:
            engine, _, who = backend.partition("@")
            out = G.run_backend(progs, shim=G.SHIM_LIB, engine=engine, as_nobody=bool(who))
        for r in out:   # the verifier's words for a reject: its last line
            log = r.pop("log", None)
            if log is not None:
                lines = [x for x in log.splitlines() if x.strip() and not x.startswith("processed ")]
                r["log_last"] = lines[-1] if lines else ""
        _results[backend] = dict(zip(NAMES, out))
    return _results[backend]


def _need(backend):
    why = kernel_bpf_reason()
    if why:
        pytest.skip(why)
    if not os.path.exists(G.SHIM_LIB):
        pytest.skip("libbpfshim.so not built")
    if backend and "@" in backend and unpriv_reason():
        pytest.skip(unpriv_reason())


def test_kernel_runs_the_cases():
    """The cases load on the kernel, the misuse cases do not."""
    _need(None)
    res = _side(None)
    bad = {n: r for n, r in res.items() if bool(r.get("load_errno")) != n.startswith("misuse_") or "exception" in r}
    assert not bad, bad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_skb_matches_kernel(name, backend):
    _need(backend)
    want = _side(None)[name]
    got = _side(backend)[name]
    assert got == want, f"{name} on {backend}:\n kernel  {want}\n bpfshim {got}"
