/* SPDX-License-Identifier: MIT */
/*
 * BPF ringbuf helpers (kernel/bpf/ringbuf.c): output, reserve, submit,
 * discard, query, on the shared segment of agent/maps/ringbuf.c.
 *
 * Wake-ups: where the kernel queues rb->work (irq_work waking rb->waitq),
 * the helpers call bpf_rt_ringbuf_wake(map id), which the loader side fills
 * (it signals the map's eventfd that consumers' epoll waits on). While it is
 * NULL (the server's copy of the runtime) nothing is woken.
 */
#include <errno.h>
#include "helpers.h"
#include "map.h"

#define MAP(r) ((struct shm_map *)(uintptr_t)(r))
#define PTR(r) ((void *)(uintptr_t)(r))

void (*bpf_rt_ringbuf_wake)(uint32_t map_id);

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

	if (!is_ringbuf(m))
		return 0;
	return (u64)(uintptr_t)shm_ringbuf_reserve(m, size, flags);
}

u64 bpf_ringbuf_submit(u64 sample, u64 flags, u64 r3, u64 r4, u64 r5)
{
	if (!sample)
		return 0;
	wake(shm_ringbuf_submit(PTR(sample), flags), shm_ringbuf_of(PTR(sample))->id);
	return 0;
}

u64 bpf_ringbuf_discard(u64 sample, u64 flags, u64 r3, u64 r4, u64 r5)
{
	if (!sample)
		return 0;
	wake(shm_ringbuf_discard(PTR(sample), flags), shm_ringbuf_of(PTR(sample))->id);
	return 0;
}

u64 bpf_ringbuf_query(u64 map, u64 flags, u64 r3, u64 r4, u64 r5)
{
	struct shm_map *m = MAP(map);

	return is_ringbuf(m) ? shm_ringbuf_query(m, flags) : 0;
}
