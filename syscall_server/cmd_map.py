"""BPF_MAP_CREATE, BPF_MAP_FREEZE, map info and fdinfo.

Element commands never come here: the shim runs them on the segment.
A map is a memfd segment laid out by agent/maps (shm_map_format); the
server keeps one mapping of it for what it reads (frozen, info).
"""
import errno
import os
import mmap
import os
import re
import struct

from . import _native, budget, kernel_sizes
from .errors import ENOTSUPP, BpfError, unsupported
from .objects import BpfObject, registry

ffi, lib = _native.ffi, _native.lib
P = _native.proto

BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_INNER_MAP = 1 << 12
NAME_RE = re.compile(rb"^[A-Za-z0-9_.]*$")

def map_type_name(t):
    return _native.uapi.name_of("BPF_MAP_TYPE_", t)


class MapObject(BpfObject):
    kind = P.SHIM_OBJ_MAP
    memfd_name = "bpf-map"

    def __init__(self, mattr, name, seg_size, charge=None):
        super().__init__()
        self.charge = charge     # budget token, given back with the segment
        self.attr = mattr        # struct shm_map_attr (cffi)
        self.name = name
        self.seg_size = seg_size
        self.open_fd(seg_size)
        self._map_segment()
        self.btf = None
        self.btf_key_type_id = 0
        self.btf_value_type_id = 0
        self.btf_vmlinux_value_type_id = 0
        self.map_ifindex = 0

    _transient = BpfObject._transient + ("mm", "base", "hdr", "wake_fd", "charge", "kernel_fd")
    kernel_fd = -1     # hybrid mode: the kernel map whose memory this one is (SHIM_CTL_KMAP_SET)
    kernel_bound = False   # it was: kept across a restart, which loses the fd (SHIM_CTL_KMAP_FD ESTALE)

    def revive(self, store):
        super().revive(store)
        self._map_segment()
        try:
            self.charge = budget.charge(os.getpid(), self.seg_size, f"map {self.name}")
            budget.attach(self.charge, self.fd)
        except BpfError:
            self.charge = None   # recovered whatever the budget says: never lose its data

    def _map_segment(self):
        self.mm = mmap.mmap(self.fd, self.seg_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.base = ffi.from_buffer(self.mm)
        self.hdr = ffi.cast("struct shm_map_hdr *", self.base)
        # a ringbuf's consumers sleep on this eventfd, its producers signal it
        self.wake_fd = (os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                        if self.attr.map_type == _native.uapi.BPF_MAP_TYPE_RINGBUF else -1)

    @property
    def frozen(self):
        return bool(self.hdr.frozen)

    def destroy(self):
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1
        if self.kernel_fd >= 0:
            os.close(self.kernel_fd)
            self.kernel_fd = -1
        self.hdr = None
        self.base = None
        try:
            self.mm.close()
        except BufferError:
            pass
        if self.charge is not None:     # before the fd closes: the budget fstat()s it
            budget.uncharge(self.charge)
            self.charge = None
        super().destroy()


def bpf_obj_name_cpy(raw):
    """bpf_obj_name_cpy(): NUL-terminated within 16 bytes, [A-Za-z0-9_.]."""
    raw = bytes(raw)
    if b"\0" not in raw:
        raise BpfError(errno.EINVAL)
    name = raw[:raw.index(b"\0")]
    if not NAME_RE.match(name):
        raise BpfError(errno.EINVAL)
    return name.decode()


def map_create(ctx, attr):
    if attr.excl_prog_hash:
        raise unsupported(errno.EINVAL, "maps exclusive to a program (excl_prog_hash)")
    if attr.excl_prog_hash_size:      # a size without a hash
        raise BpfError(errno.EINVAL)
    flags = attr.map_flags
    token_flag = flags & (1 << 16)            # BPF_F_TOKEN_FD
    flags &= ~(1 << 16)
    if attr.btf_vmlinux_value_type_id:
        if attr.map_type != _native.uapi.BPF_MAP_TYPE_STRUCT_OPS or attr.btf_key_type_id or attr.btf_value_type_id:
            raise BpfError(errno.EINVAL)
    elif attr.btf_key_type_id and not attr.btf_value_type_id:
        raise BpfError(errno.EINVAL)
    if attr.map_type not in (_native.uapi.BPF_MAP_TYPE_BLOOM_FILTER, getattr(_native.uapi, "BPF_MAP_TYPE_ARENA", -1)) \
            and attr.map_extra:
        raise BpfError(errno.EINVAL)
    if (flags & BPF_F_RDONLY) and (flags & BPF_F_WRONLY):   # bpf_get_file_flag()
        raise BpfError(errno.EINVAL)
    numa = attr.numa_node
    if flags & (1 << 2) and numa != 0:                       # BPF_F_NUMA_NODE: node 0 only
        raise BpfError(errno.EINVAL)
    if token_flag:
        raise unsupported(errno.EINVAL, "BPF_F_TOKEN_FD (bpf tokens)")
    if attr.map_ifindex:
        raise unsupported(errno.EOPNOTSUPP, "map offload (map_ifindex)")

    m = ffi.new("struct shm_map_attr *")
    m.map_type = attr.map_type
    m.key_size = attr.key_size
    m.value_size = attr.value_size
    m.max_entries = attr.max_entries
    m.map_flags = flags
    m.nr_cpus = lib.shm_nr_possible_cpus()
    m.map_extra = attr.map_extra
    m.spin_lock_off = -1

    inner = None
    F = _native.map_facts_enum
    facts = _native.map_facts(attr.map_type)
    if facts and facts.fd_value == F.SHM_FD_MAP:
        # bpf_map_meta_alloc(): the inner map is a template.
        kind, oid, _fl = ctx.conn.fdget(attr.inner_map_fd)
        if kind != P.SHIM_OBJ_MAP:
            raise BpfError(errno.EINVAL)
        inner = registry.get(kind, oid)
        ia = inner.attr
        if _native.map_facts(ia.map_type).fd_value in (F.SHM_FD_MAP, F.SHM_FD_PROG):
            raise BpfError(errno.EINVAL)
        m.inner_map_type = ia.map_type
        m.inner_key_size = ia.key_size
        m.inner_value_size = ia.value_size
        m.inner_max_entries = ia.max_entries
        m.inner_map_flags = ia.map_flags

    err = lib.shm_map_check_attr(m)
    if err == -errno.EINVAL and lib.shm_map_seg_size(m) == 0 and not _known_type(attr.map_type):
        raise unsupported(errno.EINVAL, f"map type {map_type_name(attr.map_type)} ({attr.map_type})")
    if err:
        raise BpfError(-err)
    name = bpf_obj_name_cpy(ffi.buffer(attr.map_name))

    btf = None
    if attr.btf_key_type_id or attr.btf_value_type_id:
        kind, oid, _fl = ctx.conn.fdget(attr.btf_fd)
        if kind != P.SHIM_OBJ_BTF:
            raise BpfError(errno.EINVAL)
        btf = registry.get(kind, oid)
        m.spin_lock_off = map_check_btf(btf.btf, attr)

    size = lib.shm_map_seg_size(m)
    if not size:
        raise BpfError(errno.ENOMEM)
    token = budget.charge(ctx.conn.pid, size, f"map {name or map_type_name(attr.map_type)}")
    oid = registry.reserve_id(P.SHIM_OBJ_MAP)
    obj = None
    try:
        with registry.unlocked():     # the segment may be GiBs: others go on meanwhile
            obj = MapObject(m, name, size, token)
            budget.attach(token, obj.fd)
            err = lib.shm_map_format(obj.base, size, m, oid, name.encode())
    except OSError as e:
        raise BpfError(errno.ENOMEM, f"map {name}: {size} bytes: {e.strerror}", loud=True)
    finally:
        if obj is None:
            budget.uncharge(token)
    if err:
        obj.destroy()
        raise BpfError(-err)
    registry.add(obj, oid)
    if btf is not None:
        obj.btf = btf
        obj.hold_child(btf)
        obj.btf_key_type_id = attr.btf_key_type_id
        obj.btf_value_type_id = attr.btf_value_type_id
    if inner is not None:
        obj.inner_template = (inner.attr.map_type, inner.attr.key_size, inner.attr.value_size)
    return ctx.new_fd(obj, flags & (BPF_F_RDONLY | BPF_F_WRONLY))


def _known_type(t):
    return t in range(1, 40) and lib.shm_map_seg_size(ffi.new("struct shm_map_attr *", {"map_type": t, "key_size": 4,
                                                                                    "value_size": 4, "max_entries": 1})) != 0


def map_check_btf(btf, attr):
    """map_check_btf(): key/value types must have the map's sizes; returns
    the offset of a struct bpf_spin_lock in the value, or -1."""
    if attr.btf_key_type_id:
        ks = btf.size_of(attr.btf_key_type_id)
        if ks is None or ks != attr.key_size:
            raise BpfError(errno.EINVAL)
    vs = btf.size_of(attr.btf_value_type_id)
    if vs is None or vs != attr.value_size:
        raise BpfError(errno.EINVAL)
    return btf.find_member_struct(attr.btf_value_type_id, "bpf_spin_lock")


def map_freeze(ctx, attr):
    kind, oid, fl = ctx.conn.fdget(attr.map_fd)
    if kind != P.SHIM_OBJ_MAP:
        raise BpfError(errno.EINVAL)
    obj = registry.get(kind, oid)
    if obj.attr.spin_lock_off >= 0:
        raise BpfError(ENOTSUPP)   # maps with special fields
    # map_get_sys_perms(): a frozen map, or a read-only fd, cannot be written
    if obj.hdr.frozen or (fl & BPF_F_RDONLY):
        raise BpfError(errno.EPERM)
    if _write_active(obj):
        raise BpfError(errno.EBUSY)
    obj.hdr.frozen = 1
    return 0


def _write_active(obj):
    """bpf_map_write_active(): a writable mmap of the map is alive in some
    process. The kernel counts them in the vma open/close callbacks; here the
    mappings are read from /proc/PID/maps of the user's processes, which also
    forgets those of processes that died. The runtime's own mappings of the
    segment (offset 0, and a ringbuf's second copy of its data) do not count;
    what loaders map starts at data_off (the consumer page of a ringbuf, the
    values of an mmapable array)."""
    a = obj.attr
    F = _native.map_facts_enum
    mm = _native.map_facts(a.map_type).mmap
    ringbuf = mm == F.SHM_MMAP_RINGBUF
    if not (ringbuf or (mm == F.SHM_MMAP_VALUES and a.map_flags & _native.uapi.BPF_F_MMAPABLE)):
        return False
    ino = os.fstat(obj.fd).st_ino
    obj_path = os.readlink(f"/proc/self/fd/{obj.fd}")
    lo = obj.hdr.data_off
    hi = lo + F.SHM_RINGBUF_META_PAGES * kernel_sizes.PAGE if ringbuf else obj.seg_size
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for ln in lines:
            fields = ln.split(None, 5)
            if len(fields) == 6 and fields[1][1:2] == b"w" and int(fields[4]) == ino and \
                    fields[5].startswith((b"/memfd:", os.fsencode(obj_path))) and lo <= int(fields[2], 16) < hi:
                return True
    return False


# struct bpf_map_info ends, since 6.17, with the inputs `__u64 hash; __u32
# hash_size;` (104 bytes); a non-zero byte from offset 100 on is E2BIG
# (measured).
MAP_INFO_SIZE = ffi.sizeof("struct bpf_map_info")
MAP_INFO_TAIL = ffi.offsetof("struct bpf_map_info", "hash_size") + 4
MAP_INFO_HASH = ffi.offsetof("struct bpf_map_info", "hash")


def map_get_info(ctx, obj, uinfo, info_len):
    """bpf_map_get_info_by_fd()"""
    ctx.check_uarg_tail_zero(uinfo, MAP_INFO_TAIL, info_len)
    info_len = min(MAP_INFO_SIZE, info_len)
    if info_len > MAP_INFO_HASH:
        # input fields: the hash of the map (sha256 of an array's values)
        raw = ctx.conn.read(uinfo + MAP_INFO_HASH, min(info_len, MAP_INFO_TAIL) - MAP_INFO_HASH)
        hash_ptr, hash_size = struct.unpack("<QI", bytes(raw).ljust(12, b"\0"))
        if hash_ptr:
            if obj.attr.map_type == _native.uapi.BPF_MAP_TYPE_ARRAY:
                raise unsupported(errno.EINVAL, "bpf_map_info.hash (map hashes)")
            raise BpfError(errno.EINVAL)
        if hash_size:
            raise BpfError(errno.EINVAL)
    info = ffi.new("struct bpf_map_info *")
    a = obj.attr
    info.type = a.map_type
    info.id = obj.id
    info.key_size = a.key_size
    info.value_size = a.value_size
    info.max_entries = a.max_entries
    info.map_flags = a.map_flags & ~(BPF_F_RDONLY | BPF_F_WRONLY)   # bpf_map_flags_retain_permanent()
    info.map_extra = a.map_extra
    nm = obj.name.encode()
    ffi.memmove(info.name, nm, len(nm))
    if obj.btf is not None:
        info.btf_id = obj.btf.id
        info.btf_key_type_id = obj.btf_key_type_id
        info.btf_value_type_id = obj.btf_value_type_id
    ctx.conn.write(uinfo, bytes(ffi.buffer(info)).ljust(MAP_INFO_SIZE, b"\0")[:info_len])
    ctx.put_info_len(info_len)
    return 0


def fdinfo(obj, f_flags):
    a = obj.attr
    return (f"pos:\t0\nflags:\t{f_flags:08o}\nmnt_id:\t15\nino:\t{obj.id + 1000}\n"
            f"map_type:\t{a.map_type}\nkey_size:\t{a.key_size}\nvalue_size:\t{a.value_size}\n"
            f"max_entries:\t{a.max_entries}\nmap_flags:\t{a.map_flags & ~(BPF_F_RDONLY | BPF_F_WRONLY):#x}\nmap_extra:\t{a.map_extra:#x}\n"
            f"memlock:\t{memlock(obj, obj.hdr.type_state[1])}\nmap_id:\t{obj.id}\nfrozen:\t{1 if obj.frozen else 0}\n")


def memlock(obj, nr_elems=0):
    """map_mem_usage() of the kernel for this map (syscall_server/kernel_sizes.py:
    the kernel's formulas over its structure sizes measured on this machine)."""
    a = obj.attr
    usage = kernel_sizes.map_mem_usage(a.map_type, a.max_entries, a.key_size, a.value_size, a.map_flags,
                                       a.map_extra, a.nr_cpus, nr_elems)
    return obj.seg_size if usage is None else usage
