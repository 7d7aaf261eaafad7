/* SPDX-License-Identifier: MIT */
/* Producer side of perf buffers: the record format of kernel/events/ring_buffer.c
 * and perf_output_sample() for a BPF_OUTPUT event with PERF_SAMPLE_RAW. */
#include <errno.h>
#include <string.h>
#include "perf_ring.h"

/* PERF_RECORD_LOST without sample_id: { header, u64 id, u64 lost } */
#define LOST_SIZE (sizeof(struct perf_event_header) + 16)

static int plain_copy(void *dst, const void *src, uint64_t n)
{
	memcpy(dst, src, n);
	return 0;
}

/* Copy n bytes to ring position head, across the end of the data area. */
static int ring_copy(void *data_area, uint64_t size, uint64_t head, const void *src, uint64_t n,
		     perf_copy_fn copy)
{
	uint64_t off = head & (size - 1);
	uint64_t first = n < size - off ? n : size - off;

	if (copy((char *)data_area + off, src, first))
		return -EFAULT;
	if (n > first && copy(data_area, (const char *)src + first, n - first))
		return -EFAULT;
	return 0;
}

static void put_lost(struct perf_ring_meta *meta, void *data_area, uint64_t dsize, uint64_t head)
{
	struct { struct perf_event_header h; uint64_t id, lost; } l = {
		{ PERF_RECORD_LOST, 0, (uint16_t)LOST_SIZE }, meta->event_id, meta->lost
	};

	ring_copy(data_area, dsize, head, &l, sizeof(l), plain_copy);
	meta->lost = 0;
}

static void count_wakeup(struct perf_ring_meta *meta, uint64_t bytes, int *wake)
{
	if (meta->wakeup_events) {
		if (++meta->since_wakeup >= meta->wakeup_events) {
			meta->since_wakeup = 0;
			*wake = 1;
		}
	} else {
		meta->since_wakeup += bytes;
		if (meta->since_wakeup >= meta->watermark) {
			meta->since_wakeup = 0;
			*wake = 1;
		}
	}
}

int perf_ring_output(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg,
		     void *data_area, const void *rec, uint64_t size, perf_copy_fn copy, int *wake)
{
	/* perf_event_output(): raw size is padded so the record stays 8-aligned */
	uint32_t raw_size = (uint32_t)(((size + sizeof(uint32_t) + 7) & ~7ull) - sizeof(uint32_t));
	uint64_t need = sizeof(struct perf_event_header) + sizeof(uint32_t) + raw_size;
	uint64_t dsize = meta->data_size, head, tail, lneed;
	static const char zeros[8];
	struct { struct perf_event_header h; uint32_t raw; } __attribute__((packed)) s = {
		{ PERF_RECORD_SAMPLE, 0, (uint16_t)need }, raw_size
	};

	*wake = 0;
	if (!__atomic_load_n(&meta->enabled, __ATOMIC_ACQUIRE))
		return -EOPNOTSUPP;
	if (!dsize)
		return -ENOENT;
	if (need > 0xffff)
		return -E2BIG;
	shm_lock(&meta->lock);
	head = pg->data_head;
	tail = __atomic_load_n(&pg->data_tail, __ATOMIC_ACQUIRE);
	/* perf_output_begin(): with drops pending, the record needs room for
	 * the LOST record too; the consumer's data_tail bounds what we may
	 * overwrite (no overwrite mode for BPF output) */
	lneed = meta->lost ? LOST_SIZE : 0;
	if (dsize - (head - tail) < lneed + need) {
		meta->lost++;
		shm_unlock(&meta->lock);
		return -ENOSPC;
	}
	/* the body first: a bad pointer leaves the ring as it was */
	if (ring_copy(data_area, dsize, head + lneed + sizeof(s), rec, size, copy)) {
		shm_unlock(&meta->lock);
		return -EFAULT;
	}
	if (raw_size > size)
		ring_copy(data_area, dsize, head + lneed + sizeof(s) + size, zeros, raw_size - size, plain_copy);
	if (lneed)
		put_lost(meta, data_area, dsize, head);
	ring_copy(data_area, dsize, head + lneed, &s, sizeof(s), plain_copy);
	head += lneed + need;
	count_wakeup(meta, lneed + need, wake);
	__atomic_store_n(&pg->data_head, head, __ATOMIC_RELEASE);
	shm_unlock(&meta->lock);
	return 0;
}

int perf_ring_flush_lost(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg, void *data_area)
{
	uint64_t dsize = __atomic_load_n(&meta->data_size, __ATOMIC_ACQUIRE), head, tail;
	int done = 0;

	if (!dsize || !__atomic_load_n(&meta->lost, __ATOMIC_RELAXED))
		return 0;
	shm_lock(&meta->lock);
	head = pg->data_head;
	tail = __atomic_load_n(&pg->data_tail, __ATOMIC_ACQUIRE);
	if (meta->lost && dsize - (head - tail) >= LOST_SIZE) {
		put_lost(meta, data_area, dsize, head);
		__atomic_store_n(&pg->data_head, head + LOST_SIZE, __ATOMIC_RELEASE);
		done = 1;
	}
	shm_unlock(&meta->lock);
	return done;
}
