"""The bpf() commands, one table indexed by enum bpf_cmd, as the kernel's
__sys_bpf switch. Each entry: handler, and the field whose end is the
command's last byte (CHECK_ATTR: any non-zero byte after it -> EINVAL).
Commands absent from the table fail with EINVAL and a line naming them.
"""
import errno

from . import _native, cmd_btf, cmd_link, cmd_map, cmd_obj, cmd_prog, perf_event
from .errors import BpfError, unsupported

ffi = _native.ffi
U = _native.uapi


def _end(*path):
    """offsetofend(union bpf_attr, path)"""
    t = ffi.typeof("union bpf_attr")
    off = ffi.offsetof(t, *path)
    ft = t
    for p in path:
        ft = dict(ft.fields)[p].type if p in dict(ft.fields) else _anon_field(ft, p)
    return off + ffi.sizeof(ft)


def _anon_field(t, name):
    for fname, f in t.fields:
        if fname == name:
            return f.type
    raise KeyError(name)


# cmd -> (handler, end of the last field). Map element commands are served by
# the shim and never arrive; they are listed so that the table is the whole
# compatibility picture.
TABLE = {}


def _reg(cmd_name, handler, *last_fields):
    """last_fields: the command's last field, newest uapi first (a path is
    "a.b"); the first one the uapi we were built with knows is used."""
    cmd = getattr(U, cmd_name, None)
    if cmd is None:
        return
    end = None
    for f in last_fields:
        try:
            end = _end(*f.split("."))
            break
        except KeyError:
            continue
    TABLE[cmd] = (handler, end, cmd_name)


def _in_shim(ctx, attr):
    raise BpfError(errno.EINVAL, "map element commands are served in the loader")


_reg("BPF_MAP_CREATE", cmd_map.map_create, "map_token_fd", "map_extra")
_reg("BPF_MAP_FREEZE", cmd_map.map_freeze, "map_fd")
_reg("BPF_OBJ_PIN", cmd_obj.obj_pin, "path_fd", "file_flags")
_reg("BPF_OBJ_GET", cmd_obj.obj_get, "path_fd", "file_flags")
_reg("BPF_PROG_GET_NEXT_ID", cmd_obj.prog_get_next_id, "next_id")
_reg("BPF_MAP_GET_NEXT_ID", cmd_obj.map_get_next_id, "next_id")
_reg("BPF_BTF_GET_NEXT_ID", cmd_obj.btf_get_next_id, "next_id")
_reg("BPF_LINK_GET_NEXT_ID", cmd_obj.link_get_next_id, "next_id")
_reg("BPF_MAP_GET_FD_BY_ID", cmd_obj.map_get_fd_by_id, "open_flags")
_reg("BPF_PROG_GET_FD_BY_ID", cmd_obj.prog_get_fd_by_id, "next_id")
_reg("BPF_LINK_GET_FD_BY_ID", cmd_obj.link_get_fd_by_id, "link_id")
_reg("BPF_BTF_GET_FD_BY_ID", cmd_btf.btf_get_fd_by_id, "fd_by_id_token_fd", "open_flags")
_reg("BPF_OBJ_GET_INFO_BY_FD", cmd_obj.obj_get_info_by_fd, "info.info")
_reg("BPF_BTF_LOAD", cmd_btf.btf_load, "btf_token_fd", "btf_log_true_size", "btf_log_level")
_reg("BPF_PROG_LOAD", cmd_prog.prog_load, "fd_array_cnt", "prog_token_fd", "log_true_size", "core_relo_rec_size")
_reg("BPF_PROG_BIND_MAP", cmd_prog.prog_bind_map, "prog_bind_map.flags")
_reg("BPF_TASK_FD_QUERY", perf_event.task_fd_query, "task_fd_query.probe_addr")
_reg("BPF_LINK_CREATE", cmd_link.link_create, "link_create.uprobe_multi.pid", "link_create.kprobe_multi.cookies",
     "link_create.perf_event.bpf_cookie", "link_create.flags")


def apply_facts():
    """Use the running kernel's measured last fields where known."""
    try:
        from . import uapi_facts
    except ImportError:
        return
    for cmd, end in getattr(uapi_facts, "CMD_LAST_FIELD_END", {}).items():
        if cmd in TABLE:
            h, _e, n = TABLE[cmd]
            TABLE[cmd] = (h, end, n)


apply_facts()


def cmd_name(cmd):
    return ffi.typeof("enum bpf_cmd").elements.get(cmd, f"command {cmd}")


def check_attr(attr_bytes, end):
    if end is not None and any(attr_bytes[end:]):
        raise BpfError(errno.EINVAL)


def dispatch(ctx, cmd, attr_bytes):
    entry = TABLE.get(cmd)
    if entry is None:
        raise unsupported(errno.EINVAL, f"bpf command {cmd_name(cmd)}")
    handler, end, _name = entry
    check_attr(attr_bytes, end)
    attr = ffi.new("union bpf_attr *")
    ffi.memmove(attr, attr_bytes, min(len(attr_bytes), ffi.sizeof(attr[0])))
    return handler(ctx, attr[0])
