#!/usr/bin/python3
"""A loader working on pinned maps of each type across a crash of whatever
answers its bpf() calls: `python3 durable_cases.py` creates, fills and pins
one map of each type (and a map-in-map, a program, BTF), prints "ready",
and waits for a line on stdin, while a thread keeps updating a counter
through its fd. The test kills the bpfshim server meanwhile (on the kernel
there is nothing to kill); then the loader reads everything back through
its old fds and the pins, carries on with every kind of command (update,
delete, batch, info, get-next-id, fd-by-id, re-pin, freeze), unpins and
exits. It prints one JSON trace (map_cases.Case format: nothing absolute).

Standard library only: uid 65534 runs this with /usr/bin/python3.
"""
import ctypes
import json
import os
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import map_cases as M  # noqa: E402

# (type, key size, value size, entries, flags) and how many elements to add
FILLED = {n: M.TYPES[n] for n in ("hash", "hash_no_prealloc", "array", "array_mmapable", "percpu_hash",
                                  "percpu_array", "lru_hash", "lru_percpu_hash", "queue", "stack",
                                  "bloom_filter", "lpm_trie")}
PROG_LOAD, BTF_LOAD, PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID = 5, 18, 11, 13
# r0 = 0; exit
PROG = struct.pack("<BBhi", 0xb7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
# a BTF blob with one type: int (32 bits, signed), named "int"
BTF_STR = b"\0int\0"
BTF_TYPE = struct.pack("<III", 1, (1 << 24), 4) + struct.pack("<I", (1 << 24) | 32)
BTF = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(BTF_TYPE), len(BTF_TYPE), len(BTF_STR)) + BTF_TYPE + BTF_STR


def value_size(t, vs):
    per = t in (M.PERCPU_HASH, M.PERCPU_ARRAY, M.LRU_PERCPU_HASH)
    return ((vs + 7) & ~7) * M.possible_cpus() if per else vs


def elems(t, ks, vs, n, base=0):
    if t == M.LPM_TRIE:
        return [(M.lpm_key(32, bytes([10, 0, base, i])), struct.pack("<Q", 500 + base + i)) for i in range(n)]
    if ks == 0:
        return [(None, struct.pack("<Q", 700 + base + i)) for i in range(n)]
    vsz = value_size(t, vs)
    return [(struct.pack("<I", i + base), bytes([(i + base + 1) & 0xff]) * vsz) for i in range(n)]


def dump(c, label, fd, t, ks, vs):
    """The map's contents as the loader sees them, in the order of the map."""
    vsz = value_size(t, vs)
    if t in (M.QUEUE, M.STACK):
        r, out = c.elem(M.LOOKUP, label + ".peek", fd, None, out_size=vsz)
        return
    if t == M.BLOOM_FILTER:
        for _k, v in elems(t, ks, vs, 4):
            c.elem(M.LOOKUP, label + ".has", fd, None, value=v)
        return
    keys = c.keys(fd, ks)
    c.note(label + ".keys", sorted(k.hex() for k in keys))
    for k in sorted(keys):
        c.lookup(label + ".lookup", fd, k, vsz)


def prog_load(c, label):
    insns = ctypes.create_string_buffer(PROG)
    lic = ctypes.create_string_buffer(b"GPL")
    a = ctypes.create_string_buffer(M.ATTR_BUF)
    struct.pack_into("<IIQQ", a, 0, 1, len(PROG) // 8, ctypes.addressof(insns), ctypes.addressof(lic))
    r, e = c.bpf(PROG_LOAD, a, 128)
    return c.rec(label, r, e, fd=True)


def btf_load(c, label):
    b = ctypes.create_string_buffer(BTF)
    a = ctypes.create_string_buffer(M.ATTR_BUF)
    struct.pack_into("<QQIII", a, 0, ctypes.addressof(b), 0, len(BTF), 0, 0)
    r, e = c.bpf(BTF_LOAD, a, 32)
    return c.rec(label, r, e, fd=True)


def next_ids(c, cmd):
    """The ids GET_NEXT_ID walks, from 0."""
    out, cur = [], 0
    while True:
        a = ctypes.create_string_buffer(M.ATTR_BUF)
        struct.pack_into("<I", a, 0, cur)
        r, _e = c.bpf(cmd, a, 12)
        if r:
            return out
        cur = struct.unpack_from("<I", a, 4)[0]
        out.append(cur)


def main():
    c = M.Case("durable")
    made = {}
    for name, (t, ks, vs, n, fl) in FILLED.items():
        fd = c.create(name + ".create", t, ks, vs, n, fl, name=name[:15].encode())
        for k, v in elems(t, ks, vs, 5):
            c.update(name + ".fill", fd, k, v)
        path = c.pin_path("_" + name)
        c.obj(M.OBJ_PIN, name + ".pin", path, fd)
        made[name] = (fd, path, c.ids[-1])
    inner = c.create("inner.create", M.ARRAY, 4, 8, 4)
    aom = c.create("aom.create", M.ARRAY_OF_MAPS, 4, 4, 4, inner=inner, name=b"aom")
    c.update("aom.set", aom, struct.pack("<I", 1), struct.pack("<I", inner))
    c.obj(M.OBJ_PIN, "aom.pin", c.pin_path("_aom"), aom)
    os.close(inner)
    c.fds.remove(inner)
    prog = prog_load(c, "prog.load")
    c.obj(M.OBJ_PIN, "prog.pin", c.pin_path("_prog"), prog)
    btf = btf_load(c, "btf.load")
    c.obj(M.OBJ_PIN, "btf.pin", c.pin_path("_btf"), btf)
    ids_before = {name: made[name][2] for name in made}
    prog_ids_before = next_ids(c, PROG_GET_NEXT_ID)

    # a writer through its fd while the server goes away
    counter_fd = c.create("counter.create", M.ARRAY, 4, 8, 16)
    c.obj(M.OBJ_PIN, "counter.pin", c.pin_path("_counter"), counter_fd)
    stop, done = threading.Event(), []

    def writer():
        i = 0
        while not stop.is_set() or i < 2000:
            i += 1
            c.update("", counter_fd, struct.pack("<I", 15), struct.pack("<Q", i), record=False)
        done.append(i)
    t = threading.Thread(target=writer)
    t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    stop.set()
    t.join()
    r, out = c.lookup("", counter_fd, struct.pack("<I", 15), 8, record=False)
    c.note("writer.all_updates_landed", r == 0 and struct.unpack("<Q", out)[0] == done[0])

    for name, (t_, ks, vs, n, fl) in FILLED.items():
        fd, path, mid = made[name]
        c.note(name + ".same_id", c.info_id(fd) == ids_before[name])
        dump(c, name + ".fd", fd, t_, ks, vs)
        pfd = c.obj(M.OBJ_GET, name + ".get", path)
        if pfd >= 0:
            c.note(name + ".pin_same_id", c.info_id(pfd) == mid)
            dump(c, name + ".pinned", pfd, t_, ks, vs)
        for k, v in elems(t_, ks, vs, 2, base=40):
            c.update(name + ".more", fd, k, v)
        if ks and t_ not in (M.BLOOM_FILTER,):
            c.delete(name + ".del", fd, elems(t_, ks, vs, 1)[0][0])
        dump(c, name + ".after", pfd if pfd >= 0 else fd, t_, ks, vs)
        c.info(name + ".info", fd)
        c.obj(M.OBJ_PIN, name + ".repin", c.pin_path("_" + name + "_2"), fd)
        a = ctypes.create_string_buffer(M.ATTR_BUF)
        struct.pack_into("<I", a, 0, mid)
        r, e = c.bpf(M.MAP_GET_FD_BY_ID, a, 12)
        c.rec(name + ".by_id", r, e, fd=True)
    ids_after = next_ids(c, M.MAP_GET_NEXT_ID)
    c.note("maps.ids_listed", all(i in ids_after for i in ids_before.values()))
    c.note("progs.ids_same", next_ids(c, PROG_GET_NEXT_ID) == prog_ids_before)
    c.note("prog.same_id", c.info_id(prog) is not None)
    gfd = c.obj(M.OBJ_GET, "aom.get", c.pins[len(FILLED)])
    if gfd >= 0:
        r, _out = c.lookup("", gfd, struct.pack("<I", 1), 4, record=False)   # the inner map's id
        c.note("aom.inner_present", r == 0)
    c.freeze("array.freeze", made["array"][0])
    c.update("array.frozen_update", made["array"][0], struct.pack("<I", 1), struct.pack("<Q", 1))
    # the ids the maps had, for the test to check they are gone afterwards
    c.note("__ids__", sorted(ids_before.values()))
    c.close()
    print(json.dumps(c.trace))


if __name__ == "__main__":
    main()
