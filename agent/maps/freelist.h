/* SPDX-License-Identifier: MIT */
/*
 * The free elements of a preallocated map (hash maps, stack traces), as the
 * kernel keeps them in a pcpu_freelist: a lock-free LIFO in the segment,
 * shared by every process. `head` holds the top element's index (1-based,
 * 0 empty) and, in its upper half, a count bumped by every change, so a pop
 * that read a next that was popped and pushed again in between fails its
 * compare-and-swap (ABA). An index out of 1..max (a corrupted segment)
 * reads as empty. Async-signal-safe.
 */
#ifndef BPFSHIM_MAPS_FREELIST_H
#define BPFSHIM_MAPS_FREELIST_H

#include <stdint.h>

/* The element's link: each map says where it keeps it. */
typedef uint32_t *(*shm_freelist_next_fn)(struct shm_map *m, uint32_t idx);

static inline uint32_t shm_freelist_pop(struct shm_map *m, uint64_t *head, shm_freelist_next_fn next_of)
{
	uint64_t old = __atomic_load_n(head, __ATOMIC_ACQUIRE), new;
	uint32_t idx;

	do {
		idx = (uint32_t)old;
		if (idx < 1 || idx > m->attr.max_entries)
			return 0;
		uint32_t next = __atomic_load_n(next_of(m, idx), __ATOMIC_RELAXED);
		new = ((old >> 32) + 1) << 32 | next;
	} while (!__atomic_compare_exchange_n(head, &old, new, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
	return idx;
}

static inline void shm_freelist_push(struct shm_map *m, uint64_t *head, shm_freelist_next_fn next_of, uint32_t idx)
{
	uint64_t old = __atomic_load_n(head, __ATOMIC_ACQUIRE), new;

	do {
		__atomic_store_n(next_of(m, idx), (uint32_t)old, __ATOMIC_RELAXED);
		new = ((old >> 32) + 1) << 32 | idx;
	} while (!__atomic_compare_exchange_n(head, &old, new, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
}

#endif
