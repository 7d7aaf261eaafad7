/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_ARRAY, PERCPU_ARRAY and the fd arrays (PROG_ARRAY,
 * PERF_EVENT_ARRAY, CGROUP_ARRAY, ARRAY_OF_MAPS), as kernel/bpf/arraymap.c.
 *
 * Values sit at data_off (page aligned, so an mmapable array maps straight
 * onto them), each round_up(value_size, 8) bytes; percpu arrays keep
 * nr_cpus such slots per element. fd arrays store the object's u32 id.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include "map.h"

#define ARRAY_CREATE_FLAG_MASK (BPF_F_NUMA_NODE | BPF_F_MMAPABLE | SHM_BPF_F_ACCESS_MASK | \
				BPF_F_PRESERVE_ELEMS | BPF_F_INNER_MAP)
#define PCPU_MIN_UNIT_SIZE 32768u

static int is_percpu(const struct shm_map *m)
{
	return m->attr.map_type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

/* Element code uses the attrs checked when the map was opened (m->attr), not
 * the header's: a loader writing into the segment cannot move an index or a
 * stride outside it. */
static uint64_t elem_bytes(const struct shm_map_attr *a)
{
	uint64_t s = BPFSHIM_ROUND_UP((uint64_t)a->value_size, 8);
	return a->map_type == BPF_MAP_TYPE_PERCPU_ARRAY ? s * a->nr_cpus : s;
}

static char *elem(const struct shm_map *m, uint32_t i)
{
	return (char *)shm_map_data(m) + (uint64_t)i * elem_bytes(&m->attr);
}

/* array_map_alloc_check() */
static int array_alloc_check(const struct shm_map_attr *a)
{
	int percpu = a->map_type == BPF_MAP_TYPE_PERCPU_ARRAY;

	if (a->max_entries == 0 || a->key_size != 4 || a->value_size == 0 ||
	    (a->map_flags & ~ARRAY_CREATE_FLAG_MASK) || !shm_map_flags_access_ok(a->map_flags) ||
	    (percpu && (a->map_flags & BPF_F_NUMA_NODE)))
		return -EINVAL;
	if (a->map_type != BPF_MAP_TYPE_ARRAY && (a->map_flags & (BPF_F_MMAPABLE | BPF_F_INNER_MAP)))
		return -EINVAL;
	if (a->map_type != BPF_MAP_TYPE_PERF_EVENT_ARRAY && (a->map_flags & BPF_F_PRESERVE_ELEMS))
		return -EINVAL;
	if (a->value_size > INT_MAX)
		return -E2BIG;
	if (percpu && BPFSHIM_ROUND_UP(a->value_size, 8) > PCPU_MIN_UNIT_SIZE)
		return -E2BIG;
	if (elem_bytes(a) * a->max_entries > (1ull << 40))
		return -ENOMEM;
	return 0;
}

/* fd_array_map_alloc_check() */
static int fd_array_alloc_check(const struct shm_map_attr *a)
{
	if (a->value_size != sizeof(uint32_t))
		return -EINVAL;
	if (a->map_flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG))
		return -EINVAL;
	return array_alloc_check(a);
}

static uint64_t array_area(const struct shm_map_attr *a)
{
	return elem_bytes(a) * a->max_entries;
}

static int array_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	uint32_t i = *(const uint32_t *)key;

	if (i >= m->attr.max_entries)
		return -ENOENT;
	if (is_percpu(m)) {
		/* bpf_percpu_array_copy(): every possible CPU, 8-byte aligned slots,
		 * padding included (the kernel copies round_up(value_size, 8)) */
		for (uint32_t c = 0; c < m->attr.nr_cpus; c++)
			memcpy((char *)value + (uint64_t)c * m->value_stride,
			       elem(m, i) + (uint64_t)c * m->value_stride, m->value_stride);
		return 0;
	}
	if (flags & BPF_F_LOCK)
		shm_copy_value_locked(m, value, elem(m, i), 1);
	else
		shm_copy_value(m, value, elem(m, i));
	shm_clear_special(m, value);
	return 0;
}

/* array_map_update_elem()'s store of a value that is not per CPU, under the
 * element's spin lock with BPF_F_LOCK */
static inline int array_store(struct shm_map *m, uint32_t i, const void *value, uint64_t flags)
{
	if (flags & BPF_F_LOCK)
		shm_copy_value_locked(m, elem(m, i), value, 0);
	else
		shm_copy_value(m, elem(m, i), value);
	return 0;
}

static int array_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	uint32_t i = *(const uint32_t *)key;

	if (is_percpu(m) ? flags > BPF_EXIST : (flags & ~(uint64_t)BPF_F_LOCK) > BPF_EXIST)
		return -EINVAL;
	if (i >= m->attr.max_entries)
		return -E2BIG;
	if (flags & BPF_NOEXIST)
		return -EEXIST;
	if ((flags & BPF_F_LOCK) && m->attr.spin_lock_off < 0)
		return -EINVAL;
	if (is_percpu(m)) {
		for (uint32_t c = 0; c < m->attr.nr_cpus; c++)
			memcpy(elem(m, i) + (uint64_t)c * m->value_stride,
			       (const char *)value + (uint64_t)c * m->value_stride, m->value_stride);
		return 0;
	}
	return array_store(m, i, value, flags);
}

/* Program side: the value is one CPU's (percpu) and arrives unpadded. */
static int array_prog_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	uint32_t i = *(const uint32_t *)key;

	if ((flags & ~(uint64_t)BPF_F_LOCK) > BPF_EXIST)
		return -EINVAL;
	if (i >= m->attr.max_entries)
		return -E2BIG;
	if (flags & BPF_NOEXIST)
		return -EEXIST;
	if (is_percpu(m)) {
		memcpy(elem(m, i) + (uint64_t)shm_cur_cpu(m) * m->value_stride, value, m->attr.value_size);
		return 0;
	}
	return array_store(m, i, value, flags);
}

static int array_delete(struct shm_map *m, const void *key)
{
	return -EINVAL;
}

/* array_map_get_next_key() */
static int array_get_next_key(struct shm_map *m, const void *key, void *next)
{
	uint32_t i = key ? *(const uint32_t *)key : UINT32_MAX;
	uint32_t *n = next;

	if (i >= m->attr.max_entries) {
		*n = 0;
		return 0;
	}
	if (i == m->attr.max_entries - 1)
		return -ENOENT;
	*n = i + 1;
	return 0;
}

static void *array_lookup_ptr(struct shm_map *m, const void *key)
{
	uint32_t i = *(const uint32_t *)key;

	if (i >= m->attr.max_entries)
		return NULL;
	if (is_percpu(m))
		return elem(m, i) + (uint64_t)shm_cur_cpu(m) * m->value_stride;
	return elem(m, i);
}

/* the two types differ in their facts only */
#define ARRAY_OPS(name, ...)                               \
	const struct shm_map_ops name = {                  \
		.alloc_check = array_alloc_check,          \
		.area_size = array_area,                   \
		.page_aligned_area = 1,                    \
		.facts = { __VA_ARGS__ },                  \
		.sys_lookup = array_lookup,                \
		.sys_update = array_update,                \
		.sys_delete = array_delete,                \
		.get_next_key = array_get_next_key,        \
		.lookup_ptr = array_lookup_ptr,            \
		.prog_update = array_prog_update,          \
		.prog_delete = array_delete,               \
	}

ARRAY_OPS(array_map_ops, .batch = SHM_BATCH_LOOKUP | SHM_BATCH_UPDATE, .mmap = SHM_MMAP_VALUES,
	  .for_each = SHM_WALK_INDEX);
ARRAY_OPS(percpu_array_map_ops, .percpu = 1, .batch = SHM_BATCH_LOOKUP | SHM_BATCH_UPDATE,
	  .for_each = SHM_WALK_INDEX);

/* ---- fd arrays: slots hold object ids (0 = empty) ---- */

static uint32_t *slot(const struct shm_map *m, uint32_t i)
{
	return (uint32_t *)elem(m, i);
}

/* bpf_fd_array_map_lookup_elem(): the id, for the types that have a
 * map_fd_sys_lookup_elem (programs, inner maps). */
static int fd_array_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	uint32_t i = *(const uint32_t *)key, id;

	if (i >= m->attr.max_entries)
		return -ENOENT;
	id = __atomic_load_n(slot(m, i), __ATOMIC_ACQUIRE);
	if (!id)
		return -ENOENT;
	memcpy(value, &id, sizeof(id));
	return 0;
}

static int fd_array_lookup_unsupp(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return -SHM_ENOTSUPP;
}

/* bpf_fd_array_map_update_elem(): `value` is the object id (the shim turned
 * the fd the caller passed into it). */
static int fd_array_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	uint32_t i = *(const uint32_t *)key;

	if (flags != BPF_ANY)
		return -EINVAL;
	if (i >= m->attr.max_entries)
		return -E2BIG;
	__atomic_store_n(slot(m, i), *(const uint32_t *)value, __ATOMIC_RELEASE);
	return 0;
}

/* fd_array_map_delete_elem() */
static int fd_array_delete(struct shm_map *m, const void *key)
{
	uint32_t i = *(const uint32_t *)key;

	if (i >= m->attr.max_entries)
		return -E2BIG;
	return __atomic_exchange_n(slot(m, i), 0, __ATOMIC_ACQ_REL) ? 0 : -ENOENT;
}

#define FD_ARRAY_OPS(name, lookup, ...)                  \
	const struct shm_map_ops name = {                \
		.alloc_check = fd_array_alloc_check,     \
		.area_size = array_area,                 \
		.page_aligned_area = 1,                  \
		.facts = { __VA_ARGS__ },                \
		.sys_lookup = lookup,                    \
		.sys_update = fd_array_update,           \
		.sys_delete = fd_array_delete,           \
		.get_next_key = array_get_next_key,      \
		.prog_delete = fd_array_delete,          \
	}

FD_ARRAY_OPS(prog_array_map_ops, fd_array_lookup, .fd_value = SHM_FD_PROG);
FD_ARRAY_OPS(array_of_maps_map_ops, fd_array_lookup, .fd_value = SHM_FD_MAP,
	     .batch = SHM_BATCH_LOOKUP | SHM_BATCH_UPDATE);
FD_ARRAY_OPS(perf_event_array_map_ops, fd_array_lookup_unsupp, .fd_value = SHM_FD_PERF_EVENT);
FD_ARRAY_OPS(cgroup_array_map_ops, fd_array_lookup_unsupp, .fd_value = SHM_FD_CGROUP);

/* Runtime access to an fd array's slot (perf_event_output, tail_call):
 * the id, or 0. */
uint32_t shm_fd_array_get(const struct shm_map *m, uint32_t i)
{
	if (i >= m->attr.max_entries)
		return 0;
	return __atomic_load_n(slot(m, i), __ATOMIC_ACQUIRE);
}
