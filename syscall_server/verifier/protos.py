"""Helper prototypes (struct bpf_func_proto of kernel/bpf/helpers.c,
kernel/trace/bpf_trace.c, net/core/filter.c, kernel/bpf/ringbuf.c): the
argument and return types do_check checks a call against. A helper not
listed here is not interpreted: do_check gives up on the program (and
leaves the verdict to the structural checks) rather than guess."""

# argument types (enum bpf_arg_type)
ANY = "any"              # ARG_ANYTHING
MAP = "map"              # ARG_CONST_MAP_PTR
KEY = "key"              # ARG_PTR_TO_MAP_KEY
VALUE = "value"          # ARG_PTR_TO_MAP_VALUE
MEM = "mem"              # ARG_PTR_TO_MEM | MEM_RDONLY: read by the helper
UMEM = "umem"            # ARG_PTR_TO_UNINIT_MEM: written by the helper
SIZE = "size"            # ARG_CONST_SIZE
SIZE0 = "size0"          # ARG_CONST_SIZE_OR_ZERO
CTX = "ctx"              # ARG_PTR_TO_CTX
ALLOC_SIZE0 = "alloc0"   # ARG_CONST_ALLOC_SIZE_OR_ZERO
RINGBUF = "ringbuf"      # ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE
FUNC = "func"            # ARG_PTR_TO_FUNC: a callback
STACK0 = "stack0"        # ARG_PTR_TO_STACK_OR_NULL: the callback's context
LONG = "long"            # ARG_PTR_TO_FIXED_SIZE_MEM | MEM_UNINIT | MEM_WRITE | MEM_ALIGNED, 8 bytes (a long written)
MEM_OR_NULL = "mem0"     # ARG_PTR_TO_MEM | PTR_MAYBE_NULL | MEM_RDONLY: NULL allowed with a size of 0

# return types
INT, VOID, VALUE_OR_NULL, RINGBUF_OR_NULL = "int", "void", "value_or_null", "ringbuf_or_null"

PROTOS = {
    1: ("bpf_map_lookup_elem", VALUE_OR_NULL, (MAP, KEY)),
    2: ("bpf_map_update_elem", INT, (MAP, KEY, VALUE, ANY)),
    3: ("bpf_map_delete_elem", INT, (MAP, KEY)),
    4: ("bpf_probe_read", INT, (UMEM, SIZE0, ANY)),
    5: ("bpf_ktime_get_ns", INT, ()),
    6: ("bpf_trace_printk", INT, (MEM, SIZE)),
    7: ("bpf_get_prandom_u32", INT, ()),
    8: ("bpf_get_smp_processor_id", INT, ()),
    12: ("bpf_tail_call", VOID, (CTX, MAP, ANY)),
    14: ("bpf_get_current_pid_tgid", INT, ()),
    15: ("bpf_get_current_uid_gid", INT, ()),
    16: ("bpf_get_current_comm", INT, (UMEM, SIZE)),
    18: ("bpf_skb_vlan_push", INT, (CTX, ANY, ANY)),
    19: ("bpf_skb_vlan_pop", INT, (CTX,)),
    25: ("bpf_perf_event_output", INT, (CTX, MAP, ANY, MEM, SIZE0)),
    26: ("bpf_skb_load_bytes", INT, (CTX, ANY, UMEM, SIZE)),
    27: ("bpf_get_stackid", INT, (CTX, MAP, ANY)),
    28: ("bpf_csum_diff", INT, (MEM_OR_NULL, SIZE0, MEM_OR_NULL, SIZE0, ANY)),
    35: ("bpf_get_current_task", INT, ()),
    37: ("bpf_current_task_under_cgroup", INT, (MAP, ANY)),
    40: ("bpf_csum_update", INT, (CTX, ANY)),
    45: ("bpf_probe_read_str", INT, (UMEM, SIZE0, ANY)),
    58: ("bpf_override_return", INT, (CTX, ANY)),
    67: ("bpf_get_stack", INT, (CTX, UMEM, SIZE0, ANY)),
    112: ("bpf_probe_read_user", INT, (UMEM, SIZE0, ANY)),
    113: ("bpf_probe_read_kernel", INT, (UMEM, SIZE0, ANY)),
    114: ("bpf_probe_read_user_str", INT, (UMEM, SIZE0, ANY)),
    115: ("bpf_probe_read_kernel_str", INT, (UMEM, SIZE0, ANY)),
    105: ("bpf_strtol", INT, (MEM, SIZE, ANY, LONG)),
    106: ("bpf_strtoul", INT, (MEM, SIZE, ANY, LONG)),
    118: ("bpf_jiffies64", INT, ()),
    125: ("bpf_ktime_get_boot_ns", INT, ()),
    130: ("bpf_ringbuf_output", INT, (MAP, MEM, SIZE0, ANY)),
    131: ("bpf_ringbuf_reserve", RINGBUF_OR_NULL, (MAP, ALLOC_SIZE0, ANY)),
    132: ("bpf_ringbuf_submit", VOID, (RINGBUF, ANY)),
    133: ("bpf_ringbuf_discard", VOID, (RINGBUF, ANY)),
    134: ("bpf_ringbuf_query", INT, (MAP, ANY)),
    160: ("bpf_ktime_get_coarse_ns", INT, ()),
    164: ("bpf_for_each_map_elem", INT, (MAP, FUNC, STACK0, ANY)),
    181: ("bpf_loop", INT, (ANY, FUNC, STACK0, ANY)),
    174: ("bpf_get_attach_cookie", INT, (CTX,)),
}
# helpers whose prototype takes packet memory (.pkt_access): map lookup, update, delete, csum_diff
PKT_ACCESS = {1, 2, 3, 28}
# helpers that move the packet (bpf_helper_changes_pkt_data): the packet pointers are invalid after them
CHANGES_PKT_DATA = {18, 19}   # skb_vlan_push, skb_vlan_pop
# helpers that call a callback synchronously, and the map types with a
# map_for_each_callback (hash, array, per-CPU and LRU ones)
LOOP, FOR_EACH_MAP_ELEM = 181, 164
CALLBACKS = {LOOP, FOR_EACH_MAP_ELEM}
FOR_EACH_MAP_TYPES = {1, 2, 5, 6, 9, 10}
# helpers whose R0 do_refine_retval_range() bounds: by the size argument, by nr_cpu_ids
RET_UP_TO_SIZE = {45, 67, 114, 115}  # probe_read_str, get_stack, probe_read_user_str, probe_read_kernel_str
GET_SMP_PROCESSOR_ID = 8
# bpf_trace_printk's arguments after the format are ARG_ANYTHING: the
# prototype lists only what is checked.

# enum bpf_map_type
PROG_ARRAY, PERF_EVENT_ARRAY, STACK_TRACE, CGROUP_ARRAY, RINGBUF_MAP = 3, 4, 7, 8, 27
# check_map_func_compatibility(): the helpers a map type can be given to,
# and the map type a helper needs
MAP_ONLY = {PROG_ARRAY: {12}, PERF_EVENT_ARRAY: {25, 22, 55, 41}, STACK_TRACE: {27}, CGROUP_ARRAY: {33, 37},
            RINGBUF_MAP: {130, 131, 132, 133, 134}}
FUNC_NEEDS = {12: PROG_ARRAY, 25: PERF_EVENT_ARRAY, 27: STACK_TRACE, 37: CGROUP_ARRAY, 130: RINGBUF_MAP,
              131: RINGBUF_MAP, 134: RINGBUF_MAP}
# maps of maps (ARRAY_OF_MAPS, HASH_OF_MAPS): only bpf_map_lookup_elem, which gives an inner map
MAP_IN_MAP = {12, 13}
for _t in MAP_IN_MAP:
    MAP_ONLY[_t] = {1}
# Map types do_check knows the helpers of: a call with another one is not interpreted
KNOWN_MAP_TYPES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 27} | MAP_IN_MAP
# the struct of a map's kernel object a CONST_PTR_TO_MAP reads (map_btf_id)
MAP_STRUCT = {1: "bpf_htab", 5: "bpf_htab", 9: "bpf_htab", 10: "bpf_htab", 13: "bpf_htab",
              2: "bpf_array", 3: "bpf_array", 4: "bpf_array", 6: "bpf_array", 8: "bpf_array", 12: "bpf_array"}

# Socket helpers (net/core/filter.c). Argument types: ARG_PTR_TO_SOCK_COMMON,
# ARG_PTR_TO_BTF_ID_SOCK_COMMON | OBJ_RELEASE (bpf_sk_release), ARG_PTR_TO_CTX_OR_NULL
SOCK_ARG, SOCK_RELEASE, CTX_OR_NULL = "sock_common_arg", "sock_release", "ctx_or_null"
# return types: RET_PTR_TO_SOCKET_OR_NULL, _SOCK_COMMON_OR_NULL, _TCP_SOCK_OR_NULL
SOCKET_OR_NULL, SOCK_COMMON_OR_NULL, TCP_SOCK_OR_NULL = "socket_or_null", "sock_common_or_null", "tcp_sock_or_null"
SK_LOOKUP_TCP, SK_LOOKUP_UDP, SKC_LOOKUP_TCP = 84, 85, 99
PROTOS.update({
    17: ("bpf_get_cgroup_classid", INT, (CTX,)),
    46: ("bpf_get_socket_cookie", INT, (CTX,)),
    SK_LOOKUP_TCP: ("bpf_sk_lookup_tcp", SOCKET_OR_NULL, (CTX, MEM, SIZE, ANY, ANY)),
    SK_LOOKUP_UDP: ("bpf_sk_lookup_udp", SOCKET_OR_NULL, (CTX, MEM, SIZE, ANY, ANY)),
    86: ("bpf_sk_release", INT, (SOCK_RELEASE,)),
    95: ("bpf_sk_fullsock", SOCKET_OR_NULL, (SOCK_ARG,)),
    96: ("bpf_tcp_sock", TCP_SOCK_OR_NULL, (SOCK_ARG,)),
    98: ("bpf_get_listener_sock", SOCKET_OR_NULL, (SOCK_ARG,)),
    SKC_LOOKUP_TCP: ("bpf_skc_lookup_tcp", SOCK_COMMON_OR_NULL, (CTX, MEM, SIZE, ANY, ANY)),
    122: ("bpf_get_netns_cookie", INT, (CTX_OR_NULL,)),
})
# is_acquire_function(): r0 holds a new reference; is_ptr_cast_function():
# r0 is another view of its argument's object and shares its reference
ACQUIRE = {SK_LOOKUP_TCP, SK_LOOKUP_UDP, SKC_LOOKUP_TCP}
PTR_CAST = {95, 96}    # sk_fullsock, tcp_sock
PKT_ACCESS |= ACQUIRE    # the tuple may be in the packet
