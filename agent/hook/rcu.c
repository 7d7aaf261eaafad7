/* SPDX-License-Identifier: MIT */
/*
 * The readers' lock of the hook lists (internal.h has the read side, which
 * the dispatchers inline): per-thread reader slots and the writer's wait.
 *
 * Readers (the dispatchers) count themselves in a per-thread slot with a
 * plain add: no lock prefix on the hot path. A writer swaps the list, runs
 * membarrier(PRIVATE_EXPEDITED) (a full barrier on every running thread of
 * the process, as liburcu's membarrier flavour), then waits until each
 * other thread was seen outside any dispatcher once. A signal handler
 * nesting in a reader leaves the count as it found it, so a non-atomic
 * add interrupted by one is still right. Without membarrier the counts
 * are updated with seq_cst atomics instead.
 */
#include <stdlib.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include "internal.h"

struct rcu_chunk rcu_first;
__thread struct rcu_slot *tls_slot;
int rcu_fast;                    /* membarrier available */
pthread_key_t rcu_key;

void rcu_release(void *p)
{
	struct rcu_slot *sl = p;

	sl->in_entry = sl->override = 0;
	__atomic_store_n(&sl->cnt, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&sl->owner, 0, __ATOMIC_RELEASE);
}

struct rcu_slot *rcu_register(void)
{
	for (struct rcu_chunk *c = &rcu_first;; c = __atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < RCU_CHUNK; i++) {
			int zero = 0;
			if (!__atomic_load_n(&c->s[i].owner, __ATOMIC_RELAXED) &&
			    __atomic_compare_exchange_n(&c->s[i].owner, &zero, 1, 0, __ATOMIC_SEQ_CST,
							__ATOMIC_RELAXED)) {
				tls_slot = &c->s[i];
				bpf_rt_setspecific(rcu_key, tls_slot);
				return tls_slot;
			}
		}
		if (!__atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
			/* mmap, not malloc: this may run in a signal handler */
			struct rcu_chunk *n = (void *)rsys(SYS_mmap, 0, sizeof(*n), PROT_READ | PROT_WRITE,
							   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			struct rcu_chunk *expect = NULL;
			if ((unsigned long)n > -4096ul)
				abort();
			if (!__atomic_compare_exchange_n(&c->next, &expect, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
				rsys(SYS_munmap, (long)n, sizeof(*n), 0, 0, 0, 0);
		}
	}
}

/* After a list was swapped: no thread still runs with the old one. */
void rcu_sync(void)
{
	if (rcu_fast)
		rsys(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0, 0, 0, 0);
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (struct rcu_chunk *c = &rcu_first; c; c = __atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < RCU_CHUNK; i++) {
			struct rcu_slot *sl = &c->s[i];
			if (sl == tls_slot || !__atomic_load_n(&sl->owner, __ATOMIC_ACQUIRE))
				continue;
			for (int spins = 0; __atomic_load_n(&sl->cnt, __ATOMIC_ACQUIRE); spins++) {
				if (spins < 200)
					__builtin_ia32_pause();
				else
					pause_short(spins < 1000 ? 1000 : 50000);
			}
		}
	}
}
