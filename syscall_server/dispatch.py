"""The bpf() commands as the kernel's __sys_bpf switch: the contract table
(bpf_cmd.COMMANDS: last field, where served, handler) applied before the
handler runs, for every command, as each of the kernel's command functions
starts with CHECK_ATTR. Commands the shim serves (map elements, batches,
PROG_TEST_RUN) and commands bpfshim does not serve fail with EINVAL and a
line naming them.
"""
import errno
import importlib

from . import _native, bpf_cmd
from .errors import BpfError, unsupported

ffi = _native.ffi

# cmd -> handler, resolved from the table's SERVER rows
TABLE = {}
for _cmd, _row in bpf_cmd.BY_CMD.items():
    if _row.where == bpf_cmd.SERVER:
        _mod, _fn = _row.handler.split(".")
        TABLE[_cmd] = getattr(importlib.import_module(f".{_mod}", __package__), _fn)


def cmd_name(cmd):
    return ffi.typeof("enum bpf_cmd").elements.get(cmd, f"command {cmd}")


def dispatch(ctx, cmd, attr_bytes):
    err = bpf_cmd.check_attr(cmd, attr_bytes)
    if err:
        raise BpfError(-err)
    handler = TABLE.get(cmd)
    if handler is None:
        row = bpf_cmd.BY_CMD.get(cmd)
        where = " (served in the loader)" if row and row.where == bpf_cmd.SHIM else ""
        raise unsupported(errno.EINVAL, f"bpf command {cmd_name(cmd)}{where}")
    attr = ffi.new("union bpf_attr *")
    ffi.memmove(attr, attr_bytes, min(len(attr_bytes), ffi.sizeof(attr[0])))
    return handler(ctx, attr[0])
