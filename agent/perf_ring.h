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
 * records under the meta lock, count drops and emit PERF_RECORD_LOST before
 * the next record that fits, and signal the eventfd by the kernel's wake-up
 * rules (every wakeup_events records, else at the watermark).
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
};

/* Append one BPF_OUTPUT sample (PERF_SAMPLE_RAW). Returns 0, -ENOSPC when the
 * record was dropped (counted as lost), -ENOENT when no ring is mapped or
 * -EOPNOTSUPP when the event is disabled. *wake is set when the consumer
 * must be signalled. */
int perf_ring_output(struct perf_ring_meta *meta, struct perf_event_mmap_page *pg,
		     void *data_area, const void *rec, uint64_t size, int *wake);

#endif
