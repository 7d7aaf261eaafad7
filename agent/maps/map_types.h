/* SPDX-License-Identifier: MIT */
/* Every map type bpfshim implements, once: SHM_MAP_TYPE(uapi type, ops).
 * Expanded by map.c into the ops table indexed by enum bpf_map_type. */
SHM_MAP_TYPE(BPF_MAP_TYPE_HASH, htab_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_ARRAY, array_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_PROG_ARRAY, prog_array_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_PERF_EVENT_ARRAY, perf_event_array_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_PERCPU_HASH, htab_percpu_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_PERCPU_ARRAY, percpu_array_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_CGROUP_ARRAY, cgroup_array_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_LRU_HASH, htab_lru_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_LRU_PERCPU_HASH, htab_lru_percpu_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_ARRAY_OF_MAPS, array_of_maps_map_ops)
SHM_MAP_TYPE(BPF_MAP_TYPE_HASH_OF_MAPS, htab_of_maps_map_ops)
