/* SPDX-License-Identifier: MIT */
/*
 * Perf buffers (PERF_COUNT_SW_BPF_OUTPUT events) in shared memory.
 *
 * A perf event object has an eventfd (the fd the loader holds, so poll and
 * epoll work on it) and, once the loader mmaps it, a ring segment:
 *
 *   file offset 0      struct perf_ring_meta   (bpfshim's, never mapped by the loader)
 *   file offset 4096   struct perf_event_mmap_page  \  what mmap(perf_fd) shows,
 *   file offset 8192   data, 2^n pages              /  the kernel's layout
 *
 * Producers (bpf_perf_event_output in any process) append PERF_RECORD_SAMPLE
 * records under the meta lock and signal the eventfd by the kernel's wake-up
 * rules (every wakeup_events records, else at the watermark). A record that
 * does not fit is counted in `lost`; as in perf_output_begin(), the next
 * record goes in only together with the PERF_RECORD_LOST that reports the
 * count, else it is dropped too. The consumer's poll writes that
 * PERF_RECORD_LOST on its own once there is room (perf_ring_flush_lost), so
 * drops after the last record that fitted are reported as well: every
 * record is delivered or counted.
 */
#ifndef BPFSHIM_PERF_RING_H
#define BPFSHIM_PERF_RING_H

#include <stdint.h>
#include <linux/perf_event.h>
#include "shm_lock.h"

#define PERF_RING_META_SIZE 4096u
#define PERF_RING_MAGIC 0x46524550u /* "PERF" */

struct perf_ring_meta {
	uint32_t magic;
	shm_lock_t lock;
	uint32_t enabled;          /* PERF_EVENT_IOC_ENABLE / DISABLE, or attr.disabled */
	uint32_t wakeup_events;    /* attr.wakeup_events (0: use the watermark) */
	uint32_t watermark;        /* bytes; from attr.wakeup_watermark or size/2 */
	uint32_t cpu;              /* the cpu the event was opened for */
	uint64_t data_size;        /* bytes of the data area (2^n pages) */
	uint64_t lost;             /* records dropped since the last LOST record */
	uint64_t since_wakeup;     /* records (or bytes, with watermark) since the last signal */
	uint64_t event_id;         /* PERF_RECORD_LOST's id field */
	uint64_t sample_type;
	uint32_t signalled;        /* the eventfd has a wake-up the consumer has not taken */
};

/* Copies n bytes of program memory: 0, or -EFAULT (no crash) for a bad pointer. */
typedef int (*perf_copy_fn)(void *dst, const void *src, uint64_t n);

/* Append one BPF_OUTPUT sample (PERF_SAMPLE_RAW) of `size` bytes at rec,
 * read with copy. Returns 0, -ENOSPC when the record was dropped (counted as
 * lost), -EFAULT, -ENOENT when no ring is mapped or -EOPNOTSUPP when the
 * event is disabled. *wake is set when the consumer must be signalled. */
int perf_ring_output(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg,
		     void *data_area, const void *rec, uint64_t size, perf_copy_fn copy, int *wake);

/* Write the PERF_RECORD_LOST of drops not reported yet, if it fits now;
 * 1 when one was written (the consumer is to be signalled). */
int perf_ring_flush_lost(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg, void *data_area);

/* Whether a producer that set *wake is the one to signal the eventfd: the
 * first since the consumer last took its wake-up (perf_ring_woken), so a
 * burst costs one write(2), not one per record. */
static inline int perf_ring_claim_signal(struct perf_ring_meta *meta)
{
	return !__atomic_exchange_n(&meta->signalled, 1, __ATOMIC_SEQ_CST);
}

/* The consumer drained the eventfd: the next wake-up must signal again. */
static inline void perf_ring_woken(struct perf_ring_meta *meta)
{
	__atomic_store_n(&meta->signalled, 0, __ATOMIC_SEQ_CST);
}

#endif
