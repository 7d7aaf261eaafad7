"""The attr-checking facts of bpf(2) on the kernel bpfshim emulates (Linux 6.18).

bpfshim answers with the running kernel's ABI, so these are that kernel's facts,
measured on it by scripts/probe_kernel_attr.c (re-checked by
compat_tests/test_uapi_facts.py) and named with the fields of the uapi header
(agent/include/uapi/linux/bpf.h) through the generated cdef. Another kernel
version has other values: a newer one a larger union and later last fields.

BPF_ATTR_SIZE   sizeof(union bpf_attr) of the kernel: bpf() copies at most this
                many bytes; a non-zero byte past it is E2BIG (and any size over
                PAGE_SIZE is E2BIG), past it the size is capped.
CMD_LAST_FIELD  {cmd: (field path, offsetofend)}: the kernel's
                BPF_<CMD>_LAST_FIELD (CHECK_ATTR): a non-zero byte at offset >=
                offsetofend is EINVAL, before any other check of the command.
INFO_SIZE       {"map"|"prog"|"btf"|"link": size}: sizeof(struct bpf_*_info) that
                BPF_OBJ_GET_INFO_BY_FD copies and writes back as info_len.
"""
import errno

from ._native import ffi, uapi

# measured: attr_size 168, page_e2big 1, max_cmd 38 (probe_kernel_attr)
BPF_ATTR_SIZE = 168
MAX_CMD = 38                    # __MAX_BPF_CMD: commands >= this are EINVAL

# BPF_<CMD>_LAST_FIELD of kernel/bpf/syscall.c (6.18) as a field path of union
# bpf_attr. The probe finds, for each command, the highest byte that can be
# non-zero without EINVAL; the field holding that byte ends at the offset below
# for every command except the three marked "rejects non-zero": there the last
# field takes no non-zero value (flags that must be 0, type 0 only), so a
# non-zero byte in it is EINVAL either way and only the source names it.
_LAST_FIELD = {
    "BPF_MAP_CREATE": "excl_prog_hash_size",
    "BPF_MAP_LOOKUP_ELEM": "flags",
    "BPF_MAP_UPDATE_ELEM": "flags",
    "BPF_MAP_DELETE_ELEM": "key",
    "BPF_MAP_GET_NEXT_KEY": "next_key",
    "BPF_PROG_LOAD": "keyring_id",
    "BPF_OBJ_PIN": "path_fd",
    "BPF_OBJ_GET": "path_fd",
    "BPF_PROG_ATTACH": "expected_revision",
    "BPF_PROG_DETACH": "expected_revision",
    "BPF_PROG_TEST_RUN": "test.batch_size",
    "BPF_PROG_GET_NEXT_ID": "next_id",
    "BPF_MAP_GET_NEXT_ID": "next_id",
    "BPF_PROG_GET_FD_BY_ID": "prog_id",
    "BPF_MAP_GET_FD_BY_ID": "open_flags",
    "BPF_OBJ_GET_INFO_BY_FD": "info.info",
    "BPF_PROG_QUERY": "query.revision",
    "BPF_RAW_TRACEPOINT_OPEN": "raw_tracepoint.cookie",
    "BPF_BTF_LOAD": "btf_token_fd",
    "BPF_BTF_GET_FD_BY_ID": "fd_by_id_token_fd",
    "BPF_TASK_FD_QUERY": "task_fd_query.probe_addr",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM": "flags",
    "BPF_MAP_FREEZE": "map_fd",
    "BPF_BTF_GET_NEXT_ID": "next_id",
    "BPF_MAP_LOOKUP_BATCH": "batch.flags",
    "BPF_MAP_LOOKUP_AND_DELETE_BATCH": "batch.flags",
    "BPF_MAP_UPDATE_BATCH": "batch.flags",
    "BPF_MAP_DELETE_BATCH": "batch.flags",
    "BPF_LINK_CREATE": "link_create.uprobe_multi.pid",
    "BPF_LINK_UPDATE": "link_update.old_prog_fd",
    "BPF_LINK_GET_FD_BY_ID": "link_id",
    "BPF_LINK_GET_NEXT_ID": "next_id",
    "BPF_ENABLE_STATS": "enable_stats.type",        # rejects non-zero (only BPF_STATS_RUN_TIME = 0)
    "BPF_ITER_CREATE": "iter_create.flags",         # rejects non-zero
    "BPF_LINK_DETACH": "link_detach.link_fd",
    "BPF_PROG_BIND_MAP": "prog_bind_map.flags",     # rejects non-zero
    "BPF_TOKEN_CREATE": "token_create.bpffs_fd",
    "BPF_PROG_STREAM_READ_BY_FD": "prog_stream_read.prog_fd",
}
# last fields that take no non-zero value: the probe sees the field before them
LAST_FIELD_REJECTS_NONZERO = {"BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_PROG_BIND_MAP"}


def offsetofend(path, ctype="union bpf_attr"):
    """offsetof + sizeof of a field path ("link_create.uprobe_multi.pid")."""
    parts = path.split(".")
    t = ffi.typeof(ctype)
    for p in parts:
        t = dict(t.fields)[p].type
    return ffi.offsetof(ctype, *parts) + ffi.sizeof(t)


CMD_LAST_FIELD = {getattr(uapi, name): (field, offsetofend(field)) for name, field in _LAST_FIELD.items()}
CMD_NAME = {getattr(uapi, name): name for name in _LAST_FIELD}

# measured: info map 104, prog 232, btf 32, link 64 (probe_kernel_attr)
INFO_SIZE = {"map": 104, "prog": 232, "btf": 32, "link": 64}


def check_attr(cmd, attr_bytes):
    """The kernel's first checks of bpf(cmd, attr, size) on the attr bytes the
    caller passed: -E2BIG/-EINVAL, or 0 when they pass."""
    if len(attr_bytes) > 4096:
        return -errno.E2BIG                          # size > PAGE_SIZE
    if any(attr_bytes[BPF_ATTR_SIZE:]):
        return -errno.E2BIG                          # non-zero past the union
    if cmd not in CMD_LAST_FIELD:
        return -errno.EINVAL
    end = CMD_LAST_FIELD[cmd][1]
    return -errno.EINVAL if any(attr_bytes[end:BPF_ATTR_SIZE]) else 0


def _self_check():
    # the header the facts are named in has the measured sizes
    assert ffi.sizeof("union bpf_attr") == BPF_ATTR_SIZE
    assert len(CMD_LAST_FIELD) == MAX_CMD == uapi.__MAX_BPF_CMD
    for kind, size in INFO_SIZE.items():
        assert ffi.sizeof(f"struct bpf_{kind}_info") == size, kind


_self_check()
