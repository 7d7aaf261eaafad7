/* SPDX-License-Identifier: MIT */
/*
 * Helpers that call back into the program: bpf_loop and
 * bpf_for_each_map_elem.
 *
 * A callback is the value of `lddw src=BPF_PSEUDO_FUNC` (see bpf_rt.h): a
 * tagged instruction index the interpreter runs, or the address of AOT code
 * called with the env of the running program. Both give the callback's r0;
 * the verifier allows it only 0 (go on) and 1 (stop). Each call counts as a
 * back edge of the run (bpf_rt_backedge_tick): the callback may loop nowhere
 * itself, and nested loops multiply.
 */
#include <errno.h>
#include <signal.h>
#include "helpers.h"
#include "map.h"

#define BPF_MAX_LOOPS (8 * 1024 * 1024)

struct callback {
	const struct bpf_prog_rt *prog;
	u64 fn;
};

static int callback_get(struct callback *cb, u64 fn)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	cb->prog = rc ? rc->prog : NULL;
	cb->fn = fn;
	if (!cb->prog)
		return -EINVAL;
	if (!fn)
		bpf_rt_fault(SIGSEGV);
	return 0;
}

static inline u64 callback_call(const struct callback *cb, u64 r1, u64 r2, u64 r3, u64 r4)
{
	bpf_rt_backedge_tick();
	if (cb->fn & BPF_RT_CB_INSN_TAG)
		return bpf_interp_call(cb->prog, cb->fn, r1, r2, r3, r4, 0);
	return ((bpf_rt_callback_fn)(uintptr_t)cb->fn)(r1, r2, r3, r4, 0, &cb->prog->env);
}

/* bpf_loop(nr_loops, callback, ctx, flags): callback(i, ctx) until it
 * returns 1; the number of calls made. */
u64 bpf_loop(u64 nr_loops, u64 callback, u64 callback_ctx, u64 flags, u64 r5)
{
	struct callback cb;
	uint32_t n = (uint32_t)nr_loops, i;

	if (flags)
		return bpf_rt_err(EINVAL);
	/* with flags 0 the kernel's verifier inlines the loop
	 * (inline_bpf_loop), whose E2BIG is a 32-bit move */
	if (n > BPF_MAX_LOOPS)
		return (uint32_t)-E2BIG;
	if (callback_get(&cb, callback))
		return bpf_rt_err(EINVAL);
	for (i = 0; i < n; i++)
		if (callback_call(&cb, i, callback_ctx, 0, 0))
			return (u64)i + 1;
	return i;
}

/* bpf_for_each_map_elem(map, callback, ctx, flags): callback(map, key,
 * value, ctx) for each element (array: every index; percpu: this CPU's
 * value) until it returns 1; the number of elements visited. Hash maps are
 * walked by key; the callback may delete the element it is given and
 * others. */
u64 bpf_for_each_map_elem(u64 map, u64 callback, u64 callback_ctx, u64 flags, u64 r5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;
	const struct shm_map_attr *a = &m->hdr->attr;
	struct callback cb;
	u64 n = 0;

	if (flags)
		return bpf_rt_err(EINVAL);
	if (callback_get(&cb, callback))
		return bpf_rt_err(EINVAL);
	switch (m->ops->facts.for_each) {
	case SHM_WALK_INDEX:
		for (uint32_t i = 0; i < a->max_entries; i++) {
			uint32_t key = i;
			void *v = m->ops->lookup_ptr(m, &key);
			n++;
			if (callback_call(&cb, map, (u64)(uintptr_t)&key, (u64)(uintptr_t)v, callback_ctx))
				break;
		}
		return n;
	case SHM_WALK_KEYS: {
		/* key_size <= MAX_BPF_STACK; cur, and its successor taken before
		 * the callback */
		unsigned char k[2][a->key_size];
		int cur = 0, more;

		if (m->ops->get_next_key(m, NULL, k[cur]))
			return 0;
		do {
			void *v = m->ops->lookup_ptr(m, k[cur]);
			int stop;

			more = !m->ops->get_next_key(m, k[cur], k[cur ^ 1]);
			if (!v) {   /* gone before its turn */
				cur ^= 1;
				continue;
			}
			n++;
			stop = (int)callback_call(&cb, map, (u64)(uintptr_t)k[cur], (u64)(uintptr_t)v, callback_ctx);
			if (stop)
				break;
			/* the walk goes on from the current element if the callback
			 * left it, else from the successor taken before */
			if (m->ops->lookup_ptr(m, k[cur]))
				more = !m->ops->get_next_key(m, k[cur], k[cur ^ 1]);
			cur ^= 1;
		} while (more);
		return n;
	}
	default:   /* the kernel's verifier refuses the other types */
		return bpf_rt_err(EINVAL);
	}
}
