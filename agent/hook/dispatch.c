/* SPDX-License-Identifier: MIT */
/*
 * What the stubs call (stubs.c): the entry dispatcher (the int3 path,
 * trap.c, too), which runs a site's entry handlers and swaps the return
 * address for hook_ret_tramp, keeping it on the per-thread shadow stack;
 * the return dispatcher, which pops it and runs the return handlers.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

/* One frame whose return address was swapped for hook_ret_tramp. */
struct shadow_ent {
	uint64_t ret;                   /* original return address (hook_ret_tramp if chained) */
	uint64_t sp;                    /* where it was */
	struct hook_site *site;
	uint64_t gen;                   /* only hooks with gen <= this get the return */
};

#define SHADOW_MAX 65536u
#define BPFSHIM_HOOK_CHAIN_MAX 8

pthread_key_t shadow_key;
uint64_t ret_dropped;

static __thread struct shadow_ent *ss_base;
static __thread uint32_t ss_n;
static __thread const struct hook_site *entry_site;   /* entry handlers of this site run */

/* ---------------------------------------------------------- shadow stack */

void shadow_free(void *p)
{
	if (p)
		munmap(p, SHADOW_MAX * sizeof(struct shadow_ent));
}

static struct shadow_ent *shadow_base(void)
{
	if (ss_base)
		return ss_base;
	/* reserved once per thread, committed as it is used */
	void *p = (void *)rsys(SYS_mmap, 0, SHADOW_MAX * sizeof(struct shadow_ent), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if ((unsigned long)p > -4096ul)
		return NULL;
	ss_base = p;
	bpf_rt_setspecific(shadow_key, p);
	return ss_base;
}

static void shadow_push(struct hook_site *s, struct hook_pt_regs *regs, uint64_t gen)
{
	struct shadow_ent *b = shadow_base();
	uint64_t *slot = (uint64_t *)regs->sp;
	uint32_t n = ss_n;

	if (!b)
		goto drop;
	if (n >= SHADOW_MAX) {
		/* full: drop the frames below this sp, as the kernel does on
		 * every entry (they were skipped by longjmp) */
		while (n && b[n - 1].sp < regs->sp)
			n--;
		ss_n = n;
		if (n >= SHADOW_MAX)
			goto drop;
	}
	/* reserve first: a signal handler here pushes above us */
	ss_n = n + 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	b[n].ret = *slot;
	b[n].sp = regs->sp;
	b[n].site = s;
	b[n].gen = gen;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	*slot = (uint64_t)hook_ret_tramp;
	return;
drop:
	__atomic_add_fetch(&ret_dropped, 1, __ATOMIC_RELAXED);
}

/* ----------------------------------------------------------- dispatchers */

uint64_t hook_dispatch_entry(struct hook_site *s, struct hook_pt_regs *regs)
{
	struct rcu_slot *sl = rcu_lock();
	struct hook_list *l = __atomic_load_n(&s->list, __ATOMIC_ACQUIRE);
	uint64_t ov = 0;

	if (l) {
		int saved = sl->override;

		const struct hook_site *prev_site = entry_site;

		sl->override = 0;
		sl->in_entry++;
		entry_site = s;
		for (unsigned i = 0; i < l->n; i++) {
			struct hook *h = l->h[i];
			if (h->entry)
				h->entry(regs, h->data);
		}
		entry_site = prev_site;
		sl->in_entry--;
		ov = (uint64_t)sl->override;
		sl->override = saved;
		if (l->nret)
			shadow_push(s, regs, l->gen);
	}
	rcu_unlock(sl);
	return ov;
}

int hook_override(struct hook_pt_regs *regs, uint64_t rc)
{
	struct rcu_slot *sl = tls_slot;

	if (!sl || !sl->in_entry || !regs)
		return -EINVAL;
	regs->ax = rc;
	sl->override = 1;
	return 0;
}

static void ret_handlers(const struct shadow_ent *e, struct hook_pt_regs *regs)
{
	struct rcu_slot *sl = rcu_lock();
	struct hook_list *l = __atomic_load_n(&e->site->list, __ATOMIC_ACQUIRE);

	if (l) {
		for (unsigned i = 0; i < l->n; i++) {
			struct hook *h = l->h[i];
			if (h->ret && h->gen <= e->gen)
				h->ret(regs, h->data);
		}
	}
	rcu_unlock(sl);
}

static void __attribute__((noreturn)) shadow_corrupt(void)
{
	static const char m[] = "bpfshim: uretprobe return with no shadow-stack frame (stack switched?)\n";
	(void)!write(2, m, sizeof(m) - 1);
	abort();
}

uint64_t hook_dispatch_return(struct hook_pt_regs *regs)
{
	struct shadow_ent *b = ss_base, chain[8];
	uint64_t sp = regs->sp - 8;
	uint32_t i = ss_n, j, k;

	/* The newest frame at this sp; the ones above it were skipped by a
	 * longjmp or an exception and are dropped. */
	while (i && b[i - 1].sp != sp)
		i--;
	if (!i)
		shadow_corrupt();
	i--;
	/* a tail call from one hooked function to another: same sp, chained */
	j = i;
	while (b[j].ret == (uint64_t)hook_ret_tramp) {
		if (!j || b[j - 1].sp != sp)
			shadow_corrupt();
		j--;
	}
	uint64_t ret = b[j].ret;
	unsigned nchain = 0;
	for (k = i + 1; k-- > j && nchain < BPFSHIM_HOOK_CHAIN_MAX;)
		chain[nchain++] = b[k];
	ss_n = j;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	regs->ip = ret;
	for (k = 0; k < nchain; k++)
		ret_handlers(&chain[k], regs);
	return ret;
}

int hook_at_func_entry(void)
{
	const struct hook_site *s = entry_site;

	return s && (s->ip == s->addr ? s->orig[0] : s->kept_op) == 0x55;   /* at or after its push %rbp */
}

size_t hook_ret_addrs(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max)
{
	const struct shadow_ent *b = ss_base;
	size_t n = 0;

	*tramp = (uint64_t)hook_ret_tramp;
	for (uint32_t i = ss_n; i-- > 0 && n < max;)
		if (b[i].sp >= sp && b[i].ret != (uint64_t)hook_ret_tramp)
			out[n++] = b[i].ret;
	return n;
}
