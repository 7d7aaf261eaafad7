"""The one module that owns cffi's `ffi` and the native core library `lib`.

`ffi` knows the kernel's uapi structs (generated into uapi_cdef.h by
scripts/gen_uapi.py from agent/include/uapi/linux/bpf.h) and the exported
functions of libbpfshim_core.so (declared below, from agent/*.h).
Everything else in the server imports `ffi`, `lib` and the paths from here.
"""
import os
import re
from pathlib import Path

from cffi import FFI

PKG_DIR = Path(__file__).resolve().parent
NATIVE_DIR = PKG_DIR / "_native"
SHIM_LIB = NATIVE_DIR / "libbpfshim.so"
CORE_LIB = NATIVE_DIR / "libbpfshim_core.so"
BOOT_LIB = NATIVE_DIR / "libbpfshim_boot.so"
UAPI_CDEF = PKG_DIR / "uapi_cdef.h"

# Functions and types of our own native code (agent/maps/map.h, agent/bpf_rt.h).
CORE_CDEF = """
typedef uint32_t shm_lock_t;
struct shm_map_attr {
    uint32_t map_type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t map_flags;
    uint32_t nr_cpus;
    uint64_t map_extra;
    int32_t spin_lock_off;
    uint32_t inner_map_type;
    uint32_t inner_key_size, inner_value_size, inner_max_entries, inner_map_flags;
};
struct shm_map_hdr {
    uint32_t magic;
    uint32_t version;
    struct shm_map_attr attr;
    uint32_t id;
    uint32_t frozen;
    uint64_t seg_size;
    uint64_t data_off;
    shm_lock_t lock;
    uint32_t _pad;
    char name[16];
    uint64_t type_state[8];
};
struct shm_map {
    struct shm_map_hdr *hdr;
    const void *ops;
    uint64_t size;
    int fd;
    uint32_t value_stride;
    void *data;
    struct shm_map_attr attr;
    uint64_t geo[2];
};
const struct shm_map_facts *shm_map_facts(uint32_t map_type);
uint64_t shm_map_seg_size(const struct shm_map_attr *attr);
int shm_map_check_attr(const struct shm_map_attr *attr);
int shm_map_format(void *base, uint64_t size, const struct shm_map_attr *attr,
                   uint32_t id, const char *name);
int shm_map_open(struct shm_map *m, void *base, uint64_t size, int fd);
uint32_t shm_nr_possible_cpus(void);
void shm_futex_wake(uint32_t *addr);
int bpf_helper_supported(int func_id);
int bpf_conformance_run(const void *insns, uint32_t insn_cnt, void *mem, uint32_t mem_len,
                        void *jit_entry, uint64_t *r0);

/* ---- engines (agent/bpf_rt.h, agent/jit.c, agent/conformance.c) ---- */
/* -- agent/jit.c (AOT blob loader; owner: aot) -- */
void *bpf_jit_load(const void *blob, size_t len);
void bpf_jit_free(void *p, size_t len);
int bpf_rt_tail_call_pending(void);
/* -- end agent/jit.c -- */
"""

# Headers read at run time: `make` copies them next to the libraries.
INCLUDE = PKG_DIR / "_native" / "include"
PROTO_H = INCLUDE / "proto.h"
ATTACH_TABLE_H = INCLUDE / "attach_table.h"
TASK_LAYOUT_H = INCLUDE / "task_layout.h"
MAP_FACTS_H = INCLUDE / "map_facts.h"


def cdef_of_header(path):
    """A C header reduced to what cffi parses: no preprocessor lines."""
    return "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#"))


class Consts:
    """Integer constants of a cdef by name: uapi.BPF_MAP_CREATE, proto.SHIM_OP_BPF."""

    def __init__(self, text, prefixes):
        self._names = sorted(set(re.findall(r"\b((?:%s)\w+)\b" % "|".join(prefixes), text)))

    def __getattr__(self, name):
        try:
            v = getattr(_consts_lib(), name)
        except (AttributeError, KeyError, NotImplementedError) as e:
            raise AttributeError(name) from e
        setattr(self, name, v)
        return v

    def __dir__(self):
        return self._names

    def name_of(self, prefix, value):
        """The uapi name of a value, e.g. name_of("BPF_MAP_TYPE_", 1) -> "BPF_MAP_TYPE_HASH"."""
        for n in self._names:
            if n.startswith(prefix):
                try:
                    if getattr(self, n) == value:
                        return n
                except AttributeError:
                    pass
        return f"{prefix}{value}"


_CONSTS = None


def _consts_lib():
    """cffi serves the constants of a cdef through any dlopen'd library."""
    global _CONSTS
    if _CONSTS is None:
        _CONSTS = ffi.dlopen(None)
    return _CONSTS


ffi = FFI()
_uapi_text = UAPI_CDEF.read_text() if UAPI_CDEF.exists() else ""
if _uapi_text:
    ffi.cdef(_uapi_text)
_proto_text = cdef_of_header(PROTO_H)
ffi.cdef(_proto_text)
_facts_text = cdef_of_header(MAP_FACTS_H)
ffi.cdef(_facts_text)
ffi.cdef(CORE_CDEF)
ffi.cdef(cdef_of_header(ATTACH_TABLE_H))
uapi = Consts(_uapi_text, ["BPF_"])
proto = Consts(_proto_text, ["SHIM_"])
map_facts_enum = Consts(_facts_text, ["SHM_"])


def _load():
    if not CORE_LIB.exists():
        raise OSError(f"{CORE_LIB} is missing: run `make` (or `pip install -e .`) in the project root")
    return ffi.dlopen(str(CORE_LIB))


lib = _load() if os.environ.get("BPFSHIM_NO_NATIVE") is None else None


def map_facts(map_type):
    """The facts of a map type (agent/maps/map_facts.h) from the map engine's
    ops table, or None for a type bpfshim lacks."""
    f = lib.shm_map_facts(map_type)
    return None if f == ffi.NULL else f
