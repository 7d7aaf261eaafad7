/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_BLOOM_FILTER, as kernel/bpf/bloom_filter.c: the same bitset
 * size and the same jhash, so with BPF_F_ZERO_SEED even the false positives
 * are the kernel's. Bits are set with atomic ORs (no lock).
 *
 * type_state: [0] nr_hash_funcs, [1] bitset_mask, [2] hash_seed,
 *             [3] aligned_u32_count.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include "map.h"
#include "jhash.h"

#define BLOOM_CREATE_FLAG_MASK (BPF_F_NUMA_NODE | BPF_F_ZERO_SEED | SHM_BPF_F_ACCESS_MASK)
#define KMALLOC_MAX_SIZE (1u << 22)

static uint32_t nr_hash_funcs(const struct shm_map_attr *a)
{
	/* Default to 5 if no number of hash functions was specified */
	uint32_t n = (uint32_t)(a->map_extra & 0xf);
	return n ? n : 5;
}

/* bitset size (bits - 1) as bloom_map_alloc() computes it */
static uint64_t bitset_mask(const struct shm_map_attr *a)
{
	uint64_t nr_bits = (uint64_t)a->max_entries * nr_hash_funcs(a);

	if (nr_bits > UINT32_MAX)
		return UINT32_MAX;
	nr_bits = (nr_bits / 5) * 7;
	if (nr_bits > UINT32_MAX || nr_bits > (1ull << 31))
		return UINT32_MAX;
	if (nr_bits <= 64)
		return 63;
	uint64_t p = 1;
	while (p < nr_bits)
		p <<= 1;
	return p - 1;
}

/* bloom_map_alloc_check() + the checks of bloom_map_alloc() */
static int bloom_alloc_check(const struct shm_map_attr *a)
{
	if (a->value_size > KMALLOC_MAX_SIZE)
		return -E2BIG;
	if (a->key_size != 0 || a->value_size == 0 || a->max_entries == 0 ||
	    (a->map_flags & ~BLOOM_CREATE_FLAG_MASK) || !shm_map_flags_access_ok(a->map_flags) ||
	    (a->map_extra & ~0xfull))
		return -EINVAL;
	return 0;
}

static uint64_t bloom_area(const struct shm_map_attr *a)
{
	/* BITS_TO_BYTES, rounded up to a long */
	return BPFSHIM_ROUND_UP((bitset_mask(a) + 1 + 7) / 8, 8);
}

static int bloom_init(struct shm_map *m)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t seed = 0;

	h->type_state[0] = nr_hash_funcs(&h->attr);
	h->type_state[1] = bitset_mask(&h->attr);
	if (!(h->attr.map_flags & BPF_F_ZERO_SEED) && getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint32_t)(uintptr_t)&seed ^ 0x9e3779b9u;
	h->type_state[2] = seed;
	h->type_state[3] = h->attr.value_size % 4 == 0 ? h->attr.value_size / 4 : 0;
	return 0;
}

static uint32_t bloom_hash(const struct shm_map_hdr *h, const void *value, uint32_t index)
{
	uint32_t seed = (uint32_t)h->type_state[2] + index, v;

	if (h->type_state[3])
		v = jhash2(value, (uint32_t)h->type_state[3], seed);
	else
		v = jhash(value, h->attr.value_size, seed);
	return v & (uint32_t)h->type_state[1];
}

static uint64_t *bitset(const struct shm_map *m)
{
	return (uint64_t *)shm_map_data(m);
}

/* The hash parameters are read from the segment (writable by every holder
 * of the map fd): they must be what the attrs make them, or a bit index
 * could fall outside the bitset. */
static int bloom_ok(const struct shm_map *m)
{
	const struct shm_map_hdr *h = m->hdr;

	return shm_map_geometry_ok(m) && h->type_state[0] == nr_hash_funcs(&h->attr) &&
	       h->type_state[1] == bitset_mask(&h->attr) &&
	       h->type_state[3] == (h->attr.value_size % 4 == 0 ? h->attr.value_size / 4 : 0);
}

/* bloom_map_peek_elem(): 0 if every bit is set, else -ENOENT */
static int bloom_peek(struct shm_map *m, void *value)
{
	const struct shm_map_hdr *h = m->hdr;
	uint64_t *bits = bitset(m);

	if (!bloom_ok(m))
		return -EFAULT;
	for (uint32_t i = 0; i < h->type_state[0]; i++) {
		uint32_t b = bloom_hash(h, value, i);
		if (!(__atomic_load_n(&bits[b / 64], __ATOMIC_RELAXED) & (1ull << (b % 64))))
			return -ENOENT;
	}
	return 0;
}

/* bloom_map_push_elem() */
static int bloom_push(struct shm_map *m, const void *value, uint64_t flags)
{
	const struct shm_map_hdr *h = m->hdr;
	uint64_t *bits = bitset(m);

	if (flags != BPF_ANY)
		return -EINVAL;
	if (!bloom_ok(m))
		return -EFAULT;
	for (uint32_t i = 0; i < h->type_state[0]; i++) {
		uint32_t b = bloom_hash(h, value, i);
		__atomic_fetch_or(&bits[b / 64], 1ull << (b % 64), __ATOMIC_RELAXED);
	}
	return 0;
}

static int bloom_pop(struct shm_map *m, void *value)
{
	return -EOPNOTSUPP;
}

static int bloom_sys_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	/* the syscall layer calls peek with the value the user passed */
	return -EINVAL;
}

static int bloom_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return -EINVAL;
}

static int bloom_delete(struct shm_map *m, const void *key)
{
	return -EOPNOTSUPP;
}

static int bloom_get_next_key(struct shm_map *m, const void *key, void *next)
{
	return -EOPNOTSUPP;
}

const struct shm_map_ops bloom_filter_map_ops = {
	.alloc_check = bloom_alloc_check,
	.facts = { .keyless = SHM_KEYLESS_BLOOM },
	.area_size = bloom_area,
	.init = bloom_init,
	.sys_lookup = bloom_sys_lookup,
	.sys_update = bloom_update,
	.sys_delete = bloom_delete,
	.get_next_key = bloom_get_next_key,
	.prog_update = bloom_update,
	.prog_delete = bloom_delete,
	.push = bloom_push,
	.pop = bloom_pop,
	.peek = bloom_peek,
};
