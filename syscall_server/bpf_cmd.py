"""The bpf() commands: one contract per command, as the kernel's __sys_bpf
switch and the CHECK_ATTR each command function starts with.

A row: the command (enum bpf_cmd), its BPF_<CMD>_LAST_FIELD as a field path of
union bpf_attr, where bpfshim serves it, the handler, and a note.

  SHIM    in the loader (libbpf_shim/): map element and batch commands on the
          shared segment, PROG_TEST_RUN in the caller's process
  SERVER  one request to the server: `handler` is module.function here
  NONE    not served: EINVAL and a line naming the command

The last fields are the running kernel's (6.18), measured by
scripts/probe_kernel_attr.c and re-checked by compat_tests/test_uapi_facts.py.
The probe finds, for each command, the highest byte that can be non-zero
without EINVAL; the field holding it ends at offsetofend(last field) for every
command except the three marked "rejects non-zero": there the last field takes
no non-zero value (flags that must be 0, type 0 only), so a non-zero byte in it
is EINVAL either way and only the source names it.

Both sides apply the contract from this table: the server in dispatch.py,
the shim through libbpf_shim/bpf_cmd_table.h, generated from it by
scripts/gen_bpf_cmd.py (test_uapi_facts checks it is up to date).
"""
import errno
from collections import namedtuple

from ._native import ffi, uapi
from .uapi_facts import BPF_ATTR_SIZE, MAX_CMD, PAGE_SIZE

SHIM, SERVER, NONE = "SHIM", "SERVER", "NONE"

Cmd = namedtuple("Cmd", "name last_field where handler note")

COMMANDS = (
    Cmd("BPF_MAP_CREATE", "excl_prog_hash_size", SERVER, "cmd_map.map_create", ""),
    Cmd("BPF_MAP_LOOKUP_ELEM", "flags", SHIM, "map_cmds.c map_lookup_elem", ""),
    Cmd("BPF_MAP_UPDATE_ELEM", "flags", SHIM, "map_cmds.c map_update_elem", ""),
    Cmd("BPF_MAP_DELETE_ELEM", "key", SHIM, "map_cmds.c map_delete_elem", ""),
    Cmd("BPF_MAP_GET_NEXT_KEY", "next_key", SHIM, "map_cmds.c map_get_next_key", ""),
    Cmd("BPF_PROG_LOAD", "keyring_id", SERVER, "cmd_prog.prog_load", "signatures (keyring_id) fail loudly"),
    Cmd("BPF_OBJ_PIN", "path_fd", SERVER, "cmd_obj.obj_pin", ""),
    Cmd("BPF_OBJ_GET", "path_fd", SERVER, "cmd_obj.obj_get", ""),
    Cmd("BPF_PROG_ATTACH", "expected_revision", NONE, None, "cgroup/sockmap attach"),
    Cmd("BPF_PROG_DETACH", "expected_revision", NONE, None, "cgroup/sockmap detach"),
    Cmd("BPF_PROG_TEST_RUN", "test.batch_size", SHIM, "test_run.c shim_prog_test_run", ""),
    Cmd("BPF_PROG_GET_NEXT_ID", "next_id", SERVER, "cmd_obj.prog_get_next_id", ""),
    Cmd("BPF_MAP_GET_NEXT_ID", "next_id", SERVER, "cmd_obj.map_get_next_id", ""),
    Cmd("BPF_PROG_GET_FD_BY_ID", "prog_id", SERVER, "cmd_obj.prog_get_fd_by_id", ""),
    Cmd("BPF_MAP_GET_FD_BY_ID", "open_flags", SERVER, "cmd_obj.map_get_fd_by_id", ""),
    Cmd("BPF_OBJ_GET_INFO_BY_FD", "info.info", SERVER, "cmd_obj.obj_get_info_by_fd", ""),
    Cmd("BPF_PROG_QUERY", "query.revision", NONE, None, "cgroup/netns program lists"),
    Cmd("BPF_RAW_TRACEPOINT_OPEN", "raw_tracepoint.cookie", NONE, None, "kernel raw tracepoints"),
    Cmd("BPF_BTF_LOAD", "btf_token_fd", SERVER, "cmd_btf.btf_load", ""),
    Cmd("BPF_BTF_GET_FD_BY_ID", "fd_by_id_token_fd", SERVER, "cmd_btf.btf_get_fd_by_id", ""),
    Cmd("BPF_TASK_FD_QUERY", "task_fd_query.probe_addr", SERVER, "perf_event.task_fd_query", ""),
    Cmd("BPF_MAP_LOOKUP_AND_DELETE_ELEM", "flags", SHIM, "map_cmds.c map_lookup_and_delete_elem", ""),
    Cmd("BPF_MAP_FREEZE", "map_fd", SERVER, "cmd_map.map_freeze", ""),
    Cmd("BPF_BTF_GET_NEXT_ID", "next_id", SERVER, "cmd_obj.btf_get_next_id", ""),
    Cmd("BPF_MAP_LOOKUP_BATCH", "batch.flags", SHIM, "map_cmds.c map_do_batch", ""),
    Cmd("BPF_MAP_LOOKUP_AND_DELETE_BATCH", "batch.flags", SHIM, "map_cmds.c map_do_batch", ""),
    Cmd("BPF_MAP_UPDATE_BATCH", "batch.flags", SHIM, "map_cmds.c map_do_batch", ""),
    Cmd("BPF_MAP_DELETE_BATCH", "batch.flags", SHIM, "map_cmds.c map_do_batch", ""),
    Cmd("BPF_LINK_CREATE", "link_create.uprobe_multi.pid", SERVER, "cmd_link.link_create", ""),
    Cmd("BPF_LINK_UPDATE", "link_update.old_prog_fd", NONE, None, ""),
    Cmd("BPF_LINK_GET_FD_BY_ID", "link_id", SERVER, "cmd_obj.link_get_fd_by_id", ""),
    Cmd("BPF_LINK_GET_NEXT_ID", "next_id", SERVER, "cmd_obj.link_get_next_id", ""),
    Cmd("BPF_ENABLE_STATS", "enable_stats.type", NONE, None, "rejects non-zero (only BPF_STATS_RUN_TIME = 0)"),
    Cmd("BPF_ITER_CREATE", "iter_create.flags", NONE, None, "rejects non-zero"),
    Cmd("BPF_LINK_DETACH", "link_detach.link_fd", NONE, None, ""),
    Cmd("BPF_PROG_BIND_MAP", "prog_bind_map.flags", SERVER, "cmd_prog.prog_bind_map", "rejects non-zero"),
    Cmd("BPF_TOKEN_CREATE", "token_create.bpffs_fd", NONE, None, "BPF tokens"),
    Cmd("BPF_PROG_STREAM_READ_BY_FD", "prog_stream_read.prog_fd", NONE, None, ""),
)
# last fields that take no non-zero value: the probe sees the field before them
LAST_FIELD_REJECTS_NONZERO = {c.name for c in COMMANDS if c.note.startswith("rejects non-zero")}


def offsetofend(path, ctype="union bpf_attr"):
    """offsetof + sizeof of a field path ("link_create.uprobe_multi.pid")."""
    parts = path.split(".")
    t = ffi.typeof(ctype)
    for p in parts:
        t = dict(t.fields)[p].type
    return ffi.offsetof(ctype, *parts) + ffi.sizeof(t)


BY_CMD = {getattr(uapi, c.name): c for c in COMMANDS}
CMD_LAST_FIELD = {cmd: (c.last_field, offsetofend(c.last_field)) for cmd, c in BY_CMD.items()}


def check_attr(cmd, attr_bytes):
    """The kernel's first checks of bpf(cmd, attr, size) on the attr bytes the
    caller passed (bpf_check_uarg_tail_zero, then the command's CHECK_ATTR):
    -E2BIG/-EINVAL, or 0 when they pass."""
    if len(attr_bytes) > PAGE_SIZE:
        return -errno.E2BIG
    if any(attr_bytes[BPF_ATTR_SIZE:]):
        return -errno.E2BIG
    if cmd not in CMD_LAST_FIELD:
        return -errno.EINVAL                          # __sys_bpf: default
    end = CMD_LAST_FIELD[cmd][1]
    return -errno.EINVAL if any(attr_bytes[end:BPF_ATTR_SIZE]) else 0


def _self_check():
    assert [getattr(uapi, c.name) for c in COMMANDS] == list(range(MAX_CMD)), "one row per command, in enum order"
    for c in COMMANDS:
        assert (c.where == SERVER) == (c.handler is not None and "." in c.handler and " " not in c.handler), c
        assert CMD_LAST_FIELD[getattr(uapi, c.name)][1] <= BPF_ATTR_SIZE, c


_self_check()
