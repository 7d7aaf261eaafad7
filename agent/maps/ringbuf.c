/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_RINGBUF, as kernel/bpf/ringbuf.c.
 *
 * Segment layout (data_off = 4096; the header page plays the role of the
 * first page of the kernel's struct bpf_ringbuf, so record pg_off values are
 * the kernel's and a sample pointer leads back to its segment):
 *
 *   file offset 0                 struct shm_map_hdr (lock, pending_pos)
 *   data_off        (4096)        consumer page: u64 consumer_pos
 *   data_off + 4096 (8192)        producer page: u64 producer_pos
 *   data_off + 8192 (12288)       data, max_entries bytes
 *
 * The kernel maps the data pages twice back to back so a record that wraps
 * is contiguous. shm_map_mmap() does the same for a whole segment (the data
 * area is mapped a second time right after the segment). A loader's
 * mmap(fd, off, len) must map file offset data_off + off, and when it asks
 * for more than the file has after the producer page (libbpf asks for
 * page + 2 * max_entries), the data pages again right after the first copy
 * (MAP_FIXED over a reservation). If a process mapped the segment only once
 * (m->size < seg_size + max_entries), a record that would wrap is preceded
 * by a discarded filler record up to the end of the data area.
 *
 * Records: 8-byte header {u32 len with BUSY/DISCARD bits, u32 pg_off}, data
 * rounded up to 8. Reservation runs under the map's shm lock (the kernel's
 * rb->spinlock); commit is one atomic exchange of the length word.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include "map.h"

#define RB_PAGE 4096ull
#define RINGBUF_CREATE_FLAG_MASK (BPF_F_NUMA_NODE)
#define RINGBUF_MAX_RECORD_SZ (UINT32_MAX / 4)

#define PENDING(h) ((h)->type_state[0])

static int rb_alloc_check(const struct shm_map_attr *a)
{
	if (a->map_flags & ~RINGBUF_CREATE_FLAG_MASK)
		return -EINVAL;
	if (a->key_size || a->value_size || !a->max_entries || (a->max_entries & (a->max_entries - 1)) ||
	    (a->max_entries & (RB_PAGE - 1)))
		return -EINVAL;
	return 0;
}

static uint64_t rb_area(const struct shm_map_attr *a)
{
	return SHM_RINGBUF_META_PAGES * RB_PAGE + a->max_entries;
}

static char *hbase(struct shm_map_hdr *h) { return (char *)h + h->data_off; }
static uint64_t *cons_pos(struct shm_map_hdr *h) { return (uint64_t *)hbase(h); }
static uint64_t *prod_pos(struct shm_map_hdr *h) { return (uint64_t *)(hbase(h) + RB_PAGE); }
static char *rb_data(struct shm_map_hdr *h) { return hbase(h) + SHM_RINGBUF_META_PAGES * RB_PAGE; }
static uint64_t rb_mask(struct shm_map_hdr *h) { return (uint64_t)h->attr.max_entries - 1; }

/* bpf_ringbuf_rec_pg_off(): pages from the start of the "struct bpf_ringbuf"
 * (the page before the consumer page). */
static uint32_t rec_pg_off(struct shm_map_hdr *h, char *rec)
{
	return (uint32_t)((uint64_t)(rec - (hbase(h) - RB_PAGE)) / RB_PAGE);
}

/* bpf_ringbuf_restore_from_rec(): data_off is one page, so the page before
 * the consumer page is the segment's header. */
static struct shm_map_hdr *hdr_of_rec(char *rec)
{
	uint32_t pg_off;

	memcpy(&pg_off, rec + 4, 4);
	return (struct shm_map_hdr *)(((uintptr_t)rec & ~(uintptr_t)(RB_PAGE - 1)) - (uint64_t)pg_off * RB_PAGE);
}

static int rb_init(struct shm_map *m)
{
	/* the segment header must be the page before the consumer page */
	return m->hdr->data_off == RB_PAGE ? 0 : -EINVAL;
}

/* Is the data area mapped a second time right after the segment? */
static int rb_doubled(const struct shm_map *m)
{
	return m->size >= m->hdr->seg_size + m->hdr->attr.max_entries;
}

static char *write_hdr(struct shm_map_hdr *h, uint64_t pos, uint32_t len)
{
	char *rec = rb_data(h) + (pos & rb_mask(h));
	uint32_t pg_off = rec_pg_off(h, rec);

	memcpy(rec + 4, &pg_off, 4);
	__atomic_store_n((uint32_t *)rec, len, __ATOMIC_RELAXED);
	return rec;
}

/* __bpf_ringbuf_reserve() */
static void *rb_reserve(struct shm_map *m, uint64_t size)
{
	struct shm_map_hdr *h = m->hdr;
	uint64_t len, cons, pend, prod, new_prod, mask = rb_mask(h), filler = 0;
	char *rec;

	if (size > RINGBUF_MAX_RECORD_SZ)
		return NULL;
	len = BPFSHIM_ROUND_UP(size + BPF_RINGBUF_HDR_SZ, 8);
	if (len > mask + 1)
		return NULL;
	cons = __atomic_load_n(cons_pos(h), __ATOMIC_ACQUIRE);
	shm_lock(&h->lock);
	pend = PENDING(h);
	prod = *prod_pos(h);
	while (pend < prod) {
		char *p = rb_data(h) + (pend & mask);
		uint32_t l = __atomic_load_n((uint32_t *)p, __ATOMIC_ACQUIRE);
		if (l & BPF_RINGBUF_BUSY_BIT)
			break;
		pend += BPFSHIM_ROUND_UP((uint64_t)(l & ~BPF_RINGBUF_DISCARD_BIT) + BPF_RINGBUF_HDR_SZ, 8);
	}
	PENDING(h) = pend;
	if (!rb_doubled(m) && (prod & mask) + len > mask + 1)
		filler = mask + 1 - (prod & mask);
	new_prod = prod + filler + len;
	/* the producer may not run more than (size - 1) ahead of the consumer
	 * nor of the oldest record not yet committed */
	if (new_prod - cons > mask || new_prod - pend > mask) {
		shm_unlock(&h->lock);
		return NULL;
	}
	if (filler)
		write_hdr(h, prod, (uint32_t)(filler - BPF_RINGBUF_HDR_SZ) | BPF_RINGBUF_DISCARD_BIT);
	rec = write_hdr(h, prod + filler, (uint32_t)size | BPF_RINGBUF_BUSY_BIT);
	__atomic_store_n(prod_pos(h), new_prod, __ATOMIC_RELEASE);
	shm_unlock(&h->lock);
	return rec + BPF_RINGBUF_HDR_SZ;
}

/* bpf_ringbuf_commit(): 1 when consumers are to be woken up. */
static int rb_commit(void *sample, uint64_t flags, int discard)
{
	char *rec = (char *)sample - BPF_RINGBUF_HDR_SZ;
	struct shm_map_hdr *h = hdr_of_rec(rec);
	uint32_t len = __atomic_load_n((uint32_t *)rec, __ATOMIC_RELAXED) ^ BPF_RINGBUF_BUSY_BIT;
	uint64_t rec_pos, cpos;

	if (discard)
		len |= BPF_RINGBUF_DISCARD_BIT;
	__atomic_exchange_n((uint32_t *)rec, len, __ATOMIC_ACQ_REL);
	rec_pos = (uint64_t)(rec - rb_data(h));
	cpos = __atomic_load_n(cons_pos(h), __ATOMIC_ACQUIRE) & rb_mask(h);
	if (flags & BPF_RB_FORCE_WAKEUP)
		return 1;
	return cpos == rec_pos && !(flags & BPF_RB_NO_WAKEUP);
}

/* ---- what the ringbuf helpers call ---- */

/* bpf_ringbuf_reserve(): NULL when flags are set or there is no room. */
BPFSHIM_API void *shm_ringbuf_reserve(struct shm_map *m, uint64_t size, uint64_t flags)
{
	if (flags)
		return NULL;
	return rb_reserve(m, size);
}

BPFSHIM_API int shm_ringbuf_submit(void *sample, uint64_t flags)
{
	return rb_commit(sample, flags, 0);
}

BPFSHIM_API int shm_ringbuf_discard(void *sample, uint64_t flags)
{
	return rb_commit(sample, flags, 1);
}

BPFSHIM_API struct shm_map_hdr *shm_ringbuf_of(void *sample)
{
	return hdr_of_rec((char *)sample - BPF_RINGBUF_HDR_SZ);
}

/* bpf_ringbuf_output(): -EINVAL, -EAGAIN, or 0/1 (1: wake consumers). */
BPFSHIM_API int shm_ringbuf_output(struct shm_map *m, const void *data, uint64_t size, uint64_t flags)
{
	void *rec;

	if (flags & ~(uint64_t)(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP))
		return -EINVAL;
	rec = rb_reserve(m, size);
	if (!rec)
		return -EAGAIN;
	memcpy(rec, data, size);
	return rb_commit(rec, flags, 0);
}

/* bpf_ringbuf_query() */
BPFSHIM_API uint64_t shm_ringbuf_query(struct shm_map *m, uint64_t flags)
{
	struct shm_map_hdr *h = m->hdr;

	switch (flags) {
	case BPF_RB_AVAIL_DATA:
		return __atomic_load_n(prod_pos(h), __ATOMIC_ACQUIRE) - __atomic_load_n(cons_pos(h), __ATOMIC_ACQUIRE);
	case BPF_RB_RING_SIZE:
		return rb_mask(h) + 1;
	case BPF_RB_CONS_POS:
		return __atomic_load_n(cons_pos(h), __ATOMIC_ACQUIRE);
	case BPF_RB_PROD_POS:
		return __atomic_load_n(prod_pos(h), __ATOMIC_ACQUIRE);
	}
	return 0;
}

/* Consumer side for C users (tests, the shim): the kernel's ringbuf__consume
 * logic. Calls fn for each committed record; stops at a busy one. */
BPFSHIM_API int shm_ringbuf_consume(struct shm_map *m, int (*fn)(void *ctx, void *data, uint32_t len), void *ctx)
{
	struct shm_map_hdr *h = m->hdr;
	uint64_t cons = __atomic_load_n(cons_pos(h), __ATOMIC_ACQUIRE), mask = rb_mask(h);
	int n = 0;

	for (;;) {
		uint64_t prod = __atomic_load_n(prod_pos(h), __ATOMIC_ACQUIRE);
		if (cons >= prod)
			break;
		char *rec = rb_data(h) + (cons & mask);
		uint32_t len = __atomic_load_n((uint32_t *)rec, __ATOMIC_ACQUIRE);
		if (len & BPF_RINGBUF_BUSY_BIT)
			break;
		cons += BPFSHIM_ROUND_UP((uint64_t)(len & ~BPF_RINGBUF_DISCARD_BIT) + BPF_RINGBUF_HDR_SZ, 8);
		if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
			n++;
			int r = fn ? fn(ctx, rec + BPF_RINGBUF_HDR_SZ, len) : 0;
			if (r) {
				__atomic_store_n(cons_pos(h), cons, __ATOMIC_RELEASE);
				return r;
			}
		}
		__atomic_store_n(cons_pos(h), cons, __ATOMIC_RELEASE);
	}
	return n;
}

/* Element commands: the kernel's ringbuf_map_* answer -ENOTSUPP. */
static int rb_sys_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	return -SHM_ENOTSUPP;
}

static int rb_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	return -SHM_ENOTSUPP;
}

static int rb_delete(struct shm_map *m, const void *key)
{
	return -SHM_ENOTSUPP;
}

static int rb_get_next_key(struct shm_map *m, const void *key, void *next)
{
	return -SHM_ENOTSUPP;
}

const struct shm_map_ops ringbuf_map_ops = {
	.alloc_check = rb_alloc_check,
	.facts = { .mmap = SHM_MMAP_RINGBUF },
	.area_size = rb_area,
	.page_aligned_area = 1,
	.init = rb_init,
	.sys_lookup = rb_sys_lookup,
	.sys_update = rb_update,
	.sys_delete = rb_delete,
	.get_next_key = rb_get_next_key,
	.prog_update = rb_update,
	.prog_delete = rb_delete,
};
