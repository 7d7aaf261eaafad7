/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_STACK_TRACE, as kernel/bpf/stackmap.c: n_buckets (a power of
 * two >= max_entries) slots, each pointing (index + 1) at one of max_entries
 * preallocated buckets {hash, nr, ips[]}; ids are slot numbers, the hash is
 * the kernel's jhash2 of the ips, so ids are the kernel's ids too.
 * A new bucket is filled before it is swapped in with one atomic exchange;
 * free buckets sit on a lock-free stack with an ABA tag.
 *
 * type_state: [0] free-list head (tag << 32 | index+1), [1] n_buckets,
 *             [2] bucket size, [3] the first id (0, or n_buckets: a hybrid
 *             twin's map, whose ids follow the kernel map's, which end
 *             below n_buckets; shm_stack_map_ids_above).
 */
#include <errno.h>
#include <string.h>
#include "map.h"
#include "freelist.h"
#include "jhash.h"

#define STACK_CREATE_FLAG_MASK (BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_STACK_BUILD_ID)
#define PERF_MAX_STACK_DEPTH 127 /* sysctl kernel.perf_event_max_stack default */

struct stack_bucket {
	uint32_t next;  /* free-list link */
	uint32_t hash;
	uint32_t nr;
	uint32_t _pad;
	/* u64 data[value_size / 8] (or struct bpf_stack_build_id[]) */
};

static uint32_t max_stack(void)
{
	return PERF_MAX_STACK_DEPTH;
}

static uint32_t data_size(const struct shm_map_attr *a)
{
	return a->map_flags & BPF_F_STACK_BUILD_ID ? sizeof(struct bpf_stack_build_id) : sizeof(uint64_t);
}

static uint64_t n_buckets_for(uint32_t n)
{
	uint64_t b = 1;
	while (b < n)
		b <<= 1;
	return b;
}

/* stack_map_alloc() checks */
static int stack_alloc_check(const struct shm_map_attr *a)
{
	uint32_t vs = a->value_size;

	if (a->map_flags & ~STACK_CREATE_FLAG_MASK)
		return -EINVAL;
	if (a->max_entries == 0 || a->key_size != 4 || vs < 8 || vs % 8)
		return -EINVAL;
	if (a->map_flags & BPF_F_STACK_BUILD_ID) {
		if (vs % sizeof(struct bpf_stack_build_id) || vs / sizeof(struct bpf_stack_build_id) > max_stack())
			return -EINVAL;
	} else if (vs / 8 > max_stack()) {
		return -EINVAL;
	}
	if (a->max_entries > (1u << 31))
		return -E2BIG;
	return 0;
}

static uint64_t bucket_size(const struct shm_map_attr *a)
{
	return sizeof(struct stack_bucket) + a->value_size;
}

static uint64_t stack_area(const struct shm_map_attr *a)
{
	return BPFSHIM_ROUND_UP(n_buckets_for(a->max_entries) * 4, 8) + (uint64_t)a->max_entries * bucket_size(a);
}

static uint32_t *slots(const struct shm_map *m)
{
	return (uint32_t *)shm_map_data(m);
}

static struct stack_bucket *bucket_at(const struct shm_map *m, uint32_t idx1)
{
	const struct shm_map_hdr *h = m->hdr;
	char *base = (char *)shm_map_data(m) + BPFSHIM_ROUND_UP(h->type_state[1] * 4, 8);
	return (struct stack_bucket *)(base + (uint64_t)(idx1 - 1) * h->type_state[2]);
}

static int stack_init(struct shm_map *m)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t n = h->attr.max_entries;

	h->type_state[1] = n_buckets_for(n);
	h->type_state[2] = bucket_size(&h->attr);
	for (uint32_t i = 1; i <= n; i++)
		bucket_at(m, i)->next = i < n ? i + 1 : 0;
	h->type_state[0] = n ? 1 : 0;
	return 0;
}

/* What the segment (writable by every holder of the map fd) says is checked
 * before it is followed: the geometry (sm_ok, at each entry point) and each
 * bucket index read from it (IDX_OK). */
#define IDX_OK(m, i) ((i) >= 1 && (i) <= (m)->hdr->attr.max_entries)

static int sm_ok(const struct shm_map *m)
{
	const struct shm_map_hdr *h = m->hdr;

	return shm_map_geometry_ok(m) && h->type_state[1] == n_buckets_for(h->attr.max_entries) &&
	       h->type_state[2] == bucket_size(&h->attr) && (!h->type_state[3] || h->type_state[3] == h->type_state[1]);
}

/* A key's slot (the id less the first id), or n_buckets when it names none. */
static uint64_t slot_of(const struct shm_map *m, uint32_t id)
{
	uint64_t base = m->hdr->type_state[3], nb = m->hdr->type_state[1];

	return id >= base && id - base < nb ? id - base : nb;
}

BPFSHIM_API int64_t shm_stack_map_ids_above(struct shm_map *m)
{
	uint64_t nb = m->hdr->type_state[1];

	if (!sm_ok(m) || nb > (1u << 30))
		return -E2BIG;     /* ids are ints */
	__atomic_store_n(&m->hdr->type_state[3], nb, __ATOMIC_RELEASE);
	return (int64_t)nb;
}

static uint32_t *free_next(struct shm_map *m, uint32_t idx)
{
	return &bucket_at(m, idx)->next;
}

static uint32_t freelist_pop(struct shm_map *m)
{
	return shm_freelist_pop(m, &m->hdr->type_state[0], free_next);
}

static void freelist_push(struct shm_map *m, uint32_t idx)
{
	shm_freelist_push(m, &m->hdr->type_state[0], free_next, idx);
}

/* A bucket's frames are these nr ips (as build id entries with build_id) */
static int same_trace(const struct stack_bucket *b, const uint64_t *ips, uint32_t nr, int build_id)
{
	if (!build_id)
		return !memcmp(b + 1, ips, (size_t)nr * sizeof(uint64_t));
	const struct bpf_stack_build_id *ids = (const struct bpf_stack_build_id *)(b + 1);
	uint32_t i;

	for (i = 0; i < nr && ids[i].ip == ips[i]; i++)
		;
	return i == nr;
}

/*
 * __bpf_get_stackid(): `ips` is the whole callchain (nr entries, innermost
 * first); skip, BPF_F_FAST_STACK_CMP and BPF_F_REUSE_STACKID as the kernel.
 * Returns the stack id or -EFAULT / -EEXIST / -ENOMEM / -EINVAL.
 */
BPFSHIM_API int shm_stack_map_get_stackid(struct shm_map *m, const uint64_t *ips, uint32_t nr, uint64_t flags)
{
	const struct shm_map_attr *a = &m->hdr->attr;
	uint32_t skip = flags & BPF_F_SKIP_FIELD_MASK, trace_nr, trace_len, hash, id, max_depth;
	uint32_t *slot, cur, fresh, old;
	struct stack_bucket *b;

	if (flags & ~(uint64_t)(BPF_F_SKIP_FIELD_MASK | BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP |
				BPF_F_REUSE_STACKID))
		return -EINVAL;
	if (!sm_ok(m))
		return -EFAULT;
	/* stack_map_calculate_max_depth(); the kernel collects at most
	 * max_depth frames (skipped ones included) */
	max_depth = a->value_size / data_size(a) + skip;
	if (max_depth > max_stack())
		max_depth = max_stack();
	if (nr > max_depth)
		nr = max_depth;
	if (nr <= skip)
		return -EFAULT; /* skipping more than usable stack trace */
	trace_nr = nr - skip;
	trace_len = trace_nr * sizeof(uint64_t);
	ips += skip;
	hash = jhash2((const uint32_t *)ips, trace_len / sizeof(uint32_t), 0);
	id = hash & (uint32_t)(m->hdr->type_state[1] - 1);
	slot = &slots(m)[id];
	cur = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	b = IDX_OK(m, cur) ? bucket_at(m, cur) : NULL;
	int hash_matches = b && b->hash == hash;
	if (hash_matches && (flags & BPF_F_FAST_STACK_CMP))
		return (int)(id + m->hdr->type_state[3]);
	/* BPF_F_STACK_BUILD_ID: no build ids here, every frame is reported as
	 * a plain IP (BPF_STACK_BUILD_ID_IP), as the kernel does when it cannot
	 * read one */
	int build_id = (a->map_flags & BPF_F_STACK_BUILD_ID) != 0;
	if (hash_matches && b->nr == trace_nr && same_trace(b, ips, trace_nr, build_id))
		return (int)(id + m->hdr->type_state[3]);
	if (b && !(flags & BPF_F_REUSE_STACKID))
		return -EEXIST;
	fresh = freelist_pop(m);
	if (!fresh)
		return -ENOMEM;
	if (build_id) {
		struct bpf_stack_build_id tmp, *ids = (struct bpf_stack_build_id *)(bucket_at(m, fresh) + 1);
		for (uint32_t i = 0; i < trace_nr; i++) {
			memset(&tmp, 0, sizeof(tmp));
			tmp.status = BPF_STACK_BUILD_ID_IP;
			tmp.ip = ips[i];
			ids[i] = tmp;
		}
	} else {
		memcpy(bucket_at(m, fresh) + 1, ips, trace_len);
	}
	bucket_at(m, fresh)->hash = hash;
	bucket_at(m, fresh)->nr = trace_nr;
	old = __atomic_exchange_n(slot, fresh, __ATOMIC_ACQ_REL);
	if (IDX_OK(m, old))
		freelist_push(m, old);
	return (int)(id + m->hdr->type_state[3]);
}

/* bpf_stackmap_extract(): the trace, zero padded to value_size; delete:
 * the bucket is taken out with one exchange (lookup_and_delete). */
static int stack_extract(struct shm_map *m, const void *key, void *value, int delete)
{
	uint64_t id;
	uint32_t cur;

	if (!sm_ok(m))
		return -EFAULT;
	if ((id = slot_of(m, *(const uint32_t *)key)) >= m->hdr->type_state[1])
		return -ENOENT;
	if (delete)
		cur = __atomic_exchange_n(&slots(m)[id], 0, __ATOMIC_ACQ_REL);
	else
		cur = __atomic_load_n(&slots(m)[id], __ATOMIC_ACQUIRE);
	if (!IDX_OK(m, cur))
		return -ENOENT;
	struct stack_bucket *b = bucket_at(m, cur);
	uint64_t len = (uint64_t)b->nr * data_size(&m->hdr->attr);
	if (len > m->hdr->attr.value_size)
		len = m->hdr->attr.value_size;
	memcpy(value, b + 1, len);
	memset((char *)value + len, 0, m->hdr->attr.value_size - len);
	if (delete)
		freelist_push(m, cur);
	return 0;
}

static int stack_sys_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return stack_extract(m, key, value, 0);
}

static int stack_lookup_and_delete(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return stack_extract(m, key, value, 1);
}

static int stack_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return -EINVAL;
}

/* stack_map_delete_elem() */
static int stack_delete(struct shm_map *m, const void *key)
{
	uint64_t id;
	uint32_t old;

	if (!sm_ok(m))
		return -EFAULT;
	if ((id = slot_of(m, *(const uint32_t *)key)) >= m->hdr->type_state[1])
		return -E2BIG;
	old = __atomic_exchange_n(&slots(m)[id], 0, __ATOMIC_ACQ_REL);
	if (!IDX_OK(m, old))
		return -ENOENT;
	freelist_push(m, old);
	return 0;
}

/* stack_map_get_next_key() */
static int stack_get_next_key(struct shm_map *m, const void *key, void *next)
{
	uint64_t nb = m->hdr->type_state[1];
	uint64_t id;

	if (!sm_ok(m))
		return -EFAULT;
	if (!key) {
		id = 0;
	} else {
		id = slot_of(m, *(const uint32_t *)key);
		if (id >= nb || !__atomic_load_n(&slots(m)[id], __ATOMIC_ACQUIRE))
			id = 0;
		else
			id++;
	}
	while (id < nb && !__atomic_load_n(&slots(m)[id], __ATOMIC_ACQUIRE))
		id++;
	if (id >= nb)
		return -ENOENT;
	*(uint32_t *)next = (uint32_t)(id + m->hdr->type_state[3]);
	return 0;
}

const struct shm_map_ops stack_trace_map_ops = {
	.alloc_check = stack_alloc_check,
	.area_size = stack_area,
	.init = stack_init,
	.sys_lookup = stack_sys_lookup,
	.sys_update = stack_update,
	.sys_delete = stack_delete,
	.sys_lookup_and_delete = stack_lookup_and_delete,
	.get_next_key = stack_get_next_key,
	.prog_update = stack_update,
	.prog_delete = stack_delete,
};
