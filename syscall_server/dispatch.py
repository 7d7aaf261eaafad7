"""The bpf() commands, one table indexed by enum bpf_cmd, as the kernel's
__sys_bpf switch. The attr contract of each command (its last field:
CHECK_ATTR) is uapi_facts.CMD_LAST_FIELD, measured on the kernel; it is
checked here before the handler runs, for every command, as each of the
kernel's command functions does first. Commands absent from the table fail
with EINVAL and a line naming them.
"""
import errno

from . import _native, cmd_btf, cmd_link, cmd_map, cmd_obj, cmd_prog, perf_event, uapi_facts
from .errors import BpfError, unsupported

ffi = _native.ffi
U = _native.uapi

# cmd -> handler. Map element commands are served by the shim and never
# arrive here (libbpf_shim/map_cmds.c checks the same table's ends).
TABLE = {}


def _reg(cmd_name, handler):
    TABLE[getattr(U, cmd_name)] = handler


_reg("BPF_MAP_CREATE", cmd_map.map_create)
_reg("BPF_MAP_FREEZE", cmd_map.map_freeze)
_reg("BPF_OBJ_PIN", cmd_obj.obj_pin)
_reg("BPF_OBJ_GET", cmd_obj.obj_get)
_reg("BPF_PROG_GET_NEXT_ID", cmd_obj.prog_get_next_id)
_reg("BPF_MAP_GET_NEXT_ID", cmd_obj.map_get_next_id)
_reg("BPF_BTF_GET_NEXT_ID", cmd_obj.btf_get_next_id)
_reg("BPF_LINK_GET_NEXT_ID", cmd_obj.link_get_next_id)
_reg("BPF_MAP_GET_FD_BY_ID", cmd_obj.map_get_fd_by_id)
_reg("BPF_PROG_GET_FD_BY_ID", cmd_obj.prog_get_fd_by_id)
_reg("BPF_LINK_GET_FD_BY_ID", cmd_obj.link_get_fd_by_id)
_reg("BPF_BTF_GET_FD_BY_ID", cmd_btf.btf_get_fd_by_id)
_reg("BPF_OBJ_GET_INFO_BY_FD", cmd_obj.obj_get_info_by_fd)
_reg("BPF_BTF_LOAD", cmd_btf.btf_load)
_reg("BPF_PROG_LOAD", cmd_prog.prog_load)
_reg("BPF_PROG_BIND_MAP", cmd_prog.prog_bind_map)
_reg("BPF_TASK_FD_QUERY", perf_event.task_fd_query)
_reg("BPF_LINK_CREATE", cmd_link.link_create)


def cmd_name(cmd):
    return ffi.typeof("enum bpf_cmd").elements.get(cmd, f"command {cmd}")


def dispatch(ctx, cmd, attr_bytes):
    err = uapi_facts.check_attr(cmd, attr_bytes)
    if err:
        raise BpfError(-err)
    handler = TABLE.get(cmd)
    if handler is None:
        raise unsupported(errno.EINVAL, f"bpf command {cmd_name(cmd)}")
    attr = ffi.new("union bpf_attr *")
    ffi.memmove(attr, attr_bytes, min(len(attr_bytes), ffi.sizeof(attr[0])))
    return handler(ctx, attr[0])
