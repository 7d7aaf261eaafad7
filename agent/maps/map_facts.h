/* SPDX-License-Identifier: MIT */
/*
 * The facts of a map type that code outside the type's own file acts on, as
 * the kernel's struct bpf_map_ops and map-type checks carry them: one struct
 * in each type's ops (map.h), so no file keeps a list of types. The shim and
 * the helpers read m->ops->facts; the server reads shm_map_facts() through
 * cffi, which parses this header (no preprocessor lines but the guard).
 */
#ifndef BPFSHIM_MAP_FACTS_H
#define BPFSHIM_MAP_FACTS_H

/* What the values of an fd map are in the syscall layout: fds of objects of
 * this kind (map_fd_get_ptr); the segment keeps their ids. */
enum shm_fd_value { SHM_FD_NONE, SHM_FD_PROG, SHM_FD_MAP, SHM_FD_PERF_EVENT, SHM_FD_CGROUP };

/* Maps without keys: queue and stack peek on lookup, pop on lookup-and-delete;
 * a bloom filter takes the value in on lookup; both push on update. */
enum shm_keyless { SHM_KEYED, SHM_KEYLESS_QUEUE, SHM_KEYLESS_BLOOM };

/* The batch commands the type has (htab's BATCH_OPS, generic_map_*_batch). */
enum shm_batch { SHM_BATCH_LOOKUP = 1, SHM_BATCH_LOOKUP_AND_DELETE = 2, SHM_BATCH_UPDATE = 4, SHM_BATCH_DELETE = 8 };

/* What mmap of the map fd maps (the type's map_mmap): the values
 * (BPF_F_MMAPABLE), or a ringbuf's consumer page, producer page and data
 * (mapped twice back to back: ringbuf_map_mmap_kern). */
enum shm_mmap { SHM_MMAP_NONE, SHM_MMAP_VALUES, SHM_MMAP_RINGBUF };
/* a ringbuf's segment from data_off: consumer page, producer page, data once */
enum { SHM_RINGBUF_META_PAGES = 2 };

/* bpf_for_each_map_elem(): by index (arrays) or in get_next_key order. */
enum shm_walk { SHM_WALK_NONE, SHM_WALK_INDEX, SHM_WALK_KEYS };

struct shm_map_facts {
	unsigned char percpu;    /* a value per possible CPU: round_up(value_size, 8)
	                          * x nr_cpus in the syscall layout */
	unsigned char fd_value;  /* enum shm_fd_value */
	unsigned char hashed;    /* keys hashed into buckets (htab): a batch token
	                          * is a position, lookup-and-delete is the type's */
	unsigned char keyless;   /* enum shm_keyless */
	unsigned char batch;     /* enum shm_batch bits */
	unsigned char mmap;      /* enum shm_mmap */
	unsigned char for_each;  /* enum shm_walk */
};

#endif
