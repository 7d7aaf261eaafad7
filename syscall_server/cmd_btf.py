"""BPF_BTF_LOAD, BPF_BTF_GET_FD_BY_ID, BPF_BTF_GET_NEXT_ID and BTF info.

The kernel's own BTF (/sys/kernel/btf/*) is listed too, as the kernel lists
it: vmlinux first, with kernel_btf set, so tools that enumerate BTF
(bpftrace, `bpftool btf list`) see what they see on the kernel.
"""
import errno
import os
import re
import struct

from . import _native
from .btf import Btf
from .errors import BpfError
from .objects import BpfObject, registry

ffi = _native.ffi
P = _native.proto
BTF_MAX_SIZE = 16 * 1024 * 1024
TASK_LAYOUT_H = _native.TASK_LAYOUT_H
TASK_LAYOUT_MAGIC, TASK_LAYOUT_VERSION = 0x4b534154, 1


class BtfObject(BpfObject):
    kind = P.SHIM_OBJ_BTF
    memfd_name = "btf"

    def __init__(self, data=None, name="", kernel_path=None):
        super().__init__()
        self._data = data
        self.name = name
        self.kernel_path = kernel_path
        self.kernel_btf = kernel_path is not None
        self._parsed = None
        self.open_fd()

    _transient = BpfObject._transient + ("_parsed",)

    def revive(self, store):
        super().revive(store)
        self._parsed = None

    @property
    def data(self):
        if self._data is None:
            with open(self.kernel_path, "rb") as f:
                return f.read()
        return self._data

    @property
    def btf(self):
        if self._parsed is None:
            self._parsed = Btf(self.data)
        return self._parsed


def register_kernel_btf():
    base = "/sys/kernel/btf"
    try:
        names = os.listdir(base)
    except OSError:
        return
    names.sort(key=lambda n: (n != "vmlinux", n))
    for n in names:
        path = os.path.join(base, n)
        if os.access(path, os.R_OK) and not any(b.kernel_path == path for b in registry.all(P.SHIM_OBJ_BTF)):
            obj = registry.add(BtfObject(name=n, kernel_path=path))
            obj.get()   # held by the kernel itself: never dropped


BPF_LOG_FIXED = 8


def write_log(ctx, buf, size, level, text):
    """The verifier/BTF log as the kernel (6.4+) fills it: when it does not
    fit, the last size-1 bytes are kept (a rotating log) unless
    BPF_LOG_FIXED asks for the first ones; NUL-terminated. Returns ENOSPC
    when it did not fit (only when a log was asked for)."""
    if not level or not buf or not size:
        return 0
    data = text.encode()
    if len(data) + 1 > size:
        keep = data[:size - 1] if level & BPF_LOG_FIXED else data[len(data) - (size - 1):]
        ctx.conn.write(buf, keep + b"\0")
        return errno.ENOSPC
    ctx.conn.write(buf, data + b"\0")
    return 0


def btf_load(ctx, attr):
    if attr.btf_log_level and (not attr.btf_log_buf or attr.btf_log_size < 128 or attr.btf_log_size > (2**32 - 1) >> 2):
        raise BpfError(errno.EINVAL)
    if attr.btf_log_level & ~0x3 or (attr.btf_log_buf and not attr.btf_log_level):
        raise BpfError(errno.EINVAL)
    if attr.btf_size > BTF_MAX_SIZE:
        raise BpfError(errno.E2BIG)
    if not attr.btf_size:
        raise BpfError(errno.EINVAL)
    data = ctx.conn.read(attr.btf, attr.btf_size)
    try:
        Btf(data)
    except BpfError as e:
        write_log(ctx, attr.btf_log_buf, attr.btf_log_size, attr.btf_log_level, f"{e.strerror}\n")
        raise
    obj = BtfObject(data=data)
    obj._parsed = None
    registry.add(obj)
    return ctx.new_fd(obj)


def btf_get_fd_by_id(ctx, attr):
    if attr.open_flags:
        raise BpfError(errno.EINVAL)
    obj = registry.get(P.SHIM_OBJ_BTF, attr.btf_id)
    if obj is None:
        raise BpfError(errno.ENOENT)
    return ctx.new_fd(obj)


def btf_get_info(ctx, obj, uinfo, info_len):
    """btf_get_info_by_fd()"""
    size = ffi.sizeof("struct bpf_btf_info")
    ctx.check_uarg_tail_zero(uinfo, size, info_len)
    copy = min(info_len, size)
    info = ffi.new("struct bpf_btf_info *")
    raw = ctx.conn.read(uinfo, copy)
    ffi.memmove(info, raw, copy)
    info.id = obj.id
    data = obj.data
    if info.btf_size and info.btf:
        ctx.conn.write(info.btf, data[:min(len(data), info.btf_size)])
    info.btf_size = len(data)
    info.kernel_btf = 1 if obj.kernel_btf else 0
    ret = 0
    uname, uname_len = info.name, info.name_len
    if bool(uname) != bool(uname_len):
        raise BpfError(errno.EINVAL)
    name = obj.name.encode()
    info.name_len = len(name)
    if uname:
        if uname_len >= len(name) + 1:
            ctx.conn.write(uname, name + b"\0")
        else:
            ctx.conn.write(uname, name[:uname_len - 1] + b"\0")
            ret = -errno.ENOSPC
    ctx.conn.write(uinfo, bytes(ffi.buffer(info))[:copy])
    ctx.put_info_len(copy)
    if ret:
        raise BpfError(-ret)
    return 0


def task_layout_names(header=TASK_LAYOUT_H):
    """The struct names and (struct, member) pairs of agent/task_layout.h's
    TASK_LAYOUT_STRUCTS / TASK_LAYOUT_FIELDS lists, in their order."""
    text = header.read_text()

    def body(macro):
        start = text.index(f"#define {macro}(")
        lines = []
        for line in text[start:].splitlines():
            lines.append(line)
            if not line.rstrip().endswith("\\"):
                break
        return "\n".join(lines).split(")", 1)[1]

    structs = re.findall(r"\bS\((\w+)\)", body("TASK_LAYOUT_STRUCTS"))
    fields = re.findall(r"\bF\((\w+),\s*(\w+)\)", body("TASK_LAYOUT_FIELDS"))
    return structs, fields


def task_layout(btf, header=TASK_LAYOUT_H):
    """struct task_layout (agent/task_layout.h) for the kernel BTF `btf`."""
    structs, fields = task_layout_names(header)
    sizes = []
    for s in structs:
        tid = btf.struct_named(s)
        sizes.append(btf.size_of(tid) or 0 if tid else 0)
    offs = []
    for s, m in fields:
        tid = btf.struct_named(s)
        found = btf.member(tid, m) if tid else None
        offs.append(found if found else (-1, 0))
    out = struct.pack("<IIII", TASK_LAYOUT_MAGIC, TASK_LAYOUT_VERSION, len(structs), len(fields))
    out += struct.pack(f"<{len(sizes)}I", *sizes)
    for off, size in offs:
        out += struct.pack("<iI", off, size)
    return out


def publish_task_layout(runtime_dir, vmlinux="/sys/kernel/btf/vmlinux"):
    """Write $RUNTIME_DIR/task_layout from the kernel's BTF, atomically (the
    agents read it once; agent/helpers/current_task.c). Without a readable
    kernel BTF every struct is absent (size 0) and bpf_get_current_task()
    gives 0."""
    try:
        with open(vmlinux, "rb") as f:
            btf = Btf(f.read())
    except (OSError, BpfError):
        btf = Btf(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0")
    data = task_layout(btf)
    path = os.path.join(runtime_dir, "task_layout")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
