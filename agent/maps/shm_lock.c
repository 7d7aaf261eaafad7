/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "shm_lock.h"

static __thread uint32_t self_tid;

uint32_t shm_self_tid(void)
{
	if (!self_tid)
		self_tid = (uint32_t)syscall(SYS_gettid);
	return self_tid;
}

/* After fork the child's tid differs from the cached one. */
static void reset_tid(void) { self_tid = 0; }
__attribute__((constructor)) static void shm_lock_init(void)
{
	pthread_atfork(0, 0, reset_tid);
}

int shm_lock_owner_dead(uint32_t word)
{
	int saved = errno, dead = kill((pid_t)(word & SHM_LOCK_TID_MASK), 0) < 0 && errno == ESRCH;

	errno = saved;
	return dead;
}

uint32_t shm_lock_takeover(shm_lock_t *l)
{
	uint32_t me = shm_self_tid();
	unsigned spins = 0;

	for (;;) {
		uint32_t cur = 0;
		if (__atomic_compare_exchange_n(l, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return 0;
		if (++spins < 128) {
			__builtin_ia32_pause();
			continue;
		}
		/* Long wait: either a busy owner or a dead one. */
		if (cur && shm_lock_owner_dead(cur)) {
			/* the dead owner's upper bits stay until the taker has
			 * dealt with what they say */
			uint32_t dead = cur;
			if (__atomic_compare_exchange_n(l, &cur, me | (dead & ~SHM_LOCK_TID_MASK), 0,
							__ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return dead;
		}
		spins = 64;
		sched_yield();
	}
}

void shm_lock(shm_lock_t *l)
{
	(void)shm_lock_takeover(l);
}

void shm_unlock(shm_lock_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}
