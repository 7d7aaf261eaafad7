"""The attr-checking facts of bpf(2) on the kernel bpfshim emulates (Linux 6.18).

bpfshim answers with the running kernel's ABI, so these are that kernel's facts,
measured on it by scripts/probe_kernel_attr.c (re-checked by
compat_tests/test_uapi_facts.py) and named with the fields of the uapi header
(agent/include/uapi/linux/bpf.h) through the generated cdef. Another kernel
version has other values: a newer one a larger union and later last fields.

BPF_ATTR_SIZE   sizeof(union bpf_attr) of the kernel: bpf() copies at most this
                many bytes; a non-zero byte past it is E2BIG (and any size over
                PAGE_SIZE is E2BIG), past it the size is capped.
MAX_CMD         __MAX_BPF_CMD; each command's last field (CHECK_ATTR) is in
                the command table, bpf_cmd.py.
INFO_SIZE       {"map"|"prog"|"btf"|"link": size}: sizeof(struct bpf_*_info) that
                BPF_OBJ_GET_INFO_BY_FD copies and writes back as info_len.
"""
from ._native import ffi, uapi

# measured: attr_size 168, page_e2big 1, max_cmd 38 (probe_kernel_attr)
BPF_ATTR_SIZE = 168
MAX_CMD = 38                    # __MAX_BPF_CMD: commands >= this are EINVAL
PAGE_SIZE = 4096                # bpf_check_uarg_tail_zero(): a larger size is E2BIG

# measured: info map 104, prog 232, btf 32, link 64 (probe_kernel_attr)
INFO_SIZE = {"map": 104, "prog": 232, "btf": 32, "link": 64}


def _self_check():
    # the header the facts are named in has the measured sizes
    assert ffi.sizeof("union bpf_attr") == BPF_ATTR_SIZE
    assert MAX_CMD == uapi.__MAX_BPF_CMD
    for kind, size in INFO_SIZE.items():
        assert ffi.sizeof(f"struct bpf_{kind}_info") == size, kind


_self_check()
