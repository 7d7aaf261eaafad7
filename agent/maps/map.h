/* SPDX-License-Identifier: MIT */
/*
 * Maps in shared memory: one C implementation, compiled into the preload
 * library (loaders and targets) and into libbpfshim_core.so (the server, via
 * cffi).
 *
 * Each map is one segment (a memfd the server creates; the map fd a loader
 * holds *is* that memfd). The segment starts with `struct shm_map_hdr`;
 * everything after it belongs to the map type and is addressed by offsets,
 * never pointers, because every process maps the segment at its own address.
 *
 * Map types are registered once in map_types.h; each implementation file
 * ends in a `const struct shm_map_ops <type>_map_ops`, as the kernel's
 * bpf_types.h / bpf_map_ops.
 *
 * Return convention: 0 or a negative errno (-ENOENT, -EEXIST, -E2BIG, ...),
 * exactly what the kernel's map op returns for the same case.
 */
#ifndef BPFSHIM_MAP_H
#define BPFSHIM_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <linux/bpf.h>
#include "common.h"
#include "shm_lock.h"
#include "map_facts.h"

#define SHM_MAP_MAGIC 0x4d504246u /* "FBPM" */
#define SHM_MAP_VERSION 1

/* The attributes a map is created with (decoded from union bpf_attr). */
struct shm_map_attr {
	uint32_t map_type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
	uint32_t nr_cpus;        /* possible CPUs, for percpu layouts */
	uint64_t map_extra;      /* bloom filter: nr_hash_funcs in low 4 bits */
	int32_t spin_lock_off;   /* offset of struct bpf_spin_lock in value, or -1 */
	uint32_t inner_map_type; /* map-in-map: template of the inner map */
	uint32_t inner_key_size, inner_value_size, inner_max_entries, inner_map_flags;
};

/* At offset 0 of every segment. */
struct shm_map_hdr {
	uint32_t magic;
	uint32_t version;
	struct shm_map_attr attr;
	uint32_t id;             /* server-assigned map id */
	uint32_t frozen;         /* MAP_FREEZE done */
	uint64_t seg_size;       /* total bytes of the segment */
	uint64_t data_off;       /* where the type's area starts (page aligned
	                          * for mmapable arrays and ringbufs) */
	shm_lock_t lock;         /* map-wide lock for types that need one */
	uint32_t _pad;
	char name[BPF_OBJ_NAME_LEN];
	uint64_t type_state[8];  /* small per-type counters (e.g. elements) */
};

/* A process-local handle on a mapped segment. */
struct shm_map {
	struct shm_map_hdr *hdr;
	const struct shm_map_ops *ops;
	uint64_t size;
	int fd;                  /* the memfd, in this process, or -1 */
	uint32_t value_stride;   /* round_up(value_size, 8) for percpu/array */
	void *data;              /* the type's area (data_off when it was opened) */
	struct shm_map_attr attr; /* the header's attrs when it was opened (checked
	                          * then): what shm_map_geometry_ok compares; code
	                          * may use them instead of the header's (arrays) */
	uint64_t geo[2];         /* the type's own geometry, from attr (ops->geometry):
	                          * what its checks compare the header's with */
};

static inline void *shm_map_data(const struct shm_map *m)
{
	return m->data;
}

/*
 * Ops. `sys_*` are the syscall-side entry points (values copied in/out in
 * the syscall layout: percpu values as round_up(value_size, 8) * nr_cpus);
 * `lookup_ptr` etc. are what program helpers use (in-place pointer, this
 * CPU's slot for percpu maps). NULL means the map type does not support the
 * op and the caller returns the kernel's errno for that (usually
 * -EOPNOTSUPP or -EINVAL as the kernel's map_ops leaves it).
 */
struct shm_map_ops {
	/* Validate attrs as the kernel's map_alloc_check does; 0 or -errno. */
	int (*alloc_check)(const struct shm_map_attr *attr);
	/* Bytes of type area needed after the header (before page rounding). */
	uint64_t (*area_size)(const struct shm_map_attr *attr);
	/* Page-align the type area (mmapable array, ringbuf). */
	int page_aligned_area;
	/* Fill m->geo from m->attr (checked already): at open and format. */
	void (*geometry)(struct shm_map *m);
	/* Format a zeroed segment. */
	int (*init)(struct shm_map *m);

	int (*sys_lookup)(struct shm_map *m, const void *key, void *value, uint64_t flags);
	int (*sys_update)(struct shm_map *m, const void *key, const void *value, uint64_t flags);
	int (*sys_delete)(struct shm_map *m, const void *key);
	int (*sys_lookup_and_delete)(struct shm_map *m, const void *key, void *value, uint64_t flags);
	/* key == NULL: first key. A key not in the map: first key (kernel hash). */
	int (*get_next_key)(struct shm_map *m, const void *key, void *next_key);

	/* Program side. */
	void *(*lookup_ptr)(struct shm_map *m, const void *key);
	int (*prog_update)(struct shm_map *m, const void *key, const void *value, uint64_t flags);
	int (*prog_delete)(struct shm_map *m, const void *key);
	int (*push)(struct shm_map *m, const void *value, uint64_t flags);
	int (*pop)(struct shm_map *m, void *value);
	int (*peek)(struct shm_map *m, void *value);

	struct shm_map_facts facts;
};

/* map_types.h expands to the table below. */
extern const struct shm_map_ops *const shm_map_ops_table[];
extern const unsigned shm_map_ops_table_len;

static inline const struct shm_map_ops *shm_map_ops_get(uint32_t map_type)
{
	return map_type < shm_map_ops_table_len ? shm_map_ops_table[map_type] : NULL;
}

/* The facts of a map type (map_facts.h), NULL for a type bpfshim lacks. */
const struct shm_map_facts *shm_map_facts(uint32_t map_type);

/* Whether the header of m's segment (writable by every holder of the map fd)
 * still says what it said when shm_map_open checked it fits the mapping:
 * what every offset of the type's area is computed from. A type either
 * computes offsets only from m->attr and m->geo (array, hash) or checks
 * this before following the header; each checks the indices it reads from
 * the area. */
static inline int shm_map_geometry_ok(const struct shm_map *m)
{
	const struct shm_map_hdr *h = m->hdr;
	const uint64_t *a = (const uint64_t *)&h->attr, *b = (const uint64_t *)&m->attr;
	uint64_t d = 0;

	/* on every element operation (twice in some): words, not memcmp */
	_Static_assert(sizeof(struct shm_map_attr) % 8 == 0 && offsetof(struct shm_map_hdr, attr) % 8 == 0,
		       "shm_map_attr compared as words");
	for (size_t i = 0; i < sizeof(struct shm_map_attr) / 8; i++)
		d |= a[i] ^ b[i];
	return h->magic == SHM_MAP_MAGIC && !d && h->data_off == (uint64_t)((char *)m->data - (char *)h);
}
/* Total segment size for attrs, or 0 if the type is unknown. */
uint64_t shm_map_seg_size(const struct shm_map_attr *attr);
/* Validate attrs (common checks + the type's alloc_check): 0 or -errno. */
int shm_map_check_attr(const struct shm_map_attr *attr);
/* Initialise a zeroed segment of shm_map_seg_size() bytes at `base`. */
int shm_map_format(void *base, uint64_t size, const struct shm_map_attr *attr,
		   uint32_t id, const char *name);
/* Bind a process-local handle to an already formatted mapping. */
int shm_map_open(struct shm_map *m, void *base, uint64_t size, int fd);

/* The CPU a value slot belongs to: the slot the program run in progress
 * holds (agent/run_cpu.c), else sched_getcpu(); clamped to nr_cpus. */
uint32_t shm_cur_cpu(const struct shm_map *m);
extern __thread int shm_run_cpu;   /* -1: no run holds a slot */
/* Number of possible CPUs on this machine (/sys/devices/system/cpu/possible). */
uint32_t shm_nr_possible_cpus(void);

/* Value copies as the kernel's copy_map_value(): the bpf_spin_lock word at
 * attr.spin_lock_off is never copied; _locked takes it (on src or dst). */
void shm_copy_value(const struct shm_map *m, void *dst, const void *src);
void shm_copy_value_locked(const struct shm_map *m, void *dst, const void *src, int lock_src);
/* After shm_lock_takeover() of a value's lock returned `dead_word`: finish
 * the journaled copy the dead holder was in the middle of, if any, and make
 * the lock word this thread's plain tid. */
void shm_value_lock_recover(const struct shm_map *m, void *value, uint32_t dead_word);
void shm_clear_special(const struct shm_map *m, void *value);

/* fd arrays (perf_event_array, prog_array, ...): the object id in slot i, or 0. */
uint32_t shm_fd_array_get(const struct shm_map *m, uint32_t i);
/* Elements in use of a hash map. */
uint64_t shm_htab_count(const struct shm_map *m);

/*
 * Mapping a segment. shm_map_mmap() maps a whole segment read-write, shared;
 * for a ringbuf it also maps the data area a second time right after the
 * segment (as the kernel's double mapping), and *mapped gets the length to
 * pass to shm_map_open() (seg_size, or seg_size + max_entries for a
 * ringbuf). Undo with munmap(base, *mapped).
 *
 * Offsets a loader's mmap(map_fd, off) must be translated by (the kernel's
 * bpf_map_mmap): file offset = hdr->data_off + off.
 *   - BPF_F_MMAPABLE array: values from data_off (page aligned), stride
 *     round_up(value_size, 8).
 *   - ringbuf (data_off = 4096): consumer page at data_off, producer page at
 *     data_off + 4096, data (max_entries bytes) at data_off + 8192, ending at
 *     seg_size. libbpf maps off 0 (consumer, 1 page, rw) and off 4096
 *     (producer page + 2 * max_entries, ro): map file [data_off + 4096,
 *     seg_size) and then the data area once more right after it (MAP_FIXED
 *     over a reservation of the full length), as shm_map_mmap() does.
 */
void *shm_map_mmap(int fd, uint64_t seg_size, uint64_t *mapped);

/* Ringbuf (ringbuf.c). submit/discard/output return 1 when consumers are
 * to be woken (the kernel's irq_work), 0 if not; output returns -EINVAL /
 * -EAGAIN as bpf_ringbuf_output. shm_ringbuf_of() gives the segment header
 * a sample belongs to (bpf_ringbuf_restore_from_rec), hdr->id is the map id.
 * shm_ringbuf_consume() is libbpf's ringbuf consume loop (for C users). */
void *shm_ringbuf_reserve(struct shm_map *m, uint64_t size, uint64_t flags);
int shm_ringbuf_submit(void *sample, uint64_t flags);
int shm_ringbuf_discard(void *sample, uint64_t flags);
struct shm_map_hdr *shm_ringbuf_of(void *sample);
int shm_ringbuf_output(struct shm_map *m, const void *data, uint64_t size, uint64_t flags);
uint64_t shm_ringbuf_query(struct shm_map *m, uint64_t flags);
int shm_ringbuf_consume(struct shm_map *m, int (*fn)(void *ctx, void *data, uint32_t len), void *ctx);

/* bpf_get_stackid() on a stack trace map: ips = the whole callchain (nr
 * frames, innermost first); skip / BPF_F_FAST_STACK_CMP /
 * BPF_F_REUSE_STACKID as the kernel. The id, or -EFAULT/-EEXIST/-ENOMEM/-EINVAL. */
int shm_stack_map_get_stackid(struct shm_map *m, const uint64_t *ips, uint32_t nr, uint64_t flags);
/* From now on the map's ids start at its n_buckets (a hybrid twin's map:
 * the kernel map's ids are below): that first id, or -E2BIG. */
int64_t shm_stack_map_ids_above(struct shm_map *m);

#define SHM_BPF_F_ACCESS_MASK (BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG)
#define SHM_ENOTSUPP 524     /* ENOTSUPP: kernel-internal, but bpf() returns it */

/* bpf_map_flags_access_ok() */
static inline int shm_map_flags_access_ok(uint32_t f)
{
	return (f & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)) != (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG);
}

#endif
