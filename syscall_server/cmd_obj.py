"""BPF_OBJ_PIN, BPF_OBJ_GET, BPF_*_GET_NEXT_ID, BPF_*_GET_FD_BY_ID and
BPF_OBJ_GET_INFO_BY_FD, for every kind of object."""
import errno
import os

from . import _native, cmd_btf, cmd_map, cmd_prog
from .errors import BpfError
from .objects import registry

P = _native.proto
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_PATH_FD = 1 << 14
PATH_MAX = 4096


def obj_from_fd(ctx, fd):
    kind, oid, f_flags = ctx.conn.fdget(fd)
    obj = registry.get(kind, oid) if kind else None
    return obj, f_flags


def _path(ctx, attr):
    """The pathname's bytes (any but NUL, as the kernel takes them), relative
    ones from the caller's working directory (AT_FDCWD)."""
    try:
        path = ctx.conn.read_str(attr.pathname, PATH_MAX)
    except BpfError as e:
        raise BpfError(errno.ENAMETOOLONG if e.errno == errno.E2BIG else e.errno)
    if path and not path.startswith(b"/"):
        try:
            path = os.fsencode(os.readlink(f"/proc/{ctx.conn.pid}/cwd")) + b"/" + path
        except OSError:
            raise BpfError(errno.ENOENT)
    return path


def obj_pin(ctx, attr):
    if attr.file_flags & ~BPF_F_PATH_FD:
        raise BpfError(errno.EINVAL)
    if attr.file_flags & BPF_F_PATH_FD:
        raise BpfError(errno.EINVAL, "BPF_F_PATH_FD is not supported", loud=True)
    try:
        obj, _fl = obj_from_fd(ctx, attr.bpf_fd)
    except BpfError as e:
        # bpf_fd_probe_obj(): EINVAL for any fd that is no map/prog/link
        if e.errno != errno.EBADF:
            raise
        obj = None
    if obj is None or obj.kind not in (P.SHIM_OBJ_MAP, P.SHIM_OBJ_PROG, P.SHIM_OBJ_LINK):
        raise BpfError(errno.EINVAL)     # a BTF or a perf event is no bpffs object
    registry.pin(_path(ctx, attr), obj)
    return 0


def obj_get(ctx, attr):
    if attr.bpf_fd != 0 and not (attr.file_flags & BPF_F_PATH_FD):
        raise BpfError(errno.EINVAL)
    if attr.file_flags & ~(BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_PATH_FD):
        raise BpfError(errno.EINVAL)
    f = attr.file_flags & (BPF_F_RDONLY | BPF_F_WRONLY)
    if f == BPF_F_RDONLY | BPF_F_WRONLY:
        raise BpfError(errno.EINVAL)
    obj = registry.pinned(_path(ctx, attr))
    if obj.kind != P.SHIM_OBJ_MAP and f:
        # programs and links have no read/write flavours
        pass
    return ctx.new_fd(obj, f)


def _get_next_id(kind):
    def handler(ctx, attr):
        if attr.start_id >= 0x7FFFFFFF:          # bpf_obj_get_next_id(): next_id >= INT_MAX
            raise BpfError(errno.EINVAL)
        nxt = registry.next_after(kind, attr.start_id)
        if nxt is None:
            raise BpfError(errno.ENOENT)
        ctx.conn.write(ctx.uattr_field("next_id"), nxt.to_bytes(4, "little"))
        return 0
    return handler


prog_get_next_id = _get_next_id(P.SHIM_OBJ_PROG)
map_get_next_id = _get_next_id(P.SHIM_OBJ_MAP)
btf_get_next_id = _get_next_id(P.SHIM_OBJ_BTF)
link_get_next_id = _get_next_id(P.SHIM_OBJ_LINK)


def map_get_fd_by_id(ctx, attr):
    f = attr.open_flags
    if f & ~(BPF_F_RDONLY | BPF_F_WRONLY | (1 << 16)) or f & (BPF_F_RDONLY | BPF_F_WRONLY) == (BPF_F_RDONLY | BPF_F_WRONLY):
        raise BpfError(errno.EINVAL)
    obj = registry.get(P.SHIM_OBJ_MAP, attr.map_id)
    if obj is None:
        raise BpfError(errno.ENOENT)
    return ctx.new_fd(obj, f & (BPF_F_RDONLY | BPF_F_WRONLY))


def _get_fd_by_id(kind):
    def handler(ctx, attr):
        if attr.open_flags:
            raise BpfError(errno.EINVAL)
        obj = registry.get(kind, attr.start_id)
        if obj is None:
            raise BpfError(errno.ENOENT)
        return ctx.new_fd(obj)
    return handler


prog_get_fd_by_id = _get_fd_by_id(P.SHIM_OBJ_PROG)
link_get_fd_by_id = _get_fd_by_id(P.SHIM_OBJ_LINK)

# kind -> info function (ctx, obj, uinfo, info_len); other families register here
INFO = {P.SHIM_OBJ_MAP: cmd_map.map_get_info, P.SHIM_OBJ_BTF: cmd_btf.btf_get_info,
        P.SHIM_OBJ_PROG: cmd_prog.prog_get_info}


def obj_get_info_by_fd(ctx, attr):
    try:
        obj, _fl = obj_from_fd(ctx, attr.info.bpf_fd)
    except BpfError as e:
        if e.errno == errno.EBADF:
            raise BpfError(errno.EBADFD)
        raise
    if obj is None or obj.kind not in INFO:
        raise BpfError(errno.EINVAL)
    return INFO[obj.kind](ctx, obj, attr.info.info, attr.info.info_len)
