/* SPDX-License-Identifier: MIT */
/*
 * The trace pipe: one file per user, $RUNTIME_DIR/trace_pipe, a byte ring of
 * text lines in the kernel's trace_pipe format. Any process running a
 * program appends (bpf_trace_printk); `bpfshim trace-pipe`
 * (syscall_server/trace_pipe.py) consumes.
 *
 * Writers append whole lines under `lock` and publish `head` (bytes ever
 * written) last. They never wait for the reader: when the ring is full the
 * oldest lines are overwritten, as the kernel's ring buffer in overwrite
 * mode. The reader owns `tail`; it finds lost data by head - tail > size.
 */
#ifndef BPFSHIM_TRACE_RING_H
#define BPFSHIM_TRACE_RING_H

#include <stddef.h>
#include <stdint.h>
#include "shm_lock.h"

#define TRACE_RING_MAGIC 0x45434154u   /* "TACE" */
#define TRACE_RING_VERSION 1u
#define TRACE_RING_SIZE (1u << 20)     /* data bytes, a power of two */
#define TRACE_RING_NAME "trace_pipe"

struct trace_ring_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t size;
	shm_lock_t lock;
	uint64_t head;       /* bytes written, published with release */
	uint64_t tail;       /* bytes consumed by the reader */
	uint64_t reserved[4];
	/* char data[size] follows at offset 64 */
};

/* Append one bpf_trace_printk event with message msg. */
void trace_ring_emit(const char *msg);
/* Consume up to n bytes written since the last read (from the next line
 * when unread data was overwritten); 0 when there is none. */
size_t trace_ring_read(char *buf, size_t n);

#endif
