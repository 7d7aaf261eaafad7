"""The memlock the kernel counts for a map (map_mem_usage() of each map type),
with the sizes of the kernel's own structures measured on the running kernel.

fdinfo of a map (and bpftool's bytes_memlock) shows map_mem_usage(): formulas
of max_entries, key and value size, possible CPUs and element count over
sizeof() of kernel structures (struct bpf_htab, htab_elem, bpf_array, ...)
that differ between builds of one kernel version. So they are measured:
`python -m syscall_server.kernel_sizes --write` (scripts/setup, as root)
creates small maps of each type in the real kernel through raw bpf(2) in a
child process without the preload library, reads their `memlock:` from
/proc/self/fdinfo, solves each group of constants from as many maps as it has
unknowns, checks that the formula then predicts every other map of the group,
and writes the sizes with the kernel's identity to kernel_sizes.json next to
this file (mode 0644: the server may run as any user). A failed check is an
error and leaves the built-in sizes (BUILTIN) in use.

sizes() is the measured set when that file describes the running kernel
(release, version, size of its BTF), else BUILTIN.
compat_tests/test_kernel_sizes.py checks sizes() against fresh kernel maps.
"""
import errno
import functools
import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

if __package__:
    from ._native import uapi as U

PATH = Path(__file__).resolve().with_name("kernel_sizes.json")
PAGE = 4096
# constants of the kernel's code rather than sizes of its structures
HASHTAB_MAP_LOCK_COUNT = 8      # htab_map_mem_usage() still counts 4 * cpus * this
RINGBUF_NR_META_PAGES = 3       # RINGBUF_PGOFF + RINGBUF_POS_PAGES

# Measured on 6.18.44 x86-64 (2 possible CPUs); used when no measurement of
# the running kernel exists.
BUILTIN = {
    "SIZEOF_BPF_ARRAY": 312,
    "SIZEOF_BPF_QUEUE_STACK": 312,
    "SIZEOF_BPF_BLOOM_FILTER": 312,
    "SIZEOF_BPF_HTAB": 896,
    "SIZEOF_HTAB_BUCKET": 16,
    "SIZEOF_HTAB_ELEM": 48,
    "SIZEOF_BPF_STACK_MAP": 320,
    "SIZEOF_STACK_MAP_BUCKET": 16,
    "SIZEOF_BPF_RINGBUF_MAP": 304,
    "SIZEOF_LPM_TRIE_NODE": 24,
}

NO_PREALLOC, MMAPABLE = 0x1, 0x400


def _pow2(n):
    return 1 << (max(n, 1) - 1).bit_length()


def _r8(n):
    return (n + 7) & ~7


def _page_align(n):
    return (n + PAGE - 1) & ~(PAGE - 1)


def map_mem_usage(t, n, ks, vs, flags, extra, cpus, nr_elems=0, sz=None):
    """map_mem_usage() of the kernel for a map of type t, max_entries n, key
    and value sizes ks and vs, map_flags, map_extra, `cpus` possible CPUs and
    nr_elems elements (counted by no-prealloc hash and LPM trie); None for a
    type without a formula here. sz: the sizes (default sizes())."""
    S = sz or sizes()
    if t in (U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY):
        if t == U.BPF_MAP_TYPE_PERCPU_ARRAY:
            return S["SIZEOF_BPF_ARRAY"] + n * 8 + n * _r8(vs) * cpus
        if flags & MMAPABLE:
            return _page_align(S["SIZEOF_BPF_ARRAY"]) + _page_align(n * _r8(vs))
        return S["SIZEOF_BPF_ARRAY"] + n * _r8(vs)
    if t in (U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, U.BPF_MAP_TYPE_CGROUP_ARRAY,
             U.BPF_MAP_TYPE_ARRAY_OF_MAPS):
        return S["SIZEOF_BPF_ARRAY"] + n * 8
    if t in (U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK):
        return S["SIZEOF_BPF_QUEUE_STACK"] + (n + 1) * vs
    if t == U.BPF_MAP_TYPE_BLOOM_FILTER:
        nh = (extra & 0xF) or 5
        bits = n * nh // 5 * 7
        bits = 64 if bits <= 64 else _pow2(bits)
        if n * nh > 0xFFFFFFFF or bits > 1 << 31:
            bits = 1 << 31
        return S["SIZEOF_BPF_BLOOM_FILTER"] + max(bits // 8, 8)
    if t in (U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_LRU_HASH,
             U.BPF_MAP_TYPE_LRU_PERCPU_HASH, U.BPF_MAP_TYPE_HASH_OF_MAPS):
        percpu = t in (U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_LRU_PERCPU_HASH)
        lru = t in (U.BPF_MAP_TYPE_LRU_HASH, U.BPF_MAP_TYPE_LRU_PERCPU_HASH)
        vsz = 8 if t == U.BPF_MAP_TYPE_HASH_OF_MAPS else _r8(vs)
        elem = S["SIZEOF_HTAB_ELEM"] + _r8(ks) + (8 if percpu else vsz)
        usage = S["SIZEOF_BPF_HTAB"] + S["SIZEOF_HTAB_BUCKET"] * _pow2(n) + 4 * cpus * HASHTAB_MAP_LOCK_COUNT
        if not flags & NO_PREALLOC:
            # htab_has_extra_elems(): not for percpu, LRU or fd (of maps) tables
            ne = n + (cpus if not percpu and not lru and t != U.BPF_MAP_TYPE_HASH_OF_MAPS else 0)
            usage += elem * ne
            if percpu:
                usage += _r8(vs) * cpus * ne
            elif not lru:
                usage += 8 * cpus
        else:
            usage += (elem + 8) * nr_elems
            if percpu:
                usage += (8 + 8) * nr_elems + _r8(vs) * cpus * nr_elems
        return usage
    if t == U.BPF_MAP_TYPE_STACK_TRACE:
        return S["SIZEOF_BPF_STACK_MAP"] + _pow2(n) * 8 + n * (S["SIZEOF_STACK_MAP_BUCKET"] + vs)
    if t == U.BPF_MAP_TYPE_RINGBUF:
        data = n // PAGE
        return S["SIZEOF_BPF_RINGBUF_MAP"] + (RINGBUF_NR_META_PAGES + data) * PAGE + \
            (RINGBUF_NR_META_PAGES + 2 * data) * 8
    if t == U.BPF_MAP_TYPE_LPM_TRIE:
        return nr_elems * (S["SIZEOF_LPM_TRIE_NODE"] + (ks - 4) + vs)
    return None


# ---- the running kernel and the measured file ------------------------------------------

def kernel_identity():
    """What must match for a measurement to apply: uname -r, the osrelease
    and version sysctls and the size of the kernel's BTF (differs between
    builds that share a release string)."""
    def read(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return None
    try:
        btf = os.stat("/sys/kernel/btf/vmlinux").st_size
    except OSError:
        btf = None
    return {"release": os.uname().release, "osrelease": read("/proc/sys/kernel/osrelease"),
            "version": read("/proc/sys/kernel/version"), "btf_size": btf}


def load(path=PATH):
    """(sizes, where they come from): the file's when it measured the running
    kernel, else BUILTIN."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return dict(BUILTIN), "built-in (no measurement: run scripts/setup as root)"
    except (OSError, ValueError) as e:
        return dict(BUILTIN), f"built-in ({path}: {e})"
    if not isinstance(data, dict):
        return dict(BUILTIN), f"built-in ({path}: not a measurement)"
    ident = kernel_identity()
    stale = [k for k in ident if data.get("kernel", {}).get(k) != ident[k]]
    got = data.get("sizes", {})
    if stale:
        return dict(BUILTIN), f"built-in ({path} measured another kernel: {', '.join(stale)} differ)"
    if set(got) != set(BUILTIN) or not all(isinstance(v, int) for v in got.values()):
        return dict(BUILTIN), f"built-in ({path} lacks or adds sizes: re-run scripts/setup)"
    return dict(got), f"measured ({path})"


@functools.lru_cache(None)
def _loaded():
    return load()


def sizes():
    return _loaded()[0]


def source():
    return _loaded()[1]


# ---- measurement -------------------------------------------------------------------------

class MeasureError(Exception):
    pass


class Unavailable(MeasureError):
    """Kernel eBPF does not work here (not root, no bpf(), denied)."""


def probe(m, key_size, value_size, max_entries, flags=0, extra=0, elems=0, inner=False):
    """A map for the kernel to create: map type m by name (without
    BPF_MAP_TYPE_), with `elems` elements inserted; inner: a map of maps,
    created with an inner ARRAY map."""
    return {"name": m, "type": getattr(U, "BPF_MAP_TYPE_" + m), "key": key_size, "value": value_size,
            "max": max_entries, "flags": flags, "extra": extra, "elems": elems,
            "inner": U.BPF_MAP_TYPE_ARRAY if inner else 0}


def predict(p, cpus, sz=None):
    return map_mem_usage(p["type"], p["max"], p["key"], p["value"], p["flags"], p["extra"], cpus, p["elems"], sz)


def describe(p):
    return (f"{p['name']} key {p['key']} value {p['value']} max_entries {p['max']}"
            + (f" flags {p['flags']:#x}" if p["flags"] else "") + (f" extra {p['extra']}" if p["extra"] else "")
            + (f" with {p['elems']} elements" if p["elems"] else ""))


def _groups():
    """(unknown sizes, maps that determine them, further maps the formula must
    then predict). Each group's maps depend on no unknown outside it."""
    P = probe
    return [
        (["SIZEOF_BPF_ARRAY"], [P("ARRAY", 4, 8, 1)],
         [P("ARRAY", 4, 12, 3), P("ARRAY", 4, 8, 1000), P("PERCPU_ARRAY", 4, 8, 5),
          P("ARRAY", 4, 8, 600, MMAPABLE), P("PROG_ARRAY", 4, 4, 7), P("ARRAY_OF_MAPS", 4, 4, 3, inner=True)]),
        (["SIZEOF_BPF_QUEUE_STACK"], [P("QUEUE", 0, 8, 1)], [P("STACK", 0, 12, 10), P("QUEUE", 0, 4, 100)]),
        (["SIZEOF_BPF_BLOOM_FILTER"], [P("BLOOM_FILTER", 0, 8, 1)],
         [P("BLOOM_FILTER", 0, 8, 100), P("BLOOM_FILTER", 0, 4, 1000, extra=3)]),
        (["SIZEOF_BPF_HTAB", "SIZEOF_HTAB_BUCKET", "SIZEOF_HTAB_ELEM"],
         [P("HASH", 4, 8, 1, NO_PREALLOC), P("HASH", 4, 8, 2, NO_PREALLOC), P("HASH", 4, 8, 1)],
         [P("HASH", 4, 8, 16), P("HASH", 12, 20, 100), P("PERCPU_HASH", 4, 8, 16), P("LRU_HASH", 4, 8, 16),
          P("LRU_PERCPU_HASH", 8, 4, 5), P("HASH_OF_MAPS", 4, 4, 5, inner=True),
          P("HASH", 4, 12, 16, NO_PREALLOC, elems=3), P("PERCPU_HASH", 4, 12, 16, NO_PREALLOC, elems=3)]),
        (["SIZEOF_BPF_STACK_MAP", "SIZEOF_STACK_MAP_BUCKET"],
         [P("STACK_TRACE", 4, 8, 1), P("STACK_TRACE", 4, 8, 2)], [P("STACK_TRACE", 4, 16, 5), P("STACK_TRACE", 4, 8, 64)]),
        (["SIZEOF_BPF_RINGBUF_MAP"], [P("RINGBUF", 0, 0, PAGE)], [P("RINGBUF", 0, 0, 4 * PAGE), P("RINGBUF", 0, 0, 16 * PAGE)]),
        (["SIZEOF_LPM_TRIE_NODE"], [P("LPM_TRIE", 8, 8, 16, NO_PREALLOC, elems=1)],
         [P("LPM_TRIE", 12, 4, 16, NO_PREALLOC, elems=3), P("LPM_TRIE", 8, 8, 16, NO_PREALLOC)]),
    ]


def nr_cpus():
    """num_possible_cpus(), as the server counts it for a map's nr_cpus."""
    from ._native import lib
    return lib.shm_nr_possible_cpus()


def kernel_memlock(probes, cpus):
    """memlock of each probe as the kernel's fdinfo shows it, from a child
    process without the preload library (raw bpf(2), stdlib only)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run([sys.executable, __file__, "--probe"], input=json.dumps({"cpus": cpus, "probes": probes}),
                       capture_output=True, text=True, env=env, cwd="/", timeout=60)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise MeasureError(f"kernel probe exited with {r.returncode}: {r.stderr.strip()[-2000:]}") from None
    if "error" in out:
        e = out["errno"]
        msg = f"kernel {describe(probes[out['index']])}: {out['error']}"
        if out["index"] == 0 and e in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            raise Unavailable(msg)
        raise MeasureError(msg)
    return out["memlock"]


def _solve(unknowns, rows, cpus):
    """Integer values of `unknowns` from len(unknowns) (probe, memlock) rows:
    map_mem_usage() is affine in the sizes for maps without page rounding."""
    base = dict.fromkeys(BUILTIN, 0)
    a = []
    for p, m in rows:
        c0 = predict(p, cpus, base)
        coef = [Fraction(predict(p, cpus, dict(base, **{u: 1})) - c0) for u in unknowns]
        a.append(coef + [Fraction(m - c0)])
    k = len(unknowns)
    for col in range(k):        # Gauss-Jordan
        piv = next((r for r in range(col, k) if a[r][col]), None)
        if piv is None:
            raise MeasureError(f"the maps for {', '.join(unknowns)} do not determine {unknowns[col]}")
        a[col], a[piv] = a[piv], a[col]
        a[col] = [x / a[col][col] for x in a[col]]
        for r in range(k):
            if r != col and a[r][col]:
                a[r] = [x - a[r][col] * y for x, y in zip(a[r], a[col])]
    out = {}
    for u, row in zip(unknowns, a):
        v = row[k]
        if v.denominator != 1 or v < 0:
            raise MeasureError(f"{u} solves to {v}: the kernel's map_mem_usage() is not the formula in {__file__}")
        out[u] = int(v)
    return out


def solve(groups, memlock, cpus):
    """The sizes from the kernel's memlock of every probe of `groups`
    (in order); MeasureError when the formula with them mispredicts a map."""
    found, i = {}, 0
    for unknowns, det, checks in groups:
        got = memlock[i:i + len(det) + len(checks)]
        i += len(det) + len(checks)
        found.update(_solve(unknowns, list(zip(det, got)), cpus))
    sz = dict(BUILTIN, **found)
    bad, i = [], 0
    for unknowns, det, checks in groups:
        for p in det + checks:
            want = predict(p, cpus, sz)
            if want != memlock[i]:
                bad.append(f"  {describe(p)}: kernel {memlock[i]}, formula {want}")
            i += 1
    if bad:
        raise MeasureError("the kernel's memlock disagrees with map_mem_usage() in "
                           f"{__file__} with the solved sizes {found}:\n" + "\n".join(bad))
    return found


def measure():
    """The sizes of the running kernel (raises Unavailable or MeasureError)."""
    if os.geteuid() != 0:
        raise Unavailable("not root")
    groups = _groups()
    probes = [p for _, det, checks in groups for p in det + checks]
    cpus = nr_cpus()
    return solve(groups, kernel_memlock(probes, cpus), cpus)


def write(found, path=PATH):
    data = {"kernel": kernel_identity(), "nr_cpus": nr_cpus(), "sizes": found}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    try:
        if Path(path).read_text() == text:
            return
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


# ---- the child that asks the kernel ------------------------------------------------------

def _probe_child():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    req = json.load(sys.stdin)

    def bpf(cmd, attr):
        buf = ctypes.create_string_buffer(bytes(attr), 128)
        r = libc.syscall(321, cmd, buf, 128)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r

    def create(t, ks, vs, n, flags=0, extra=0, inner=0):
        attr = bytearray(128)
        struct.pack_into("<6I", attr, 0, t, ks, vs, n, flags, inner)
        struct.pack_into("<Q", attr, 64, extra)
        return bpf(0, attr)

    def memlock(fd):
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
        raise OSError(errno.ENOENT, "no memlock in fdinfo")

    out = []
    for i, p in enumerate(req["probes"]):
        fds = []
        try:
            inner = 0
            if p["inner"]:
                inner = create(p["inner"], 4, 4, 1)
                fds.append(inner)
            fd = create(p["type"], p["key"], p["value"], p["max"], p["flags"], p["extra"], inner)
            fds.append(fd)
            value = ctypes.create_string_buffer(_r8(p["value"]) * req["cpus"] + 8)
            for n in range(p["elems"]):
                if p["name"] == "LPM_TRIE":
                    key = struct.pack("<I", (p["key"] - 4) * 8) + n.to_bytes(p["key"] - 4, "big")
                else:
                    key = n.to_bytes(p["key"], "little")
                kb = ctypes.create_string_buffer(key)
                bpf(2, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(kb), ctypes.addressof(value), 0))
            out.append(memlock(fd))
        except OSError as e:
            json.dump({"index": i, "errno": e.errno, "error": str(e)}, sys.stdout)
            return
        finally:
            for fd in fds:
                os.close(fd)
    json.dump({"memlock": out}, sys.stdout)


def main(argv):
    if argv == ["--probe"]:
        _probe_child()
        return 0
    if not set(argv) <= {"--write", "--if-available"}:
        print("usage: python -m syscall_server.kernel_sizes [--write] [--if-available]", file=sys.stderr)
        return 2
    try:
        found = measure()
    except Unavailable as e:
        if "--if-available" in argv:
            return 0
        print(f"kernel_sizes: kernel eBPF unavailable ({e}); the built-in sizes stay in use", file=sys.stderr)
        return 1
    except MeasureError as e:
        print(f"kernel_sizes: MEASUREMENT FAILED, the built-in sizes stay in use: {e}", file=sys.stderr)
        return 1
    if "--write" in argv:
        write(found)
    else:
        print(json.dumps(found, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
