"""The memory budget of maps: a map's segment is charged before it is
allocated, as the kernel charges a map to the memory cgroup of the process
that creates it, and refused with the kernel's ENOMEM when it does not fit.

Measured on 6.18 (compat_tests/test_map_budget.py): the kernel no longer
looks at RLIMIT_MEMLOCK (a root loader with `ulimit -l 64` creates an 8 MiB
array, and so does uid 65534 with CAP_BPF); what refuses a map is the memory
cgroup of its creator (ENOMEM, same for root and a CAP_BPF user), or the
machine running out (vmalloc fails, no OOM kill). Per-CPU maps are the
exception: the kernel lets them past the cgroup's limit, bpfshim does not
(their values are a segment in the cgroup like any other; DENYLIST). An unprivileged user gets
EPERM from the kernel only because kernel.unprivileged_bpf_disabled is set;
bpfshim gives its users what a privileged user in their cgroup gets.

A map fits when, in the creator's memory cgroup and each ancestor with a
limit (cgroup v1 memory.limit_in_bytes, v2 memory.max), usage minus the file
cache the kernel would reclaim plus what live maps charged there do not add
to that usage yet leaves room for the new segment, and MemAvailable does too.
A segment in memory (memfd, tmpfs) shows in usage as its pages are first
written (its st_blocks says how many are); one on a disk file never does
(page cache), so it counts in full. Checks and charges are serialised by this module's
lock, not the object table's.
"""
import errno
import os
import threading

from .errors import BpfError

UNLIMITED = 1 << 62
_lock = threading.Lock()
_charges = {}          # token -> Charge: the live maps and those being made
_next = [1]


class Charge:
    def __init__(self, memcg, size, fd):
        self.memcg = memcg     # the creator's cgroup directory (None: not known)
        self.size = size
        self.fd = fd           # the segment's descriptor once it exists, else -1
        self.in_memory = False  # its pages are shmem (memfd, tmpfs), not evictable file cache


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _mounts():
    """{controller-or-"cgroup2": mount point} of the cgroup filesystems."""
    out = {}
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3 or len(fields) < 5:
            continue
        if rfields[0] == "cgroup2":
            out.setdefault("cgroup2", fields[4])
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                out.setdefault(opt, fields[4])
    return out


def memcg_of(pid):
    """The directory of pid's memory cgroup (v1 memory controller, else v2
    with memory.max), or None."""
    mounts = _mounts()
    v2 = None
    for line in (_read(f"/proc/{pid}/cgroup") or "").splitlines():
        _hid, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(",") and "memory" in mounts:
            return os.path.normpath(mounts["memory"] + "/" + path)
        if ctrls == "" and "cgroup2" in mounts:
            v2 = os.path.normpath(mounts["cgroup2"] + "/" + path)
    if v2 and os.path.exists(os.path.join(v2, "memory.max")):
        return v2
    # the root of v2 has no memory.max: a child's path says where the root is
    return v2 if v2 and os.path.exists(os.path.join(os.path.dirname(v2), "memory.max")) else None


def _stat_file_cache(d, v1):
    cache = 0
    for line in (_read(os.path.join(d, "memory.stat")) or "").splitlines():
        k, _, v = line.partition(" ")
        if k in (("total_inactive_file", "total_active_file") if v1 else ("inactive_file", "active_file")):
            cache += int(v)
    return cache


def _limits(memcg):
    """[(directory, limit, usage less reclaimable file cache)] for memcg and
    its ancestors that have a limit."""
    out = []
    d = memcg
    while d and os.path.exists(d):
        v1 = os.path.exists(os.path.join(d, "memory.limit_in_bytes"))
        lim = _read(os.path.join(d, "memory.limit_in_bytes" if v1 else "memory.max"))
        use = _read(os.path.join(d, "memory.usage_in_bytes" if v1 else "memory.current"))
        if lim is None or use is None:
            break
        lim = lim.strip()
        limit = UNLIMITED if lim == "max" or int(lim) >= UNLIMITED else int(lim)
        if limit < UNLIMITED:
            out.append((d, limit, max(0, int(use) - _stat_file_cache(d, v1))))
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return out


def _mem_available():
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return UNLIMITED


def _under(d, top):
    return d is not None and (d == top or d.startswith(top + "/"))


MEMORY_FS = ("tmpfs", "shmem", "ramfs")


def _in_memory(fd):
    """Whether the pages of fd's file stay in memory (a memfd, a file on
    tmpfs) rather than being page cache the kernel can write back and drop."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    if path.startswith("/memfd:"):
        return True
    best, fstype = "", None
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) > 4 and rfields:
            mnt = fields[4]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, rfields[0]
    return fstype in MEMORY_FS


def _ahead(c, counted):
    """Bytes of charge c that usage does not show yet: all of it, but for the
    pages of an in-memory segment already committed (its st_blocks) when
    they are `counted` in the usage at hand. Pages of a segment on a disk
    file are reclaimable cache, not counted as used: the whole map is."""
    if c.fd < 0 or not c.in_memory or not counted:
        return c.size
    try:
        return max(0, c.size - os.fstat(c.fd).st_blocks * 512)
    except OSError:
        return 0


def charge(pid, size, what):
    """Reserve `size` bytes for a map the process `pid` creates; a token for
    attach()/uncharge(), or BpfError(ENOMEM) with a line naming the limit."""
    memcg = memcg_of(pid)
    server_memcg = memcg_of(os.getpid())
    with _lock:
        charges = list(_charges.values())
        for d, limit, used in _limits(memcg):
            # what lives in this cgroup's usage already: pages the server
            # (when it is inside) has committed; the rest is still to come
            ahead = sum(_ahead(c, _under(server_memcg, d)) for c in charges if _under(c.memcg, d))
            if used + ahead + size > limit:
                raise BpfError(errno.ENOMEM,
                               f"{what}: {size} bytes do not fit the memory cgroup {d} "
                               f"(limit {limit}, in use {used}, maps not yet committed {ahead})",
                               loud=True)
        avail = _mem_available() - sum(_ahead(c, True) for c in charges)
        if size > avail:
            raise BpfError(errno.ENOMEM, f"{what}: {size} bytes exceed the memory available ({avail})",
                           loud=True)
        token = _next[0]
        _next[0] += 1
        _charges[token] = Charge(memcg, size, -1)
        return token


def attach(token, fd):
    """The segment of the charge exists (its committed pages may be in usage)."""
    in_memory = _in_memory(fd)
    with _lock:
        _charges[token].fd = fd
        _charges[token].in_memory = in_memory


def uncharge(token):
    with _lock:
        _charges.pop(token, None)
