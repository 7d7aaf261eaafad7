/* SPDX-License-Identifier: MIT */
/* Producer side of perf buffers: the record format of kernel/events/ring_buffer.c
 * and perf_output_sample() for a BPF_OUTPUT event with PERF_SAMPLE_RAW. */
#include <errno.h>
#include <string.h>
#include "perf_ring.h"

static void ring_copy(void *data_area, uint64_t size, uint64_t head, const void *src, uint64_t n)
{
	uint64_t off = head & (size - 1);
	uint64_t first = n < size - off ? n : size - off;

	memcpy((char *)data_area + off, src, first);
	if (n > first)
		memcpy(data_area, (const char *)src + first, n - first);
}

static void ring_zero(void *data_area, uint64_t size, uint64_t head, uint64_t n)
{
	static const char zeros[8];

	while (n) {
		uint64_t k = n < 8 ? n : 8;
		ring_copy(data_area, size, head, zeros, k);
		head += k;
		n -= k;
	}
}

int perf_ring_output(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg,
		     void *data_area, const void *rec, uint64_t size, int *wake)
{
	/* perf_event_output(): raw size is padded so the record stays 8-aligned */
	uint32_t raw_size = (uint32_t)(((size + sizeof(uint32_t) + 7) & ~7ull) - sizeof(uint32_t));
	uint64_t need = sizeof(struct perf_event_header) + sizeof(uint32_t) + raw_size;
	uint64_t dsize = meta->data_size, head, tail;
	struct perf_event_header h;
	int err = 0;

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
	if (meta->lost) {
		/* PERF_RECORD_LOST { header, u64 id, u64 lost } goes first when it fits */
		uint64_t lneed = sizeof(h) + 16;
		if (dsize - (head - tail) >= lneed + need) {
			uint64_t body[2] = { meta->event_id, meta->lost };
			h.type = PERF_RECORD_LOST;
			h.misc = 0;
			h.size = (uint16_t)lneed;
			ring_copy(data_area, dsize, head, &h, sizeof(h));
			ring_copy(data_area, dsize, head + sizeof(h), body, sizeof(body));
			head += lneed;
			meta->lost = 0;
		}
	}
	if (dsize - (head - tail) < need) {
		meta->lost++;
		err = -ENOSPC;
		goto out;
	}
	h.type = PERF_RECORD_SAMPLE;
	h.misc = 0;
	h.size = (uint16_t)need;
	ring_copy(data_area, dsize, head, &h, sizeof(h));
	ring_copy(data_area, dsize, head + sizeof(h), &raw_size, sizeof(raw_size));
	ring_copy(data_area, dsize, head + sizeof(h) + 4, rec, size);
	ring_zero(data_area, dsize, head + sizeof(h) + 4 + size, raw_size - size);
	head += need;
	if (meta->wakeup_events) {
		if (++meta->since_wakeup >= meta->wakeup_events) {
			meta->since_wakeup = 0;
			*wake = 1;
		}
	} else {
		meta->since_wakeup += need;
		if (meta->since_wakeup >= meta->watermark) {
			meta->since_wakeup = 0;
			*wake = 1;
		}
	}
out:
	__atomic_store_n(&pg->data_head, head, __ATOMIC_RELEASE);
	shm_unlock(&meta->lock);
	return err;
}
