/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK, as kernel/bpf/queue_stack_maps.c:
 * a ring of max_entries + 1 slots, head (next write) and tail (oldest),
 * under the map lock. A slot is written before head moves, so a writer
 * killed mid-push leaves the map as it was.
 *
 * type_state: [0] head, [1] tail, [2] size (= max_entries + 1).
 */
#include <errno.h>
#include <string.h>
#include "map.h"

#define QUEUE_STACK_CREATE_FLAG_MASK (BPF_F_NUMA_NODE | SHM_BPF_F_ACCESS_MASK)
#define KMALLOC_MAX_SIZE (1u << 22)

#define HEAD(h) ((h)->type_state[0])
#define TAIL(h) ((h)->type_state[1])
#define SIZE(h) ((h)->type_state[2])

/* queue_stack_map_alloc_check() */
static int qs_alloc_check(const struct shm_map_attr *a)
{
	if (a->max_entries == 0 || a->key_size != 0 || a->value_size == 0 ||
	    (a->map_flags & ~QUEUE_STACK_CREATE_FLAG_MASK) || !shm_map_flags_access_ok(a->map_flags))
		return -EINVAL;
	if (a->value_size > KMALLOC_MAX_SIZE)
		return -E2BIG;
	if (((uint64_t)a->max_entries + 1) * a->value_size > (1ull << 40))
		return -ENOMEM;
	return 0;
}

static uint64_t qs_area(const struct shm_map_attr *a)
{
	return ((uint64_t)a->max_entries + 1) * a->value_size;
}

static int qs_init(struct shm_map *m)
{
	SIZE(m->hdr) = (uint64_t)m->hdr->attr.max_entries + 1;
	return 0;
}

static char *slot(struct shm_map *m, uint64_t i)
{
	return (char *)shm_map_data(m) + i * m->hdr->attr.value_size;
}

/* The positions are read from the segment, which any holder of the map fd
 * can write: checked before they index it (under the map lock). */
static int qs_ok(const struct shm_map *m)
{
	const struct shm_map_hdr *h = m->hdr;

	return shm_map_geometry_ok(m) && SIZE(h) == (uint64_t)h->attr.max_entries + 1 &&
	       HEAD(h) < SIZE(h) && TAIL(h) < SIZE(h);
}

/* The slot after p, round the ring */
static uint64_t next_pos(const struct shm_map_hdr *h, uint64_t p)
{
	return p + 1 >= SIZE(h) ? 0 : p + 1;
}

static int is_full(struct shm_map_hdr *h)
{
	return next_pos(h, HEAD(h)) == TAIL(h);
}

static int is_empty(struct shm_map_hdr *h)
{
	return HEAD(h) == TAIL(h);
}

/* __queue_map_get() and __stack_map_get(): the same under the lock but for
 * the end they take from, a queue its tail (the oldest), a stack the slot
 * below its head (the newest) */
static int qs_get(struct shm_map *m, void *value, int delete, int stack)
{
	struct shm_map_hdr *h = m->hdr;
	uint64_t index;
	int err = 0;

	shm_lock(&h->lock);
	if (!qs_ok(m)) {
		err = -EFAULT;
		goto out;
	}
	if (is_empty(h)) {
		memset(value, 0, h->attr.value_size);
		err = -ENOENT;
		goto out;
	}
	index = !stack ? TAIL(h) : HEAD(h) == 0 ? SIZE(h) - 1 : HEAD(h) - 1;
	memcpy(value, slot(m, index), h->attr.value_size);
	if (delete && stack)
		__atomic_store_n(&HEAD(h), index, __ATOMIC_RELEASE);
	else if (delete)
		__atomic_store_n(&TAIL(h), next_pos(h, index), __ATOMIC_RELEASE);
out:
	shm_unlock(&h->lock);
	return err;
}

static int queue_peek(struct shm_map *m, void *value) { return qs_get(m, value, 0, 0); }
static int queue_pop(struct shm_map *m, void *value) { return qs_get(m, value, 1, 0); }
static int stack_peek(struct shm_map *m, void *value) { return qs_get(m, value, 0, 1); }
static int stack_pop(struct shm_map *m, void *value) { return qs_get(m, value, 1, 1); }

/* queue_stack_map_push_elem() */
static int qs_push(struct shm_map *m, const void *value, uint64_t flags)
{
	struct shm_map_hdr *h = m->hdr;
	int replace = (flags & BPF_EXIST) != 0;
	int err = 0;

	/* BPF_EXIST is used to force making room for a new element */
	if (flags & BPF_NOEXIST || flags > BPF_EXIST)
		return -EINVAL;
	shm_lock(&h->lock);
	if (!qs_ok(m)) {
		err = -EFAULT;
		goto out;
	}
	if (is_full(h)) {
		if (!replace) {
			err = -E2BIG;
			goto out;
		}
		/* advance tail pointer to overwrite oldest element */
		__atomic_store_n(&TAIL(h), next_pos(h, TAIL(h)), __ATOMIC_RELEASE);
	}
	memcpy(slot(m, HEAD(h)), value, h->attr.value_size);
	__atomic_store_n(&HEAD(h), next_pos(h, HEAD(h)), __ATOMIC_RELEASE);
out:
	shm_unlock(&h->lock);
	return err;
}

/* The syscall layer routes update/lookup/lookup_and_delete to push/peek/pop;
 * what is left keeps the kernel's answers. */
static int qs_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return m->ops->peek(m, value);
}

static int qs_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return qs_push(m, value, flags);
}

static int qs_delete(struct shm_map *m, const void *key)
{
	return -EINVAL;
}

static int qs_get_next_key(struct shm_map *m, const void *key, void *next)
{
	return -EINVAL;
}

static void *qs_lookup_ptr(struct shm_map *m, const void *key)
{
	return NULL;
}

#define QS_OPS(name, peek_fn, pop_fn)                  \
	const struct shm_map_ops name = {              \
		.alloc_check = qs_alloc_check,         \
		.facts = { .keyless = SHM_KEYLESS_QUEUE }, \
		.area_size = qs_area,                  \
		.init = qs_init,                       \
		.sys_lookup = qs_lookup,               \
		.sys_update = qs_update,               \
		.sys_delete = qs_delete,               \
		.get_next_key = qs_get_next_key,       \
		.lookup_ptr = qs_lookup_ptr,           \
		.prog_update = qs_update,              \
		.prog_delete = qs_delete,              \
		.push = qs_push,                       \
		.pop = pop_fn,                         \
		.peek = peek_fn,                       \
	}

QS_OPS(queue_map_ops, queue_peek, queue_pop);
QS_OPS(stack_map_ops, stack_peek, stack_pop);
