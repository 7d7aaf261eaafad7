/* SPDX-License-Identifier: MIT */
/*
 * Hybrid mode: events of user-space twins (ARCHITECTURE.md "Hybrid mode",
 * events). A twin's bpf_perf_event_output and ringbuf output / reserve /
 * submit / discard write into bpfshim's own shared-memory rings (a perf
 * event per slot of the kernel's perf event array, a ringbuf of the
 * kernel's size): bpfshim's producers, async-signal-safe, no syscall on
 * the hit but one wake-up write(2) per ring and forwarder pass at most. A
 * forwarder thread of this loader drains them in order and emits each
 * record into the loader's kernel map by a kernel program under
 * BPF_PROG_TEST_RUN: the records are copied into an mmapable kernel array
 * (the scratch, no syscall), and one run outputs up to BATCH_RECS of them
 * (a bounded loop), for a perf slot on that slot's CPU
 * (BPF_F_TEST_RUN_ON_CPU: the kernel's perf output takes only the CPU's
 * own event). The loader forwards, not the traced processes: they may have
 * no bpf() (uid 65534), and the loader, which made the kernel maps, has it.
 * A loader's wait on its consumer (poll, epoll_wait) forwards first, so a
 * consumer that waits sees every event output before its wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <linux/perf_event.h>
#include "shim.h"
#include "rawsys.h"
#include "rt_thread.h"

#define FWD_PAGES 64                  /* data pages of each slot's bpfshim ring */
#define BATCH_RECS 64                 /* records one TEST_RUN outputs at most */
#define BATCH_BYTES (256u * 1024)     /* their bytes (headers included) at most: a power of 2 */
#define REC_MAX (64u * 1024)          /* a record's bytes, less than this: a power of 2 */
#define SCRATCH_SIZE (BATCH_BYTES + REC_MAX + 8)
#define COALESCE_MS 1                 /* after a wake-up: producers' wake-ups are one per pass */
#define RETRY_MS 10                   /* a kernel ringbuf was full: try again */
#define FWD_RINGS 256

/* A batch in the scratch: per record {u32 size, u32 0} then size bytes,
 * padded to 8 (what the emit program walks). */
struct batch {
	uint8_t buf[BATCH_BYTES];
	uint32_t len, n;
};

struct fwd_ring {
	int prog_fd;                      /* the emit program of its kernel map */
	int ringbuf;
	uint32_t slot;                    /* perf: the slot and CPU */
	int evfd;                         /* what its producers signal */
	struct shim_fd *pe;               /* perf: bpfshim's event (its wake-up re-armed per pass) */
	struct perf_event_mmap_page *pg;
	uint8_t *data;
	uint64_t dsize;
	struct shm_map *rb;               /* ringbuf: bpfshim's */
	struct batch *pend;               /* ringbuf: taken from bpfshim's, not yet in the kernel's */
	uint64_t lost;                    /* records bpfshim's ring could not take */
};

static struct fwd_ring rings[FWD_RINGS];
static unsigned n_rings;
static pthread_mutex_t fwd_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t fwd_pid;                 /* the process that forwards (not its fork children) */
static int scratch_fd = -1, epfd = -1, stopfd = -1;
static uint8_t *scratch;
static struct batch work;             /* perf records being batched (under fwd_lock) */

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })

/*
 * The emit program (raw tracepoint, ctx = {u64 n, u64 flags}): outputs the
 * scratch's first n records (at most BATCH_RECS) into kernel map kfd:
 * bpf_perf_event_output(ctx, map, flags = the slot, ...), or
 * bpf_ringbuf_output(map, ..., 0), stopping at the first the ringbuf
 * refuses. r0 = the records output. Stack: -4 key, -16 i, -24 done, -32 size.
 */
static int emit_prog(int kfd, int ringbuf)
{
	struct bpf_insn p[64];
	int n = 0, j_null, loop, j_end1, j_end2, j_fail, j_out[4], n_out = 0;

	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0);
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_7, BPF_REG_6, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 0);
	p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, -16, 0);
	p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, -24, 0);
	p[n++] = INSN(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -4, 0);
	p[n++] = INSN(BPF_LD | BPF_IMM | BPF_DW, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, scratch_fd);
	p[n++] = INSN(0, 0, 0, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4);
	p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
	j_null = n;
	p[n++] = INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_9, 0, 0, 0);
	loop = n;
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_10, -16, 0);
	j_end1 = n;
	p[n++] = INSN(BPF_JMP | BPF_JGE | BPF_K, BPF_REG_1, 0, 0, BATCH_RECS);
	j_end2 = n;
	p[n++] = INSN(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_1, BPF_REG_7, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 1);
	p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, -16, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_9, 0, 0, BATCH_BYTES - 1);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_8, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_X, BPF_REG_2, BPF_REG_9, 0, 0);
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_5, BPF_REG_2, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_5, 0, 0, REC_MAX - 1);
	p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_5, -32, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_4, BPF_REG_2, 0, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_4, 0, 0, 8);
	if (ringbuf) {
		p[n++] = INSN(BPF_LD | BPF_IMM | BPF_DW, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, kfd);
		p[n++] = INSN(0, 0, 0, 0, 0);
		p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_4, 0, 0);
		p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_5, 0, 0);
		p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0);
		p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ringbuf_output);
	} else {
		p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0);
		p[n++] = INSN(BPF_LD | BPF_IMM | BPF_DW, BPF_REG_2, BPF_PSEUDO_MAP_FD, 0, kfd);
		p[n++] = INSN(0, 0, 0, 0, 0);
		p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_6, 8, 0);
		p[n++] = INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_perf_event_output);
	}
	/* a ringbuf that refuses one: stop (the rest waits); perf: the kernel counted it */
	j_fail = n;
	p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 0, 0);
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_10, -24, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 1);
	p[n++] = INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, -24, 0);
	if (!ringbuf)
		p[j_fail].off = (int16_t)(n - j_fail - 1);
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_10, -32, 0);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 8 + 7);
	p[n++] = INSN(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_1, 0, 0, -8);
	p[n++] = INSN(BPF_ALU64 | BPF_ADD | BPF_X, BPF_REG_9, BPF_REG_1, 0, 0);
	p[n] = INSN(BPF_JMP | BPF_JA, 0, 0, (int16_t)(loop - n - 1), 0);
	n++;
	j_out[n_out++] = j_null;
	j_out[n_out++] = j_end1;
	j_out[n_out++] = j_end2;
	if (ringbuf)
		j_out[n_out++] = j_fail;
	for (int i = 0; i < n_out; i++)
		p[j_out[i]].off = (int16_t)(n - j_out[i] - 1);
	p[n++] = INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_10, -24, 0);
	p[n++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	return shim_kernel_rawtp_load(p, n, "bpfshim_events");
}

/* The batch into the kernel map of r: the records it is done with (for a
 * perf slot, all: the kernel counts what its buffer could not take; all
 * too when the run fails, a CPU offline or the loader's privileges gone:
 * counted lost, said below, rather than held until the twin's ring is
 * full). */
static uint32_t emit(struct fwd_ring *r, const struct batch *b)
{
	uint64_t ctx[2] = { b->n, r->slot };
	union bpf_attr a;

	if (!b->n)
		return 0;
	memcpy(scratch, b->buf, b->len);
	memset(&a, 0, sizeof(a));
	a.test.prog_fd = (uint32_t)r->prog_fd;
	a.test.ctx_in = (uint64_t)(uintptr_t)ctx;
	a.test.ctx_size_in = sizeof(ctx);
	if (!r->ringbuf) {
		a.test.flags = BPF_F_TEST_RUN_ON_CPU;
		a.test.cpu = r->slot;
	}
	if (real.syscall(SYS_bpf, BPF_PROG_TEST_RUN, &a, sizeof(a))) {
		r->lost += b->n;
		return b->n;
	}
	return r->ringbuf ? a.test.retval : b->n;
}

/* Append a record to b: 0, or -1 when b is full. */
static int batch_add(struct batch *b, const void *data, uint32_t size)
{
	uint32_t at = b->len, len = 8 + ((size + 7) & ~7u);

	if (b->n == BATCH_RECS || at + len > BATCH_BYTES)
		return -1;
	memcpy(b->buf + at, &size, 4);
	memset(b->buf + at + 4, 0, len - 4);
	memcpy(b->buf + at + 8, data, size);
	b->len += len;
	b->n++;
	return 0;
}

/* From a perf ring's data area (a power of 2 bytes), n bytes at pos. */
static void ring_read(const struct fwd_ring *r, uint64_t pos, void *out, uint32_t n)
{
	uint64_t at = pos & (r->dsize - 1), first = r->dsize - at < n ? r->dsize - at : n;

	memcpy(out, r->data + at, first);
	memcpy((uint8_t *)out + first, r->data, n - first);
}

static void forward_perf(struct fwd_ring *r)
{
	static uint8_t rec[0x10000];      /* perf_event_header.size is a u16 */
	uint64_t tail = r->pg->data_tail, head;

	shim_perf_woken(r->pe);        /* re-armed before reading: a later record signals */
	head = __atomic_load_n(&r->pg->data_head, __ATOMIC_ACQUIRE);
	work.len = work.n = 0;
	while (tail < head) {
		struct perf_event_header h;
		ring_read(r, tail, &h, sizeof(h));
		if (h.size < sizeof(h) || tail + h.size > head)
			break;         /* not a record bpfshim's producers write: stop there */
		ring_read(r, tail, rec, h.size);
		if (h.type == PERF_RECORD_SAMPLE && h.size >= sizeof(h) + 4) {
			uint32_t size;
			memcpy(&size, rec + sizeof(h), 4);
			if (size <= h.size - sizeof(h) - 4 && batch_add(&work, rec + sizeof(h) + 4, size)) {
				emit(r, &work);
				work.len = work.n = 0;
				continue;              /* the same record again, into the empty batch */
			}
		} else if (h.type == PERF_RECORD_LOST && h.size >= sizeof(h) + 16) {
			uint64_t lost;
			memcpy(&lost, rec + sizeof(h) + 8, 8);
			r->lost += lost;
		}
		tail += h.size;
	}
	emit(r, &work);
	__atomic_store_n(&r->pg->data_tail, tail, __ATOMIC_RELEASE);
}

static int rb_take(void *ctx, void *data, uint32_t len)
{
	struct fwd_ring *r = ctx;

	/* more than one run can take, or than the ring holds (written by
	 * another process: not trusted): said below */
	if (len >= REC_MAX || len > r->rb->attr.max_entries - 8) {
		r->lost++;
		return 0;
	}
	batch_add(r->pend, data, len);
	/* stop while a record of any size still fits the batch */
	return r->pend->n == BATCH_RECS || r->pend->len + 8 + REC_MAX > BATCH_BYTES;
}

/* 1 when records wait for room in the kernel's ringbuf. */
static int forward_ringbuf(struct fwd_ring *r)
{
	for (;;) {
		if (!r->pend->n)
			shm_ringbuf_consume(r->rb, rb_take, r);
		if (!r->pend->n)
			return 0;
		uint32_t took = emit(r, r->pend), at = 0;
		for (uint32_t i = 0; i < took; i++) {
			uint32_t size;
			memcpy(&size, r->pend->buf + at, 4);
			at += 8 + ((size + 7) & ~7u);
		}
		memmove(r->pend->buf, r->pend->buf + at, r->pend->len - at);
		r->pend->len -= at;
		r->pend->n -= took;
		if (r->pend->n)
			return 1;      /* the kernel's is full: these go first, later */
	}
}

static uint64_t said_lost;

/* One pass over every ring (under fwd_lock): 1 when a kernel ringbuf was full. */
static int forward_all(void)
{
	unsigned n = __atomic_load_n(&n_rings, __ATOMIC_ACQUIRE);
	uint64_t lost = 0;
	int full = 0;

	if (getpid() != fwd_pid)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		if (rings[i].ringbuf)
			full |= forward_ringbuf(&rings[i]);
		else
			forward_perf(&rings[i]);
		lost += rings[i].lost;
	}
	if (lost != said_lost) {
		char m[200];
		snprintf(m, sizeof(m), "hybrid mode: events of user-space programs were lost before the kernel's buffer "
			 "(bpfshim's ring was full, a record was %u bytes or more, or the kernel refused the run)", REC_MAX);
		said_lost = lost;
		shim_say_once(m);
	}
	return full;
}

/* Before the loader waits on its consumer (wakeup_calls.c): every event
 * output so far is in the kernel's buffer. */
void shim_events_flush(void)
{
	static __thread int flushing;    /* a signal handler's poll inside a flush: not again */

	if (!__atomic_load_n(&n_rings, __ATOMIC_ACQUIRE) || rt_thread_self() || flushing)
		return;
	flushing = 1;
	pthread_mutex_lock(&fwd_lock);
	forward_all();
	pthread_mutex_unlock(&fwd_lock);
	flushing = 0;
}

static struct rt_thread forwarder;
static int forwarder_started;

static void forwarder_wake(struct rt_thread *t)
{
	uint64_t one = 1;

	(void)t;
	(void)!BPF_RT_SYS(SYS_write, stopfd, &one, sizeof(one));
}

static int forwarder_main(struct rt_thread *t)
{
	struct epoll_event ev[16];
	int full = 0;

	while (!rt_thread_stopping(t)) {
		long k = BPF_RT_SYS(SYS_epoll_wait, epfd, ev, 16, full ? RETRY_MS : 1000);
		for (long i = 0; i < k; i++) {
			uint64_t v;
			(void)!BPF_RT_SYS(SYS_read, (int)ev[i].data.u32, &v, sizeof(v));
		}
		if (rt_thread_stopping(t))
			break;
		/* wake-ups of a burst land together: one pass for them */
		rt_thread_wait(t, COALESCE_MS);
		pthread_mutex_lock(&fwd_lock);
		full = forward_all();
		pthread_mutex_unlock(&fwd_lock);
	}
	return RT_THREAD_STOPPED;
}

/* Under fwd_lock: the scratch, the epoll set and the thread, once. */
static int fwd_setup(void)
{
	union bpf_attr a;
	struct epoll_event ev = { .events = EPOLLIN };

	if (scratch)
		return 0;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = SCRATCH_SIZE;
	a.max_entries = 1;
	a.map_flags = BPF_F_MMAPABLE;
	memcpy(a.map_name, "bpfshim_events", 15);
	long fd = real.syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a));
	if (fd < 0)
		return -1;
	scratch_fd = real.fcntl((int)fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
	real.close((int)fd);
	epfd = (int)BPF_RT_SYS(SYS_epoll_create1, EPOLL_CLOEXEC);
	stopfd = (int)BPF_RT_SYS(SYS_eventfd2, 0, EFD_CLOEXEC);
	if (scratch_fd < 0 || epfd < 0 || stopfd < 0)
		return -1;
	ev.data.u32 = (uint32_t)stopfd;
	BPF_RT_SYS(SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, stopfd, &ev);
	void *p = real.mmap(NULL, (SCRATCH_SIZE + 4095) & ~4095u, PROT_READ | PROT_WRITE, MAP_SHARED, scratch_fd, 0);
	if (p == MAP_FAILED)
		return -1;
	scratch = p;
	fwd_pid = getpid();
	return 0;
}

static struct fwd_ring *ring_new(int prog_fd, int ringbuf, uint32_t slot, int evfd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)evfd };
	struct fwd_ring *r;

	if (n_rings == FWD_RINGS)
		return NULL;
	r = &rings[n_rings];
	memset(r, 0, sizeof(*r));
	r->prog_fd = prog_fd;
	r->ringbuf = ringbuf;
	r->slot = slot;
	r->evfd = evfd;
	BPF_RT_SYS(SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, evfd, &ev);
	return r;
}

/* bpfshim's perf event for slot `cpu`, its ring mapped: the internal fd, or -1. */
static int slot_event(uint32_t cpu, struct fwd_ring *r)
{
	struct perf_event_attr pa;
	size_t len = (size_t)(1 + FWD_PAGES) * 4096;

	memset(&pa, 0, sizeof(pa));
	pa.type = PERF_TYPE_SOFTWARE;
	pa.size = sizeof(pa);
	pa.config = PERF_COUNT_SW_BPF_OUTPUT;
	pa.sample_period = 1;
	pa.sample_type = PERF_SAMPLE_RAW;
	pa.wakeup_events = 1;          /* one signal a pass: perf_ring_claim_signal */
	long fd = shim_user_perf_event_open((uint64_t)(uintptr_t)&pa, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd < 0)
		return -1;
	fd = shim_fd_internal((int)fd);
	struct shim_fd *e = shim_fd_peek((int)fd);
	void *p = e ? shim_perf_mmap(e, NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, 0) : MAP_FAILED;
	if (p == MAP_FAILED) {
		shim_fd_close_internal((int)fd);
		return -1;
	}
	e->internal = 1;
	r->pe = e;
	r->pg = p;
	r->data = (uint8_t *)p + 4096;
	r->dsize = (uint64_t)FWD_PAGES * 4096;
	return (int)fd;
}

/* The bpfshim map twins output into in place of the kernel's perf event
 * array or ringbuf kfd (info ki), forwarded into it from now on: its fd
 * (an internal one), else -1 with why. Once per kernel map (hybrid.c keeps
 * them by id). */
int shim_events_map(int kfd, const struct bpf_map_info *ki, const char **why)
{
	int ringbuf = ki->type == BPF_MAP_TYPE_RINGBUF, pfd = -1, kdup = -1;
	uint32_t slots = 0, first = n_rings;
	long sfd = -1;

	pthread_mutex_lock(&fwd_lock);
	*why = "bpfshim cannot forward its events";
	if ((fwd_pid && fwd_pid != getpid()) || fwd_setup())
		goto fail;
	if ((kdup = real.fcntl(kfd, F_DUPFD_CLOEXEC, SHIM_FD_MIN)) < 0)
		goto fail;
	*why = "the kernel refuses its forwarding program";
	if ((pfd = emit_prog(kdup, ringbuf)) < 0)
		goto fail;
	real.close(kdup);      /* the program holds the map */
	kdup = -1;
	*why = "bpfshim cannot make a map for it";
	struct shim_fd *e;
	if ((sfd = shim_hybrid_map_like(ki, 0, &e)) < 0)
		goto fail;
	if (ringbuf) {
		struct fwd_ring *r;
		int wfd = shim_ringbuf_wake_fd(e->id);
		struct batch *b = calloc(1, sizeof(*b));
		if (wfd < 0 || !b || !(r = ring_new(pfd, 1, 0, wfd))) {
			free(b);
			goto fail;
		}
		r->rb = &e->map;
		r->pend = b;
		n_rings++;
	} else {
		slots = (uint32_t)get_nprocs_conf();
		if (slots > ki->max_entries)
			slots = ki->max_entries;
		for (uint32_t s = 0; s < slots; s++) {
			struct fwd_ring tmp;
			memset(&tmp, 0, sizeof(tmp));
			int efd = slot_event(s, &tmp);
			struct fwd_ring *r = efd >= 0 ? ring_new(pfd, 0, s, efd) : NULL;
			union bpf_attr u;
			uint32_t v = (uint32_t)efd;
			memset(&u, 0, sizeof(u));
			u.map_fd = (uint32_t)sfd;
			u.key = (uint64_t)(uintptr_t)&s;
			u.value = (uint64_t)(uintptr_t)&v;
			if (!r || shim_user_bpf(BPF_MAP_UPDATE_ELEM, (uint64_t)(uintptr_t)&u, sizeof(u))) {
				if (efd >= 0)
					shim_fd_close_internal(efd);
				goto fail;
			}
			tmp.prog_fd = pfd;
			tmp.slot = s;
			tmp.evfd = efd;
			*r = tmp;
			n_rings++;
		}
	}
	__atomic_store_n(&n_rings, n_rings, __ATOMIC_RELEASE);
	if (!forwarder_started) {
		forwarder.fn = forwarder_main;
		forwarder.wake = forwarder_wake;
		forwarder_started = !rt_thread_start(&forwarder);
	}
	pthread_mutex_unlock(&fwd_lock);
	return (int)sfd;
fail:
	n_rings = first;       /* (a slot's rings made before the failure are dropped) */
	if (sfd >= 0)
		shim_fd_close_internal((int)sfd);
	if (pfd >= 0)
		real.close(pfd);
	if (kdup >= 0)
		real.close(kdup);
	pthread_mutex_unlock(&fwd_lock);
	return -1;
}
