"""The differential verifier corpus: programs loaded on the kernel (root) and
through bpfshim, compared on the verdict and, on reject, the last line of the
log (the line the kernel's own tests match).

The programs are the kernel's verifier tests (compat_tests/data/
verifier_corpus.jsonl, written by scripts/gen_verifier_corpus.py from
test_verifier.c and verifier/*.c) plus the cases of SPECIALS. Each entry's
fixups name the instructions that get a map fd; the maps are made as
test_verifier.c's do_test_fixup() makes them (same types, key and value
sizes, flags, BTF), on the side that loads the program.

    python3 compat_tests/verifier_corpus.py run < indices.json   # one side, in this process
"""
import ctypes
import json
import os
import re
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "verifier_corpus.jsonl")
# Programs the kernel accepts that bpfshim refuses (one key a line): the
# test fails on any other; a line goes when the verifier loads the program
KNOWN_REFUSALS = os.path.join(HERE, "data", "verifier_corpus_refused.txt")

# enum bpf_map_type / map_flags (include/uapi/linux/bpf.h)
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, STACK_TRACE = 1, 2, 3, 4, 7
ARRAY_OF_MAPS, SOCKMAP, XSKMAP, SOCKHASH, CGROUP_STORAGE = 12, 15, 17, 18, 19
REUSEPORT_SOCKARRAY, PERCPU_CGROUP_STORAGE, SK_STORAGE, RINGBUF = 20, 21, 24, 27
F_NO_PREALLOC, F_RDONLY_PROG, F_WRONLY_PROG = 1, 1 << 7, 1 << 8
BPF_F_STRICT_ALIGNMENT, BPF_F_ANY_ALIGNMENT, BPF_F_SLEEPABLE = 1, 2, 16
F_LOAD_WITH_STRICT_ALIGNMENT, F_NEEDS_EFFICIENT_UNALIGNED_ACCESS = 2, 1   # test_verifier.c's test flags
CGROUP_STORAGE_KEY = 16     # sizeof(struct bpf_cgroup_storage_key)
TEST_DATA_LEN = 64

# fixup -> (map_type, key_size, value_size, max_entries, map_flags, btf_value_type_id, update_map)
MAPS = {
    "fixup_map_hash_8b": (HASH, 8, 8, 1, F_NO_PREALLOC, 0, False),
    "fixup_map_hash_48b": (HASH, 8, 48, 1, F_NO_PREALLOC, 0, False),
    "fixup_map_hash_16b": (HASH, 8, 16, 1, F_NO_PREALLOC, 0, False),
    "fixup_map_array_48b": (ARRAY, 4, 48, 1, 0, 0, True),
    "fixup_map_sockmap": (SOCKMAP, 4, 4, 1, 0, 0, False),
    "fixup_map_sockhash": (SOCKHASH, 4, 4, 1, 0, 0, False),
    "fixup_map_xskmap": (XSKMAP, 4, 4, 1, 0, 0, False),
    "fixup_map_stacktrace": (STACK_TRACE, 4, 8, 1, 0, 0, False),
    "fixup_cgroup_storage": (CGROUP_STORAGE, CGROUP_STORAGE_KEY, TEST_DATA_LEN, 0, 0, 0, False),
    "fixup_percpu_cgroup_storage": (PERCPU_CGROUP_STORAGE, CGROUP_STORAGE_KEY, TEST_DATA_LEN, 0, 0, 0, False),
    "fixup_map_spin_lock": (ARRAY, 4, 8, 1, 0, 3, False),
    "fixup_map_array_ro": (ARRAY, 4, 48, 1, F_RDONLY_PROG, 0, True),
    "fixup_map_array_wo": (ARRAY, 4, 48, 1, F_WRONLY_PROG, 0, True),
    "fixup_map_array_small": (ARRAY, 4, 1, 1, 0, 0, True),
    "fixup_sk_storage_map": (SK_STORAGE, 4, 8, 0, F_NO_PREALLOC, 3, False),
    "fixup_map_event_output": (PERF_EVENT_ARRAY, 4, 4, 1, 0, 0, False),
    "fixup_map_reuseport_array": (REUSEPORT_SOCKARRAY, 4, 8, 1, 0, 0, False),
    "fixup_map_ringbuf": (RINGBUF, 0, 0, 4096, 0, 0, False),
    "fixup_map_timer": (ARRAY, 4, 16, 1, 0, 5, False),
    "fixup_map_kptr": (ARRAY, 4, 24, 1, 0, 14, False),
}
# fixup -> (max_entries, p1key, p2key, p3key) of create_prog_array()
PROG_ARRAYS = {"fixup_prog1": (4, 0, 1, 2), "fixup_prog2": (8, 7, 1, 2)}

# Lines the kernel prints after the verdict (print_verification_stats)
STATS = re.compile(r"^(processed \d+ insns|verification time|stack depth|max_states_per_insn)")
# The states the kernel prints after some messages (infinite loop detected ...)
STATE_DUMP = re.compile(r"^(cur|old) state: ")
# The kernel's rejects for memory safety: a program accepted despite one of
# these could touch memory the kernel would not let it touch.
MEMORY_SAFETY = re.compile(r"invalid mem access|out of bounds|outside of the allowed memory range|unbounded|"
                           r"invalid (indirect )?(read|write|access) (from|to) stack|invalid stack|"
                           r"pointer arithmetic|infinite loop|back-edge|invalid access to|"
                           r"min value is negative|invalid size of register|misaligned|"
                           r"invalid bpf_context access|cannot write into|variable .* access|"
                           r"R\d+ !read_ok|type=\S+ expected=")


def last_line(log):
    """The verdict line: the last one before the statistics and state dumps."""
    lines = [l for l in log.splitlines() if l.strip() and not STATS.match(l) and not STATE_DUMP.match(l)]
    return lines[-1].strip() if lines else ""


# ---------------------------------------------------------------- the special cases
def _insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _prog(*insns):
    return b"".join(insns).hex()


# opcodes (include/uapi/linux/bpf.h, bpf_common.h)
LDX_W, LDX_DW, ST_DW, STX_DW = G.LDX | G.MEM | G.W, G.LDX | G.MEM | G.DW, G.ST | G.MEM | G.DW, G.STX | G.MEM | G.DW
MOV64_K, MOV64_X, ADD64_K, ADD64_X = (G.ALU64 | G.MOV | G.K, G.ALU64 | G.MOV | G.X, G.ALU64 | G.ADD | G.K,
                                      G.ALU64 | G.ADD | G.X)
JEQ_K, JLT_X, CALL, EXIT, LD_DW = (G.JMP | G.JEQ | G.K, G.JMP | G.JLT | G.X, G.JMP | G.CALL, G.JMP | G.EXIT,
                                   G.LD | G.IMM | G.DW)
FUNC_map_lookup_elem, FUNC_ktime_get_ns = 1, 5
SOCKET_FILTER, KPROBE, PERF_EVENT, SYSCALL = 1, 2, 7, 31
PSEUDO_CALL = G.PSEUDO_CALL


JGT_K, JSGT_X, LSH_K, RSH_X, OR_X = (G.JMP | G.JGT | G.K, G.JMP | G.JSGT | G.X, G.ALU64 | G.LSH | G.K,
                                     G.ALU64 | G.RSH | G.X, G.ALU64 | G.OR | G.X)
FUNC_map_update_elem = 2


def _log2_hist(value_off):
    """bpftrace's hist() of a kprobe argument (its codegen of 0.2x): the
    log2 bucket by four shift steps (2^5 paths of constants), then
    @[bucket] = @[bucket] + 1 through lookup and update, the count read at
    value_off of the 8-byte value. A verifier that cannot tell which
    scalars matter (the kernel's precision tracking) keeps every path."""
    code = [_insn(LDX_DW, 1, 1, 80), _insn(MOV64_K, 5), _insn(JSGT_X, 5, 1, 30), _insn(MOV64_K, 5, imm=1),
            _insn(JEQ_K, 1, 0, 28), _insn(MOV64_K, 2, imm=1)]
    for reg, limit, shift in ((3, 0xFFFF, 4), (4, 0xFF, 3), (0, 0xF, 2), (5, 3, 1)):
        code += [_insn(MOV64_K, reg, imm=1), _insn(JGT_K, 1, 0, 1, limit), _insn(MOV64_K, reg),
                 _insn(LSH_K, reg, imm=shift), _insn(RSH_X, 1, reg)]
    code += [_insn(JGT_K, 1, 0, 1, 1), _insn(MOV64_K, 2), _insn(OR_X, 3, 4), _insn(OR_X, 3, 0), _insn(OR_X, 5, 3),
             _insn(OR_X, 5, 2), _insn(ADD64_K, 5, imm=2), _insn(STX_DW, 10, 5, -16),
             _insn(LD_DW, 1, 1, 0, 0), _insn(0), _insn(MOV64_X, 2, 10), _insn(ADD64_K, 2, imm=-16),
             _insn(CALL, imm=FUNC_map_lookup_elem), _insn(MOV64_K, 1, imm=1), _insn(JEQ_K, 0, 0, 2),
             _insn(LDX_DW, 1, 0, value_off), _insn(ADD64_K, 1, imm=1), _insn(STX_DW, 10, 1, -8),
             _insn(LD_DW, 1, 1, 0, 0), _insn(0), _insn(MOV64_X, 2, 10), _insn(ADD64_K, 2, imm=-16),
             _insn(MOV64_X, 3, 10), _insn(ADD64_K, 3, imm=-8), _insn(MOV64_K, 4),
             _insn(CALL, imm=FUNC_map_update_elem), _insn(MOV64_K, 0), _insn(EXIT)]
    return _prog(*code)


FUNC_for_each_map_elem, FUNC_loop, PSEUDO_FUNC = 164, 181, 4


# the BTF of test_verifier.c's bpf_loop tests: FUNC 6 (the program), FUNC 7 (a callback)
CALLBACK_BTF = ("9feb01001800000000000000700000007000000000010000010000000000000104000000200000010000000000000002"
                "01000000000000000000000200000000000000000100000d010000000700000003000000000000000200000d01000000"
                "05000000010000000700000002000000140000000000000c040000000b0000000000000c0500000000696e7400690063"
                "74780063616c6c6261636b006d61696e0000000000000000000000000000000000000000000000000000000000000000"
                "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "0000000000000000")


def _with_callback(descr, helper, callback, map_fixup=False):
    """main: *(u64 *)(fp - 8) = 0; helper(4 or the map, callback, fp - 8, 0);
    return 0. callback: the insns given. With the func_info the kernel
    needs for a callback."""
    r1 = [_insn(LD_DW, 1, 1, 0, 0), _insn(0)] if map_fixup else [_insn(MOV64_K, 1, imm=4)]
    main = [_insn(ST_DW, 10, 0, -8, 0)] + r1 + [_insn(MOV64_X, 3, 10), _insn(ADD64_K, 3, imm=-8),
                                               _insn(MOV64_K, 4)]
    tail = [_insn(CALL, imm=helper), _insn(MOV64_K, 0), _insn(EXIT)]
    # r2 = the callback (ld_imm64 of BPF_PSEUDO_FUNC: its offset from the next insn)
    main += [_insn(LD_DW, 2, PSEUDO_FUNC, 0, len(tail) + 1), _insn(0)] + tail
    t = {"descr": descr, "prog_type": KPROBE, "insns": _prog(*main, *callback), "prog_btf": CALLBACK_BTF,
         "func_info": struct.pack("<IIII", 0, 6, len(main), 7).hex()}
    if map_fixup:
        t["fixups"] = {"fixup_map_array_48b": [1]}
    return t


def _two_frames(d_main, d_sub):
    """main stores at fp-d_main and calls a subprogram that stores at fp-d_sub."""
    return _prog(_insn(ST_DW, 10, 0, -d_main, 0), _insn(CALL, 0, PSEUDO_CALL, 0, 2), _insn(MOV64_K, 0),
                 _insn(EXIT), _insn(ST_DW, 10, 0, -d_sub, 0), _insn(MOV64_K, 0), _insn(EXIT))

SPECIALS = [
    # a store to an address read from the ctx (skb->len): on an engine
    # without the check it writes wherever the value points
    {"descr": "bpfshim: store through a scalar read from an skb", "prog_type": SOCKET_FILTER,
     "insns": _prog(_insn(LDX_W, 2, 1, 0), _insn(ST_DW, 2, 0, 0, 1), _insn(MOV64_K, 0), _insn(EXIT))},
    {"descr": "bpfshim: store through a scalar read from a syscall ctx", "prog_type": SYSCALL,
     "prog_flags": BPF_F_SLEEPABLE,
     "insns": _prog(_insn(LDX_DW, 2, 1, 0), _insn(ST_DW, 2, 0, 0, 1), _insn(MOV64_K, 0), _insn(EXIT))},
    # for (deadline = now + 1ms; now < deadline; ) now = bpf_ktime_get_ns(): never proven to end
    {"descr": "bpfshim: loop until bpf_ktime_get_ns passes a deadline", "prog_type": KPROBE,
     "insns": _prog(_insn(CALL, imm=FUNC_ktime_get_ns), _insn(MOV64_X, 6, 0), _insn(ADD64_K, 6, imm=1000000),
                    _insn(CALL, imm=FUNC_ktime_get_ns), _insn(JLT_X, 0, 6, -2), _insn(MOV64_K, 0), _insn(EXIT))},
    # libbpf's poison call for a helper a CO-RE check made dead (mountsnoop): the kernel never checks it
    {"descr": "bpfshim: a call to an unknown helper in dead code", "prog_type": KPROBE,
     "insns": _prog(_insn(MOV64_K, 0), _insn(JEQ_K, 0, 0, 1, 0), _insn(CALL, imm=2001000000), _insn(EXIT))},
    # value = lookup(&key); if (value) *(u64 *)(value + 48) = 1, value_size 48
    {"descr": "bpfshim: map value store out of bounds", "prog_type": KPROBE,
     "fixups": {"fixup_map_array_48b": [3]},
     "insns": _prog(_insn(ST_DW, 10, 0, -8, 0), _insn(MOV64_X, 2, 10), _insn(ADD64_K, 2, imm=-8),
                    _insn(LD_DW, 1, 1, 0, 0), _insn(0), _insn(CALL, imm=FUNC_map_lookup_elem),
                    _insn(JEQ_K, 0, 0, 1, 0), _insn(ST_DW, 0, 0, 48, 1), _insn(MOV64_K, 0), _insn(EXIT))},
    # bpftrace's histogram: verified to the end (the count's load is checked
    # on every path), the second refused for its load past the value
    {"descr": "bpfshim: bpftrace log2 histogram", "prog_type": KPROBE,
     "fixups": {"fixup_map_hash_8b": [34, 44]}, "insns": _log2_hist(0)},
    {"descr": "bpfshim: bpftrace log2 histogram, count read past the value", "prog_type": KPROBE,
     "fixups": {"fixup_map_hash_8b": [34, 44]}, "insns": _log2_hist(8)},
    # callbacks: their context is the caller's stack, their return value 0 or 1
    _with_callback("bpfshim: bpf_loop callback reads its context", FUNC_loop,
                   [_insn(LDX_DW, 0, 2, 0), _insn(MOV64_K, 0, imm=1), _insn(EXIT)]),
    _with_callback("bpfshim: bpf_loop callback writes past the caller's stack", FUNC_loop,
                   [_insn(ST_DW, 2, 0, 8, 1), _insn(MOV64_K, 0), _insn(EXIT)]),
    _with_callback("bpfshim: bpf_loop callback returns 2", FUNC_loop, [_insn(MOV64_K, 0, imm=2), _insn(EXIT)]),
    _with_callback("bpfshim: bpf_for_each_map_elem callback stores past the value", FUNC_for_each_map_elem,
                   [_insn(ST_DW, 3, 0, 48, 1), _insn(MOV64_K, 0), _insn(EXIT)], map_fixup=True),
    _with_callback("bpfshim: bpf_for_each_map_elem callback counts in its value", FUNC_for_each_map_elem,
                   [_insn(ST_DW, 3, 0, 40, 1), _insn(MOV64_K, 0), _insn(EXIT)], map_fixup=True),
    # bpf-to-bpf calls: the combined stack of a call chain, which perf_event
    # programs may exceed (their subprograms may get a private stack)
    {"descr": "bpfshim: combined stack of two frames in a kprobe program", "prog_type": KPROBE,
     "insns": _two_frames(296, 296)},
    {"descr": "bpfshim: combined stack of two frames in a perf_event program", "prog_type": PERF_EVENT,
     "insns": _two_frames(504, 504)},
    # a pointer to the caller's stack passed down, stored through past the caller's frame
    {"descr": "bpfshim: a subprogram stores past the caller's stack", "prog_type": KPROBE,
     "insns": _prog(_insn(ST_DW, 10, 0, -8, 0), _insn(MOV64_X, 1, 10), _insn(ADD64_K, 1, imm=-8),
                    _insn(CALL, 0, PSEUDO_CALL, 0, 1), _insn(EXIT), _insn(ST_DW, 1, 0, 8, 1),
                    _insn(MOV64_K, 0), _insn(EXIT))},
]


def load_corpus():
    """(btf blob for the fixups' maps, [entries]): the kernel's tests, then SPECIALS."""
    with open(CORPUS) as f:
        head = json.loads(f.readline())
        tests = [json.loads(line) for line in f]
    seen = {}
    for t in tests:
        # descr is not unique: the n-th of a name is "<descr> #n"
        n = seen[t["descr"]] = seen.get(t["descr"], 0) + 1
        t["key"] = t["descr"] if n == 1 else f"{t['descr']} #{n}"
    for t in SPECIALS:
        t["key"] = t["descr"]
        t.setdefault("fixups", {})
        t.setdefault("flags", 0)
        t.setdefault("expected_attach_type", 0)
        t.setdefault("special", True)
    return bytes.fromhex(head["btf"]), tests + SPECIALS


def skip_reason(t):
    """Why an entry is not loaded at all (the same on both sides)."""
    if t.get("fill_helper"):
        return "program generated at run time (fill_helper)"
    if t.get("kfunc") or t.get("kfunc_fixups"):
        return "needs vmlinux BTF ids (kfunc, attach_btf_id)"
    return None


# ---------------------------------------------------------------- one side, in this process
# BPF_LOG_STATS, as test_verifier.c loads: the messages and the statistics,
# without the instruction trace of level 1 (where a message may end an
# instruction's line)
LOG_SIZE = 1 << 22
_log = ctypes.create_string_buffer(LOG_SIZE)


def prog_load(prog_type, data, prog_flags=0, expected_attach_type=0, btf_fd=0, func_info=b"", log_level=4):
    """BPF_PROG_LOAD: (fd or -1, errno, log, ns)."""
    ib = ctypes.create_string_buffer(data, len(data))
    lic = ctypes.create_string_buffer(b"GPL")
    fib = ctypes.create_string_buffer(func_info, max(len(func_info), 1))
    a = ctypes.create_string_buffer(144)
    struct.pack_into("<IIQQIIQ", a, 0, prog_type, len(data) // 8, G.addr(ib), G.addr(lic),
                     log_level, LOG_SIZE if log_level else 0, G.addr(_log) if log_level else 0)
    struct.pack_into("<I", a, 44, prog_flags)
    struct.pack_into("<II", a, 68, expected_attach_type, btf_fd)
    if func_info:
        struct.pack_into("<IQI", a, 76, 8, G.addr(fib), len(func_info) // 8)
    _log[0] = b"\0"
    t0 = time.perf_counter_ns()
    ret, err = G.bpf(G.BPF_PROG_LOAD, a)
    ns = time.perf_counter_ns() - t0
    return ret, err, _log.value.decode(errors="replace"), ns


def map_create(mtype, ks, vs, n, flags=0, inner=0, btf_fd=0, btf_value=0):
    a = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIIII", a, 0, mtype, ks, vs, n, flags, inner)
    if btf_fd:
        struct.pack_into("<III", a, 48, btf_fd, 1, btf_value)
    return G.bpf(G.BPF_MAP_CREATE, a)


def update_map(fd):
    """test_verifier.c update_map(): value.index = 7 * 4, value.foo[6] = 0xabcdef12 at key 0."""
    v = bytearray(48)
    struct.pack_into("<II", v, 0, 7 * 4, 0)
    struct.pack_into("<I", v, 4 + 6 * 4, 0xabcdef12)
    G.map_update(fd, struct.pack("<i", 0), bytes(v))


def create_prog_array(prog_type, n, keys, fds):
    mfd, err = map_create(PROG_ARRAY, 4, 4, n)
    if mfd < 0:
        return mfd, f"PROG_ARRAY errno {err}"
    fds.append(mfd)
    progs = [
        _prog(_insn(MOV64_K, 0, imm=42), _insn(EXIT)),
        _prog(_insn(MOV64_K, 3, imm=keys[1]), _insn(LD_DW, 2, 1, 0, mfd), _insn(0), _insn(CALL, imm=12),
              _insn(MOV64_K, 0, imm=41), _insn(EXIT)),
        _prog(_insn(MOV64_K, 0, imm=24), _insn(EXIT)),
    ]
    pfds = []
    try:
        for p in progs:
            pfd, err, _log_text, _ns = prog_load(prog_type, bytes.fromhex(p), log_level=0)
            if pfd < 0:
                return -1, f"dummy prog errno {err}"
            pfds.append(pfd)
        for k, pfd in zip(keys, pfds):
            ret, err = G.map_update(mfd, struct.pack("<i", k), struct.pack("<i", pfd))
            if ret < 0:
                return -1, f"prog array update errno {err}"
    finally:
        for pfd in pfds:
            G._close(pfd)
    return mfd, None


def make_map(name, t, btf, fds):
    """(fd or -1, problem or None) for the fixup `name`."""
    if name in PROG_ARRAYS:
        n, *keys = PROG_ARRAYS[name]
        return create_prog_array(t["prog_type"], n, keys, fds)
    if name == "fixup_map_in_map":
        inner, err = map_create(ARRAY, 4, 4, 1)
        if inner < 0:
            return -1, f"ARRAY errno {err}"
        fd, err = map_create(ARRAY_OF_MAPS, 4, 4, 1, inner=inner)
        G._close(inner)
        if fd >= 0:
            fds.append(fd)
        return fd, None if fd >= 0 else f"ARRAY_OF_MAPS errno {err}"
    mtype, ks, vs, n, flags, btf_value, init = MAPS[name]
    bfd = 0
    if btf_value:
        bfd, err = G.btf_load(btf)
        if bfd < 0:
            return -1, f"BTF_LOAD errno {err}"
        fds.append(bfd)
    fd, err = map_create(mtype, ks, vs, n, flags, btf_fd=bfd, btf_value=btf_value)
    if fd < 0:
        return -1, f"map type {mtype} errno {err}"
    fds.append(fd)
    if init:
        update_map(fd)
    return fd, None


def run_one(t, btf):
    fds = []
    res = {}
    try:
        data = bytearray(bytes.fromhex(t["insns"]))
        setup = []
        for name, idxs in t["fixups"].items():
            fd, problem = make_map(name, t, btf, fds)
            if problem:
                setup.append(f"{name}: {problem}")
            for i in idxs:
                struct.pack_into("<i", data, 8 * i + 4, fd)
        flags = t.get("prog_flags", 0)
        if t["flags"] & F_LOAD_WITH_STRICT_ALIGNMENT:
            flags |= BPF_F_STRICT_ALIGNMENT
        if t["flags"] & F_NEEDS_EFFICIENT_UNALIGNED_ACCESS:
            flags |= BPF_F_ANY_ALIGNMENT
        if t["flags"] & ~3:
            flags |= t["flags"]
        bfd = 0
        if "prog_btf" in t:
            bfd, err = G.btf_load(bytes.fromhex(t["prog_btf"]))
            if bfd < 0:
                setup.append(f"prog BTF_LOAD errno {err}")
                bfd = 0
            else:
                fds.append(bfd)
        fd, err, log, ns = prog_load(t["prog_type"], bytes(data), flags, t["expected_attach_type"], bfd,
                                     bytes.fromhex(t.get("func_info", "")))
        if fd >= 0:
            fds.append(fd)
        res = {"accept": fd >= 0, "errno": err, "last": "" if fd >= 0 else last_line(log), "ns": ns}
        m = re.search(r"^verification time (\d+) usec", log, re.M)
        if m:
            res["verify_us"] = int(m.group(1))
        if setup:
            res["setup"] = setup
        return res
    finally:
        for f in fds:
            G._close(f)


def run(indices):
    btf, tests = load_corpus()
    out = []
    for i in indices:
        try:
            out.append(run_one(tests[i], btf))
        except Exception as e:     # a harness problem must not hide the other programs
            out.append({"exception": repr(e)})
    return out


# ---------------------------------------------------------------- the differential driver
def run_side(indices, shim=None, as_nobody=False, timeout=600):
    """Results of `indices` loaded in one child process: the kernel
    (shim=None) or bpfshim (its own server, the interpreter: no AOT
    compile), through the differential tests' one harness (unpriv.run_side)."""
    unpriv = G._harness()[1]
    if not shim:
        assert not as_nobody, "the kernel side runs as root"
        side, extra = unpriv.KERNEL, []
    else:
        side = unpriv.BPFSHIM_UNPRIV if as_nobody else unpriv.BPFSHIM
        extra = [("BPFSHIM_ENGINE", "interp")]
    py = sys.executable
    if as_nobody:
        py = G.NOBODY_PYTHON
        extra += list(G.nobody_env(os.environ, True).items())
    p, log = unpriv.run_side(side, [py, os.path.abspath(__file__), "run"], extra, prefix="bpfshim-vcorpus-",
                             lib=shim or G.SHIM_LIB, input=json.dumps(indices).encode(), timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"runner failed ({p.returncode}): {p.stderr.decode(errors='replace')[-3000:]}\n"
                           f"server.log: {log[-3000:]}")
    return json.loads(p.stdout)


def same(k, s):
    """Equal verdicts: both accept, or both reject with the same last log line."""
    return k["accept"] == s.get("accept") and (k["accept"] or k["last"] == s.get("last"))


def differential(shim=G.SHIM_LIB, as_nobody=False):
    """Every entry the kernel could set up, on both sides: the summary."""
    _btf, tests = load_corpus()
    todo = [i for i, t in enumerate(tests) if not skip_reason(t)]
    kern = dict(zip(todo, run_side(todo)))
    # as test_verifier.c: a map the kernel could not make skips the test
    todo = [i for i in todo if "setup" not in kern[i] and "exception" not in kern[i]]
    shim_res = dict(zip(todo, run_side(todo, shim, as_nobody)))
    rows = []
    for i in todo:
        k, s = kern[i], shim_res[i]
        rows.append({"i": i, "descr": tests[i]["key"], "special": tests[i].get("special", False),
                     "kernel": k, "bpfshim": s, "same": same(k, s),
                     "memory_safety": not k["accept"] and bool(MEMORY_SAFETY.search(k["last"]))})
    return summarize(rows, len(tests))


def ratio(rows):
    return round(sum(r["same"] for r in rows) / len(rows), 4) if rows else 1.0


def summarize(rows, total):
    acc = [r for r in rows if r["kernel"]["accept"]]
    rej = [r for r in rows if not r["kernel"]["accept"]]
    mem = [r for r in rej if r["memory_safety"]]
    return {
        "entries": total, "compared": len(rows),
        "agreement": ratio(rows),
        "on_kernel_accepts": ratio(acc), "kernel_accepts": len(acc),
        "on_kernel_rejects": ratio(rej), "kernel_rejects": len(rej),
        "verdict_agreement": round(sum(r["kernel"]["accept"] == r["bpfshim"].get("accept") for r in rows)
                                   / max(len(rows), 1), 4),
        "memory_safety_rejects": len(mem),
        "memory_safety_accepted": round(sum(bool(r["bpfshim"].get("accept")) for r in mem) / max(len(mem), 1), 4),
        "rows": rows,
    }


def main(argv):
    if len(argv) > 1 and argv[1] == "run":
        json.dump(run(json.load(sys.stdin)), sys.stdout)
        return
    s = differential(as_nobody="--nobody" in argv)
    rows = s.pop("rows")
    if "--write-refused" in argv:
        with open(KNOWN_REFUSALS, "w") as f:
            f.write("".join(sorted(r["descr"] + "\n" for r in rows
                                   if r["kernel"]["accept"] and not r["bpfshim"].get("accept"))))
    if "-v" in argv:
        for r in rows:
            if not r["same"]:
                print(f"{r['i']:4} {r['descr'][:60]:60} kernel {r['kernel']['accept']:d} {r['kernel']['last'][:70]!r}"
                      f" | bpfshim {r['bpfshim'].get('accept', 'x'):d} {r['bpfshim'].get('last', r['bpfshim'])!r:.80}")
    print(json.dumps(s))


if __name__ == "__main__":
    main(sys.argv)
