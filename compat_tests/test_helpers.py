"""eBPF helpers on the kernel and through bpfshim (both engines, and as uid
65534): bpf_snprintf, bpf_trace_printk / bpf_trace_vprintk (return values,
EINVAL, and the trace_pipe line), bpf_loop and bpf_for_each_map_elem
(callbacks), bpf_spin_lock, bpf_get_ns_current_pid_tgid, bpf_send_signal,
bpf_tail_call; and bpftrace's debugf() in `bpfshim trace-pipe`.

Each case is a small hand-assembled program run with BPF_PROG_TEST_RUN in a
child process per backend (this file run as a script: `python3
test_helpers.py run < cases.json` prints JSON; stdlib only, so that
/usr/bin/python3 runs it as uid 65534). Compared: load errno, test errno,
retval, ctx out, map contents, and what the process observed (signals, its
own pid for the pid helpers).
"""
import ctypes
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402
from progs_gen import insn, LD, LDX, ST, STX, ALU64, JMP, IMM, MEM, DW, W, MOV, ADD, K, X, CALL, EXIT, JEQ, JNE  # noqa: E402

SYSCALL, SOCKET_FILTER = G.BPF_PROG_TYPE_SYSCALL, G.BPF_PROG_TYPE_SOCKET_FILTER
SLEEPABLE = 1 << 4
BPF_F_RDONLY_PROG = 1 << 7
HASH, ARRAY, PROG_ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH = 1, 2, 3, 5, 6, 9, 10
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_FUNC = G.PSEUDO_MAP_FD, G.PSEUDO_MAP_VALUE, G.PSEUDO_FUNC
F = dict(map_lookup_elem=1, map_update_elem=2, map_delete_elem=3, trace_printk=6, tail_call=12,
         spin_lock=93, spin_unlock=94, send_signal=109, send_signal_thread=117, get_ns_current_pid_tgid=120,
         for_each_map_elem=164, snprintf=165, trace_vprintk=177, loop=181)
BPF_MAP_FREEZE, BPF_MAP_LOOKUP_ELEM, BPF_F_LOCK = 22, 1, 4
CTX_SIZE = 256


# ---------------------------------------------------------------- assembling
class P(G.Asm):
    """A program with the few idioms the cases need."""

    def mov(self, dst, imm):
        self.emit(ALU64 | MOV | K, dst, 0, 0, imm)

    def movx(self, dst, src):
        self.emit(ALU64 | MOV | X, dst, src)

    def add(self, dst, imm):
        self.emit(ALU64 | ADD | K, dst, 0, 0, imm)

    def call(self, name):
        self.emit(JMP | CALL, 0, 0, 0, F[name])

    def exit(self):
        self.emit(JMP | EXIT)

    def map_fd(self, dst, idx):
        self.emit(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, idx)
        self.emit(0)

    def map_value(self, dst, idx, off=0):
        self.emit(LD | IMM | DW, dst, PSEUDO_MAP_VALUE, 0, idx)
        self.emit(0, 0, 0, 0, off)

    def func(self, dst, label):
        self.items.append([LD | IMM | DW, dst, PSEUDO_FUNC, 0, 0, label, "imm"])
        self.emit(0)

    def stack_bytes(self, off, data):
        """data (padded to 8) at fp+off."""
        data = data + bytes(-len(data) % 8)
        for i in range(0, len(data), 8):
            self.ld64(1, struct.unpack_from("<Q", data, i)[0])
            self.emit(STX | MEM | DW, 10, 1, off + i)

    def stack_u64s(self, off, vals):
        self.stack_bytes(off, b"".join(struct.pack("<Q", v & (1 << 64) - 1) for v in vals))

    def zero_stack(self, off, n):
        for i in range(0, n, 8):
            self.emit(ST | MEM | DW, 10, 0, off + i, 0)

    def stack_to_ctx(self, ctx_reg, off, n, ctx_off=0):
        """n bytes from fp+off to ctx+ctx_off (helpers cannot write the ctx)."""
        for i in range(0, n, 8):
            self.emit(LDX | MEM | DW, 1, 10, off + i)
            self.emit(STX | MEM | DW, ctx_reg, 1, ctx_off + i)

    def lookup0(self, idx, fail_label, key=0):
        """r0 = &map[idx][key] (u32 key at fp-4), or jump to fail_label."""
        self.emit(ST | MEM | W, 10, 0, -4, key)
        self.map_fd(1, idx)
        self.movx(2, 10)
        self.add(2, -4)
        self.call("map_lookup_elem")
        self.jmp(JMP | JEQ | K, 0, 0, 0, fail_label)


def cmap(type_, key_size, value_size, max_entries, init=(), flags=0, freeze=False, btf=None):
    return {"type": type_, "key_size": key_size, "value_size": value_size, "max_entries": max_entries,
            "flags": flags, "init": [[k.hex(), v.hex()] for k, v in init], "freeze": freeze, "btf": btf}


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & (1 << 64) - 1)


def case(p, maps=(), prog_type=SYSCALL, ctx=b"", cb_args=2, **kw):
    """A case; a program with a callback (label "cb") gets the BTF func_info
    the kernel requires for it."""
    c = {"prog_type": prog_type, "insns": p.assemble().hex(), "maps": list(maps),
         "ctx_in": (ctx + bytes(CTX_SIZE - len(ctx))).hex()}
    if "cb" in p.labels:
        blob, ids = G.make_btf([("main", 1), ("cb" if cb_args == 2 else "cb_ptrs", cb_args)])
        c["btf"] = blob.hex()
        c["func_info"] = [[0, ids[0]], [p.labels["cb"], ids[1]]]
    c.update(kw)
    return c


def fmt_map(*strings):
    """A frozen read-only array whose value holds the strings at 64-byte
    slots (bpf_snprintf's format must be a constant string)."""
    v = b"".join(s + bytes(64 - len(s)) for s in strings)
    return cmap(ARRAY, 4, len(v), 1, [(u32(0), v)], flags=BPF_F_RDONLY_PROG, freeze=True)


# ---------------------------------------------------------------- cases
def snprintf_case(fmt, args, size=64, strs=()):
    """bpf_snprintf(ctx, size, fmt, args, 8 * len(args)); args given as
    ints or ("str", i): the address of strs[i] in the read-only map."""
    p = P()
    p.movx(6, 1)
    for i, a in enumerate(args):
        if isinstance(a, tuple):
            p.map_value(1, 0, 64 * (1 + a[1]))
            p.emit(STX | MEM | DW, 10, 1, -96 + 8 * i)
        else:
            p.ld64(1, a)
            p.emit(STX | MEM | DW, 10, 1, -96 + 8 * i)
    p.zero_stack(-200, 64)
    p.movx(1, 10)
    p.add(1, -200)
    p.mov(2, size)
    p.map_value(3, 0, 0)
    p.movx(4, 10)
    p.add(4, -96)
    p.mov(5, 8 * len(args))
    p.call("snprintf")
    p.movx(7, 0)
    p.stack_to_ctx(6, -200, 64)
    p.movx(0, 7)
    p.exit()
    return case(p, [fmt_map(fmt, *strs)])


def printk_case(fmt, args=(), fmt_size=None, vprintk=False, data_len=None):
    """bpf_trace_printk(fmt on the stack, fmt_size, a1, a2, a3) or
    bpf_trace_vprintk(fmt, fmt_size, args on the stack, data_len)."""
    p = P()
    fb = fmt + b"\0"
    flen = len(fb) + (-len(fb) % 8)
    p.stack_bytes(-flen, fb)
    if vprintk:
        p.stack_u64s(-flen - 8 * max(len(args), 1), list(args) or [0])
    p.movx(1, 10)
    p.add(1, -flen)
    p.mov(2, len(fb) if fmt_size is None else fmt_size)
    if vprintk:
        p.movx(3, 10)
        p.add(3, -flen - 8 * max(len(args), 1))
        p.mov(4, 8 * len(args) if data_len is None else data_len)
        p.call("trace_vprintk")
    else:
        for r, a in zip((3, 4, 5), list(args) + [0, 0, 0]):
            p.ld64(r, a)
        p.call("trace_printk")
    p.exit()
    return case(p)


def loop_case(n, stop_at=None, flags=0):
    """bpf_loop(n, cb, fp-8, flags): cb adds (i + 1) * 3 into *ctx, returns
    1 at i == stop_at; r0 and the sum go to ctx."""
    p = P()
    p.movx(6, 1)
    p.emit(ST | MEM | DW, 10, 0, -8, 0)
    p.ld64(1, n)
    p.func(2, "cb")
    p.movx(3, 10)
    p.add(3, -8)
    p.mov(4, flags)
    p.call("loop")
    p.emit(STX | MEM | DW, 6, 0, 0)
    p.emit(LDX | MEM | DW, 1, 10, -8)
    p.emit(STX | MEM | DW, 6, 1, 8)
    p.exit()
    p.label("cb")
    p.movx(3, 1)
    p.add(3, 1)
    p.emit(ALU64 | 0x20 | K, 3, 0, 0, 3)          # mul
    p.emit(LDX | MEM | DW, 4, 2, 0)
    p.emit(ALU64 | ADD | X, 4, 3)
    p.emit(STX | MEM | DW, 2, 4, 0)
    p.mov(0, 0)
    if stop_at is not None:
        p.jmp(JMP | JNE | K, 1, 0, stop_at, "cb_out")
        p.mov(0, 1)
    p.label("cb_out")
    p.exit()
    return case(p)


def for_each_case(m, stop_key=None, write=True, delete_odd=False, flags=0):
    """bpf_for_each_map_elem(map, cb, fp-16, flags): cb sums keys and values
    (u32 each) into ctx {count, ksum, vsum} on the stack, doubles the value
    (write), deletes odd keys (delete_odd), stops at stop_key; r0 and the
    sums go to ctx."""
    p = P()
    p.movx(6, 1)
    p.emit(ST | MEM | DW, 10, 0, -16, 0)
    p.emit(ST | MEM | DW, 10, 0, -8, 0)
    p.map_fd(1, 0)
    p.func(2, "cb")
    p.movx(3, 10)
    p.add(3, -16)
    p.mov(4, flags)
    p.call("for_each_map_elem")
    p.emit(STX | MEM | DW, 6, 0, 0)
    p.emit(LDX | MEM | DW, 1, 10, -16)
    p.emit(STX | MEM | DW, 6, 1, 8)
    p.emit(LDX | MEM | DW, 1, 10, -8)
    p.emit(STX | MEM | DW, 6, 1, 16)
    p.exit()
    p.label("cb")                                      # (map, key, value, ctx)
    p.movx(6, 1)
    p.movx(7, 2)
    p.emit(LDX | MEM | W, 8, 2, 0)                     # key
    p.emit(LDX | MEM | W, 9, 3, 0)                     # value
    p.emit(LDX | MEM | W, 1, 4, 0)
    p.emit(ALU64 | ADD | X, 1, 8)
    p.emit(STX | MEM | W, 4, 1, 0)
    p.emit(LDX | MEM | W, 1, 4, 8)
    p.emit(ALU64 | ADD | X, 1, 9)
    p.emit(STX | MEM | W, 4, 1, 8)
    if write:
        p.emit(ALU64 | ADD | X, 9, 9)
        p.emit(STX | MEM | W, 3, 9, 0)
    if delete_odd:
        p.emit(ALU64 | 0x50 | K, 8, 0, 0, 1)            # and
        p.jmp(JMP | JEQ | K, 8, 0, 0, "keep")
        p.movx(1, 6)
        p.movx(2, 7)
        p.call("map_delete_elem")
        p.label("keep")
        p.emit(LDX | MEM | W, 8, 7, 0)
    p.mov(0, 0)
    if stop_key is not None:
        p.jmp(JMP | JNE | K, 8, 0, stop_key, "cb_out")
        p.mov(0, 1)
    p.label("cb_out")
    p.exit()
    return case(p, [m], cb_args=4)


def spin_btf():
    """BTF: int, struct bpf_spin_lock { int val; }, struct v { struct
    bpf_spin_lock lock; int cnt; }."""
    strs = bytearray(b"\0")

    def name(n):
        off = len(strs)
        strs.extend(n.encode() + b"\0")
        return off
    t = struct.pack("<IIII", name("int"), 1 << 24, 4, (1 << 24) | 32)                       # [1]
    t += struct.pack("<III", name("bpf_spin_lock"), (4 << 24) | 1, 4) + struct.pack("<III", name("val"), 1, 0)
    t += struct.pack("<III", name("v"), (4 << 24) | 2, 8) + struct.pack("<III", name("lock"), 2, 0) + \
        struct.pack("<III", name("cnt"), 1, 32)                                              # [3]
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(t), len(t), len(strs))
    return (hdr + t + strs).hex()


def spin_case(type_, n=100):
    """bpf_loop(n): lock value 0's lock, cnt += 1, unlock (the value pointer
    passed on the stack)."""
    p = P()
    p.emit(ST | MEM | W, 10, 0, -4, 0)
    p.map_fd(1, 0)
    p.movx(2, 10)
    p.add(2, -4)
    p.call("map_lookup_elem")
    p.jmp(JMP | JEQ | K, 0, 0, 0, "out")
    p.emit(STX | MEM | DW, 10, 0, -16, 0)
    p.movx(3, 10)
    p.add(3, -16)
    p.mov(1, n)
    p.func(2, "cb")
    p.mov(4, 0)
    p.call("loop")
    p.label("out")
    p.exit()
    p.label("cb")
    p.emit(LDX | MEM | DW, 6, 2, 0)
    p.movx(1, 6)
    p.call("spin_lock")
    p.emit(LDX | MEM | W, 1, 6, 4)
    p.add(1, 1)
    p.emit(STX | MEM | W, 6, 1, 4)
    p.movx(1, 6)
    p.call("spin_unlock")
    p.mov(0, 0)
    p.exit()
    m = cmap(type_, 4, 8, 4, [(u32(0), u64(5 << 32))], btf=spin_btf())
    return case(p, [m], locked_lookup=[0, u32(0).hex()])


def spin_map_use_case(prog_type):
    """A program of prog_type that only references a map with a
    bpf_spin_lock."""
    p = P()
    p.map_fd(1, 0)
    p.mov(0, 0)
    p.exit()
    return case(p, [cmap(ARRAY, 4, 8, 1, btf=spin_btf())], prog_type=prog_type)


def ns_pid_case(dev_delta=0, size=8):
    """bpf_get_ns_current_pid_tgid(ctx.dev + dev_delta, ctx.ino, ctx + 16, size)."""
    p = P()
    p.movx(6, 1)
    p.emit(LDX | MEM | DW, 1, 6, 0)
    p.add(1, dev_delta)
    p.emit(LDX | MEM | DW, 2, 6, 8)
    p.emit(ST | MEM | DW, 10, 0, -8, -1)
    p.movx(3, 10)
    p.add(3, -8)
    p.mov(4, size)
    p.call("get_ns_current_pid_tgid")
    p.movx(7, 0)
    p.stack_to_ctx(6, -8, 8, 16)
    p.movx(0, 7)
    p.exit()
    return case(p, pidns=True)


def signal_case(helper, sig):
    p = P()
    p.mov(1, sig)
    p.call(helper)
    p.exit()
    return case(p, signal=signal.SIGUSR1)


def tail_call_case(index=0, fill=True):
    """Counts runs in an array map and tail-calls prog_array[index] (itself):
    the kernel stops after MAX_TAIL_CALL_CNT (33) tail calls."""
    p = P()
    p.movx(6, 1)
    p.lookup0(1, "out")
    p.emit(LDX | MEM | DW, 1, 0, 0)
    p.add(1, 1)
    p.emit(STX | MEM | DW, 0, 1, 0)
    p.movx(1, 6)
    p.map_fd(2, 0)
    p.mov(3, index)
    p.call("tail_call")
    p.label("out")
    p.mov(0, 77)
    p.exit()
    maps = [cmap(PROG_ARRAY, 4, 4, 4), cmap(ARRAY, 4, 8, 1)]
    return case(p, maps, prog_type=SOCKET_FILTER, data_in=bytes(64).hex(),
                prog_array=[[0, 0, "self"]] if fill else [])


def cases():
    strs = (b"world", b"\x0a\x01\x02\xfe", bytes(range(16)))
    c = {
        "snprintf_ints": snprintf_case(b"a%d b%u c%x d%X e%ld f%lld g%llu h%i %%",
                                       [-5, -5, 0xbeef, 0xbeef, -(1 << 40), 1 << 50, (1 << 64) - 1, 42]),
        "snprintf_widths": snprintf_case(b"[%5d|%-5d|%05u|%+d|% d|%08x]", [-12, 34, 56, 7, 8, 0xabc]),
        "snprintf_str_char": snprintf_case(b"hello %s %c%c [%8s] [%-8s]", [("str", 0), 0x41, 0x7A, ("str", 0),
                                                                           ("str", 0)], strs=strs),
        "snprintf_ip": snprintf_case(b"%pI4 %pi4 %pI6 %pi6", [("str", 1), ("str", 1), ("str", 2), ("str", 2)],
                                     strs=strs),
        "snprintf_truncated": snprintf_case(b"0123456789 %d", [123456], size=8),
        "snprintf_size0": snprintf_case(b"abc %d", [1], size=0),
        "snprintf_no_args": snprintf_case(b"plain text", []),
        "printk_ok": printk_case(b"x=%d y=%u z=%x\n", [-1, 2, 255]),
        "printk_long_types": printk_case(b"%ld %lld %llu", [-(1 << 40), 1 << 41, (1 << 64) - 1]),
        "printk_str_arg_fault": printk_case(b"s=%s", [0]),
        "printk_bad_conv": printk_case(b"bad %q", [1]),
        "printk_float": printk_case(b"%f", [1]),
        "printk_4_args": printk_case(b"%d %d %d %d", [1, 2, 3]),
        "printk_no_nul_in_size": printk_case(b"abc", [], fmt_size=3),
        "printk_pct_at_end": printk_case(b"abc %", []),
        "printk_nonprint": printk_case(b"a\x01b", []),
        "vprintk_ok": printk_case(b"%d %d %d %d %d %s", [1, 2, 3, 4, 5, 0], vprintk=True),
        "vprintk_bad_len": printk_case(b"%d", [1, 2], vprintk=True, data_len=12),
        "vprintk_too_many": printk_case(b"%d", [1] * 13, vprintk=True),
        "vprintk_missing_args": printk_case(b"%d %d", [1], vprintk=True),
        "loop_10": loop_case(10),
        "loop_stop": loop_case(10, stop_at=4),
        "loop_0": loop_case(0),
        "loop_flags": loop_case(3, flags=1),
        "loop_too_many": loop_case((1 << 23) + 1),
        "for_each_array": for_each_case(cmap(ARRAY, 4, 4, 8, [(u32(i), u32(i * 10 + 1)) for i in range(8)])),
        "for_each_array_stop": for_each_case(cmap(ARRAY, 4, 4, 8, [(u32(i), u32(i + 1)) for i in range(8)]),
                                             stop_key=3),
        "for_each_array_flags": for_each_case(cmap(ARRAY, 4, 4, 2), flags=1),
        "for_each_hash": for_each_case(cmap(HASH, 4, 4, 16, [(u32(i * 7), u32(i + 100)) for i in range(6)])),
        "for_each_hash_delete": for_each_case(cmap(HASH, 4, 4, 16, [(u32(i), u32(i)) for i in range(9)]),
                                              delete_odd=True),
        "for_each_hash_empty": for_each_case(cmap(HASH, 4, 4, 16)),
        "for_each_lru_hash": for_each_case(cmap(LRU_HASH, 4, 4, 16, [(u32(i), u32(3 * i)) for i in range(5)])),
        "for_each_percpu_array": for_each_case(cmap(PERCPU_ARRAY, 4, 4, 4, [(u32(i), u32(i + 9)) for i in range(4)]),
                                               write=False),
        "for_each_percpu_hash": for_each_case(cmap(PERCPU_HASH, 4, 4, 8, [(u32(i), u32(i * 2)) for i in range(5)]),
                                              write=False),
        "for_each_lru_percpu_hash": for_each_case(
            cmap(LRU_PERCPU_HASH, 4, 4, 8, [(u32(i), u32(i * 2)) for i in range(5)]), write=False),
        "spin_lock_array": spin_case(ARRAY),
        "spin_lock_hash": spin_case(HASH),
        # increments under the lock from two threads at once: none lost
        "spin_lock_threads": dict(spin_case(ARRAY, n=1000), threads=[2, 50]),
        "ns_pid": ns_pid_case(),
        "ns_pid_wrong_dev": ns_pid_case(dev_delta=1),
        "ns_pid_bad_size": ns_pid_case(size=4),
        "send_signal": signal_case("send_signal", signal.SIGUSR1),
        "send_signal_thread": signal_case("send_signal_thread", signal.SIGUSR1),
        "send_signal_0": signal_case("send_signal", 0),
        "send_signal_invalid": signal_case("send_signal", 65),
        "tail_call_limit": tail_call_case(),
        "tail_call_out_of_range": tail_call_case(index=9),
        "tail_call_empty_slot": tail_call_case(fill=False),
    }
    # misuse the kernel's verifier refuses at load (the comparison includes the errno)
    c.update({
        "misuse_snprintf_bad_format": snprintf_case(b"bad %q", [1]),
        "misuse_printk_fmt_size_0": printk_case(b"abc", [], fmt_size=0),
        "misuse_for_each_queue": for_each_case(cmap(22, 0, 4, 4)),
        "misuse_spin_lock_map_socket_filter": spin_map_use_case(SOCKET_FILTER),
        "misuse_spin_lock_map_raw_tp": spin_map_use_case(17),
    })
    return c


# ---------------------------------------------------------------- runner (child process)
def _btf_load(hexblob):
    return G.btf_load(bytes.fromhex(hexblob))


def _map_create(m, fds):
    a = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIII", a, 0, m["type"], m["key_size"], m["value_size"], m["max_entries"], m["flags"])
    if m.get("btf"):
        bfd, err = _btf_load(m["btf"])
        if bfd < 0:
            return -1, err
        fds.append(bfd)
        struct.pack_into("<III", a, 48, bfd, 1, 3)
    return G.bpf(G.BPF_MAP_CREATE, a)


def _percpu(m):
    return m["type"] in (PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH)


def _ncpus():
    s = open("/sys/devices/system/cpu/possible").read().strip()
    n = 0
    for part in s.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _value_bytes(m, v):
    if not _percpu(m):
        return v
    slot = v + bytes(-len(v) % 8)
    return slot * _ncpus()


def _reloc(data, fds):
    data = bytearray(data)
    for i in range(0, len(data), 8):
        code, regs, off, imm = G.INSN.unpack_from(data, i)
        if code == LD | IMM | DW and (regs >> 4) in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
            G.INSN.pack_into(data, i, code, regs, off, fds[imm])
    return bytes(data)


def _locked_lookup(fd, key, vsize):
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(vsize)
    a = ctypes.create_string_buffer(32)
    struct.pack_into("<IIQQQ", a, 0, fd, 0, G.addr(kb), G.addr(vb), BPF_F_LOCK)
    ret, err = G.bpf(BPF_MAP_LOOKUP_ELEM, a)
    return vb.raw.hex() if ret == 0 else f"errno {err}"


def _run_threads(fd, ctx, nthreads, runs):
    """PROG_TEST_RUN `runs` times in each of `nthreads` threads at once
    (ctypes drops the GIL around the call); the errnos seen."""
    import threading
    errs = set()

    def work():
        a = ctypes.create_string_buffer(80)
        cb = ctypes.create_string_buffer(ctx, len(ctx))
        struct.pack_into("<I", a, 0, fd)
        struct.pack_into("<IIQ", a, 40, len(ctx), 0, G.addr(cb))
        for _ in range(runs):
            errs.add(G.bpf(G.BPF_PROG_TEST_RUN, a)[1])
    ts = [threading.Thread(target=work) for _ in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sorted(errs)


def run_one(c):
    res = {}
    fds, mfds = [], []
    got = []
    if c.get("signal"):
        signal.signal(c["signal"], lambda s, f: got.append(s))
    try:
        for m in c["maps"]:
            fd, err = _map_create(m, fds)
            if fd < 0:
                res["map_create_errno"] = err
                return res
            fds.append(fd)
            mfds.append(fd)
            for k, v in m["init"]:
                ret, err = G.map_update(fd, bytes.fromhex(k), _value_bytes(m, bytes.fromhex(v)))
                if ret < 0:
                    res["map_update_errno"] = err
                    return res
            if m["freeze"]:
                a = ctypes.create_string_buffer(struct.pack("<I", fd), 8)
                ret, err = G.bpf(BPF_MAP_FREEZE, a, 4)
                if ret < 0:
                    res["freeze_errno"] = err
                    return res
        flags = SLEEPABLE if c["prog_type"] == SYSCALL else 0
        extra = None
        if "btf" in c:
            bfd, err = _btf_load(c["btf"])
            if bfd < 0:
                res["btf_load_errno"] = err
                return res
            fds.append(bfd)
            fi = b"".join(struct.pack("<II", off, tid) for off, tid in c["func_info"])
            fib = ctypes.create_string_buffer(fi, len(fi))

            def extra(a, _l, bfd=bfd, fib=fib, n=len(c["func_info"])):
                struct.pack_into("<IIQI", a, 72, bfd, 8, G.addr(fib), n)
        fd, err, log = G.prog_load(c["prog_type"], _reloc(bytes.fromhex(c["insns"]), mfds), prog_flags=flags,
                                   extra=extra)
        res["load_errno"] = err
        if fd < 0:
            res["log"] = log[-1000:]
            return res
        fds.append(fd)
        for mi, slot, what in c.get("prog_array", []):
            pfd = fd if what == "self" else what
            ret, err = G.map_update(mfds[mi], u32(slot), u32(pfd))
            if ret < 0:
                res["prog_array_errno"] = err
        ctx = bytearray(bytes.fromhex(c["ctx_in"]))
        if c.get("pidns"):
            st = os.stat("/proc/self/ns/pid")
            struct.pack_into("<QQ", ctx, 0, st.st_dev, st.st_ino)
            res["self"] = [os.getpid(), os.getpid()]
        a = ctypes.create_string_buffer(80)
        struct.pack_into("<I", a, 0, fd)
        if "data_in" in c:
            din = bytes.fromhex(c["data_in"])
            ib = ctypes.create_string_buffer(din, len(din))
            ob = ctypes.create_string_buffer(len(din) + 256)
            struct.pack_into("<IIIIQQ", a, 0, fd, 0, len(din), len(ob), G.addr(ib), G.addr(ob))
        else:
            cb = ctypes.create_string_buffer(bytes(ctx), len(ctx))
            struct.pack_into("<IIQ", a, 40, len(ctx), 0, G.addr(cb))
        ret, err = G.bpf(G.BPF_PROG_TEST_RUN, a)
        if c.get("threads"):
            res["thread_errnos"] = _run_threads(fd, bytes(ctx), *c["threads"])
        res["test_errno"] = err
        res["retval"] = struct.unpack_from("<i", a, 4)[0]
        if "data_in" not in c:
            out = cb.raw
            if c.get("pidns"):
                res["nsdata_is_self"] = list(struct.unpack_from("<II", out, 16)) == res.pop("self")
                out = out[:16] + out[24:]
            res["ctx_out"] = out.hex()
        if c.get("signal"):
            res["signals"] = got
        res["maps"] = []
        for f, m in zip(mfds, c["maps"]):
            if m["type"] == PROG_ARRAY:
                continue
            vs = len(_value_bytes(m, bytes(m["value_size"])))
            res["maps"].append(G.map_dump(f, m["key_size"], vs))
        if c.get("locked_lookup"):
            mi, k = c["locked_lookup"]
            res["locked"] = _locked_lookup(mfds[mi], bytes.fromhex(k), c["maps"][mi]["value_size"])
        return res
    finally:
        for f in fds:
            try:
                os.close(f)
            except OSError:
                pass
        if c.get("signal"):
            signal.signal(c["signal"], signal.SIG_DFL)


def trace_run(msgs):
    """Runs printk programs for msgs (fmt, args) and says who ran them."""
    out = []
    for fmt, args in msgs:
        r = run_one(printk_case(fmt.encode(), args))
        out.append(r.get("retval"))
    comm = open("/proc/self/comm").read().strip()
    return {"retvals": out, "pid": os.getpid(), "comm": comm}


def main(argv):
    if argv[1:2] == ["run"]:
        for name, c in json.load(sys.stdin).items():
            try:
                r = run_one(c)
            except Exception as e:      # a harness problem must not hide the other cases
                r = {"exception": repr(e)}
            print(json.dumps({name: r}), flush=True)
        return 0
    if argv[1:2] == ["trace"]:
        print(json.dumps(trace_run(json.load(sys.stdin))), flush=True)
        return 0
    return 2


# ---------------------------------------------------------------- pytest side
if __name__ == "__main__":
    sys.exit(main(sys.argv))

import pytest  # noqa: E402

from compat_tests.env import denied, kernel_bpf_reason, unpriv_reason  # noqa: E402
from compat_tests.unpriv import Runtime  # noqa: E402

CASES = cases()
BACKENDS = ["interp", "aot", "interp@65534", "aot@65534"]
_results = {}


def _child(mode, payload, backend=None):
    """Runs this file as a script on the kernel (backend None) or through
    bpfshim with a server of its own. Returns (stdout lines as JSON, the
    runtime, stderr); the caller closes the runtime."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    me = os.path.abspath(__file__)
    rt = None
    if backend is None:
        cmd = [sys.executable, me, mode]
    else:
        engine, _, who = backend.partition("@")
        rt = Runtime(unpriv=bool(who))
        env = rt.env(env)
        env["BPFSHIM_ENGINE"] = engine
        if who:
            env["BPFSHIM_PYTHON"] = os.path.join(G.ROOT, ".venv", "bin", "python")
            cmd = rt.cmd(["/usr/bin/python3", me, mode], [("BPFSHIM_ENGINE", engine),
                                                           ("BPFSHIM_PYTHON", env["BPFSHIM_PYTHON"]),
                                                           ("HOME", "/tmp")])
        else:
            cmd = rt.cmd([sys.executable, me, mode], [("BPFSHIM_ENGINE", engine)])
    p = subprocess.run(cmd, input=json.dumps(payload).encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=120)
    lines = [json.loads(x) for x in p.stdout.decode(errors="replace").splitlines() if x.startswith("{")]
    return lines, rt, p.stderr.decode(errors="replace")[-3000:]


def _side(backend):
    if backend not in _results:
        lines, rt, err = _child("run", CASES, backend)
        res = {}
        for x in lines:
            res.update(x)
        aot_failed = False
        if rt:
            log = open(os.path.join(rt.dir, "server.log"), errors="replace").read() \
                if os.path.exists(os.path.join(rt.dir, "server.log")) else ""
            aot_failed = [ln for ln in log.splitlines() if "AOT compile failed" in ln]
            rt.close()
        _results[backend] = (res, err, aot_failed)
    return _results[backend]


def _need(backend):
    why = kernel_bpf_reason()
    if why:
        pytest.skip(why)
    if backend and "@" in backend and unpriv_reason():
        pytest.skip(unpriv_reason())


def test_kernel_runs_the_cases():
    """The cases load on the kernel (otherwise the comparison says little),
    the misuse cases do not."""
    _need(None)
    res, err, _ = _side(None)
    bad = {n: r for n, r in res.items()
           if bool(r.get("load_errno")) != n.startswith("misuse_") or "exception" in r}
    assert not bad and len(res) == len(CASES), (bad, err)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_helper_matches_kernel(name, backend):
    _need(backend)
    why = denied("helpers", name)
    if why:
        pytest.skip(f"DENYLIST: {why}")
    want = _side(None)[0].get(name)
    got, err, aot_failed = _side(backend)
    assert not aot_failed, aot_failed[:3]
    assert got.get(name) == want, f"{name} on {backend}:\n kernel  {want}\n bpfshim {got.get(name)}\n{err}"


# ---- the trace pipe
TRACE_MSGS = [("tp-%d-%u-%x\n", [-7, 7, 0xabc]), ("tp plain", []), ("tp two\nlines %s", [0]),
              ("tp %ld %llu", [-(1 << 40), (1 << 64) - 1]), ("tp bad %q", [1])]
PREFIX = re.compile(r"^\s*(\S+)-(\d+)\s+\[(\d+)\] (\S+)\s+(\d+)\.(\d{6}): ")


def _normalise(text, who):
    """Lines of `who`'s events (pid None: any pid of that comm) with comm,
    pid, cpu, flags and the timestamp replaced; continuation lines (a
    message with a newline) kept."""
    out, mine = [], False
    for line in text.splitlines():
        m = PREFIX.match(line)
        if m:
            mine = m.group(1) == who["comm"][:16] and who["pid"] in (None, int(m.group(2)))
            if mine:
                out.append("<comm>-<pid> [<cpu>] <flags> <ts>: " + line[m.end():])
        elif mine:
            out.append(line)
    return out


def _kernel_trace_pipe():
    fd = os.open("/sys/kernel/tracing/trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    chunks = []
    try:
        while True:
            try:
                b = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _trace_side(backend):
    if backend is None:
        if not os.access("/sys/kernel/tracing/trace_pipe", os.R_OK):
            pytest.skip("no /sys/kernel/tracing/trace_pipe")
        lines, _, err = _child("trace", TRACE_MSGS)
        return lines[0], _kernel_trace_pipe(), err
    engine, _, who = backend.partition("@")
    lines, rt, err = _child("trace", TRACE_MSGS, backend)
    try:
        argv = [os.path.join(G.ROOT, ".venv", "bin", "python"), "-m", "syscall_server", "trace-pipe", "--nonblock"]
        if who:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        p = subprocess.run(argv, capture_output=True, env=rt.env(), cwd=G.ROOT, timeout=60)
        again = subprocess.run(argv, capture_output=True, env=rt.env(), cwd=G.ROOT, timeout=60)
        assert again.stdout == b"", "a read of the trace pipe consumes what it printed"
        return lines[0], p.stdout.decode(errors="replace"), err + p.stderr.decode(errors="replace")
    finally:
        rt.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_pipe_matches_kernel(backend):
    """bpf_trace_printk's line in `bpfshim trace-pipe` is the kernel's
    trace_pipe line (after comm/pid/cpu/flags/timestamp are normalised);
    reading consumes."""
    _need(backend)
    kwho, ktext, kerr = _trace_side(None)
    want = _normalise(ktext, kwho)
    assert want, (ktext, kerr)
    who, text, err = _trace_side(backend)
    assert who["retvals"] == kwho["retvals"]
    assert _normalise(text, who) == want, f"{text}\n{err}"


# ---- bpftrace's debugf() (bpf_trace_printk from a real loader)
DEBUGF = 'BEGIN { debugf("bt %d %s|\\n", -3, "str"); debugf("bt2 %u", 7); exit(); }'


@pytest.mark.parametrize("reader", ["bpfshim trace-pipe", "tracefs trace_pipe"])
@pytest.mark.parametrize("who", ["root", "65534"])
def test_bpftrace_debugf_matches_kernel(who, reader):
    """Read with `bpfshim trace-pipe`, or as tools do: a process under the
    shim reading tracefs's trace_pipe (cat, for 2 s: it blocks as the
    kernel's does)."""
    import shutil
    _need("interp@65534" if who != "root" else None)
    bt = shutil.which("bpftrace")
    if not bt:
        pytest.skip("bpftrace is not installed")
    _kernel_trace_pipe()                     # drop what is there
    p = subprocess.run([bt, "-e", DEBUGF], capture_output=True, timeout=60)
    want = _normalise(_kernel_trace_pipe(), {"comm": "bpftrace", "pid": None})
    assert want, p.stderr
    rt = Runtime(unpriv=who != "root")
    try:
        q = subprocess.run(rt.cmd([bt, "-e", DEBUGF]), capture_output=True, env=rt.env(), timeout=60)
        if reader == "tracefs trace_pipe":
            argv = rt.cmd(["timeout", "2", "cat", "/sys/kernel/tracing/trace_pipe"])
        else:
            argv = [os.path.join(G.ROOT, ".venv", "bin", "python"), "-m", "syscall_server", "trace-pipe", "--nonblock"]
            if who != "root":
                argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        out = subprocess.run(argv, capture_output=True, env=rt.env(), cwd=G.ROOT, timeout=60).stdout.decode()
        assert q.returncode == 0, q.stderr
        assert _normalise(out, {"comm": "bpftrace", "pid": None}) == want, out
    finally:
        rt.close()
