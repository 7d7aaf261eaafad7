/* SPDX-License-Identifier: MIT */
/*
 * BPF ringbuf helpers (kernel/bpf/ringbuf.c): output, reserve, submit,
 * discard, query, on the shared segment of agent/maps/ringbuf.c.
 *
 * Wake-ups: where the kernel queues rb->work (irq_work waking rb->waitq),
 * the helpers call bpf_rt_ringbuf_wake(map id), which the loader side fills
 * (it signals the map's eventfd that consumers' epoll waits on). While it is
 * NULL (the server's copy of the runtime) nothing is woken.
 *
 * The kernel's verifier guarantees every reservation is submitted or
 * discarded exactly once; bpfshim's does not track references, so the
 * samples a run reserved are tracked per thread: a run that ends with one
 * outstanding (it faulted, or was loaded around the verifier) has it
 * discarded, as a busy record would stall the ring for every consumer; a
 * submit or discard of a sample this run does not hold is ignored.
 */
#include <errno.h>
#include "helpers.h"
#include "map.h"

#define MAP(r) ((struct shm_map *)(uintptr_t)(r))
#define PTR(r) ((void *)(uintptr_t)(r))

void (*bpf_rt_ringbuf_wake)(uint32_t map_id);

#define HELD_MAX 64
static __thread void *held[HELD_MAX];
static __thread uint32_t n_held;

static void wake(int need, uint32_t map_id)
{
	if (need > 0 && bpf_rt_ringbuf_wake)
		bpf_rt_ringbuf_wake(map_id);
}

static int is_ringbuf(const struct shm_map *m)
{
	return m && m->hdr->attr.map_type == BPF_MAP_TYPE_RINGBUF;
}

/* bpf_ringbuf_output(map, data, size, flags): 0, -EINVAL, -EAGAIN; a bad
 * data pointer discards the record and gives -EFAULT (the kernel's verifier
 * would have refused the program). */
u64 bpf_ringbuf_output(u64 map, u64 data, u64 size, u64 flags, u64 r5)
{
	struct shm_map *m = MAP(map);
	void *rec;

	if (flags & ~(u64)(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP))
		return bpf_rt_err(EINVAL);
	if (!is_ringbuf(m))
		return bpf_rt_err(EINVAL);
	rec = shm_ringbuf_reserve(m, size, 0);
	if (!rec)
		return bpf_rt_err(EAGAIN);
	if (bpf_rt_copy_nofault(rec, PTR(data), size)) {
		shm_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);
		return bpf_rt_err(EFAULT);
	}
	wake(shm_ringbuf_submit(rec, flags), m->hdr->id);
	return 0;
}

/* bpf_ringbuf_reserve(map, size, flags): the sample, or NULL (flags set,
 * no room). */
u64 bpf_ringbuf_reserve(u64 map, u64 size, u64 flags, u64 r4, u64 r5)
{
	struct shm_map *m = MAP(map);
	void *s;

	if (!is_ringbuf(m) || n_held == HELD_MAX)
		return 0;
	s = shm_ringbuf_reserve(m, size, flags);
	if (s)
		held[n_held++] = s;
	return (u64)(uintptr_t)s;
}

/* Takes the sample off this thread's held list: 0, or -1 if it is not there. */
static int unhold(void *s)
{
	for (uint32_t i = n_held; i-- > 0;)
		if (held[i] == s) {
			held[i] = held[--n_held];
			return 0;
		}
	return -1;
}

static u64 commit(void *s, u64 flags, int discard)
{
	if (!s || unhold(s))
		return 0;
	wake(discard ? shm_ringbuf_discard(s, flags) : shm_ringbuf_submit(s, flags), shm_ringbuf_of(s)->id);
	return 0;
}

u64 bpf_ringbuf_submit(u64 sample, u64 flags, u64 r3, u64 r4, u64 r5)
{
	return commit(PTR(sample), flags, 0);
}

u64 bpf_ringbuf_discard(u64 sample, u64 flags, u64 r3, u64 r4, u64 r5)
{
	return commit(PTR(sample), flags, 1);
}

uint32_t bpf_rt_ringbuf_mark(void)
{
	return n_held;
}

void bpf_rt_ringbuf_release(uint32_t mark)
{
	while (n_held > mark)
		commit(held[n_held - 1], 0, 1);
}

u64 bpf_ringbuf_query(u64 map, u64 flags, u64 r3, u64 r4, u64 r5)
{
	struct shm_map *m = MAP(map);

	return is_ringbuf(m) ? shm_ringbuf_query(m, flags) : 0;
}
