#!/usr/bin/python3
"""Raw bpf() map cases, run in one process per backend (the kernel, or
bpfshim when libbpfshim.so is preloaded): `python3 map_cases.py [names...]`
prints one JSON list, one {"name", "trace"} per case, in CASES order.

A trace is a list of [label, result, errno name, output hex]: result is "fd"
for a new descriptor and the return value otherwise; nothing absolute is
recorded (fd numbers, pointers, ids: a map id becomes "map<i>", the i-th map
the case created, or "other"). Every case runs isolated (an exception is
recorded in its trace) and closes its fds and removes its pins.

Standard library only: uid 65534 runs this with /usr/bin/python3.
"""
import ctypes
import errno
import json
import os
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
NR_BPF = 321

# commands
MAP_CREATE, LOOKUP, UPDATE, DELETE, NEXT_KEY = 0, 1, 2, 3, 4
OBJ_PIN, OBJ_GET = 6, 7
MAP_GET_NEXT_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 12, 14, 15
LOOKUP_AND_DELETE, MAP_FREEZE = 21, 22
LOOKUP_BATCH, LOOKUP_AND_DELETE_BATCH, UPDATE_BATCH, DELETE_BATCH = 24, 25, 26, 27

# map types
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, PERCPU_HASH, PERCPU_ARRAY = 1, 2, 3, 4, 5, 6
STACK_TRACE, LRU_HASH, LRU_PERCPU_HASH, LPM_TRIE = 7, 9, 10, 11
ARRAY_OF_MAPS, HASH_OF_MAPS, QUEUE, STACK, RINGBUF, BLOOM_FILTER = 12, 13, 22, 23, 27, 30

# map_flags
NO_PREALLOC, NO_COMMON_LRU, NUMA_NODE, RDONLY, WRONLY = 1, 2, 4, 8, 16
ZERO_SEED, RDONLY_PROG, WRONLY_PROG, MMAPABLE, PRESERVE_ELEMS, INNER_MAP = 64, 128, 256, 1024, 2048, 4096
# element flags
ANY, NOEXIST, EXIST, F_LOCK = 0, 1, 2, 4

CREATE_SIZE = 72          # offsetofend(union bpf_attr, map_extra)
ELEM_SIZE = 32            # offsetofend(union bpf_attr, flags)
BATCH_SIZE = 56           # offsetofend(union bpf_attr, batch.flags)
ATTR_BUF = 4096 + 64
INFO_SIZE_61 = 88         # sizeof(struct bpf_map_info) in the 6.1 uapi
PROT_READ, PROT_WRITE, MAP_SHARED = 1, 2, 1
PAGE = 4096
MAP_FAILED = ctypes.c_void_p(-1).value


def possible_cpus():
    with open("/sys/devices/system/cpu/possible") as f:
        n = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n = max(n, int(hi or lo) + 1)
        return n


NCPUS = possible_cpus()


ENOTSUPP = 524   # kernel-internal (include/linux/errno.h), but bpf() returns it; standard library only here


def ename(e):
    return "ENOTSUPP" if e == ENOTSUPP else errno.errorcode.get(e, str(e))


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def r8(n):
    return (n + 7) & ~7


class Case:
    def __init__(self, name):
        self.name = name
        self.trace = []
        self.fds = []
        self.pins = []
        self.ids = []        # ids of the maps this case created, in order
        self.maps = []       # mmaps (addr, len) to unmap

    # ---- raw call
    def bpf(self, cmd, attr, size):
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(cmd), attr, ctypes.c_uint(size))
        return r, (ctypes.get_errno() if r < 0 else 0)

    def rec(self, label, ret, err, out=None, fd=False):
        if fd and ret >= 0:
            self.fds.append(ret)
            res = "fd"
        else:
            res = ret
        self.trace.append([label, res, ename(err) if ret < 0 else "", out.hex() if isinstance(out, bytes) else out])
        return ret

    def note(self, label, value):
        self.trace.append([label, value])

    def sym(self, map_id):
        return f"map{self.ids.index(map_id)}" if map_id in self.ids else "other"

    @staticmethod
    def buf(data_or_size):
        if isinstance(data_or_size, int):
            return ctypes.create_string_buffer(max(data_or_size, 1))
        return ctypes.create_string_buffer(bytes(data_or_size), max(len(data_or_size), 1))

    @staticmethod
    def ptr(x):
        """bytes -> a buffer's address; int -> that raw address; None -> NULL."""
        if x is None:
            return 0, None
        if isinstance(x, int):
            return x, None
        b = Case.buf(x)
        return ctypes.addressof(b), b

    # ---- MAP_CREATE
    def create(self, label, mtype, ks, vs, n, flags=0, inner=0, name=b"", extra=0, size=CREATE_SIZE,
               poke=None, numa=0, quiet=False):
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<IIIIIII", a, 0, mtype, ks, vs, n, flags, inner, numa)
        a[28:28 + len(name)] = name
        struct.pack_into("<Q", a, 64, extra)
        if poke is not None:
            a[poke] = 0x5A
        r, e = self.bpf(MAP_CREATE, a, size)
        if r >= 0:
            mid = self.info_id(r)
            if mid is not None:
                self.ids.append(mid)
        if quiet:
            if r >= 0:
                self.fds.append(r)
            else:
                raise RuntimeError(f"create {label} failed: {ename(e)}")
            return r
        self.rec(label, r, e, fd=True)
        return r if r >= 0 else None

    def info_raw(self, fd, info_len=INFO_SIZE_61, tail_poke=None):
        info = ctypes.create_string_buffer(max(info_len, 1))
        if tail_poke is not None:
            info[tail_poke] = 1
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<IIQ", a, 0, fd, info_len, ctypes.addressof(info))
        r, e = self.bpf(OBJ_GET_INFO_BY_FD, a, 16)
        return r, e, info.raw, struct.unpack_from("<I", a, 4)[0]

    def info_id(self, fd):
        r, _e, raw, _l = self.info_raw(fd)
        return struct.unpack_from("<I", raw, 4)[0] if r == 0 else None

    def info(self, label, fd, info_len=INFO_SIZE_61, tail_poke=None):
        """Info bytes with the id masked, and the info_len written back."""
        r, e, raw, ln = self.info_raw(fd, info_len, tail_poke)
        out = None
        if r == 0:
            raw = bytearray(raw[:min(info_len, INFO_SIZE_61)])
            if len(raw) >= 8:
                raw[4:8] = b"\xee" * 4
            out = bytes(raw)
        self.rec(label, r, e, out)
        self.note(label + ".info_len", ln)
        return r

    # ---- element commands
    def elem(self, cmd, label, fd, key=None, value=None, flags=0, out_size=0, size=ELEM_SIZE, poke=None,
             record=True):
        """value: bytes (input), an int address, or None; out_size > 0
        allocates an output buffer there (value/next_key) and records it."""
        kp, kb = self.ptr(key)
        ob = None
        if out_size:
            ob = self.buf(out_size)
            vp = ctypes.addressof(ob)
        else:
            vp, _vb = self.ptr(value)
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<IIQQQ", a, 0, fd, 0, kp, vp, flags)
        if poke is not None:
            a[poke] = 0x5A
        r, e = self.bpf(cmd, a, size)
        out = ob.raw[:out_size] if ob is not None and r == 0 else None
        if record:
            self.rec(label, r, e, out)
        return r, out

    def lookup(self, label, fd, key, vs, flags=0, **kw):
        return self.elem(LOOKUP, label, fd, key, flags=flags, out_size=vs, **kw)

    def update(self, label, fd, key, value, flags=0, **kw):
        return self.elem(UPDATE, label, fd, key, value, flags=flags, **kw)[0]

    def delete(self, label, fd, key, **kw):
        return self.elem(DELETE, label, fd, key, **kw)[0]

    def next_key(self, label, fd, key, ks, **kw):
        return self.elem(NEXT_KEY, label, fd, key, out_size=ks, **kw)

    def lookup_and_delete(self, label, fd, key, vs, flags=0, **kw):
        return self.elem(LOOKUP_AND_DELETE, label, fd, key, flags=flags, out_size=vs, **kw)

    def keys(self, fd, ks):
        """All keys by get_next_key from NULL (not recorded), in order."""
        out, k = [], None
        for _ in range(10000):
            r, nk = self.next_key("", fd, k, ks, record=False)
            if r:
                break
            out.append(nk)
            k = nk
        return out

    def freeze(self, label, fd, size=4):
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<I", a, 0, fd)
        r, e = self.bpf(MAP_FREEZE, a, size)
        return self.rec(label, r, e)

    # ---- batch commands
    def batch(self, cmd, label, fd, count, ks, vs, keys=b"", values=b"", in_batch=None, elem_flags=0, flags=0,
              tok=8, size=BATCH_SIZE, poke=None, record_out=True):
        """Returns (ret, count written back, keys out, values out, out_batch)."""
        kb = self.buf(keys if keys else max(count, 1) * ks)
        vb = self.buf(values if values else max(count, 1) * vs)
        ib = self.buf(in_batch) if in_batch is not None else None
        obb = self.buf(tok)
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<QQQQIIQQ", a, 0, ctypes.addressof(ib) if ib is not None else 0, ctypes.addressof(obb),
                         ctypes.addressof(kb), ctypes.addressof(vb), count, fd, elem_flags, flags)
        if poke is not None:
            a[poke] = 0x5A
        r, e = self.bpf(cmd, a, size)
        cnt = struct.unpack_from("<I", a, 32)[0]
        self.rec(label, r, e)
        self.note(label + ".count", cnt)
        return r, cnt, kb.raw, vb.raw, obb.raw

    # ---- pins
    def pin_path(self, tag=""):
        p = f"/sys/fs/bpf/mc_{os.getpid()}_{self.name}{tag}"
        self.pins.append(p)
        return p

    def obj(self, cmd, label, path, fd=0, file_flags=0, size=16):
        if isinstance(path, str):
            path = path.encode()
        pp, pb = self.ptr(path + b"\0" if isinstance(path, bytes) else path)
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<QII", a, 0, pp, fd, file_flags)
        r, e = self.bpf(cmd, a, size)
        return self.rec(label, r, e, fd=(cmd == OBJ_GET))

    def unlink(self, label, path):
        try:
            os.unlink(path)
            self.note(label, "ok")
        except OSError as e:
            self.note(label, ename(e.errno))

    def close(self):
        for addr, ln in self.maps:
            libc.munmap(addr, ln)
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for p in self.pins:
            try:
                os.unlink(p)
            except OSError:
                pass


CASES = {}


def case(fn):
    CASES[fn.__name__[2:]] = fn
    return fn


def kv(n, ks=4, vs=8, base=0):
    return [(struct.pack("<I", base + i).ljust(ks, b"\0"), struct.pack("<Q", 1000 + base + i).ljust(vs, b"\0"))
            for i in range(n)]


# ====================================================== one case per map type
# create with typical attrs, then info, fdinfo and the fd's link target
TYPES = {
    "hash": (HASH, 4, 8, 16, 0), "hash_no_prealloc": (HASH, 4, 8, 16, NO_PREALLOC),
    "array": (ARRAY, 4, 8, 16, 0), "array_mmapable": (ARRAY, 4, 8, 16, MMAPABLE),
    "percpu_hash": (PERCPU_HASH, 4, 12, 16, 0), "percpu_array": (PERCPU_ARRAY, 4, 12, 16, 0),
    "lru_hash": (LRU_HASH, 4, 8, 16, 0), "lru_percpu_hash": (LRU_PERCPU_HASH, 4, 8, 16, 0),
    "lru_hash_no_common": (LRU_HASH, 4, 8, 16, NO_COMMON_LRU),
    "queue": (QUEUE, 0, 8, 16, 0), "stack": (STACK, 0, 8, 16, 0),
    "bloom_filter": (BLOOM_FILTER, 0, 8, 100, 0), "lpm_trie": (LPM_TRIE, 8, 8, 16, NO_PREALLOC),
    "stack_trace": (STACK_TRACE, 4, 64, 16, 0), "ringbuf": (RINGBUF, 0, 0, 4 * PAGE, 0),
    "perf_event_array": (PERF_EVENT_ARRAY, 4, 4, 2, 0), "prog_array": (PROG_ARRAY, 4, 4, 4, 0),
}

FDINFO_KEYS = ("map_type", "key_size", "value_size", "max_entries", "map_flags", "map_extra", "memlock", "frozen")


def fdinfo(c, label, fd):
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            lines = [ln for ln in f.read().splitlines() if ln.split(":")[0] in FDINFO_KEYS]
    except OSError as e:
        lines = ["error " + ename(e.errno)]
    c.note(label, lines)


def describe(c, fd, tag):
    c.info(tag + ".info", fd)
    fdinfo(c, tag + ".fdinfo", fd)
    try:
        c.note(tag + ".readlink", os.readlink(f"/proc/self/fd/{fd}"))
    except OSError as e:
        c.note(tag + ".readlink", "error " + ename(e.errno))


def _type_case(tname, spec):
    def fn(c):
        t, ks, vs, n, fl = spec
        fd = c.create("create", t, ks, vs, n, fl, name=tname[:15].encode())
        if fd is not None:
            describe(c, fd, "type")
    fn.__name__ = "c_type_" + tname
    return fn


for _n, _s in TYPES.items():
    case(_type_case(_n, _s))


@case
def c_type_array_of_maps(c):
    inner = c.create("inner", ARRAY, 4, 8, 4)
    fd = c.create("create", ARRAY_OF_MAPS, 4, 4, 4, inner=inner, name=b"aom")
    describe(c, fd, "type")


@case
def c_type_hash_of_maps(c):
    inner = c.create("inner", HASH, 4, 8, 4)
    fd = c.create("create", HASH_OF_MAPS, 4, 4, 4, inner=inner, name=b"hom")
    describe(c, fd, "type")


# ====================================================== MAP_CREATE errors
BAD_CREATES = {
    "hash_zero_key": dict(t=HASH, ks=0, vs=8, n=4),
    "hash_zero_value": dict(t=HASH, ks=4, vs=0, n=4),
    "hash_zero_entries": dict(t=HASH, ks=4, vs=8, n=0),
    "array_zero_entries": dict(t=ARRAY, ks=4, vs=8, n=0),
    "array_key_8": dict(t=ARRAY, ks=8, vs=8, n=4),
    "hash_unknown_flag": dict(t=HASH, ks=4, vs=8, n=4, fl=1 << 20),
    "array_unknown_flag": dict(t=ARRAY, ks=4, vs=8, n=4, fl=1 << 20),
    "array_no_prealloc": dict(t=ARRAY, ks=4, vs=8, n=4, fl=NO_PREALLOC),
    "hash_no_common_lru": dict(t=HASH, ks=4, vs=8, n=4, fl=NO_COMMON_LRU),
    "lru_no_prealloc": dict(t=LRU_HASH, ks=4, vs=8, n=4, fl=NO_PREALLOC),
    "percpu_array_mmapable": dict(t=PERCPU_ARRAY, ks=4, vs=8, n=4, fl=MMAPABLE),
    "hash_mmapable": dict(t=HASH, ks=4, vs=8, n=4, fl=MMAPABLE),
    "array_preserve_elems": dict(t=ARRAY, ks=4, vs=8, n=4, fl=PRESERVE_ELEMS),
    "perf_array_preserve_elems": dict(t=PERF_EVENT_ARRAY, ks=4, vs=4, n=2, fl=PRESERVE_ELEMS),
    "rdonly_and_wronly": dict(t=HASH, ks=4, vs=8, n=4, fl=RDONLY | WRONLY),
    "rdonly_prog_and_wronly_prog": dict(t=ARRAY, ks=4, vs=8, n=4, fl=RDONLY_PROG | WRONLY_PROG),
    "hash_key_513": dict(t=HASH, ks=513, vs=8, n=4),
    "hash_key_512": dict(t=HASH, ks=512, vs=8, n=4),
    "array_value_too_big": dict(t=ARRAY, ks=4, vs=1 << 30, n=1),
    "percpu_array_value_too_big": dict(t=PERCPU_ARRAY, ks=4, vs=40000, n=1),
    "bad_type_1000": dict(t=1000, ks=4, vs=8, n=4),
    "type_unspec": dict(t=0, ks=4, vs=8, n=4),
    "map_extra_on_hash": dict(t=HASH, ks=4, vs=8, n=4, extra=1),
    "name_bad_chars": dict(t=HASH, ks=4, vs=8, n=4, name=b"bad name!"),
    "name_not_terminated": dict(t=HASH, ks=4, vs=8, n=4, name=b"a" * 16),
    "name_15_chars": dict(t=HASH, ks=4, vs=8, n=4, name=b"abc.DEF_123.xyz"),
    "queue_with_key": dict(t=QUEUE, ks=4, vs=8, n=4),
    "queue_zero_value": dict(t=QUEUE, ks=0, vs=0, n=4),
    "stack_no_prealloc": dict(t=STACK, ks=0, vs=8, n=4, fl=NO_PREALLOC),
    "bloom_with_key": dict(t=BLOOM_FILTER, ks=4, vs=8, n=4),
    "bloom_nr_hashes_16": dict(t=BLOOM_FILTER, ks=0, vs=8, n=4, extra=16),
    "bloom_nr_hashes_15": dict(t=BLOOM_FILTER, ks=0, vs=8, n=4, extra=15),
    "lpm_prealloc": dict(t=LPM_TRIE, ks=8, vs=8, n=4),
    "lpm_key_4": dict(t=LPM_TRIE, ks=4, vs=8, n=4, fl=NO_PREALLOC),
    "ringbuf_not_pow2": dict(t=RINGBUF, ks=0, vs=0, n=3 * PAGE),
    "ringbuf_with_key": dict(t=RINGBUF, ks=4, vs=0, n=4 * PAGE),
    "stack_trace_value_4": dict(t=STACK_TRACE, ks=4, vs=4, n=4),
    "stack_trace_key_8": dict(t=STACK_TRACE, ks=8, vs=64, n=4),
    "perf_array_value_8": dict(t=PERF_EVENT_ARRAY, ks=4, vs=8, n=2),
    "prog_array_value_8": dict(t=PROG_ARRAY, ks=4, vs=8, n=2),
    "numa_node_0": dict(t=HASH, ks=4, vs=8, n=4, fl=NUMA_NODE, numa=0),
    "zero_seed_hash": dict(t=HASH, ks=4, vs=8, n=4, fl=ZERO_SEED),
    "zero_seed_array": dict(t=ARRAY, ks=4, vs=8, n=4, fl=ZERO_SEED),
    "inner_map_flag_array": dict(t=ARRAY, ks=4, vs=8, n=4, fl=INNER_MAP),
    # a non-zero byte after map_extra, inside the union (CHECK_ATTR)
    "garbage_after_map_extra": dict(t=HASH, ks=4, vs=8, n=4, size=120, poke=110),
    "garbage_past_union": dict(t=HASH, ks=4, vs=8, n=4, size=4096, poke=4000),
    "size_4097": dict(t=HASH, ks=4, vs=8, n=4, size=4097),
}


def _bad_create(cname, d):
    def fn(c):
        c.create("create", d["t"], d["ks"], d["vs"], d["n"], d.get("fl", 0), name=d.get("name", b""),
                 extra=d.get("extra", 0), size=d.get("size", CREATE_SIZE), poke=d.get("poke"), numa=d.get("numa", 0))
    fn.__name__ = "c_create_" + cname
    return fn


for _n, _d in BAD_CREATES.items():
    case(_bad_create(_n, _d))


@case
def c_create_array_of_maps_bad_inner(c):
    c.create("inner_not_a_fd", ARRAY_OF_MAPS, 4, 4, 4, inner=9999)
    dn = os.open("/dev/null", os.O_RDONLY)
    c.fds.append(dn)
    c.create("inner_dev_null", ARRAY_OF_MAPS, 4, 4, 4, inner=dn)
    inner = c.create("inner_aom_inner", ARRAY, 4, 8, 4)
    aom = c.create("aom", ARRAY_OF_MAPS, 4, 4, 4, inner=inner)
    c.create("inner_is_map_in_map", HASH_OF_MAPS, 4, 4, 4, inner=aom)
    c.create("aom_value_8", ARRAY_OF_MAPS, 4, 8, 4, inner=inner)


# ====================================================== hash elements
@case
def c_hash_update_flags(c):
    fd = c.create("create", HASH, 4, 8, 8)
    c.update("any_new", fd, u32(1), u64(10), ANY)
    c.update("noexist_existing", fd, u32(1), u64(11), NOEXIST)
    c.update("exist_missing", fd, u32(2), u64(12), EXIST)
    c.update("noexist_new", fd, u32(2), u64(13), NOEXIST)
    c.update("exist_existing", fd, u32(2), u64(14), EXIST)
    c.update("f_lock_no_spin_lock", fd, u32(1), u64(15), F_LOCK)
    c.update("unknown_flag_8", fd, u32(1), u64(16), 8)
    c.update("noexist_and_exist", fd, u32(1), u64(17), NOEXIST | EXIST)
    c.lookup("lookup1", fd, u32(1), 8)
    c.lookup("lookup2", fd, u32(2), 8)
    c.lookup("lookup_f_lock", fd, u32(1), 8, flags=F_LOCK)
    c.lookup("lookup_flag_8", fd, u32(1), 8, flags=8)


@case
def c_hash_lookup_delete(c):
    fd = c.create("create", HASH, 8, 16, 8)
    c.lookup("missing", fd, u64(5), 16)
    c.update("put", fd, u64(5), b"v" * 16)
    c.lookup("present", fd, u64(5), 16)
    c.delete("delete", fd, u64(5))
    c.delete("delete_again", fd, u64(5))
    c.lookup("after_delete", fd, u64(5), 16)
    c.delete("delete_null_key", fd, None)


@case
def c_hash_get_next_key(c):
    fd = c.create("create", HASH, 4, 8, 16)
    c.next_key("empty_null", fd, None, 4)
    for k, v in kv(5):
        c.update("put", fd, k, v)
    r, first = c.next_key("null", fd, None, 4, record=False)
    c.note("null_gives_a_key", [r, first in [k for k, _ in kv(5)]])
    r2, first2 = c.next_key("absent", fd, u32(999), 4, record=False)
    c.note("absent_gives_first", [r2, first2 == first])
    ks = c.keys(fd, 4)
    c.note("walk_sorted", sorted(k.hex() for k in ks))
    if ks:
        c.next_key("last", fd, ks[-1], 4)


@case
def c_hash_full(c):
    fd = c.create("create", HASH, 4, 8, 4)
    for k, v in kv(4):
        c.update("put", fd, k, v)
    c.update("fifth_any", fd, u32(100), u64(1), ANY)
    c.update("fifth_noexist", fd, u32(100), u64(1), NOEXIST)
    c.update("replace_existing_when_full", fd, u32(0), u64(7), ANY)
    c.delete("delete_one", fd, u32(1))
    c.update("fifth_after_delete", fd, u32(100), u64(1), ANY)
    c.note("count", len(c.keys(fd, 4)))


@case
def c_hash_no_prealloc_full(c):
    fd = c.create("create", HASH, 4, 8, 4, NO_PREALLOC)
    for k, v in kv(5):
        c.update("put", fd, k, v)
    c.update("replace", fd, u32(0), u64(5), EXIST)
    c.note("count", len(c.keys(fd, 4)))


@case
def c_hash_lookup_and_delete(c):
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(3), u64(33))
    c.lookup_and_delete("lad", fd, u32(3), 8)
    c.lookup_and_delete("lad_again", fd, u32(3), 8)
    c.lookup("after", fd, u32(3), 8)
    c.lookup_and_delete("lad_unknown_flag", fd, u32(3), 8, flags=2)
    c.lookup_and_delete("lad_f_lock", fd, u32(3), 8, flags=F_LOCK)


@case
def c_hash_bad_pointers(c):
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(1), u64(1))
    c.lookup("lookup_key_8", fd, 8, 8)
    c.elem(LOOKUP, "lookup_value_8", fd, u32(1), 8)
    c.update("update_key_8", fd, 8, u64(1))
    c.update("update_value_8", fd, u32(1), 8)
    c.delete("delete_key_8", fd, 8)
    c.next_key("next_key_key_8", fd, 8, 4)
    c.elem(NEXT_KEY, "next_key_out_8", fd, None, 8)
    c.elem(LOOKUP_AND_DELETE, "lad_value_8", fd, u32(1), 8)
    c.lookup("still_there", fd, u32(1), 8)


@case
def c_hash_key_size_big(c):
    fd = c.create("create", HASH, 256, 8, 4)
    c.update("put", fd, b"k" * 256, u64(9))
    c.lookup("get", fd, b"k" * 256, 8)
    c.next_key("next", fd, None, 256)


@case
def c_hash_value_big(c):
    fd = c.create("create", HASH, 4, 4096, 2)
    c.update("put", fd, u32(1), bytes(range(256)) * 16)
    c.lookup("get", fd, u32(1), 4096)


@case
def c_hash_no_prealloc_ops(c):
    fd = c.create("create", HASH, 4, 8, 8, NO_PREALLOC)
    for k, v in kv(3):
        c.update("put", fd, k, v)
    c.lookup_and_delete("lad", fd, u32(1), 8)
    c.note("keys", sorted(k.hex() for k in c.keys(fd, 4)))
    c.lookup("get", fd, u32(2), 8)


# ====================================================== LRU
@case
def c_lru_evicts(c):
    fd = c.create("create", LRU_HASH, 4, 8, 64)
    fails = []
    for k, v in kv(200):
        r = c.update("", fd, k, v, record=False)
        if r:
            fails.append(r)
    c.note("all_updates_ok", not fails)
    n = len(c.keys(fd, 4))
    c.note("count_le_max", n <= 64)
    c.note("count_gt_0", n > 0)
    c.lookup("last_inserted_present", fd, u32(199), 8)
    c.update("noexist_last", fd, u32(199), u64(1), NOEXIST)
    c.update("exist_absent", fd, u32(100000), u64(1), EXIST)


@case
def c_lru_percpu_evicts(c):
    fd = c.create("create", LRU_PERCPU_HASH, 4, 8, 32)
    fails = [1 for k, v in kv(100) if c.update("", fd, k, v * NCPUS, record=False)]
    c.note("all_updates_ok", not fails)
    n = len(c.keys(fd, 4))
    c.note("count_le_max", n <= 32)
    c.lookup("last_inserted_present", fd, u32(99), 8 * NCPUS)


@case
def c_lru_basic(c):
    fd = c.create("create", LRU_HASH, 4, 8, 128)
    c.update("put", fd, u32(1), u64(1))
    c.update("noexist", fd, u32(1), u64(2), NOEXIST)
    c.lookup("get", fd, u32(1), 8)
    c.lookup_and_delete("lad", fd, u32(1), 8)
    c.delete("delete_missing", fd, u32(1))


# ====================================================== arrays
@case
def c_array_ops(c):
    fd = c.create("create", ARRAY, 4, 12, 4)
    c.lookup("initial_zero", fd, u32(2), 12)
    c.update("put", fd, u32(2), b"abcdefghijkl")
    c.lookup("get", fd, u32(2), 12)
    c.update("noexist", fd, u32(2), b"x" * 12, NOEXIST)
    c.update("exist", fd, u32(3), b"y" * 12, EXIST)
    c.update("out_of_range", fd, u32(4), b"z" * 12)
    c.lookup("lookup_out_of_range", fd, u32(4), 12)
    c.delete("delete", fd, u32(2))
    c.delete("delete_out_of_range", fd, u32(9))
    c.update("f_lock", fd, u32(1), b"a" * 12, F_LOCK)
    c.update("flag_8", fd, u32(1), b"a" * 12, 8)
    c.lookup_and_delete("lad", fd, u32(2), 12)


@case
def c_array_get_next_key(c):
    fd = c.create("create", ARRAY, 4, 8, 4)
    c.next_key("null", fd, None, 4)
    c.next_key("from_1", fd, u32(1), 4)
    c.next_key("last", fd, u32(3), 4)
    c.next_key("out_of_range", fd, u32(100), 4)
    c.next_key("key_8", fd, 8, 4)


@case
def c_percpu_array_layout(c):
    fd = c.create("create", PERCPU_ARRAY, 4, 12, 4)
    c.lookup("zero", fd, u32(0), r8(12) * NCPUS)
    val = b"".join(bytes([0x10 + i]) * 12 + b"\xaa" * 4 for i in range(NCPUS))
    c.update("put", fd, u32(1), val)
    c.lookup("get", fd, u32(1), r8(12) * NCPUS)
    c.update("noexist", fd, u32(1), val, NOEXIST)
    c.delete("delete", fd, u32(1))


@case
def c_percpu_hash_layout(c):
    fd = c.create("create", PERCPU_HASH, 4, 4, 4)
    val = b"".join(struct.pack("<II", 7 + i, 0xbbbbbbbb) for i in range(NCPUS))
    c.update("put", fd, u32(1), val)
    c.lookup("get", fd, u32(1), 8 * NCPUS)
    c.lookup_and_delete("lad", fd, u32(1), 8 * NCPUS)
    c.lookup("gone", fd, u32(1), 8 * NCPUS)


@case
def c_lru_percpu_layout(c):
    fd = c.create("create", LRU_PERCPU_HASH, 4, 16, 4)
    val = b"".join(bytes([i + 1]) * 16 for i in range(NCPUS))
    c.update("put", fd, u32(1), val)
    c.lookup("get", fd, u32(1), 16 * NCPUS)


# ====================================================== queue / stack / bloom
def _qs(c, t):
    fd = c.create("create", t, 0, 8, 3)
    c.lookup("peek_empty", fd, None, 8)
    c.lookup_and_delete("pop_empty", fd, None, 8)
    for i in range(3):
        c.update("push", fd, None, u64(i + 1))
    c.update("push_full", fd, None, u64(9))
    c.update("push_full_exist", fd, None, u64(4), EXIST)
    c.update("push_noexist", fd, None, u64(5), NOEXIST)
    c.update("push_with_key", fd, u32(0), u64(5))
    c.lookup("peek", fd, None, 8)
    c.lookup("peek_with_key", fd, u32(0), 8)
    for i in range(4):
        c.lookup_and_delete("pop", fd, None, 8)
    c.lookup_and_delete("pop_with_flags", fd, None, 8, flags=F_LOCK)
    c.delete("delete", fd, None)
    c.next_key("next_key", fd, None, 4)


@case
def c_queue_order(c):
    _qs(c, QUEUE)


@case
def c_stack_order(c):
    _qs(c, STACK)


@case
def c_bloom_filter(c):
    fd = c.create("create", BLOOM_FILTER, 0, 8, 1000, extra=3)
    for v in (11, 22, 33):
        c.update("push", fd, None, u64(v))
    c.update("push_exist_flag", fd, None, u64(44), EXIST)
    c.update("push_noexist_flag", fd, None, u64(44), NOEXIST)
    c.elem(LOOKUP, "peek_present", fd, None, u64(22))
    c.elem(LOOKUP, "peek_absent", fd, None, u64(12345))
    c.elem(LOOKUP, "peek_with_key", fd, u32(0), u64(22))
    c.delete("delete", fd, None)
    c.next_key("next_key", fd, None, 4)
    c.lookup_and_delete("lad", fd, None, 8)


# ====================================================== lpm trie
def lpm_key(plen, ip):
    return struct.pack("<I", plen) + bytes(ip)


@case
def c_lpm_trie(c):
    fd = c.create("create", LPM_TRIE, 8, 8, 16, NO_PREALLOC)
    c.update("p8", fd, lpm_key(8, [10, 0, 0, 0]), u64(8))
    c.update("p16", fd, lpm_key(16, [10, 1, 0, 0]), u64(16))
    c.update("p24", fd, lpm_key(24, [10, 1, 1, 0]), u64(24))
    c.update("p16_noexist", fd, lpm_key(16, [10, 1, 0, 0]), u64(99), NOEXIST)
    c.update("prefix_too_long", fd, lpm_key(33, [10, 1, 1, 0]), u64(1))
    c.update("unknown_flag", fd, lpm_key(32, [10, 1, 1, 0]), u64(1), 4)
    for ip in ([10, 1, 1, 7], [10, 1, 2, 7], [10, 2, 0, 1], [11, 0, 0, 1]):
        c.lookup("lookup_" + ".".join(map(str, ip)), fd, lpm_key(32, ip), 8)
    c.lookup("lookup_plen_8", fd, lpm_key(8, [10, 1, 1, 1]), 8)
    c.lookup("lookup_plen_33", fd, lpm_key(33, [10, 1, 1, 1]), 8)
    k = None
    for _ in range(5):
        r, k = c.next_key("walk", fd, k, 8)
        if r:
            break
    c.delete("delete_p16", fd, lpm_key(16, [10, 1, 0, 0]))
    c.delete("delete_missing", fd, lpm_key(16, [10, 9, 0, 0]))
    c.lookup("after_delete", fd, lpm_key(32, [10, 1, 2, 7]), 8)
    c.lookup_and_delete("lad", fd, lpm_key(24, [10, 1, 1, 0]), 8)


# ====================================================== stack_trace, ringbuf, fd maps
@case
def c_stack_trace_ops(c):
    fd = c.create("create", STACK_TRACE, 4, 64, 8)
    c.lookup("lookup_empty", fd, u32(0), 64)
    c.update("update", fd, u32(0), bytes(64))
    c.delete("delete", fd, u32(0))
    c.next_key("next_key", fd, None, 4)
    c.lookup("lookup_out_of_range", fd, u32(100), 64)


@case
def c_ringbuf_ops(c):
    fd = c.create("create", RINGBUF, 0, 0, 4 * PAGE)
    c.lookup("lookup", fd, None, 8)
    c.update("update", fd, None, u64(0))
    c.delete("delete", fd, None)
    c.next_key("next_key", fd, None, 4)
    c.lookup_and_delete("lad", fd, None, 8)


@case
def c_perf_event_array_ops(c):
    fd = c.create("create", PERF_EVENT_ARRAY, 4, 4, 2)
    other = c.create("other_map", ARRAY, 4, 4, 1)
    c.lookup("lookup", fd, u32(0), 4)
    c.update("update_bad_fd", fd, u32(0), u32(9999))
    c.update("update_out_of_range", fd, u32(5), u32(other))
    c.delete("delete_empty", fd, u32(0))
    c.delete("delete_out_of_range", fd, u32(5))
    c.next_key("next_key_null", fd, None, 4)
    c.next_key("next_key_last", fd, u32(1), 4)


@case
def c_perf_event_array_map_fd_value(c):
    fd = c.create("create", PERF_EVENT_ARRAY, 4, 4, 2)
    other = c.create("other_map", ARRAY, 4, 4, 1)
    c.update("update_map_fd", fd, u32(0), u32(other))


@case
def c_prog_array_ops(c):
    fd = c.create("create", PROG_ARRAY, 4, 4, 4)
    other = c.create("other_map", ARRAY, 4, 4, 1)
    c.lookup("lookup_empty", fd, u32(0), 4)
    c.update("update_map_fd", fd, u32(0), u32(other))
    c.update("update_bad_fd", fd, u32(0), u32(9999))
    c.delete("delete_empty", fd, u32(0))
    c.delete("delete_out_of_range", fd, u32(4))
    c.next_key("next_key", fd, u32(0), 4)
    c.lookup_and_delete("lad", fd, u32(0), 4)


def _map_in_map(c, t):
    inner = c.create("inner", ARRAY, 4, 8, 4)
    outer = c.create("outer", t, 4, 4, 4, inner=inner)
    other = c.create("other_inner", ARRAY, 4, 8, 4)
    wrong = c.create("wrong_inner", ARRAY, 4, 16, 4)
    wrong_n = c.create("wrong_max_entries", ARRAY, 4, 8, 8)
    hmap = c.create("hash_inner", HASH, 4, 8, 4)
    c.lookup("lookup_empty", outer, u32(1), 4)
    c.update("put", outer, u32(1), u32(other))
    r, out = c.lookup("lookup", outer, u32(1), 4, record=False)
    c.note("lookup_gives_id_of", [r, c.sym(struct.unpack("<I", out)[0]) if out else None])
    c.update("put_wrong_value_size", outer, u32(2), u32(wrong))
    c.update("put_wrong_max_entries", outer, u32(2), u32(wrong_n))
    c.update("put_wrong_type", outer, u32(2), u32(hmap))
    c.update("put_bad_fd", outer, u32(2), u32(9999))
    c.update("put_out_of_range", outer, u32(4), u32(other))
    if t == HASH_OF_MAPS:     # hash order: which key comes first is random
        r, k = c.next_key("", outer, None, 4, record=False)
        c.note("next_key_null_sorted_keys", [r, sorted(x.hex() for x in c.keys(outer, 4))])
    else:
        c.next_key("next_key_null", outer, None, 4)
    c.delete("delete", outer, u32(1))
    c.delete("delete_again", outer, u32(1))
    c.lookup("lookup_after_delete", outer, u32(1), 4)


@case
def c_array_of_maps_ops(c):
    _map_in_map(c, ARRAY_OF_MAPS)


@case
def c_hash_of_maps_ops(c):
    _map_in_map(c, HASH_OF_MAPS)


# ====================================================== freeze, access flags
@case
def c_freeze(c):
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(1), u64(1))
    c.freeze("freeze", fd)
    c.update("update_frozen", fd, u32(1), u64(2))
    c.update("update_frozen_new", fd, u32(2), u64(2))
    c.delete("delete_frozen", fd, u32(1))
    c.lookup("lookup_frozen", fd, u32(1), 8)
    c.next_key("next_key_frozen", fd, None, 4)
    c.lookup_and_delete("lad_frozen", fd, u32(1), 8)
    c.freeze("freeze_twice", fd)
    fdinfo(c, "fdinfo", fd)


@case
def c_freeze_bad(c):
    c.freeze("bad_fd", 9999)
    dn = os.open("/dev/null", os.O_RDONLY)
    c.fds.append(dn)
    c.freeze("dev_null", dn)
    fd = c.create("create", ARRAY, 4, 8, 4)
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<II", a, 0, fd, 1)
    r, e = c.bpf(MAP_FREEZE, a, 8)
    c.rec("garbage_after_map_fd", r, e)
    c.freeze("ok", fd)


@case
def c_freeze_rdonly_map(c):
    fd = c.create("create", ARRAY, 4, 8, 4, RDONLY)
    c.freeze("freeze_rdonly", fd)


@case
def c_rdonly_map(c):
    fd = c.create("create", HASH, 4, 8, 4, RDONLY)
    c.update("update", fd, u32(1), u64(1))
    c.lookup("lookup", fd, u32(1), 8)
    c.delete("delete", fd, u32(1))
    c.next_key("next_key", fd, None, 4)
    c.lookup_and_delete("lad", fd, u32(1), 8)
    c.info("info", fd)


@case
def c_wronly_map(c):
    fd = c.create("create", HASH, 4, 8, 4, WRONLY)
    c.update("update", fd, u32(1), u64(1))
    c.lookup("lookup", fd, u32(1), 8)
    c.next_key("next_key", fd, None, 4)
    c.delete("delete", fd, u32(1))
    c.lookup_and_delete("lad", fd, u32(1), 8)
    c.freeze("freeze", fd)


@case
def c_rdonly_prog_map(c):
    fd = c.create("create", ARRAY, 4, 8, 4, RDONLY_PROG)
    c.update("update", fd, u32(1), u64(5))
    c.lookup("lookup", fd, u32(1), 8)


# ====================================================== attr garbage, bad fds
@case
def c_attr_garbage_elem(c):
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(1), u64(1))
    c.lookup("byte_after_flags", fd, u32(1), 8, size=40, poke=32)
    c.update("update_byte_after_flags", fd, u32(1), u64(2), size=40, poke=36)
    c.delete("delete_byte_in_value", fd, u32(1), size=ELEM_SIZE, poke=16)
    c.next_key("next_key_byte_in_flags", fd, None, 4, size=ELEM_SIZE, poke=24)
    c.lookup("past_union_4096", fd, u32(1), 8, size=4096, poke=4000)
    c.lookup("size_4097", fd, u32(1), 8, size=4097)
    c.lookup("size_4096_zero_tail", fd, u32(1), 8, size=4096)
    c.lookup("size_16_no_value", fd, u32(1), 8, size=16)
    c.lookup("size_0", fd, u32(1), 8, size=0)


@case
def c_attr_union_size(c):
    """The smallest offset at which a non-zero byte gives E2BIG rather than
    EINVAL (MAP_FREEZE reads only map_fd): sizeof(union bpf_attr)."""
    fd = c.create("create", ARRAY, 4, 8, 1)
    found = None
    for off in range(8, 512, 8):
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<I", a, 0, fd)
        a[off] = 1
        r, e = c.bpf(MAP_FREEZE, a, 1024)
        if e == errno.E2BIG:
            found = off
            break
    c.note("first_e2big_offset", found)


@case
def c_bad_fds(c):
    dn = os.open("/dev/null", os.O_RDONLY)
    c.fds.append(dn)
    c.lookup("lookup_ebadf", 9999, u32(0), 8)
    c.lookup("lookup_dev_null", dn, u32(0), 8)
    c.update("update_ebadf", 9999, u32(0), u64(0))
    c.update("update_dev_null", dn, u32(0), u64(0))
    c.delete("delete_dev_null", dn, u32(0))
    c.next_key("next_key_ebadf", 9999, None, 4)
    c.lookup_and_delete("lad_dev_null", dn, u32(0), 8)
    c.batch(LOOKUP_BATCH, "batch_ebadf", 9999, 4, 4, 8)
    c.batch(LOOKUP_BATCH, "batch_dev_null", dn, 4, 4, 8)
    c.info("info_ebadf", 9999)
    c.info("info_dev_null", dn)
    c.lookup("lookup_negative_fd", -1 & 0xFFFFFFFF, u32(0), 8)


@case
def c_closed_fd(c):
    fd = c.create("create", HASH, 4, 8, 4)
    os.close(fd)
    c.fds.remove(fd)
    c.lookup("lookup_closed", fd, u32(0), 8)


# ====================================================== batch
@case
def c_hash_lookup_batch(c):
    fd = c.create("create", HASH, 4, 8, 32)
    for k, v in kv(10):
        c.update("", fd, k, v, record=False)
    c.batch(LOOKUP_BATCH, "count_0", fd, 0, 4, 8)
    r, cnt, keys, vals, _ = c.batch(LOOKUP_BATCH, "all", fd, 32, 4, 8)
    c.note("all_set", sorted((keys[i * 4:i * 4 + 4] + vals[i * 8:i * 8 + 8]).hex() for i in range(cnt)))
    # in pieces of 4, resuming from the token, until ENOENT
    got, tok, calls, last = [], None, 0, None
    while calls < 20:
        calls += 1
        r, cnt, keys, vals, out = _quiet_batch(c, LOOKUP_BATCH, fd, 4, 4, 8, tok)
        got += [(keys[i * 4:i * 4 + 4] + vals[i * 8:i * 8 + 8]).hex() for i in range(cnt)]
        last = r
        if r:
            break
        tok = out[:4]
    c.note("pieces_set", sorted(got))
    c.note("pieces_end", ename(last) if last else last)
    c.batch(LOOKUP_BATCH, "flags_1", fd, 4, 4, 8, flags=1)
    c.batch(LOOKUP_BATCH, "elem_flags_f_lock", fd, 4, 4, 8, elem_flags=F_LOCK)
    c.batch(LOOKUP_BATCH, "elem_flags_2", fd, 4, 4, 8, elem_flags=2)
    c.batch(LOOKUP_BATCH, "garbage_after_flags", fd, 4, 4, 8, size=64, poke=60)


def _quiet_batch(c, cmd, fd, count, ks, vs, tok, tok_size=8):
    """A batch call not recorded: (ret or -errno, count, keys, values, out_batch)."""
    kb, vb = c.buf(count * ks), c.buf(count * vs)
    ib = c.buf(tok) if tok is not None else None
    obb = c.buf(tok_size)
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<QQQQIIQQ", a, 0, ctypes.addressof(ib) if ib is not None else 0, ctypes.addressof(obb),
                     ctypes.addressof(kb), ctypes.addressof(vb), count, fd, 0, 0)
    r, e = c.bpf(cmd, a, BATCH_SIZE)
    return (r if r >= 0 else -e), struct.unpack_from("<I", a, 32)[0], kb.raw, vb.raw, obb.raw


@case
def c_hash_lookup_batch_empty(c):
    fd = c.create("create", HASH, 4, 8, 8)
    c.batch(LOOKUP_BATCH, "empty", fd, 4, 4, 8)
    c.batch(LOOKUP_AND_DELETE_BATCH, "lad_empty", fd, 4, 4, 8)


@case
def c_hash_lookup_and_delete_batch(c):
    fd = c.create("create", HASH, 4, 8, 32)
    for k, v in kv(6):
        c.update("", fd, k, v, record=False)
    r, cnt, keys, vals, _ = c.batch(LOOKUP_AND_DELETE_BATCH, "all", fd, 32, 4, 8)
    c.note("set", sorted((keys[i * 4:i * 4 + 4] + vals[i * 8:i * 8 + 8]).hex() for i in range(cnt)))
    c.note("left", len(c.keys(fd, 4)))
    c.batch(LOOKUP_AND_DELETE_BATCH, "count_0", fd, 0, 4, 8)


@case
def c_hash_update_batch(c):
    fd = c.create("create", HASH, 4, 8, 8)
    pairs = kv(5)
    keys = b"".join(k for k, _ in pairs)
    vals = b"".join(v for _, v in pairs)
    c.batch(UPDATE_BATCH, "count_0", fd, 0, 4, 8, keys, vals)
    c.batch(UPDATE_BATCH, "five", fd, 5, 4, 8, keys, vals)
    c.lookup("get3", fd, u32(3), 8)
    c.batch(UPDATE_BATCH, "noexist_existing", fd, 5, 4, 8, keys, vals, elem_flags=NOEXIST)
    more = kv(6, base=10)
    c.batch(UPDATE_BATCH, "overflow", fd, 6, 4, 8, b"".join(k for k, _ in more), b"".join(v for _, v in more))
    c.note("count", len(c.keys(fd, 4)))
    c.batch(UPDATE_BATCH, "f_lock", fd, 1, 4, 8, keys[:4], vals[:8], elem_flags=F_LOCK)


@case
def c_hash_delete_batch(c):
    fd = c.create("create", HASH, 4, 8, 8)
    for k, v in kv(5):
        c.update("", fd, k, v, record=False)
    c.batch(DELETE_BATCH, "count_0", fd, 0, 4, 8, u32(0), u64(0))
    c.batch(DELETE_BATCH, "three", fd, 3, 4, 8, u32(0) + u32(1) + u32(2), bytes(24))
    c.batch(DELETE_BATCH, "missing_second", fd, 2, 4, 8, u32(3) + u32(77), bytes(16))
    c.note("keys", sorted(k.hex() for k in c.keys(fd, 4)))


@case
def c_array_lookup_batch(c):
    fd = c.create("create", ARRAY, 4, 8, 6)
    for k, v in kv(6):
        c.update("", fd, k, v, record=False)
    c.batch(LOOKUP_BATCH, "count_0", fd, 0, 4, 8)
    tok = None
    for i in range(4):
        r, cnt, keys, vals, out = c.batch(LOOKUP_BATCH, f"piece{i}", fd, 4, 4, 8, in_batch=tok, tok=4)
        c.note(f"piece{i}.data", [keys[:cnt * 4].hex(), vals[:cnt * 8].hex(), out.hex()])
        if r:
            break
        tok = out[:4]
    c.batch(LOOKUP_BATCH, "all", fd, 10, 4, 8, tok=4)
    c.batch(LOOKUP_BATCH, "flags_1", fd, 4, 4, 8, flags=1, tok=4)


@case
def c_array_batch_other(c):
    fd = c.create("create", ARRAY, 4, 8, 4)
    pairs = kv(3)
    c.batch(UPDATE_BATCH, "update", fd, 3, 4, 8, b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs))
    c.lookup("get2", fd, u32(2), 8)
    c.batch(UPDATE_BATCH, "update_out_of_range", fd, 2, 4, 8, u32(1) + u32(9), bytes(16))
    c.batch(UPDATE_BATCH, "update_noexist", fd, 1, 4, 8, u32(1), bytes(8), elem_flags=NOEXIST)
    c.batch(DELETE_BATCH, "delete", fd, 1, 4, 8, u32(1), bytes(8))
    c.batch(LOOKUP_AND_DELETE_BATCH, "lookup_and_delete", fd, 2, 4, 8)


@case
def c_percpu_hash_lookup_batch(c):
    fd = c.create("create", PERCPU_HASH, 4, 4, 8)
    for i in range(3):
        c.update("", fd, u32(i), b"".join(struct.pack("<II", 100 * i + cpu, 0) for cpu in range(NCPUS)),
                 record=False)
    vs = 8 * NCPUS
    r, cnt, keys, vals, _ = c.batch(LOOKUP_BATCH, "all", fd, 8, 4, vs)
    c.note("set", sorted((keys[i * 4:i * 4 + 4] + vals[i * vs:(i + 1) * vs]).hex() for i in range(cnt)))


@case
def c_batch_unsupported_types(c):
    q = c.create("queue", QUEUE, 0, 8, 4)
    c.batch(LOOKUP_BATCH, "queue_lookup", q, 2, 0, 8)
    c.batch(UPDATE_BATCH, "queue_update", q, 1, 0, 8, b"", bytes(8))
    lpm = c.create("lpm", LPM_TRIE, 8, 8, 4, NO_PREALLOC)
    c.batch(LOOKUP_BATCH, "lpm_lookup", lpm, 2, 8, 8)
    r = c.create("ringbuf", RINGBUF, 0, 0, PAGE)
    c.batch(DELETE_BATCH, "ringbuf_delete", r, 1, 0, 0, b"", b"")


@case
def c_batch_fd_and_other_maps(c):
    """Which map types have which batch ops (empty maps: no ids recorded)."""
    specs = [("prog_array", PROG_ARRAY, 4, 4, 4, 0, 0), ("perf_event_array", PERF_EVENT_ARRAY, 4, 4, 2, 0, 0),
             ("stack_trace", STACK_TRACE, 4, 64, 4, 0, 0), ("bloom", BLOOM_FILTER, 0, 8, 16, 0, 0),
             ("lru_hash", LRU_HASH, 4, 8, 8, 0, 0), ("percpu_array", PERCPU_ARRAY, 4, 8, 2, 0, 0)]
    inner = c.create("inner", ARRAY, 4, 8, 4)
    specs += [("array_of_maps", ARRAY_OF_MAPS, 4, 4, 2, 0, inner), ("hash_of_maps", HASH_OF_MAPS, 4, 4, 2, 0, inner)]
    for tag, t, ks, vs, n, fl, inn in specs:
        fd = c.create(tag, t, ks, vs, n, fl, inner=inn)
        if fd is None:
            continue
        vsz = r8(vs) * NCPUS if t == PERCPU_ARRAY else vs
        if t in (ARRAY_OF_MAPS, HASH_OF_MAPS, PROG_ARRAY, PERF_EVENT_ARRAY):
            c.batch(LOOKUP_BATCH, tag + ".lookup", fd, 0, ks, vsz)      # count 0: which op exists
            c.batch(UPDATE_BATCH, tag + ".update_9999", fd, 1, ks, vsz, u32(0), u32(9999))
        else:
            c.batch(LOOKUP_BATCH, tag + ".lookup", fd, 4, max(ks, 1), max(vsz, 1))
            c.batch(UPDATE_BATCH, tag + ".update", fd, 1, ks, vsz, bytes(ks), bytes(vsz))
        c.batch(LOOKUP_AND_DELETE_BATCH, tag + ".lookup_and_delete", fd, 0, max(ks, 1), max(vsz, 1))
        c.batch(DELETE_BATCH, tag + ".delete", fd, 1, ks, vsz, bytes(ks), bytes(vsz))


@case
def c_type_facts_every_type(c):
    """What the map engine's per-type facts decide (agent/maps/map_facts.h),
    on every map type bpfshim has: the syscall value size (per-CPU, fd
    values), keyless updates and lookup-and-delete, the batch ops, and mmap
    (values of an mmapable array, a ringbuf's pages, none)."""
    inner = c.create("inner", ARRAY, 4, 8, 4)
    prog_free = [("hash", HASH, 4, 8, 4, 0), ("array", ARRAY, 4, 8, 4, 0), ("array_mmapable", ARRAY, 4, 8, 4, MMAPABLE),
                 ("prog_array", PROG_ARRAY, 4, 4, 4, 0), ("perf_event_array", PERF_EVENT_ARRAY, 4, 4, 4, 0),
                 ("percpu_hash", PERCPU_HASH, 4, 8, 4, 0), ("percpu_array", PERCPU_ARRAY, 4, 8, 4, 0),
                 ("stack_trace", STACK_TRACE, 4, 64, 4, 0), ("cgroup_array", 8, 4, 4, 4, 0),
                 ("lru_hash", LRU_HASH, 4, 8, 4, 0), ("lru_percpu_hash", LRU_PERCPU_HASH, 4, 8, 4, 0),
                 ("lpm_trie", LPM_TRIE, 8, 8, 4, NO_PREALLOC), ("array_of_maps", ARRAY_OF_MAPS, 4, 4, 4, 0),
                 ("hash_of_maps", HASH_OF_MAPS, 4, 4, 4, 0), ("queue", QUEUE, 0, 8, 4, 0), ("stack", STACK, 0, 8, 4, 0),
                 ("ringbuf", RINGBUF, 0, 0, PAGE, 0), ("bloom", BLOOM_FILTER, 0, 8, 4, 0)]
    for tag, t, ks, vs, n, fl in prog_free:
        fd = c.create(tag, t, ks, vs, n, fl, inner=inner if t in (ARRAY_OF_MAPS, HASH_OF_MAPS) else 0)
        if fd is None:
            continue
        big = r8(max(vs, 8)) * NCPUS           # room for any value layout
        if t != 8:      # cgroup fds are not served (DENYLIST tools libbpf_funclatency_cgroup)
            c.update(tag + ".update", fd, bytes(ks) if ks else None, bytes(big))
        c.lookup(tag + ".lookup", fd, bytes(ks) if ks else None, big)
        c.lookup_and_delete(tag + ".lookup_and_delete", fd, bytes(ks) if ks else None, big)
        c.lookup_and_delete(tag + ".lookup_and_delete_flags", fd, bytes(ks) if ks else None, big, flags=F_LOCK)
        for cmd, name in ((LOOKUP_BATCH, "lookup"), (LOOKUP_AND_DELETE_BATCH, "lookup_and_delete"),
                          (UPDATE_BATCH, "update"), (DELETE_BATCH, "delete")):
            c.batch(cmd, f"{tag}.batch_{name}", fd, 0, max(ks, 1), big)
        for prot, pname in ((PROT_READ, "ro"), (PROT_READ | PROT_WRITE, "rw")):
            addr = _mmap(c, f"{tag}.mmap_{pname}", fd, PAGE, prot)
            if addr:
                libc.munmap(addr, PAGE)
                c.maps.remove((addr, PAGE))


@case
def c_lpm_batch(c):
    fd = c.create("create", LPM_TRIE, 8, 8, 8, NO_PREALLOC)
    keys = lpm_key(8, [10, 0, 0, 0]) + lpm_key(16, [10, 1, 0, 0]) + lpm_key(24, [10, 1, 1, 0])
    c.batch(UPDATE_BATCH, "update", fd, 3, 8, 8, keys, u64(8) + u64(16) + u64(24))
    r, cnt, k, v, out = c.batch(LOOKUP_BATCH, "lookup_all", fd, 8, 8, 8)
    c.note("lookup_all.data", [k[:cnt * 8].hex(), v[:cnt * 8].hex(), out.hex()])
    r, cnt, k, v, out = c.batch(LOOKUP_BATCH, "lookup_2", fd, 2, 8, 8)
    c.note("lookup_2.data", [k[:cnt * 8].hex(), v[:cnt * 8].hex(), out.hex()])
    c.batch(DELETE_BATCH, "delete", fd, 2, 8, 8, keys[:16], bytes(16))
    c.lookup("left", fd, lpm_key(32, [10, 1, 1, 1]), 8)
    c.batch(LOOKUP_AND_DELETE_BATCH, "lookup_and_delete", fd, 2, 8, 8)


@case
def c_batch_elem_flags(c):
    h = c.create("hash", HASH, 4, 8, 8)
    c.batch(UPDATE_BATCH, "update_elem_flags_any", h, 1, 4, 8, u32(1), u64(1), elem_flags=ANY)
    c.batch(UPDATE_BATCH, "update_elem_flags_exist", h, 1, 4, 8, u32(1), u64(1), elem_flags=EXIST)
    c.batch(UPDATE_BATCH, "update_elem_flags_8", h, 1, 4, 8, u32(1), u64(1), elem_flags=8)
    c.batch(UPDATE_BATCH, "update_flags_1", h, 1, 4, 8, u32(1), u64(1), flags=1)
    c.batch(DELETE_BATCH, "delete_elem_flags_2", h, 1, 4, 8, u32(1), u64(1), elem_flags=EXIST)
    c.batch(DELETE_BATCH, "delete_elem_flags_f_lock", h, 1, 4, 8, u32(1), u64(1), elem_flags=F_LOCK)
    c.batch(DELETE_BATCH, "delete_flags_1", h, 1, 4, 8, u32(1), u64(1), flags=1)
    c.batch(LOOKUP_AND_DELETE_BATCH, "lad_flags_1", h, 4, 4, 8, flags=1)
    c.batch(LOOKUP_AND_DELETE_BATCH, "lad_elem_flags_8", h, 4, 4, 8, elem_flags=8)
    a = c.create("array", ARRAY, 4, 8, 4)
    c.batch(UPDATE_BATCH, "array_update_flags_1", a, 1, 4, 8, u32(1), u64(1), flags=1)
    c.batch(LOOKUP_BATCH, "array_lookup_elem_flags_8", a, 2, 4, 8, elem_flags=8)
    c.batch(LOOKUP_BATCH, "array_lookup_in_batch_last", a, 2, 4, 8, in_batch=u32(3), tok=4)
    c.batch(LOOKUP_BATCH, "array_lookup_in_batch_past", a, 2, 4, 8, in_batch=u32(7), tok=4)


# ====================================================== ids, info
def _find_by_walk(c, want_id):
    """Walk MAP_GET_NEXT_ID from 0; was want_id seen, and what did
    GET_FD_BY_ID + info say of it."""
    start, seen = 0, False
    for _ in range(100000):
        a = ctypes.create_string_buffer(ATTR_BUF)
        struct.pack_into("<I", a, 0, start)
        r, e = c.bpf(MAP_GET_NEXT_ID, a, 12)
        if r:
            return seen, ename(e)
        start = struct.unpack_from("<I", a, 4)[0]
        if start == want_id:
            seen = True
    return seen, "loop"


@case
def c_map_ids(c):
    fd = c.create("create", HASH, 4, 8, 4, name=b"mc_ids")
    mid = c.ids[0] if c.ids else 0
    c.note("walk", _find_by_walk(c, mid))
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<III", a, 0, mid, 0, 0)
    r, e = c.bpf(MAP_GET_FD_BY_ID, a, 12)
    c.rec("get_fd_by_id", r, e, fd=True)
    if r >= 0:
        c.info("info_of_got", r)
        c.note("same_id", c.info_id(r) == mid)
        c.update("update_via_got", r, u32(1), u64(5))
        c.lookup("lookup_via_orig", fd, u32(1), 8)
    struct.pack_into("<III", a, 0, mid, 0, RDONLY)
    r, e = c.bpf(MAP_GET_FD_BY_ID, a, 12)
    c.rec("get_fd_by_id_rdonly", r, e, fd=True)
    if r >= 0:
        c.update("update_via_rdonly", r, u32(1), u64(6))
        c.lookup("lookup_via_rdonly", r, u32(1), 8)
    struct.pack_into("<III", a, 0, mid, 0, RDONLY | WRONLY)
    c.rec("get_fd_by_id_rdwr_flags", *c.bpf(MAP_GET_FD_BY_ID, a, 12), fd=True)
    struct.pack_into("<III", a, 0, mid, 0, 1 << 20)
    c.rec("get_fd_by_id_bad_flags", *c.bpf(MAP_GET_FD_BY_ID, a, 12), fd=True)
    struct.pack_into("<III", a, 0, 0x7FFFFFF0, 0, 0)
    c.rec("get_fd_by_id_absent", *c.bpf(MAP_GET_FD_BY_ID, a, 12), fd=True)
    struct.pack_into("<III", a, 0, 0, 0, 0)
    c.rec("get_fd_by_id_0", *c.bpf(MAP_GET_FD_BY_ID, a, 12), fd=True)
    struct.pack_into("<III", a, 0, 0xFFFFFFFF, 0, 0)
    c.rec("get_next_id_max", *c.bpf(MAP_GET_NEXT_ID, a, 12))
    struct.pack_into("<III", a, 0, mid, 0, 1)
    c.rec("get_next_id_garbage", *c.bpf(MAP_GET_NEXT_ID, a, 16))


@case
def c_map_id_gone_after_close(c):
    fd = c.create("create", ARRAY, 4, 8, 4)
    mid = c.ids[0] if c.ids else 0
    os.close(fd)
    c.fds.remove(fd)
    a = ctypes.create_string_buffer(ATTR_BUF)
    # the kernel frees the map in a work item: wait a little for the id to go
    import time
    for _ in range(200):
        struct.pack_into("<III", a, 0, mid, 0, 0)
        r, e = c.bpf(MAP_GET_FD_BY_ID, a, 12)
        if r < 0:
            break
        os.close(r)
        time.sleep(0.005)
    c.rec("get_fd_by_id_closed", r, e, fd=True)


@case
def c_info_lengths(c):
    fd = c.create("create", BLOOM_FILTER, 0, 4, 64, ZERO_SEED, name=b"infotest", extra=7)
    c.info("len_88", fd)
    c.info("len_4", fd, info_len=4)
    c.info("len_0", fd, info_len=0)
    c.info("len_256_zero_tail", fd, info_len=256)
    c.info("len_256_tail_poked", fd, info_len=256, tail_poke=255)
    c.info("len_4097", fd, info_len=4097)
    a = ctypes.create_string_buffer(ATTR_BUF)
    # 6.17+: `hash` and `hash_size` after map_extra are inputs
    for label, off, val in (("hash_size_set", 96, 32), ("hash_ptr_set", 88, 8), ("pad_after_hash_size", 100, 1)):
        info = ctypes.create_string_buffer(104)
        struct.pack_into("<I", info, off, val)
        struct.pack_into("<IIQ", a, 0, fd, 104, ctypes.addressof(info))
        c.rec(label, *c.bpf(OBJ_GET_INFO_BY_FD, a, 16))
    struct.pack_into("<IIQ", a, 0, fd, 88, 8)
    c.rec("info_ptr_8", *c.bpf(OBJ_GET_INFO_BY_FD, a, 16))
    struct.pack_into("<IIQ", a, 0, fd, 88, 0)
    c.rec("info_ptr_null", *c.bpf(OBJ_GET_INFO_BY_FD, a, 16))
    struct.pack_into("<IIQI", a, 0, fd, 88, 0, 1)
    c.rec("info_garbage_after", *c.bpf(OBJ_GET_INFO_BY_FD, a, 24))


# ====================================================== pins
@case
def c_pin_get(c):
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(1), u64(77))
    p = c.pin_path()
    c.obj(OBJ_PIN, "pin", p, fd)
    c.obj(OBJ_PIN, "pin_twice", p, fd)
    g = c.obj(OBJ_GET, "get", p)
    if g >= 0:
        c.lookup("lookup_via_get", g, u32(1), 8)
        c.note("same_id", c.info_id(g) == c.ids[0])
    ro = c.obj(OBJ_GET, "get_rdonly", p, file_flags=RDONLY)
    if ro >= 0:
        c.update("update_via_rdonly", ro, u32(1), u64(1))
        c.lookup("lookup_via_rdonly", ro, u32(1), 8)
    wo = c.obj(OBJ_GET, "get_wronly", p, file_flags=WRONLY)
    if wo >= 0:
        c.lookup("lookup_via_wronly", wo, u32(1), 8)
        c.update("update_via_wronly", wo, u32(1), u64(2))
    c.obj(OBJ_GET, "get_rdwr_flags", p, file_flags=RDONLY | WRONLY)
    c.obj(OBJ_GET, "get_bad_flags", p, file_flags=1 << 20)
    c.obj(OBJ_GET, "get_with_bpf_fd", p, fd=fd)
    c.unlink("unlink", p)
    c.obj(OBJ_GET, "get_after_unlink", p)
    c.lookup("orig_still_works", fd, u32(1), 8)


@case
def c_pin_errors(c):
    fd = c.create("create", ARRAY, 4, 8, 4)
    c.obj(OBJ_GET, "get_missing", c.pin_path("_missing"))
    c.obj(OBJ_PIN, "pin_bad_fd", c.pin_path("_badfd"), 9999)
    dn = os.open("/dev/null", os.O_RDONLY)
    c.fds.append(dn)
    c.obj(OBJ_PIN, "pin_dev_null", c.pin_path("_devnull"), dn)
    c.obj(OBJ_PIN, "pin_in_missing_dir", c.pin_path("_nodir") + "/x", fd)
    c.obj(OBJ_PIN, "pin_null_path", None, fd)
    c.obj(OBJ_PIN, "pin_bad_flags", c.pin_path("_flags"), fd, file_flags=RDONLY)
    c.obj(OBJ_GET, "get_null_path", None)


@case
def c_pin_frozen_rdonly(c):
    fd = c.create("create", ARRAY, 4, 8, 4, RDONLY)
    p = c.pin_path()
    c.obj(OBJ_PIN, "pin_rdonly_map", p, fd)
    g = c.obj(OBJ_GET, "get", p)
    if g >= 0:
        c.update("update_via_get", g, u32(0), u64(1))
        c.freeze("freeze_via_get", g)
        c.update("update_after_freeze", g, u32(0), u64(1))


# ====================================================== mmap
def _mmap(c, label, fd, length, prot, off=0):
    ctypes.set_errno(0)
    addr = libc.mmap(None, length, prot, MAP_SHARED, fd, off)
    if addr in (None, MAP_FAILED):
        c.note(label, "error " + ename(ctypes.get_errno()))
        return None
    c.maps.append((addr, length))
    c.note(label, "ok")
    return addr


@case
def c_mmap_array(c):
    fd = c.create("create", ARRAY, 4, 8, 16, MMAPABLE)
    addr = _mmap(c, "mmap_rw", fd, PAGE, PROT_READ | PROT_WRITE)
    if addr:
        ctypes.memmove(addr + 3 * 8, u64(0x1122334455667788), 8)
        c.lookup("lookup_written_via_mmap", fd, u32(3), 8)
        c.update("update", fd, u32(5), u64(0xCAFE))
        c.note("read_via_mmap", ctypes.string_at(addr + 5 * 8, 8).hex())
        libc.munmap(addr, PAGE)
        c.maps.remove((addr, PAGE))
    addr = _mmap(c, "mmap_ro", fd, PAGE, PROT_READ)
    if addr:
        c.freeze("freeze_with_read_only_mapping", fd)
        c.note("read_after_freeze", ctypes.string_at(addr + 3 * 8, 8).hex())


@case
def c_mmap_freeze_writable(c):
    """bpf_map_write_active(): a writable mapping blocks MAP_FREEZE."""
    fd = c.create("create", ARRAY, 4, 8, 16, MMAPABLE)
    if _mmap(c, "mmap_rw", fd, PAGE, PROT_READ | PROT_WRITE):
        c.freeze("freeze_with_writable_mapping", fd)


@case
def c_mmap_array_value_12(c):
    fd = c.create("create", ARRAY, 4, 12, 3, MMAPABLE)
    addr = _mmap(c, "mmap_rw", fd, PAGE, PROT_READ | PROT_WRITE)
    if addr:
        c.update("update", fd, u32(1), b"abcdefghijkl")
        c.note("stride_16", ctypes.string_at(addr, 48).hex())


@case
def c_mmap_errors(c):
    plain = c.create("plain_array", ARRAY, 4, 8, 16)
    _mmap(c, "mmap_non_mmapable", plain, PAGE, PROT_READ)
    fd = c.create("mmapable", ARRAY, 4, 8, 16, MMAPABLE)
    _mmap(c, "mmap_too_long", fd, 4 * PAGE, PROT_READ)
    _mmap(c, "mmap_offset_past_end", fd, PAGE, PROT_READ, off=PAGE)
    ro = c.create("mmapable_frozen", ARRAY, 4, 8, 16, MMAPABLE)
    c.freeze("freeze", ro)
    _mmap(c, "mmap_frozen_rw", ro, PAGE, PROT_READ | PROT_WRITE)
    _mmap(c, "mmap_frozen_ro", ro, PAGE, PROT_READ)


@case
def c_mmap_rdonly_fd(c):
    rofd = c.create("mmapable_rdonly_fd", ARRAY, 4, 8, 16, MMAPABLE | RDONLY)
    _mmap(c, "mmap_rdonly_fd_rw", rofd, PAGE, PROT_READ | PROT_WRITE)
    _mmap(c, "mmap_rdonly_fd_ro", rofd, PAGE, PROT_READ)


@case
def c_mmap_hash(c):
    h = c.create("hash", HASH, 4, 8, 16)
    _mmap(c, "mmap_hash", h, PAGE, PROT_READ)
    q = c.create("queue", QUEUE, 0, 8, 16)
    _mmap(c, "mmap_queue", q, PAGE, PROT_READ)


@case
def c_mmap_rdonly_prog(c):
    fd = c.create("mmapable_rdonly_prog", ARRAY, 4, 8, 16, MMAPABLE | RDONLY_PROG)
    _mmap(c, "mmap_rdonly_prog_rw", fd, PAGE, PROT_READ | PROT_WRITE)
    _mmap(c, "mmap_rdonly_prog_ro", fd, PAGE, PROT_READ)


# ====================================================== fuzzer reproducers (issue 10)
HIGH = 1 << 63            # pointers at or above 2^63: no user address


def _ids(c, raw, n):
    """n u32 map ids of fd-map values, as map<i>/other."""
    return [c.sym(struct.unpack_from("<I", raw, 4 * i)[0]) for i in range(n)]


@case
def c_batch_array_of_maps_holes(c):
    """generic_map_lookup_batch steps over empty slots (the fd array's lookup
    gives ENOENT for them); it looped forever under bpfshim."""
    inner = c.create("inner", ARRAY, 4, 8, 4)
    fd = c.create("outer", ARRAY_OF_MAPS, 4, 4, 6, inner=inner)
    empty = c.create("outer_empty", ARRAY_OF_MAPS, 4, 4, 3, inner=inner)
    if None in (inner, fd, empty):
        return
    for k in (1, 4):
        c.update(f"set_slot{k}", fd, u32(k), u32(inner))
    r, cnt, keys, vals, out = c.batch(LOOKUP_BATCH, "all", fd, 6, 4, 4, tok=4)
    c.note("all.keys", keys[:4 * cnt].hex())
    c.note("all.values", _ids(c, vals, cnt))
    tok = None
    for i in range(4):
        r, cnt, keys, vals, out = c.batch(LOOKUP_BATCH, f"piece{i}", fd, 1, 4, 4, in_batch=tok, tok=4)
        c.note(f"piece{i}.keys", keys[:4 * cnt].hex())
        if r:
            break
        tok = out[:4]
    c.batch(LOOKUP_BATCH, "all_empty", empty, 3, 4, 4, tok=4)
    c.batch(LOOKUP_BATCH, "from_last", fd, 2, 4, 4, in_batch=u32(5), tok=4)
    c.batch(LOOKUP_AND_DELETE_BATCH, "lookup_and_delete", fd, 6, 4, 4, tok=4)


@case
def c_batch_hash_of_maps(c):
    inner = c.create("inner", HASH, 4, 8, 4)
    fd = c.create("outer", HASH_OF_MAPS, 4, 4, 4, inner=inner)
    if None in (inner, fd):
        return
    for k in (3, 7):
        c.update(f"set{k}", fd, u32(k), u32(inner))
    r, cnt, keys, vals, out = c.batch(LOOKUP_BATCH, "all", fd, 4, 4, 4, tok=4)
    c.note("all.keys", sorted(keys[4 * i:4 * i + 4].hex() for i in range(cnt)))
    c.note("all.values", _ids(c, vals, cnt))
    r, cnt, keys, vals, out = c.batch(LOOKUP_AND_DELETE_BATCH, "lookup_and_delete", fd, 4, 4, 4, tok=4)
    c.note("lad.keys", sorted(keys[4 * i:4 * i + 4].hex() for i in range(cnt)))
    c.batch(LOOKUP_BATCH, "after", fd, 4, 4, 4, tok=4)


@case
def c_ptr_high(c):
    """Pointers at or above 2^63 are EFAULT, on the loader's path (element
    commands) and on the server's (info, pin, prog load)."""
    fd = c.create("create", HASH, 4, 8, 4)
    c.update("put", fd, u32(1), u64(7))
    c.elem(LOOKUP, "lookup_key_high", fd, HIGH, out_size=8)
    c.elem(LOOKUP, "lookup_value_high", fd, u32(1), HIGH)
    c.elem(UPDATE, "update_key_max", fd, (1 << 64) - 8, u64(1))
    c.elem(NEXT_KEY, "next_key_out_high", fd, None, HIGH)
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<IIQ", a, 0, fd, 88, HIGH)
    c.rec("info_high", *c.bpf(OBJ_GET_INFO_BY_FD, a, 16))
    struct.pack_into("<IIQ", a, 0, fd, 88, (1 << 64) - 16)
    c.rec("info_wraps", *c.bpf(OBJ_GET_INFO_BY_FD, a, 16))
    c.obj(OBJ_PIN, "pin_path_high", HIGH, fd)
    c.obj(OBJ_GET, "get_path_high", HIGH)
    lic = ctypes.create_string_buffer(b"GPL")
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<IIQQ", a, 0, 1, 2, HIGH, ctypes.addressof(lic))         # SOCKET_FILTER, insns at 2^63
    c.rec("prog_insns_high", *c.bpf(5, a, 48), fd=True)
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    struct.pack_into("<IIQQ", a, 0, 1, 2, ctypes.addressof(insns), HIGH)
    c.rec("prog_license_high", *c.bpf(5, a, 48), fd=True)
    struct.pack_into("<IIQQII", a, 0, 1, 2, ctypes.addressof(insns), ctypes.addressof(lic), 1, 64)
    struct.pack_into("<Q", a, 32, HIGH)                                          # log_buf
    c.rec("prog_log_buf_high", *c.bpf(5, a, 48), fd=True)
    c.rec("attr_high", *c.bpf(MAP_CREATE, ctypes.c_void_p(HIGH), CREATE_SIZE))


@case
def c_pin_path_walk(c):
    """Pin paths are bytes and are walked as the kernel walks them."""
    fd = c.create("create", ARRAY, 4, 8, 4)
    base = c.pin_path()
    raw = base.encode() + b"_\xff\xfe\x80"
    c.pins.append(raw)
    c.obj(OBJ_PIN, "pin_non_utf8", raw, fd)
    g = c.obj(OBJ_GET, "get_non_utf8", raw)
    if g >= 0:
        c.note("same_id", c.info_id(g) == c.ids[0])
    c.obj(OBJ_PIN, "pin_dotdot_through_file", raw + b"/../" + base.encode().rsplit(b"/", 1)[1] + b"_b", fd)
    c.obj(OBJ_PIN, "pin_dot_through_file", raw + b"/./x", fd)
    c.obj(OBJ_PIN, "pin_under_file", raw + b"/x", fd)
    c.obj(OBJ_GET, "get_trailing_slash", raw + b"/")
    c.obj(OBJ_GET, "get_dotdot_through_file", raw + b"/..")
    c.obj(OBJ_PIN, "pin_trailing_slash_new", base + "_new/", fd)
    c.obj(OBJ_PIN, "pin_dotdot_missing", base + "_missing/../" + base.rsplit("/", 1)[1] + "_c", fd)
    ok = base + "_d"
    c.pins.append(ok)
    c.obj(OBJ_PIN, "pin_via_dotdot_root", "/sys/fs/bpf/../bpf/" + ok.rsplit("/", 1)[1], fd)
    c.obj(OBJ_GET, "get_via_double_slash", ok.replace("/sys/fs/bpf/", "/sys/fs/bpf//./"))
    c.obj(OBJ_PIN, "pin_existing", raw, fd)
    c.obj(OBJ_PIN, "pin_empty", b"", fd)
    c.obj(OBJ_PIN, "pin_root", "/sys/fs/bpf", fd)
    c.unlink("unlink_non_utf8", raw)
    c.obj(OBJ_GET, "get_after_unlink", raw)


@case
def c_errno_kept(c):
    """A call that succeeds leaves errno as it was (bpftool batch checks errno
    after each line it reads). Run first in a fresh process: the first bpf()
    connects to the server. Raw calls, since ctypes swaps errno around them."""
    SENTINEL = 4242

    def kept(label, fn, fd=False):
        ctypes.set_errno(SENTINEL)
        r = fn()
        e = ctypes.get_errno()
        if fd and r >= 0:
            c.fds.append(r)
        c.trace.append([label, "fd" if fd and r >= 0 else (0 if r == 0 else ("ok" if r not in (-1, None) else r)),
                        "" if r not in (-1, None) else ename(e), "kept" if e == SENTINEL else f"errno {ename(e)}"])
        return r

    def sysc(cmd, a, size):
        return lambda: libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(cmd), a, ctypes.c_uint(size))
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<IIIII", a, 0, ARRAY, 4, 8, 4, MMAPABLE)
    fd = kept("map_create", sysc(MAP_CREATE, a, CREATE_SIZE), fd=True)
    if fd < 0:
        return
    key, val = ctypes.create_string_buffer(u32(1)), ctypes.create_string_buffer(u64(5))
    e = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<IIQQQ", e, 0, fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0)
    kept("update", sysc(UPDATE, e, ELEM_SIZE))
    kept("lookup", sysc(LOOKUP, e, ELEM_SIZE))
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    lic = ctypes.create_string_buffer(b"GPL")
    pa = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<IIQQ", pa, 0, 1, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    kept("prog_load", sysc(5, pa, 48), fd=True)
    path = c.pin_path().encode()
    pb = ctypes.create_string_buffer(path)
    oa = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<QII", oa, 0, ctypes.addressof(pb), fd, 0)
    kept("obj_pin", sysc(OBJ_PIN, oa, 16))
    kept("obj_get", sysc(OBJ_GET, ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(pb), 0, 0)), 16),
         fd=True)
    # perf_event_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT), this process, any CPU
    pe = ctypes.create_string_buffer(struct.pack("<IIQQQ", 1, 128, 10, 1, 0).ljust(128, b"\0"))
    kept("perf_event_open", lambda: libc.syscall(ctypes.c_long(298), pe, 0, -1, -1, ctypes.c_ulong(0)), fd=True)
    def mmap():
        addr = libc.mmap(None, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if addr in (None, MAP_FAILED):
            return -1
        c.maps.append((addr, PAGE))
        return 1
    kept("mmap", mmap)
    d = kept("dup", lambda: libc.dup(fd), fd=True)
    if d >= 0:
        c.fds.remove(d)
        kept("close_map_fd", lambda: libc.close(d))
    kept("unlink_pin", lambda: libc.unlink(pb))
    c.pins.remove(path.decode())


@case
def c_attr_tail_every_command(c):
    """CHECK_ATTR of every command: a non-zero byte just past its last field
    (the command table, syscall_server/bpf_cmd.py) is EINVAL before
    anything else is looked at; bpfshim checks it on its dispatch path."""
    ends = _last_field_ends()
    fd = c.create("create", ARRAY, 4, 8, 4)
    info = ctypes.create_string_buffer(INFO_SIZE_61)
    # attrs that succeed as they are, so a byte the check misses shows
    base = {MAP_CREATE: struct.pack("<IIII", ARRAY, 4, 8, 4),
            MAP_GET_FD_BY_ID: u32(c.ids[0] if c.ids else 0), MAP_FREEZE: u32(fd or 0),
            OBJ_GET_INFO_BY_FD: struct.pack("<IIQ", fd or 0, INFO_SIZE_61, ctypes.addressof(info))}
    for cmd in range(len(ends)):
        a = ctypes.create_string_buffer(base.get(cmd, b"").ljust(ATTR_BUF, b"\0"), ATTR_BUF)
        if cmd in base:
            c.rec(f"cmd{cmd}_base", *c.bpf(cmd, a, 168), fd=cmd in FD_CMDS)
        end = ends[cmd]
        a[end] = 1
        c.rec(f"cmd{cmd}_byte_at_{end}", *c.bpf(cmd, a, max(end + 1, 168)), fd=cmd in FD_CMDS)
    a = ctypes.create_string_buffer(ATTR_BUF)
    struct.pack_into("<II", a, 0, 1, 1)     # prog_id 1 and next_id 1: next_id is past PROG_GET_FD_BY_ID's
    c.rec("prog_get_fd_by_id_next_id", *c.bpf(13, a, 8), fd=True)
    struct.pack_into("<II", a, 0, 0x7FFFFFF0, 0)
    c.rec("prog_get_fd_by_id_missing", *c.bpf(13, a, 8), fd=True)
    if fd is not None:
        struct.pack_into("<II", a, 0, c.ids[0], 1)
        c.rec("map_get_fd_by_id_next_id", *c.bpf(MAP_GET_FD_BY_ID, a, 12), fd=True)


@case
def c_attr_contract_every_command(c):
    """The contract of every command and of numbers past the last one, in the
    kernel's order: a size over the union with a non-zero byte past it, or a
    size over a page, is E2BIG (before CHECK_ATTR); an attr that cannot be
    read is EFAULT; then garbage anywhere past the command's last field is
    EINVAL; bytes past the size the caller passes are not read (a size smaller
    than the union), from attrs that succeed otherwise."""
    ends = _last_field_ends()
    fd = c.create("create", ARRAY, 4, 8, 4)
    info = ctypes.create_string_buffer(INFO_SIZE_61)
    base = {MAP_CREATE: struct.pack("<IIII", ARRAY, 4, 8, 4),
            MAP_GET_FD_BY_ID: u32(c.ids[0] if c.ids else 0),
            OBJ_GET_INFO_BY_FD: struct.pack("<IIQ", fd or 0, INFO_SIZE_61, ctypes.addressof(info))}
    garbage = bytes(((0xA5 ^ i) & 0xFF) | 1 for i in range(ATTR_BUF))

    def attr(cmd, *pokes, fill=None):
        a = ctypes.create_string_buffer(base.get(cmd, b"").ljust(ATTR_BUF, b"\0"), ATTR_BUF)
        if fill is not None:
            a[fill:ATTR_BUF] = garbage[fill:]
        for off in pokes:
            a[off] = 0x5A
        return a

    for cmd in list(range(len(ends))) + [len(ends), len(ends) + 1, 1000, -1]:
        end = ends[cmd] if 0 <= cmd < len(ends) else 0
        fdc = cmd in FD_CMDS
        if 0 < end < 168:
            # garbage over the whole tail, or its last byte only, within the union
            a = attr(cmd, fill=end)
            a[168:ATTR_BUF] = b"\0" * (ATTR_BUF - 168)
            c.rec(f"cmd{cmd}_garbage_from_{end}", *c.bpf(cmd, a, 168), fd=fdc)
            c.rec(f"cmd{cmd}_byte_167", *c.bpf(cmd, attr(cmd, 167), 168), fd=fdc)
        if end:
            c.rec(f"cmd{cmd}_byte_at_end_size_200", *c.bpf(cmd, attr(cmd, end), 200), fd=fdc)
        # larger than the union: E2BIG comes first
        c.rec(f"cmd{cmd}_byte_180_size_200", *c.bpf(cmd, attr(cmd, 180, end), 200), fd=fdc)
        c.rec(f"cmd{cmd}_byte_4095_size_4096", *c.bpf(cmd, attr(cmd, 4095, end), 4096), fd=fdc)
        c.rec(f"cmd{cmd}_size_4097", *c.bpf(cmd, attr(cmd), 4097), fd=fdc)
        c.rec(f"cmd{cmd}_garbage_size_4097", *c.bpf(cmd, attr(cmd, fill=0), 4097), fd=fdc)
        # an attr that cannot be read
        c.rec(f"cmd{cmd}_null_size_8", *c.bpf(cmd, None, 8), fd=fdc)
        c.rec(f"cmd{cmd}_unmapped_size_168", *c.bpf(cmd, ctypes.c_void_p(4096), 168), fd=fdc)
        if cmd in base:
            # smaller than the union: what lies past the size is not read
            c.rec(f"cmd{cmd}_size_end_garbage_after", *c.bpf(cmd, attr(cmd, fill=end), end), fd=fdc)
            c.rec(f"cmd{cmd}_size_200_zero_tail", *c.bpf(cmd, attr(cmd), 200), fd=fdc)
            c.rec(f"cmd{cmd}_size_{len(base[cmd])}", *c.bpf(cmd, attr(cmd, fill=len(base[cmd])), len(base[cmd])),
                  fd=fdc)


# the commands whose success returns a new fd: MAP_CREATE, PROG_LOAD, OBJ_GET, PROG/MAP_GET_FD_BY_ID,
# RAW_TRACEPOINT_OPEN, BTF_LOAD, BTF_GET_FD_BY_ID, LINK_CREATE, LINK_GET_FD_BY_ID, ITER_CREATE, TOKEN_CREATE
FD_CMDS = {0, 5, 7, 13, 14, 17, 18, 19, 28, 30, 33, 36}


def _last_field_ends():
    """offsetofend of each command's last field, from the kernel's source
    names (kernel/bpf/syscall.c BPF_*_LAST_FIELD, 6.18) as the uapi header lays
    them out: syscall_server/bpf_cmd.py's table, which test_uapi_facts
    re-measures on the kernel. This file is standard library only (uid 65534
    runs it with /usr/bin/python3), so the test passes the table in
    BPFSHIM_ATTR_ENDS."""
    return [int(x) for x in os.environ["BPFSHIM_ATTR_ENDS"].split(",")]


# ====================================================== driver
def run(names=None):
    out = []
    for name, fn in CASES.items():
        if names and name not in names:
            continue
        c = Case(name)
        try:
            fn(c)
        except Exception as e:  # noqa: BLE001 - recorded, compared like any result
            c.trace.append(["exception", type(e).__name__, str(e)])
        finally:
            c.close()
        out.append({"name": name, "trace": c.trace})
    return out


if __name__ == "__main__":
    json.dump(run(sys.argv[1:]), sys.stdout)
    sys.stdout.write("\n")
