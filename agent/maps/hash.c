/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH and
 * HASH_OF_MAPS, with the semantics of kernel/bpf/hashtab.c.
 *
 * Layout after the header: n_buckets (a power of two >= max_entries)
 * buckets {lock, head}, then max_entries preallocated elements (as the
 * kernel preallocates; BPF_F_NO_PREALLOC changes only what is reported).
 * Elements are linked by index (+1, 0 ends a chain) so every process can
 * follow them at its own mapping address. Free elements sit on a lock-free
 * stack with an ABA tag. An element is filled completely before it is
 * linked, so a writer killed mid-update leaves either the old or the new
 * state (and at worst one element off the free list).
 *
 * type_state: [0] free-list head (tag << 32 | index+1), [1] element count,
 * [2] LRU clock. n_buckets and the element size are each process's own
 * (m->geo, from the attrs as opened), never read from the segment.
 */
#include <errno.h>
#include <string.h>
#include "map.h"
#include "freelist.h"

#define HTAB_CREATE_FLAG_MASK (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE | \
			       SHM_BPF_F_ACCESS_MASK | BPF_F_ZERO_SEED)
#define PCPU_MIN_UNIT_SIZE 32768u
#define KMALLOC_MAX_SIZE (1u << 22)
#define HTAB_ELEM_HDR 48u            /* sizeof(struct htab_elem) in the kernel */

struct bucket {
	shm_lock_t lock;
	uint32_t head;                /* element index + 1, or NULLS(bucket) */
};

/* A chain ends in a marker naming its bucket (the kernel's nulls lists): a
 * lock-free reader whose element was deleted and reused elsewhere under it
 * ends on another marker (or on a free-list 0) and starts over. */
#define NULLS_BIT 0x80000000u
#define NULLS(b) (NULLS_BIT | (uint32_t)(b))
#define IS_NULLS(v) ((v) & NULLS_BIT)

struct elem {
	uint32_t next;                /* chain (or free list) link: index + 1 */
	uint32_t hash;
	uint64_t stamp;               /* LRU: last use */
	/* key, round_up(key_size, 8); then value(s) */
};

#define FREE_HEAD(h) (&(h)->type_state[0])
#define COUNT(h) (&(h)->type_state[1])
#define CLOCK(h) (&(h)->type_state[2])

/* from the attrs, before there is a map: the type's facts (inline: element
 * addresses are computed from it on every operation) */
static inline int is_percpu_type(uint32_t t)
{
	const struct shm_map_ops *ops = shm_map_ops_get(t);

	return ops && ops->facts.percpu;
}

static int is_lru_type(uint32_t t)
{
	return t == BPF_MAP_TYPE_LRU_HASH || t == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

/* BPF_F_NO_COMMON_LRU: every CPU's LRU list gets the same number of
 * elements, so max_entries is rounded to a multiple of nr_cpus. */
static uint32_t eff_max(const struct shm_map_attr *a)
{
	uint32_t n = a->max_entries, c = a->nr_cpus ? a->nr_cpus : 1;
	if (!(a->map_flags & BPF_F_NO_COMMON_LRU))
		return n;
	uint64_t r = BPFSHIM_ROUND_UP((uint64_t)n, c);
	return r > UINT32_MAX ? n / c * c : (uint32_t)r;
}

static uint32_t n_buckets_for(uint32_t max_entries)
{
	uint32_t n = 1;
	while (n < max_entries && n < (1u << 31))
		n <<= 1;
	return n;
}

static uint64_t value_area(const struct shm_map_attr *a)
{
	uint64_t s = BPFSHIM_ROUND_UP((uint64_t)a->value_size, 8);
	return is_percpu_type(a->map_type) ? s * a->nr_cpus : s;
}

static uint64_t elem_size_for(const struct shm_map_attr *a)
{
	return sizeof(struct elem) + BPFSHIM_ROUND_UP((uint64_t)a->key_size, 8) + value_area(a);
}

/* htab_map_alloc_check() */
static int htab_alloc_check(const struct shm_map_attr *a)
{
	int percpu = is_percpu_type(a->map_type), lru = is_lru_type(a->map_type);
	int prealloc = !(a->map_flags & BPF_F_NO_PREALLOC);
	int percpu_lru = !!(a->map_flags & BPF_F_NO_COMMON_LRU);

	if ((a->map_flags & ~HTAB_CREATE_FLAG_MASK) || !shm_map_flags_access_ok(a->map_flags))
		return -EINVAL;
	if (!lru && percpu_lru)
		return -EINVAL;
	if (lru && !prealloc)
		return -SHM_ENOTSUPP;
	if ((a->map_flags & BPF_F_NUMA_NODE) && (percpu || percpu_lru))
		return -EINVAL;
	if (a->max_entries == 0 || a->key_size == 0 || a->value_size == 0)
		return -EINVAL;
	/* user space must be able to reach the elements through the syscall */
	if ((uint64_t)a->key_size + a->value_size >= KMALLOC_MAX_SIZE - HTAB_ELEM_HDR)
		return -E2BIG;
	if (percpu && BPFSHIM_ROUND_UP(a->value_size, 8) > PCPU_MIN_UNIT_SIZE)
		return -E2BIG;
	/* htab_map_alloc(): n_buckets * sizeof(struct bucket) (16) must fit a u32 */
	if (a->max_entries > (1u << 27))
		return -E2BIG;
	if ((uint64_t)a->max_entries * elem_size_for(a) > (1ull << 40))
		return -ENOMEM;
	return 0;
}

static int htab_of_maps_alloc_check(const struct shm_map_attr *a)
{
	if (a->value_size != sizeof(uint32_t))
		return -EINVAL;
	return htab_alloc_check(a);
}

static uint64_t htab_area(const struct shm_map_attr *a)
{
	return (uint64_t)n_buckets_for(eff_max(a)) * sizeof(struct bucket) +
	       (uint64_t)eff_max(a) * elem_size_for(a);
}

static struct bucket *buckets(const struct shm_map *m)
{
	return (struct bucket *)shm_map_data(m);
}

/*
 * The segment is writable by every process holding the map fd, so what it
 * says is checked before it is followed (a loader writing into it by
 * mistake must get errors, never a fault or an endless walk): the geometry
 * is never read from the header (the attrs as opened, m->attr, and what
 * htab_geometry derives from them, m->geo: shm_map_open checked they fit
 * the mapping), every element index read from the segment is checked
 * (IDX_OK), chain walks are bounded by max_entries.
 */
#define IDX_OK(m, i) ((i) >= 1 && (i) <= (m)->attr.max_entries)

static void htab_geometry(struct shm_map *m)
{
	m->geo[0] = n_buckets_for(eff_max(&m->attr));
	m->geo[1] = elem_size_for(&m->attr);
}

static struct elem *elem_at(const struct shm_map *m, uint32_t idx1)
{
	char *base = (char *)shm_map_data(m) + m->geo[0] * sizeof(struct bucket);
	return (struct elem *)(base + (uint64_t)(idx1 - 1) * m->geo[1]);
}

static void *elem_key(struct elem *e)
{
	return (char *)(e + 1);
}

static void *elem_value(const struct shm_map *m, struct elem *e)
{
	return (char *)(e + 1) + BPFSHIM_ROUND_UP(m->attr.key_size, 8);
}

static int htab_init(struct shm_map *m)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t n = eff_max(&h->attr);

	h->attr.max_entries = m->attr.max_entries = n;
	htab_geometry(m);
	for (uint64_t b = 0; b < m->geo[0]; b++)
		buckets(m)[b].head = NULLS(b);
	/* free list: 1 -> 2 -> ... -> n */
	for (uint32_t i = 1; i <= n; i++)
		elem_at(m, i)->next = i < n ? i + 1 : 0;
	*FREE_HEAD(h) = n ? 1 : 0;
	return 0;
}

/* ---- hashing ---- */

static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint32_t hash_key(const void *key, uint32_t n)
{
	if (n == 4 || n == 8) {
		uint64_t w = 0;
		memcpy(&w, key, n);
		w = mix(w ^ 0x9e3779b97f4a7c15ull);
		return (uint32_t)(w ^ (w >> 32));
	}
	const unsigned char *p = key;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;

	while (n >= 8) {
		memcpy(&w, p, 8);
		h = mix(h ^ w);
		p += 8;
		n -= 8;
	}
	if (n) {
		w = 0;
		memcpy(&w, p, n);
		h = mix(h ^ w ^ ((uint64_t)n << 56));
	}
	return (uint32_t)(h ^ (h >> 32));
}

/* ---- free list ---- */

static uint32_t *free_next(struct shm_map *m, uint32_t idx)
{
	return &elem_at(m, idx)->next;
}

static uint32_t freelist_pop(struct shm_map *m)
{
	return shm_freelist_pop(m, FREE_HEAD(m->hdr), free_next);
}

static void freelist_push(struct shm_map *m, uint32_t idx)
{
	shm_freelist_push(m, FREE_HEAD(m->hdr), free_next, idx);
}

/* ---- chains ---- */

static struct bucket *bucket_of(const struct shm_map *m, uint32_t hash)
{
	return &buckets(m)[hash & (m->geo[0] - 1)];
}

static inline int key_eq(const void *a, const void *b, uint32_t ks)
{
	if (ks == 4)
		return *(const uint32_t *)a == *(const uint32_t *)b;
	if (ks == 8)
		return *(const uint64_t *)a == *(const uint64_t *)b;
	return !memcmp(a, b, ks);
}

/* Find key in a chain; *prev gets the link that points at it. Safe
 * without the bucket lock (restarts when it strays off the chain). */
static uint32_t chain_find(struct shm_map *m, struct bucket *b, uint32_t hash, const void *key,
			   uint32_t **prev)
{
	uint32_t ks = m->attr.key_size;
	uint32_t want = NULLS((uint32_t)(b - buckets(m)));

	for (int tries = 0;; tries++) {
		uint32_t *link = &b->head, i;
		uint64_t steps = 0;
		for (i = __atomic_load_n(link, __ATOMIC_ACQUIRE); i && !IS_NULLS(i);
		     i = __atomic_load_n(link, __ATOMIC_ACQUIRE)) {
			if (!IDX_OK(m, i))
				return 0;
			struct elem *e = elem_at(m, i);
			if (e->hash == hash && key_eq(elem_key(e), key, ks)) {
				if (prev)
					*prev = link;
				return i;
			}
			link = &e->next;
			if (++steps > m->attr.max_entries)
				break;
		}
		if (i == want || tries > 64)
			return 0;
	}
}

static void touch(struct shm_map *m, struct elem *e)
{
	if (is_lru_type(m->attr.map_type))
		__atomic_store_n(&e->stamp, __atomic_add_fetch(CLOCK(m->hdr), 1, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

/* LRU: free the least recently used of a sample of elements
 * (the kernel's LRU is approximate as well). */
static int lru_evict(struct shm_map *m)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t nb = (uint32_t)m->geo[0];
	uint32_t start = (uint32_t)__atomic_fetch_add(CLOCK(h), 1, __ATOMIC_RELAXED);
	uint32_t best_b = 0, best_i = 0, seen = 0;
	uint64_t best = UINT64_MAX;

	for (uint32_t k = 0; k < nb && seen < 64; k++) {
		uint32_t bi = (start + k) & (nb - 1);
		for (uint32_t i = __atomic_load_n(&buckets(m)[bi].head, __ATOMIC_ACQUIRE);
		     IDX_OK(m, i) && !IS_NULLS(i) && seen < 4096;
		     i = __atomic_load_n(&elem_at(m, i)->next, __ATOMIC_ACQUIRE)) {
			struct elem *e = elem_at(m, i);
			seen++;
			if (e->stamp < best) {
				best = e->stamp;
				best_b = bi;
				best_i = i;
			}
		}
	}
	if (!best_i)
		return -E2BIG;
	struct bucket *b = &buckets(m)[best_b];
	uint32_t *link = &b->head;
	shm_lock(&b->lock);
	for (uint32_t i = *link, steps = 0; IDX_OK(m, i) && steps <= m->attr.max_entries; i = *link, steps++) {
		if (i == best_i) {
			__atomic_store_n(link, elem_at(m, i)->next, __ATOMIC_RELEASE);
			__atomic_sub_fetch(COUNT(h), 1, __ATOMIC_RELAXED);
			shm_unlock(&b->lock);
			freelist_push(m, i);
			return 0;
		}
		link = &elem_at(m, i)->next;
	}
	shm_unlock(&b->lock);
	return 0; /* raced with a delete: it is free now */
}

static uint32_t alloc_elem(struct shm_map *m)
{
	for (int tries = 0; tries < 8; tries++) {
		uint32_t i = freelist_pop(m);
		if (i || !is_lru_type(m->attr.map_type))
			return i;
		if (lru_evict(m))
			return 0;
	}
	return 0;
}

/* check_flags() */
static int check_flags(uint32_t found, uint64_t flags)
{
	if (found && (flags & ~(uint64_t)BPF_F_LOCK) == BPF_NOEXIST)
		return -EEXIST;
	if (!found && (flags & ~(uint64_t)BPF_F_LOCK) == BPF_EXIST)
		return -ENOENT;
	return 0;
}

enum value_src { FROM_SYSCALL, FROM_PROG };

static void fill_value(struct shm_map *m, struct elem *e, const void *value, enum value_src src, int fresh)
{
	void *dst = elem_value(m, e);

	if (!m->ops->facts.percpu) {
		shm_copy_value(m, dst, value);
		return;
	}
	uint32_t vs = m->attr.value_size, st = m->value_stride, n = m->attr.nr_cpus;
	if (src == FROM_SYSCALL) {
		for (uint32_t c = 0; c < n; c++)
			memcpy((char *)dst + (uint64_t)c * st, (const char *)value + (uint64_t)c * st, st);
		return;
	}
	/* pcpu_init_value(): a new element gets this CPU's value, zeros elsewhere */
	uint32_t me = shm_cur_cpu(m);
	if (fresh)
		memset(dst, 0, (uint64_t)st * n);
	memcpy((char *)dst + (uint64_t)me * st, value, vs);
}

static int htab_update_common(struct shm_map *m, const void *key, const void *value, uint64_t flags,
			      enum value_src src)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t ks = m->attr.key_size, hash, found, fresh = 0;
	int percpu = m->ops->facts.percpu, lru = is_lru_type(m->attr.map_type);
	struct bucket *b;
	int err;

	if (percpu ? flags > BPF_EXIST : (flags & ~(uint64_t)BPF_F_LOCK) > BPF_EXIST)
		return -EINVAL;
	hash = hash_key(key, ks);
	b = bucket_of(m, hash);
	if (flags & BPF_F_LOCK) {
		if (m->attr.spin_lock_off < 0)
			return -EINVAL;
		/* in place under the value's own lock, without the bucket lock */
		found = chain_find(m, b, hash, key, NULL);
		err = check_flags(found, flags);
		if (err)
			return err;
		if (found) {
			shm_copy_value_locked(m, elem_value(m, elem_at(m, found)), value, 0);
			return 0;
		}
	}
	/* LRU: take an element (maybe evicting) before the bucket lock, as
	 * prealloc_lru_pop() does, so two buckets are never locked at once. */
	if (lru) {
		fresh = alloc_elem(m);
		if (!fresh)
			return -E2BIG;
	}
	shm_lock(&b->lock);
	found = chain_find(m, b, hash, key, NULL);
	err = check_flags(found, flags);
	if (err)
		goto out;
	if (found) {
		struct elem *e = elem_at(m, found);
		if (flags & BPF_F_LOCK)
			shm_copy_value_locked(m, elem_value(m, e), value, 0);
		else
			fill_value(m, e, value, src, 0);
		touch(m, e);
		goto out;
	}
	if (!fresh) {
		fresh = alloc_elem(m);
		if (!fresh) {
			err = -E2BIG;
			goto out;
		}
	}
	struct elem *e = elem_at(m, fresh);
	e->hash = hash;
	memcpy(elem_key(e), key, ks);
	if (m->attr.spin_lock_off >= 0)
		memset((char *)elem_value(m, e) + m->attr.spin_lock_off, 0, 4);
	fill_value(m, e, value, src, 1);
	touch(m, e);
	/* publish: new elements go to the head of the chain, as the kernel's */
	e->next = b->head;
	__atomic_store_n(&b->head, fresh, __ATOMIC_RELEASE);
	__atomic_add_fetch(COUNT(h), 1, __ATOMIC_RELAXED);
	fresh = 0;
out:
	shm_unlock(&b->lock);
	if (fresh)
		freelist_push(m, fresh);
	return err;
}

static int htab_sys_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return htab_update_common(m, key, value, flags, FROM_SYSCALL);
}

static int htab_prog_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return htab_update_common(m, key, value, flags, FROM_PROG);
}

static void copy_out(struct shm_map *m, struct elem *e, void *value, uint64_t flags)
{
	if (m->ops->facts.percpu) {
		uint32_t n = m->attr.nr_cpus, st = m->value_stride;
		for (uint32_t c = 0; c < n; c++)
			memcpy((char *)value + (uint64_t)c * st, (char *)elem_value(m, e) + (uint64_t)c * st, st);
		return;
	}
	if (flags & BPF_F_LOCK)
		shm_copy_value_locked(m, value, elem_value(m, e), 1);
	else
		shm_copy_value(m, value, elem_value(m, e));
	shm_clear_special(m, value);
}

static int htab_sys_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	uint32_t hash = hash_key(key, m->attr.key_size), i;
	struct bucket *b = bucket_of(m, hash);

	shm_lock(&b->lock);
	i = chain_find(m, b, hash, key, NULL);
	if (i) {
		struct elem *e = elem_at(m, i);
		if (flags & BPF_F_LOCK) {
			/* the value lock nests inside the bucket lock only here */
			copy_out(m, e, value, flags);
		} else {
			copy_out(m, e, value, 0);
		}
		touch(m, e);
	}
	shm_unlock(&b->lock);
	return i ? 0 : -ENOENT;
}

/* htab_map_delete_elem(), and __htab_map_lookup_and_delete_elem() when
 * there is a value to copy out before the element goes */
static int htab_unlink(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	uint32_t hash = hash_key(key, m->attr.key_size), i;
	struct bucket *b = bucket_of(m, hash);
	uint32_t *link;

	shm_lock(&b->lock);
	i = chain_find(m, b, hash, key, &link);
	if (i) {
		if (value)
			copy_out(m, elem_at(m, i), value, flags);
		__atomic_store_n(link, elem_at(m, i)->next, __ATOMIC_RELEASE);
		__atomic_sub_fetch(COUNT(m->hdr), 1, __ATOMIC_RELAXED);
	}
	shm_unlock(&b->lock);
	if (!i)
		return -ENOENT;
	freelist_push(m, i);
	return 0;
}

static int htab_delete(struct shm_map *m, const void *key)
{
	return htab_unlink(m, key, NULL, 0);
}

static int htab_lookup_and_delete(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return htab_unlink(m, key, value, flags);
}

/* htab_map_get_next_key() */
static int htab_get_next_key(struct shm_map *m, const void *key, void *next)
{
	uint32_t ks = m->attr.key_size, nb = (uint32_t)m->geo[0], bi = 0;

	if (key) {
		uint32_t hash = hash_key(key, ks);
		struct bucket *b = bucket_of(m, hash);
		shm_lock(&b->lock);
		uint32_t i = chain_find(m, b, hash, key, NULL);
		if (i) {
			uint32_t n = elem_at(m, i)->next;
			if (IDX_OK(m, n)) {
				memcpy(next, elem_key(elem_at(m, n)), ks);
				shm_unlock(&b->lock);
				return 0;
			}
			bi = (hash & (nb - 1)) + 1;
		}
		shm_unlock(&b->lock);
	}
	for (; bi < nb; bi++) {
		struct bucket *b = &buckets(m)[bi];
		if (IS_NULLS(__atomic_load_n(&b->head, __ATOMIC_ACQUIRE)))
			continue;
		shm_lock(&b->lock);
		if (IDX_OK(m, b->head)) {
			memcpy(next, elem_key(elem_at(m, b->head)), ks);
			shm_unlock(&b->lock);
			return 0;
		}
		shm_unlock(&b->lock);
	}
	return -ENOENT;
}

/* Program side: a pointer into the element (this CPU's slot for percpu). */
static void *htab_lookup_ptr(struct shm_map *m, const void *key)
{
	uint32_t hash = hash_key(key, m->attr.key_size);
	uint32_t i = chain_find(m, bucket_of(m, hash), hash, key, NULL);

	if (!i)
		return NULL;
	struct elem *e = elem_at(m, i);
	touch(m, e);
	if (m->ops->facts.percpu)
		return (char *)elem_value(m, e) + (uint64_t)shm_cur_cpu(m) * m->value_stride;
	return elem_value(m, e);
}

/* Elements in use (memlock of BPF_F_NO_PREALLOC maps counts them). */
uint64_t shm_htab_count(const struct shm_map *m)
{
	return __atomic_load_n(COUNT(m->hdr), __ATOMIC_RELAXED);
}

#define HTAB_BATCH (SHM_BATCH_LOOKUP | SHM_BATCH_LOOKUP_AND_DELETE | SHM_BATCH_UPDATE | SHM_BATCH_DELETE)
#define HTAB_OPS(name, check, lookup_and_delete, ...)          \
	const struct shm_map_ops name = {                      \
		.alloc_check = check,                          \
		.facts = { .hashed = 1, .batch = HTAB_BATCH, __VA_ARGS__ }, \
		.area_size = htab_area,                        \
		.geometry = htab_geometry,                     \
		.init = htab_init,                             \
		.sys_lookup = htab_sys_lookup,                 \
		.sys_update = htab_sys_update,                 \
		.sys_delete = htab_delete,                     \
		.sys_lookup_and_delete = lookup_and_delete,    \
		.get_next_key = htab_get_next_key,             \
		.lookup_ptr = htab_lookup_ptr,                 \
		.prog_update = htab_prog_update,               \
		.prog_delete = htab_delete,                    \
	}

HTAB_OPS(htab_map_ops, htab_alloc_check, htab_lookup_and_delete, .for_each = SHM_WALK_KEYS);
HTAB_OPS(htab_percpu_map_ops, htab_alloc_check, htab_lookup_and_delete, .percpu = 1, .for_each = SHM_WALK_KEYS);
HTAB_OPS(htab_lru_map_ops, htab_alloc_check, htab_lookup_and_delete, .for_each = SHM_WALK_KEYS);
HTAB_OPS(htab_lru_percpu_map_ops, htab_alloc_check, htab_lookup_and_delete, .percpu = 1,
	 .for_each = SHM_WALK_KEYS);
/* htab_of_maps_map_ops has no map_lookup_and_delete_elem */
HTAB_OPS(htab_of_maps_map_ops, htab_of_maps_alloc_check, NULL, .fd_value = SHM_FD_MAP);
