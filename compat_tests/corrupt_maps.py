#!/usr/bin/python3
"""A loader that writes garbage into its maps' segments, then uses them:
`corrupt_maps.py SEED` prints one JSON object {map type: {errno name: count}}.

Under bpfshim a map fd is a memfd of the map's segment (header, buckets,
elements), so a loader writing into it by mistake (here: pwrite at random
offsets, over the header or the data) reaches state every element command
follows. The kernel cannot be corrupted this way; what matters is that the
commands give errors or results and never crash or hang the process.
Standard library only (uid 65534 runs it with /usr/bin/python3).
"""
import ctypes
import errno
import json
import os
import random
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR_BPF = 321
HASH, ARRAY, PERCPU_HASH, STACK_TRACE, LRU_HASH, LPM_TRIE, QUEUE, STACK, BLOOM = 1, 2, 5, 7, 9, 11, 22, 23, 30
TYPES = {"hash": (HASH, 4, 8, 64, 0), "percpu_hash": (PERCPU_HASH, 4, 8, 64, 0), "lru_hash": (LRU_HASH, 4, 8, 64, 0),
         "array": (ARRAY, 4, 8, 64, 0), "lpm_trie": (LPM_TRIE, 8, 8, 64, 1), "queue": (QUEUE, 0, 8, 64, 0),
         "stack": (STACK, 0, 8, 64, 0), "bloom_filter": (BLOOM, 0, 8, 64, 0),
         "stack_trace": (STACK_TRACE, 4, 64, 64, 0)}


def bpf(cmd, attr, size):
    buf = ctypes.create_string_buffer(bytes(attr), max(len(attr), 168))
    r = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_long(cmd), buf, ctypes.c_uint(size))
    return r, (ctypes.get_errno() if r < 0 else 0), buf.raw


def elem(cmd, fd, key, value=None, out=0, flags=0):
    kb = ctypes.create_string_buffer(bytes(key or b""), max(len(key or b""), 1))
    vb = ctypes.create_string_buffer(bytes(value) if value else b"", max(len(value or b""), out, 1))
    a = struct.pack("<IIQQQ", fd, 0, ctypes.addressof(kb) if key is not None else 0, ctypes.addressof(vb), flags)
    return bpf(cmd, a, 32)[:2]


def ops(fd, t, ks, vs, rnd, tally):
    ncpu = os.cpu_count() or 1
    vbytes = vs * ncpu if t == PERCPU_HASH else vs
    for _ in range(40):
        key = bytes(rnd.getrandbits(8) for _ in range(ks))
        if t == LPM_TRIE:
            key = struct.pack("<I", rnd.randrange(0, 40)) + key[4:]
        cmd = rnd.choice([1, 2, 3, 4, 21])
        val = bytes(rnd.getrandbits(8) for _ in range(vbytes))
        r, e = elem(cmd, fd, key if ks else None, val if cmd == 2 else None, out=vbytes, flags=rnd.choice([0, 0, 1, 2]))
        name = "ok" if r >= 0 else errno.errorcode.get(e, str(e))
        tally[name] = tally.get(name, 0) + 1
    # a batch walk too (hash and array types)
    kb, vb, ob = (ctypes.create_string_buffer(4096) for _ in range(3))
    a = struct.pack("<QQQQIIQQ", 0, ctypes.addressof(ob), ctypes.addressof(kb), ctypes.addressof(vb), 64, fd, 0, 0)
    r, e, _ = bpf(24, a, 56)
    name = "batch_ok" if r >= 0 else "batch_" + errno.errorcode.get(e, str(e))
    tally[name] = tally.get(name, 0) + 1


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rnd = random.Random(seed)
    out = {}
    for name, (t, ks, vs, n, fl) in TYPES.items():
        tally = out.setdefault(name, {})
        for round_ in range(6):
            r, e, _ = bpf(0, struct.pack("<IIIII", t, ks, vs, n, fl), 72)
            if r < 0:
                tally["create_" + errno.errorcode.get(e, str(e))] = 1
                break
            fd = r
            ops(fd, t, ks, vs, rnd, {})          # some elements first
            size = os.fstat(fd).st_size
            # round 0-1: the data only; 2-3: anywhere, header too; 4-5: a few words set to large values
            for _ in range(8 if round_ < 4 else 4):
                off = rnd.randrange(256 if round_ < 2 else 0, size) & ~3
                data = (bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(4, 64))) if round_ < 4
                        else struct.pack("<I", rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000001, 65, 1 << 20])))
                os.pwrite(fd, data, min(off, size - len(data)))
            ops(fd, t, ks, vs, rnd, tally)
            os.close(fd)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
